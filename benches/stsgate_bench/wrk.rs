//! HTTP as users measure it: `wrk`, in its own process, against the `stsgate` binary as
//! `stsgate serve` runs (its log on a file, info level with a line per credential handed out,
//! rate limits on) and against a bare axum handler in this process answering the same bytes, in
//! alternating rounds. The default configuration is asked by fleets of 30,000, 100,000 and
//! 200,000 distinct pilots (tokens with distinct subjects for one workspace, each asking a few
//! times a minute, so that no rate limit trips), after one unmeasured round in which the
//! service first sees every token; the quiet run has logging at warn, rate limits off and one
//! token. The service's RSS after the rounds shows what it keeps per pilot. One run of the
//! smallest fleet has ten storage profiles configured (the default one asked, nine more and
//! workspaces routed to them): what a platform of many customers costs the hot path; another
//! has per-device credentials, each pilot its own.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;

use crate::Scale;

const WORKSPACE: &str = "bench";
const SECRET: &str = "stsgate-bench-wrk-secret-0123456789abcdef";

/// One configuration of the service under load.
struct Variant {
    name: String,
    env: &'static [(&'static str, &'static str)],
    pilots: usize,
    /// Storage profiles configured, the default among them; 1 is no configuration file.
    profiles: usize,
}

/// A configuration file with `profiles` storage profiles: the default (the embedded store, as
/// without a file) and MinIO ones, each with a workspace routed to it; `dir` holds their secret.
fn profiles_config(profiles: usize, dir: &Path) -> String {
    let secret = dir.join("minio.secret");
    std::fs::write(&secret, "bench-minio-secret-0123456789").expect("secret");
    let mut toml = String::from("[storage]\nprovider = \"local\"\n\n[workspaces.profile]\n");
    for i in 1..profiles {
        toml += &format!("\"customer-{i}\" = \"customer-{i}\"\n");
    }
    for i in 1..profiles {
        toml += &format!(
            "\n[profiles.customer-{i}]\nprovider = \"minio\"\nbucket = \"customer-{i}-media\"\n\
             sts_endpoint = \"http://127.0.0.1:9\"\naccess_key_id = \"BENCHCUSTOMER{i:04}\"\n\
             secret_access_key_file = \"{}\"\n",
            secret.display()
        );
    }
    toml
}

pub async fn run(scale: &Scale) -> Vec<String> {
    if Command::new("wrk").arg("--version").output().is_err() {
        return vec!["wrk: skipped (wrk is not installed: apt install wrk)".to_owned()];
    }
    let mut variants: Vec<Variant> = scale
        .wrk_fleets
        .iter()
        .map(|&pilots| Variant {
            name: "default configuration (info log, rate limits on), distinct pilots".to_owned(),
            env: &[],
            pilots,
            profiles: 1,
        })
        .collect();
    variants.push(Variant {
        name: "ten storage profiles configured, distinct pilots".to_owned(),
        env: &[],
        pilots: scale.wrk_fleets[0],
        profiles: 10,
    });
    variants.push(Variant {
        name: "per-device credentials, distinct pilots".to_owned(),
        env: &[
            ("STSGATE_STORAGE__PER_DEVICE", "true"),
            (
                "STSGATE_STORAGE__OBJECT_KEY_PREFIX",
                "{workspace_id}/{device}",
            ),
        ],
        pilots: scale.wrk_fleets[0],
        profiles: 1,
    });
    variants.push(Variant {
        name: "log at warn, rate limits off, one token".to_owned(),
        env: &[
            ("STSGATE_LOG__FILTER", "warn"),
            ("STSGATE_LIMITS__SUBJECT_PER_MINUTE", "0"),
            ("STSGATE_LIMITS__DEVICE_PER_MINUTE", "0"),
        ],
        pilots: 1,
        profiles: 1,
    });
    // `BENCH_WRK_VARIANTS=default,warn`: only the runs whose name holds one of these words (an
    // older binary knows no profiles).
    if let Ok(wanted) = std::env::var("BENCH_WRK_VARIANTS") {
        variants.retain(|v| wanted.split(',').any(|w| v.name.contains(w.trim())));
    }
    let mut lines = vec![format!(
        "wrk (own process, 1 thread, {} connections, {:?} rounds) against the stsgate binary and a bare axum handler, alternating",
        scale.wrk_connections, scale.wrk_round
    )];
    for variant in &variants {
        lines.extend(measure(scale, variant).await);
    }
    lines
}

