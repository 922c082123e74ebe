//! HS256 verification and minting with `jsonwebtoken`. The algorithm is pinned, so a token whose
//! header names another algorithm is refused (no algorithm confusion).

mod memory;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use memory::{Entry, Memory, Spans};

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

/// What a request needs of a verified token: the workspace it is for, who it speaks for, and
/// when it expires. Kept for every remembered token instead of the token and all its claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pilot {
    /// The workspace id, then the subject, in one string.
    text: String,
    /// Where the workspace id ends in `text`.
    split: u32,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
}

/// Verifies `x-auth-token`s.
pub struct Verifier {
    secret: DecodingKey,
    public: PublicKeys,
    validation: Validation,
    /// Tokens verified recently: Pilot 2 sends the same token with every request, and checking
    /// its signature and claims again is most of what a cache hit costs (see BENCHMARKS.md).
    /// A table of 16 MiB ([`memory`]) that keeps 32 bytes a token: its key, its expiry, when it
    /// was verified and where its workspace and subject are in its payload, so that a request
    /// with a remembered token decodes those few bytes of the token it brings, and neither its
    /// signature nor its claims are checked or parsed again. 200,000 pilots fit (it held 33,000
    /// of whole tokens and claims, then 200,000 in 44 MiB).
    ///
    /// Keyed by a keyed 128-bit hash of the token (SipHash-2-4 with 128-bit output, its key
    /// drawn at start and never shown), not by the token. A hit stands for "this exact token
    /// was verified" — and the spans kept are read from the token presented — so two tokens
    /// must never share a key. This decision is taken (issue 21): a keyed cryptographic hash,
    /// not a plain one. SipHash-2-4 is a pseudorandom function under its secret key (Aumasson
    /// and Bernstein, "SipHash: a fast short-input PRF"): without the key, which never leaves
    /// the process, and with no hash ever shown to a client, a token that shares another's key
    /// can only be hit on by chance — one forged request each, against 2^128 values — and a
    /// chance collision among a fleet's tokens is some 2^-90. A forged token that is not
    /// remembered is verified as ever. BLAKE3 in keyed mode, tried first, cost 2,300
    /// instructions per request for a 230-byte token (9% of a cache hit;
    /// `scripts/instructions.sh`); SipHash-2-4-128 about half as much.
    verified: Memory,
    /// The key of [`Self::verified`]'s hash.
    hash_key: [u8; 16],
    /// What [`Remembered::verified_at`] counts from.
    epoch: tokio::time::Instant,
    /// `auth.max_token_lifetime`, in seconds.
    max_lifetime: Option<u64>,
}

/// How long a verified token is taken on trust before its signature is checked again (so that a
/// key removed from the JWKS or a rotated secret stops its tokens within this time).
const VERIFIED_FOR: Duration = Duration::from_secs(60);
/// The subject of a token that names none.
const NO_SUBJECT: &str = "-";
/// The longest subject kept as it is; a longer one is cut and marked by a hash of the whole
/// ([`bounded_subject`]).
pub const MAX_SUBJECT_LEN: usize = 128;

// === impl Pilot ===

impl Pilot {
    /// The pilot of a verified token's claims, its subject bounded.
    pub fn of(claims: &Claims) -> Self {
        let subject = bounded_subject(claims.subject());
        let mut text = String::with_capacity(claims.workspace_id.len() + subject.len());
        text.push_str(&claims.workspace_id);
        text.push_str(&subject);
        Self {
            text,
            split: u32::try_from(claims.workspace_id.len()).unwrap_or(u32::MAX),
            exp: claims.exp,
        }
    }

    /// The workspace the token is for.
    pub fn workspace(&self) -> &str {
        self.text.get(..self.split as usize).unwrap_or_default()
    }

    /// Who the token speaks for, for logs, audit and rate limits ([`Claims::subject`], bounded).
    pub fn subject(&self) -> &str {
        self.text.get(self.split as usize..).unwrap_or_default()
    }
}

/// `subject` if it is at most [`MAX_SUBJECT_LEN`] bytes; else its first 96 bytes (on a
/// character boundary), `…` and the first 16 hex digits of the whole subject's SHA-256, so that
/// two long subjects stay apart in the rate limits and the audit, and an operator can match one
/// with `printf %s "$subject" | sha256sum`. The subject comes from a signed token, but it is
/// logged with every credential and kept per pilot: a platform's 10 kB user name must not be.
pub fn bounded_subject(subject: &str) -> std::borrow::Cow<'_, str> {
    if subject.len() <= MAX_SUBJECT_LEN {
        return subject.into();
    }
    let mut end = 96;
    while !subject.is_char_boundary(end) {
        end -= 1;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, subject.as_bytes());
    let hex: String = digest.as_ref()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{}…{hex}", &subject[..end]).into()
}

