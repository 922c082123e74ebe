//! Who is connected, who subscribed to what, and where a published message goes.
//!
//! State is bounded by what is live: a clean session is forgotten when its connection closes
//! (with its subscriptions); a persistent one keeps its subscriptions and at most
//! [`Limits::offline_queue`] QoS 1 messages while offline, and is forgotten after
//! [`Limits::session_expiry`]. Nothing is kept per topic except retained messages, at most
//! [`Limits::max_retained`] of them and [`Limits::max_retained_bytes`] in all. Each session holds
//! at most [`Limits::max_queued_bytes`] of messages waiting for it, online or offline, and there
//! are at most [`Limits::max_sessions`] sessions. Every method runs under one lock and never
//! waits.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rumqttc::{Publish, QoS};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::topic;

/// The broker's bounds.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// Largest packet accepted, in bytes.
    pub max_packet: usize,
    /// Connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// Messages waiting to be written to one connection; beyond it new ones are dropped.
    pub queue: usize,
    /// QoS 1 messages sent to one connection and not yet acknowledged.
    pub inflight: usize,
    /// QoS 1 messages kept for a persistent session while it is offline.
    pub offline_queue: usize,
    /// How long a persistent session is kept while offline.
    pub session_expiry: Duration,
    /// Topics with a retained message.
    pub max_retained: usize,
    /// Bytes (topic and payload) of all retained messages together.
    pub max_retained_bytes: usize,
    /// Bytes of the messages waiting for one session: queued while it is offline, or routed to
    /// its connection and not yet written (QoS 0) or acknowledged (QoS 1).
    pub max_queued_bytes: usize,
    /// Sessions, online or offline. At the cap the session offline the longest is forgotten
    /// for a new one; with none offline the new connection is refused.
    pub max_sessions: usize,
    /// Who may connect; `None`: anyone (the loopback default).
    pub users: Option<Arc<Users>>,
    /// How long a new connection has to send CONNECT.
    pub connect_timeout: Duration,
}

/// User name → password of the clients allowed to connect.
#[derive(Debug, Default)]
pub struct Users(pub HashMap<String, crate::secret::Secret>);

/// The sending half of a live connection.
#[derive(Debug)]
pub(super) struct Link {
    id: u64,
    tx: mpsc::Sender<Publish>,
    kick: CancellationToken,
    /// Bytes routed to it and not yet written or acknowledged (the connection takes them off).
    queued: Arc<AtomicUsize>,
}

/// Why a connection gets no session.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// `max_sessions` sessions exist and every one is connected.
    Full,
}

#[derive(Debug)]
struct Session {
    filters: HashMap<String, QoS>,
    link: Option<Link>,
    persistent: bool,
    queued: VecDeque<Publish>,
    /// Bytes of `queued`.
    queued_bytes: usize,
    offline_since: Option<Instant>,
}

/// Subscribers of one filter: client id → granted QoS.
type Subscribers = HashMap<Arc<str>, QoS>;

/// The members of one shared subscription (`$share/{group}/{filter}`, as MQTT 5 §4.8.2 and
/// Mosquitto and EMQX for MQTT 3.1.1 clients): each message goes to one of them, in turn,
/// preferring members that are connected.
#[derive(Debug)]
struct Group {
    /// The filter after `$share/{group}/`.
    filter: String,
    members: Vec<(Arc<str>, QoS)>,
    next: usize,
}

/// Counts, for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Sessions, online or not.
    pub sessions: usize,
    /// Sessions with a live connection.
    pub connected: usize,
    /// Distinct subscription filters.
    pub filters: usize,
    /// Retained messages.
    pub retained: usize,
    /// Messages queued for offline sessions.
    pub queued: usize,
    /// Messages dropped because a queue was full, or not retained for the retained bounds.
    pub dropped: u64,
    /// Bytes of the retained messages.
    pub retained_bytes: usize,
    /// Bytes queued for sessions (offline queues).
    pub queued_bytes: usize,
    /// Connections refused a session (`max_sessions` reached, all connected).
    pub refused: u64,
}

// === impl Stats ===

impl Stats {
    /// Sets the broker's gauges and counters (the `metrics` facade: whoever installed a
    /// recorder, the service's `/metrics`, sees them).
    pub fn publish(&self) {
        let gauge = |name: &'static str, value: usize| {
            // Counts of live things: far below f64's exact-integer range.
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(name).set(value as f64);
        };
        gauge("stsgate_embedded_mqtt_sessions", self.sessions);
        gauge("stsgate_embedded_mqtt_connected", self.connected);
        gauge("stsgate_embedded_mqtt_filters", self.filters);
        gauge("stsgate_embedded_mqtt_retained", self.retained);
        gauge("stsgate_embedded_mqtt_queued", self.queued);
        gauge("stsgate_embedded_mqtt_retained_bytes", self.retained_bytes);
        gauge("stsgate_embedded_mqtt_queued_bytes", self.queued_bytes);
        metrics::counter!("stsgate_embedded_mqtt_dropped_total").absolute(self.dropped);
        metrics::counter!("stsgate_embedded_mqtt_refused_total").absolute(self.refused);
    }
}

