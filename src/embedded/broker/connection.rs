//! One client connection: CONNECT, then packets in and messages out until it closes.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::{
    ConnAck, ConnectReturnCode, LastWill, Packet, PubAck, PubComp, PubRec, Publish, QoS, SubAck,
    SubscribeReasonCode, UnsubAck,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::router::Router;
use super::topic;

/// A read buffer grown past this by a large packet is given back once empty.
const READ_BUFFER: usize = 4 * 1024;
const READ_BUFFER_KEPT: usize = 64 * 1024;

/// A client that reads nothing for this long while the broker has packets for it is closed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Ids given to clients that connect with an empty client id.
static ANONYMOUS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Why a connection ended.
#[derive(Debug)]
enum End {
    /// DISCONNECT: no will.
    Clean,
    /// Anything else: the will is published.
    Abrupt(String),
}

/// Serves one accepted connection until it closes.
pub(super) async fn serve(stream: TcpStream, router: Arc<Mutex<Router>>, stop: CancellationToken) {
    let limits = lock(&router).limits().clone();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "embedded MQTT broker: TCP_NODELAY not set");
    }
    let (mut rd, mut wr) = stream.into_split();
    let mut buf = BytesMut::with_capacity(READ_BUFFER);

    let first = tokio::time::timeout(limits.connect_timeout, async {
        loop {
            match first_packet(&buf, limits.max_packet) {
                Ok(Some(refusal)) => return Err(refusal),
                Ok(None) => match Packet::read(&mut buf, limits.max_packet) {
                    Ok(packet) => return Ok(packet),
                    Err(rumqttc::Error::InsufficientBytes(_)) => {}
                    Err(e) => return Err(Refusal::Malformed(e.to_string())),
                },
                Err(()) => {}
            }
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(Refusal::Gone),
                Ok(_) => {}
            }
        }
    })
    .await;
    let connect = match first {
        Ok(Ok(Packet::Connect(connect))) => connect,
        Ok(Ok(other)) => {
            tracing::debug!(
                packet = packet_type(&other),
                "embedded MQTT broker: first packet is not CONNECT"
            );
            return;
        }
        Ok(Err(Refusal::Version(level))) => {
            tracing::debug!(level, "embedded MQTT broker: protocol level not supported");
            refuse(
                &mut wr,
                ConnectReturnCode::RefusedProtocolVersion,
                limits.max_packet,
            )
            .await;
            return;
        }
        Ok(Err(Refusal::Malformed(e))) => {
            tracing::debug!(error = %e, "embedded MQTT broker: malformed CONNECT");
            return;
        }
        Ok(Err(Refusal::Gone)) | Err(_) => return,
    };

    if connect.client_id.is_empty() && !connect.clean_session {
        refuse(&mut wr, ConnectReturnCode::BadClientId, limits.max_packet).await;
        return;
    }
    let client_id: Arc<str> = if connect.client_id.is_empty() {
        let n = ANONYMOUS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Arc::from(format!("stsgate-anonymous-{n}"))
    } else {
        Arc::from(connect.client_id.as_str())
    };
    if let Some(users) = &limits.users
        && !admitted(users, connect.login.as_ref())
    {
        tracing::info!(client = %client_id, "embedded MQTT broker: bad user name or password");
        refuse(
            &mut wr,
            ConnectReturnCode::BadUserNamePassword,
            limits.max_packet,
        )
        .await;
        return;
    }
    let (tx, mut rx) = mpsc::channel(limits.queue);
    let kick = CancellationToken::new();
    let attached = lock(&router).attach(&client_id, connect.clean_session, tx, kick.clone());
    let Ok((link, resumed, queued)) = attached else {
        tracing::warn!(
            client = %client_id,
            max_sessions = limits.max_sessions,
            "embedded MQTT broker: session limit reached with every session connected; refused"
        );
        refuse(
            &mut wr,
            ConnectReturnCode::ServiceUnavailable,
            limits.max_packet,
        )
        .await;
        return;
    };
    let will = connect.last_will;

    let mut session = Session {
        client_id: client_id.clone(),
        router: router.clone(),
        max_packet: limits.max_packet,
        out: BytesMut::new(),
        inflight: VecDeque::new(),
        next_pkid: 0,
        received_qos2: HashSet::new(),
        queued,
    };
    session.write(&Packet::ConnAck(ConnAck::new(
        ConnectReturnCode::Success,
        resumed,
    )));

    // MQTT 3.1.1 §3.1.2.10: one and a half times the keep alive without a packet closes.
    let keep_alive = (connect.keep_alive > 0)
        .then(|| Duration::from_millis(u64::from(connect.keep_alive) * 1500));
    let io = Io {
        rd: &mut rd,
        wr: &mut wr,
        buf: &mut buf,
        rx: &mut rx,
    };
    let end = session
        .run(io, keep_alive, limits.inflight, &stop, &kick)
        .await;
    if let End::Abrupt(reason) = &end {
        tracing::debug!(client = %client_id, reason, "embedded MQTT broker: connection ended");
    }
    rx.close();
    let mut unacked: Vec<Publish> = session.inflight.drain(..).collect();
    for publish in &mut unacked {
        publish.dup = true;
    }
    while let Ok(publish) = rx.try_recv() {
        if publish.qos == QoS::AtLeastOnce {
            unacked.push(publish);
        }
    }
    let mut router = lock(&router);
    router.detach(&client_id, link, unacked);
    if let (End::Abrupt(_), Some(will)) = (end, will)
        && topic::valid_name(&will.topic)
    {
        router.publish(will_message(will));
    }
}

