//! Any payload on any topic: decoding never panics, and what it accepts has a tid that
//! serializes as a JSON string or number.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stsgate::protocol::mqtt::{self, Inbound};

fuzz_target!(|input: (&str, &[u8])| {
    let (topic, payload) = input;
    if let Some(sn) = mqtt::gateway_sn(topic) {
        assert!(mqtt::valid_sn(sn));
        assert!(topic.contains(sn));
    }
    if let Ok(Inbound::StorageConfigGet(request)) = mqtt::decode(payload) {
        // A numeric tid is echoed as the device wrote it (possibly beyond f64, like 1e400), so
        // it is checked as text, not re-parsed.
        let tid = serde_json::to_string(&request.tid).expect("tid serializes");
        assert!(
            tid.starts_with('"') || tid.starts_with(|c: char| c == '-' || c.is_ascii_digit()),
            "{tid}"
        );
    }
});
