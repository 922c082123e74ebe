//! Cache behaviour under a paused clock, with an issuer that counts its calls.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;

use super::*;
use crate::domain::ProviderKind;
use crate::issuer::Issuer;
use crate::secret::Secret;

struct CountingIssuer {
    calls: AtomicUsize,
    delay: Duration,
    fail: AtomicBool,
}

#[async_trait]
impl Issuer for Arc<CountingIssuer> {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    async fn issue(&self, request: &IssueRequest) -> Result<Credential, Error> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(self.delay).await;
        if self.fail.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("test upstream is down".into()));
        }
        Ok(Credential {
            access_key_id: format!("AK{n}-{}", request.scope.prefix),
            secret_access_key: Secret::new(format!("secret{n}")),
            session_token: Secret::new(format!("token{n}")),
            expiration: SystemTime::now() + request.duration,
        })
    }
}

fn setup(delay_ms: u64) -> (Cache, Arc<CountingIssuer>) {
    let issuer = Arc::new(CountingIssuer {
        calls: AtomicUsize::new(0),
        delay: Duration::from_millis(delay_ms),
        fail: AtomicBool::new(false),
    });
    let storage = StorageProfile {
        duration: Duration::from_secs(3600),
        min_remaining: Duration::from_secs(300),
        expire_margin: Duration::from_secs(60),
        upstream_timeout: Duration::from_secs(5),
        failure_backoff: Duration::from_secs(2),
        ..StorageProfile::default()
    };
    (
        Cache::new(IssuerHandle::new(issuer.clone()), &storage, "default"),
        issuer,
    )
}

fn scope(prefix: &str) -> Scope {
    Scope {
        bucket: "media".into(),
        prefix: prefix.into(),
        device: None,
    }
}

fn calls(issuer: &CountingIssuer) -> usize {
    issuer.calls.load(Ordering::SeqCst)
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_cold_requests_make_one_upstream_call() {
    let (cache, issuer) = setup(200);
    let s = scope("ws1");
    let tasks: Vec<_> = (0..500)
        .map(|_| {
            let (cache, s) = (cache.clone(), s.clone());
            tokio::spawn(async move { cache.get(&s).await })
        })
        .collect();
    let mut keys = std::collections::HashSet::new();
    for t in tasks {
        let lease = t.await.expect("task").expect("credential");
        keys.insert(lease.credential.access_key_id.clone());
    }
    assert_eq!(calls(&issuer), 1);
    assert_eq!(keys.len(), 1, "every waiter got the same credential");
}

#[tokio::test(start_paused = true)]
async fn each_scope_gets_its_own_credential() {
    let (cache, issuer) = setup(10);
    let a = cache.get(&scope("a")).await.expect("a");
    let b = cache.get(&scope("b")).await.expect("b");
    assert_ne!(a.credential.access_key_id, b.credential.access_key_id);
    assert!(cache.get(&scope("a")).await.expect("a again").hit);
    assert_eq!(calls(&issuer), 2);
    assert_eq!(cache.scopes(), 2);
}

#[tokio::test(start_paused = true)]
async fn fresh_credentials_are_reused_and_expire_counts_down() {
    let (cache, issuer) = setup(0);
    let first = cache.get(&scope("ws")).await.expect("first");
    assert!(!first.hit);
    // The issuer stamps its expiry a few microseconds before the cache receives it.
    assert!((3539..=3540).contains(&first.expire), "{}", first.expire);
    advance(1000).await;
    let again = cache.get(&scope("ws")).await.expect("again");
    assert!(again.hit);
    assert_eq!(
        again.credential.access_key_id,
        first.credential.access_key_id
    );
    assert_eq!(again.expire, first.expire - 1000);
    assert_eq!(calls(&issuer), 1);
}

#[tokio::test(start_paused = true)]
async fn stale_credentials_are_served_while_one_refresh_runs() {
    let (cache, issuer) = setup(100);
    let first = cache.get(&scope("ws")).await.expect("first");
    advance(2000).await; // 1600 s left of 3600: stale
    for _ in 0..50 {
        let lease = cache.get(&scope("ws")).await.expect("stale but served");
        assert_eq!(
            lease.credential.access_key_id,
            first.credential.access_key_id
        );
        assert!(lease.hit);
    }
    tokio::time::sleep(Duration::from_millis(150)).await; // the refresh completes
    assert_eq!(
        calls(&issuer),
        2,
        "one background refresh for 50 stale requests"
    );
    let refreshed = cache.get(&scope("ws")).await.expect("refreshed");
    assert_ne!(
        refreshed.credential.access_key_id,
        first.credential.access_key_id
    );
    assert!((3539..=3540).contains(&refreshed.expire));
}

#[tokio::test(start_paused = true)]
async fn below_the_floor_requests_wait_for_a_new_credential() {
    let (cache, issuer) = setup(10);
    let first = cache.get(&scope("ws")).await.expect("first");
    advance(3400).await; // 200 s left, under the 300 s floor
    let lease = cache.get(&scope("ws")).await.expect("new one");
    assert!(!lease.hit);
    assert_ne!(
        lease.credential.access_key_id,
        first.credential.access_key_id
    );
    assert_eq!(calls(&issuer), 2);
}

#[tokio::test(start_paused = true)]
async fn failures_are_shared_and_not_retried_during_the_backoff() {
    let (cache, issuer) = setup(50);
    issuer.fail.store(true, Ordering::SeqCst);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.get(&scope("ws")).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.expect("task"), Err(Error::Unavailable(_))));
    }
    assert_eq!(calls(&issuer), 1);
    assert!(cache.get(&scope("ws")).await.is_err());
    assert_eq!(
        calls(&issuer),
        1,
        "inside the backoff the failure is answered from memory"
    );
    advance(3).await;
    issuer.fail.store(false, Ordering::SeqCst);
    assert!(cache.get(&scope("ws")).await.is_ok());
    assert_eq!(calls(&issuer), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_serving_the_usable_credential() {
    let (cache, issuer) = setup(10);
    let first = cache.get(&scope("ws")).await.expect("first");
    issuer.fail.store(true, Ordering::SeqCst);
    advance(2000).await;
    for _ in 0..10 {
        let lease = cache.get(&scope("ws")).await.expect("still served");
        assert_eq!(
            lease.credential.access_key_id,
            first.credential.access_key_id
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One refresh, then one more after the 2 s backoff: not one per request.
    assert_eq!(calls(&issuer), 2);
    advance(1300).await; // 300 s left: unusable, and upstream still down
    advance(3).await;
    assert!(matches!(
        cache.get(&scope("ws")).await,
        Err(Error::Unavailable(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_slow_upstream_times_out() {
    let (cache, _issuer) = setup(10_000);
    match cache.get(&scope("ws")).await {
        Err(Error::Timeout(t)) => assert_eq!(t, Duration::from_secs(5)),
        other => panic!("expected a timeout, got {other:?}"),
    }
}
