//! The `stsgate` binary as an operator uses it: `token`, `serve` on the embedded default, `config`,
//! configuration errors, and shutdown on SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use stsgate::config::AuthConfig;
use stsgate::secret::Secret;

fn stsgate(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stsgate"));
    cmd.arg("--data-dir").arg(data);
    // The developer's environment must not leak into these tests.
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("STSGATE_")) {
        cmd.env_remove(key);
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

fn token(data: &Path, workspace: &str) -> String {
    let out = stsgate(data)
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

/// A `stsgate serve` child; killed if the test fails before stopping it.
struct Served {
    child: Child,
    http: String,
    mqtt: stsgate::mqtt::BrokerAddr,
    store: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, log: &Path) -> Served {
    let mut child = stsgate(data)
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-embedded-listen",
            "127.0.0.1:0",
        ])
        .args(["--storage-local-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for label in ["HTTP API", "MQTT broker", "S3 store"] {
                if let Some(rest) = line.trim().strip_prefix(label) {
                    let _ = tx.send(
                        rest.split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    );
                }
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(20))
            .expect("the ready banner names the addresses")
    };
    let http = next();
    let mqtt = stsgate::mqtt::BrokerAddr::parse(&next()).expect("mqtt://host:port");
    let store = next();
    Served {
        child,
        http,
        mqtt,
        store,
    }
}

#[tokio::test]
async fn token_generates_the_secret_once_and_signs_with_it() {
    let dir = tempfile::tempdir().expect("dir");
    let first = token(dir.path(), "ws-1");
    let secret_file = dir.path().join("jwt_secret");
    let secret = std::fs::read_to_string(&secret_file).expect("secret generated into the data dir");
    let second = token(dir.path(), "ws-2");
    assert_eq!(
        std::fs::read_to_string(&secret_file).expect("still there"),
        secret,
        "reused, not regenerated"
    );
    let verifier =
        stsgate::auth::Verifier::new(&Secret::new(secret.trim()), &AuthConfig::default())
            .expect("verifier");
    assert_eq!(
        verifier.verify(&first).await.expect("valid").workspace_id,
        "ws-1"
    );
    assert_eq!(
        verifier.verify(&second).await.expect("valid").workspace_id,
        "ws-2"
    );
    let bad = stsgate(dir.path())
        .args(["token", "--workspace", "../etc"])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
}

#[tokio::test]
async fn serve_runs_the_embedded_default_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let log = dir.path().join("stderr.log");
    let token = token(&data, "default");
    let mut served = serve(&data, &log);
    let response = reqwest::Client::new()
        .post(format!(
            "{}/storage/api/v1/workspaces/default/sts",
            served.http
        ))
        .header("x-auth-token", &token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    let secret = body["data"]["credentials"]["access_key_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let session = body["data"]["credentials"]["security_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut dock = common::Dock::connect(&served.mqtt, "CLI0001").await;
    let reply = dock.request(&common::storage_config_get("cli", "1")).await;
    assert_eq!(
        reply["data"]["output"]["credentials"]["access_key_secret"],
        secret.as_str()
    );

    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = served.child.try_wait().expect("wait") {
            exited = Some(status);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(exited.expect("exits within 10 s of SIGTERM").success());

    // Even at debug level, no secret reached the logs.
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(logs.contains("credentials handed out"), "{logs}");
    assert!(
        logs.contains("request_id=") && logs.contains("tid=cli"),
        "request ids in the logs: {logs}"
    );
    let jwt_secret = std::fs::read_to_string(data.join("jwt_secret")).expect("secret");
    for (what, value) in [
        ("secret key", &secret),
        ("session token", &session),
        ("x-auth-token", &token),
        ("jwt secret", &jwt_secret),
    ] {
        assert!(
            !logs.contains(value.trim()),
            "the {what} leaked into the logs"
        );
    }
    // The minted credential was persisted for the embedded store.
    assert_eq!(
        std::fs::read_dir(data.join("credentials"))
            .expect("keyring")
            .count(),
        1
    );
}

#[test]
fn a_bad_value_fails_start_up_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let out = stsgate(dir.path())
        .arg("serve")
        .env("STSGATE_HTTP__LISTEN", "not-an-address")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http.listen"), "{stderr}");

    let out = stsgate(dir.path())
        .args(["--config", "/nonexistent.toml", "serve"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.toml"));
}

#[test]
fn a_taken_broker_port_is_explained() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = stsgate(dir.path())
        .args([
            "serve",
            "--http-listen",
            "127.0.0.1:0",
            "--mqtt-embedded-listen",
            &addr,
        ])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("STSGATE_MQTT__URL"),
        "{stderr}"
    );
}

#[test]
fn config_prints_the_effective_configuration_without_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    let out = stsgate(dir.path())
        .arg("config")
        .env("STSGATE_AUTH__JWT_SECRET", "do-not-print-me")
        .env("STSGATE_STORAGE__BUCKET", "uploads")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("bucket = \"uploads\""), "{stdout}");
    assert!(
        stdout.contains("[redacted]") && !stdout.contains("do-not-print-me"),
        "{stdout}"
    );
}

fn check(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = stsgate(data);
    cmd.arg("check").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_passes_on_the_embedded_default() {
    let dir = tempfile::tempdir().expect("dir");
    let (ok, text) = check(dir.path(), &["--storage-local-listen", "127.0.0.1:0"], &[]);
    assert!(ok, "{text}");
    for step in [
        "credentials issued",
        "probe uploaded",
        "probe is there",
        "outside the prefix is refused",
        "probe removed",
        "all checks passed",
    ] {
        assert!(text.contains(step), "missing `{step}` in\n{text}");
    }
    assert!(!text.contains('✗'), "{text}");
    // It cleaned up after itself: no object is left in the bucket.
    assert_eq!(files_under(&dir.path().join("objects/media")), 0, "{text}");
}

fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                files_under(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test]
async fn check_works_beside_a_running_service_and_names_broken_settings() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let served = serve(&data, &dir.path().join("stderr.log"));
    let store_addr = served.store.trim_start_matches("http://").to_owned();
    let listen = ["--storage-local-listen", store_addr.as_str()];

    // The running service's store accepts a credential minted by the check process.
    let (ok, text) = check(&data, &listen, &[]);
    assert!(ok, "{text}");
    assert!(!text.contains("started one for this check"), "{text}");

    // Pointed at a store that did not issue the credentials (another data dir).
    let (ok, text) = check(&dir.path().join("elsewhere"), &listen, &[]);
    assert!(!ok);
    assert!(
        text.contains("InvalidAccessKeyId") && text.contains("does not know this credential"),
        "{text}"
    );

    let (ok, text) = check(
        &data,
        &[],
        &[("STSGATE_STORAGE__ENDPOINT", "http://127.0.0.1:1")],
    );
    assert!(!ok);
    assert!(
        text.contains("unreachable") && text.contains("storage.endpoint"),
        "{text}"
    );
    assert!(!text.contains("DispatchFailure("), "no debug dump: {text}");
}
