//! Public keys for RS256/ES256 tokens, so that stsgate can sit behind an existing identity
//! provider: one configured PEM key (`auth.public_key_file`), or a JWKS URL (`auth.jwks_url`)
//! whose keys are cached by `kid` and fetched again when a token names a `kid` not in the cache —
//! at most once per `auth.jwks_refetch_after` (default [`crate::config::JWKS_REFETCH_AFTER`]), so that tokens with
//! made-up `kid`s cannot make us hammer the identity provider.
//!
//! Each key is pinned to one algorithm (RSA → RS256, P-256 → ES256): a token is only ever checked
//! with the algorithm its key is for.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::{Mutex, RwLock};
use tokio::time::Instant;

use super::Error;

/// After a failed fetch, the shortest interval before the next attempt: short, so that tokens
/// work again as soon as the identity provider is back, but not one fetch per request.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(1);

/// Where public keys come from.
pub enum PublicKeys {
    /// No public-key tokens accepted.
    None,
    /// One configured key.
    Static(DecodingKey, Algorithm),
    /// A JWKS endpoint.
    Jwks(Jwks),
}

/// A cached JWKS endpoint.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    last_fetch: Mutex<Option<Fetch>>,
    refetch_after: Duration,
}

/// When the JWKS was last fetched, and whether that worked.
#[derive(Clone, Copy)]
struct Fetch {
    at: Instant,
    ok: bool,
}

/// A PEM file that holds neither an RSA nor an EC P-256 public key.
#[derive(Debug, thiserror::Error)]
#[error("not a PEM RSA or EC public key")]
pub struct NotAPublicKey;

// === impl PublicKeys ===

impl PublicKeys {
    /// Reads a PEM public key (RSA or EC P-256).
    pub fn from_pem(pem: &[u8]) -> Result<Self, NotAPublicKey> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::Static(key, Algorithm::RS256));
        }
        DecodingKey::from_ec_pem(pem)
            .map(|key| Self::Static(key, Algorithm::ES256))
            .map_err(|_| NotAPublicKey)
    }

    /// A JWKS endpoint, fetched at most once per `refetch_after`; nothing is fetched until a
    /// token needs a key.
    pub fn jwks(url: &str, refetch_after: Duration) -> Result<Self, super::SetupError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(super::SetupError::HttpClient)?;
        Ok(Self::Jwks(Jwks {
            url: url.to_owned(),
            http,
            keys: RwLock::default(),
            last_fetch: Mutex::default(),
            refetch_after,
        }))
    }

    /// The key (and its algorithm) for a token with `alg` and `kid`.
    pub async fn key(
        &self,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<(DecodingKey, Algorithm), Error> {
        let (key, key_alg) = match self {
            Self::None => {
                return Err(Error::Malformed(format!(
                    "{alg:?} tokens are not accepted (no public key configured)"
                )));
            }
            Self::Static(key, key_alg) => (key.clone(), *key_alg),
            Self::Jwks(jwks) => {
                jwks.key(
                    kid.ok_or_else(|| Error::Malformed("the token names no key (kid)".to_owned()))?,
                )
                .await?
            }
        };
        if key_alg != alg {
            return Err(Error::Malformed(format!(
                "the key is for {key_alg:?}, the token says {alg:?}"
            )));
        }
        Ok((key, key_alg))
    }
}

// === impl Jwks ===

impl Jwks {
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Algorithm), Error> {
        if let Some(found) = self.keys.read().await.get(kid) {
            return Ok(found.clone());
        }
        {
            let mut last = self.last_fetch.lock().await;
            // Another request may have fetched while we waited for the lock.
            if let Some(found) = self.keys.read().await.get(kid) {
                return Ok(found.clone());
            }
            match *last {
                // The set is current and this kid is not in it: an unknown key (401).
                Some(f) if f.ok && f.at.elapsed() < self.refetch_after => {
                    return Err(Error::UnknownKey(kid.to_owned()));
                }
                // The identity provider cannot be reached: we cannot tell whether the key
                // exists, and a 401 would log the pilot out. 503 until a fetch succeeds.
                Some(f) if !f.ok && f.at.elapsed() < RETRY_FAILED_AFTER => {
                    return Err(Error::KeysUnavailable);
                }
                _ => {}
            }
            let fetched = self.fetch().await;
            *last = Some(Fetch {
                at: Instant::now(),
                ok: fetched.is_ok(),
            });
            // A failed fetch keeps the keys fetched before.
            *self.keys.write().await = fetched?;
        }
        self.keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or_else(|| Error::UnknownKey(kid.to_owned()))
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, Error> {
        let unavailable = |why: String| {
            tracing::warn!(url = %self.url, error = %why, "cannot fetch the JWKS");
            Error::KeysUnavailable
        };
        let response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unavailable(format!("HTTP {}", response.status())));
        }
        let set: JwkSet = response
            .json()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
                    Algorithm::ES256
                }
                _ => continue,
            };
            if let (Some(kid), Ok(key)) = (&jwk.common.key_id, DecodingKey::from_jwk(jwk)) {
                keys.insert(kid.clone(), (key, alg));
            }
        }
        tracing::info!(url = %self.url, keys = keys.len(), "fetched the JWKS");
        Ok(keys)
    }
}
