//! Which credential source the service uses (`storage.provider`), and which provider devices are
//! told to talk to.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::protocol::Provider;

/// Which credential source the service uses (`storage.provider`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Mint credentials locally for the embedded store.
    Local,
    /// MinIO STS (AssumeRole at the MinIO server).
    Minio,
    /// AWS STS AssumeRole.
    Aws,
    /// Alibaba Cloud STS AssumeRole.
    Ali,
}

// === impl ProviderKind ===

impl ProviderKind {
    /// The config name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Minio => "minio",
            Self::Aws => "aws",
            Self::Ali => "ali",
        }
    }

    /// The provider devices are told to talk to. The embedded store speaks S3 path-style, as
    /// MinIO does.
    pub const fn wire(self) -> Provider {
        match self {
            Self::Local | Self::Minio => Provider::Minio,
            Self::Aws => Provider::Aws,
            Self::Ali => Provider::Ali,
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `storage.provider` that names no provider.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown provider `{0}`; expected local, minio, aws or ali")]
pub struct UnknownProvider(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, UnknownProvider> {
        match s {
            "local" => Ok(Self::Local),
            "minio" => Ok(Self::Minio),
            "aws" => Ok(Self::Aws),
            "ali" => Ok(Self::Ali),
            other => Err(UnknownProvider(other.to_owned())),
        }
    }
}
