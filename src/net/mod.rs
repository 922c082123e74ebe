//! HTTP listeners that no client can exhaust, for the HTTP API and the embedded store alike.
//!
//! A client that opens a connection and then sends part of a request (or nothing) used to hold
//! its connection, and a file descriptor, for ever: 300 of them under a 256-descriptor limit made
//! every listener of the process unreachable. Here each listener has
//! - a **header timeout**: a connection must deliver each request's headers within it, counted
//!   from the connection's start or the end of the previous response (so idle keep-alive counts
//!   too), else it is closed. A sweeper closes connections that serve no request and have been
//!   idle that long, checking ten times per timeout (at most once a second): hyper's
//!   `header_read_timeout` does the same with a timer armed and cleared for every request, a
//!   fiftieth of what a cache hit cost;
//! - a **connection cap**: at the cap, the oldest connection that is not serving a request (slow
//!   headers, idle keep-alive) is closed to make room for the new one, so a flood of slow clients
//!   cannot keep a polite client out; only when every connection is busy does the listener wait;
//! - a **share of the process's descriptors** ([`budget`]), so that one listener's flood never
//!   starves the others, the broker, or the files the store and credential keyring open.
//!
//! Connections speak HTTP/1.1, which is what Pilot 2 and S3 clients use on a plain listener.
//! This is written here rather than taken from a crate: hyper and axum give the timeout but no
//! cap, and tower's `ConcurrencyLimit` caps requests, not connections, and cannot evict.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{AbortHandle, AbortRegistration, Abortable};
use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Descriptors kept back for everything that is not a listener's connection: data and keyring
/// files, upstream STS and database connections, the MQTT client, the listeners themselves.
pub const RESERVED_FDS: usize = 64;
/// A listener's cap is never budgeted below this.
const MIN_CAP: usize = 16;
/// After an accept error (out of descriptors, say), wait this long rather than spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A listener's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Longest wait for a request's headers (and for the next request on an idle connection).
    pub header_timeout: Duration,
}

/// A boxed error, as hyper's service bounds want it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Serves `service` on `listener` within `limits` until `shutdown`, then lets requests in
/// progress finish (the caller bounds how long it waits). `name` labels logs and metrics.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    shutdown: CancellationToken,
    name: &'static str,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let table = Arc::new(Table::default());
    let graceful = GracefulShutdown::new();
    tokio::spawn(sweep(
        table.clone(),
        limits.header_timeout,
        shutdown.clone(),
        name,
    ));
    'accept: loop {
        while table.len() >= limits.max_connections {
            if table.evict_oldest_idle() {
                metrics::counter!("stsgate_connections_evicted_total", "listener" => name)
                    .increment(1);
                continue;
            }
            // Every connection is serving a request: wait for one to end.
            tokio::select! {
                () = shutdown.cancelled() => break 'accept,
                () = table.freed.notified() => {}
            }
        }
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let (open, evicted) = table.open();
        let service = Tracked {
            inner: service.clone(),
            state: open.state.clone(),
        };
        let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        // Evicting aborts the connection's future, and dropping it closes the connection: it was
        // serving no request. (`Abortable` checks a flag per poll; a `CancellationToken` raced in
        // a `select!` took a lock on every wake-up of every connection.)
        let connection = Abortable::new(graceful.watch(connection), evicted);
        tokio::spawn(async move {
            if let Ok(Err(e)) = connection.await {
                tracing::debug!(listener = name, error = %e, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// How many connections each listener may hold: the configured caps, scaled down together when
/// they do not fit in the process's descriptor limit less [`RESERVED_FDS`]. `fd_limit` is
/// [`raise_fd_limit`]'s answer (`None`: unknown, the caps stand).
pub fn budget(configured: &[usize], fd_limit: Option<u64>) -> Vec<usize> {
    let wanted: usize = configured.iter().sum();
    let Some(limit) = fd_limit.and_then(|l| usize::try_from(l).ok()) else {
        return configured.to_vec();
    };
    let available = limit.saturating_sub(RESERVED_FDS);
    if wanted <= available {
        return configured.to_vec();
    }
    configured
        .iter()
        .map(|&cap| {
            let share = u128::try_from(cap).unwrap_or(u128::MAX)
                * u128::try_from(available).unwrap_or(0)
                / u128::try_from(wanted.max(1)).unwrap_or(1);
            usize::try_from(share).unwrap_or(cap).max(MIN_CAP).min(cap)
        })
        .collect()
}

/// Raises the soft limit on open descriptors to the hard limit (as Go's runtime does at start)
/// and returns the soft limit in force; `None` if it cannot be read.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit = getrlimit(Resource::Nofile);
        }
    }
    // Unlimited (`None`) reads as no constraint at all.
    Some(limit.current.unwrap_or(u64::MAX))
}

/// The open connections of one listener, oldest first.
struct Table {
    open: Mutex<BTreeMap<u64, Entry>>,
    next: AtomicU64,
    freed: Notify,
    /// What connections' idle times count from.
    epoch: Instant,
}

/// One open connection as the table sees it.
struct Entry {
    state: Arc<State>,
    evict: AbortHandle,
}

/// Whether a connection is serving a request, and since when it has not been.
struct State {
    /// Requests in progress (body included).
    busy: AtomicUsize,
    /// When the last request ended, or the connection opened: milliseconds since `epoch`.
    idle_since: AtomicU64,
    epoch: Instant,
}

/// A connection's place in the table, given back when dropped.
struct Open {
    id: u64,
    state: Arc<State>,
    table: Arc<Table>,
}

/// The service wrapper that marks its connection busy while a request is being served, body
/// included.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    state: Arc<State>,
}

