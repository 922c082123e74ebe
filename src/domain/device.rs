//! Devices as principals: the identity a per-device credential carries (a profile's
//! `per_device = true`), one name for it in the object key (`{device}`), the upstream's
//! `SourceIdentity` and the session name, so that the cloud's own trail and the object keys name
//! the same device.

use std::fmt;
use std::sync::Arc;

use super::WorkspaceId;

/// The longest [`DeviceKey`]: AWS's `SourceIdentity` limit (2–64 characters).
pub const MAX_DEVICE_KEY_LEN: usize = 64;

/// Hex digits of the SHA-256 of the raw id appended to a key that had to be changed: 48 bits,
/// so two devices of one fleet (even a million) never share a key by chance.
const HASH_HEX: usize = 12;

/// A device id made safe for an object key segment, AWS's `SourceIdentity`
/// (`[\w+=,.@-]`, 2–64, not `aws:`…) and a session name (`[A-Za-z0-9.@_-]`): the id itself when
/// it already is (a DJI serial number, most user names), otherwise its safe characters cut to
/// fit, `-` and a hash of the whole id, so that two ids never share a key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DeviceKey(Arc<str>);

/// Who a per-device credential is issued to: the device, the front it came through and its
/// workspace (AWS session tags `stsgate-front` and `stsgate-workspace`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Principal {
    /// The device's key.
    pub key: DeviceKey,
    /// `mqtt` (a dock, by serial number) or `http` (a pilot, by token subject).
    pub front: &'static str,
    /// Its workspace.
    pub workspace: WorkspaceId,
}

// === impl DeviceKey ===

impl DeviceKey {
    /// The key for the device id `raw` (a gateway serial number or a token subject).
    pub fn new(raw: &str) -> Self {
        let safe = |c: char| c.is_ascii_alphanumeric() || "-_.@".contains(c);
        let as_is = (2..=MAX_DEVICE_KEY_LEN).contains(&raw.len())
            && raw.chars().all(safe)
            && raw.chars().any(|c| c.is_ascii_alphanumeric());
        if as_is {
            return Self(raw.into());
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, raw.as_bytes());
        let hash: String = digest.as_ref()[..HASH_HEX / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let readable: String = raw
            .chars()
            .map(|c| if safe(c) { c } else { '-' })
            .take(MAX_DEVICE_KEY_LEN - HASH_HEX - 1)
            .collect();
        let readable = readable.trim_matches(|c: char| !c.is_ascii_alphanumeric());
        if readable.is_empty() {
            return Self(format!("d-{hash}").into());
        }
        Self(format!("{readable}-{hash}").into())
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid(key: &str) -> bool {
        (2..=MAX_DEVICE_KEY_LEN).contains(&key.len())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
            && !key.starts_with("aws:")
            && key.chars().any(|c| c.is_ascii_alphanumeric())
    }

    #[test]
    fn serial_numbers_and_plain_names_are_their_own_key() {
        for id in ["4TADKAQ000002J", "pilot-7", "jane.doe@example.com", "ab"] {
            assert_eq!(DeviceKey::new(id).as_str(), id);
        }
    }

    #[test]
    fn any_other_id_gets_a_safe_key_that_no_other_id_shares() {
        let ids = [
            "a",
            "",
            "..",
            "../../etc",
            "jane doe",
            "jane-doe",
            "jane/doe",
            "jane\u{e9}",
            "aws:root",
            "x".repeat(64).as_str().to_owned().as_str(),
            &"x".repeat(65),
            &"x".repeat(200),
            &format!("{}y", "x".repeat(199)),
            "%00",
            "\n",
        ]
        .map(str::to_owned);
        let keys: Vec<DeviceKey> = ids.iter().map(|id| DeviceKey::new(id)).collect();
        for (id, key) in ids.iter().zip(&keys) {
            assert!(valid(key.as_str()), "{id:?} → {key:?}");
        }
        let distinct: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{keys:?}");
        assert_eq!(
            DeviceKey::new("jane doe").as_str(),
            DeviceKey::new("jane doe").as_str(),
            "stable"
        );
        assert!(DeviceKey::new("jane doe").as_str().starts_with("jane-doe-"));
    }
}
