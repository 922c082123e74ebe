//! A Mosquitto process of the caller's own on a loopback port, killed when dropped. Used by the
//! external-broker tests and by `stsgate-bench` (which includes this file by path), so both start
//! the broker the same way. `scripts/test.sh` installs Mosquitto when it is missing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running Mosquitto.
pub struct Mosquitto {
    child: Child,
    /// The port of its first listener.
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// The Mosquitto binary, if it is installed.
    pub fn binary() -> Option<PathBuf> {
        [
            "/usr/sbin/mosquitto",
            "/usr/local/sbin/mosquitto",
            "/usr/bin/mosquitto",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
    }

    /// A broker listening on `port`, configured with the lines of `extra` (`{dir}` stands for
    /// the broker's own directory: Mosquitto resolves relative paths from its working directory,
    /// not from its configuration file), after `setup` has run on that directory (to write
    /// password and ACL files). `None` if Mosquitto is not installed, exits (the port is still
    /// held, say) or does not listen within 5 s.
    pub fn start_with(port: u16, extra: &str, setup: Option<&dyn Fn(&Path)>) -> Option<Self> {
        let binary = Self::binary()?;
        let dir = tempfile::tempdir().ok()?;
        if let Some(setup) = setup {
            setup(dir.path());
        }
        let extra = extra.replace("{dir}", &dir.path().display().to_string());
        let conf = dir.path().join("mosquitto.conf");
        let text = format!(
            "per_listener_settings false\npersistence false\nlog_dest stderr\nuser root\n\
             listener {port} 127.0.0.1\n{extra}"
        );
        std::fs::write(&conf, text).ok()?;
        let mut child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(Self {
                    child,
                    port,
                    _dir: dir,
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