/// Why a connection is closed before CONNECT is accepted.
enum Refusal {
    Version(u8),
    Malformed(String),
    Gone,
}

/// Looks at a complete first packet before decoding it: a CONNECT for a protocol other than
/// MQTT 3.1.1 is refused with its protocol level. `Err(())`: not complete yet.
fn first_packet(buf: &[u8], max_packet: usize) -> Result<Option<Refusal>, ()> {
    if buf.first().is_some_and(|b| *b != 0x10) {
        return Ok(Some(Refusal::Malformed(
            "the first packet is not CONNECT".to_owned(),
        )));
    }
    match rumqttc::check(buf.iter(), max_packet) {
        Ok(_) => {}
        Err(rumqttc::Error::InsufficientBytes(_)) => return Err(()),
        Err(e) => return Ok(Some(Refusal::Malformed(e.to_string()))),
    }
    // Fixed header: one byte, then the remaining length in 1–4 bytes.
    let header = 1 + buf
        .iter()
        .skip(1)
        .take(4)
        .position(|b| b & 0x80 == 0)
        .map_or(4, |p| p + 1);
    let name = buf.get(header..header + 6);
    let level = buf.get(header + 6).copied();
    match (name, level) {
        (Some([0, 4, b'M', b'Q', b'T', b'T']), Some(4)) => Ok(None),
        (Some([0, 4, b'M', b'Q', b'T', b'T']), Some(level)) => Ok(Some(Refusal::Version(level))),
        // MQTT 3.1 ("MQIsdp").
        (Some([0, 6, ..]), _) => Ok(Some(Refusal::Version(3))),
        _ => Ok(Some(Refusal::Malformed("not an MQTT CONNECT".to_owned()))),
    }
}

/// The connection's halves, buffer and queue, lent to [`Session::run`].
struct Io<'a> {
    rd: &'a mut OwnedReadHalf,
    wr: &'a mut OwnedWriteHalf,
    buf: &'a mut BytesMut,
    rx: &'a mut mpsc::Receiver<Publish>,
}

struct Session {
    client_id: Arc<str>,
    router: Arc<Mutex<Router>>,
    max_packet: usize,
    out: BytesMut,
    /// QoS 1 messages sent and not yet acknowledged, oldest first.
    inflight: VecDeque<Publish>,
    next_pkid: u16,
    /// QoS 2 messages received and not yet released (a repeat is not routed twice).
    received_qos2: HashSet<u16>,
    /// Bytes routed to this connection and not yet written (QoS 0) or acknowledged (QoS 1),
    /// shared with the router, which stops routing to it at `max_queued_bytes`.
    queued: Arc<AtomicUsize>,
}

