//! The Prometheus recorder. `metrics` has one global recorder per process, so it is installed once
//! and every service started in the process (tests start several) shares it; tests therefore
//! assert on increases, not on absolute values.

use std::sync::OnceLock;

use metrics::Counter;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Handles of the counters every answer touches, registered once the recorder is in place (a
/// `counter!` call looks its series up by name and labels each time).
struct Hot {
    http_success: Counter,
    mqtt_success: Counter,
}

static HOT: OnceLock<Hot> = OnceLock::new();

/// Installs the recorder on first call; returns the handle that renders the exposition text.
/// `None` when another recorder was installed first (then `/metrics` says so).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            let _ = HOT.set(Hot {
                http_success: requests("http", "success"),
                mqtt_success: requests("mqtt", "success"),
            });
            Some(handle)
        })
        .clone()
}

fn requests(front: &'static str, result: &'static str) -> Counter {
    metrics::counter!("stsgate_requests_total", "front" => front, "result" => result)
}

/// Counts a request answered by a front, by result.
pub fn request(front: &'static str, result: &'static str) {
    match (HOT.get(), front, result) {
        (Some(hot), "http", "success") => hot.http_success.increment(1),
        (Some(hot), "mqtt", "success") => hot.mqtt_success.increment(1),
        _ => requests(front, result).increment(1),
    }
}

/// Counts a payload on a requests topic that could not be answered.
pub fn mqtt_dropped(reason: &'static str) {
    metrics::counter!("stsgate_mqtt_dropped_total", "reason" => reason).increment(1);
}
