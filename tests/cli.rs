//! The `stsgate` binary as an operator uses it: `token`, `serve` on the embedded default, `config`,
//! configuration errors, and shutdown on SIGTERM.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use stsgate::config::AuthConfig;
use stsgate::secret::Secret;

use common::served::{Served, command as stsgate, token};

fn serve(data: &Path, log: &Path) -> Served {
    Served::spawn(data, log, &[])
}

/// The secret key and session token of a Pilot 2 answer: what must never reach a log.
fn secrets(body: &serde_json::Value) -> (String, String) {
    let credentials = &body["data"]["credentials"];
    let text = |key: &str| {
        credentials[key]
            .as_str()
            .unwrap_or_else(|| panic!("no {key} in {body}"))
            .to_owned()
    };
    (text("access_key_secret"), text("security_token"))
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
        verifier
            .verify(&first)
            .await
            .expect("valid")
            .workspace()
            .to_owned(),
        "ws-1"
    );
    assert_eq!(
        verifier
            .verify(&second)
            .await
            .expect("valid")
            .workspace()
            .to_owned(),
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
    let (status, body) = served.sts("default", &token).await;
    assert_eq!(status, 200, "{body}");
    let (secret, session) = secrets(&body);
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
    // Every line logged while a request was served carries its id, the lines of the code beneath
    // the fronts (the gateway's, the cache's at debug) as much as the fronts' own.
    let http_lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("front=\"http\"") || l.contains(" answered "))
        .collect();
    assert!(http_lines.len() >= 2, "{logs}");
    for line in http_lines {
        assert!(
            line.contains(" http{request_id=") && line.contains("method=POST path=/storage/"),
            "a line of an HTTP request without its id: {line}"
        );
    }
    for line in logs.lines().filter(|l| l.contains("front=\"mqtt\"")) {
        assert!(
            line.contains(" mqtt{sn=\"CLI0001\" tid=cli}:"),
            "a line of a dock's request without its tid: {line}"
        );
    }
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

/// The operator's file as they named it, one line a problem, all of them, and nothing created.
#[test]
fn a_file_with_five_mistakes_reports_all_five_and_starts_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(
        dir.path().join("c.toml"),
        "[storage]\nprovder = \"aws\"\nduration = \"soon\"\n[http]\nlisten = \"localhost\"\n\
         max_connections = -3\n[limits]\ndevice_burst = \"ten\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = stsgate(&data)
        .current_dir(dir.path())
        .args(["--config", "c.toml", "serve"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("  - c.toml line "))
        .collect();
    assert_eq!(problems.len(), 5, "{stderr}");
    for (line, key) in [
        (2, "storage.provder"),
        (3, "storage.duration"),
        (5, "http.listen"),
        (6, "http.max_connections"),
        (8, "limits.device_burst"),
    ] {
        assert!(
            stderr.contains(&format!("  - c.toml line {line}: {key}: ")),
            "{key} in\n{stderr}"
        );
    }
    assert!(!data.exists(), "a refused start created {}", data.display());
}

#[test]
fn a_taken_broker_port_is_explained() {
    let dir = tempfile::tempdir().expect("dir");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    // The broker on the taken port, the other listeners on free ones.
    let serve_args = [
        "serve",
        "--http-listen",
        "127.0.0.1:0",
        "--mqtt-embedded-listen",
        &addr,
        "--storage-local-listen",
        "127.0.0.1:0",
    ];
    let out = stsgate(dir.path()).args(serve_args).output().expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&addr) && stderr.contains("STSGATE_MQTT__URL"),
        "{stderr}"
    );
    // Nothing was generated: the start that works next shows the store's administrator secret,
    // as a first start does.
    assert!(
        !dir.path()
            .join(stsgate::embedded::store::ADMIN_FILE)
            .exists(),
        "a failed start generated the administrator key without showing it"
    );
    // The next start, on the port that is free now, generates the key and shows it.
    drop(taken);
    let mut child = stsgate(dir.path())
        .args(serve_args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let admin_line = std::io::BufRead::lines(stdout)
        .map_while(Result::ok)
        .find(|l| l.trim_start().starts_with("store admin"))
        .unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let admin = std::fs::read_to_string(dir.path().join(stsgate::embedded::store::ADMIN_FILE))
        .expect("generated by the start that worked");
    let admin: serde_json::Value = serde_json::from_str(&admin).expect("json");
    let secret = admin["secret_access_key"].as_str().unwrap();
    assert!(admin_line.contains(secret), "not shown: {admin_line}");
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
    let store_addr = served.store.clone().expect("the embedded store");
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

/// The ready banner's commands work as printed, from any directory: the token command signs
/// with the secret of the data dir `serve` uses (given relative to another directory here), and
/// the dock commands name the broker's real port.
#[tokio::test]
async fn the_banners_commands_work_as_printed_from_anywhere() {
    let dir = tempfile::tempdir().expect("dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_stsgate"))
        .current_dir(dir.path())
        .args(["--data-dir", "relative-data"])
        .args(stsgate_testkit::banner::SERVE_ON_FREE_PORTS)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve starts");
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = std::io::BufRead::lines(stdout).map_while(Result::ok);
    let banner: Vec<String> = lines
        .by_ref()
        .take_while(|l| !l.contains("mosquitto_pub"))
        .collect();
    let field = |label: &str| {
        banner
            .iter()
            .find_map(|l| l.trim_start().strip_prefix(label))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{label} in {banner:#?}"))
    };
    let http = field("HTTP API")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let broker = field("MQTT broker");
    let port = broker
        .split_whitespace()
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        field("a dock").contains(&format!("-p {port} ")),
        "{banner:#?}"
    );
    let token_command = field("a token");
    let elsewhere = tempfile::tempdir().expect("dir");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&token_command)
        .current_dir(elsewhere.path())
        .output()
        .expect("the token command runs");
    assert!(
        out.status.success(),
        "{token_command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    let status = reqwest::Client::new()
        .post(format!("{http}/storage/api/v1/workspaces/default/sts"))
        .header("x-auth-token", token)
        .send()
        .await
        .expect("answer")
        .status();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, 200, "a token from `{token_command}` run elsewhere");
}

