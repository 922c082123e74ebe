//! `Secret`: the one type that holds secret material (credential secrets, session tokens, the JWT
//! secret). Its `Debug` and `Display` print a placeholder, its memory is zeroed on drop, equality
//! is constant-time, and the value is only reachable through an explicit [`Secret::expose`].
//!
//! `Serialize` writes the placeholder too (so a printed config is safe); the wire types that must
//! carry a secret (`protocol::Credentials`) call `expose()` in their own `Serialize`.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroize;

/// A secret string. See the module documentation.
#[derive(Clone, Default)]
pub struct Secret(Box<str>);

/// What `Debug`/`Display` print instead of a secret.
pub const REDACTED: &str = "[redacted]";

/// A digest of some settings and the secrets they were resolved with: tells whether a reloaded
/// configuration changed a part (a rotated secret file included) without keeping its secrets a
/// second time. SHA-256 over each part's length and bytes, so no two lists of parts collide.
pub type Fingerprint = [u8; 32];

/// The [`Fingerprint`] of `settings` (serialised with secrets redacted) and `secrets`.
pub fn fingerprint<T: Serialize>(settings: &T, secrets: &[Option<&Secret>]) -> Fingerprint {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut part = |bytes: &[u8]| {
        context.update(&(bytes.len() as u64).to_be_bytes());
        context.update(bytes);
    };
    part(&serde_json::to_vec(settings).unwrap_or_default());
    for secret in secrets {
        match secret {
            Some(secret) => part(secret.expose().as_bytes()),
            None => part(b"\0none"),
        }
    }
    let mut out = [0; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

// === impl Secret ===

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into_boxed_str())
    }

    /// The secret value. Every call site is a place where the secret leaves this type.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for Secret {
    /// Constant-time in the length of the shorter value, so comparisons do not leak a prefix.
    fn eq(&self, other: &Self) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (x, y) in a.iter().zip(b.iter()) {
            diff |= usize::from(x ^ y);
        }
        diff == 0
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(format!("{s}"), REDACTED);
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn equality_compares_the_whole_value() {
        assert_eq!(Secret::new("abc"), Secret::new("abc"));
        assert_ne!(Secret::new("abc"), Secret::new("abd"));
        assert_ne!(Secret::new("abc"), Secret::new("abcd"));
        assert_ne!(Secret::new(""), Secret::new("a"));
    }
}
