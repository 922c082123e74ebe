//! Credential issuers: the [`Issuer`] trait every credential source implements (one call = one
//! upstream STS request for one scope), and the upstream ones (AWS or MinIO STS, Alibaba Cloud
//! STS). The embedded store's own issuer lives with the store; the top-level `source` module
//! builds the one the configuration names. Caching and single-flight are the cache's job, not
//! the issuer's.

pub mod aliyun;
pub mod aws_sts;
pub mod policy;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::domain::ProviderKind;
use crate::domain::Scope;
use crate::protocol::Provider;
use crate::secret::Secret;

/// A temporary credential as an upstream returned it.
#[derive(Clone, Debug)]
pub struct Credential {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token.
    pub session_token: Secret,
    /// When it stops working (wall clock, as the upstream says).
    pub expiration: SystemTime,
}

/// One request for a credential.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// What the credential may write.
    pub scope: Scope,
    /// Requested lifetime.
    pub duration: Duration,
}

/// Why an issuer failed. Cloned to every request waiting on the same upstream call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The upstream refused (access denied, bad role, bad parameter).
    #[error("upstream STS refused the request: {0}")]
    Rejected(String),
    /// The upstream is throttling us.
    #[error("upstream STS is throttling requests; retry later")]
    Throttled,
    /// No answer in time.
    #[error("upstream STS did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Network failure or 5xx.
    #[error("upstream STS is unavailable: {0}")]
    Unavailable(String),
    /// The credential returned would expire before it could be used.
    #[error("upstream STS returned a credential that expires in {}s, too soon to hand out (check the clock and storage.duration)", .0.as_secs())]
    TooShort(Duration),
    /// A local failure (e.g. the data dir is not writable).
    #[error("internal error: {0}")]
    Internal(String),
}

/// A credential source.
#[async_trait]
pub trait Issuer: Send + Sync + 'static {
    /// Which source this is.
    fn kind(&self) -> ProviderKind;
    /// Issues one credential for `request.scope`, valid for `request.duration`.
    async fn issue(&self, request: &IssueRequest) -> Result<Credential, Error>;
}

/// A shared handle to the configured issuer.
#[derive(Clone)]
pub struct IssuerHandle(Arc<dyn Issuer>);

// === impl Error ===

impl Error {
    /// The error with the keys it names (`storage.role_arn`) as the keys of the profile whose
    /// section is `section` (`profiles.eu.role_arn`): each issuer's hints are written once, for
    /// `[storage]`.
    pub fn in_section(self, section: &str) -> Self {
        match self {
            Self::Rejected(m) if section != "storage" => {
                Self::Rejected(m.replace("storage.", &format!("{section}.")))
            }
            other => other,
        }
    }

    /// A short stable label for metrics.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::Rejected(_) => "rejected",
            Self::Throttled => "throttled",
            Self::Timeout(_) => "timeout",
            Self::Unavailable(_) => "unavailable",
            Self::TooShort(_) => "too_short",
            Self::Internal(_) => "internal",
        }
    }
}

// === impl IssuerHandle ===

impl IssuerHandle {
    /// Wraps an issuer.
    pub fn new(issuer: impl Issuer) -> Self {
        Self(Arc::new(issuer))
    }

    /// Which source this is.
    pub fn kind(&self) -> ProviderKind {
        self.0.kind()
    }

    /// The provider devices are told to talk to.
    pub fn provider(&self) -> Provider {
        self.0.kind().wire()
    }

    /// Issues one credential.
    pub async fn issue(&self, request: &IssueRequest) -> Result<Credential, Error> {
        self.0.issue(request).await
    }
}