/// The routing table.
#[derive(Debug)]
pub(super) struct Router {
    limits: Limits,
    sessions: HashMap<Arc<str>, Session>,
    exact: HashMap<String, Subscribers>,
    wild: HashMap<String, Subscribers>,
    /// Shared subscriptions, by their whole `$share/{group}/{filter}`.
    shared: HashMap<String, Group>,
    retained: HashMap<String, Publish>,
    retained_bytes: usize,
    next_link: u64,
    dropped: u64,
    refused: u64,
}

impl Router {
    pub(super) fn new(limits: Limits) -> Self {
        Self {
            limits,
            sessions: HashMap::new(),
            exact: HashMap::new(),
            wild: HashMap::new(),
            shared: HashMap::new(),
            retained: HashMap::new(),
            retained_bytes: 0,
            next_link: 0,
            dropped: 0,
            refused: 0,
        }
    }

    pub(super) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Attaches a new connection to `client_id`'s session, closing the connection that held it.
    /// Returns the link id, whether an earlier session was resumed, and the link's count of
    /// bytes in flight; messages kept for it are queued to `tx`.
    pub(super) fn attach(
        &mut self,
        client_id: &Arc<str>,
        clean: bool,
        tx: mpsc::Sender<Publish>,
        kick: CancellationToken,
    ) -> Result<(u64, bool, Arc<AtomicUsize>), Refused> {
        if !self.sessions.contains_key(client_id) && !self.make_room() {
            self.refused += 1;
            return Err(Refused::Full);
        }
        self.next_link += 1;
        let id = self.next_link;
        if let Some(old) = self.sessions.get_mut(client_id).and_then(|s| s.link.take()) {
            old.kick.cancel();
        }
        if clean {
            self.forget(client_id);
        }
        let queued = Arc::new(AtomicUsize::new(0));
        let link = Link {
            id,
            tx,
            kick,
            queued: queued.clone(),
        };
        let resumed = match self.sessions.get_mut(client_id) {
            Some(session) => {
                session.offline_since = None;
                session.persistent = !clean;
                session.queued_bytes = 0;
                while let Some(publish) = session.queued.pop_front() {
                    let size = size(&publish);
                    if link.tx.try_send(publish).is_err() {
                        self.dropped += 1;
                    } else {
                        queued.fetch_add(size, Ordering::Relaxed);
                    }
                }
                session.link = Some(link);
                true
            }
            None => {
                self.sessions.insert(
                    client_id.clone(),
                    Session {
                        filters: HashMap::new(),
                        link: Some(link),
                        persistent: !clean,
                        queued: VecDeque::new(),
                        queued_bytes: 0,
                        offline_since: None,
                    },
                );
                false
            }
        };
        Ok((id, resumed, queued))
    }

    /// Below `max_sessions`, or made so by forgetting the session offline the longest.
    fn make_room(&mut self) -> bool {
        if self.sessions.len() < self.limits.max_sessions {
            return true;
        }
        let oldest = self
            .sessions
            .iter()
            .filter_map(|(id, s)| Some((s.offline_since?, id.clone())))
            .min_by_key(|(since, _)| *since);
        match oldest {
            Some((_, id)) => {
                tracing::warn!(
                    client = %id,
                    max_sessions = self.limits.max_sessions,
                    "embedded MQTT broker: session limit reached; forgetting the session offline the longest"
                );
                self.forget(&id);
                true
            }
            None => false,
        }
    }