async fn measure(scale: &Scale, variant: &Variant) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    // `BENCH_STSGATE_BIN`: another build of the binary, to set two commits side by side.
    let binary =
        std::env::var("BENCH_STSGATE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stsgate").into());
    let mut command = Command::new(binary);
    if variant.profiles > 1 {
        let file = dir.path().join("stsgate.toml");
        std::fs::write(&file, profiles_config(variant.profiles, dir.path())).expect("config");
        command.env("STSGATE_CONFIG", file);
    }
    let mut child = command
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(stsgate_testkit::banner::SERVE_ON_FREE_PORTS)
        .env_remove("RUST_LOG")
        .env("STSGATE_AUTH__JWT_SECRET", SECRET)
        .envs(variant.env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("serve.log")).expect("log"))
        .spawn()
        .expect("stsgate serve");
    let stdout = child.stdout.take().expect("stdout");
    let http = stsgate_testkit::banner::read(stdout, Duration::from_secs(20))
        .expect("the ready banner names the HTTP address")
        .http;
    let secret = stsgate::secret::Secret::new(SECRET);
    let tokens: Vec<String> = (0..variant.pilots)
        .map(|i| {
            stsgate::auth::mint(
                &secret,
                WORKSPACE,
                &format!("pilot-{i}"),
                Duration::from_secs(3600),
                None,
            )
            .expect("token")
        })
        .collect();
    let script = dir.path().join("pilots.lua");
    write_script(&script, &tokens);
    let path = format!("/storage/api/v1/workspaces/{WORKSPACE}/sts");
    let service_url = format!("http://{http}{path}");

    // The same bytes from a bare handler (the answer on a cache hit).
    let client = reqwest::Client::new();
    let mut body = Bytes::new();
    for _ in 0..2 {
        let response = client
            .post(&service_url)
            .header("x-auth-token", &tokens[0])
            .send()
            .await
            .expect("answer");
        assert!(response.status().is_success(), "{}", response.status());
        body = response.bytes().await.expect("body");
    }
    let bare = crate::http::bare(body).await;
    let bare_url = format!("http://{bare}{path}");

    let mut service_rps = Vec::new();
    let mut bare_rps = Vec::new();
    let mut service_cpu = Vec::new();
    let mut bare_cpu = Vec::new();
    let mut refused = 0;
    if variant.name.starts_with("per-device") {
        // Each pilot's own credential issued before anything is measured (the embedded store
        // writes each one to disk, more than a round's worth).
        let (client, url) = (&client, &service_url);
        let asks = tokens.iter().map(|token| async move {
            let answer = client
                .post(url)
                .header("x-auth-token", token)
                .send()
                .await
                .expect("answer");
            assert!(answer.status().is_success(), "{}", answer.status());
        });
        futures_util::stream::iter(asks)
            .buffer_unordered(64)
            .collect::<Vec<()>>()
            .await;
    }
    if variant.pilots > 1 {
        // Every token seen once (and verified) before anything is measured.
        refused += wrk(scale, &script, &service_url, child.id()).await.non_2xx;
    }
    for _ in 0..scale.wrk_rounds {
        let round = wrk(scale, &script, &service_url, child.id()).await;
        service_rps.push(round.rps);
        service_cpu.push(round.cpu_us_per_request);
        refused += round.non_2xx;
        let round = wrk(scale, &script, &bare_url, std::process::id()).await;
        bare_rps.push(round.rps);
        bare_cpu.push(round.cpu_us_per_request);
    }
    let rss_mib = rss_kib(child.id()) as f64 / 1024.0;
    let _ = child.kill();
    let _ = child.wait();
    let ratios: Vec<f64> = service_rps
        .iter()
        .zip(&bare_rps)
        .map(|(s, b)| s / b)
        .collect();
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let logged = std::fs::read_to_string(dir.path().join("serve.log"))
        .map(|l| l.matches("credentials handed out").count())
        .unwrap_or(0);
    vec![
        format!("  {} ({} pilots)", variant.name, variant.pilots),
        format!(
            "    service {} req/s, bare {} req/s per round",
            join(&service_rps, 0),
            join(&bare_rps, 0)
        ),
        format!(
            "    ratio service / bare: {} (median {:.2}x); refused (non-2xx): {refused}; log lines written: {logged}",
            ratios
                .iter()
                .map(|r| format!("{r:.2}x"))
                .collect::<Vec<_>>()
                .join(", "),
            median(&ratios)
        ),
        format!(
            "    server CPU per request: service {} us, bare {} us (median {:.1} / {:.1} us)",
            join(&service_cpu, 1),
            join(&bare_cpu, 1),
            median(&service_cpu),
            median(&bare_cpu)
        ),
        format!("    service RSS after the rounds: {rss_mib:.1} MiB"),
    ]
}

