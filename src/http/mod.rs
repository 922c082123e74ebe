//! The HTTP front: `POST /storage/api/v1/workspaces/{workspace_id}/sts` for Pilot 2, plus
//! `/healthz`, `/readyz` and `/metrics`. Unknown routes and methods get the JSON error envelope.

mod error;
mod handlers;
mod health;

use std::sync::Arc;

use axum::Router;
use axum::http::HeaderName;
use axum::routing::{get, post};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use health::Readiness;

use crate::auth::Verifier;
use crate::gateway::Gateway;

/// The token header Pilot 2 sends.
pub const AUTH_HEADER: &str = "x-auth-token";

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The core.
    pub gateway: Arc<Gateway>,
    /// Token verification.
    pub verifier: Arc<Verifier>,
    /// Readiness of the parts the service depends on.
    pub readiness: Readiness,
    /// Renders `/metrics`.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// The request id header: taken from a proxy when present, generated otherwise, echoed back.
pub const REQUEST_ID: &str = "x-request-id";

/// The router. Every request runs in a span carrying its request id, so each log line of a
/// request can be found from the id a client or proxy reports. Layers run outside-in: the token
/// is marked sensitive before anything could log headers.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID);
    let span = |request: &axum::http::Request<axum::body::Body>| {
        let id = request
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-");
        tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path())
    };
    let layers = tower::ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            HeaderName::from_static(AUTH_HEADER),
        ]))
        .layer(SetRequestIdLayer::new(request_id.clone(), RandomRequestId))
        .layer(TraceLayer::new_for_http().make_span_with(span))
        .layer(PropagateRequestIdLayer::new(request_id));
    Router::new()
        .route(
            "/storage/api/v1/workspaces/{workspace_id}/sts",
            post(handlers::sts),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(layers)
        .with_state(state)
}

/// Generates request ids: 8 random base32 characters drawn once per process, then a counter
/// (8 hex digits): unique within the process, told apart across replicas, and free of a system
/// call per request.
#[derive(Clone, Copy, Debug)]
struct RandomRequestId;

static REQUEST_ID_PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
static REQUEST_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let prefix = REQUEST_ID_PREFIX.get_or_init(|| {
            crate::random::string(crate::random::BASE32, 8).unwrap_or_else(|_| "00000000".into())
        });
        let n = REQUEST_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut id = [0_u8; 16];
        id[..8].copy_from_slice(&prefix.as_bytes()[..8]);
        for (i, byte) in id[8..].iter_mut().enumerate() {
            *byte = b"0123456789abcdef"[((n >> (28 - 4 * i)) & 0xf) as usize];
        }
        axum::http::HeaderValue::from_bytes(&id)
            .ok()
            .map(RequestId::new)
    }
}
