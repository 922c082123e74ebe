//! The broker session: connect, subscribe (again after every reconnect), hand each publish to
//! [`dispatch::handle`](super::handle) in its own task so a slow upstream never stalls the event
//! loop, publish the replies, and reconnect with capped exponential back-off and jitter. The
//! session never ends because the broker went away; only shutdown ends it.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{self, Ack, Client, EventLoop, Incoming};
use super::settings::Settings;
use crate::domain::Readiness;
use crate::gateway::Gateway;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long shutdown waits for in-flight requests to be answered.
const DRAIN: Duration = Duration::from_secs(5);
/// How long a draining session must hear nothing before it disconnects.
const QUIET: Duration = Duration::from_millis(200);

/// What the event loop needs to act on events.
struct Session {
    client: Client,
    settings: Settings,
    gateway: Arc<Gateway>,
    readiness: Readiness,
    handlers: TaskTracker,
}

/// Runs the session until `shutdown` is cancelled, then drains: unsubscribes (so that a shared
/// subscription sends new requests to the other replicas), answers the requests already received
/// (at most five seconds), and disconnects.
pub async fn run(
    settings: Settings,
    gateway: Arc<Gateway>,
    readiness: Readiness,
    shutdown: CancellationToken,
) {
    let (client, mut eventloop) = client::connect(&settings);
    tracing::info!(broker = %settings.broker, client_id = %settings.client_id, filter = %settings.filter, "connecting to the MQTT broker");
    let session = Session {
        client,
        settings,
        gateway,
        readiness,
        handlers: TaskTracker::new(),
    };
    let mut backoff = Backoff::default();
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => break,
            event = eventloop.poll() => event,
        };
        match event {
            Ok(event) => session.on_event(event, &mut backoff),
            Err(client::Lost(e)) => {
                session.readiness.set_mqtt(false);
                metrics::counter!("stsgate_mqtt_reconnects_total").increment(1);
                let delay = backoff.next();
                tracing::warn!(broker = %session.settings.broker, error = %e, retry_in = ?delay, "MQTT connection lost");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    session.drain(&mut eventloop).await;
    disconnect(&session.client, &mut eventloop).await;
}

// === impl Session ===

impl Session {
    fn on_event(&self, event: Incoming, backoff: &mut Backoff) {
        match event {
            Incoming::ConnAck => {
                backoff.reset();
                tracing::info!(broker = %self.settings.broker, "connected to the MQTT broker; subscribing");
                // Queued from a task: the request queue may be full of replies, and only the
                // event loop drains it.
                let (client, filter) = (self.client.clone(), self.settings.filter.clone());
                tokio::spawn(async move {
                    if let Err(e) = client.subscribe(&filter, QoS::AtLeastOnce).await {
                        tracing::error!(error = %e, "cannot queue the subscription");
                    }
                });
            }
            Incoming::SubAck(granted) => {
                if granted {
                    self.readiness.set_mqtt(true);
                    tracing::info!(filter = %self.settings.filter, "subscribed; answering storage_config_get");
                } else {
                    tracing::error!(filter = %self.settings.filter, "the broker refused the subscription (check its ACL)");
                }
            }
            Incoming::Publish {
                topic,
                payload,
                dup,
                ack,
            } => self.answer(topic, payload, dup, ack),
            _ => {}
        }
    }

    /// Handles one request in its own task, so that a slow upstream never stalls the event loop,
    /// and acknowledges it only after its reply is queued (the reply goes out first: both travel
    /// through the client's one request queue, in order). A replica killed before that leaves
    /// the request unacknowledged at the broker, which delivers it again to the session when it
    /// comes back; a message that gets no reply (not ours, not answerable) is acknowledged too.
    fn answer(&self, topic: String, payload: bytes::Bytes, dup: bool, ack: Ack) {
        let (client, gateway) = (self.client.clone(), self.gateway.clone());
        let (max, qos) = (self.settings.max_payload, self.settings.reply_qos);
        if dup {
            // At least once: a request the broker sent before may have been answered already
            // (the replica died between the reply and its acknowledgement). Docks match replies
            // by tid; the duplicate is counted.
            metrics::counter!("stsgate_mqtt_redelivered_total").increment(1);
        }
        self.handlers.spawn(async move {
            if let Some(answer) = super::handle(&gateway, &topic, &payload, max).await
                && let Err(e) = client.publish(answer.topic, qos, answer.payload).await
            {
                tracing::warn!(error = %e, "cannot queue a reply");
            }
            // Dropped with the connection: the broker redelivers an unacknowledged request.
            if let Err(e) = client.ack(ack).await {
                tracing::debug!(error = %e, "cannot queue an acknowledgement");
            }
        });
    }

    /// Unsubscribes and keeps answering until the broker has confirmed the unsubscription, every
    /// handler has finished and nothing has arrived for [`QUIET`]: a broker may still deliver
    /// what it had queued for this session after UNSUBACK, and a request dropped here would leave
    /// a dock waiting for a reply that never comes.
    async fn drain(&self, eventloop: &mut EventLoop) {
        let subscribed = self.readiness.mqtt();
        self.readiness.set_mqtt(false);
        // Not subscribed (or not connected): nothing can arrive, only handlers to finish.
        let mut unsubscribed =
            !subscribed || self.client.try_unsubscribe(&self.settings.filter).is_err();
        self.handlers.close();
        let drained = tokio::time::timeout(DRAIN, async {
            let mut last_event = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    event = eventloop.poll() => {
                        match event {
                            Ok(Incoming::Publish { topic, payload, dup, ack }) => {
                                self.answer(topic, payload, dup, ack);
                            }
                            Ok(Incoming::UnsubAck) => unsubscribed = true,
                            Ok(_) => {}
                            // The connection is gone: nothing more arrives, no reply leaves.
                            Err(_) => return,
                        }
                        last_event = tokio::time::Instant::now();
                    }
                    () = tokio::time::sleep(QUIET / 4) => {}
                }
                if unsubscribed && self.handlers.is_empty() && last_event.elapsed() >= QUIET {
                    return;
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                pending = self.handlers.len(),
                "shutting down with requests still unanswered"
            );
        }
    }
}

/// Sends DISCONNECT and drives the event loop until it is out, for at most a second.
async fn disconnect(client: &Client, eventloop: &mut EventLoop) {
    if client.try_disconnect().is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Ok(event) = eventloop.poll().await {
            if matches!(event, Incoming::Disconnected) {
                break;
            }
        }
    })
    .await;
}

/// Capped exponential back-off with jitter.
#[derive(Debug, Default)]
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn reset(&mut self) {
        self.attempt = 0;
    }

    fn next(&mut self) -> Duration {
        let cap = BACKOFF_MIN
            .saturating_mul(1 << self.attempt.min(10))
            .min(BACKOFF_MAX);
        self.attempt = self.attempt.saturating_add(1);
        let mut byte = [0_u8; 2];
        let jitter = getrandom::fill(&mut byte).map_or(0.5, |()| {
            f64::from(u16::from_le_bytes(byte)) / f64::from(u16::MAX)
        });
        // Half fixed, half random: never a zero delay, never in lock-step with other replicas.
        cap.mul_f64(0.5 + jitter / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let first = b.next();
        assert!(first >= BACKOFF_MIN / 2 && first <= BACKOFF_MIN);
        for _ in 0..20 {
            assert!(b.next() <= BACKOFF_MAX);
        }
        assert!(b.next() >= BACKOFF_MAX / 2);
        b.reset();
        assert!(b.next() <= BACKOFF_MIN);
    }
}