/// The binary serving on a data dir of its own, logging at `level` to a file, and the credentials
/// it handed Pilot 2 for workspace `default`.
struct Pilot {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    served: Served,
    token: String,
    config: serde_json::Value,
}

impl Pilot {
    async fn start(level: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let log = dir.path().join("stderr.log");
        let token = token(&data, "default");
        let served = Served::spawn(&data, &log, &[("RUST_LOG", level)]);
        let (status, body) = served.sts("default", &token).await;
        assert_eq!(status, 200, "{body}");
        let config = body["data"].clone();
        Self {
            dir,
            data,
            log,
            served,
            token,
            config,
        }
    }
}

/// A device's refused upload and a refused listing are a client's 4xx, not a service error: at
/// most one line each, by stsgate, and no ERROR (s3s logged two ERROR lines for each).
#[tokio::test]
async fn a_refused_upload_logs_no_error() {
    let Pilot {
        dir: _dir,
        log,
        served,
        config,
        ..
    } = Pilot::start("info").await;
    let s3 = common::device_s3(&config);
    let outside = s3
        .put_object()
        .bucket("media")
        .key("elsewhere/x.jpg")
        .body(b"x".to_vec().into())
        .send()
        .await;
    assert!(outside.is_err(), "refused");
    assert!(s3.list_objects_v2().bucket("media").send().await.is_err());
    // (Lines are written by the log's own thread: wait for the second refusal's.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut logs = String::new();
    while tokio::time::Instant::now() < deadline {
        logs = std::fs::read_to_string(&log).expect("log");
        if logs.matches("embedded store refused a request").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(served);
    let errors: Vec<_> = logs.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let refusals = logs.matches("embedded store refused a request").count();
    assert_eq!(refusals, 2, "one line per refusal:\n{logs}");
    assert!(!logs.contains("s3s::"), "{logs}");
}

/// Issue 11.7: at `RUST_LOG=debug` s3s logged every store request with its headers (the session
/// token, the signature) and, on a mismatch, the signature it expected. At `trace`, with every
/// front exercised — Pilot 2 with a good and a forged token, a dock, uploads with a good and a
/// wrong secret — no token, secret or signature reaches the log.
#[tokio::test]
async fn no_secret_reaches_the_log_at_trace_level() {
    let Pilot {
        dir: _dir,
        data,
        log,
        served,
        token,
        config,
    } = Pilot::start("trace").await;
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_eq!(served.sts("default", &forged).await.0, 401);
    let mut dock = common::Dock::connect(&served.mqtt, "TRACE0001").await;
    let reply = dock
        .request(&common::storage_config_get("trace", "1"))
        .await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");

    common::device_upload(&config, "default/trace.bin", b"traced").await;
    let creds = &config["credentials"];
    let (key_id, secret, session) = (
        creds["access_key_id"].as_str().unwrap(),
        creds["access_key_secret"].as_str().unwrap(),
        creds["security_token"].as_str().unwrap(),
    );
    let wrong = common::s3_client(
        config["endpoint"].as_str().unwrap(),
        key_id,
        "not-the-secret-key-at-all-0000000000000",
        Some(session),
    );
    assert!(
        wrong
            .put_object()
            .bucket("media")
            .key("default/mismatch.bin")
            .body(b"x".to_vec().into())
            .send()
            .await
            .is_err(),
        "a wrong secret is refused"
    );
    drop(dock);
    drop(served);

    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(
        logs.contains("credentials handed out") && logs.contains("TRACE"),
        "trace logging is on: {}",
        &logs[..logs.len().min(2000)]
    );
    let jwt_secret = std::fs::read_to_string(data.join("jwt_secret")).expect("secret");
    let admin = std::fs::read_to_string(data.join(stsgate::embedded::store::ADMIN_FILE))
        .expect("admin keys");
    let admin: serde_json::Value = serde_json::from_str(&admin).expect("json");
    for (what, value) in [
        ("secret key", secret),
        ("session token", session),
        ("x-auth-token", token.as_str()),
        ("forged x-auth-token", forged.as_str()),
        ("jwt secret", jwt_secret.trim()),
        (
            "store admin secret",
            admin["secret_access_key"].as_str().unwrap_or("-"),
        ),
    ] {
        assert!(!logs.contains(value), "the {what} leaked into the logs");
    }
    // A SigV4 signature (the client's or the expected one) is 64 hex digits.
    for line in logs.lines() {
        let longest_hex_run = line
            .split(|c: char| !c.is_ascii_hexdigit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(
            longest_hex_run < 64 && !line.contains("Signature="),
            "a signature in the log: {line}"
        );
    }
}

/// Log collectors parse JSON lines: each line the binary writes with `--log-format json` is one
/// JSON object, a request's context sits in `span` and `spans` as a span's would (with a proxy's
/// request id escaped, quotes and all), and no credential or token reaches them.
#[tokio::test]
async fn json_logs_are_one_object_per_line_with_each_requests_context() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let log = dir.path().join("stderr.log");
    let token = token(&data, "default");
    let served = Served::spawn(
        &data,
        &log,
        &[("STSGATE_LOG__FORMAT", "json"), ("RUST_LOG", "info")],
    );
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/storage/api/v1/workspaces/default/sts",
            served.http
        ))
        .header("x-auth-token", &token)
        .header("x-request-id", r#"probe"7"{}"#)
        .send()
        .await
        .expect("answers");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    let (secret, session) = secrets(&body);
    let mut dock = common::Dock::connect(&served.mqtt, "JSONDOCK1").await;
    let reply = dock.request(&common::storage_config_get("json", "1")).await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    // Both lines were logged before their answers went out; the writer thread writes its batch
    // some 10 ms after the first line (waited for here up to 10 s, for a loaded machine).
    let mut logs = String::new();
    for _ in 0..200 {
        logs = std::fs::read_to_string(&log).expect("log");
        if logs.matches("credentials handed out").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Only whole lines: the writer may be in the middle of a later batch.
    logs.truncate(logs.rfind('\n').map_or(0, |end| end + 1));
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line.get(key).is_some(), "no {key}: {line}");
        }
    }
    let handed_out = |front: &str| {
        lines
            .iter()
            .find(|l| l["message"] == "credentials handed out" && l["front"] == front)
            .unwrap_or_else(|| panic!("no {front} line in {logs}"))
    };
    let http = handed_out("http");
    assert_eq!(
        http["span"],
        serde_json::json!({
            "method": "POST",
            "path": "/storage/api/v1/workspaces/default/sts",
            "request_id": r#"probe"7"{}"#,
            "name": "http",
        }),
        "{http}"
    );
    assert_eq!(http["spans"], serde_json::json!([http["span"]]));
    let mqtt = handed_out("mqtt");
    assert_eq!(
        mqtt["span"],
        serde_json::json!({"sn": "JSONDOCK1", "tid": "json", "name": "mqtt"}),
        "{mqtt}"
    );
    for (what, value) in [
        ("secret key", &secret),
        ("session token", &session),
        ("x-auth-token", &token),
    ] {
        assert!(
            !logs.contains(value.as_str()),
            "the {what} leaked into the logs"
        );
    }
}