// === impl Claims ===

impl Claims {
    /// Who the token speaks for, for logs and audit: username, else id, else subject.
    pub fn subject(&self) -> &str {
        self.username
            .as_deref()
            .or(self.id.as_deref())
            .or(self.sub.as_deref())
            .unwrap_or(NO_SUBJECT)
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
            verified: Memory::new(VERIFIED_FOR.as_secs() as u32),
            hash_key: hash_key()?,
            epoch: tokio::time::Instant::now(),
            max_lifetime: config.max_token_lifetime.map(|d| d.as_secs()),
        })
    }

    /// Verifies a token and returns what a request needs of it.
    pub async fn verify(&self, token: &str) -> Result<Pilot, Error> {
        let token = token.trim();
        if token.is_empty() {
            return Err(Error::Missing);
        }
        let key = self.key_of(token);
        if let Some(pilot) = self.recently_verified(key, token)? {
            return Ok(pilot);
        }
        // Boxed: checking a signature may fetch a key set, a future of some 1.8 KB that every
        // request's future would carry (and move) even when the token is remembered.
        let claims = Box::pin(self.verify_now(token)).await?;
        let pilot = Pilot::of(&claims);
        let verified_at = self.seconds_since_epoch();
        let entry = Entry {
            exp: u32::try_from(claims.exp).unwrap_or(u32::MAX),
            verified_at,
            spans: spans_of(token, &pilot),
        };
        self.verified.insert(key, entry, verified_at);
        Ok(pilot)
    }

    /// The pilot of `token`, hashed to `key`, if it was verified less than [`VERIFIED_FOR`]
    /// ago; its expiry is checked again on every use.
    fn recently_verified(&self, key: u128, token: &str) -> Result<Option<Pilot>, Error> {
        let Some(entry) = self.verified.get(key) else {
            return Ok(None);
        };
        let age = self.seconds_since_epoch().saturating_sub(entry.verified_at);
        if u64::from(age) >= VERIFIED_FOR.as_secs() {
            self.verified.remove(key);
            return Ok(None);
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if u64::from(entry.exp).saturating_add(self.validation.leeway) < now {
            self.verified.remove(key);
            return Err(Error::Expired);
        }
        // (Reading what was read before cannot fail; if it did, the token is verified anew.)
        Ok(pilot_in(token, entry))
    }

    /// The memory's key for `token` (see [`Self::verified`]).
    fn key_of(&self, token: &str) -> u128 {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hasher as _;
        let mut hasher = siphasher::sip128::SipHasher24::new_with_key(&self.hash_key);
        hasher.write(token.as_bytes());
        hasher.finish128().as_u128()
    }

    /// Whole seconds since the verifier was made (a verification's age, to the second).
    fn seconds_since_epoch(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
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

/// At most `max` bytes of `text` (cut on a character boundary, marked `…`).
fn excerpt(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Where `pilot`'s workspace and subject are in `token`'s decoded payload, as [`pilot_in`]
/// reads them back: the bytes between a string value's quotes (a number's or a boolean's
/// own), where they read exactly as the claim does; else [`Spans::Parse`].
fn spans_of(token: &str, pilot: &Pilot) -> Spans {
    #[derive(Deserialize)]
    struct Raw<'a> {
        #[serde(borrow)]
        workspace_id: &'a RawValue,
        #[serde(borrow, default)]
        username: Option<&'a RawValue>,
        #[serde(borrow, default)]
        id: Option<&'a RawValue>,
        #[serde(borrow, default)]
        sub: Option<&'a RawValue>,
    }
    let Some(payload) = token.split('.').nth(1) else {
        return Spans::Parse;
    };
    let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload) else {
        return Spans::Parse;
    };
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Spans::Parse;
    };
    let Ok(raw) = serde_json::from_str::<Raw<'_>>(text) else {
        return Spans::Parse;
    };
    // The value's place in `text`, checked to read as `expected`.
    let span_of = |value: &RawValue, expected: &str| {
        let value = value.get();
        let start = (value.as_ptr() as usize).checked_sub(text.as_ptr() as usize)?;
        let (start, inner) = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            Some(inner) => (start + 1, inner),
            None => (start, value),
        };
        if text.get(start..start + inner.len()) != Some(expected) {
            return None;
        }
        Spans::span(start, inner.len())
    };
    let Some(workspace) = span_of(raw.workspace_id, pilot.workspace()) else {
        return Spans::Parse;
    };
    let subject = [raw.username, raw.id, raw.sub]
        .into_iter()
        .flatten()
        .find_map(|value| span_of(value, pilot.subject()));
    match subject {
        Some(subject) => Spans::At {
            workspace,
            subject: Some(subject),
        },
        None if pilot.subject() == NO_SUBJECT => Spans::At {
            workspace,
            subject: None,
        },
        None => Spans::Parse,
    }
}

