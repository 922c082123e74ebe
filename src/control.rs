//! How `stsgate reload` reaches the running service: a pid file in the data dir
//! (`stsgate.pid`, written by `serve`, removed when it stops) to send SIGHUP to, and a status
//! file (`reload.json`) in which the service records the outcome of each reload, so that the
//! command can say whether the new configuration was taken or rejected and why.
//!
//! A signal and two files rather than an admin endpoint: nothing listens that a reverse proxy on
//! the same host could expose, and only who may write the data dir (mode 0700) may reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The pid file's name in the data dir.
pub const PID_FILE: &str = "stsgate.pid";
/// The reload status file's name in the data dir.
pub const STATUS_FILE: &str = "reload.json";

/// The outcome of the last reload of a running service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The service's process id.
    pub pid: u32,
    /// Reloads done by this process, this one included.
    pub seq: u64,
    /// `ok` or `rejected`.
    pub result: String,
    /// What changed (`ok`), or every problem (`rejected`).
    pub lines: Vec<String>,
    /// Settings that changed but need a restart.
    pub restart: Vec<String>,
}

/// The pid file of a running service; removed on drop if it is still this process's.
#[derive(Debug)]
pub struct PidFile(PathBuf);

/// Why `stsgate reload` could not reload.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No pid file: no service runs with this data dir.
    #[error(
        "no service runs with data dir {} (no {PID_FILE}); start it with `stsgate serve`, or \
         send SIGHUP to it yourself",
        .0.display()
    )]
    NotRunning(PathBuf),
    /// The pid file names a process that is gone or is not stsgate.
    #[error("{} names process {pid}, which is not a running stsgate (a stale file; remove it)", .path.display())]
    Stale {
        /// The pid file.
        path: PathBuf,
        /// The pid it names.
        pid: u32,
    },
    /// The signal could not be sent.
    #[error("cannot signal process {pid}: {source}")]
    Signal {
        /// The process.
        pid: u32,
        /// Why (e.g. another user's process).
        source: std::io::Error,
    },
    /// The service did not record an outcome in time.
    #[error("process {pid} was signalled but recorded no outcome within {}s; see its log", .within.as_secs())]
    NoAnswer {
        /// The process.
        pid: u32,
        /// How long was waited.
        within: Duration,
    },
    /// A file in the data dir cannot be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

// === impl PidFile ===

impl PidFile {
    /// Writes this process's id into `{data_dir}/stsgate.pid`.
    pub fn write(data_dir: &Path) -> std::io::Result<Self> {
        let path = data_dir.join(PID_FILE);
        crate::files::write_private_atomically(
            &path,
            format!("{}\n", std::process::id()).as_bytes(),
        )?;
        Ok(Self(path))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if read_pid(&self.0).ok() == Some(std::process::id()) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// Records the outcome of a reload in `{data_dir}/reload.json`.
pub fn record(data_dir: &Path, status: &Status) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?;
    crate::files::write_private_atomically(&data_dir.join(STATUS_FILE), &json)
}

/// Signals the service running with `data_dir` to reload and waits, at most `within`, for the
/// outcome it records.
pub fn request_reload(data_dir: &Path, within: Duration) -> Result<Status, Error> {
    let pid_path = data_dir.join(PID_FILE);
    let pid = match read_pid(&pid_path) {
        Ok(pid) => pid,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotRunning(data_dir.to_owned()));
        }
        Err(source) => {
            return Err(Error::Io {
                path: pid_path,
                source,
            });
        }
    };
    let stale = || Error::Stale {
        path: pid_path.clone(),
        pid,
    };
    if !is_stsgate(pid) {
        return Err(stale());
    }
    let before = status(data_dir);
    let target = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(stale)?;
    rustix::process::kill_process(target, rustix::process::Signal::HUP).map_err(|e| {
        Error::Signal {
            pid,
            source: e.into(),
        }
    })?;
    const POLL: Duration = Duration::from_millis(20);
    for _ in 0..within.as_millis().div_ceil(POLL.as_millis()) {
        if let Some(now) = status(data_dir)
            && now.pid == pid
            && before
                .as_ref()
                .is_none_or(|b| b.pid != pid || b.seq < now.seq)
        {
            return Ok(now);
        }
        std::thread::sleep(POLL);
    }
    Err(Error::NoAnswer { pid, within })
}

fn status(data_dir: &Path) -> Option<Status> {
    let text = std::fs::read(data_dir.join(STATUS_FILE)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn read_pid(path: &Path) -> std::io::Result<u32> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not a process id"))
}

/// Whether process `pid` runs and, where `/proc` tells, is an stsgate.
fn is_stsgate(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => comm.trim().starts_with("stsgate"),
        // No /proc (not Linux): that it exists is all one can tell.
        Err(_) if !Path::new("/proc/self").exists() => i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok()),
        Err(_) => false,
    }
}
