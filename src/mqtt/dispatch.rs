//! What to do with one message on a requests topic. Pure with respect to MQTT: it returns the
//! reply to publish (if any), so the session stays a thin loop and this is testable on its own.

use crate::gateway::{Gateway, Request};
use crate::protocol::ResultCode;
use crate::protocol::mqtt::{self, DecodeError, Inbound, MODULE_MEDIA};
use crate::telemetry::context::Context as LogContext;
use crate::telemetry::metrics;

use super::reply;

/// A reply to publish.
#[derive(Debug)]
pub struct Answer {
    /// `thing/product/{sn}/requests_reply`.
    pub topic: String,
    /// JSON payload.
    pub payload: Vec<u8>,
}

/// Handles one message received on `topic`. `None`: nothing to answer (not ours, or not
/// answerable — the latter is logged and counted).
pub async fn handle(
    gateway: &Gateway,
    topic: &str,
    payload: &[u8],
    max_payload: usize,
) -> Option<Answer> {
    let Some(sn) = mqtt::gateway_sn(topic) else {
        return drop_message(
            "bad_topic",
            topic,
            "topic is not thing/product/{sn}/requests with a letters-and-digits serial number",
        );
    };
    if payload.len() > max_payload {
        return drop_message(
            "too_large",
            topic,
            &format!(
                "payload of {} bytes exceeds mqtt.max_payload",
                payload.len()
            ),
        );
    }
    let request = match mqtt::decode(payload) {
        Ok(Inbound::StorageConfigGet(request)) => request,
        Ok(Inbound::OtherMethod) => return None,
        Err(e @ DecodeError::NotJson(_)) => return drop_message("not_json", topic, &e.to_string()),
        Err(e @ DecodeError::NoTid) => return drop_message("no_tid", topic, &e.to_string()),
    };
    let (tid, bid) = (&request.tid, request.bid.as_ref());
    // Every log line of this request carries the device's tid, its request id.
    let context = LogContext::new("mqtt")
        .quoted("sn", sn)
        .shown("tid", &tid_text(tid));
    let answer = async {
        match request.module {
            Err(reason) => refuse(sn, ResultCode::BadRequest, &reason, |m| {
                reply::failure(tid, bid, ResultCode::BadRequest, m)
            }),
            Ok(module) if module != MODULE_MEDIA => {
                let reason = format!("module {module} is not supported; only 0 (media) is served");
                refuse(sn, ResultCode::UnsupportedModule, &reason, |m| {
                    reply::failure(tid, bid, ResultCode::UnsupportedModule, m)
                })
            }
            Ok(_) => match gateway.credentials(Request::Dock { sn }).await {
                Ok(issued) => reply::success(tid, bid, &issued.config()),
                Err(e) => refuse(sn, e.code(), &e.to_string(), |_| reply::error(tid, bid, &e)),
            },
        }
    };
    let payload = context.wrap(answer).await;
    Some(Answer {
        topic: mqtt::reply_topic(sn),
        payload,
    })
}

fn tid_text(tid: &mqtt::MessageId) -> String {
    match tid {
        mqtt::MessageId::Text(t) => t.chars().take(64).flat_map(char::escape_default).collect(),
        mqtt::MessageId::Number(n) => n.get().chars().take(64).collect(),
    }
}

fn refuse(
    sn: &str,
    code: ResultCode,
    reason: &str,
    build: impl FnOnce(&str) -> Vec<u8>,
) -> Vec<u8> {
    if code.as_i64() >= ResultCode::Internal.as_i64() {
        tracing::warn!(
            front = "mqtt",
            sn,
            code = code.as_i64(),
            reason,
            "storage_config_get failed"
        );
    } else {
        tracing::info!(
            front = "mqtt",
            sn,
            code = code.as_i64(),
            reason,
            "storage_config_get refused"
        );
    }
    metrics::request("mqtt", code.label());
    build(reason)
}

fn drop_message(reason: &'static str, topic: &str, detail: &str) -> Option<Answer> {
    let topic: String = topic
        .chars()
        .take(200)
        .flat_map(char::escape_default)
        .collect();
    tracing::warn!(%topic, reason, detail, "dropping a message that cannot be answered");
    metrics::mqtt_dropped(reason);
    None
}
