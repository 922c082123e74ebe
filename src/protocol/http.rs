//! The HTTP envelope `{"code", "message", "data"}` (spec `http-sts.md`). Success is `code 0`,
//! `message "success"`; an error has a non-zero `code`, a message that says what and why, and no
//! `data` at all (never empty or partial credentials).

use serde::{Deserialize, Serialize};

use super::ResultCode;

/// The response envelope.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// `0` on success, a [`ResultCode`] otherwise.
    pub code: i64,
    /// `"success"`, or what went wrong.
    pub message: String,
    /// The payload, present only on success.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

// === impl Envelope ===

impl<T> Envelope<T> {
    /// A success envelope around `data`.
    pub fn success(data: T) -> Self {
        Self {
            code: ResultCode::Success.as_i64(),
            message: "success".to_owned(),
            data: Some(data),
        }
    }

    /// An error envelope: non-zero code, message, no data.
    pub fn error(code: ResultCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_i64(),
            message: message.into(),
            data: None,
        }
    }
}
