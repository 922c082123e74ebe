//! Thundering herd: many requests for a scope nobody has asked for yet must make exactly one
//! upstream call; 10,000 docks across 100 workspaces make one call per workspace, and with
//! per-device credentials one call per dock (each asking twice at once), with the memory the
//! 10,000 credentials take.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use stsgate::gateway::{Gateway, Request};

use stsgate::domain::WorkspaceId;

use crate::{Report, Scale};

/// Upstream calls so far (all outcomes), from the process's metrics.
pub fn upstream_calls() -> f64 {
    let text = stsgate::telemetry::metrics::install()
        .expect("metrics recorder")
        .render();
    text.lines()
        .filter(|l| l.starts_with("stsgate_upstream_calls_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Answers of the herd: (upstream calls made, distinct access keys handed out, seconds).
async fn herd<F, Fut>(n: usize, ask: F) -> (f64, usize, f64)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = String> + Send + 'static,
{
    let before = upstream_calls();
    let start = Instant::now();
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(ask(i))).collect();
    let mut keys = HashSet::new();
    for t in tasks {
        keys.insert(t.await.expect("request task"));
    }
    (
        upstream_calls() - before,
        keys.len(),
        start.elapsed().as_secs_f64(),
    )
}

pub async fn run(scale: &Scale) -> Report {
    let service = crate::start(&[]).await;
    let gateway: Arc<Gateway> = service.service.gateway.clone();
    let (calls, keys, secs) = herd(scale.herd, |_| {
        let g = gateway.clone();
        async move {
            let ws = WorkspaceId::parse("herd-cold").expect("workspace");
            let issued = g.for_workspace(ws).await.expect("credentials");
            issued.config().credentials.access_key_id
        }
    })
    .await;
    service.stop().await;
    let mut lines = vec![format!(
        "thundering herd: {} concurrent requests for one cold scope -> {calls} upstream call(s), {keys} distinct credential(s), {:.0} ms",
        scale.herd,
        secs * 1000.0
    )];
    let mut checks = vec![(
        "one upstream call for one cold scope".to_owned(),
        calls == 1.0,
    )];

    // Docks bound to workspaces round-robin, all asking at once.
    let workspaces = scale.workspaces;
    let binds: Vec<(String, String)> = (0..scale.docks_total)
        .map(|d| {
            (
                format!("STSGATE_DEVICES__BIND__HERD{d:06}"),
                format!("herd-ws-{}", d % workspaces),
            )
        })
        .collect();
    let env: Vec<(&str, &str)> = binds
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let service = crate::start(&env).await;
    let gateway: Arc<Gateway> = service.service.gateway.clone();
    let (calls, keys, secs) = herd(scale.docks_total, |d| {
        let g = gateway.clone();
        async move {
            let sn = format!("HERD{d:06}");
            let issued = g
                .credentials(Request::Dock { sn: &sn })
                .await
                .expect("credentials");
            issued.config().credentials.access_key_id
        }
    })
    .await;
    service.stop().await;
    lines.push(format!(
        "thundering herd: {} docks across {workspaces} workspaces at once -> {calls} upstream calls (one per scope: {workspaces}), {keys} distinct credentials, {:.0} ms",
        scale.docks_total,
        secs * 1000.0
    ));
    checks.push((
        format!("one upstream call per scope ({calls} for {workspaces})"),
        calls == workspaces as f64,
    ));

    // Per device: the same docks, each asking twice at once.
    let mut env = env;
    env.push(("STSGATE_STORAGE__PER_DEVICE", "true"));
    env.push((
        "STSGATE_STORAGE__OBJECT_KEY_PREFIX",
        "{workspace_id}/{device}",
    ));
    let service = crate::start(&env).await;
    let gateway: Arc<Gateway> = service.service.gateway.clone();
    let rss_before = crate::footprint::rss_mib(std::process::id());
    let (calls, keys, secs) = herd(scale.docks_total * 2, |d| {
        let g = gateway.clone();
        async move {
            let sn = format!("HERD{:06}", d / 2);
            let issued = g
                .credentials(Request::Dock { sn: &sn })
                .await
                .expect("credentials");
            issued.config().credentials.access_key_id
        }
    })
    .await;
    let rss_after = crate::footprint::rss_mib(std::process::id());
    service.stop().await;
    let docks = scale.docks_total;
    lines.push(format!(
        "thundering herd, per device: {docks} docks asking twice at once -> {calls} upstream calls (one per dock: {docks}), {keys} distinct credentials, {:.0} ms; RSS +{:.1} MiB ({:.0} bytes per credential, the embedded store's record of it included)",
        secs * 1000.0,
        rss_after - rss_before,
        (rss_after - rss_before) * 1024.0 * 1024.0 / docks as f64,
    ));
    checks.push((
        format!("one upstream call per device ({calls} for {docks})"),
        calls == docks as f64 && keys == docks,
    ));
    Report { lines, checks }
}
