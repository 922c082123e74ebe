//! Any bytes from a connected client to the embedded MQTT broker: decoding and handling never
//! panic, and everything the broker writes back decodes as complete, valid packets.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    stsgate::embedded::broker::fuzz_session(input);
});
