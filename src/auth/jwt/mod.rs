//! HS256 verification and minting with `jsonwebtoken`. The algorithm is pinned, so a token whose
//! header names another algorithm is refused (no algorithm confusion).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};

use super::{Error, PublicKeys, SetupError};
use crate::config::AuthConfig;
use crate::secret::Secret;

/// The claims stsgate reads. Custom claims are strings in DJI-demo tokens; numbers are tolerated.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The workspace the token is for.
    pub workspace_id: String,
    /// User id.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<String>,
    /// User name.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub username: Option<String>,
    /// `1` web, `2` pilot.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub user_type: Option<String>,
    /// Subject.
    #[serde(
        default,
        deserialize_with = "lenient_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub sub: Option<String>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

/// Verifies `x-auth-token`s.
pub struct Verifier {
    secret: DecodingKey,
    public: PublicKeys,
    validation: Validation,
    /// Tokens verified recently: Pilot 2 sends the same token with every request, and checking
    /// its signature and claims again is most of what a cache hit costs (see BENCHMARKS.md).
    /// Shared, so that a hit copies no string. A sharded cache bounded by weight (the token's
    /// bytes and its claims) that evicts the least useful entries (S3-FIFO), where a map cleared
    /// when full re-verified every token of a fleet larger than its bound on every request.
    verified: quick_cache::sync::Cache<Box<str>, Remembered, TokenWeight>,
    /// `auth.max_token_lifetime`, in seconds.
    max_lifetime: Option<u64>,
}

/// A verified token's claims and when they were verified.
type Remembered = (Arc<Claims>, tokio::time::Instant);

/// How long a verified token is taken on trust before its signature is checked again (so that a
/// key removed from the JWKS or a rotated secret stops its tokens within this time).
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// What the verified-token memory may hold, in bytes of token plus [`CLAIMS_WEIGHT`] each: some
/// 50,000 pilots' DJI-demo tokens, 16 MiB whatever the tokens' size.
const VERIFIED_BYTES: u64 = 16 << 20;
/// What one remembered token costs beside its own bytes (its claims, the entry).
const CLAIMS_WEIGHT: u64 = 256;

/// The weight of a remembered token: its bytes and its claims'.
#[derive(Clone, Copy, Debug)]
struct TokenWeight;

impl quick_cache::Weighter<Box<str>, Remembered> for TokenWeight {
    fn weight(&self, token: &Box<str>, _: &Remembered) -> u64 {
        token.len() as u64 + CLAIMS_WEIGHT
    }
}

// === impl Claims ===

impl Claims {
    /// Who the token speaks for, for logs and audit: username, else id, else subject.
    pub fn subject(&self) -> &str {
        self.username
            .as_deref()
            .or(self.id.as_deref())
            .or(self.sub.as_deref())
            .unwrap_or("-")
    }
}

