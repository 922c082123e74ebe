//! Replies: success, and the one mapping from an error to `data.result` + message.

use crate::gateway;
use crate::protocol::mqtt::{MessageId, Reply, ReplyData, ReplyOutput, STORAGE_CONFIG_GET};
use crate::protocol::{ResultCode, StorageConfig, now_millis};

/// The reply payload carrying a storage configuration.
pub fn success(tid: &MessageId, bid: Option<&MessageId>, config: &StorageConfig) -> Vec<u8> {
    encode(tid, bid, ResultCode::Success, ReplyOutput::Config(config))
}

/// The reply payload for a request that cannot be served: non-zero result, a message, no
/// credentials.
pub fn failure(
    tid: &MessageId,
    bid: Option<&MessageId>,
    code: ResultCode,
    message: &str,
) -> Vec<u8> {
    encode(tid, bid, code, ReplyOutput::Error { message })
}

/// The reply for a gateway error.
pub fn error(tid: &MessageId, bid: Option<&MessageId>, e: &gateway::Error) -> Vec<u8> {
    failure(tid, bid, e.code(), &e.to_string())
}

fn encode(
    tid: &MessageId,
    bid: Option<&MessageId>,
    code: ResultCode,
    output: ReplyOutput<'_>,
) -> Vec<u8> {
    let reply = Reply {
        method: STORAGE_CONFIG_GET,
        tid,
        bid,
        timestamp: now_millis(),
        data: ReplyData {
            result: code.as_i64(),
            output,
        },
    };
    // Serializing these types cannot fail: every map key is a string and every value is plain.
    serde_json::to_vec(&reply).unwrap_or_default()
}