/// The pilot of a remembered `token` from what [`spans_of`] found in it when it was verified.
fn pilot_in(token: &str, entry: Entry) -> Option<Pilot> {
    // (The payload's end is found only if a span reaches it.)
    let payload = token.get(memchr::memchr(b'.', token.as_bytes())? + 1..)?;
    let (workspace, subject) = match entry.spans {
        Spans::At { workspace, subject } => (workspace, subject),
        Spans::Parse => {
            let payload = payload.split('.').next()?;
            let claims: Claims =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
            return Some(Pilot::of(&claims));
        }
    };
    // (Room for the whole groups of three bytes that hold each.)
    let mut text =
        Vec::with_capacity(usize::from(workspace.1) + subject.map_or(1, |s| s.1.into()) + 8);
    decode_span(payload, workspace, &mut text)?;
    let split = u32::try_from(text.len()).ok()?;
    match subject {
        Some(subject) => decode_span(payload, subject, &mut text)?,
        None => text.extend_from_slice(NO_SUBJECT.as_bytes()),
    }
    Some(Pilot {
        text: String::from_utf8(text).ok()?,
        split,
        exp: entry.exp.into(),
    })
}

/// Appends the bytes `start..start + len` of the base64url payload that `payload` begins with
/// (the signature may follow it, after a dot), decoded, to `out`: only the groups of four
/// characters that hold them are decoded.
///
/// By hand rather than with the `base64` crate (which verified the token): its engine, made for
/// whole inputs, spent some 950 instructions a request on the two dozen characters of a
/// workspace and a subject (`scripts/instructions.sh`), a tenth of what the memory saves.
fn decode_span(payload: &str, (start, len): (u16, u16), out: &mut Vec<u8>) -> Option<()> {
    let (start, len) = (usize::from(start), usize::from(len));
    let (first, last) = (start / 3, (start + len).div_ceil(3));
    let chars = payload.as_bytes().get(first * 4..)?;
    let base = out.len();
    out.resize(base + (last - first) * 3, 0);
    let mut decoded = 0;
    for (chunk, bytes) in chars.chunks(4).zip(out[base..].chunks_exact_mut(3)) {
        let (group, held) = decode_group(chunk)?;
        bytes.copy_from_slice(&group);
        decoded += held;
    }
    let from = base + start % 3;
    if start % 3 + len > decoded {
        return None;
    }
    out.copy_within(from..from + len, base);
    out.truncate(base + len);
    Some(())
}

/// base64url's alphabet: each byte's value, or [`NOT_BASE64`].
const SEXTETS: [u8; 256] = {
    let mut table = [NOT_BASE64; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut i = 0;
    while i < alphabet.len() {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_BASE64: u8 = 0xFF;

/// The bytes of the first group of base64url `chars` and how many it holds (a last group of two
/// or three characters holds one or two, and is followed by a dot or nothing).
fn decode_group(chars: &[u8]) -> Option<([u8; 3], usize)> {
    let mut bits = 0_u32;
    let mut count = 0;
    for &c in chars.iter().take(4) {
        let value = SEXTETS[usize::from(c)];
        if value == NOT_BASE64 {
            break;
        }
        bits |= u32::from(value) << (18 - 6 * count);
        count += 1;
    }
    if count < 2 || (count < 4 && chars.get(count).is_some_and(|&c| c != b'.')) {
        return None;
    }
    Some((
        [(bits >> 16) as u8, (bits >> 8) as u8, bits as u8],
        count - 1,
    ))
}

/// A fresh key for the token memory's hash.
fn hash_key() -> Result<[u8; 16], SetupError> {
    let mut key = [0_u8; 16];
    getrandom::fill(&mut key).map_err(SetupError::Randomness)?;
    Ok(key)
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
        // serde quotes the offending value (a claim of a signed token: bounded all the same, as
        // it goes into the 401's body and the log).
        ErrorKind::Json(e) => Error::Claims(excerpt(&e.to_string(), 200)),
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
