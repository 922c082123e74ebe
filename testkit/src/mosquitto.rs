//! A Mosquitto process of the caller's own on a loopback port, killed when dropped. Used by the
//! external-broker tests and by `stsgate-bench`, so both start the broker the same way.
//! `scripts/test.sh` installs Mosquitto when it is missing.

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
    /// An anonymous broker on a free port, as the external-broker tests use; `None` if Mosquitto
    /// is not installed or does not listen.
    pub fn anonymous() -> Option<Self> {
        Self::anonymous_on(free_port()?)
    }

    /// An anonymous broker on `port`; `None` if it does not listen there within 5 s.
    pub fn anonymous_on(port: u16) -> Option<Self> {
        Self::start_with(port, "allow_anonymous true\n", None)
    }

    /// The benchmarks' broker on a free port: anonymous, no limit on in-flight or queued
    /// messages, `TCP_NODELAY` on.
    pub fn unthrottled() -> Option<Self> {
        Self::unthrottled_on(free_port()?)
    }

    /// [`Mosquitto::unthrottled`] on `port`, retried for 5 s while the port is still held by a
    /// killed predecessor.
    pub fn unthrottled_on(port: u16) -> Option<Self> {
        Self::binary()?;
        let config = "allow_anonymous true\nmax_inflight_messages 0\nmax_queued_messages 0\nset_tcp_nodelay true\n";
        for _ in 0..100 {
            if let Some(m) = Self::start_with(port, config, None) {
                return Some(m);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

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

/// A loopback port free a moment ago.
fn free_port() -> Option<u16> {
    Some(
        std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port(),
    )
}
