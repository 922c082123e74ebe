//! Any operation, bucket and key against a credential for `media` / `ws-1`: the decision never
//! panics, and an allowed request is an upload under `ws-1/` in `media` with no `.`/`..`
//! segment.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use stsgate::embedded::store::access::{Request, WRITE_OPERATIONS, decide};
use stsgate::issuer::local::Minted;
use stsgate::secret::Secret;

fuzz_target!(|input: (u8, &str, &str, bool)| {
    let (op, bucket, key, with_token) = input;
    let minted = Minted {
        access_key_id: "ASIAFUZZ".into(),
        secret_access_key: Secret::new("s"),
        session_token: Secret::new("token"),
        bucket: "media".into(),
        prefix: "ws-1".into(),
        expiration: SystemTime::now() + Duration::from_secs(3600),
    };
    let operations = ["GetObject", "DeleteObject", "ListObjectsV2", "CopyObject"];
    let operation = WRITE_OPERATIONS
        .iter()
        .chain(operations.iter())
        .nth(usize::from(op) % (WRITE_OPERATIONS.len() + operations.len()))
        .copied()
        .unwrap_or("PutObject");
    let request = Request {
        operation,
        object: Some((bucket, key)),
        session_token: with_token.then(|| "token".to_owned()),
    };
    if decide(Some(&minted), &request, SystemTime::now()).is_ok() {
        assert!(WRITE_OPERATIONS.contains(&operation));
        assert_eq!(bucket, "media");
        assert!(key.starts_with("ws-1/") && key.len() > 5, "{key:?}");
        assert!(!key.split('/').any(|s| s == "." || s == ".."), "{key:?}");
        assert!(with_token);
    }
});
