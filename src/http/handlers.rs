//! Request handlers. Order of checks for `/sts`: token (401), token workspace = path workspace
//! (403), workspace id well-formed (400), then credentials (5xx on upstream failure).

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::{AUTH_HEADER_NAME, ApiError, AppState};
use crate::auth;
use crate::gateway::Request;
use crate::protocol::http::Envelope;
use crate::protocol::{self, ResultCode};

/// The `x-auth-token` header, taken without copying the whole header map (axum's `HeaderMap`
/// extractor clones it).
pub struct AuthToken(Option<HeaderValue>);

impl<S: Send + Sync> FromRequestParts<S> for AuthToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.headers.get(AUTH_HEADER_NAME).cloned()))
    }
}

/// `POST /storage/api/v1/workspaces/{workspace_id}/sts` as axum's router serves it: for a
/// workspace segment that is not plain (percent-encoded, say); plain ones are matched by hand
/// (`api.rs`) and answered by [`sts_answer`] directly.
pub async fn sts(
    State(state): State<Arc<AppState>>,
    Path(workspace): Path<String>,
    AuthToken(token): AuthToken,
) -> Result<Response, ApiError> {
    sts_answer(&state, &workspace, token.as_ref()).await
}

/// The `/sts` answer for the workspace the path names and the request's `x-auth-token`.
pub async fn sts_answer(
    state: &AppState,
    workspace: &str,
    token: Option<&HeaderValue>,
) -> Result<Response, ApiError> {
    let token = token
        .ok_or(auth::Error::Missing)
        .and_then(|v| {
            v.to_str()
                .map_err(|_| auth::Error::Malformed("header is not visible ASCII".to_owned()))
        })
        .map_err(|e| ApiError::unauthorized(&e))?;
    let pilot = state.verifier.verify(token).await.map_err(|e| match e {
        // The identity provider is away: not the pilot's fault, so no 401 (which logs out).
        auth::Error::KeysUnavailable => ApiError::new(ResultCode::Unavailable, e.to_string()),
        e => ApiError::unauthorized(&e),
    })?;
    if pilot.workspace() != workspace {
        return Err(ApiError::new(
            ResultCode::Forbidden,
            "the token is for another workspace than the one in the path",
        ));
    }
    let issued = state
        .gateway
        .credentials(Request::Pilot {
            workspace,
            subject: pilot.subject(),
        })
        .await?;
    // From the credential's rendering made once, in a buffer of the exact size.
    let mut body = Vec::with_capacity(protocol::http::success_len(issued.json_len()));
    protocol::http::write_success(&mut body, |out| issued.write_json(out));
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

/// Any unknown path.
pub async fn not_found() -> impl IntoResponse {
    (
        axum::http::StatusCode::NOT_FOUND,
        Json(Envelope::<()>::error(
            ResultCode::BadRequest,
            "no such endpoint; POST /storage/api/v1/workspaces/{workspace_id}/sts",
        )),
    )
}

/// A known path with the wrong method.
pub async fn method_not_allowed() -> impl IntoResponse {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        Json(Envelope::<()>::error(
            ResultCode::BadRequest,
            "method not allowed on this endpoint",
        )),
    )
}
