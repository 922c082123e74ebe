use super::*;
use crate::protocol::http::Envelope;
use crate::protocol::{Credentials, Provider, ResultCode};
use crate::secret::Secret;

const SPEC_REQUEST: &str =
    include_str!("../../../tests/fixtures/mqtt_storage_config_get_request.json");
const SPEC_REPLY: &str = include_str!("../../../tests/fixtures/mqtt_storage_config_get_reply.json");
const SPEC_HTTP: &str = include_str!("../../../tests/fixtures/http_sts_response.json");

fn request(json: &str) -> Request {
    match decode(json.as_bytes()) {
        Ok(Inbound::StorageConfigGet(r)) => r,
        other => panic!("expected a request from {json}, got {other:?}"),
    }
}

fn text(s: &str) -> MessageId {
    MessageId::Text(s.to_owned())
}

#[test]
fn spec_request_decodes() {
    let r = request(SPEC_REQUEST);
    assert_eq!(r.tid, text("123"));
    assert_eq!(r.bid, Some(text("456")));
    assert_eq!(r.module, Ok(0));
}

#[test]
fn timestamp_as_number_string_or_missing() {
    for ts in [
        r#""timestamp":1654070968655,"#,
        r#""timestamp":"1654070968655","#,
        "",
        r#""timestamp:":1,"#,
    ] {
        let json = format!(
            r#"{{"tid":"t","bid":"b",{ts}"method":"storage_config_get","data":{{"module":0}}}}"#
        );
        assert_eq!(request(&json).module, Ok(0), "{json}");
    }
}

#[test]
fn bad_bodies_are_answerable_bad_requests() {
    let cases = [
        (
            r#"{"tid":"t","method":"storage_config_get","data":{"module":0}}"#,
            "bid",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","timestamp":"soon","data":{"module":0}}"#,
            "timestamp",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","timestamp":-4,"data":{"module":0}}"#,
            "timestamp",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get"}"#,
            "missing data",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","data":{}}"#,
            "data.module",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","data":{"module":"media"}}"#,
            "integer",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","data":{"module":0.5}}"#,
            "integer",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","data":[0]}"#,
            "data.module",
        ),
    ];
    for (json, why) in cases {
        let err = request(json).module.expect_err(json);
        assert!(err.contains(why), "{json}: {err} should mention {why}");
    }
}

