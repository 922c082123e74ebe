//! The embedded broker against real MQTT clients (rumqttc) and raw bytes.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::*;

const WAIT: Duration = Duration::from_secs(5);

async fn broker_with(change: impl FnOnce(&mut Limits)) -> Broker {
    let mut limits = limits(65536);
    change(&mut limits);
    start_with("127.0.0.1:0".parse().expect("addr"), limits)
        .await
        .expect("started")
}

async fn broker() -> Broker {
    broker_with(|_| {}).await
}

/// A client whose event loop runs on a task of its own and hands over what arrives.
struct Client {
    client: AsyncClient,
    incoming: mpsc::UnboundedReceiver<Packet>,
    task: JoinHandle<()>,
}

impl Client {
    async fn connect(broker: &Broker, id: &str, clean: bool) -> (Self, bool) {
        Self::connect_with(broker, id, |o| {
            o.set_clean_session(clean);
        })
        .await
    }

    async fn connect_with(
        broker: &Broker,
        id: &str,
        change: impl FnOnce(&mut MqttOptions),
    ) -> (Self, bool) {
        let addr = broker.addr();
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        change(&mut options);
        let (client, eventloop) = AsyncClient::new(options, 100);
        let (tx, mut incoming) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, tx));
        let present = match tokio::time::timeout(WAIT, incoming.recv()).await {
            Ok(Some(Packet::ConnAck(ack))) => ack.session_present,
            other => panic!("{id}: no CONNACK: {other:?}"),
        };
        let client = Self {
            client,
            incoming,
            task,
        };
        (client, present)
    }

    async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.expect("subscribe");
        match self.next_packet().await {
            Packet::SubAck(_) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn publish(&self, topic: &str, qos: QoS, retain: bool, payload: &str) {
        self.client
            .publish(topic, qos, retain, payload.as_bytes().to_vec())
            .await
            .expect("publish");
    }

    async fn next_packet(&mut self) -> Packet {
        tokio::time::timeout(WAIT, self.incoming.recv())
            .await
            .expect("something arrives")
            .expect("connection open")
    }

    async fn next(&mut self) -> Publish {
        match self.next_packet().await {
            Packet::Publish(p) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    async fn assert_silence(&mut self) {
        if let Ok(Some(p)) =
            tokio::time::timeout(Duration::from_millis(300), self.incoming.recv()).await
        {
            panic!("unexpected {p:?}");
        }
    }

    /// Closes the socket without DISCONNECT.
    async fn vanish(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    async fn disconnect(self) {
        self.client.disconnect().await.expect("disconnect");
        let _ = tokio::time::timeout(WAIT, self.task).await;
    }
}

async fn drive(mut eventloop: EventLoop, tx: mpsc::UnboundedSender<Packet>) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(
                p @ (Packet::ConnAck(_) | Packet::Publish(_) | Packet::SubAck(_)),
            )) => {
                if tx.send(p).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

async fn wait_for(broker: &Broker, what: &str, done: impl Fn(Stats) -> bool) {
    let poll = async {
        while !done(broker.stats()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(WAIT, poll).await.is_err() {
        panic!("{what}: {:?}", broker.stats());
    }
}

fn bytes(packet: &Packet) -> Vec<u8> {
    let mut out = BytesMut::new();
    packet.write(&mut out, 1 << 20).expect("encode");
    out.to_vec()
}

/// Reads until the broker closes the connection; returns what it sent.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(WAIT, stream.read_to_end(&mut got))
        .await
        .expect("closed by the broker")
    {
        // Closed with our bytes unread: a reset.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => {
            other.expect("read");
        }
    }
    got
}

#[tokio::test]
async fn a_taken_address_is_refused_with_a_hint() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = start(addr, 65536).await.expect_err("refused").to_string();
    assert!(
        err.contains("STSGATE_MQTT__URL") && err.contains(&addr.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn port_zero_gets_a_real_port_and_stop_closes_it() {
    let broker = broker().await;
    let addr = broker.addr();
    assert_ne!(addr.port(), 0);
    assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    broker.stop();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn messages_reach_exact_and_wildcard_subscribers_once_each() {
    let broker = broker().await;
    let (mut service, _) = Client::connect(&broker, "service", true).await;
    service
        .subscribe(crate::protocol::mqtt::REQUESTS_FILTER, QoS::AtLeastOnce)
        .await;
    let (mut dock, _) = Client::connect(&broker, "SN1", true).await;
    dock.subscribe("thing/product/SN1/requests_reply", QoS::AtLeastOnce)
        .await;
    // Two filters of one client that both match: delivered once.
    dock.subscribe("thing/product/SN1/#", QoS::AtMostOnce).await;

    dock.publish("thing/product/SN1/requests", QoS::AtLeastOnce, false, "ask")
        .await;
    let request = service.next().await;
    assert_eq!(request.topic, "thing/product/SN1/requests");
    assert_eq!(&request.payload[..], b"ask");
    assert_eq!(request.qos, QoS::AtLeastOnce);
    let echo = dock.next().await;
    assert_eq!(echo.topic, "thing/product/SN1/requests");

    service
        .publish(
            "thing/product/SN1/requests_reply",
            QoS::AtLeastOnce,
            false,
            "answer",
        )
        .await;
    let reply = dock.next().await;
    assert_eq!(&reply.payload[..], b"answer");
    assert_eq!(reply.qos, QoS::AtLeastOnce, "the higher of the two grants");
    dock.assert_silence().await;
    service.assert_silence().await;
}

#[tokio::test]
async fn qos_2_from_a_client_is_routed_exactly_once() {
    let broker = broker().await;
    let (mut sub, _) = Client::connect(&broker, "sub", true).await;
    sub.subscribe("a/b", QoS::ExactlyOnce).await;
    let (publisher, _) = Client::connect(&broker, "pub", true).await;
    for i in 0..5 {
        publisher
            .publish("a/b", QoS::ExactlyOnce, false, &i.to_string())
            .await;
    }
    for i in 0..5 {
        let p = sub.next().await;
        assert_eq!(p.payload, i.to_string().as_bytes(), "in order");
        assert_eq!(p.qos, QoS::AtLeastOnce, "granted QoS 1");
    }
    sub.assert_silence().await;
}

#[tokio::test]
async fn retained_messages_reach_later_subscribers_until_cleared() {
    let broker = broker().await;
    let (publisher, _) = Client::connect(&broker, "pub", true).await;
    publisher
        .publish("status/SN1", QoS::AtLeastOnce, true, "online")
        .await;
    wait_for(&broker, "retained", |s| s.retained == 1).await;

    let (mut late, _) = Client::connect(&broker, "late", true).await;
    late.subscribe("status/+", QoS::AtLeastOnce).await;
    let kept = late.next().await;
    assert!(kept.retain);
    assert_eq!(&kept.payload[..], b"online");

    publisher
        .publish("status/SN1", QoS::AtLeastOnce, true, "")
        .await;
    let cleared = late.next().await;
    assert!(cleared.payload.is_empty());
    wait_for(&broker, "cleared", |s| s.retained == 0).await;
    let (mut later, _) = Client::connect(&broker, "later", true).await;
    later.subscribe("status/#", QoS::AtLeastOnce).await;
    later.assert_silence().await;
}

#[tokio::test]
async fn clean_sessions_leave_nothing_behind() {
    let broker = broker().await;
    for i in 0..40 {
        let sn = format!("CHURN{i:03}");
        let (mut dock, _) = Client::connect(&broker, &sn, true).await;
        dock.subscribe(
            &format!("thing/product/{sn}/requests_reply"),
            QoS::AtLeastOnce,
        )
        .await;
        dock.subscribe(&format!("thing/product/{sn}/services"), QoS::AtMostOnce)
            .await;
        if i % 2 == 0 {
            dock.disconnect().await;
        } else {
            dock.vanish().await;
        }
    }
    wait_for(&broker, "every session forgotten", |s| {
        s.sessions == 0 && s.filters == 0 && s.queued == 0
    })
    .await;
}

#[tokio::test]
async fn a_persistent_session_gets_what_it_missed_within_its_bounds() {
    let broker = broker_with(|l| l.offline_queue = 5).await;
    let (mut dock, present) = Client::connect(&broker, "SNP", false).await;
    assert!(!present);
    dock.subscribe("thing/product/SNP/requests_reply", QoS::AtLeastOnce)
        .await;
    dock.disconnect().await;
    wait_for(&broker, "offline", |s| s.connected == 0 && s.sessions == 1).await;

    let (service, _) = Client::connect(&broker, "service", true).await;
    for i in 0..8 {
        service
            .publish(
                "thing/product/SNP/requests_reply",
                QoS::AtLeastOnce,
                false,
                &i.to_string(),
            )
            .await;
    }
    // QoS 0 is not kept for an offline session.
    service
        .publish(
            "thing/product/SNP/requests_reply",
            QoS::AtMostOnce,
            false,
            "q0",
        )
        .await;
    wait_for(&broker, "queued", |s| s.queued == 5).await;

    let (mut dock, present) = Client::connect(&broker, "SNP", false).await;
    assert!(present);
    for i in 3..8 {
        assert_eq!(
            dock.next().await.payload,
            i.to_string().as_bytes(),
            "the newest five"
        );
    }
    dock.assert_silence().await;
    let stats = broker.stats();
    assert_eq!(stats.dropped, 3, "{stats:?}");
}

#[tokio::test]
async fn an_abandoned_persistent_session_expires() {
    let broker = broker_with(|l| l.session_expiry = Duration::from_millis(200)).await;
    let (mut dock, _) = Client::connect(&broker, "SNX", false).await;
    dock.subscribe("x/y", QoS::AtLeastOnce).await;
    dock.vanish().await;
    wait_for(&broker, "expired", |s| s.sessions == 0 && s.filters == 0).await;
    let (_dock, present) = Client::connect(&broker, "SNX", false).await;
    assert!(!present);
}

#[tokio::test]
async fn a_second_connection_with_the_same_id_takes_over() {
    let broker = broker().await;
    let (mut first, _) = Client::connect(&broker, "SNT", false).await;
    first.subscribe("t", QoS::AtLeastOnce).await;
    let (mut second, present) = Client::connect(&broker, "SNT", false).await;
    assert!(present, "the session (and its subscription) carries over");
    assert!(
        tokio::time::timeout(WAIT, first.incoming.recv())
            .await
            .expect("first closed")
            .is_none()
    );
    let (publisher, _) = Client::connect(&broker, "pub", true).await;
    publisher.publish("t", QoS::AtLeastOnce, false, "x").await;
    assert_eq!(&second.next().await.payload[..], b"x");
    wait_for(&broker, "one session each", |s| {
        s.sessions == 2 && s.connected == 2
    })
    .await;
}

#[tokio::test]
async fn a_will_is_published_when_a_client_vanishes_not_when_it_says_goodbye() {
    let broker = broker().await;
    let (mut watcher, _) = Client::connect(&broker, "watcher", true).await;
    watcher.subscribe("will/#", QoS::AtLeastOnce).await;
    let will = |name: &str| {
        let topic = format!("will/{name}");
        move |o: &mut MqttOptions| {
            o.set_last_will(LastWill::new(topic, "gone", QoS::AtLeastOnce, false));
        }
    };
    let (polite, _) = Client::connect_with(&broker, "polite", will("polite")).await;
    polite.disconnect().await;
    let (rude, _) = Client::connect_with(&broker, "rude", will("rude")).await;
    rude.vanish().await;
    let got = watcher.next().await;
    assert_eq!(got.topic, "will/rude");
    watcher.assert_silence().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_one_and_a_half_keep_alives() {
    let broker = broker().await;
    let mut stream = tokio::net::TcpStream::connect(broker.addr())
        .await
        .expect("tcp");
    let mut connect = rumqttc::Connect::new("quiet");
    connect.keep_alive = 1;
    stream
        .write_all(&bytes(&Packet::Connect(connect)))
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    let got = read_to_close(&mut stream).await;
    assert_eq!(got, [0x20, 2, 0, 0], "CONNACK accepted, then closed");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    wait_for(&broker, "forgotten", |s| s.sessions == 0).await;
}

#[tokio::test]
async fn other_protocol_versions_are_refused_with_return_code_1() {
    let broker = broker().await;
    let v4 = bytes(&Packet::Connect(rumqttc::Connect::new("v5client")));
    // Same packet with protocol level 5 (fixed header 2 bytes, then 00 04 "MQTT", level).
    let mut v5 = v4.clone();
    assert_eq!(v5[8], 4);
    v5[8] = 5;
    let mut stream = tokio::net::TcpStream::connect(broker.addr())
        .await
        .expect("tcp");
    stream.write_all(&v5).await.expect("write");
    assert_eq!(read_to_close(&mut stream).await, [0x20, 2, 0, 1]);

    // MQTT 3.1: protocol name "MQIsdp", level 3.
    let v3 = [
        0x10, 20, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60, 0, 6, b'c', b'l', b'i',
        b'e', b'n', b't',
    ];
    let mut stream = tokio::net::TcpStream::connect(broker.addr())
        .await
        .expect("tcp");
    stream.write_all(&v3).await.expect("write");
    assert_eq!(read_to_close(&mut stream).await, [0x20, 2, 0, 1]);
}

#[tokio::test]
async fn garbage_and_protocol_violations_close_only_that_connection() {
    let broker = broker().await;
    let (mut sub, _) = Client::connect(&broker, "sub", true).await;
    sub.subscribe("#", QoS::AtLeastOnce).await;
    let connect = bytes(&Packet::Connect(rumqttc::Connect::new("bad")));
    let publish_wildcard = {
        let mut p = bytes(&Packet::Publish(Publish::new("a/+", QoS::AtMostOnce, "x")));
        p.truncate(p.len());
        p
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not MQTT", b"GET / HTTP/1.1\r\n\r\n".to_vec()),
        (
            "PUBLISH before CONNECT",
            bytes(&Packet::Publish(Publish::new("a", QoS::AtMostOnce, "x"))),
        ),
        (
            "remaining length beyond 4 bytes",
            vec![0x10, 0xff, 0xff, 0xff, 0xff, 0x7f],
        ),
        ("oversized CONNECT", vec![0x10, 0xff, 0xff, 0x7f]),
        ("two CONNECTs", [connect.clone(), connect.clone()].concat()),
        (
            "wildcard topic name",
            [connect.clone(), publish_wildcard].concat(),
        ),
        ("empty client id, persistent", {
            let mut c = rumqttc::Connect::new("");
            c.clean_session = false;
            bytes(&Packet::Connect(c))
        }),
    ];
    for (what, input) in cases {
        let mut stream = tokio::net::TcpStream::connect(broker.addr())
            .await
            .expect("tcp");
        stream.write_all(&input).await.expect("write");
        let got = read_to_close(&mut stream).await;
        assert!(
            got.is_empty() || got == [0x20, 2, 0, 0] || got == [0x20, 2, 0, 2],
            "{what}: {got:?}"
        );
    }
    sub.assert_silence().await;
    let (publisher, _) = Client::connect(&broker, "after", true).await;
    publisher
        .publish("still/working", QoS::AtLeastOnce, false, "ok")
        .await;
    assert_eq!(sub.next().await.topic, "still/working");
}

#[tokio::test]
async fn a_reader_that_never_reads_is_bounded_and_does_not_stall_others() {
    let broker = broker_with(|l| l.queue = 16).await;
    // Subscribes and then never reads its socket.
    let mut stuck = tokio::net::TcpStream::connect(broker.addr())
        .await
        .expect("tcp");
    let mut subscribe = bytes(&Packet::Connect(rumqttc::Connect::new("stuck")));
    subscribe.extend(bytes(&Packet::Subscribe(rumqttc::Subscribe::new(
        "flood",
        QoS::AtMostOnce,
    ))));
    stuck.write_all(&subscribe).await.expect("write");
    wait_for(&broker, "subscribed", |s| s.filters == 1).await;

    let (mut other, _) = Client::connect(&broker, "other", true).await;
    other.subscribe("flood", QoS::AtMostOnce).await;
    let (publisher, _) = Client::connect(&broker, "pub", true).await;
    // Under rumqttc's 10 KiB default packet limit; 8 MB in all, more than the socket buffers.
    let payload = "x".repeat(8_000);
    for _ in 0..1000 {
        publisher
            .publish("flood", QoS::AtMostOnce, false, &payload)
            .await;
        let got = other.next().await;
        assert_eq!(got.payload.len(), 8_000);
    }
    // The stuck client's socket buffers filled; the rest was dropped, not queued without end.
    assert!(broker.stats().dropped > 0, "{:?}", broker.stats());
    drop(stuck);
}

#[tokio::test]
async fn connections_beyond_the_limit_are_closed_and_counted_back_when_they_end() {
    let broker = broker_with(|l| l.max_connections = 2).await;
    let (first, _) = Client::connect(&broker, "one", true).await;
    let (_second, _) = Client::connect(&broker, "two", true).await;
    let mut third = tokio::net::TcpStream::connect(broker.addr())
        .await
        .expect("tcp");
    third
        .write_all(&bytes(&Packet::Connect(rumqttc::Connect::new("three"))))
        .await
        .expect("write");
    assert!(
        read_to_close(&mut third).await.is_empty(),
        "closed unanswered"
    );

    first.disconnect().await;
    wait_for(&broker, "one left", |s| s.connected == 1).await;
    // The count drops as its task ends, right after the session is detached.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let (_third, _) = Client::connect(&broker, "three", true).await;
}

#[test]
fn the_fuzz_entry_handles_a_real_session_and_garbage() {
    let mut input = bytes(&Packet::Subscribe(rumqttc::Subscribe::new(
        "a/#",
        QoS::AtLeastOnce,
    )));
    let mut retained = Publish::new("a/b", QoS::ExactlyOnce, "x");
    retained.retain = true;
    retained.pkid = 7;
    input.extend(bytes(&Packet::Publish(retained)));
    input.extend(bytes(&Packet::PubRel(rumqttc::PubRel::new(7))));
    input.extend(bytes(&Packet::PingReq));
    fuzz_session(&input);
    fuzz_session(b"\x30\xff\xff\xff\x7f garbage");
    fuzz_session(&[]);
}

#[tokio::test]
async fn a_shared_subscription_gives_each_message_to_one_member_in_turn() {
    let broker = broker().await;
    let (mut a, _) = Client::connect(&broker, "member-a", true).await;
    let (mut b, _) = Client::connect(&broker, "member-b", true).await;
    let (mut plain, _) = Client::connect(&broker, "plain", true).await;
    let (publisher, _) = Client::connect(&broker, "publisher", true).await;
    a.subscribe("$share/g/thing/+/requests", QoS::AtLeastOnce)
        .await;
    b.subscribe("$share/g/thing/+/requests", QoS::AtLeastOnce)
        .await;
    plain.subscribe("thing/+/requests", QoS::AtLeastOnce).await;
    for i in 0..6 {
        publisher
            .publish(
                "thing/SN1/requests",
                QoS::AtLeastOnce,
                false,
                &format!("m{i}"),
            )
            .await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(a.next().await.payload);
        got.push(b.next().await.payload);
    }
    a.assert_silence().await;
    b.assert_silence().await;
    got.sort();
    let expected: Vec<_> = (0..6)
        .map(|i| bytes::Bytes::from(format!("m{i}")))
        .collect();
    assert_eq!(got, expected, "each message to exactly one member, in turn");
    for i in 0..6 {
        assert_eq!(plain.next().await.payload, format!("m{i}").as_bytes());
    }

    // A member that leaves gets no more; the group goes with its last member.
    a.disconnect().await;
    publisher
        .publish("thing/SN1/requests", QoS::AtLeastOnce, false, "after")
        .await;
    assert_eq!(b.next().await.payload, "after".as_bytes());
    b.disconnect().await;
    wait_for(&broker, "only the plain filter left", |s| s.filters == 1).await;
}

/// A client whose own packet limit lets 200 KiB messages through.
async fn large(broker: &Broker, id: &str, clean: bool) -> (Client, bool) {
    Client::connect_with(broker, id, |o| {
        o.set_clean_session(clean);
        o.set_max_packet_size(1 << 20, 1 << 20);
    })
    .await
}

/// The return code of the CONNACK the broker answers a raw CONNECT with.
async fn connack_code(broker: &Broker, id: &str, login: Option<(&str, &str)>) -> u8 {
    let mut connect = rumqttc::Connect::new(id);
    if let Some((user, password)) = login {
        connect.set_login(user, password);
    }
    let mut stream = tokio::net::TcpStream::connect(broker.addr())
        .await
        .expect("connect");
    stream
        .write_all(&bytes(&Packet::Connect(connect)))
        .await
        .expect("write");
    let mut ack = [0_u8; 4];
    tokio::time::timeout(WAIT, stream.read_exact(&mut ack))
        .await
        .expect("CONNACK in time")
        .expect("CONNACK");
    assert_eq!(ack[0], 0x20, "a CONNACK: {ack:?}");
    ack[3]
}

/// Issue 11.4: 400 retained messages of 200 KiB added 90 MiB; now all retained messages
/// together are bounded in bytes, and what does not fit is not retained (counted).
#[tokio::test]
async fn retained_messages_are_bounded_in_bytes() {
    let broker = broker_with(|l| l.max_retained_bytes = 1 << 20).await;
    let (publisher, _) = large(&broker, "pub", true).await;
    let big = "x".repeat(200 << 10);
    for i in 0..20 {
        publisher
            .publish(&format!("status/{i}"), QoS::AtLeastOnce, true, &big)
            .await;
    }
    // Five of 200 KiB (and their topics) fit in 1 MiB.
    wait_for(&broker, "15 refused", |s| s.dropped >= 15).await;
    let stats = broker.stats();
    assert!(stats.retained_bytes <= 1 << 20, "{stats:?}");
    assert_eq!(stats.retained, 5, "{stats:?}");
    // Clearing one makes room for another.
    publisher
        .publish("status/0", QoS::AtLeastOnce, true, "")
        .await;
    publisher
        .publish("status/new", QoS::AtLeastOnce, true, &big)
        .await;
    wait_for(&broker, "replaced", |s| s.retained == 5 && s.dropped == 15).await;
}

/// Issue 11.4: one offline persistent session holding 1,000 messages of 200 KiB added 226 MiB;
/// now a session's waiting messages are bounded in bytes, the oldest dropped first.
#[tokio::test]
async fn an_offline_sessions_queue_is_bounded_in_bytes() {
    let broker = broker_with(|l| l.max_queued_bytes = 1 << 20).await;
    let (mut away, _) = Client::connect(&broker, "away", false).await;
    away.subscribe("media/#", QoS::AtLeastOnce).await;
    away.vanish().await;
    wait_for(&broker, "offline", |s| s.connected == 0).await;
    let (publisher, _) = large(&broker, "pub", true).await;
    let big = "y".repeat(200 << 10);
    for i in 0..50 {
        publisher
            .publish(
                "media/clip",
                QoS::AtLeastOnce,
                false,
                &format!("{i:02}{big}"),
            )
            .await;
    }
    wait_for(&broker, "dropped past the bound", |s| s.dropped >= 45).await;
    let stats = broker.stats();
    assert!(stats.queued_bytes <= 1 << 20, "{stats:?}");
    let (mut back, present) = large(&broker, "away", false).await;
    assert!(present);
    let first = back.next().await;
    assert_eq!(&first.payload[..2], b"45", "the newest are kept");
}

/// Issue 11.4: the number of sessions had no bound. At the cap a new client takes the place of
/// the session offline the longest; with every session connected it is refused (CONNACK 3).
#[tokio::test]
async fn sessions_are_bounded() {
    let broker = broker_with(|l| l.max_sessions = 3).await;
    let (_a, _) = Client::connect(&broker, "a", true).await;
    let (away, _) = Client::connect(&broker, "away", false).await;
    let (_c, _) = Client::connect(&broker, "c", true).await;
    assert_eq!(
        connack_code(&broker, "d", None).await,
        3,
        "server unavailable"
    );
    assert_eq!(broker.stats().refused, 1);
    away.vanish().await;
    wait_for(&broker, "away offline", |s| s.connected == 2).await;
    let (_d, present) = Client::connect(&broker, "d", true).await;
    assert!(!present);
    assert_eq!(broker.stats().sessions, 3, "the offline session made room");
}

/// Issue 11.4: with users configured, a client must log in as one of them.
#[tokio::test]
async fn with_users_a_client_must_log_in() {
    let users = Users(
        [("dock".to_owned(), crate::secret::Secret::new("s3cret"))]
            .into_iter()
            .collect(),
    );
    let broker = broker_with(|l| l.users = Some(Arc::new(users))).await;
    assert_eq!(connack_code(&broker, "anon", None).await, 4);
    assert_eq!(
        connack_code(&broker, "wrong", Some(("dock", "guess"))).await,
        4
    );
    assert_eq!(
        connack_code(&broker, "who", Some(("nobody", "s3cret"))).await,
        4
    );
    assert_eq!(
        connack_code(&broker, "ok", Some(("dock", "s3cret"))).await,
        0
    );
}

/// The service's configuration defaults are the broker's own (the broker knows no config).
#[test]
fn the_service_defaults_are_the_brokers_defaults() {
    assert_eq!(crate::config::EMBEDDED_MAX_SESSIONS, super::MAX_SESSIONS);
    assert_eq!(
        crate::config::EMBEDDED_MAX_RETAINED_BYTES,
        super::MAX_RETAINED_BYTES
    );
    assert_eq!(
        crate::config::EMBEDDED_MAX_QUEUED_BYTES,
        super::MAX_QUEUED_BYTES
    );
}