impl Session {
    /// Packets in, messages out, until the connection ends.
    async fn run(
        &mut self,
        io: Io<'_>,
        keep_alive: Option<Duration>,
        max_inflight: usize,
        stop: &CancellationToken,
        kick: &CancellationToken,
    ) -> End {
        let Io { rd, wr, buf, rx } = io;
        // Packets that came in the same read as CONNECT first.
        let mut read: std::io::Result<usize> = Ok(1);
        let mut deadline = keep_alive.map(|k| Instant::now() + k);
        loop {
            match read {
                Ok(0) => return End::Abrupt("connection closed".to_owned()),
                Err(e) => return End::Abrupt(e.to_string()),
                Ok(_) => match self.read_all(buf) {
                    Ok(true) => {}
                    Ok(false) => return End::Clean,
                    Err(e) => return End::Abrupt(e),
                },
            }
            read = loop {
                if let Err(e) = self.flush(wr).await {
                    return End::Abrupt(e.to_string());
                }
                if buf.is_empty() && buf.capacity() > READ_BUFFER_KEPT {
                    *buf = BytesMut::with_capacity(READ_BUFFER);
                }
                let room = self.inflight.len() < max_inflight;
                tokio::select! {
                    () = stop.cancelled() => return End::Clean,
                    () = kick.cancelled() => return End::Abrupt("taken over".to_owned()),
                    () = sleep_until(deadline) => return End::Abrupt("keep alive expired".to_owned()),
                    outgoing = rx.recv(), if room => match outgoing {
                        Some(publish) => self.deliver(publish),
                        None => return End::Abrupt("closed".to_owned()),
                    },
                    read = rd.read_buf(buf) => {
                        deadline = keep_alive.map(|k| Instant::now() + k);
                        break read;
                    }
                }
            };
        }
    }

    fn write(&mut self, packet: &Packet) {
        if let Err(e) = packet.write(&mut self.out, self.max_packet) {
            tracing::debug!(error = %e, "embedded MQTT broker: packet not written");
        }
    }

    async fn flush(&mut self, wr: &mut OwnedWriteHalf) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        let result = match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&self.out)).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client has not read for 30 s",
            )),
        };
        self.out.clear();
        if self.out.capacity() > READ_BUFFER_KEPT {
            self.out = BytesMut::new();
        }
        result
    }

    /// Sends a routed message (counted in `queued`), numbering it when it is QoS 1; a QoS 1
    /// message stays counted until it is acknowledged.
    fn deliver(&mut self, mut publish: Publish) {
        if publish.qos != QoS::AtMostOnce {
            publish.pkid = self.pkid();
            self.inflight.push_back(publish.clone());
            self.write(&Packet::Publish(publish));
        } else {
            let size = super::router::size(&publish);
            self.write(&Packet::Publish(publish));
            self.queued.fetch_sub(size, Ordering::Relaxed);
        }
    }

    fn pkid(&mut self) -> u16 {
        loop {
            self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
            if !self.inflight.iter().any(|p| p.pkid == self.next_pkid) {
                return self.next_pkid;
            }
        }
    }

    /// Handles every complete packet in `buf`. `Ok(false)`: the client disconnected.
    fn read_all(&mut self, buf: &mut BytesMut) -> Result<bool, String> {
        loop {
            let packet = match Packet::read(buf, self.max_packet) {
                Ok(packet) => packet,
                Err(rumqttc::Error::InsufficientBytes(_)) => return Ok(true),
                Err(e) => return Err(e.to_string()),
            };
            if !self.handle(packet)? {
                return Ok(false);
            }
        }
    }

    fn handle(&mut self, packet: Packet) -> Result<bool, String> {
        match packet {
            Packet::Publish(publish) => {
                if !topic::valid_name(&publish.topic) {
                    return Err(format!("invalid topic name {:?}", publish.topic));
                }
                let pkid = publish.pkid;
                match publish.qos {
                    QoS::AtMostOnce => lock(&self.router).publish(publish),
                    QoS::AtLeastOnce => {
                        lock(&self.router).publish(publish);
                        self.write(&Packet::PubAck(PubAck::new(pkid)));
                    }
                    QoS::ExactlyOnce => {
                        if self.received_qos2.insert(pkid) {
                            lock(&self.router).publish(publish);
                        }
                        self.write(&Packet::PubRec(PubRec::new(pkid)));
                    }
                }
            }
            Packet::PubAck(ack) => {
                if let Some(i) = self.inflight.iter().position(|p| p.pkid == ack.pkid)
                    && let Some(acked) = self.inflight.remove(i)
                {
                    self.queued
                        .fetch_sub(super::router::size(&acked), Ordering::Relaxed);
                }
            }
            Packet::PubRel(rel) => {
                self.received_qos2.remove(&rel.pkid);
                self.write(&Packet::PubComp(PubComp::new(rel.pkid)));
            }
            // Never sent: the broker grants at most QoS 1.
            Packet::PubRec(_) | Packet::PubComp(_) => {}
            Packet::Subscribe(subscribe) => {
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                let mut retained = Vec::new();
                {
                    let mut router = lock(&self.router);
                    for filter in &subscribe.filters {
                        if topic::valid_filter(&filter.path) {
                            let (granted, mut kept) =
                                router.subscribe(&self.client_id, &filter.path, filter.qos);
                            codes.push(SubscribeReasonCode::Success(granted));
                            retained.append(&mut kept);
                        } else {
                            codes.push(SubscribeReasonCode::Failure);
                        }
                    }
                }
                self.write(&Packet::SubAck(SubAck::new(subscribe.pkid, codes)));
                for publish in retained {
                    self.queued
                        .fetch_add(super::router::size(&publish), Ordering::Relaxed);
                    self.deliver(publish);
                }
            }
            Packet::Unsubscribe(unsubscribe) => {
                {
                    let mut router = lock(&self.router);
                    for filter in &unsubscribe.topics {
                        router.unsubscribe(&self.client_id, filter);
                    }
                }
                self.write(&Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)));
            }
            Packet::PingReq => self.write(&Packet::PingResp),
            Packet::Disconnect => return Ok(false),
            // Named by type only: a CONNECT's Debug output carries its password.
            other => return Err(format!("unexpected {} packet", packet_type(&other))),
        }
        Ok(true)
    }
}

