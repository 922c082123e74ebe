//! The embedded MQTT broker (MQTT 3.1.1) for the laptop default.
//!
//! A small broker of our own on the service's runtime, built on rumqttc's packet codec. It does
//! what a dock and the service need — QoS 0 and 1 both ways (QoS 2 accepted from clients,
//! granted as 1), `+`/`#` filters, retained messages, wills, persistent sessions, keep alive,
//! session take-over — with its state bounded by what is live: a clean session and its
//! subscriptions are forgotten when its connection closes, a persistent one after
//! [`SESSION_EXPIRY`] offline, and every queue has a bound (see `Limits`). Sockets run
//! with TCP_NODELAY, so a reply does not wait for a delayed ACK.
//!
//! It has no topic ACLs: any client that may connect can subscribe to another gateway's replies.
//! Without `mqtt.embedded_auth` anyone may connect, which is only allowed on loopback (the
//! laptop default); with it, clients log in with the users of [`users::FILE`]. Production
//! uses Mosquitto or EMQX with per-device ACLs (`mqtt.url`).

mod connection;
mod router;
mod topic;
pub mod users;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub(crate) use router::Limits;
use router::Router;
pub use router::{Stats, Users};

/// How long a persistent session is kept while its client is away.
pub const SESSION_EXPIRY: Duration = Duration::from_secs(3600);

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is taken or not bindable.
    #[error(
        "cannot listen on {addr} for the embedded MQTT broker: {error}. Another broker may be \
         running there: use it with STSGATE_MQTT__URL=mqtt://{addr}, or move the embedded one \
         with --mqtt-embedded-listen / STSGATE_MQTT__EMBEDDED_LISTEN"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        error: std::io::Error,
    },
}

/// A running embedded broker.
#[derive(Debug)]
pub struct Broker {
    addr: SocketAddr,
    router: Arc<Mutex<Router>>,
    stop: CancellationToken,
}

impl Broker {
    /// The address it accepts connections on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Counts of what it holds.
    pub fn stats(&self) -> Stats {
        connection::lock(&self.router).stats()
    }

    /// Closes the listener and every connection.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Starts the broker on `listen` (port 0: a free port) with the limits the service uses.
pub async fn start(listen: SocketAddr, max_payload: usize) -> Result<Broker, Error> {
    start_with(listen, limits(max_payload)).await
}

/// What the service sets of the broker's bounds (from `[mqtt]` and the descriptor budget).
#[derive(Clone, Debug)]
pub struct Settings {
    /// The service's `mqtt.max_payload`.
    pub max_payload: usize,
    /// Connections held at once (the broker's share of the process's descriptors).
    pub max_connections: usize,
    /// `mqtt.embedded_max_sessions`.
    pub max_sessions: usize,
    /// `mqtt.embedded_max_retained_bytes`.
    pub max_retained_bytes: usize,
    /// `mqtt.embedded_max_queued_bytes`.
    pub max_queued_bytes: usize,
    /// Who may connect (`mqtt.embedded_auth`); `None`: anyone.
    pub users: Option<Arc<Users>>,
}

/// As [`start`], with the bounds and users of `settings`.
pub async fn start_with_settings(listen: SocketAddr, settings: Settings) -> Result<Broker, Error> {
    let mut limits = limits(settings.max_payload);
    limits.max_connections = settings.max_connections.min(limits.max_connections);
    limits.max_sessions = settings.max_sessions;
    limits.max_retained_bytes = settings.max_retained_bytes;
    limits.max_queued_bytes = settings.max_queued_bytes;
    limits.users = settings.users;
    start_with(listen, limits).await
}

/// The most connections the broker holds by default.
pub const MAX_CONNECTIONS: usize = 10_010;
/// Default bound of all retained messages together, in bytes (`mqtt.embedded_max_retained_bytes`).
pub const MAX_RETAINED_BYTES: usize = 16 << 20;
/// Default bound of the messages waiting for one session, in bytes
/// (`mqtt.embedded_max_queued_bytes`): the service's own session carries every dock's requests,
/// a few hundred bytes each.
pub const MAX_QUEUED_BYTES: usize = 8 << 20;
/// Default number of sessions (`mqtt.embedded_max_sessions`).
pub const MAX_SESSIONS: usize = 10_000;

/// The limits for a service whose largest request payload is `max_payload` bytes.
pub(crate) fn limits(max_payload: usize) -> Limits {
    Limits {
        // Larger than the service's own limit, so that the service sees (and logs) oversized
        // requests instead of the broker silently dropping the client.
        max_packet: max_payload.saturating_mul(4).max(256 * 1024),
        max_connections: MAX_CONNECTIONS,
        // The service's connection carries every dock's requests: room for a burst of this
        // many while it works through them.
        queue: 4096,
        inflight: 100,
        offline_queue: 1000,
        session_expiry: SESSION_EXPIRY,
        max_retained: 10_000,
        max_retained_bytes: MAX_RETAINED_BYTES,
        max_queued_bytes: MAX_QUEUED_BYTES,
        max_sessions: MAX_SESSIONS,
        users: None,
        connect_timeout: Duration::from_secs(10),
    }
}

/// Starts the broker with explicit limits.
pub(crate) async fn start_with(listen: SocketAddr, limits: Limits) -> Result<Broker, Error> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|error| Error::Bind {
            addr: listen,
            error,
        })?;
    let addr = listener.local_addr().map_err(|error| Error::Bind {
        addr: listen,
        error,
    })?;
    let max_connections = limits.max_connections;
    let expiry = limits.session_expiry;
    let router = Arc::new(Mutex::new(Router::new(limits)));
    let stop = CancellationToken::new();
    tokio::spawn(accept(
        listener,
        router.clone(),
        stop.clone(),
        max_connections,
        expiry,
    ));
    tracing::info!(%addr, "embedded MQTT broker listening");
    Ok(Broker { addr, router, stop })
}

async fn accept(
    listener: TcpListener,
    router: Arc<Mutex<Router>>,
    stop: CancellationToken,
    max_connections: usize,
    expiry: Duration,
) {
    let open = Arc::new(AtomicUsize::new(0));
    // Expired sessions are swept and the gauges set every few seconds.
    let mut sweep = tokio::time::interval(
        (expiry / 4).clamp(Duration::from_millis(10), Duration::from_secs(5)),
    );
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = sweep.tick() => {
                let stats = {
                    let mut router = connection::lock(&router);
                    router.expire(tokio::time::Instant::now());
                    router.stats()
                };
                stats.publish();
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    if open.load(Ordering::Relaxed) >= max_connections {
                        tracing::warn!(max_connections, "embedded MQTT broker: connection limit reached");
                        drop(stream);
                        continue;
                    }
                    let counted = Counted::new(&open);
                    let (router, stop) = (router.clone(), stop.clone());
                    tokio::spawn(async move {
                        let _counted = counted;
                        connection::serve(stream, router, stop).await;
                    });
                }
                // Out of file descriptors and the like: wait a moment rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "embedded MQTT broker: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// For the fuzzer (`fuzz/fuzz_targets/broker_session.rs`): `input` as the packets of a connected
/// client. Panics only on a bug.
#[doc(hidden)]
pub fn fuzz_session(input: &[u8]) {
    connection::feed(input);
}

/// One open connection in the count, for as long as it lives (a panic included).
struct Counted(Arc<AtomicUsize>);

impl Counted {
    fn new(open: &Arc<AtomicUsize>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open.clone())
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests;
