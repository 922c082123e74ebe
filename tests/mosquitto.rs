//! External-broker mode against a real Mosquitto started by the test on a free port (and killed
//! when the test ends). `scripts/test.sh` installs Mosquitto when it is missing.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use common::{Dock, Link, Options, storage_config_get};
use stsgate::mqtt::BrokerAddr;
use stsgate_testkit::mosquitto::Mosquitto;

/// An anonymous broker of this test's own on a free port.
fn broker() -> Mosquitto {
    assert!(
        Mosquitto::binary().is_some(),
        "mosquitto is installed (scripts/test.sh installs it)"
    );
    Mosquitto::anonymous().expect("mosquitto listens")
}

#[tokio::test]
async fn docks_are_answered_through_an_external_mosquitto() {
    let broker = broker();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let svc = Options::default()
        .env("STSGATE_MQTT__URL", &url)
        .start()
        .await;
    assert!(!svc.service.embedded_broker);
    assert_eq!(
        svc.service.broker,
        BrokerAddr {
            host: "127.0.0.1".into(),
            port: broker.port,
            tls: false,
        }
    );
    let mut dock = Dock::connect(&svc.service.broker, "MOSQ0001").await;
    for (tid, ts) in [("a", "1654070968655"), ("b", r#""1654070968655""#)] {
        let reply = dock.request(&storage_config_get(tid, ts)).await;
        assert_eq!(reply["tid"], tid, "{reply}");
        assert_eq!(reply["data"]["result"], 0, "{reply}");
        assert_eq!(reply["data"]["output"]["object_key_prefix"], "default");
    }
    dock.send(b"garbage".to_vec()).await;
    dock.assert_silence("garbage").await;
    let reply = dock
        .request(r#"{"tid":"m","bid":"b","method":"storage_config_get","data":{"module":1}}"#)
        .await;
    assert_eq!(reply["data"]["result"], 10422, "{reply}");
    svc.service.stop().await;
}

/// A dock asking again and again until `stop`; returns every reply it got.
fn load(
    broker: BrokerAddr,
    sn: &'static str,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Vec<serde_json::Value>> {
    tokio::spawn(async move {
        let mut dock = Dock::connect(&broker, sn).await;
        let mut replies = Vec::new();
        for i in 0.. {
            if stop.is_cancelled() {
                break;
            }
            dock.send(storage_config_get(&format!("{sn}-{i}"), "1"))
                .await;
            if let Some(reply) = dock.try_reply(Duration::from_millis(300)).await {
                replies.push(reply);
            }
        }
        // Late answers to requests sent just before the stop.
        while let Some(reply) = dock.try_reply(Duration::from_millis(300)).await {
            replies.push(reply);
        }
        replies
    })
}

#[tokio::test]
async fn the_session_comes_back_after_the_broker_restarts_under_load() {
    let broker = broker();
    let port = broker.port;
    let svc = Options::default()
        .env("STSGATE_MQTT__URL", &format!("mqtt://127.0.0.1:{port}"))
        .env("STSGATE_LIMITS__DEVICE_PER_MINUTE", "0")
        .start()
        .await;
    let reconnects_before = svc.counter("stsgate_mqtt_reconnects_total", "").await;
    // Four docks keep asking through the whole restart.
    let stop = tokio_util::sync::CancellationToken::new();
    let docks: Vec<_> = ["LOAD0001", "LOAD0002", "LOAD0003", "LOAD0004"]
        .into_iter()
        .map(|sn| load(svc.service.broker.clone(), sn, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let killed_at = now_ms();
    drop(broker);
    let down = async {
        while svc.service.readiness.mqtt() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), down)
        .await
        .expect("the service notices the broker is gone");
    let (status, _) = svc.get("/readyz").await;
    assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);

    // Same port, new broker: the service reconnects and subscribes again by itself.
    let restarted = restart_on(port);
    assert!(
        svc.service.wait_ready(Duration::from_secs(40)).await,
        "resubscribed after the restart"
    );
    // The docks (which reconnect and subscribe again too) keep asking for a while.
    let back_at = now_ms();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let mut tids = std::collections::HashSet::new();
    for dock in docks {
        let replies = dock.await.expect("load dock");
        for reply in &replies {
            assert_eq!(reply["data"]["result"], 0, "{reply}");
            assert!(
                tids.insert(reply["tid"].as_str().unwrap().to_owned()),
                "answered twice: {reply}"
            );
        }
        let at = |r: &serde_json::Value| r["timestamp"].as_u64().unwrap();
        assert!(
            replies.iter().any(|r| at(r) < killed_at),
            "answered before the restart"
        );
        assert!(
            replies.iter().filter(|r| at(r) > back_at).count() >= 3,
            "answered again after the restart: {replies:?}"
        );
    }
    assert!(
        svc.counter("stsgate_mqtt_reconnects_total", "").await > reconnects_before,
        "the lost connection is counted"
    );
    let (status, _) = svc.get("/readyz").await;
    assert_eq!(status, reqwest::StatusCode::OK);
    drop(restarted);
}

#[tokio::test]
async fn a_request_sent_while_the_service_reconnects_is_answered_once_it_is_back() {
    let broker = broker();
    let window = |client_id: Option<&str>, protocol: &str| {
        let broker_port = broker.port;
        let client_id = client_id.map(str::to_owned);
        let protocol = protocol.to_owned();
        async move {
            // The service reaches the broker through a link the test can cut; the dock does not.
            let link = Link::to(&format!("127.0.0.1:{broker_port}")).await;
            let mut options = Options::default()
                .env("STSGATE_MQTT__URL", &format!("mqtt://{}", link.addr))
                .env("STSGATE_MQTT__PROTOCOL", &protocol);
            if let Some(id) = &client_id {
                options = options.env("STSGATE_MQTT__CLIENT_ID", id);
            }
            let svc = options.start().await;
            let direct = BrokerAddr {
                host: "127.0.0.1".into(),
                port: broker_port,
                tls: false,
            };
            let mut dock = Dock::connect(&direct, "WINDOW0001").await;
            let reply = dock.request(&storage_config_get("before", "1")).await;
            assert_eq!(reply["data"]["result"], 0, "{reply}");

            link.cut();
            let down = async {
                while svc.service.readiness.mqtt() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            };
            tokio::time::timeout(Duration::from_secs(10), down)
                .await
                .expect("the service notices the lost connection");
            dock.send(storage_config_get("during", "1")).await;
            dock.assert_silence("nobody can answer while the link is cut")
                .await;
            link.restore();
            assert!(svc.service.wait_ready(Duration::from_secs(40)).await);
            // Whatever arrives once the service is back (a QoS 1 reply whose acknowledgement the
            // cut swallowed may come again: at least once is the contract, and docks match
            // replies by tid).
            let mut late = None;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
            while let Some(reply) = dock
                .try_reply(deadline.saturating_duration_since(tokio::time::Instant::now()))
                .await
            {
                if reply["tid"] == "during" {
                    late = Some(reply);
                    break;
                }
            }
            svc.service.stop().await;
            late
        }
    };

    // With a client id the broker keeps the session and queues the request for it, in MQTT
    // 3.1.1 (clean session off) and MQTT 5 (clean start off, a session expiry interval).
    for protocol in ["3.1.1", "5"] {
        let id = format!(
            "stsgate-window-{}",
            stsgate::random::string(stsgate::random::BASE32, 6).unwrap()
        );
        let late = window(Some(&id), protocol)
            .await
            .unwrap_or_else(|| panic!("MQTT {protocol}: answered once the service is back"));
        assert_eq!(late["tid"], "during", "{late}");
        assert_eq!(late["data"]["result"], 0, "{late}");
    }

    // Without one the session starts clean, and the request is lost: what the persistent
    // session above is for.
    assert_eq!(window(None, "3.1.1").await, None);
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

fn restart_on(port: u16) -> Mosquitto {
    for _ in 0..100 {
        if let Some(m) = Mosquitto::anonymous_on(port) {
            return m;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("could not restart mosquitto on {port}");
}

#[tokio::test]
async fn replicas_in_a_share_group_answer_each_request_exactly_once() {
    let broker = broker();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    // One replica speaks MQTT 3.1.1, the other MQTT 5: a rolling upgrade between the two.
    let replica = |protocol: &str| {
        Options::default()
            .env("STSGATE_MQTT__URL", &url)
            .env("STSGATE_MQTT__PROTOCOL", protocol)
            .env("STSGATE_MQTT__SHARE_GROUP", "stsgate")
            // One dock sends all the requests here: no rate limit in the way.
            .env("STSGATE_LIMITS__DEVICE_PER_MINUTE", "0")
            .start()
    };
    let a = replica("3.1.1").await;
    let b = replica("5").await;
    let mut dock = Dock::connect(&a.service.broker, "SHARE0001").await;

    let mut collect = async |range: std::ops::Range<usize>| {
        for i in range.clone() {
            dock.send(storage_config_get(&format!("t{i}"), "1")).await;
        }
        let mut replies = Vec::new();
        for _ in range {
            replies.push(dock.reply().await);
        }
        replies
    };
    let first = collect(0..20).await;
    // Each replica has its own cache (and, here, its own embedded store): two credentials mean
    // both answered.
    let keys: std::collections::HashSet<_> = first
        .iter()
        .map(|r| r["data"]["output"]["credentials"]["access_key_id"].to_string())
        .collect();
    assert_eq!(keys.len(), 2, "both replicas took a share");

    // One replica stops while requests are in flight: it answers what it has received and
    // leaves the group; the other takes the rest.
    for i in 20..60 {
        dock.send(storage_config_get(&format!("t{i}"), "1")).await;
    }
    b.stop().await;
    let mut second = Vec::new();
    for _ in 20..60 {
        second.push(dock.reply().await);
    }
    dock.assert_silence("no request is answered twice").await;
    let mut tids: Vec<String> = first
        .iter()
        .chain(&second)
        .map(|r| r["tid"].as_str().unwrap().to_owned())
        .collect();
    tids.sort();
    tids.dedup();
    assert_eq!(tids.len(), 60, "every request answered exactly once");
    assert!(second.iter().all(|r| r["data"]["result"] == 0));
}

#[tokio::test]
async fn the_deployment_acl_keeps_each_dock_on_its_own_topics() {
    // deploy/mosquitto/acl, exactly as shipped, with users made by mosquitto_passwd.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let setup = |dir: &std::path::Path| {
        std::fs::write(dir.join("acl"), include_str!("../deploy/mosquitto/acl")).unwrap();
        let passwd = dir.join("passwd");
        for (i, (user, password)) in [
            ("stsgate", "svc-pass"),
            ("GW0001", "dock-1"),
            ("GW0002", "dock-2"),
        ]
        .iter()
        .enumerate()
        {
            let mut cmd = Command::new("mosquitto_passwd");
            if i == 0 {
                cmd.arg("-c");
            }
            let status = cmd
                .arg("-b")
                .arg(&passwd)
                .args([user, password])
                .status()
                .expect("mosquitto_passwd");
            assert!(status.success());
        }
    };
    let auth = "allow_anonymous false\npassword_file {dir}/passwd\nacl_file {dir}/acl\n";
    let broker = Mosquitto::start_with(port, auth, Some(&setup)).expect("mosquitto with ACLs");
    let svc = Options::default()
        .env(
            "STSGATE_MQTT__URL",
            &format!("mqtt://127.0.0.1:{}", broker.port),
        )
        .env("STSGATE_MQTT__USERNAME", "stsgate")
        .env("STSGATE_MQTT__PASSWORD", "svc-pass")
        .env("STSGATE_MQTT__SHARE_GROUP", "stsgate")
        .start()
        .await;
    let broker_addr = &svc.service.broker;
    let mut dock = Dock::connect_as(broker_addr, "GW0001", Some(("GW0001", "dock-1"))).await;
    // GW0002 tries to read GW0001's replies and to ask in its name.
    let mut spy = Dock::connect_as(broker_addr, "GW0001", Some(("GW0002", "dock-2"))).await;

    let reply = dock.request(&storage_config_get("own", "1")).await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    spy.assert_silence("another dock's replies are not delivered")
        .await;

    spy.send(storage_config_get("forged", "1")).await;
    dock.assert_silence("a request published on another dock's topic is dropped")
        .await;
    spy.assert_silence("and so never answered").await;
}

/// A test PKI in `dir`: `ca.pem`; `server.pem`/`server.key` for 127.0.0.1 and localhost and
/// `client.pem`/`client.key`, both signed by it; and `other-ca.pem`, a CA that signed nothing.
fn pki(dir: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    let authority = ca("stsgate test CA");
    write("ca.pem", authority.pem());
    write("other-ca.pem", ca("another CA").pem());
    for (name, usage) in [
        ("server", ExtendedKeyUsagePurpose::ServerAuth),
        ("client", ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &authority).unwrap();
        write(&format!("{name}.pem"), cert.pem());
        write(&format!("{name}.key"), key.serialize_pem());
    }
}

/// Mosquitto with a plain listener (for the docks) and a TLS listener that requires a client
/// certificate from the test CA (for stsgate); returns the broker and the TLS port.
fn tls_broker(pki_dir: &std::path::Path) -> (Mosquitto, u16) {
    let free = || {
        TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
    };
    let (plain, tls) = (free(), free());
    let d = pki_dir.display();
    let listeners = format!(
        "allow_anonymous true
listener {tls} 127.0.0.1
cafile {d}/ca.pem
certfile {d}/server.pem
keyfile {d}/server.key
require_certificate true
"
    );
    let broker = Mosquitto::start_with(plain, &listeners, None).expect("mosquitto with TLS");
    (broker, tls)
}

#[tokio::test]
async fn docks_are_answered_through_mosquitto_over_tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let (broker, tls_port) = tls_broker(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let svc = Options::default()
        .env(
            "STSGATE_MQTT__URL",
            &format!("mqtts://127.0.0.1:{tls_port}"),
        )
        .env("STSGATE_MQTT__CA_FILE", &file("ca.pem"))
        .env("STSGATE_MQTT__CLIENT_CERT_FILE", &file("client.pem"))
        .env("STSGATE_MQTT__CLIENT_KEY_FILE", &file("client.key"))
        .start()
        .await;
    assert!(svc.service.broker.tls);
    assert_eq!(svc.service.broker.port, tls_port);
    let plain = BrokerAddr {
        host: "127.0.0.1".into(),
        port: broker.port,
        tls: false,
    };
    let mut dock = Dock::connect(&plain, "TLS00001").await;
    let reply = dock.request(&storage_config_get("tls", "1")).await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    svc.service.stop().await;
}

#[tokio::test]
async fn a_broker_the_ca_does_not_vouch_for_or_a_missing_client_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let (_broker, tls_port) = tls_broker(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let url = format!("mqtts://127.0.0.1:{tls_port}");
    let cases = [
        // The broker's certificate is not signed by the CA stsgate trusts.
        vec![
            ("STSGATE_MQTT__CA_FILE", file("other-ca.pem")),
            ("STSGATE_MQTT__CLIENT_CERT_FILE", file("client.pem")),
            ("STSGATE_MQTT__CLIENT_KEY_FILE", file("client.key")),
        ],
        // The broker requires a client certificate and gets none.
        vec![("STSGATE_MQTT__CA_FILE", file("ca.pem"))],
    ];
    for case in cases {
        let mut options = Options::default().env("STSGATE_MQTT__URL", &url).unready();
        for (key, value) in &case {
            options = options.env(key, value);
        }
        let svc = options.start().await;
        assert!(
            !svc.service.wait_ready(Duration::from_secs(3)).await,
            "never subscribed: {case:?}"
        );
        let (status, _) = svc.get("/readyz").await;
        assert_eq!(status, reqwest::StatusCode::SERVICE_UNAVAILABLE);
        svc.service.stop().await;
    }
}

/// Publishes one message of `size` bytes on `sn`'s requests topic at QoS 1, from a client whose
/// own packet limit does not stand in the way.
async fn publish_large(broker_port: u16, sn: &str, size: usize) {
    let mut options =
        rumqttc::MqttOptions::new(format!("big-{sn}-{size}"), "127.0.0.1", broker_port);
    options.set_max_packet_size(size + 1024, size + 1024);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 4);
    client
        .publish(
            format!("thing/product/{sn}/requests"),
            rumqttc::QoS::AtLeastOnce,
            false,
            vec![b'x'; size],
        )
        .await
        .unwrap();
    let acked = async {
        loop {
            if let rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) = eventloop
                .poll()
                .await
                .expect("the broker takes the message")
            {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), acked)
        .await
        .expect("PUBACK from the broker");
}

/// Issue 11.1: one message larger than rumqttc's packet limit used to make the service drop its
/// connection; with a persistent session Mosquitto sent it again on every reconnect, so the
/// service never got back (60 reconnects in 5 s, `/readyz` 503, no dock answered). Now the
/// message is dropped and counted while the session stays up, in MQTT 3.1.1 (the client takes
/// any packet) and MQTT 5 (the client announces its Maximum Packet Size; a larger message is
/// dropped by the broker, a smaller one above `mqtt.max_payload` by the service).
#[tokio::test]
async fn an_oversized_request_is_dropped_and_counted_while_the_session_stays_up() {
    let broker = broker();
    for protocol in ["3.1.1", "5"] {
        let id = format!(
            "stsgate-big-{}",
            stsgate::random::string(stsgate::random::BASE32, 6).unwrap()
        );
        let svc = Options::default()
            .env(
                "STSGATE_MQTT__URL",
                &format!("mqtt://127.0.0.1:{}", broker.port),
            )
            .env("STSGATE_MQTT__PROTOCOL", protocol)
            .env("STSGATE_MQTT__CLIENT_ID", &id)
            .start()
            .await;
        let readiness = svc.service.readiness.clone();
        let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let watch = {
            let watching = watching.clone();
            tokio::spawn(async move {
                let mut lost = 0;
                while watching.load(std::sync::atomic::Ordering::Relaxed) {
                    if !readiness.mqtt() {
                        lost += 1;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                lost
            })
        };
        let too_large = r#"reason="too_large""#;
        let before = svc.counter("stsgate_mqtt_dropped_total", too_large).await;

        publish_large(broker.port, "BIG0001", 2 << 20).await;
        publish_large(broker.port, "BIG0001", 512 << 10).await;
        let mut dock = Dock::connect(&svc.service.broker, "NEXTTOBIG0001").await;
        dock.send(storage_config_get("after-big", "1")).await;
        let reply = tokio::time::timeout(Duration::from_secs(1), dock.reply())
            .await
            .unwrap_or_else(|_| panic!("MQTT {protocol}: another dock answered within 1 s"));
        assert_eq!(reply["data"]["result"], 0, "{reply}");
        let (status, _) = svc.get("/readyz").await;
        assert_eq!(status, reqwest::StatusCode::OK, "MQTT {protocol}");

        // MQTT 3.1.1: both reach the service and are dropped there; MQTT 5: the 2 MiB one is
        // dropped by the broker (above the announced packet size), the 512 KiB one here.
        let counted = svc.counter("stsgate_mqtt_dropped_total", too_large).await - before;
        let expected = if protocol == "5" { 1.0 } else { 2.0 };
        assert!(counted >= expected, "MQTT {protocol}: {counted} counted");
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            watch.await.unwrap(),
            0,
            "MQTT {protocol}: the session never dropped"
        );
        svc.service.stop().await;
    }
}

/// An STS endpoint that accepts connections and never answers: a request that reaches it stays
/// in progress for as long as the test likes.
fn stalling_sts() -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for stream in listener.incoming().take(64) {
            open.extend(stream.ok());
        }
    });
    (url, held)
}

/// Issue 11.9: a replica acknowledged a request on receipt, so a replica killed before answering
/// lost it: the broker had no reason to deliver it again. Now a request is acknowledged only once
/// its reply is queued. Replica B takes its share of a burst while its upstream stalls (so each
/// of its requests is in progress), is killed with SIGKILL, and comes back with the same client
/// id: the broker delivers the unacknowledged requests again, and every request is answered.
#[tokio::test]
async fn a_replica_killed_mid_request_loses_nothing_it_accepted() {
    let broker = broker();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let shared = [
        ("STSGATE_MQTT__URL", url.as_str()),
        ("STSGATE_MQTT__SHARE_GROUP", "stsgate"),
        ("STSGATE_LIMITS__DEVICE_PER_MINUTE", "0"),
        ("RUST_LOG", "info"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let replica = |name: &str, extra: &[(&str, &str)]| {
        let mut env = shared.to_vec();
        env.push(("STSGATE_MQTT__CLIENT_ID", name));
        env.extend_from_slice(extra);
        common::served::Served::spawn(
            &dir.path().join(name),
            &dir.path().join(format!("{name}.log")),
            &env,
        )
    };
    let a = replica("stsgate-kill-a", &[]);
    let (stalling, _held) = stalling_sts();
    let mut b = replica(
        "stsgate-kill-b",
        &[
            ("STSGATE_STORAGE__PROVIDER", "minio"),
            ("STSGATE_STORAGE__STS_ENDPOINT", &stalling),
            ("STSGATE_STORAGE__ACCESS_KEY_ID", "stsgate"),
            ("STSGATE_STORAGE__SECRET_ACCESS_KEY", "stsgate-secret"),
            ("STSGATE_STORAGE__UPSTREAM_TIMEOUT", "120s"),
        ],
    );
    for r in [&a, &b] {
        assert!(r.wait_ready(Duration::from_secs(10)).await, "subscribed");
    }

    let mut dock = Dock::connect(&a.mqtt, "KILL0001").await;
    let total = 40;
    for i in 0..total {
        dock.send(storage_config_get(&format!("k{i}"), "1")).await;
    }
    // A answers its share; B holds the rest, each waiting on its stalled upstream.
    let mut answered = std::collections::HashSet::new();
    while let Some(reply) = dock.try_reply(Duration::from_secs(2)).await {
        assert_eq!(reply["data"]["result"], 0, "{reply}");
        answered.insert(reply["tid"].as_str().unwrap().to_owned());
    }
    assert!(
        !answered.is_empty() && answered.len() < total,
        "both replicas took a share: {} answered before the kill",
        answered.len()
    );
    b.kill();

    // B comes back with the same client id (and a working provider): the broker delivers what
    // the dead process never acknowledged.
    let b = replica("stsgate-kill-b", &[]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while answered.len() < total {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(reply) = dock.try_reply(left).await else {
            break;
        };
        assert_eq!(reply["data"]["result"], 0, "{reply}");
        answered.insert(reply["tid"].as_str().unwrap().to_owned());
    }
    assert_eq!(answered.len(), total, "every request answered, none lost");
    let (_, metrics) = b.get("/metrics").await;
    assert!(
        common::metric(&metrics, "stsgate_mqtt_redelivered_total", "") >= 1.0,
        "redeliveries are counted: {metrics}"
    );
    drop(a);
}
