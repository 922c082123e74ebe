//! Per-scope credential cache with single-flight and refresh-ahead (DESIGN "Credentials").
//!
//! For each scope there is one slot holding the current credential and at most one upstream call
//! in flight. A request finds the credential:
//! - **fresh** (more than half its life left): served as is;
//! - **stale** (half or less, above `min_remaining`): served, and one background refresh starts;
//! - **unusable** or absent: the request waits on the single upstream call, which every other
//!   request for the scope joins.
//!
//! The upstream call runs in its own task, so it completes (and its result is cached) even when
//! the requests that wanted it give up. A failure is remembered for `failure_backoff`: requests in
//! that window get the same error without calling upstream again, and a failed background refresh
//! keeps serving the still-usable credential.

mod entry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;

pub use entry::{Entry, Freshness, Lifetimes};

use crate::config::StorageProfile;
use crate::domain::Scope;
use crate::issuer::{Credential, Error, IssueRequest, IssuerHandle};

/// The cache. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// A credential handed out.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The credential.
    pub credential: Arc<Credential>,
    /// Its answer, serialised once per credential.
    pub rendered: crate::protocol::RenderedOnce,
    /// Seconds a device may rely on it (remaining life minus the margin).
    pub expire: u64,
    /// True when no upstream call was needed for this request.
    pub hit: bool,
}

struct Inner {
    issuer: IssuerHandle,
    /// The storage profile this cache serves: the `profile` label of its series.
    profile: Arc<str>,
    /// `stsgate_cache_requests_total{profile, outcome="hit"}`, registered once: every hit
    /// counts it (a `counter!` call looks its series up by name and labels each time).
    hits: metrics::Counter,
    policy: Lifetimes,
    duration: Duration,
    timeout: Duration,
    failure_backoff: Duration,
    /// Every scope's slot, under one lock: a cache hit takes it once (a map of locked slots took
    /// two locks and a shared reference count per hit, all written by every core), and nothing
    /// holds it across an await. Scopes come from validated workspaces, so a fast seeded hash.
    slots: Mutex<HashMap<Scope, Slot, foldhash::fast::RandomState>>,
    /// The number of slots at which a new scope first sweeps out the slots that hold nothing
    /// usable (per-device credentials of devices gone quiet): doubled past the slots left, so a
    /// sweep costs a constant per new scope.
    sweep_at: std::sync::atomic::AtomicUsize,
}

/// [`Inner::sweep_at`] at first: the slots a cache holds before it sweeps at all.
const SWEEP_FROM: usize = 1024;

type Outcome = Option<Result<Entry, Error>>;

/// One scope's credential, the upstream call in flight for it, and its last failure.
#[derive(Default)]
struct Slot {
    current: Option<Entry>,
    flight: Option<watch::Receiver<Outcome>>,
    failure: Option<(Instant, Error)>,
}

// === impl Cache ===

