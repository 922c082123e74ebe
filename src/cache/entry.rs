//! Lifetime math for a cached credential, pure and clock-injected: when it is fresh (more than
//! half its life left), stale (served while one refresh runs), or unusable (below the floor), and
//! the `expire` a device is told.

use crate::protocol::RenderedOnce;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::issuer::Credential;

/// The service's lifetime policy (from `[storage]`).
#[derive(Clone, Copy, Debug)]
pub struct Lifetimes {
    /// Below this much remaining life a credential is never handed out.
    pub min_remaining: Duration,
    /// Subtracted from the remaining life in the `expire` devices see.
    pub expire_margin: Duration,
}

/// A cached credential with its lifetime on the monotonic clock.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The credential.
    pub credential: Arc<Credential>,
    /// Its answer, serialised on first use (see [`crate::protocol::Rendered`]).
    pub rendered: RenderedOnce,
    /// When it was received.
    pub issued_at: Instant,
    /// When it expires.
    pub expires_at: Instant,
}

/// What may be done with an entry at a given moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Freshness {
    /// More than half its life left: serve it.
    Fresh,
    /// Half or less left but above the floor: serve it and refresh in the background.
    Stale,
    /// At or below the floor: do not serve it.
    Unusable,
}

// === impl Entry ===

impl Entry {
    /// Places a credential on the monotonic clock: its wall-clock expiration is converted once,
    /// at receipt, so that later wall-clock jumps do not move it.
    pub fn new(credential: Credential, now: Instant, wall_now: SystemTime) -> Self {
        let lifetime = credential
            .expiration
            .duration_since(wall_now)
            .unwrap_or_default();
        Self {
            credential: Arc::new(credential),
            rendered: RenderedOnce::default(),
            issued_at: now,
            expires_at: now + lifetime,
        }
    }

    /// Remaining life at `now`.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.expires_at.saturating_duration_since(now)
    }

    /// Classifies the entry at `now`.
    pub fn freshness(&self, now: Instant, policy: &Lifetimes) -> Freshness {
        let remaining = self.remaining(now);
        let lifetime = self.expires_at.saturating_duration_since(self.issued_at);
        if remaining <= policy.min_remaining {
            Freshness::Unusable
        } else if remaining * 2 > lifetime {
            Freshness::Fresh
        } else {
            Freshness::Stale
        }
    }

    /// The `expire` a device is told at `now`: whole seconds left minus the margin, at least 1.
    pub fn expire_secs(&self, now: Instant, policy: &Lifetimes) -> u64 {
        self.remaining(now)
            .saturating_sub(policy.expire_margin)
            .as_secs()
            .max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    const POLICY: Lifetimes = Lifetimes {
        min_remaining: Duration::from_secs(300),
        expire_margin: Duration::from_secs(60),
    };

    fn entry(lifetime_secs: u64, now: Instant, wall: SystemTime) -> Entry {
        let credential = Credential {
            access_key_id: "AK".into(),
            secret_access_key: Secret::new("s"),
            session_token: Secret::new("t"),
            expiration: wall + Duration::from_secs(lifetime_secs),
        };
        Entry::new(credential, now, wall)
    }

    #[test]
    fn fresh_then_stale_then_unusable() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let e = entry(3600, now, wall);
        let at = |secs| now + Duration::from_secs(secs);
        assert_eq!(e.freshness(at(0), &POLICY), Freshness::Fresh);
        assert_eq!(e.freshness(at(1799), &POLICY), Freshness::Fresh);
        assert_eq!(e.freshness(at(1800), &POLICY), Freshness::Stale);
        assert_eq!(e.freshness(at(3299), &POLICY), Freshness::Stale);
        assert_eq!(e.freshness(at(3300), &POLICY), Freshness::Unusable);
        assert_eq!(e.freshness(at(9999), &POLICY), Freshness::Unusable);
    }

    #[test]
    fn expire_is_remaining_minus_margin() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let e = entry(3600, now, wall);
        assert_eq!(e.expire_secs(now, &POLICY), 3540);
        assert_eq!(
            e.expire_secs(now + Duration::from_millis(1500), &POLICY),
            3538
        );
        assert_eq!(e.expire_secs(now + Duration::from_secs(3599), &POLICY), 1);
    }

    #[test]
    fn already_expired_credentials_are_unusable() {
        let (now, wall) = (Instant::now(), SystemTime::now());
        let credential = Credential {
            access_key_id: "AK".into(),
            secret_access_key: Secret::new("s"),
            session_token: Secret::new("t"),
            expiration: wall - Duration::from_secs(10),
        };
        assert_eq!(
            Entry::new(credential, now, wall).freshness(now, &POLICY),
            Freshness::Unusable
        );
    }
}
