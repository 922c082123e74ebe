//! One face for rumqttc's MQTT 3.1.1 and MQTT 5 clients, reduced to what the session uses:
//! subscribe, unsubscribe, publish, disconnect, and the few events it acts on.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5;
use rumqttc::{QoS, TlsConfiguration, Transport};

use super::settings::{Protocol, Settings};

/// How long a persistent MQTT 5 session outlives its connection at the broker.
const SESSION_EXPIRY: Duration = Duration::from_secs(3600);
/// The largest packet MQTT can express: a remaining length of 268,435,455 bytes plus the five
/// bytes of the fixed header. With MQTT 3.1.1 the client cannot tell the broker how much it
/// takes, and rumqttc drops the connection on a packet above its limit; with a persistent
/// session the broker then sends the same packet again on every reconnect. So a 3.1.1 session
/// takes any packet the protocol allows and the dispatcher drops what exceeds
/// `mqtt.max_payload` (the broker's own `message_size_limit` bounds what it accepts at all).
const MQTT_MAX_PACKET: usize = 268_435_455 + 5;
/// What an MQTT 5 session announces as its Maximum Packet Size (at least this much, more when
/// `mqtt.max_payload` is larger): the broker never sends it a larger packet (it drops the
/// message for this session instead, MQTT 5 §3.1.2.11.4), and what arrives between
/// `mqtt.max_payload` and this is dropped and counted by the dispatcher.
const V5_MIN_ANNOUNCED_PACKET: usize = 1024 * 1024;
/// Replies are a few KiB; nothing larger goes out.
const MAX_OUTGOING_PACKET: usize = 1024 * 1024;

/// The events the session acts on.
#[derive(Debug)]
pub enum Incoming {
    /// Connected (again).
    ConnAck,
    /// The subscription was answered: `true` when every filter was granted.
    SubAck(bool),
    /// The unsubscription was confirmed.
    UnsubAck,
    /// A message.
    Publish {
        /// Its topic.
        topic: String,
        /// Its payload.
        payload: Bytes,
        /// The broker sent it before (MQTT's DUP flag): a redelivery.
        dup: bool,
        /// What acknowledges it; given to [`Client::ack`] once the message has been dealt with.
        ack: Ack,
    },
    /// A DISCONNECT went out.
    Disconnected,
    /// Anything else.
    Other,
}

/// The acknowledgement owed for one received message. Acknowledgements are manual: a request is
/// acknowledged only once its reply has been queued, so a replica that dies before answering
/// leaves the request with the broker, which sends it again when the session comes back.
#[derive(Clone, Copy, Debug)]
pub struct Ack {
    qos: QoS,
    pkid: u16,
}

/// Why polling failed: the connection is gone (it is re-established by polling again).
#[derive(Debug)]
pub struct Lost(pub String);

/// The request side.
#[derive(Clone, Debug)]
pub enum Client {
    /// MQTT 3.1.1.
    V311(rumqttc::AsyncClient),
    /// MQTT 5.
    V5(v5::AsyncClient),
}

/// The network side, driven by [`EventLoop::poll`].
pub enum EventLoop {
    /// MQTT 3.1.1.
    V311(Box<rumqttc::EventLoop>),
    /// MQTT 5.
    V5(Box<v5::EventLoop>),
}

