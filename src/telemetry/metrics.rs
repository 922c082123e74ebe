//! The Prometheus recorder. `metrics` has one global recorder per process, so it is installed once
//! and every service started in the process (tests start several) shares it; tests therefore
//! assert on increases, not on absolute values.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first call; returns the handle that renders the exposition text.
/// `None` when another recorder was installed first (then `/metrics` says so).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .clone()
}

/// Counts a request answered by a front, by result.
pub fn request(front: &'static str, result: &'static str) {
    metrics::counter!("stsgate_requests_total", "front" => front, "result" => result).increment(1);
}

/// Counts a payload on a requests topic that could not be answered.
pub fn mqtt_dropped(reason: &'static str) {
    metrics::counter!("stsgate_mqtt_dropped_total", "reason" => reason).increment(1);
}