/// The name of a packet's type, for messages that must not print its content.
fn packet_type(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(..) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::SubAck(_) => "SUBACK",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingResp => "PINGRESP",
        _ => "other",
    }
}

/// Whether `login` is one of `users` (the password compared in constant time).
fn admitted(users: &super::router::Users, login: Option<&rumqttc::Login>) -> bool {
    let Some(login) = login else {
        return false;
    };
    users
        .0
        .get(&login.username)
        .is_some_and(|password| *password == crate::secret::Secret::new(login.password.clone()))
}

/// Answers a CONNECT with a refusal.
async fn refuse(wr: &mut OwnedWriteHalf, code: ConnectReturnCode, max_packet: usize) {
    let _ = send(wr, &Packet::ConnAck(ConnAck::new(code, false)), max_packet).await;
}

/// Writes one packet (a refusal before the session exists).
async fn send(wr: &mut OwnedWriteHalf, packet: &Packet, max_packet: usize) -> std::io::Result<()> {
    let mut out = BytesMut::new();
    packet
        .write(&mut out, max_packet)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    wr.write_all(&out).await
}

fn will_message(will: LastWill) -> Publish {
    let mut publish = Publish::new(will.topic, will.qos, Vec::new());
    publish.payload = will.message;
    publish.retain = will.retain;
    publish
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Feeds `input` to a connected session as if its client had sent it, against a router where
/// another client subscribes to everything; then checks that what the broker wrote back (to the
/// sender and to the subscriber) decodes as complete, valid packets. For the fuzzer.
pub(super) fn feed(input: &[u8]) {
    let router = Arc::new(Mutex::new(Router::new(super::limits(4096))));
    let (watcher, sender): (Arc<str>, Arc<str>) = (Arc::from("watcher"), Arc::from("sender"));
    let (watcher_tx, mut watcher_rx) = mpsc::channel(64);
    let (sender_tx, _sender_rx) = mpsc::channel(64);
    let queued = {
        let mut router = lock(&router);
        let _ = router.attach(&watcher, true, watcher_tx, CancellationToken::new());
        router.subscribe(&watcher, "#", QoS::AtLeastOnce);
        match router.attach(&sender, true, sender_tx, CancellationToken::new()) {
            Ok((_, _, queued)) => queued,
            Err(e) => panic!("two sessions are within every limit: {e:?}"),
        }
    };
    let _ = first_packet(input, 4096);
    let mut session = Session {
        client_id: sender,
        router,
        max_packet: 4096,
        out: BytesMut::new(),
        inflight: VecDeque::new(),
        next_pkid: 0,
        received_qos2: HashSet::new(),
        queued,
    };
    let mut buf = BytesMut::from(input);
    let _ = session.read_all(&mut buf);
    while let Ok(publish) = watcher_rx.try_recv() {
        assert!(topic::valid_name(&publish.topic), "{:?}", publish.topic);
        session.deliver(publish);
    }
    let mut out = session.out;
    while !out.is_empty() {
        if let Err(e) = Packet::read(&mut out, usize::MAX) {
            panic!("the broker wrote an undecodable packet: {e}");
        }
    }
}

/// The router's lock; a panic while holding it leaves consistent state (every method is a
/// handful of map operations), so a poisoned lock is used as is.
pub(super) fn lock(router: &Mutex<Router>) -> std::sync::MutexGuard<'_, Router> {
    router.lock().unwrap_or_else(PoisonError::into_inner)
}
