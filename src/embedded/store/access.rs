//! Authorization for the embedded store (s3s `S3Access`): the administrator may do anything; a
//! minted credential may only write (PutObject and the multipart-upload actions) under
//! `{prefix}/` in its own bucket, only with its own session token, and only before it expires.
//! The decision itself is the pure [`decide`], so every rule is unit-tested without a server.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use s3s::access::{S3Access, S3AccessContext};
use s3s::{S3Error, S3ErrorCode, S3Result};

use super::AdminKey;
use super::keyring::{Grant, Keyring};
use crate::secret::Secret;

/// The operations a device credential may perform.
pub const WRITE_OPERATIONS: &[&str] = &[
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "AbortMultipartUpload",
    "ListParts",
];

/// Enforces the rules above.
pub struct Policy {
    keyring: Arc<Keyring>,
    admin: AdminKey,
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denial {
    /// No or unknown credentials, wrong token, or outside what the credential may do.
    AccessDenied(&'static str),
    /// The credential has expired.
    Expired,
}

/// A request as far as authorization cares.
#[derive(Debug)]
pub struct Request<'a> {
    /// The s3s operation name, e.g. `PutObject`.
    pub operation: &'a str,
    /// `(bucket, key)` when the request addresses an object.
    pub object: Option<(&'a str, &'a str)>,
    /// The session token sent with the request (header or presigned query).
    pub session_token: Option<String>,
}

// === impl Policy ===

impl Policy {
    /// A policy over the keyring's credentials and the administrator key.
    pub fn new(keyring: Arc<Keyring>, admin: AdminKey) -> Self {
        Self { keyring, admin }
    }
}

#[async_trait]
impl S3Access for Policy {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let Some(credentials) = cx.credentials() else {
            return Err(denied(Denial::AccessDenied(
                "anonymous requests are not allowed",
            )));
        };
        if credentials.access_key == self.admin.access_key_id {
            return Ok(());
        }
        let grant = self.keyring.get(&credentials.access_key);
        let request = Request {
            operation: cx.s3_op().name(),
            object: cx.s3_path().as_object(),
            session_token: session_token(cx),
        };
        let result = decide(grant.as_deref(), &request, SystemTime::now());
        if let Err(denial) = &result {
            tracing::info!(
                access_key_id = %credentials.access_key,
                operation = request.operation,
                ?denial,
                "embedded store refused a request"
            );
        }
        result.map_err(denied)
    }
}

/// The decision for a request made with a minted (non-admin) credential.
pub fn decide(grant: Option<&Grant>, request: &Request<'_>, now: SystemTime) -> Result<(), Denial> {
    let grant = grant.ok_or(Denial::AccessDenied("unknown access key"))?;
    if grant.expired(now) {
        return Err(Denial::Expired);
    }
    let token_ok = request
        .session_token
        .as_ref()
        .is_some_and(|t| Secret::new(t.as_str()) == grant.session_token);
    if !token_ok {
        return Err(Denial::AccessDenied(
            "missing or wrong x-amz-security-token",
        ));
    }
    if !WRITE_OPERATIONS.contains(&request.operation) {
        return Err(Denial::AccessDenied(
            "this credential may only upload objects",
        ));
    }
    let (bucket, key) = request.object.ok_or(Denial::AccessDenied(
        "this credential may only upload objects",
    ))?;
    if bucket != grant.bucket {
        return Err(Denial::AccessDenied(
            "this credential is for another bucket",
        ));
    }
    let under_prefix = key
        .strip_prefix(grant.prefix.as_str())
        .and_then(|rest| rest.strip_prefix('/'))
        .is_some_and(|rest| !rest.is_empty());
    if !under_prefix {
        return Err(Denial::AccessDenied(
            "the key is outside this credential's object_key_prefix",
        ));
    }
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return Err(Denial::AccessDenied(
            "keys with '.' or '..' segments are not allowed",
        ));
    }
    Ok(())
}