    /// The connection `link` of `client_id` closed; `unacked` are QoS 1 messages it had not
    /// acknowledged (or not yet been sent).
    pub(super) fn detach(&mut self, client_id: &Arc<str>, link: u64, unacked: Vec<Publish>) {
        let Some(session) = self.sessions.get_mut(client_id) else {
            return;
        };
        match &session.link {
            Some(current) if current.id == link => {
                if !session.persistent {
                    self.forget(client_id);
                    return;
                }
                session.link = None;
                session.offline_since = Some(Instant::now());
                for publish in unacked.into_iter().rev() {
                    session.queued_bytes += size(&publish);
                    session.queued.push_front(publish);
                }
                self.dropped += session.trim(&self.limits);
            }
            // Taken over: what this connection did not deliver goes to the one that took over.
            Some(current) if session.persistent => {
                for publish in unacked {
                    let size = size(&publish);
                    if current.tx.try_send(publish).is_err() {
                        self.dropped += 1;
                    } else {
                        current.queued.fetch_add(size, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }

    /// Subscribes; returns the granted QoS and the retained messages the filter matches.
    pub(super) fn subscribe(
        &mut self,
        client_id: &Arc<str>,
        filter: &str,
        qos: QoS,
    ) -> (QoS, Vec<Publish>) {
        let granted = cap(qos);
        let Some(session) = self.sessions.get_mut(client_id) else {
            return (granted, Vec::new());
        };
        session.filters.insert(filter.to_owned(), granted);
        if let Some((_, real)) = topic::shared(filter) {
            let group = self
                .shared
                .entry(filter.to_owned())
                .or_insert_with(|| Group {
                    filter: real.to_owned(),
                    members: Vec::new(),
                    next: 0,
                });
            match group.members.iter_mut().find(|(c, _)| c == client_id) {
                Some((_, q)) => *q = granted,
                None => group.members.push((client_id.clone(), granted)),
            }
            // No retained messages for a shared subscription (MQTT 5 §4.8.2).
            return (granted, Vec::new());
        }
        let table = if topic::has_wildcards(filter) {
            &mut self.wild
        } else {
            &mut self.exact
        };
        table
            .entry(filter.to_owned())
            .or_default()
            .insert(client_id.clone(), granted);
        let retained = self
            .retained
            .values()
            .filter(|p| topic::matches(&p.topic, filter))
            .map(|p| {
                let mut copy = p.clone();
                copy.qos = min(p.qos, granted);
                copy.retain = true;
                copy
            })
            .collect();
        (granted, retained)
    }

    pub(super) fn unsubscribe(&mut self, client_id: &Arc<str>, filter: &str) {
        if let Some(session) = self.sessions.get_mut(client_id) {
            session.filters.remove(filter);
            self.remove_subscriber(filter, client_id);
        }
    }

    /// Routes a message to every matching subscription (once per client, at the highest QoS
    /// granted), and keeps or clears it as the retained message of its topic.
    pub(super) fn publish(&mut self, publish: Publish) {
        if publish.retain {
            self.retain(&publish);
        }
        let mut targets: Vec<(Arc<str>, QoS)> = Vec::new();
        let mut add = |subscribers: &Subscribers| {
            for (client, qos) in subscribers {
                match targets.iter_mut().find(|(c, _)| c == client) {
                    Some((_, q)) => *q = max(*q, *qos),
                    None => targets.push((client.clone(), *qos)),
                }
            }
        };
        if let Some(subscribers) = self.exact.get(&publish.topic) {
            add(subscribers);
        }
        for (filter, subscribers) in &self.wild {
            if topic::matches(&publish.topic, filter) {
                add(subscribers);
            }
        }
        for group in self.shared.values_mut() {
            if topic::matches(&publish.topic, &group.filter)
                && let Some((client, qos)) = group.pick(&self.sessions)
            {
                add(&HashMap::from([(client, qos)]));
            }
        }
        for (client, granted) in targets {
            let Some(session) = self.sessions.get_mut(&client) else {
                continue;
            };
            let mut copy = publish.clone();
            copy.qos = min(publish.qos, granted);
            copy.retain = false;
            copy.dup = false;
            copy.pkid = 0;
            let size = size(&copy);
            match &session.link {
                Some(link)
                    if link.queued.load(Ordering::Relaxed) + size
                        > self.limits.max_queued_bytes =>
                {
                    self.dropped += 1;
                    if self.dropped.is_power_of_two() {
                        tracing::warn!(
                            client = %client,
                            dropped = self.dropped,
                            "embedded MQTT broker: a client's queued bytes are at the limit; messages dropped"
                        );
                    }
                }
                Some(link) => match link.tx.try_send(copy) {
                    Ok(()) => {
                        link.queued.fetch_add(size, Ordering::Relaxed);
                    }
                    Err(TrySendError::Full(_)) => {
                        self.dropped += 1;
                        if self.dropped.is_power_of_two() {
                            tracing::warn!(
                                client = %client,
                                dropped = self.dropped,
                                "embedded MQTT broker: a client reads too slowly; messages dropped"
                            );
                        }
                    }
                    // Closing: its connection task detaches it shortly.
                    Err(TrySendError::Closed(_)) => {}
                },
                None if copy.qos == QoS::AtLeastOnce => {
                    session.queued.push_back(copy);
                    session.queued_bytes += size;
                    self.dropped += session.trim(&self.limits);
                }
                None => {}
            }
        }
    }

    /// Forgets persistent sessions offline for longer than the expiry.
    pub(super) fn expire(&mut self, now: Instant) {
        let expiry = self.limits.session_expiry;
        let expired: Vec<Arc<str>> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.offline_since
                    .is_some_and(|t| now.duration_since(t) >= expiry)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.forget(&id);
        }
    }

    pub(super) fn stats(&self) -> Stats {
        Stats {
            sessions: self.sessions.len(),
            connected: self.sessions.values().filter(|s| s.link.is_some()).count(),
            filters: self.exact.len() + self.wild.len() + self.shared.len(),
            retained: self.retained.len(),
            queued: self.sessions.values().map(|s| s.queued.len()).sum(),
            dropped: self.dropped,
            retained_bytes: self.retained_bytes,
            queued_bytes: self.sessions.values().map(|s| s.queued_bytes).sum(),
            refused: self.refused,
        }
    }

    fn retain(&mut self, publish: &Publish) {
        let old = self.retained.get(&publish.topic).map_or(0, size);
        if publish.payload.is_empty() {
            self.retained.remove(&publish.topic);
            self.retained_bytes -= old;
            return;
        }
        let new = size(publish);
        let fits_count = self.retained.len() < self.limits.max_retained
            || self.retained.contains_key(&publish.topic);
        let fits_bytes = self.retained_bytes - old + new <= self.limits.max_retained_bytes;
        if fits_count && fits_bytes {
            let mut kept = publish.clone();
            kept.pkid = 0;
            kept.dup = false;
            self.retained.insert(publish.topic.clone(), kept);
            self.retained_bytes = self.retained_bytes - old + new;
        } else {
            self.dropped += 1;
            tracing::warn!(
                topic = %publish.topic,
                max = self.limits.max_retained,
                max_bytes = self.limits.max_retained_bytes,
                "embedded MQTT broker: retained-message limit reached; not retained"
            );
        }
    }

    fn remove_subscriber(&mut self, filter: &str, client_id: &Arc<str>) {
        if topic::shared(filter).is_some() {
            if let Some(group) = self.shared.get_mut(filter) {
                group.members.retain(|(c, _)| c != client_id);
                if group.members.is_empty() {
                    self.shared.remove(filter);
                }
            }
            return;
        }
        let table = if topic::has_wildcards(filter) {
            &mut self.wild
        } else {
            &mut self.exact
        };
        if let Some(subscribers) = table.get_mut(filter) {
            subscribers.remove(client_id);
            if subscribers.is_empty() {
                table.remove(filter);
            }
        }
    }

    /// Drops a session and its subscriptions.
    fn forget(&mut self, client_id: &Arc<str>) {
        if let Some(session) = self.sessions.remove(client_id) {
            for filter in session.filters.keys() {
                self.remove_subscriber(filter, client_id);
            }
        }
    }
}

// === impl Session ===

impl Session {
    /// Drops the oldest queued messages beyond the count and byte bounds; returns how many.
    fn trim(&mut self, limits: &Limits) -> u64 {
        let mut dropped = 0;
        while self.queued.len() > limits.offline_queue
            || self.queued_bytes > limits.max_queued_bytes
        {
            let Some(oldest) = self.queued.pop_front() else {
                break;
            };
            self.queued_bytes -= size(&oldest);
            dropped += 1;
        }
        dropped
    }
}

/// What a message costs to hold: its topic and payload.
pub(super) fn size(publish: &Publish) -> usize {
    publish.topic.len() + publish.payload.len()
}

// === impl Group ===

impl Group {
    /// The member the next message goes to: the next connected one in turn, else (every member
    /// offline) the next one, whose persistent session keeps it.
    fn pick(&mut self, sessions: &HashMap<Arc<str>, Session>) -> Option<(Arc<str>, QoS)> {
        let n = self.members.len();
        let connected = (0..n).map(|i| (self.next + i) % n).find(|&i| {
            sessions
                .get(&self.members[i].0)
                .is_some_and(|s| s.link.is_some())
        });
        let chosen = connected.unwrap_or(self.next % n.max(1));
        let member = self.members.get(chosen).cloned()?;
        self.next = (chosen + 1) % n;
        Some(member)
    }
}

/// QoS 2 is granted as QoS 1 (allowed by the specification; the service needs no more).
fn cap(qos: QoS) -> QoS {
    min(qos, QoS::AtLeastOnce)
}

fn min(a: QoS, b: QoS) -> QoS {
    if (a as u8) <= (b as u8) { a } else { b }
}

fn max(a: QoS, b: QoS) -> QoS {
    if (a as u8) >= (b as u8) { a } else { b }
}
