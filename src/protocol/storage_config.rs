//! `StorageConfig`: the object both fronts return (HTTP `data`, MQTT `data.output`). Field names
//! and order follow the spec examples; `expire` is the credential's remaining lifetime in seconds
//! at the moment of the reply.

use std::fmt;

use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The object storage vendor the device must talk to (`provider` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Alibaba Cloud OSS.
    Ali,
    /// Amazon S3.
    Aws,
    /// MinIO, or any S3-compatible store addressed path-style (the embedded store too).
    Minio,
}

/// Temporary credentials as devices receive them.
#[derive(Clone, Deserialize)]
pub struct Credentials {
    /// Access key id (not secret: it names the credential in logs and audit records).
    pub access_key_id: String,
    /// Secret access key.
    pub access_key_secret: Secret,
    /// Seconds the credential has left.
    pub expire: u64,
    /// Session token, sent by the device as `x-amz-security-token` / `x-oss-security-token`.
    pub security_token: Secret,
}

/// Where and with what a device uploads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StorageConfig {
    /// Bucket name.
    pub bucket: String,
    /// The temporary credentials.
    pub credentials: Credentials,
    /// The storage endpoint as the device must reach it, with scheme.
    pub endpoint: String,
    /// Object keys must start with this prefix followed by `/`.
    pub object_key_prefix: String,
    /// Vendor.
    pub provider: Provider,
    /// Region of the bucket.
    pub region: String,
}

// === impl Provider ===

impl Provider {
    /// The wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ali => "ali",
            Self::Aws => "aws",
            Self::Minio => "minio",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Credentials ===

impl Serialize for Credentials {
    /// The one place where credential secrets are written out: onto the wire, to the device.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Credentials", 4)?;
        st.serialize_field("access_key_id", &self.access_key_id)?;
        st.serialize_field("access_key_secret", self.access_key_secret.expose())?;
        st.serialize_field("expire", &self.expire)?;
        st.serialize_field("security_token", self.security_token.expose())?;
        st.end()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("access_key_secret", &self.access_key_secret)
            .field("expire", &self.expire)
            .field("security_token", &self.security_token)
            .finish()
    }
}
