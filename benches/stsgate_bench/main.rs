//! `stsgate-bench`: the measurements behind BENCHMARKS.md. Every comparison runs both sides in
//! the same process, one after the other, with the same load generator, and reports ratios.
//!
//! ```sh
//! cargo bench --bench stsgate-bench                 # everything, full size
//! cargo bench --bench stsgate-bench -- http herd    # some of it (http wrk demo mqtt herd
//!                                                   # faults footprint store; soak only by name)
//! ```
//!
//! Under `cargo test` (no `--bench` argument) it runs every part at a tiny size as a smoke test,
//! and checks what must hold whatever the machine: the herd's upstream call counts.

// Wall-clock measurement: std's Instant is the right clock here (the tokio one exists for
// paused-clock tests of the cache).
#![allow(
    clippy::disallowed_types,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::print_stdout,
    clippy::cast_precision_loss,
    missing_docs
)]

mod demo;
mod faults;
mod footprint;
mod herd;
mod http;
mod mqtt;
mod soak;
mod stats;
mod store;
mod wrk;

use std::net::SocketAddr;
use std::time::Duration;

use stsgate::app::Service;
use stsgate::config::{self, Sources};
use stsgate::secret::Secret;

/// How big each measurement is.
pub struct Scale {
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub rounds: usize,
    pub http_pairs: usize,
    pub http_round: Duration,
    pub mqtt_round_trips: usize,
    pub mqtt_warmup: usize,
    pub docks: usize,
    pub herd: usize,
    pub docks_total: usize,
    pub workspaces: usize,
    pub idle: Duration,
    pub upload_bytes: u64,
    pub wrk_fleets: &'static [usize],
    pub wrk_connections: usize,
    pub wrk_round: Duration,
    pub wrk_rounds: usize,
    pub restarts: usize,
    pub fault_run: Duration,
    pub fault_docks: usize,
    pub soak: Duration,
    pub soak_sample: Duration,
}

impl Scale {
    fn full() -> Self {
        Self {
            connections: 32,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            rounds: 3,
            http_pairs: 10,
            http_round: Duration::from_secs(2),
            mqtt_round_trips: 5000,
            mqtt_warmup: 200,
            docks: 16,
            herd: 1000,
            docks_total: 10_000,
            workspaces: 100,
            idle: Duration::from_secs(2),
            upload_bytes: 1 << 30,
            wrk_fleets: &[30_000, 100_000, 200_000],
            wrk_connections: 32,
            wrk_round: Duration::from_secs(5),
            wrk_rounds: 7,
            restarts: 10,
            fault_run: Duration::from_secs(60),
            fault_docks: 8,
            soak: std::env::var("BENCH_SOAK_SECS")
                .ok()
                .and_then(|s| s.parse().ok())
                .map_or(Duration::from_secs(30 * 60), Duration::from_secs),
            soak_sample: Duration::from_secs(10),
        }
    }

    fn smoke() -> Self {
        Self {
            connections: 2,
            duration: Duration::from_millis(200),
            warmup: Duration::from_millis(50),
            rounds: 1,
            http_pairs: 2,
            http_round: Duration::from_millis(100),
            mqtt_round_trips: 20,
            mqtt_warmup: 2,
            docks: 2,
            herd: 200,
            docks_total: 500,
            workspaces: 10,
            idle: Duration::from_millis(100),
            upload_bytes: 12 << 20,
            wrk_fleets: &[200],
            wrk_connections: 4,
            wrk_round: Duration::from_secs(1),
            wrk_rounds: 1,
            restarts: 2,
            fault_run: Duration::from_secs(6),
            fault_docks: 2,
            soak: Duration::from_secs(3),
            soak_sample: Duration::from_millis(500),
        }
    }
}

/// The service in this process, on free ports, with its own data dir.
pub struct Started {
    pub service: Service,
    pub http: SocketAddr,
    secret: Secret,
    _data: tempfile::TempDir,
}

