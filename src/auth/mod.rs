//! `x-auth-token` verification and minting. Tokens are HS256 JWTs compatible with the DJI demo
//! platform: string claims `workspace_id` (required), `id`, `username`, `user_type`, the standard
//! `exp`/`nbf`/`iat`, and `iss` (checked when `auth.issuer` is configured).

mod error;
mod jwt;
mod keys;
mod secret_file;

pub use error::Error;
pub use jwt::{Claims, Pilot, Verifier, mint};
pub use keys::{NotAPublicKey, PublicKeys};
pub use secret_file::{SetupError, load_or_generate, read_secret_file};