#[test]
fn other_modules_decode_with_their_number() {
    let r = request(r#"{"tid":"t","bid":"b","method":"storage_config_get","data":{"module":1}}"#);
    assert_eq!(r.module, Ok(1));
    let r = request(r#"{"tid":7,"bid":8,"method":"storage_config_get","data":{"module":"0"}}"#);
    assert_eq!(r.module, Ok(0));
    assert_eq!(r.tid, number("7"));
}

fn number(raw: &str) -> MessageId {
    MessageId::Number(RawValue::from_string(raw.to_owned()).unwrap())
}

/// Issue 11.6: what used to be dropped as "not JSON" although the envelope had a `tid`.
#[test]
fn a_request_with_a_tid_is_answerable_whatever_else_is_wrong() {
    let deep = format!("{}0{}", "[".repeat(200), "]".repeat(200));
    let cases = [
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","timestamp":1e400,"data":{"module":0}}"#.to_owned(),
            "timestamp",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","data":{"module":1e400}}"#.to_owned(),
            "data",
        ),
        (
            r#"{"tid":"t","bid":"b","method":"storage_config_get","data":{"module":0},"data":{"module":0}}"#.to_owned(),
            "given twice",
        ),
        (
            r#"{"tid":"t","tid":"u","bid":"b","method":"storage_config_get","data":{"module":0}}"#.to_owned(),
            "`tid` is given twice",
        ),
        (
            format!(r#"{{"tid":"t","bid":"b","method":"storage_config_get","data":{{"module":0,"x":{deep}}}}}"#),
            "recursion",
        ),
    ];
    for (json, why) in cases {
        let r = request(&json);
        assert_eq!(r.tid, text("t"), "{json}");
        let err = r.module.expect_err(&json);
        assert!(err.contains(why), "{json}: {err} should mention {why}");
    }
}

#[test]
fn a_numeric_tid_comes_back_exactly_as_sent() {
    let r = request(
        r#"{"tid":12345678901234567890123,"bid":-0.5e3,"method":"storage_config_get","data":{"module":0}}"#,
    );
    assert_eq!(r.tid, number("12345678901234567890123"));
    let reply = serde_json::to_string(&Reply {
        method: STORAGE_CONFIG_GET,
        tid: &r.tid,
        bid: r.bid.as_ref(),
        timestamp: 1,
        data: ReplyData {
            result: 0,
            output: ReplyOutput::Error { message: "m" },
        },
    })
    .unwrap();
    assert!(
        reply.contains(r#""tid":12345678901234567890123,"bid":-0.5e3,"#),
        "{reply}"
    );
    // Neither a string nor a number: no usable tid.
    for tid in ["null", "true", "{}", "[]", r#""""#] {
        let json = format!(
            r#"{{"tid":{tid},"bid":"b","method":"storage_config_get","data":{{"module":0}}}}"#
        );
        assert!(
            matches!(decode(json.as_bytes()), Err(DecodeError::NoTid)),
            "{json}"
        );
    }
}

#[test]
fn unanswerable_payloads() {
    assert!(matches!(decode(b"not json"), Err(DecodeError::NotJson(_))));
    assert!(matches!(decode(b"[1,2]"), Err(DecodeError::NotJson(_))));
    assert!(matches!(decode(b""), Err(DecodeError::NotJson(_))));
    let no_tid = br#"{"bid":"b","method":"storage_config_get","data":{"module":0}}"#;
    assert_eq!(decode(no_tid).err(), Some(DecodeError::NoTid));
    let bad_tid = br#"{"tid":{},"bid":"b","method":"storage_config_get","data":{"module":0}}"#;
    assert_eq!(decode(bad_tid).err(), Some(DecodeError::NoTid));
    let empty_tid = br#"{"tid":"","bid":"b","method":"storage_config_get","data":{"module":0}}"#;
    assert_eq!(decode(empty_tid).err(), Some(DecodeError::NoTid));
}

#[test]
fn other_methods_are_not_ours() {
    for json in [
        r#"{"tid":"t","bid":"b","method":"airport_bind_status","data":{}}"#,
        r#"{"tid":"t","bid":"b","data":{"module":0}}"#,
        r#"{"method":42}"#,
    ] {
        assert!(
            matches!(decode(json.as_bytes()), Ok(Inbound::OtherMethod)),
            "{json}"
        );
    }
}

#[test]
fn topics() {
    assert_eq!(
        gateway_sn("thing/product/4TADKAQ000002J/requests"),
        Some("4TADKAQ000002J")
    );
    assert_eq!(gateway_sn("thing/product/a-b/requests"), None);
    assert_eq!(gateway_sn("thing/product//requests"), None);
    assert_eq!(gateway_sn("thing/product/x/y/requests"), None);
    assert_eq!(gateway_sn("thing/product/x/events"), None);
    assert_eq!(
        gateway_sn(&format!("thing/product/{}/requests", "A".repeat(65))),
        None
    );
    assert_eq!(gateway_sn("thing/product/ÄB/requests"), None);
    assert_eq!(reply_topic("SN1"), "thing/product/SN1/requests_reply");
}

fn spec_output() -> StorageConfig {
    let reply: Value = serde_json::from_str(SPEC_REPLY).expect("fixture is JSON");
    serde_json::from_value(reply["data"]["output"].clone()).expect("spec output decodes")
}

#[test]
fn spec_reply_output_round_trips_field_for_field() {
    let reply: Value = serde_json::from_str(SPEC_REPLY).expect("fixture is JSON");
    let output = spec_output();
    assert_eq!(output.provider, Provider::Ali);
    assert_eq!(
        serde_json::to_value(&output).ok(),
        Some(reply["data"]["output"].clone())
    );
    // Keys come out in the spec's order.
    let encoded = serde_json::to_string(&output).expect("encodes");
    let order = [
        "bucket",
        "credentials",
        "access_key_id",
        "access_key_secret",
        "expire",
        "security_token",
        "endpoint",
        "object_key_prefix",
        "provider",
        "region",
    ];
    let positions: Vec<usize> = order
        .iter()
        .map(|k| encoded.find(&format!("\"{k}\"")).expect("key present"))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{encoded}");
}

#[test]
fn reply_envelope_matches_the_spec_shape() {
    let output = spec_output();
    let tid = text("123");
    let bid = text("456");
    let reply = Reply {
        method: STORAGE_CONFIG_GET,
        tid: &tid,
        bid: Some(&bid),
        timestamp: 1_234_567_890_123,
        data: ReplyData {
            result: 0,
            output: ReplyOutput::Config(&output),
        },
    };
    let mut expected: Value = serde_json::from_str(SPEC_REPLY).expect("fixture is JSON");
    // We always send the timestamp as a JSON number, as the DJI demo does.
    expected["timestamp"] = Value::from(1_234_567_890_123_u64);
    assert_eq!(serde_json::to_value(&reply).ok(), Some(expected));
}

#[test]
fn error_reply_has_no_credentials() {
    let tid = text("t");
    let reply = Reply {
        method: STORAGE_CONFIG_GET,
        tid: &tid,
        bid: None,
        timestamp: 1,
        data: ReplyData {
            result: ResultCode::DeviceNotBound.as_i64(),
            output: ReplyOutput::Error { message: "nope" },
        },
    };
    let v = serde_json::to_value(&reply).expect("encodes");
    assert_eq!(
        v["data"],
        serde_json::json!({"result": 10404, "output": {"message": "nope"}})
    );
    assert!(v.get("bid").is_none());
}

#[test]
fn spec_http_response_round_trips() {
    let expected: Value = serde_json::from_str(SPEC_HTTP).expect("fixture is JSON");
    let env: Envelope<StorageConfig> =
        serde_json::from_str(SPEC_HTTP).expect("spec example decodes");
    assert_eq!(env.code, 0);
    assert_eq!(serde_json::to_value(&env).ok(), Some(expected));
    let err: Envelope<StorageConfig> = Envelope::error(ResultCode::Forbidden, "no");
    assert_eq!(
        serde_json::to_value(&err).ok(),
        Some(serde_json::json!({"code": 10403, "message": "no"}))
    );
}

#[test]
fn credentials_debug_hides_secrets() {
    let c = Credentials {
        access_key_id: "AKID".into(),
        access_key_secret: Secret::new("the-secret-key"),
        expire: 5,
        security_token: Secret::new("the-session-token"),
    };
    let dbg = format!("{c:?}");
    assert!(dbg.contains("AKID"));
    assert!(
        !dbg.contains("the-secret-key") && !dbg.contains("the-session-token"),
        "{dbg}"
    );
}
