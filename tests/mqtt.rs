//! The dock's side: `storage_config_get` on `thing/product/{sn}/requests`, answered on
//! `…/requests_reply`, through the embedded broker, with a real MQTT client.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::{Options, TestService, storage_config_get};
use serde_json::Value;

fn assert_success(reply: &Value, tid: &str) {
    assert_eq!(reply["method"], "storage_config_get", "{reply}");
    assert_eq!(reply["tid"], tid);
    assert_eq!(reply["bid"], format!("bid-{tid}"));
    let ts = reply["timestamp"]
        .as_u64()
        .expect("timestamp is a JSON number");
    assert_eq!(ts.to_string().len(), 13);
    let now = stsgate::protocol::now_millis();
    assert!(
        ts <= now && now - ts < 60_000,
        "fresh server time, not the request's"
    );
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    let output = &reply["data"]["output"];
    for key in [
        "bucket",
        "endpoint",
        "object_key_prefix",
        "provider",
        "region",
    ] {
        assert!(
            output[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} in {output}"
        );
    }
    let creds = &output["credentials"];
    for key in ["access_key_id", "access_key_secret", "security_token"] {
        assert!(
            creds[key].as_str().is_some_and(|v| !v.is_empty()),
            "{key} in {creds}"
        );
    }
    assert!(
        creds["expire"].as_u64().is_some_and(|e| e > 3000),
        "{creds}"
    );
}

fn assert_refused(reply: &Value, tid: &str, result: i64, mentions: &str) {
    assert_eq!(reply["tid"], tid, "{reply}");
    assert_eq!(reply["method"], "storage_config_get");
    assert_eq!(reply["data"]["result"], result, "{reply}");
    let output = &reply["data"]["output"];
    let keys: BTreeSet<&str> = output
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        BTreeSet::from(["message"]),
        "no credentials on failure: {reply}"
    );
    let message = output["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(mentions),
        "`{message}` should mention `{mentions}`"
    );
}