/// Marks one request in progress until dropped.
struct InProgress(Arc<State>);

// === impl Table ===

impl Default for Table {
    fn default() -> Self {
        Self {
            open: Mutex::default(),
            next: AtomicU64::new(0),
            freed: Notify::new(),
            epoch: Instant::now(),
        }
    }
}

impl Table {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    /// A new connection's place, and what aborts it when it is evicted.
    fn open(self: &Arc<Self>) -> (Open, AbortRegistration) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(State {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            epoch: self.epoch,
        });
        state.mark_idle();
        let (evict, evicted) = AbortHandle::new_pair();
        self.lock().insert(
            id,
            Entry {
                state: state.clone(),
                evict,
            },
        );
        let open = Open {
            id,
            state,
            table: self.clone(),
        };
        (open, evicted)
    }

    /// Closes every connection serving no request and idle for `timeout`; how many.
    fn close_idle(&self, timeout: Duration) -> usize {
        let now = millis_since(self.epoch);
        let mut closed = 0;
        self.lock().retain(|_, entry| {
            let keep = !entry.state.idle_for(timeout, now);
            if !keep {
                entry.evict.abort();
                closed += 1;
            }
            keep
        });
        closed
    }

    /// Closes the oldest connection serving no request; false if every one is busy.
    fn evict_oldest_idle(&self) -> bool {
        let mut open = self.lock();
        let Some(id) = open
            .iter()
            .find(|(_, e)| e.state.busy.load(Ordering::Acquire) == 0)
            .map(|(id, _)| *id)
        else {
            return false;
        };
        if let Some(entry) = open.remove(&id) {
            entry.evict.abort();
        }
        true
    }
}

// === impl Open ===

impl Drop for Open {
    fn drop(&mut self) {
        self.table.lock().remove(&self.id);
        self.table.freed.notify_one();
    }
}

// === impl Tracked ===

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = BoxError;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.state.busy.fetch_add(1, Ordering::AcqRel);
        TrackedFuture {
            inner: self.inner.call(request),
            in_progress: Some(InProgress(self.state.clone())),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer; the connection stays busy until its body is written (or dropped).
    /// Named types rather than a boxed future and a boxed body: two allocations per request.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_progress: Option<InProgress>,
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection busy while it lives.
    struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_progress: Option<InProgress>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TrackedBody<B>>, BoxError>;

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx)).map_err(Into::into)?;
        let in_progress = this.in_progress.take();
        std::task::Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, in_progress })))
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        self.project().inner.poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

