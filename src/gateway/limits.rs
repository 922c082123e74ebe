//! Rate limits per gateway serial number and per token subject (GCRA token buckets, `governor`),
//! so that one dock or pilot flooding the service is answered "retry later" while every other
//! device is served as usual.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::config::LimitsConfig;

/// How often idle keys are forgotten and their memory returned. By time, not by count: walking
/// and rehashing a map of 20,000 pilots every few thousand requests was a tenth of what a cache
/// hit cost under load, and a bucket is only forgotten once full again (minutes) anyway.
const TIDY_EVERY: Duration = Duration::from_secs(10);

/// The limiters; a limit of 0 per minute means none.
///
/// Buckets are keyed by a 64-bit keyed hash of who asks rather than by a string: no allocation
/// per request, and with 20,000 pilots no string on the heap to reach for each comparison. The
/// hash is SipHash with a key drawn at start, so nobody can make two senders share a bucket on
/// purpose, and the chance that any two of a million senders share one is below 1 in 30 million.
pub struct Limits {
    devices: Option<Limiter>,
    subjects: Option<Limiter>,
    hasher: std::hash::RandomState,
    started: Instant,
    /// When the next tidy is due, in milliseconds since `started`.
    next_tidy: AtomicU64,
}

/// A keyed limiter whose keys are already keyed hashes: its map takes them as they are rather
/// than hashing them again (a second SipHash of every key, per request).
type Limiter = RateLimiter<
    u64,
    DashMapStateStore<u64, nohash_hasher::BuildNoHashHasher<u64>>,
    DefaultClock,
    NoOpMiddleware<<DefaultClock as Clock>::Instant>,
>;

/// Whose bucket a request counts against.
#[derive(Clone, Copy, Debug)]
pub enum Key<'a> {
    /// A dock, by gateway serial number.
    Device(&'a str),
    /// A pilot: per workspace and subject, since the DJI demo's usernames ("pilot") repeat across
    /// workspaces and tokens without a subject share only their own workspace's bucket.
    Pilot {
        /// The workspace the token is for.
        workspace: &'a str,
        /// The token's subject.
        subject: &'a str,
    },
}

// === impl Limits ===

impl Limits {
    /// Limiters from `[limits]`.
    pub fn new(config: &LimitsConfig) -> Self {
        let limiter = |per_minute: u32, burst: u32| {
            let rate = NonZeroU32::new(per_minute)?;
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            Some(Limiter::dashmap_with_clock_and_hasher(
                Quota::per_minute(rate).allow_burst(burst),
                DefaultClock::default(),
                nohash_hasher::BuildNoHashHasher::default(),
            ))
        };
        Self {
            devices: limiter(config.device_per_minute, config.device_burst),
            subjects: limiter(config.subject_per_minute, config.subject_burst),
            hasher: std::hash::RandomState::new(),
            started: Instant::now(),
            next_tidy: AtomicU64::new(TIDY_EVERY.as_millis() as u64),
        }
    }