/// Sends `signal` (`HUP`, `TERM`, …) to the service.
fn signal(served: &Served, signal: &str) {
    let pid = served.child.id().to_string();
    assert!(
        Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill")
            .success(),
        "kill -{signal}"
    );
}

/// Waits at most 10 s for the service to exit; its status.
fn exit_status(served: &mut Served) -> std::process::ExitStatus {
    for _ in 0..100 {
        if let Some(status) = served.child.try_wait().expect("wait") {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("still running 10 s after the signal");
}

/// What `systemctl reload`, a closed terminal, logrotate, runit's `sv 1`/`sv 2`/`sv alarm` and a
/// resized terminal send: none stops the service, which answers docks and pilots after each;
/// SIGINT then stops it cleanly.
#[tokio::test]
async fn no_signal_but_term_or_int_stops_the_service() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let token = token(&data, "default");
    let audit = dir.path().join("audit.jsonl");
    let audit_path = audit.to_str().expect("utf-8").to_owned();
    let mut served = Served::spawn(
        &data,
        &dir.path().join("stderr.log"),
        &[("STSGATE_AUDIT__PATH", &audit_path)],
    );
    let mut dock = common::Dock::connect(&served.mqtt, "SIG0001").await;
    for (i, name) in ["HUP", "USR1", "USR2", "ALRM", "PIPE", "WINCH", "CONT"]
        .iter()
        .enumerate()
    {
        signal(&served, name);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            served.child.try_wait().expect("wait").is_none(),
            "SIG{name} stopped the service"
        );
        let (status, body) = served.sts("default", &token).await;
        assert_eq!(status, 200, "after SIG{name}: {body}");
        let reply = dock
            .request(&common::storage_config_get(&format!("sig{i}"), "1"))
            .await;
        assert_eq!(reply["data"]["result"], 0, "after SIG{name}: {reply}");
    }
    signal(&served, "INT");
    assert!(exit_status(&mut served).success(), "SIGINT stops cleanly");
}