// === impl Verifier ===

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret` and, when configured, RS256/ES256 tokens
    /// signed with `auth.public_key_file`'s key or one of `auth.jwks_url`'s.
    pub fn new(secret: &Secret, config: &AuthConfig) -> Result<Self, SetupError> {
        let public = match (&config.public_key_file, &config.jwks_url) {
            (Some(path), _) => {
                let unusable = |reason: String| SetupError::PublicKeyFile {
                    path: path.clone(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| unusable(e.to_string()))?;
                PublicKeys::from_pem(&pem).map_err(|e| unusable(e.to_string()))?
            }
            (None, Some(url)) => PublicKeys::jwks(url, config.jwks_refetch_after)?,
            (None, None) => PublicKeys::None,
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
        }
        match &config.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        Ok(Self {
            secret: DecodingKey::from_secret(secret.expose().as_bytes()),
            public,
            validation,
            verified: quick_cache::sync::Cache::with_weighter(
                (VERIFIED_BYTES / (CLAIMS_WEIGHT + 256)) as usize,
                VERIFIED_BYTES,
                TokenWeight,
            ),
            max_lifetime: config.max_token_lifetime.map(|d| d.as_secs()),
        })
    }

    /// Verifies a token and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Arc<Claims>, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Missing);
        }
        if let Some(claims) = self.recently_verified(token)? {
            return Ok(claims);
        }
        // Boxed: checking a signature may fetch a key set, a future of some 1.8 KB that every
        // request's future would carry (and move) even when the token is remembered.
        let claims = Arc::new(Box::pin(self.verify_now(token)).await?);
        self.verified
            .insert(token.into(), (claims.clone(), tokio::time::Instant::now()));
        Ok(claims)
    }

    /// The claims of `token` if it was verified less than [`VERIFIED_FOR`] ago; its expiry is
    /// checked again on every use.
    fn recently_verified(&self, token: &str) -> Result<Option<Arc<Claims>>, Error> {
        let Some((claims, at)) = self.verified.get(token) else {
            return Ok(None);
        };
        if at.elapsed() >= VERIFIED_FOR {
            self.verified.remove(token);
            return Ok(None);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if claims.exp.saturating_add(self.validation.leeway) < now {
            self.verified.remove(token);
            return Err(Error::Expired);
        }
        Ok(Some(claims))
    }

    /// Checks signature and claims.
    async fn verify_now(&self, token: &str) -> Result<Claims, Error> {
        // The header is checked on its own first so that an unusable header (e.g. `alg: none`)
        // reads as a malformed token, not as bad claims.
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            ErrorKind::Json(_) => Error::Malformed("unsupported header or algorithm".to_owned()),
            other => classify(other),
        })?;
        // RFC 7515 §4.1.11: a recipient must refuse a token whose `crit` names extensions it
        // does not understand, and stsgate understands none (an empty list is invalid too).
        if let Some(crit) = &header.crit {
            return Err(Error::Malformed(format!(
                "the header marks {} parameter(s) critical (crit); none is understood here",
                crit.len()
            )));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let claims = match header.alg {
            Algorithm::HS256 => jsonwebtoken::decode::<Claims>(token, &self.secret, &validation),
            Algorithm::RS256 | Algorithm::ES256 => {
                let (key, _) = self.public.key(header.alg, header.kid.as_deref()).await?;
                jsonwebtoken::decode::<Claims>(token, &key, &validation)
            }
            other => {
                return Err(Error::Malformed(format!(
                    "algorithm {other:?} is not accepted"
                )));
            }
        };
        let claims = claims
            .map(|data| data.claims)
            .map_err(|e| classify(e.kind()))?;
        self.check_lifetime(&claims)?;
        Ok(claims)
    }

    /// Refuses a token that lives longer than `auth.max_token_lifetime`, counted from its `iat`
    /// (or from now, when it has none).
    fn check_lifetime(&self, claims: &Claims) -> Result<(), Error> {
        let Some(max) = self.max_lifetime else {
            return Ok(());
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lifetime = claims.exp.saturating_sub(claims.iat.unwrap_or(now));
        if lifetime > max.saturating_add(self.validation.leeway) {
            return Err(Error::Claims(format!(
                "the token lives {lifetime} s, longer than auth.max_token_lifetime ({max} s)"
            )));
        }
        Ok(())
    }
}

fn classify(kind: &ErrorKind) -> Error {
    match kind {
        ErrorKind::InvalidSignature => Error::BadSignature,
        ErrorKind::ExpiredSignature => Error::Expired,
        ErrorKind::ImmatureSignature => Error::NotYetValid,
        ErrorKind::InvalidIssuer => Error::WrongIssuer,
        ErrorKind::InvalidAudience => Error::WrongAudience,
        ErrorKind::MissingRequiredClaim(c) => Error::Claims(format!("missing claim `{c}`")),
        ErrorKind::InvalidClaimFormat(c) => {
            Error::Claims(format!("claim `{c}` has the wrong format"))
        }
        ErrorKind::Json(e) => Error::Claims(e.to_string()),
        ErrorKind::InvalidAlgorithm => Error::Malformed("algorithm is not HS256".to_owned()),
        ErrorKind::InvalidToken => Error::Malformed("not three dot-separated parts".to_owned()),
        ErrorKind::Base64(_) => Error::Malformed("bad base64".to_owned()),
        ErrorKind::Utf8(_) => Error::Malformed("bad UTF-8".to_owned()),
        _ => Error::Malformed("unsupported token".to_owned()),
    }
}

/// Mints a token for `workspace_id`, valid for `ttl`, in the DJI demo's claim layout.
pub fn mint(
    secret: &Secret,
    workspace_id: &str,
    username: &str,
    ttl: Duration,
    issuer: Option<&str>,
) -> Result<String, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        workspace_id: workspace_id.to_owned(),
        id: Some(username.to_owned()),
        username: Some(username.to_owned()),
        user_type: Some("2".to_owned()),
        sub: Some("stsgate".to_owned()),
        iss: issuer.map(str::to_owned),
        exp: now + ttl.as_secs(),
        nbf: Some(now),
        iat: Some(now),
    };
    let key = EncodingKey::from_secret(secret.expose().as_bytes());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
        .map_err(|e| Error::Signing(e.to_string()))
}

/// Accepts a string, a number or a boolean as a string; anything else as absent.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose {
        Text(String),
        Number(serde_json::Number),
        Bool(bool),
        Other(IgnoredAny),
    }
    Ok(match Loose::deserialize(d)? {
        Loose::Text(s) => Some(s),
        Loose::Number(n) => Some(n.to_string()),
        Loose::Bool(b) => Some(b.to_string()),
        Loose::Other(_) => None,
    })
}

#[cfg(test)]
mod tests;