    /// Admits one request, or says how long to wait.
    pub fn check(&self, key: Key<'_>) -> Result<(), Duration> {
        let limiter = match key {
            Key::Device(_) => &self.devices,
            Key::Pilot { .. } => &self.subjects,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        let key = self.bucket(key);
        self.tidy_when_due(limiter);
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// The bucket `key` counts against.
    fn bucket(&self, key: Key<'_>) -> u64 {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = self.hasher.build_hasher();
        match key {
            // The registry binds serial numbers case-insensitively, so the limit must count
            // `DOCK1` and `dock1` as one dock, or a flooding dock gets a bucket per spelling.
            Key::Device(sn) => {
                hasher.write_u8(0);
                let mut upper = [0_u8; 64];
                for chunk in sn.as_bytes().chunks(upper.len()) {
                    let upper = &mut upper[..chunk.len()];
                    upper.copy_from_slice(chunk);
                    upper.make_ascii_uppercase();
                    hasher.write(upper);
                }
            }
            // The lengths keep `a/b` + `c` and `a` + `b/c` apart.
            Key::Pilot { workspace, subject } => {
                hasher.write_u8(1);
                hasher.write_usize(workspace.len());
                hasher.write(workspace.as_bytes());
                hasher.write(subject.as_bytes());
            }
        }
        hasher.finish()
    }

    /// Forgets idle keys every [`TIDY_EVERY`]; one caller does it, the others go on.
    fn tidy_when_due(&self, limiter: &Limiter) {
        let now = self.started.elapsed().as_millis() as u64;
        let due = self.next_tidy.load(Ordering::Relaxed);
        if now >= due
            && self
                .next_tidy
                .compare_exchange(
                    due,
                    now + TIDY_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_bucket() {
        let limits = Limits::new(&LimitsConfig {
            device_per_minute: 60,
            device_burst: 3,
            subject_per_minute: 0,
            subject_burst: 0,
        });
        for _ in 0..3 {
            assert!(limits.check(Key::Device("A")).is_ok());
        }
        let wait = limits.check(Key::Device("A")).expect_err("over the burst");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            limits.check(Key::Device("a")).is_err(),
            "another spelling of the same serial number shares its bucket"
        );
        assert!(
            limits.check(Key::Device("B")).is_ok(),
            "another dock is not affected"
        );
        let pilot = Key::Pilot {
            workspace: "ws",
            subject: "pilot",
        };
        for _ in 0..100 {
            assert!(limits.check(pilot).is_ok(), "0 per minute: no limit");
        }
    }

    #[test]
    fn buckets_tell_apart_what_differs_and_only_that() {
        let limits = Limits::new(&LimitsConfig::default());
        let long = "dock-".repeat(40);
        assert_eq!(
            limits.bucket(Key::Device(&long)),
            limits.bucket(Key::Device(&long.to_ascii_uppercase())),
            "case does not count, past the first 64 bytes too"
        );
        assert_ne!(
            limits.bucket(Key::Device(&long)),
            limits.bucket(Key::Device(&format!("{long}x")))
        );
        let pilot = |workspace, subject| limits.bucket(Key::Pilot { workspace, subject });
        assert_ne!(pilot("a/b", "c"), pilot("a", "b/c"));
        assert_ne!(
            pilot("ws", "Pilot"),
            pilot("ws", "pilot"),
            "subjects keep their case"
        );
        assert_ne!(pilot("", "DOCK1"), limits.bucket(Key::Device("DOCK1")));
        assert_eq!(pilot("ws", "p"), pilot("ws", "p"));
    }

    #[test]
    fn a_pilots_bucket_is_per_workspace() {
        let limits = Limits::new(&LimitsConfig {
            device_per_minute: 0,
            device_burst: 0,
            subject_per_minute: 60,
            subject_burst: 1,
        });
        let pilot = |workspace| Key::Pilot {
            workspace,
            subject: "pilot",
        };
        assert!(limits.check(pilot("ws-a")).is_ok());
        assert!(limits.check(pilot("ws-a")).is_err(), "over the burst");
        assert!(
            limits.check(pilot("ws-b")).is_ok(),
            "the same username in another workspace has its own bucket"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_keys_are_forgotten_once_their_bucket_is_full_again() {
        let limits = Limits::new(&LimitsConfig {
            device_per_minute: 6_000,
            device_burst: 1,
            subject_per_minute: 0,
            subject_burst: 0,
        });
        let devices = limits.devices.as_ref().expect("limited");
        for i in 0..1_000 {
            assert!(limits.check(Key::Device(&format!("DOCK{i}"))).is_ok());
        }
        assert_eq!(devices.len(), 1_000);
        // Paused time moves tokio's clock, which the tidy reads; governor's clock (real time)
        // needs the 10 ms a bucket of 6,000 per minute takes to refill.
        std::thread::sleep(Duration::from_millis(20));
        tokio::time::advance(TIDY_EVERY).await;
        assert!(limits.check(Key::Device("DOCK-NEW")).is_ok());
        assert_eq!(devices.len(), 1, "only the key just checked is left");
    }
}