// === impl InProgress ===

impl Drop for InProgress {
    fn drop(&mut self) {
        // Idle from now: marked before the count drops, so that the sweeper never sees a
        // connection free with the time its previous request began.
        self.0.mark_idle();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

// === impl State ===

impl State {
    fn mark_idle(&self) {
        self.idle_since
            .store(millis_since(self.epoch), Ordering::Release);
    }

    /// Whether it serves no request and has been idle for `timeout` or more.
    fn idle_for(&self, timeout: Duration, now: u64) -> bool {
        self.busy.load(Ordering::Acquire) == 0
            && now.saturating_sub(self.idle_since.load(Ordering::Acquire))
                >= u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

fn millis_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Closes the connections of `table` idle for `timeout`, checking ten times per timeout (at
/// most once a second, at least every 50 ms), until `shutdown`.
async fn sweep(table: Arc<Table>, timeout: Duration, shutdown: CancellationToken, name: &str) {
    let every = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let closed = table.close_idle(timeout);
        if closed > 0 {
            tracing::debug!(
                listener = name,
                closed,
                "closed connections idle past the header timeout"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_stand_when_they_fit_and_shrink_together_when_they_do_not() {
        assert_eq!(budget(&[1024, 1024], Some(1_048_576)), vec![1024, 1024]);
        assert_eq!(budget(&[1024, 1024], None), vec![1024, 1024]);
        // 256 descriptors: 192 to share between two listeners.
        assert_eq!(budget(&[1024, 1024], Some(256)), vec![96, 96]);
        assert_eq!(budget(&[1024, 1024, 1024], Some(256)), vec![64, 64, 64]);
        // Never below the floor, never above what was configured.
        assert_eq!(budget(&[1024, 8], Some(70)), vec![16, 8]);
    }

    #[tokio::test(start_paused = true)]
    async fn connections_idle_past_the_timeout_are_closed_and_busy_ones_kept() {
        const TIMEOUT: Duration = Duration::from_secs(5);
        let table = Arc::new(Table::default());
        let (idle, idle_evicted) = table.open();
        let (busy, busy_evicted) = table.open();
        busy.state.busy.fetch_add(1, Ordering::AcqRel);
        let request = InProgress(busy.state.clone());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(table.close_idle(TIMEOUT), 0, "not idle long enough");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(table.close_idle(TIMEOUT), 1);
        assert!(idle_evicted.handle().is_aborted());
        assert!(
            !busy_evicted.handle().is_aborted(),
            "a connection serving a request stays, however long it takes"
        );
        tokio::time::advance(Duration::from_secs(60)).await;
        drop(request);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(
            table.close_idle(TIMEOUT),
            0,
            "idle counts from the end of its last request"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(table.close_idle(TIMEOUT), 1);
        assert!(busy_evicted.handle().is_aborted());
        drop((idle, busy));
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn the_oldest_idle_connection_is_the_one_evicted() {
        let table = Arc::new(Table::default());
        let ((a, a_evicted), (b, b_evicted), (c, c_evicted)) =
            (table.open(), table.open(), table.open());
        let evicted = |registration: &AbortRegistration| registration.handle().is_aborted();
        a.state.busy.fetch_add(1, Ordering::AcqRel);
        assert_eq!(table.len(), 3);
        assert!(table.evict_oldest_idle());
        assert!(!evicted(&a_evicted), "a is serving a request");
        assert!(evicted(&b_evicted), "b is the oldest idle one");
        assert!(!evicted(&c_evicted));
        assert_eq!(table.len(), 2);
        c.state.busy.fetch_add(1, Ordering::AcqRel);
        assert!(!table.evict_oldest_idle(), "every remaining one is busy");
        drop(b);
        assert_eq!(
            table.len(),
            2,
            "an evicted connection's end changes nothing"
        );
        drop(a);
        assert_eq!(table.len(), 1);
    }
}