/// A log rotator renames the audit file and sends SIGHUP while pilots are being answered: every
/// credential handed out is in exactly one of the two files, and those after the signal are in
/// the new one (mode 0600).
#[tokio::test]
async fn a_rotated_audit_file_loses_and_repeats_no_record() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let log = dir.path().join("stderr.log");
    let token = token(&data, "default");
    let audit = dir.path().join("audit.jsonl");
    let rotated = dir.path().join("audit.jsonl.1");
    let audit_path = audit.to_str().expect("utf-8").to_owned();
    // (No rate limit: one pilot asks as fast as it is answered.)
    let mut served = Served::spawn(
        &data,
        &log,
        &[
            ("STSGATE_AUDIT__PATH", &audit_path),
            ("STSGATE_LIMITS__SUBJECT_PER_MINUTE", "0"),
        ],
    );
    let served_http = served.http.clone();
    let asking = {
        let token = token.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut answered = 0_usize;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let response = client
                    .post(format!(
                        "http://{served_http}/storage/api/v1/workspaces/default/sts"
                    ))
                    .header("x-auth-token", &token)
                    .send()
                    .await
                    .expect("answered");
                assert_eq!(response.status(), 200);
                answered += 1;
            }
            answered
        });
        (stop, task)
    };
    let lines = |path: &Path| {
        std::fs::read_to_string(path)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    };
    for _ in 0..500 {
        if lines(&audit) >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    std::fs::rename(&audit, &rotated).expect("rotate");
    tokio::time::sleep(Duration::from_millis(100)).await;
    signal(&served, "HUP");
    let reopened = async {
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("configuration reloaded")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reopened)
        .await
        .expect("the reopen is logged");
    let after_signal = served.sts("default", &token).await;
    assert_eq!(after_signal.0, 200);
    for _ in 0..500 {
        if lines(&audit) >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    asking.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = asking.1.await.expect("asker") + 1;
    // The writer flushes once its queue is empty: wait for it to settle.
    let mut total = 0;
    for _ in 0..100 {
        total = lines(&audit) + lines(&rotated);
        if total >= answered {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        total, answered,
        "records in both files vs credentials handed out"
    );
    assert!(
        lines(&rotated) >= 20,
        "the records before the signal stayed"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&audit)
            .expect("new file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    signal(&served, "TERM");
    assert!(exit_status(&mut served).success());
}

/// Waits at most 10 s for `needle` in the service's log.
async fn logged(log: &Path, needle: &str) {
    let seen = async {
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains(needle)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap_or_else(|_| panic!("`{needle}` is logged"));
}

/// `systemctl reload` (SIGHUP) reads the file again: a changed profile is answered with fresh
/// credentials under its new prefix; a broken file then changes nothing and is logged with
/// every problem; both are counted; a setting that needs a restart is named.
#[tokio::test]
async fn sighup_reads_the_configuration_again_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let log = dir.path().join("stderr.log");
    let file = dir.path().join("stsgate.toml");
    let config =
        |prefix: &str| format!("[storage]\nobject_key_prefix = \"{prefix}/{{workspace_id}}\"\n");
    std::fs::write(&file, config("before")).unwrap();
    let token = token(&data, "ws-1");
    let served = Served::spawn(&data, &log, &[("STSGATE_CONFIG", file.to_str().unwrap())]);
    let answer = |served: &Served| {
        let token = token.clone();
        let served_http = served.http.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!(
                    "http://{served_http}/storage/api/v1/workspaces/ws-1/sts"
                ))
                .header("x-auth-token", &token)
                .send()
                .await
                .expect("answered");
            assert_eq!(response.status(), 200);
            let body: serde_json::Value = response.json().await.expect("JSON");
            (
                body["data"]["object_key_prefix"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                body["data"]["credentials"]["access_key_id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        }
    };
    let (prefix, first_key) = answer(&served).await;
    assert_eq!(prefix, "before/ws-1");

    std::fs::write(
        &file,
        config("after") + "[http]\nheader_timeout = \"20s\"\n",
    )
    .unwrap();
    // `stsgate reload` signals it through the pid file and prints what it made of the file.
    let out = stsgate(&data)
        .arg("--config")
        .arg(&file)
        .arg("reload")
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("process {}: ok", served.child.id()))
            && said.contains("profile default changed")
            && said.contains("http: changed, takes effect at the next start"),
        "{said}"
    );
    logged(&log, "configuration reloaded").await;
    let (prefix, key) = answer(&served).await;
    assert_eq!(prefix, "after/ws-1");
    assert_ne!(
        key, first_key,
        "the changed profile's credentials were dropped"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("key=\"http\"") || text.contains("key=http"),
        "the setting that needs a restart is named:\n{text}"
    );

    std::fs::write(&file, "[storage]\nprovder = \"aws\"\nduration = \"soon\"\n").unwrap();
    signal(&served, "HUP");
    logged(&log, "configuration reload rejected").await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("storage.provder") && text.contains("storage.duration"),
        "every problem is logged:\n{text}"
    );
    assert_eq!(answer(&served).await, (prefix, key), "nothing changed");
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("reload.json")).unwrap()).unwrap();
    assert_eq!(status["result"], "rejected", "{status}");
    let (_, metrics) = served.get("/metrics").await;
    for (result, want) in [("ok", 1.0), ("rejected", 1.0)] {
        assert_eq!(
            common::metric(
                &metrics,
                "stsgate_config_reloads_total",
                &format!(r#"result="{result}""#)
            ),
            want,
            "{metrics}"
        );
    }
}

/// Waits at most 10 s for `n` lines of the service's log holding `needle`.
async fn logged_times(log: &Path, needle: &str, n: usize) {
    let seen = async {
        while count_logged(log, needle) < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .unwrap_or_else(|_| panic!("{n} lines of `{needle}` are logged"));
}

/// How many times `needle` is in the service's log so far.
fn count_logged(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// One pilot request for workspace `ws-1`, which must be answered with credentials.
async fn pilot_answered(served: &Served, token: &str) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/storage/api/v1/workspaces/ws-1/sts",
            served.http
        ))
        .header("x-auth-token", token)
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200);
}

