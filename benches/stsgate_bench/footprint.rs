//! Footprint of the embedded default as a user runs it (the `stsgate` binary built by this
//! cargo invocation): time from spawn to a ready `/readyz`, resident memory idle and under HTTP
//! load, and the binary's size.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::Scale;

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `GET path` over a fresh connection; the status code, if any.
pub fn get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0_u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Resident set size of `pid` in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// `stsgate serve` (the binary built by this cargo invocation) with its data in `data`, HTTP on
/// `http`, the embedded broker on `mqtt_port` (unless `broker` names an external one), no rate
/// limits and quiet logs (warnings and errors go to `{data}/serve.log`).
pub fn spawn_serve(
    data: &std::path::Path,
    http: SocketAddr,
    mqtt_port: u16,
    broker: Option<u16>,
) -> std::process::Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stsgate"));
    if let Some(port) = broker {
        command.env("STSGATE_MQTT__URL", format!("mqtt://127.0.0.1:{port}"));
    }
    command
        .arg("--data-dir")
        .arg(data)
        .arg("serve")
        .arg("--http-listen")
        .arg(http.to_string())
        .arg("--mqtt-embedded-listen")
        .arg(format!("127.0.0.1:{mqtt_port}"))
        .arg("--storage-local-listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .env("STSGATE_LIMITS__SUBJECT_PER_MINUTE", "0")
        .env("STSGATE_LIMITS__DEVICE_PER_MINUTE", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(data.join("serve.log"))
                .map_or_else(|_| Stdio::null(), Stdio::from),
        )
        .spawn()
        .expect("stsgate starts")
}

/// A token for `workspace` from `stsgate token` over the data dir `data`.
pub fn token(data: &std::path::Path, workspace: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_stsgate"))
        .arg("--data-dir")
        .arg(data)
        .args(["token", "--workspace", workspace])
        .env("RUST_LOG", "off")
        .output()
        .expect("stsgate token");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned()
}

pub async fn run(scale: &Scale) -> Vec<String> {
    let binary = env!("CARGO_BIN_EXE_stsgate");
    let size = std::fs::metadata(binary).map_or(0, |m| m.len());
    let dir = tempfile::tempdir().expect("data dir");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let start = Instant::now();
    let mut child = spawn_serve(dir.path(), http, free_port(), None);
    let mut ready = None;
    while start.elapsed() < Duration::from_secs(20) {
        if get(http, "/readyz") == Some(200) {
            ready = Some(start.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let pid = child.id();
    tokio::time::sleep(scale.idle).await;
    let idle = rss_mib(pid);

    // Under load: the HTTP benchmark's generator against the binary, sampling RSS.
    let token = token(dir.path(), "bench");
    let load = tokio::spawn({
        let (token, connections, duration) = (token.clone(), scale.connections, scale.duration);
        async move { crate::http::load(http, &token, connections, duration).await }
    });
    let mut peak: f64 = 0.0;
    while !load.is_finished() {
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut served = load.await.expect("load");
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();

    let ready_ms = ready.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    vec![
        format!(
            "footprint of the embedded default ({} binary {:.1} MiB)",
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            size as f64 / (1024.0 * 1024.0)
        ),
        format!("  spawn to ready (/readyz 200): {ready_ms:.0} ms (target <= 200)"),
        format!(
            "  idle RSS after {:?}: {idle:.1} MiB (target <= 30)",
            scale.idle
        ),
        format!(
            "  peak RSS under HTTP load ({} connections, {:.0} req/s): {peak:.1} MiB",
            scale.connections,
            served.per_second()
        ),
        format!("  {}", served.line("binary under load")),
    ]
}
