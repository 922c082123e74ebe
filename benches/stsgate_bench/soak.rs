//! Soak: the embedded default binary under mixed load (Pilot 2 over HTTP for several workspaces
//! and docks over MQTT) for a long time, resident memory sampled throughout. Growth shows as a
//! difference between the first and the last part of the run.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Scale;
use crate::footprint::{free_port, get, rss_mib, spawn_serve, token};

pub async fn run(scale: &Scale) -> Vec<String> {
    let dir = tempfile::tempdir().expect("data dir");
    let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    // BENCH_SOAK_BROKER=<port>: use the Mosquitto (or other broker) there instead of the
    // embedded one, to tell the broker's memory from the service's.
    let external: Option<u16> = std::env::var("BENCH_SOAK_BROKER")
        .ok()
        .and_then(|p| p.parse().ok());
    let mqtt_port = external.unwrap_or_else(free_port);
    let mut child = spawn_serve(dir.path(), http, mqtt_port, external);
    let pid = child.id();
    let started = Instant::now();
    while get(http, "/readyz") != Some(200) {
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
            panic!("stsgate serve exited before it was ready ({status}): {log}");
        }
        // (generous: under `cargo test` this is a debug binary on a loaded machine)
        assert!(started.elapsed() < Duration::from_secs(60), "ready in time");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let token = |ws: &str| token(dir.path(), ws);
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    // BENCH_SOAK_PARTS=http or =mqtt runs one kind of load only (to find what grows).
    let parts = std::env::var("BENCH_SOAK_PARTS").unwrap_or_else(|_| "http,mqtt".to_owned());
    // Pilots: one connection per workspace, a request every 5 ms each.
    for w in (0..4).filter(|_| parts.contains("http")) {
        let (token, stop, served) = (token(&format!("soak-{w}")), stop.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let s = crate::http::load_workspace(
                    http,
                    &format!("soak-{w}"),
                    &token,
                    1,
                    Duration::from_secs(5),
                    Duration::from_millis(5),
                )
                .await;
                served.fetch_add(s.count() as u64, Ordering::SeqCst);
            }
        }));
    }
    // Docks: a fleet of 200 (four at a time) connect, ask ten times and leave, and come back
    // later. BENCH_SOAK_CHURN=1: every visit is a dock never seen before (a new serial number).
    let churn = std::env::var("BENCH_SOAK_CHURN").is_ok();
    for d in (0..4).filter(|_| parts.contains("mqtt")) {
        let (stop, served) = (stop.clone(), served.clone());
        tasks.push(tokio::spawn(async move {
            let mut generation = 0_usize;
            while !stop.load(Ordering::SeqCst) {
                let sn = if churn {
                    format!("SOAK{d}G{generation}")
                } else {
                    format!("SOAK{d}N{}", generation % 50)
                };
                let mut dock = crate::mqtt::Dock::connect(mqtt_port, &sn).await;
                for i in 0..10 {
                    dock.round_trip(i).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                served.fetch_add(10, Ordering::SeqCst);
                generation += 1;
            }
        }));
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < scale.soak {
        samples.push((start.elapsed().as_secs_f64(), rss_mib(pid)));
        tokio::time::sleep(scale.soak_sample).await;
    }
    samples.push((start.elapsed().as_secs_f64(), rss_mib(pid)));
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        let _ = t.await;
    }
    let alive = child.try_wait().map(|s| s.is_none()).unwrap_or(false);
    let _ = Command::new("kill").arg(pid.to_string()).status();
    let _ = child.wait();

    let fifth = (samples.len() / 5).max(1);
    let avg = |s: &[(f64, f64)]| s.iter().map(|(_, r)| r).sum::<f64>() / s.len() as f64;
    let (first, last) = (
        avg(&samples[..fifth]),
        avg(&samples[samples.len() - fifth..]),
    );
    let max = samples.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    let series: Vec<String> = samples
        .iter()
        .step_by((samples.len() / 12).max(1))
        .map(|(t, r)| format!("{:.0}s {r:.1}", t))
        .collect();
    vec![
        format!(
            "soak: {:.0} s of mixed load on the embedded default binary (4 pilots; docks arriving and leaving, 4 at a time, {}); {} requests answered; process alive at the end: {alive}",
            start.elapsed().as_secs_f64(),
            if churn {
                "each one new"
            } else {
                "a fleet of 200"
            },
            served.load(Ordering::SeqCst)
        ),
        format!(
            "  RSS MiB: first fifth avg {first:.1}, last fifth avg {last:.1}, max {max:.1}; growth {:+.1} MiB",
            last - first
        ),
        format!("  samples (time, MiB): {}", series.join(", ")),
    ]
}