impl Cache {
    /// A cache in front of `issuer` with the lifetimes of the storage profile named `profile`.
    /// Two caches never share a credential: each profile has its own.
    pub fn new(issuer: IssuerHandle, storage: &StorageProfile, profile: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                issuer,
                profile: profile.into(),
                hits: cache_requests(profile, "hit"),
                policy: Lifetimes {
                    min_remaining: storage.min_remaining,
                    expire_margin: storage.expire_margin,
                },
                duration: storage.duration,
                timeout: storage.upstream_timeout,
                failure_backoff: storage.failure_backoff,
                slots: Mutex::default(),
                sweep_at: SWEEP_FROM.into(),
            }),
        }
    }

    /// A usable credential for `scope`, from the cache or from one shared upstream call.
    pub async fn get(&self, scope: &Scope) -> Result<Lease, Error> {
        let mut flight = {
            let mut slots = lock(&self.inner.slots);
            let now = Instant::now();
            let state = match slots.get_mut(scope) {
                Some(state) => state,
                None => {
                    self.sweep(&mut slots, now);
                    slots.entry(scope.clone()).or_default()
                }
            };
            if let Some(entry) = &state.current {
                match entry.freshness(now, &self.inner.policy) {
                    Freshness::Fresh => return Ok(self.lease(entry, now, true, "hit")),
                    Freshness::Stale => {
                        let lease = self.lease(entry, now, true, "stale");
                        if state.flight.is_none() && !state.backing_off(now) {
                            state.flight = Some(self.start(scope));
                            metrics::counter!("stsgate_cache_refreshes_total", "profile" => self.inner.profile.to_string()).increment(1);
                        }
                        return Ok(lease);
                    }
                    Freshness::Unusable => {}
                }
            }
            match &state.flight {
                Some(flight) => {
                    self.count("joined");
                    flight.clone()
                }
                None => {
                    if let Some((until, error)) = &state.failure
                        && now < *until
                    {
                        self.count("failure_cached");
                        return Err(error.clone());
                    }
                    self.count("miss");
                    let flight = self.start(scope);
                    state.flight = Some(flight.clone());
                    flight
                }
            }
        };
        let outcome = flight.wait_for(Option::is_some).await.map(|o| o.clone());
        match outcome {
            Ok(Some(Ok(entry))) => Ok(Lease {
                expire: entry.expire_secs(Instant::now(), &self.inner.policy),
                credential: entry.credential,
                rendered: entry.rendered,
                hit: false,
            }),
            Ok(Some(Err(error))) => Err(error),
            Ok(None) | Err(_) => Err(Error::Internal(
                "the credential request was abandoned".to_owned(),
            )),
        }
    }

    /// The storage profile this cache serves.
    pub fn profile(&self) -> &str {
        &self.inner.profile
    }

    /// Counts a lookup by outcome (`hit`, `stale`, `miss`, `joined`, `failure_cached`).
    fn count(&self, outcome: &'static str) {
        match outcome {
            "hit" => self.inner.hits.increment(1),
            _ => cache_requests(&self.inner.profile, outcome).increment(1),
        }
    }

    /// Past [`Inner::sweep_at`] slots, removes those with no usable credential, no call in
    /// flight and no failure still answered from memory: what is left is what the next request
    /// for it would use.
    fn sweep(&self, slots: &mut HashMap<Scope, Slot, foldhash::fast::RandomState>, now: Instant) {
        use std::sync::atomic::Ordering::Relaxed;
        if slots.len() < self.inner.sweep_at.load(Relaxed) {
            return;
        }
        let policy = &self.inner.policy;
        slots.retain(|_, slot| {
            slot.flight.is_some()
                || slot.backing_off(now)
                || slot
                    .current
                    .as_ref()
                    .is_some_and(|e| e.freshness(now, policy) != Freshness::Unusable)
        });
        self.inner
            .sweep_at
            .store((slots.len() * 2).max(SWEEP_FROM), Relaxed);
    }

    /// How many scopes have a slot.
    pub fn scopes(&self) -> usize {
        lock(&self.inner.slots).len()
    }

    fn lease(&self, entry: &Entry, now: Instant, hit: bool, outcome: &'static str) -> Lease {
        self.count(outcome);
        Lease {
            credential: entry.credential.clone(),
            rendered: entry.rendered.clone(),
            expire: entry.expire_secs(now, &self.inner.policy),
            hit,
        }
    }

    /// Starts the one upstream call for `scope` in its own task.
    fn start(&self, scope: &Scope) -> watch::Receiver<Outcome> {
        let (tx, rx) = watch::channel(None);
        let (inner, scope) = (self.inner.clone(), scope.clone());
        tokio::spawn(async move {
            let result = inner.issue(scope.clone()).await;
            // A slot with a call in flight is never swept, so the one this call was started for
            // is there.
            if let Some(state) = lock(&inner.slots).get_mut(&scope) {
                match &result {
                    Ok(entry) => {
                        state.current = Some(entry.clone());
                        state.failure = None;
                    }
                    Err(error) => {
                        state.failure =
                            Some((Instant::now() + inner.failure_backoff, error.clone()))
                    }
                }
                state.flight = None;
            }
            // Nobody waiting (a background refresh) is fine.
            let _ = tx.send(Some(result));
        });
        rx
    }
}

// === impl Inner ===

impl Inner {
    async fn issue(&self, scope: Scope) -> Result<Entry, Error> {
        let provider = self.issuer.kind().as_str();
        let request = IssueRequest {
            scope,
            duration: self.duration,
        };
        let started = Instant::now();
        let result = match tokio::time::timeout(self.timeout, self.issuer.issue(&request)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.timeout)),
        }
        .and_then(|credential| {
            let entry = Entry::new(credential, Instant::now(), SystemTime::now());
            match entry.freshness(Instant::now(), &self.policy) {
                Freshness::Unusable => Err(Error::TooShort(entry.remaining(Instant::now()))),
                _ => Ok(entry),
            }
        });
        let outcome = result.as_ref().map_or_else(Error::label, |_| "ok");
        let profile = &*self.profile;
        metrics::counter!("stsgate_upstream_calls_total", "provider" => provider, "profile" => profile.to_owned(), "outcome" => outcome).increment(1);
        metrics::histogram!("stsgate_upstream_seconds", "provider" => provider, "profile" => profile.to_owned(), "outcome" => outcome)
            .record(started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => {
                tracing::debug!(provider, profile, prefix = %request.scope.prefix, "issued a credential")
            }
            Err(error) => {
                tracing::warn!(provider, profile, prefix = %request.scope.prefix, %error, "upstream credential request failed")
            }
        }
        result
    }
}

// === impl Slot ===

impl Slot {
    fn backing_off(&self, now: Instant) -> bool {
        self.failure.as_ref().is_some_and(|(until, _)| now < *until)
    }
}

fn cache_requests(profile: &str, outcome: &'static str) -> metrics::Counter {
    metrics::counter!("stsgate_cache_requests_total", "profile" => profile.to_owned(), "outcome" => outcome)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