#[tokio::test]
async fn a_dock_gets_credentials_whatever_the_timestamp_form() {
    let svc = TestService::start().await;
    let mut dock = svc.dock("4TADKAQ000002J").await;
    for (tid, ts) in [
        ("t-string", r#""1654070968655""#),
        ("t-number", "1654070968655"),
        ("t-null", "null"),
    ] {
        let reply = dock.request(&storage_config_get(tid, ts)).await;
        assert_success(&reply, tid);
    }
    // And with no timestamp at all, exactly as the spec's example otherwise.
    let reply = dock.request(r#"{"tid":"t-none","bid":"bid-t-none","method":"storage_config_get","data":{"module":0}}"#).await;
    assert_success(&reply, "t-none");
    // The spec example itself, byte for byte.
    let spec = include_str!("fixtures/mqtt_storage_config_get_request.json");
    let reply = dock.request(spec).await;
    assert_eq!(
        (reply["tid"].as_str(), reply["bid"].as_str()),
        (Some("123"), Some("456"))
    );
    assert_eq!(reply["data"]["result"], 0);
}

#[tokio::test]
async fn mqtt_and_http_share_the_cached_credential_of_a_workspace() {
    let svc = TestService::start().await;
    let mut dock = svc.dock("SHARE01").await; // unbound: the embedded default's `default` workspace
    let reply = dock.request(&storage_config_get("t1", "1")).await;
    let output = &reply["data"]["output"];
    assert_eq!(output["object_key_prefix"], "default");
    let token = svc.token("default");
    let (_, http) = svc.sts("default", Some(&token)).await;
    assert_eq!(
        http["data"]["credentials"]["access_key_id"],
        output["credentials"]["access_key_id"]
    );
    assert_eq!(
        http["data"]["credentials"]["security_token"],
        output["credentials"]["security_token"]
    );
    for key in [
        "bucket",
        "endpoint",
        "provider",
        "region",
        "object_key_prefix",
    ] {
        assert_eq!(http["data"][key], output[key], "{key}");
    }
}

#[tokio::test]
async fn bound_devices_get_their_workspace_and_unbound_ones_a_clear_refusal() {
    let svc = Options::default()
        .file("[devices]\n[devices.bind]\nGW0001 = \"ws-north\"\n")
        .env("STSGATE_DEVICES__BIND__GW0002", "ws-south")
        .start()
        .await;
    let mut north = svc.dock("GW0001").await;
    let reply = north.request(&storage_config_get("n", "1")).await;
    assert_eq!(
        reply["data"]["output"]["object_key_prefix"], "ws-north",
        "{reply}"
    );
    let mut south = svc.dock("GW0002").await;
    let reply = south.request(&storage_config_get("s", "1")).await;
    assert_eq!(
        reply["data"]["output"]["object_key_prefix"], "ws-south",
        "{reply}"
    );
    // With a config file and no default workspace, unknown gateways are refused.
    let mut stranger = svc.dock("GW9999").await;
    let reply = stranger.request(&storage_config_get("x", "1")).await;
    assert_refused(&reply, "x", 10404, "GW9999 is not bound");
}

#[tokio::test]
async fn other_modules_and_bad_bodies_get_non_zero_results() {
    let svc = TestService::start().await;
    let mut dock = svc.dock("MODULES1").await;
    let cases = [
        (
            r#"{"tid":"m1","bid":"b","method":"storage_config_get","data":{"module":1}}"#,
            10422,
            "module 1",
        ),
        (
            r#"{"tid":"m2","method":"storage_config_get","data":{"module":0}}"#,
            10400,
            "bid",
        ),
        (
            r#"{"tid":"m3","bid":"b","method":"storage_config_get","data":{"module":"x"}}"#,
            10400,
            "module",
        ),
        (
            r#"{"tid":"m4","bid":"b","method":"storage_config_get","timestamp":"yesterday","data":{"module":0}}"#,
            10400,
            "timestamp",
        ),
        (
            r#"{"tid":"m5","bid":"b","method":"storage_config_get"}"#,
            10400,
            "data",
        ),
    ];
    for (i, (payload, result, mentions)) in cases.into_iter().enumerate() {
        let reply = dock.request(payload).await;
        assert_refused(&reply, &format!("m{}", i + 1), result, mentions);
    }
}

async fn dropped(svc: &TestService, reason: &str) -> f64 {
    svc.counter(
        "stsgate_mqtt_dropped_total",
        &format!(r#"reason="{reason}""#),
    )
    .await
}

#[tokio::test]
async fn unanswerable_payloads_are_dropped_counted_and_the_session_goes_on() {
    let svc = TestService::start().await;
    let mut dock = svc.dock("DROPS1").await;
    let not_json_before = dropped(&svc, "not_json").await;
    let no_tid_before = dropped(&svc, "no_tid").await;
    let garbage: [&[u8]; 7] = [
        b"not json at all",
        b"",
        b"[1,2,3]",
        b"{\"tid\":",
        &[0xff, 0xfe, 0x00],
        br#"{"bid":"b","method":"storage_config_get","data":{"module":0}}"#,
        br#"{"tid":{"nested":1},"bid":"b","method":"storage_config_get","data":{"module":0}}"#,
    ];
    for payload in garbage {
        dock.send(payload.to_vec()).await;
    }
    dock.assert_silence("malformed payloads get no reply").await;
    // Deep nesting and oversized payloads are refused without harm.
    dock.send(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)))
        .await;
    dock.send(format!(
        r#"{{"tid":"big","bid":"b","method":"storage_config_get","pad":"{}"}}"#,
        "x".repeat(100_000)
    ))
    .await;
    dock.assert_silence("hostile payloads get no reply").await;
    // The session keeps going.
    let reply = dock.request(&storage_config_get("after", "1")).await;
    assert_success(&reply, "after");
    let not_json_after = dropped(&svc, "not_json").await;
    let no_tid_after = dropped(&svc, "no_tid").await;
    assert!(
        not_json_after >= not_json_before + 5.0,
        "{not_json_before} -> {not_json_after}"
    );
    assert!(
        no_tid_after >= no_tid_before + 2.0,
        "{no_tid_before} -> {no_tid_after}"
    );
    assert!(dropped(&svc, "too_large").await >= 1.0);
}

#[tokio::test]
async fn other_methods_on_the_topic_are_ignored_silently() {
    let svc = TestService::start().await;
    let mut dock = svc.dock("OTHERS1").await;
    for method in [
        "airport_bind_status",
        "config",
        "flighttask_resource_get",
        "STORAGE_CONFIG_GET",
    ] {
        dock.send(format!(
            r#"{{"tid":"o","bid":"b","method":"{method}","data":{{}}}}"#
        ))
        .await;
    }
    dock.assert_silence("other services' methods").await;
    assert_success(
        &dock.request(&storage_config_get("still", "1")).await,
        "still",
    );
}

#[tokio::test]
async fn gateways_with_invalid_serial_numbers_are_not_answered() {
    let svc = TestService::start().await;
    let mut bad = svc.dock("bad-sn_1").await;
    bad.send(storage_config_get("x", "1")).await;
    bad.assert_silence("serial numbers are letters and digits only")
        .await;
    let mut good = svc.dock("GOODSN1").await;
    assert_success(&good.request(&storage_config_get("g", "1")).await, "g");
}

/// A reply holds credentials: a broker must not keep it for whoever subscribes next.
#[tokio::test]
async fn a_reply_is_not_retained_for_a_later_subscriber() {
    let svc = TestService::start().await;
    let mut dock = svc.dock("RETAIN01").await;
    let reply = dock.request(&storage_config_get("t-retain", "1")).await;
    assert_success(&reply, "t-retain");
    let mut later = svc.dock("RETAIN01").await;
    later
        .assert_silence("the reply was published without the retain flag")
        .await;
}

#[tokio::test]
async fn many_docks_of_one_workspace_share_one_credential() {
    let svc = TestService::start().await;
    let mut docks = Vec::new();
    for i in 0..20 {
        docks.push(svc.dock(&format!("FLEET{i:03}")).await);
    }
    for dock in &docks {
        dock.send(storage_config_get(&dock.sn, "1")).await;
    }
    let mut keys = BTreeSet::new();
    for dock in &mut docks {
        let reply = dock.reply().await;
        assert_success(&reply, &dock.sn.clone());
        keys.insert(
            reply["data"]["output"]["credentials"]["access_key_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    assert_eq!(keys.len(), 1, "one credential for the workspace: {keys:?}");
}

#[tokio::test]
async fn a_flooding_dock_is_rate_limited_without_slowing_the_others() {
    let svc = Options::default()
        .env("STSGATE_LIMITS__DEVICE_PER_MINUTE", "60")
        .env("STSGATE_LIMITS__DEVICE_BURST", "5")
        .start()
        .await;
    let mut flood = svc.dock("FLOOD0001").await;
    for i in 0..40 {
        flood.send(storage_config_get(&format!("f{i}"), "1")).await;
    }
    let mut results = Vec::new();
    for _ in 0..40 {
        results.push(
            flood.reply().await["data"]["result"]
                .as_i64()
                .unwrap_or_default(),
        );
    }
    let served = results.iter().filter(|r| **r == 0).count();
    let limited = results.iter().filter(|r| **r == 10429).count();
    assert!(
        (5..=6).contains(&served) && served + limited == 40,
        "{results:?}"
    );

    let mut calm = svc.dock("CALM0001").await;
    let started = tokio::time::Instant::now();
    let reply = calm.request(&storage_config_get("c", "1")).await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    let limited_reply = flood.request(&storage_config_get("again", "1")).await;
    assert_refused(&limited_reply, "again", 10429, "retry in");
    assert!(
        svc.counter("stsgate_rate_limited_total", r#"front="mqtt""#)
            .await
            >= 35.0
    );
}

/// The embedded broker's queues are bounded: a dock that asks 200 times in bursts of 20 still
/// gets every answer, each exactly once.
#[tokio::test]
async fn a_dock_asking_in_bursts_gets_every_answer_once() {
    let svc = Options::default()
        .env("STSGATE_LIMITS__DEVICE_PER_MINUTE", "0")
        .start()
        .await;
    let mut dock = svc.dock("RETAIN01").await;
    let mut seen = BTreeSet::new();
    for burst in 0..10 {
        for i in 0..20 {
            dock.send(storage_config_get(&format!("t{burst}-{i}"), "1"))
                .await;
        }
        for _ in 0..20 {
            let reply = dock.reply().await;
            let tid = reply["tid"].as_str().unwrap_or_default().to_owned();
            assert_success(&reply, &tid);
            assert!(seen.insert(tid.clone()), "{tid} answered twice");
        }
    }
    assert_eq!(seen.len(), 200);
    dock.assert_silence("nothing more").await;
}

/// Mosquitto's own command-line clients (another MQTT implementation than the service's) as a
/// dock on the embedded broker; an MQTT 5 client is refused with "unacceptable protocol version"
/// rather than left hanging.
#[tokio::test]
async fn mosquitto_clients_as_a_dock_on_the_embedded_broker() {
    let svc = TestService::start().await;
    let broker = &svc.service.broker;
    let port = broker.port.to_string();
    let args = |extra: &[&str]| {
        let mut args = vec![
            "-h",
            broker.host.as_str(),
            "-p",
            port.as_str(),
            "-V",
            "mqttv311",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let sub = tokio::process::Command::new("mosquitto_sub")
        .args(args(&[
            "-t",
            "thing/product/MOSQDOCK01/requests_reply",
            "-q",
            "1",
            "-C",
            "1",
            "-W",
            "20",
        ]))
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub (mosquitto-clients) is installed");
    let reply = tokio::spawn(sub.wait_with_output());
    // Until the subscriber is in place, a request's answer goes nowhere: ask until one arrives.
    let mut asked = 0;
    while !reply.is_finished() && asked < 60 {
        let status = tokio::process::Command::new("mosquitto_pub")
            .args(args(&[
                "-t",
                "thing/product/MOSQDOCK01/requests",
                "-q",
                "1",
                "-m",
                &storage_config_get(&format!("mosq-{asked}"), "\"1700000000000\""),
            ]))
            .status()
            .await
            .expect("mosquitto_pub");
        assert!(status.success());
        asked += 1;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let output = reply.await.expect("joined").expect("mosquitto_sub ran");
    assert!(output.status.success(), "{output:?}");
    let reply: Value = serde_json::from_slice(&output.stdout).expect("one JSON reply");
    let tid = reply["tid"].as_str().expect("tid").to_owned();
    assert_success(&reply, &tid);

    let v5 = tokio::process::Command::new("mosquitto_pub")
        .args([
            "-h",
            broker.host.as_str(),
            "-p",
            port.as_str(),
            "-V",
            "mqttv5",
        ])
        .args(["-t", "x", "-m", "y"])
        .output()
        .await
        .expect("mosquitto_pub");
    assert!(!v5.status.success());
    let said = String::from_utf8_lossy(&v5.stderr).to_lowercase();
    assert!(said.contains("protocol version"), "{said}");
}

/// Issue 11.5: with `mqtt.share_group` and the embedded broker, the filter
/// `$share/{group}/thing/product/+/requests` was granted, `/readyz` said ready, and no request was
/// ever answered. Now the embedded broker honours shared subscriptions: two replicas — one
/// running the broker, one connecting to it — answer each request exactly once between them.
#[tokio::test]
async fn replicas_in_a_share_group_on_the_embedded_broker_answer_each_request_exactly_once() {
    let a = Options::default()
        .env("STSGATE_MQTT__SHARE_GROUP", "stsgate")
        .env("STSGATE_LIMITS__DEVICE_PER_MINUTE", "0")
        .start()
        .await;
    let url = format!("mqtt://{}:{}", a.service.broker.host, a.service.broker.port);
    let b = Options::default()
        .env("STSGATE_MQTT__URL", &url)
        .env("STSGATE_MQTT__SHARE_GROUP", "stsgate")
        .env("STSGATE_LIMITS__DEVICE_PER_MINUTE", "0")
        .start()
        .await;
    let mut dock = common::Dock::connect(&a.service.broker, "SHAREEMB01").await;
    let total = 40;
    for i in 0..total {
        dock.send(storage_config_get(&format!("s{i}"), "1")).await;
    }
    let mut tids = Vec::new();
    let mut keys = BTreeSet::new();
    for _ in 0..total {
        let reply = dock.reply().await;
        assert_eq!(reply["data"]["result"], 0, "{reply}");
        tids.push(reply["tid"].as_str().unwrap().to_owned());
        keys.insert(reply["data"]["output"]["credentials"]["access_key_id"].to_string());
    }
    dock.assert_silence("no request is answered twice").await;
    tids.sort();
    tids.dedup();
    assert_eq!(tids.len(), total, "every request answered exactly once");
    // Each replica has its own cache and store: two credentials mean both took a share.
    assert_eq!(keys.len(), 2, "both replicas answered");
    b.service.stop().await;
    a.service.stop().await;
}

/// Issue 11.4: the embedded broker had no authentication, so listening anywhere but on
/// loopback handed every dock's credentials to whoever connected. Off loopback it now refuses to
/// start unless `mqtt.embedded_auth` is on; with it, clients log in with the users generated into
/// the data dir (the service's own session knows its password in-process).
#[tokio::test]
async fn the_embedded_broker_off_loopback_needs_authentication_and_enforces_it() {
    let data = tempfile::tempdir().unwrap();
    let load = |listen: &str, auth: &str| {
        stsgate::config::load(&stsgate::config::Sources {
            file: None,
            env: vec![
                (
                    "STSGATE_MQTT__EMBEDDED_LISTEN".to_owned(),
                    listen.to_owned(),
                ),
                ("STSGATE_MQTT__EMBEDDED_AUTH".to_owned(), auth.to_owned()),
            ],
            flags: vec![("data_dir".to_owned(), data.path().display().to_string())],
        })
    };
    let refused = load("0.0.0.0:1883", "false")
        .expect_err("refused")
        .to_string();
    assert!(
        refused.contains("mqtt.embedded_listen") && refused.contains("mqtt.embedded_auth"),
        "{refused}"
    );
    assert!(load("0.0.0.0:1883", "true").is_ok());
    assert!(
        load("127.0.0.1:1883", "false").is_ok(),
        "the laptop default"
    );

    let svc = Options::default()
        .env("STSGATE_MQTT__EMBEDDED_AUTH", "true")
        .start()
        .await;
    let users: Value = serde_json::from_slice(
        &std::fs::read(svc.data_dir.join("mqtt_users.json")).expect("users generated"),
    )
    .unwrap();
    let dock_password = users["dock"].as_str().expect("a dock user");
    let mut dock = common::Dock::connect_as(
        &svc.service.broker,
        "AUTHDOCK01",
        Some(("dock", dock_password)),
    )
    .await;
    let reply = dock.request(&storage_config_get("auth", "1")).await;
    assert_success(&reply, "auth");

    // Without the password the broker says no (CONNACK 4).
    let mut options = rumqttc::MqttOptions::new(
        "intruder",
        &svc.service.broker.host,
        svc.service.broker.port,
    );
    options.set_credentials("dock", "guess");
    let (_client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    match eventloop.poll().await {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, rumqttc::ConnectReturnCode::BadUserNamePassword);
        }
        other => panic!("a wrong password is refused, got {other:?}"),
    }
}
