//! The HTTP front: `POST /storage/api/v1/workspaces/{workspace_id}/sts` for Pilot 2, plus
//! `/healthz`, `/readyz` and `/metrics`. Unknown routes and methods get the JSON error envelope.

mod api;
mod edge;
mod error;
mod handlers;
mod health;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use error::ApiError;

use crate::auth::Verifier;
use crate::domain::Readiness;
use crate::gateway::Gateway;

/// The token header Pilot 2 sends.
pub const AUTH_HEADER: &str = "x-auth-token";

/// What the handlers share. Handed to them behind one `Arc`: axum clones the state for every
/// request, and cloning four reference counts that both cores touch was a tenth of a
/// microsecond per answer.
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

/// [`AUTH_HEADER`] and [`REQUEST_ID`] as header names, which a header map finds by hash; a `&str`
/// is parsed and checked on every lookup.
const AUTH_HEADER_NAME: axum::http::HeaderName = axum::http::HeaderName::from_static(AUTH_HEADER);
const REQUEST_ID_NAME: axum::http::HeaderName = axum::http::HeaderName::from_static(REQUEST_ID);

/// The HTTP service. Every request passes the edge (`edge.rs`) first: the token is marked
/// sensitive before anything could log headers, and the request runs in a log context carrying
/// its request id, so each log line of a request can be found from the id a client or proxy
/// reports. Then a plain `/sts` is answered by hand (`api.rs`), anything else by the router.
///
/// The edge wraps the whole service rather than being added with `Router::layer`, which wraps
/// each route on its own: a second boxed route per request, its future allocated and the request
/// moved through two more service layers.
pub fn router(state: AppState) -> edge::Edge<api::Api> {
    let state = Arc::new(state);
    let router = Router::new()
        .route(
            "/storage/api/v1/workspaces/{workspace_id}/sts",
            post(handlers::sts),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .with_state(state.clone());
    tower::Layer::layer(&edge::EdgeLayer, api::Api::new(state, router))
}
