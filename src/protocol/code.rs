//! The non-zero result codes stsgate answers with, shared by the HTTP `code` field and the MQTT
//! `data.result` field so that one number means one thing whichever front a device used.
//!
//! The scheme is `10000 + <closest HTTP status>`, so the number reads as its cause.

use serde::Serialize;

/// A result code: `0` is success, anything else is an error with the meaning below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "i64")]
pub enum ResultCode {
    /// `0`: success.
    Success,
    /// `10400`: the request is malformed (bad JSON field, invalid workspace id, missing `bid`…).
    BadRequest,
    /// `10401`: missing, malformed, badly signed or expired `x-auth-token` (HTTP only).
    Unauthorized,
    /// `10403`: the token is valid but for another workspace.
    Forbidden,
    /// `10404`: the device (gateway serial number) is not bound to any workspace.
    DeviceNotBound,
    /// `10422`: `storage_config_get` for a `module` other than `0` (media).
    UnsupportedModule,
    /// `10429`: too many requests from this device or token.
    RateLimited,
    /// `10500`: an internal error of stsgate (e.g. the data dir is not writable).
    Internal,
    /// `10502`: the upstream STS refused or failed the request.
    UpstreamFailed,
    /// `10503`: the upstream STS is unreachable or overloaded.
    Unavailable,
    /// `10504`: the upstream STS did not answer in time.
    UpstreamTimeout,
}

// === impl ResultCode ===

impl ResultCode {
    /// The number on the wire.
    pub const fn as_i64(self) -> i64 {
        match self {
            Self::Success => 0,
            Self::BadRequest => 10400,
            Self::Unauthorized => 10401,
            Self::Forbidden => 10403,
            Self::DeviceNotBound => 10404,
            Self::UnsupportedModule => 10422,
            Self::RateLimited => 10429,
            Self::Internal => 10500,
            Self::UpstreamFailed => 10502,
            Self::Unavailable => 10503,
            Self::UpstreamTimeout => 10504,
        }
    }

    /// A short stable label for metrics and logs.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::DeviceNotBound => "device_not_bound",
            Self::UnsupportedModule => "unsupported_module",
            Self::RateLimited => "rate_limited",
            Self::Internal => "internal",
            Self::UpstreamFailed => "upstream_failed",
            Self::Unavailable => "unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
        }
    }
}

impl From<ResultCode> for i64 {
    fn from(code: ResultCode) -> Self {
        code.as_i64()
    }
}