/// Resident set size of process `pid`, in KiB (`/proc/{pid}/status`, `VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// `values` with `decimals` digits after the point, separated by " / ".
fn join(values: &[f64], decimals: usize) -> String {
    values
        .iter()
        .map(|v| format!("{v:.decimals$}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// A wrk script sending each request with the next token in turn.
fn write_script(path: &Path, tokens: &[String]) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("script"));
    writeln!(file, "local tokens = {{").expect("write");
    for token in tokens {
        writeln!(file, "  \"{token}\",").expect("write");
    }
    writeln!(
        file,
        "}}\nlocal i = 0\nrequest = function()\n  i = i % #tokens + 1\n  return wrk.format(\"POST\", nil, {{[\"x-auth-token\"] = tokens[i], [\"content-length\"] = \"0\"}}, nil)\nend"
    )
    .expect("write");
}

/// One wrk round's figures.
struct Round {
    rps: f64,
    non_2xx: u64,
    /// CPU time (user + system) of the serving process per request answered, in microseconds:
    /// steadier than requests per second on a shared machine, where another tenant's load moves
    /// throughput between rounds more than it moves the work a request takes.
    cpu_us_per_request: f64,
}

/// One wrk round against `url`, served by process `server`. Awaited, not waited for: the bare
/// handler runs on this runtime and must keep all its threads.
async fn wrk(scale: &Scale, script: &Path, url: &str, server: u32) -> Round {
    let cpu_before = cpu_seconds(server);
    let out = tokio::process::Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{}", scale.wrk_connections),
            &format!("-d{}s", scale.wrk_round.as_secs().max(1)),
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .await
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(label))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let cpu = cpu_seconds(server) - cpu_before;
    let rps = field("Requests/sec:").unwrap_or_else(|| panic!("wrk output:\n{text}"));
    let non_2xx = field("Non-2xx or 3xx responses:").map_or(0, |n| n as u64);
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("wrk output:\n{text}"));
    Round {
        rps,
        non_2xx,
        cpu_us_per_request: cpu * 1e6 / requests.max(1.0),
    }
}

/// User + system CPU seconds process `pid` has used (`/proc/{pid}/stat`, fields 14 and 15).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/{pid}/stat");
    // The command name (field 2) may hold spaces; the fields after it are counted from its `)`.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / rustix::param::clock_ticks_per_second() as f64
}