impl Started {
    /// A token for `workspace`.
    pub fn token(&self, workspace: &str) -> String {
        stsgate::auth::mint(
            &self.secret,
            workspace,
            "bench",
            Duration::from_secs(3600),
            None,
        )
        .expect("token")
    }

    pub async fn stop(self) {
        self.service.stop().await;
    }
}

/// Starts the embedded default (plus `env`) on free ports, without rate limits.
pub async fn start(env: &[(&str, &str)]) -> Started {
    let data = tempfile::tempdir().expect("data dir");
    let mut vars: Vec<(String, String)> = vec![
        ("STSGATE_LIMITS__DEVICE_PER_MINUTE".into(), "0".into()),
        ("STSGATE_LIMITS__SUBJECT_PER_MINUTE".into(), "0".into()),
        ("STSGATE_LOG__FILTER".into(), "warn".into()),
    ];
    vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let config = config::load(&Sources {
        file: None,
        env: vars,
        flags: vec![
            ("data_dir".into(), data.path().display().to_string()),
            ("http.listen".into(), "127.0.0.1:0".into()),
            ("mqtt.embedded_listen".into(), "127.0.0.1:0".into()),
            ("storage.local.listen".into(), "127.0.0.1:0".into()),
        ],
    })
    .expect("config");
    let secret =
        stsgate::auth::load_or_generate(&config.auth, &config.data_dir).expect("jwt secret");
    let service = Service::start(config).await.expect("service starts");
    assert!(service.wait_ready(Duration::from_secs(10)).await, "ready");
    Started {
        http: service.http_addr,
        service,
        secret,
        _data: data,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let full = args.iter().any(|a| a == "--bench");
    let only: Vec<&str> = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .map(String::as_str)
        .collect();
    // The soak runs only when asked for by name: it takes half an hour.
    let wanted =
        |part: &str| only.contains(&part) || (only.is_empty() && (part != "soak" || !full));
    let scale = if full { Scale::full() } else { Scale::smoke() };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "stsgate-bench ({}; {} CPUs)",
            if full { "full" } else { "smoke test" },
            std::thread::available_parallelism().map_or(0, usize::from)
        );
        if wanted("http") {
            let service = start(&[]).await;
            report(http::run(&scale, &service).await);
            service.stop().await;
        }
        if wanted("wrk") {
            report(wrk::run(&scale).await);
        }
        if wanted("demo") {
            report(Box::pin(demo::run(&scale)).await);
        }
        if wanted("mqtt") {
            report(mqtt::run(&scale).await);
        }
        if wanted("herd") {
            Box::pin(herd::run(&scale)).await.print_and_check();
        }
        if wanted("faults") {
            Box::pin(faults::run(&scale)).await.print_and_check();
        }
        if wanted("soak") {
            report(soak::run(&scale).await);
        }
        if wanted("footprint") {
            report(footprint::run(&scale).await);
        }
        if wanted("store") {
            report(Box::pin(store::run(&scale)).await);
        }
    });
}

/// What a part found: lines for the reader, and checks that must hold on any machine (the herd's
/// call counts, nothing lost across broker restarts), kept as data rather than read back from
/// the text.
pub struct Report {
    /// Lines for BENCHMARKS.md.
    pub lines: Vec<String>,
    /// `(what, held)`.
    pub checks: Vec<(String, bool)>,
}

impl Report {
    /// A report with nothing to check.
    pub fn lines(lines: Vec<String>) -> Self {
        Self {
            lines,
            checks: Vec::new(),
        }
    }

    /// Prints the lines, then fails on any check that did not hold.
    fn print_and_check(self) {
        report(self.lines);
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|(_, held)| !held)
            .map(|(what, _)| what.as_str())
            .collect();
        assert!(failed.is_empty(), "checks failed: {}", failed.join("; "));
    }
}

fn report(lines: Vec<String>) {
    for line in lines {
        println!("{line}");
    }
    println!();
}
