//! From a failure to its most likely cause and fix, in words an operator can act on at 3 a.m.

use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::gateway;
use crate::issuer;
use crate::protocol::StorageConfig;

/// What an S3 call answered, or that it got no answer.
#[derive(Debug)]
pub struct Failure {
    /// HTTP status, when the store answered at all.
    pub status: Option<u16>,
    /// S3 error code, e.g. `NoSuchBucket`.
    pub code: Option<String>,
    /// The store's message or the transport error.
    pub message: String,
}

// === impl Failure ===

impl Failure {
    /// Reads status, code and message off an SDK error.
    pub fn from_sdk<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        Self {
            status: e.raw_response().map(|r| r.status().as_u16()),
            code: e.code().map(str::to_owned),
            message: e.message().map_or_else(|| transport(&e), str::to_owned),
        }
    }
}

/// The readable part of a transport error: the SDK's error chain without its trailing Debug dump.
fn transport<E: std::error::Error + Send + Sync + 'static>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String {
    let text = DisplayErrorContext(e).to_string();
    let debug_dump = [
        " (DispatchFailure(",
        " (TimeoutError(",
        " (ResponseError(",
        " (ConstructionFailure(",
    ];
    let end = debug_dump
        .iter()
        .filter_map(|m| text.find(m))
        .min()
        .unwrap_or(text.len());
    text[..end].to_owned()
}

/// The S3 error code of a failure.
pub fn code(f: &Failure) -> Option<&str> {
    f.code.as_deref()
}

/// The trust policy statement per-device credentials need, to paste into the role's.
const PER_DEVICE_STATEMENT: &str =
    "add to the role's trust policy (Principal: the identity stsgate runs as):
  {
    \"Effect\": \"Allow\",
    \"Principal\": {\"AWS\": \"arn:aws:iam::<account>:<user or role stsgate runs as>\"},
    \"Action\": [\"sts:AssumeRole\", \"sts:SetSourceIdentity\", \"sts:TagSession\"]
  }";

/// Cause and fix for a failed S3 call made with `sc`.
pub fn s3(f: &Failure, sc: &StorageConfig) -> String {
    let said = match (&f.status, &f.code) {
        (Some(status), Some(code)) => format!("the store answered {status} {code}: {}", f.message),
        (Some(status), None) => format!("the store answered {status}: {}", f.message),
        _ => format!("no answer: {}", f.message),
    };
    let (cause, fix) = match (f.status, f.code.as_deref()) {
        (None, _) => (
            format!("the endpoint {} is unreachable from here", sc.endpoint),
            "check storage.endpoint (scheme, host, port) and that the store is running; devices need an \
             address they can reach on their own network, not 127.0.0.1",
        ),
        (_, Some("NoSuchBucket")) => (
            format!("the bucket {} does not exist", sc.bucket),
            "create it, or fix storage.bucket",
        ),
        (
            _,
            Some(
                "AuthorizationHeaderMalformed"
                | "IllegalLocationConstraintException"
                | "PermanentRedirect",
            ),
        ) => (
            format!("the region {} is not the bucket's region", sc.region),
            "set storage.region to the region the bucket lives in",
        ),
        (_, Some("RequestTimeTooSkewed")) => (
            "the clocks of this host and the store disagree".to_owned(),
            "synchronise the clocks (NTP) of this host, the store and the devices",
        ),
        (_, Some("ExpiredToken" | "TokenRefreshRequired")) => (
            "the credential had already expired when it was used".to_owned(),
            "check the clocks (NTP) and that storage.duration is longer than storage.min_remaining",
        ),
        (_, Some("InvalidAccessKeyId" | "InvalidToken")) => (
            "the store does not know this credential".to_owned(),
            "storage.endpoint may point at another store than the one the credentials are issued for",
        ),
        (_, Some("SignatureDoesNotMatch")) => (
            "the store rejected the request signature".to_owned(),
            "a proxy in front of the store may rewrite Host or the path; otherwise the secret does not match",
        ),
        (_, Some("AccessDenied")) => (
            "the credentials may not write under their own prefix".to_owned(),
            "the role or bucket policy is narrower than the session policy: allow s3:PutObject and the \
             multipart actions on bucket/prefix/*",
        ),
        _ => (
            "an unexpected answer".to_owned(),
            "see the store's message above",
        ),
    };
    format!("{said}\nlikely cause: {cause}\nfix: {fix}")
}

/// Cause and fix for a failure to obtain credentials.
pub fn gateway(e: &gateway::Error) -> String {
    let fix = match e {
        gateway::Error::InvalidWorkspace(_) => "pass --workspace with letters, digits, '-' or '_'",
        gateway::Error::DeviceNotBound { .. } => {
            "bind the device in [devices.bind] or set devices.default_workspace"
        }
        gateway::Error::Registry(crate::registry::LookupError::Unavailable { .. }) => {
            "check that this host reaches the database in devices.sql.url"
        }
        gateway::Error::Registry(crate::registry::LookupError::Unusable { .. }) => {
            "check devices.sql.query: it must return the workspace id as text"
        }
        gateway::Error::RateLimited { .. } => "wait and retry; see [limits]",
        gateway::Error::AuditUnwritten(_) => {
            "check that audit.path is writable and its disk has room"
        }
        gateway::Error::Issuer(issuer::Error::Rejected(m))
            if m.contains(issuer::aws_sts::PER_DEVICE_HINT) =>
        {
            PER_DEVICE_STATEMENT
        }
        gateway::Error::Issuer(issuer::Error::Rejected(_)) => {
            "check the role, its trust policy and the service's own keys"
        }
        gateway::Error::Issuer(issuer::Error::Throttled) => {
            "retry later; the STS quota is exhausted"
        }
        gateway::Error::Issuer(issuer::Error::Timeout(_) | issuer::Error::Unavailable(_)) => {
            "check that this host reaches the STS endpoint (network, proxy, DNS)"
        }
        gateway::Error::Issuer(issuer::Error::TooShort(_)) => {
            "check the clock (NTP) and storage.duration"
        }
        gateway::Error::Issuer(issuer::Error::Internal(_)) => {
            "check that the data dir exists and is writable"
        }
    };
    format!("{e}\nfix: {fix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_session_permission_gets_the_statement_to_paste() {
        let refused = issuer::Error::Rejected(format!(
            "AccessDenied from aws STS (request id r-1): {}",
            issuer::aws_sts::PER_DEVICE_HINT
        ));
        let said = gateway(&gateway::Error::Issuer(refused));
        assert!(
            said.contains("\"sts:SetSourceIdentity\", \"sts:TagSession\"")
                && said.contains("trust policy"),
            "{said}"
        );
        let other = gateway(&gateway::Error::Issuer(issuer::Error::Rejected(
            "AccessDenied from aws STS (request id r-2): the service may not assume the role"
                .into(),
        )));
        assert!(!other.contains("sts:TagSession"), "{other}");
    }
}