/// `x-amz-security-token` from the headers, or `X-Amz-Security-Token` from a presigned URL.
fn session_token(cx: &S3AccessContext<'_>) -> Option<String> {
    if let Some(value) = cx.headers().get("x-amz-security-token") {
        return value.to_str().ok().map(str::to_owned);
    }
    cx.uri().query()?.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.eq_ignore_ascii_case("x-amz-security-token").then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

fn denied(denial: Denial) -> S3Error {
    match denial {
        Denial::AccessDenied(why) => S3Error::with_message(S3ErrorCode::AccessDenied, why),
        Denial::Expired => {
            S3Error::with_message(S3ErrorCode::ExpiredToken, "The provided token has expired.")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn grant(now: SystemTime) -> Grant {
        Grant {
            access_key_id: "ASIATEST".into(),
            secret_access_key: Secret::new("secret"),
            session_token: Secret::new("token"),
            bucket: "media".into(),
            prefix: "ws1".into(),
            expiration: now + Duration::from_secs(60),
        }
    }

    fn put<'a>(bucket: &'a str, key: &'a str, token: Option<&str>) -> Request<'a> {
        Request {
            operation: "PutObject",
            object: Some((bucket, key)),
            session_token: token.map(str::to_owned),
        }
    }

    #[test]
    fn writes_under_the_prefix_are_allowed() {
        let now = SystemTime::now();
        let m = grant(now);
        assert_eq!(
            decide(Some(&m), &put("media", "ws1/a.jpg", Some("token")), now),
            Ok(())
        );
        assert_eq!(
            decide(
                Some(&m),
                &put("media", "ws1/DJI_001/b c.mp4", Some("token")),
                now
            ),
            Ok(())
        );
        for op in WRITE_OPERATIONS {
            let r = Request {
                operation: op,
                ..put("media", "ws1/x", Some("token"))
            };
            assert_eq!(decide(Some(&m), &r, now), Ok(()), "{op}");
        }
    }

    #[test]
    fn everything_else_is_denied() {
        let now = SystemTime::now();
        let m = grant(now);
        let denied =
            |r: &Request<'_>| matches!(decide(Some(&m), r, now), Err(Denial::AccessDenied(_)));
        assert!(
            denied(&put("media", "ws2/a.jpg", Some("token"))),
            "another prefix"
        );
        assert!(
            denied(&put("media", "ws1-x/a.jpg", Some("token"))),
            "look-alike prefix"
        );
        assert!(
            denied(&put("media", "ws1x/a.jpg", Some("token"))),
            "look-alike prefix"
        );
        assert!(
            denied(&put("media", "ws1", Some("token"))),
            "the prefix itself"
        );
        assert!(
            denied(&put("media", "ws1/", Some("token"))),
            "the prefix directory"
        );
        assert!(
            denied(&put("media", "ws1/../ws2/a", Some("token"))),
            "dot-dot"
        );
        assert!(denied(&put("media", "ws1/./a", Some("token"))), "dot");
        assert!(
            denied(&put("other", "ws1/a.jpg", Some("token"))),
            "another bucket"
        );
        assert!(denied(&put("media", "ws1/a.jpg", None)), "no token");
        assert!(
            denied(&put("media", "ws1/a.jpg", Some("tokenX"))),
            "wrong token"
        );
        assert!(denied(&put("media", "ws1/a.jpg", Some(""))), "empty token");
        for op in [
            "GetObject",
            "DeleteObject",
            "ListObjectsV2",
            "HeadObject",
            "CopyObject",
            "UploadPartCopy",
            "PutObjectAcl",
        ] {
            let r = Request {
                operation: op,
                ..put("media", "ws1/a.jpg", Some("token"))
            };
            assert!(denied(&r), "{op}");
        }
        let list = Request {
            operation: "ListObjectsV2",
            object: None,
            session_token: Some("token".into()),
        };
        assert!(denied(&list));
        assert!(matches!(
            decide(None, &put("media", "ws1/a", Some("token")), now),
            Err(Denial::AccessDenied(_))
        ));
    }

    #[test]
    fn expired_credentials_are_refused_as_expired() {
        let now = SystemTime::now();
        let m = grant(now);
        let later = now + Duration::from_secs(61);
        assert_eq!(
            decide(Some(&m), &put("media", "ws1/a", Some("token")), later),
            Err(Denial::Expired)
        );
    }
}