/// A client and its event loop for `settings`.
pub fn connect(settings: &Settings) -> (Client, EventLoop) {
    let transport = settings
        .tls
        .as_ref()
        .map(|tls| Transport::tls_with_config(TlsConfiguration::Rustls(tls.clone())));
    let (host, port) = (&settings.broker.host, settings.broker.port);
    match settings.protocol {
        Protocol::V311 => {
            let mut options = rumqttc::MqttOptions::new(&settings.client_id, host, port);
            options.set_keep_alive(settings.keep_alive);
            options.set_max_packet_size(MQTT_MAX_PACKET, MAX_OUTGOING_PACKET);
            options.set_manual_acks(true);
            // A configured client id gets a persistent session: requests published while the
            // connection is down are queued by the broker (QoS 1) and delivered on reconnect.
            options.set_clean_session(!settings.persistent);
            if let Some((user, password)) = &settings.credentials {
                options.set_credentials(user, password.expose());
            }
            if let Some(transport) = transport {
                options.set_transport(transport);
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 1024);
            eventloop.set_network_options(no_delay());
            (Client::V311(client), EventLoop::V311(Box::new(eventloop)))
        }
        Protocol::V5 => {
            let mut options = v5::MqttOptions::new(&settings.client_id, host, port);
            options.set_keep_alive(settings.keep_alive);
            let announced = settings
                .max_payload
                .saturating_add(64 * 1024)
                .clamp(V5_MIN_ANNOUNCED_PACKET, MQTT_MAX_PACKET);
            options.set_max_packet_size(u32::try_from(announced).ok());
            options.set_manual_acks(true);
            options.set_clean_start(!settings.persistent);
            if settings.persistent {
                options.set_session_expiry_interval(u32::try_from(SESSION_EXPIRY.as_secs()).ok());
            }
            if let Some((user, password)) = &settings.credentials {
                options.set_credentials(user, password.expose());
            }
            if let Some(transport) = transport {
                options.set_transport(transport);
            }
            options.set_network_options(no_delay());
            let (client, eventloop) = v5::AsyncClient::new(options, 1024);
            (Client::V5(client), EventLoop::V5(Box::new(eventloop)))
        }
    }
}

/// Replies go out as soon as they are written: with Nagle's algorithm a small reply waits for
/// the broker's delayed ACK of the previous packet (about 40 ms on Linux; measured with
/// `stsgate-bench`, see BENCHMARKS.md).
fn no_delay() -> rumqttc::NetworkOptions {
    let mut options = rumqttc::NetworkOptions::new();
    options.set_tcp_nodelay(true);
    options
}

