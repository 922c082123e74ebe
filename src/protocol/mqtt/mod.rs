//! The dock side (spec `mqtt-storage_config_get.md`): topics, the `storage_config_get` request as
//! decoded from `thing/product/{gateway_sn}/requests`, and the reply published on
//! `thing/product/{gateway_sn}/requests_reply`.
//!
//! Decoding happens in two steps so that each outcome gets the answer it deserves: a payload that
//! is not a JSON object or carries no usable `tid` cannot be answered ([`DecodeError`]); a
//! payload for another `method` belongs to another service ([`Inbound::OtherMethod`]); anything
//! else is a [`Request`] that gets a reply, even if its body is invalid.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{StorageConfig, Timestamp};

/// The method this service answers.
pub const STORAGE_CONFIG_GET: &str = "storage_config_get";
/// The subscription filter for every gateway's requests.
pub const REQUESTS_FILTER: &str = "thing/product/+/requests";
/// Longest gateway serial number accepted (real ones are 14 characters).
pub const MAX_SN_LEN: usize = 64;
/// `data.module` value for media, the only module served.
pub const MODULE_MEDIA: i64 = 0;

/// A `tid` or `bid` as the device sent it, echoed verbatim in the reply.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum MessageId {
    /// The usual form: a string (a UUID on real devices).
    Text(String),
    /// Tolerated: a JSON number, kept as the device wrote it (`12345678901234567890123` comes
    /// back as that, not as the nearest `f64`).
    Number(Box<RawValue>),
}

/// What a payload on a requests topic turned out to be.
#[derive(Debug)]
pub enum Inbound {
    /// A `storage_config_get` request: it must be answered.
    StorageConfigGet(Request),
    /// Another method (e.g. `airport_bind_status`): not ours, ignored silently.
    OtherMethod,
}

/// A `storage_config_get` request that can be answered.
#[derive(Debug)]
pub struct Request {
    /// Echoed in the reply.
    pub tid: MessageId,
    /// Echoed in the reply (omitted there if the device sent none).
    pub bid: Option<MessageId>,
    /// The requested module, or why the request is malformed.
    pub module: Result<i64, String>,
}

/// Why a payload cannot be answered at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or not a JSON object.
    #[error("payload is not a JSON object: {0}")]
    NotJson(String),
    /// No `tid`, or one that is neither a string nor a number.
    #[error("storage_config_get without a usable tid")]
    NoTid,
}

/// The reply envelope, field order as in the spec example.
#[derive(Debug, Serialize)]
pub struct Reply<'a> {
    /// Always `storage_config_get`.
    pub method: &'a str,
    /// The request's `tid`.
    pub tid: &'a MessageId,
    /// The request's `bid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bid: Option<&'a MessageId>,
    /// Server time of the reply in milliseconds (a JSON number).
    pub timestamp: u64,
    /// Result and output.
    pub data: ReplyData<'a>,
}

/// `data` of a reply.
#[derive(Debug, Serialize)]
pub struct ReplyData<'a> {
    /// `0` on success, a `ResultCode` otherwise.
    pub result: i64,
    /// The storage configuration, or on error an object with only a `message`.
    pub output: ReplyOutput<'a>,
}

/// `data.output` of a reply.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ReplyOutput<'a> {
    /// Success.
    Config(&'a StorageConfig),
    /// Failure: what went wrong, never credentials.
    Error {
        /// Human-readable cause.
        message: &'a str,
    },
}

// === impl MessageId ===

impl PartialEq for MessageId {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Text(a), Self::Text(b)) => a == b,
            (Self::Number(a), Self::Number(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

impl Eq for MessageId {}

/// The top-level members of a request, in order, each value as the device wrote it. Reading the
/// envelope this way finds `tid` even when another member would make a full parse fail (a number
/// out of `f64`'s range, nesting deeper than serde_json's limit, a duplicate key): such a request
/// is answered 10400 rather than dropped.
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'a> Members<'a> {
    /// The first value of `key`.
    fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A key given more than once, if any.
    fn duplicate(&self) -> Option<&str> {
        let mut seen = std::collections::HashSet::with_capacity(self.0.len());
        self.0
            .iter()
            .map(|(k, _)| k.as_ref())
            .find(|k| !seen.insert(*k))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Members<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Members<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(
                self,
                mut map: M,
            ) -> Result<Members<'a>, M::Error> {
                let mut members = Vec::new();
                while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    members.push(entry);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visitor(std::marker::PhantomData))
    }
}

/// Decodes a payload received on a requests topic.
pub fn decode(payload: &[u8]) -> Result<Inbound, DecodeError> {
    // serde would also read a JSON array as a map of nothing: refuse anything but an object up
    // front.
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(DecodeError::NotJson("expected a JSON object".to_owned()));
    }
    let members: Members<'_> =
        serde_json::from_slice(payload).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let method = members
        .get("method")
        .and_then(|m| serde_json::from_str::<Cow<'_, str>>(m.get()).ok());
    if method.as_deref() != Some(STORAGE_CONFIG_GET) {
        return Ok(Inbound::OtherMethod);
    }
    let tid = members
        .get("tid")
        .and_then(message_id)
        .ok_or(DecodeError::NoTid)?;
    let bid = members.get("bid").and_then(message_id);
    let module = match members.duplicate() {
        Some(key) => Err(format!("the key `{}` is given twice", printable(key))),
        None => validate_body(bid.is_some(), members.get("timestamp"), members.get("data")),
    };
    Ok(Inbound::StorageConfigGet(Request { tid, bid, module }))
}

/// At most 64 characters of `text`, escaped, for a message that quotes a device's input.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .flat_map(char::escape_default)
        .collect()
}

/// The gateway serial number of a requests topic, if the topic is one and the SN is valid.
pub fn gateway_sn(topic: &str) -> Option<&str> {
    let sn = topic
        .strip_prefix("thing/product/")?
        .strip_suffix("/requests")?;
    valid_sn(sn).then_some(sn)
}

/// Serial numbers are ASCII letters and digits only (as the DJI demo's topic regex), bounded.
pub fn valid_sn(sn: &str) -> bool {
    !sn.is_empty() && sn.len() <= MAX_SN_LEN && sn.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The topic a reply to gateway `sn` is published on.
pub fn reply_topic(sn: &str) -> String {
    format!("thing/product/{sn}/requests_reply")
}

fn message_id(raw: &RawValue) -> Option<MessageId> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(text)
            .ok()
            .filter(|s| !s.is_empty())
            .map(MessageId::Text),
        b'-' | b'0'..=b'9' => Some(MessageId::Number(raw.to_owned())),
        _ => None,
    }
}

fn validate_body(
    has_bid: bool,
    timestamp: Option<&RawValue>,
    data: Option<&RawValue>,
) -> Result<i64, String> {
    if !has_bid {
        return Err("missing or invalid bid".to_owned());
    }
    if let Some(ts) = timestamp.filter(|v| v.get() != "null") {
        serde_json::from_str::<Timestamp>(ts.get())
            .map_err(|e| format!("invalid timestamp: {e}"))?;
    }
    let data = data.ok_or_else(|| "missing data".to_owned())?;
    let data: Value = serde_json::from_str(data.get()).map_err(|e| format!("invalid data: {e}"))?;
    let module = data
        .get("module")
        .ok_or_else(|| "missing data.module".to_owned())?;
    match module {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| "data.module is not an integer".to_owned())
}

#[cfg(test)]
mod tests;
