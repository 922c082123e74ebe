//! MQTT: round trip of `storage_config_get` (a dock publishes, waits for the reply) through a
//! broker, answered by stsgate, against a bare responder on the same broker with the same client
//! library that answers every request with the same reply bytes without looking at them. Run on
//! the embedded broker and, when it is installed, on Mosquitto.

use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::mpsc;

use crate::Scale;
use crate::stats::Samples;

pub fn request(tid: usize) -> Vec<u8> {
    format!(
        r#"{{"tid":"t{tid}","bid":"b{tid}","method":"storage_config_get","timestamp":1700000000000,"data":{{"module":0}}}}"#
    )
    .into_bytes()
}

/// A dock: publishes on its requests topic, hands replies to a channel.
pub struct Dock {
    client: AsyncClient,
    sn: String,
    replies: mpsc::UnboundedReceiver<Vec<u8>>,
    last: Option<Vec<u8>>,
    /// Drives the connection; aborted on drop, which closes it (rumqttc's event loop holds a
    /// sender of its own request queue, so it would otherwise run, and ping, for ever).
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for Dock {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

impl Dock {
    pub async fn connect(port: u16, sn: &str) -> Self {
        let mut options = MqttOptions::new(format!("bench-{sn}"), "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        eventloop.network_options.set_tcp_nodelay(true);
        client
            .subscribe(
                format!("thing/product/{sn}/requests_reply"),
                QoS::AtLeastOnce,
            )
            .await
            .expect("subscribe");
        let (tx, replies) = mpsc::unbounded_channel();
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let connection = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready_tx.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx.send(p.payload.to_vec()).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        ready.await.expect("dock subscribed");
        Self {
            client,
            sn: sn.to_owned(),
            replies,
            last: None,
            connection,
        }
    }

    /// One request and its reply.
    pub async fn round_trip(&mut self, tid: usize) -> Duration {
        let sent = Instant::now();
        self.client
            .publish(
                format!("thing/product/{}/requests", self.sn),
                QoS::AtLeastOnce,
                false,
                request(tid),
            )
            .await
            .expect("publish");
        let reply = tokio::time::timeout(Duration::from_secs(10), self.replies.recv())
            .await
            .expect("a reply within 10 s")
            .expect("reply channel");
        let elapsed = sent.elapsed();
        self.last = Some(reply);
        elapsed
    }
}

/// The bare responder: every request answered with `reply`, on the same client library.
async fn bare(port: u16, reply: Vec<u8>) -> AsyncClient {
    let mut options = MqttOptions::new("bench-bare", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 1024);
    eventloop.network_options.set_tcp_nodelay(true);
    client
        .subscribe("thing/product/+/requests", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let responder = client.clone();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(r) = ready_tx.take() {
                        let _ = r.send(());
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let (client, reply) = (responder.clone(), reply.clone());
                    tokio::spawn(async move {
                        let _ = client
                            .publish(format!("{}_reply", p.topic), QoS::AtLeastOnce, false, reply)
                            .await;
                    });
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    ready.await.expect("bare responder subscribed");
    client
}

/// Sequential round trips from one dock, then `docks` docks at once for `duration`.
async fn measure(port: u16, scale: &Scale, tag: &str) -> (Samples, Samples) {
    let mut dock = Dock::connect(port, &format!("{tag}LAT")).await;
    for i in 0..scale.mqtt_warmup {
        dock.round_trip(i).await;
    }
    let mut latency = Samples::with_capacity(scale.mqtt_round_trips);
    let start = Instant::now();
    // At most this many, and for at most twice the load duration (a broker that delays every
    // packet by a delayed ACK would otherwise take minutes).
    for i in 0..scale.mqtt_round_trips {
        latency.record(dock.round_trip(i).await);
        if start.elapsed() > scale.duration * 2 {
            break;
        }
    }
    latency.elapsed = start.elapsed();
    drop(dock);

    let deadline = Instant::now() + scale.duration;
    let mut tasks = Vec::new();
    for d in 0..scale.docks {
        let sn = format!("{tag}D{d:04}");
        tasks.push(tokio::spawn(async move {
            let mut dock = Dock::connect(port, &sn).await;
            let mut samples = Samples::with_capacity(10_000);
            let start = Instant::now();
            let mut i = 0;
            while Instant::now() < deadline {
                samples.record(dock.round_trip(i).await);
                i += 1;
            }
            samples.elapsed = start.elapsed();
            samples
        }));
    }
    let mut sustained = Samples::default();
    for t in tasks {
        sustained.merge(t.await.expect("dock task"));
    }
    (latency, sustained)
}

pub use stsgate_testkit::mosquitto::Mosquitto;

async fn compare(port: u16, broker: &str, scale: &Scale, lines: &mut Vec<String>) {
    // stsgate first, to learn the exact reply the bare responder will send.
    let service = Box::pin(crate::start(&[(
        "STSGATE_MQTT__URL",
        &format!("mqtt://127.0.0.1:{port}"),
    )]))
    .await;
    let mut probe = Dock::connect(port, "PROBE0001").await;
    probe.round_trip(0).await;
    let reply = probe.last.take().expect("a reply");
    drop(probe);
    // Alternating rounds (both answer the same filter, so one at a time), so that drift in the
    // machine's load hits both alike.
    let (mut ours_latency, mut ours_sustained) = (Samples::default(), Samples::default());
    let (mut bare_latency, mut bare_sustained) = (Samples::default(), Samples::default());
    let mut service = Some(service);
    for round in 0..scale.rounds {
        let running = match service.take() {
            Some(s) => s,
            None => {
                Box::pin(crate::start(&[(
                    "STSGATE_MQTT__URL",
                    &format!("mqtt://127.0.0.1:{port}"),
                )]))
                .await
            }
        };
        let (latency, sustained) = measure(port, scale, &format!("S{round}")).await;
        ours_latency.append(latency);
        ours_sustained.append(sustained);
        running.stop().await;

        let responder = bare(port, reply.clone()).await;
        let (latency, sustained) = measure(port, scale, &format!("B{round}")).await;
        bare_latency.append(latency);
        bare_sustained.append(sustained);
        let _ = responder.disconnect().await;
        // Its session gone before the next round's subscriber arrives.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    lines.push(format!(
        "MQTT round trip via {broker} ({} alternating rounds of: up to {} sequential requests from one dock, at most {:?}; then {} docks for {:?}; reply {} bytes)",
        scale.rounds,
        scale.mqtt_round_trips,
        scale.duration * 2,
        scale.docks,
        scale.duration,
        reply.len()
    ));
    lines.push(bare_latency.line("  bare responder, 1 dock"));
    lines.push(ours_latency.line("  stsgate, 1 dock"));
    lines.push(bare_sustained.line(&format!("  bare responder, {} docks", scale.docks)));
    lines.push(ours_sustained.line(&format!("  stsgate, {} docks", scale.docks)));
    lines.push(format!(
        "  ratio stsgate / bare: p50 {:.2}x (target <= 1.50), p99 {:.2}x, sustained throughput {:.2}x",
        ours_latency.quantile(0.5) / bare_latency.quantile(0.5),
        ours_latency.quantile(0.99) / bare_latency.quantile(0.99),
        ours_sustained.per_second() / bare_sustained.per_second()
    ));
}

pub async fn run(scale: &Scale) -> Vec<String> {
    let mut lines = Vec::new();
    let embedded =
        stsgate::embedded::broker::start("127.0.0.1:0".parse().expect("addr"), 64 * 1024)
            .await
            .expect("embedded broker");
    compare(
        embedded.addr().port(),
        "the embedded broker",
        scale,
        &mut lines,
    )
    .await;
    embedded.stop();
    match Mosquitto::unthrottled() {
        Some(m) => compare(m.port, "Mosquitto", scale, &mut lines).await,
        None => lines.push("MQTT via Mosquitto: skipped (mosquitto is not installed)".to_owned()),
    }
    lines
}