fn v5_qos(qos: QoS) -> v5::mqttbytes::QoS {
    match qos {
        QoS::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn from_v5_qos(qos: v5::mqttbytes::QoS) -> QoS {
    match qos {
        v5::mqttbytes::QoS::AtMostOnce => QoS::AtMostOnce,
        v5::mqttbytes::QoS::AtLeastOnce => QoS::AtLeastOnce,
        v5::mqttbytes::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// A request the client could not queue (its event loop is gone).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// From the MQTT 3.1.1 client.
    #[error(transparent)]
    V311(Box<rumqttc::ClientError>),
    /// From the MQTT 5 client.
    #[error(transparent)]
    V5(Box<rumqttc::v5::ClientError>),
}

// === impl Client ===

impl Client {
    /// Queues a SUBSCRIBE (waits while the request queue is full).
    pub async fn subscribe(&self, filter: &str, qos: QoS) -> Result<(), ClientError> {
        match self {
            Self::V311(c) => c
                .subscribe(filter, qos)
                .await
                .map_err(|e| ClientError::V311(Box::new(e))),
            Self::V5(c) => c
                .subscribe(filter, v5_qos(qos))
                .await
                .map_err(|e| ClientError::V5(Box::new(e))),
        }
    }

    /// Queues an UNSUBSCRIBE if there is room.
    pub fn try_unsubscribe(&self, filter: &str) -> Result<(), ClientError> {
        match self {
            Self::V311(c) => c
                .try_unsubscribe(filter)
                .map_err(|e| ClientError::V311(Box::new(e))),
            Self::V5(c) => c
                .try_unsubscribe(filter)
                .map_err(|e| ClientError::V5(Box::new(e))),
        }
    }

    /// Queues a PUBLISH (waits while the request queue is full).
    pub async fn publish(
        &self,
        topic: String,
        qos: QoS,
        payload: Vec<u8>,
    ) -> Result<(), ClientError> {
        match self {
            Self::V311(c) => c
                .publish(topic, qos, false, payload)
                .await
                .map_err(|e| ClientError::V311(Box::new(e))),
            Self::V5(c) => c
                .publish(topic, v5_qos(qos), false, payload)
                .await
                .map_err(|e| ClientError::V5(Box::new(e))),
        }
    }

    /// Queues the acknowledgement of a received message (nothing for QoS 0). rumqttc acks a
    /// publish by its QoS and packet id only; the rest of the packet is not kept for it.
    pub async fn ack(&self, ack: Ack) -> Result<(), ClientError> {
        match self {
            Self::V311(c) => {
                let mut publish = rumqttc::Publish::new("", ack.qos, Vec::new());
                publish.pkid = ack.pkid;
                c.ack(&publish)
                    .await
                    .map_err(|e| ClientError::V311(Box::new(e)))
            }
            Self::V5(c) => {
                let mut publish = v5::mqttbytes::v5::Publish::new("", v5_qos(ack.qos), "", None);
                publish.pkid = ack.pkid;
                c.ack(&publish)
                    .await
                    .map_err(|e| ClientError::V5(Box::new(e)))
            }
        }
    }

    /// Queues a DISCONNECT if there is room.
    pub fn try_disconnect(&self) -> Result<(), ClientError> {
        match self {
            Self::V311(c) => c
                .try_disconnect()
                .map_err(|e| ClientError::V311(Box::new(e))),
            Self::V5(c) => c.try_disconnect().map_err(|e| ClientError::V5(Box::new(e))),
        }
    }
}

// === impl EventLoop ===

impl EventLoop {
    /// The next event; polling again after an error reconnects.
    pub async fn poll(&mut self) -> Result<Incoming, Lost> {
        match self {
            Self::V311(e) => {
                use rumqttc::{Event, Outgoing, Packet, SubscribeReasonCode};
                Ok(match e.poll().await.map_err(|e| Lost(describe_v311(&e)))? {
                    Event::Incoming(Packet::ConnAck(_)) => Incoming::ConnAck,
                    Event::Incoming(Packet::SubAck(ack)) => Incoming::SubAck(
                        ack.return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    ),
                    Event::Incoming(Packet::UnsubAck(_)) => Incoming::UnsubAck,
                    Event::Incoming(Packet::Publish(p)) => Incoming::Publish {
                        ack: Ack {
                            qos: p.qos,
                            pkid: p.pkid,
                        },
                        dup: p.dup,
                        topic: p.topic,
                        payload: p.payload,
                    },
                    Event::Outgoing(Outgoing::Disconnect) => Incoming::Disconnected,
                    _ => Incoming::Other,
                })
            }
            Self::V5(e) => {
                use rumqttc::Outgoing;
                use v5::Event;
                use v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
                Ok(match e.poll().await.map_err(|e| Lost(describe_v5(&e)))? {
                    Event::Incoming(Packet::ConnAck(_)) => Incoming::ConnAck,
                    Event::Incoming(Packet::SubAck(ack)) => Incoming::SubAck(
                        ack.return_codes
                            .iter()
                            .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                    ),
                    Event::Incoming(Packet::UnsubAck(_)) => Incoming::UnsubAck,
                    Event::Incoming(Packet::Publish(p)) => Incoming::Publish {
                        ack: Ack {
                            qos: from_v5_qos(p.qos),
                            pkid: p.pkid,
                        },
                        dup: p.dup,
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                    },
                    Event::Outgoing(Outgoing::Disconnect) => Incoming::Disconnected,
                    _ => Incoming::Other,
                })
            }
        }
    }
}

fn describe_v311(e: &rumqttc::ConnectionError) -> String {
    match e {
        rumqttc::ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?} (check mqtt.username / password)")
        }
        other => other.to_string(),
    }
}

fn describe_v5(e: &v5::ConnectionError) -> String {
    match e {
        v5::ConnectionError::ConnectionRefused(code) => {
            format!("the broker refused the connection: {code:?} (check mqtt.username / password)")
        }
        other => other.to_string(),
    }
}
