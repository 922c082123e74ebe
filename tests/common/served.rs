//! The `stsgate` binary as a child process, as an operator runs it: `serve` on free ports with
//! its own data dir, the addresses read from its ready banner, killed (SIGKILL) when dropped or
//! when a test says so.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stsgate::mqtt::BrokerAddr;

/// `stsgate --data-dir {data}`, with none of the developer's `STSGATE_*` or `RUST_LOG` settings.
pub fn command(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stsgate"));
    cmd.arg("--data-dir").arg(data);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("STSGATE_")) {
        cmd.env_remove(key);
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

/// `stsgate token --workspace {workspace}` against the data dir `data`: the token it prints.
pub fn token(data: &Path, workspace: &str) -> String {
    let out = command(data)
        .args(["token", "--workspace", workspace])
        .output()
        .expect("runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).expect("utf-8");
    stdout.lines().last().expect("a line").to_owned()
}

/// A `stsgate serve` child; killed if the test ends before stopping it.
pub struct Served {
    pub child: Child,
    /// `host:port` of the HTTP API.
    pub http: String,
    /// The broker the service uses (embedded or external).
    pub mqtt: BrokerAddr,
    /// `host:port` of the embedded store, when there is one.
    pub store: Option<String>,
    /// The data dir and log of a service started by [`Served::fresh`], removed after it.
    dir: Option<tempfile::TempDir>,
}

impl Served {
    /// [`Served::spawn`] with a data dir and log of its own in a temporary directory.
    pub fn fresh(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut served = Self::spawn(
            &dir.path().join("data"),
            &dir.path().join("stderr.log"),
            env,
        );
        served.dir = Some(dir);
        served
    }

    /// The data dir of a service started by [`Served::fresh`].
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir
            .as_ref()
            .expect("a service started by Served::fresh")
            .path()
            .join("data")
    }

    /// `stsgate serve` with every listener on a free port, `env` added, logging to `log`.
    pub fn spawn(data: &Path, log: &Path, env: &[(&str, &str)]) -> Self {
        Self::spawn_limited(data, log, env, None)
    }

    /// As [`Served::spawn`], with the process's descriptor limit (`ulimit -n`) set to
    /// `fd_limit`, soft and hard.
    pub fn spawn_limited(
        data: &Path,
        log: &Path,
        env: &[(&str, &str)],
        fd_limit: Option<u32>,
    ) -> Self {
        let stderr = std::fs::File::create(log).expect("log file");
        Self::spawn_with(data, stderr.into(), Some(log), env, fd_limit)
    }

    /// As [`Served::spawn`], with stderr a pipe that nobody reads (as a log collector that has
    /// stalled): the pipe's read end is returned, to keep open.
    pub fn spawn_unread_stderr(
        data: &Path,
        env: &[(&str, &str)],
    ) -> (Self, std::process::ChildStderr) {
        let mut served = Self::spawn_with(data, Stdio::piped(), None, env, None);
        let stderr = served.child.stderr.take().expect("stderr pipe");
        (served, stderr)
    }

    fn spawn_with(
        data: &Path,
        stderr: Stdio,
        log: Option<&Path>,
        env: &[(&str, &str)],
        fd_limit: Option<u32>,
    ) -> Self {
        let mut cmd = match fd_limit {
            Some(limit) => {
                let mut sh = Command::new("sh");
                sh.arg("-c")
                    .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
                    .arg(env!("CARGO_BIN_EXE_stsgate"));
                sh.arg("--data-dir").arg(data);
                for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("STSGATE_")) {
                    sh.env_remove(key);
                }
                sh.env_remove("RUST_LOG");
                sh
            }
            None => command(data),
        };
        cmd.args(stsgate_testkit::banner::SERVE_ON_FREE_PORTS)
            .env("RUST_LOG", "debug");
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("serve starts");
        let stdout = child.stdout.take().expect("stdout");
        let Some(banner) = stsgate_testkit::banner::read(stdout, Duration::from_secs(20)) else {
            let log = log
                .and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default();
            panic!("the ready banner names the addresses; log:\n{log}");
        };
        Self {
            child,
            http: banner.http,
            mqtt: BrokerAddr::parse(&banner.mqtt).expect("mqtt://host:port"),
            store: banner.store,
            dir: None,
        }
    }

    /// `GET http://{http}{path}`: status and body.
    pub async fn get(&self, path: &str) -> (reqwest::StatusCode, String) {
        let response = reqwest::get(format!("http://{}{path}", self.http))
            .await
            .expect("the HTTP API answers");
        let status = response.status();
        (status, response.text().await.unwrap_or_default())
    }

    /// Pilot 2's request for `workspace` with `token`: status and JSON body.
    pub async fn sts(
        &self,
        workspace: &str,
        token: &str,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!(
                "http://{}/storage/api/v1/workspaces/{workspace}/sts",
                self.http
            ))
            .header("x-auth-token", token)
            .send()
            .await
            .expect("the HTTP API answers");
        let status = response.status();
        (status, response.json().await.unwrap_or_default())
    }

    /// Waits until `/readyz` says 200 (the MQTT session is subscribed), at most `within`.
    pub async fn wait_ready(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.get("/readyz").await.0 == reqwest::StatusCode::OK {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill();
    }
}
