//! `/healthz` (the process answers), `/readyz` (the broker session is up) and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;

/// `GET /healthz`
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`
pub async fn readyz(State(state): State<Arc<AppState>>) -> Response {
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
pub async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match &state.metrics {
        Some(handle) => {
            ::metrics::counter!("stsgate_log_dropped_total")
                .absolute(crate::telemetry::log_lines_dropped());
            handle.render().into_response()
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}