/// `stsgate reload` for the service on `data`, which must succeed; what it printed.
fn reload_command(data: &Path, file: &Path) -> String {
    let out = stsgate(data)
        .arg("--config")
        .arg(file)
        .arg("reload")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A service whose configuration file sets only `log.filter`, which decides (`RUST_LOG` is
/// empty, as good as unset); its data dir, log, file, a pilot's token, and the temp dir.
struct Filtered {
    served: Served,
    data: std::path::PathBuf,
    log: std::path::PathBuf,
    file: std::path::PathBuf,
    token: String,
    _dir: tempfile::TempDir,
}

impl Filtered {
    fn start(filter: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("data");
        let log = dir.path().join("stderr.log");
        let file = dir.path().join("stsgate.toml");
        write_filter(&file, filter);
        let token = token(&data, "ws-1");
        let served = Served::spawn(
            &data,
            &log,
            &[("STSGATE_CONFIG", file.to_str().unwrap()), ("RUST_LOG", "")],
        );
        Self {
            served,
            data,
            log,
            file,
            token,
            _dir: dir,
        }
    }

    /// Writes `filter` to the file and has the service read it; what `stsgate reload` printed.
    /// Lines are written in the order they are made: once the reload's own line is there, any
    /// line made before it is too.
    async fn reload(&self, filter: &str, reloads: usize) -> String {
        write_filter(&self.file, filter);
        let said = reload_command(&self.data, &self.file);
        logged_times(&self.log, "configuration reloaded", reloads).await;
        said
    }

    async fn ask(&self) {
        pilot_answered(&self.served, &self.token).await;
    }

    fn handouts(&self) -> usize {
        count_logged(&self.log, HANDOUT)
    }
}

fn write_filter(file: &Path, filter: &str) {
    std::fs::write(file, format!("[log]\nfilter = \"{filter}\"\n")).unwrap();
}

const HANDOUT: &str = "credentials handed out";

/// A reload applies a new `log.filter` from the next line on: the handout lines stop when the
/// gateway's target is turned down and come back when it is turned up again. A filter with span
/// directives, which the running plain filter cannot take, is named as needing a restart and
/// the old filter stays.
#[tokio::test]
async fn a_reload_applies_a_new_log_filter() {
    let s = Filtered::start("info");
    s.ask().await;
    logged_times(&s.log, HANDOUT, 1).await;

    let said = s.reload("info,stsgate::gateway=warn", 1).await;
    assert!(
        said.contains("log.filter: now info,stsgate::gateway=warn"),
        "{said}"
    );
    s.ask().await;
    s.ask().await;
    s.reload("info", 2).await;
    assert_eq!(
        s.handouts(),
        1,
        "no handout line while the gateway logs at warn"
    );
    s.ask().await;
    logged_times(&s.log, HANDOUT, 2).await;

    let said = s.reload("info,stsgate[request]=debug", 3).await;
    assert!(
        said.contains("log.filter: changed, takes effect at the next start"),
        "{said}"
    );
    logged(&s.log, "the new log.filter is not applied").await;
    s.ask().await;
    logged_times(&s.log, HANDOUT, 3).await;
}

/// Started with span directives (the filter that locks), a reload replaces it as well, with a
/// plain list or another with span directives.
#[tokio::test]
async fn a_reload_replaces_a_filter_with_span_directives() {
    let s = Filtered::start("info,stsgate[nothing]=trace");
    s.ask().await;
    logged_times(&s.log, HANDOUT, 1).await;
    s.reload("info,stsgate::gateway=warn,stsgate[nothing]=trace", 1)
        .await;
    s.ask().await;
    s.reload("info", 2).await;
    s.ask().await;
    logged_times(&s.log, HANDOUT, 2).await;
    // The request while the gateway logged at warn left no line: two handouts, not three.
    s.reload("info,stsgate::gateway=warn", 3).await;
    assert_eq!(s.handouts(), 2);
    assert_eq!(count_logged(&s.log, "log.filter is not applied"), 0);
}

/// With `RUST_LOG` set, it decides: a reload names `log.filter` as not applied.
#[tokio::test]
async fn rust_log_overrides_a_reloaded_log_filter() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("data");
    let log = dir.path().join("stderr.log");
    let file = dir.path().join("stsgate.toml");
    write_filter(&file, "info");
    let _served = Served::spawn(&data, &log, &[("STSGATE_CONFIG", file.to_str().unwrap())]);
    write_filter(&file, "warn");
    let said = reload_command(&data, &file);
    assert!(
        said.contains("log.filter: changed, takes effect at the next start"),
        "{said}"
    );
    logged(&log, "overrides log.filter").await;
}

/// `stsgate reload` with no service running on the data dir says so, and fails; a stale pid
/// file (a process that is not stsgate) is never signalled.
#[test]
fn reload_without_a_running_service_says_so() {
    let dir = tempfile::tempdir().expect("dir");
    let out = stsgate(dir.path()).arg("reload").output().expect("runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no service runs with data dir"), "{said}");
    // This test's own process is not stsgate.
    std::fs::write(
        dir.path().join("stsgate.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let out = stsgate(dir.path()).arg("reload").output().expect("runs");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not a running stsgate"), "{said}");
}
