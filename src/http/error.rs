//! The one mapping from errors to HTTP status + envelope code, and the one place HTTP errors are
//! logged (client errors at info, server errors at warn).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth;
use crate::gateway;
use crate::protocol::ResultCode;
use crate::protocol::http::Envelope;
use crate::telemetry::metrics;

/// An error answer: `{"code": <non-zero>, "message": "..."}` with an honest status.
#[derive(Debug)]
pub struct ApiError {
    code: ResultCode,
    message: String,
    retry_after: Option<u64>,
}

// === impl ApiError ===

impl ApiError {
    /// An error with an explicit code.
    pub fn new(code: ResultCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 401: only for a missing or bad token (Pilot 2 logs the pilot out on 401).
    pub fn unauthorized(e: &auth::Error) -> Self {
        Self::new(ResultCode::Unauthorized, e.to_string())
    }

    fn status(&self) -> StatusCode {
        match self.code {
            ResultCode::Success => StatusCode::OK,
            ResultCode::BadRequest => StatusCode::BAD_REQUEST,
            ResultCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ResultCode::Forbidden => StatusCode::FORBIDDEN,
            ResultCode::DeviceNotBound => StatusCode::NOT_FOUND,
            ResultCode::UnsupportedModule => StatusCode::UNPROCESSABLE_ENTITY,
            ResultCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ResultCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ResultCode::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ResultCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ResultCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl From<gateway::Error> for ApiError {
    fn from(e: gateway::Error) -> Self {
        let retry_after = match &e {
            gateway::Error::RateLimited { retry_after } => Some(retry_after.as_secs().max(1)),
            _ => None,
        };
        Self {
            retry_after,
            ..Self::new(e.code(), e.to_string())
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), code = self.code.as_i64(), message = %self.message, "http request failed");
        } else {
            tracing::info!(status = status.as_u16(), code = self.code.as_i64(), message = %self.message, "http request refused");
        }
        metrics::request("http", self.code.label());
        let retry = match (self.retry_after, self.code) {
            (Some(seconds), _) => Some(seconds),
            (None, ResultCode::RateLimited | ResultCode::Unavailable) => Some(1),
            _ => None,
        };
        let mut response =
            (status, Json(Envelope::<()>::error(self.code, self.message))).into_response();
        if let Some(seconds) = retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
