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

/// Appends the success envelope around data that `write_data` appends as JSON: the bytes serde
/// writes for [`Envelope::success`], for data rendered once and reused (a test holds the two
/// equal).
pub fn write_success(out: &mut Vec<u8>, write_data: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(SUCCESS_HEAD);
    write_data(out);
    out.push(b'}');
}

/// What [`write_success`] writes before the data.
const SUCCESS_HEAD: &[u8] = br#"{"code":0,"message":"success","data":"#;

/// How many bytes [`write_success`] writes around data of `data_len` bytes.
pub fn success_len(data_len: usize) -> usize {
    SUCCESS_HEAD.len() + data_len + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_written_success_envelope_is_the_serialised_one() {
        let data = serde_json::json!({"bucket": "media", "credentials": {"expire": 3600}});
        let mut written = Vec::new();
        write_success(&mut written, |out| {
            serde_json::to_writer(out, &data).expect("json");
        });
        let serialised = serde_json::to_vec(&Envelope::success(&data)).expect("json");
        let data_len = serde_json::to_vec(&data).expect("json").len();
        assert_eq!(success_len(data_len), written.len());
        assert_eq!(
            String::from_utf8(written).expect("utf-8"),
            String::from_utf8(serialised).expect("utf-8")
        );
    }
}
