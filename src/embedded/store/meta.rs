//! What the store keeps about an object besides its bytes: ETag, checksums, and the headers it
//! was uploaded with, in `.meta/{bucket}/{key}`.
//!
//! Body and metadata are two files, renamed one after the other (metadata first), so a crash can
//! leave metadata that describes a body which never landed. Each metadata file therefore names
//! the body it describes by [`Version`] (inode, size, modification time to the nanosecond, all of
//! which a rename keeps), and is believed only when the body on disk is that one. Otherwise the
//! object reads with an ETag computed from its bytes and no stored headers: its bytes are what
//! they were, whole.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use s3s::dto;
use serde::{Deserialize, Serialize};

/// Which body a metadata file describes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
}

/// The checksums a client sent (base64, as S3 writes them) and the store verified.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc32: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc32c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    crc64nvme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

/// The headers an object was uploaded with and is served with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Headers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// `x-amz-meta-*`.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub user: HashMap<String, String>,
}

/// An object's metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The body this describes.
    pub version: Version,
    /// The ETag, without quotes.
    pub etag: String,
    /// Verified checksums of the whole object.
    #[serde(default)]
    pub checksums: Checksums,
    /// Stored headers.
    #[serde(default)]
    pub headers: Headers,
}

// === impl Version ===

impl Version {
    /// The version of the file these metadata describe.
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            ino: metadata.ino(),
            size: metadata.len(),
            mtime: metadata.mtime(),
            mtime_nsec: metadata.mtime_nsec(),
        }
    }
}

// === impl Checksums ===

impl Checksums {
    /// From s3s's form.
    pub fn from_dto(c: dto::Checksum) -> Self {
        Self {
            crc32: c.checksum_crc32,
            crc32c: c.checksum_crc32c,
            crc64nvme: c.checksum_crc64nvme,
            sha1: c.checksum_sha1,
            sha256: c.checksum_sha256,
        }
    }

    /// To s3s's form.
    pub fn to_dto(&self) -> dto::Checksum {
        dto::Checksum {
            checksum_crc32: self.crc32.clone(),
            checksum_crc32c: self.crc32c.clone(),
            checksum_crc64nvme: self.crc64nvme.clone(),
            checksum_sha1: self.sha1.clone(),
            checksum_sha256: self.sha256.clone(),
            ..Default::default()
        }
    }
}

// === impl Headers ===

impl Headers {
    /// User metadata in s3s's form (`None` when there is none).
    pub fn user_dto(&self) -> Option<dto::Metadata> {
        (!self.user.is_empty()).then(|| self.user.clone().into_iter().collect())
    }
}

// === impl Meta ===

impl Meta {
    /// The metadata in `bytes`, if they describe the body whose file metadata is `body`.
    pub fn parse_for(bytes: &[u8], body: &std::fs::Metadata) -> Option<Self> {
        let meta: Self = serde_json::from_slice(bytes).ok()?;
        (meta.version == Version::of(body)).then_some(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_believed_only_for_the_body_it_describes() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("body");
        std::fs::write(&path, b"one").expect("write");
        let meta = Meta {
            version: Version::of(&std::fs::metadata(&path).expect("stat")),
            etag: "abc".into(),
            ..Meta::default()
        };
        let bytes = serde_json::to_vec(&meta).expect("json");
        let now = std::fs::metadata(&path).expect("stat");
        assert_eq!(Meta::parse_for(&bytes, &now), Some(meta));

        // Another body renamed over it (a crash between the two renames, or a later upload).
        let other = dir.path().join("other");
        std::fs::write(&other, b"two").expect("write");
        std::fs::rename(&other, &path).expect("rename");
        let replaced = std::fs::metadata(&path).expect("stat");
        assert_eq!(Meta::parse_for(&bytes, &replaced), None);
        assert_eq!(Meta::parse_for(b"not json", &replaced), None);
    }
}
