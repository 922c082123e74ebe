//! `/healthz` (the process answers), `/readyz` (the broker session is up) and `/metrics`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// Readiness flags set by the parts that own them.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    mqtt: Arc<AtomicBool>,
}

// === impl Readiness ===

impl Readiness {
    /// Records whether the MQTT session is connected.
    pub fn set_mqtt(&self, up: bool) {
        self.mqtt.store(up, Ordering::Relaxed);
    }

    /// Whether the MQTT session is connected.
    pub fn mqtt(&self) -> bool {
        self.mqtt.load(Ordering::Relaxed)
    }
}

/// `GET /healthz`
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mqtt = state.readiness.mqtt();
    let status = if mqtt {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({ "ready": mqtt, "mqtt": if mqtt { "connected" } else { "disconnected" } })),
    )
        .into_response()
}

/// `GET /metrics`
pub async fn metrics(State(state): State<AppState>) -> Response {
    match &state.metrics {
        Some(handle) => handle.render().into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}
