//! Why a token was refused. Every variant but `KeysUnavailable` is a 401 on the HTTP front: Pilot 2
//! logs the pilot out on 401, which is right for exactly these cases. `Display` never echoes the
//! token.

/// A refused token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No `x-auth-token` header.
    #[error("missing x-auth-token header")]
    Missing,
    /// Not a JWT, or not decodable.
    #[error("x-auth-token is not a valid JWT: {0}")]
    Malformed(String),
    /// Signature does not verify with the configured secret.
    #[error("x-auth-token signature does not verify (signed with another secret?)")]
    BadSignature,
    /// `exp` is in the past.
    #[error("x-auth-token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("x-auth-token is not valid yet (check the clocks)")]
    NotYetValid,
    /// `iss` differs from `auth.issuer`.
    #[error("x-auth-token was issued by another issuer")]
    WrongIssuer,
    /// A required claim is missing or has the wrong type.
    #[error("x-auth-token claims are unusable: {0}")]
    Claims(String),
    /// The token names a key the JWKS does not have.
    #[error("x-auth-token is signed with an unknown key ({0})")]
    UnknownKey(String),
    /// The identity provider's keys cannot be fetched: not the token's fault (HTTP 503, so that
    /// Pilot 2 does not log the pilot out).
    #[error("the identity provider's keys cannot be fetched right now; retry later")]
    KeysUnavailable,
    /// `aud` is not the configured audience.
    #[error("x-auth-token is for another audience")]
    WrongAudience,
    /// Signing failed (minting only).
    #[error("cannot sign a token: {0}")]
    Signing(String),
}
