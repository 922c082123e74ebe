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

/// A [`StorageConfig`] serialised once, split around the value of `expire`: the only field that
/// changes between two answers carrying the same credential. An answer is then two copies and a
/// number instead of a serialisation that escapes every byte of the secrets again.
pub struct Rendered {
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// A rendering made on first use and shared by every answer with the same credential.
pub type RenderedOnce = std::sync::Arc<std::sync::OnceLock<Option<Rendered>>>;

// === impl Rendered ===

impl Rendered {
    /// Serialises `config` with a stand-in `expire` and splits there; `None` if the stand-in
    /// cannot be found (it always can: keys are written unescaped, values escaped).
    pub fn new(config: &StorageConfig) -> Option<Self> {
        const KEY: &[u8] = b"\"expire\":";
        let mut probe = config.clone();
        probe.credentials.expire = u64::MAX;
        let json = serde_json::to_vec(&probe).ok()?;
        let marker = [KEY, u64::MAX.to_string().as_bytes()].concat();
        let at = json.windows(marker.len()).position(|w| w == marker)?;
        let (head, rest) = json.split_at(at + KEY.len());
        Some(Self {
            head: head.to_vec(),
            tail: rest[marker.len() - KEY.len()..].to_vec(),
        })
    }

    /// How many bytes [`Rendered::write`] appends for `expire`.
    pub fn len(&self, expire: u64) -> usize {
        self.head.len() + itoa::Buffer::new().format(expire).len() + self.tail.len()
    }

    /// Appends the JSON of the configuration with `expire` to `out`.
    pub fn write(&self, expire: u64, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.head);
        let mut digits = [0_u8; 20];
        let mut at = digits.len();
        let mut n = expire;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        out.extend_from_slice(&digits[at..]);
        out.extend_from_slice(&self.tail);
    }
}

impl fmt::Debug for Rendered {
    /// The rendering holds the secrets in clear: never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Rendered(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret: &str, token: &str, prefix: &str) -> StorageConfig {
        StorageConfig {
            bucket: "media".to_owned(),
            credentials: Credentials {
                access_key_id: "ASIAEXAMPLE".to_owned(),
                access_key_secret: Secret::new(secret),
                expire: 0,
                security_token: Secret::new(token),
            },
            endpoint: "http://127.0.0.1:9000".to_owned(),
            object_key_prefix: prefix.to_owned(),
            provider: Provider::Minio,
            region: "us-east-1".to_owned(),
        }
    }

    #[test]
    fn a_rendering_writes_exactly_what_serde_writes() {
        let cases = [
            config("s3cr3t/+=", "FwoGZXIvYXdzEJr//////////wEaD", "ws-1"),
            // Values that contain the marker, quotes, escapes and non-ASCII must not confuse
            // the split.
            config(
                "\"expire\":18446744073709551615",
                "line\nbreak \u{1}\\",
                "wörkspace/\"x\"",
            ),
        ];
        for mut c in cases {
            let rendered = Rendered::new(&c).expect("rendered");
            for expire in [0, 7, 10, 3599, 43_200, u64::MAX] {
                c.credentials.expire = expire;
                let mut out = Vec::new();
                rendered.write(expire, &mut out);
                assert_eq!(rendered.len(expire), out.len(), "expire {expire}");
                assert_eq!(
                    String::from_utf8(out).expect("utf-8"),
                    serde_json::to_string(&c).expect("json"),
                );
            }
        }
    }

    #[test]
    fn a_rendering_never_shows_its_secrets() {
        let rendered = Rendered::new(&config("TOPSECRET", "TOKEN", "ws")).expect("rendered");
        assert!(!format!("{rendered:?}").contains("TOPSECRET"));
    }
}
