//! Authentication for the embedded store (s3s `S3Auth`): the secret key of an access key, so that
//! s3s can verify the SigV4 signature (header or presigned). Expired credentials are refused here
//! already, with `ExpiredToken`; the session token and scope are checked by the access policy.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use s3s::auth::{S3Auth, SecretKey};
use s3s::{S3Error, S3ErrorCode, S3Result};

use super::AdminKey;
use super::keyring::Keyring;

/// Looks access keys up in the keyring, and the administrator key.
pub struct KeyringAuth {
    keyring: Arc<Keyring>,
    admin: AdminKey,
}

// === impl KeyringAuth ===

impl KeyringAuth {
    /// Authentication over the keyring and the administrator key.
    pub fn new(keyring: Arc<Keyring>, admin: AdminKey) -> Self {
        Self { keyring, admin }
    }
}

#[async_trait]
impl S3Auth for KeyringAuth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.admin.access_key_id {
            return Ok(SecretKey::from(self.admin.secret_access_key.expose()));
        }
        let minted = self.keyring.get(access_key).ok_or_else(|| {
            S3Error::with_message(S3ErrorCode::InvalidAccessKeyId, "unknown access key")
        })?;
        if minted.expired(SystemTime::now()) {
            return Err(S3Error::with_message(
                S3ErrorCode::ExpiredToken,
                "The provided token has expired.",
            ));
        }
        Ok(SecretKey::from(minted.secret_access_key.expose()))
    }
}
