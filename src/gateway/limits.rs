//! Rate limits per gateway serial number and per token subject (GCRA token buckets, `governor`),
//! so that one dock or pilot flooding the service is answered "retry later" while every other
//! device is served as usual.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::LimitsConfig;
use crate::domain::Requester;

/// How often (in checks) idle keys are forgotten.
const SHRINK_EVERY: u64 = 4096;

/// The limiters; a limit of 0 per minute means none.
pub struct Limits {
    devices: Option<DefaultKeyedRateLimiter<String>>,
    subjects: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
}

// === impl Limits ===

impl Limits {
    /// Limiters from `[limits]`.
    pub fn new(config: &LimitsConfig) -> Self {
        let limiter = |per_minute: u32, burst: u32| {
            let rate = NonZeroU32::new(per_minute)?;
            let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
            Some(DefaultKeyedRateLimiter::keyed(
                Quota::per_minute(rate).allow_burst(burst),
            ))
        };
        Self {
            devices: limiter(config.device_per_minute, config.device_burst),
            subjects: limiter(config.subject_per_minute, config.subject_burst),
            checks: AtomicU64::new(0),
        }
    }

    /// Whether token subjects have a limit.
    pub fn subjects_limited(&self) -> bool {
        self.subjects.is_some()
    }

    /// Admits one request, or says how long to wait.
    pub fn check(&self, requester: Requester<'_>) -> Result<(), Duration> {
        let (limiter, key) = match requester {
            // The registry binds serial numbers case-insensitively, so the limit must count
            // `DOCK1` and `dock1` as one dock, or a flooding dock gets a bucket per spelling.
            Requester::Device(sn) => (&self.devices, sn.to_ascii_uppercase()),
            Requester::Token(subject) => (&self.subjects, subject.to_owned()),
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SHRINK_EVERY == SHRINK_EVERY - 1 {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
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
            assert!(limits.check(Requester::Device("A")).is_ok());
        }
        let wait = limits
            .check(Requester::Device("A"))
            .expect_err("over the burst");
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(
            limits.check(Requester::Device("a")).is_err(),
            "another spelling of the same serial number shares its bucket"
        );
        assert!(
            limits.check(Requester::Device("B")).is_ok(),
            "another dock is not affected"
        );
        for _ in 0..100 {
            assert!(
                limits.check(Requester::Token("pilot")).is_ok(),
                "0 per minute: no limit"
            );
        }
    }
}
