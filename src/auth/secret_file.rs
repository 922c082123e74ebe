//! Where the JWT secret comes from: `auth.jwt_secret` (environment), `auth.jwt_secret_file`, or
//! else `{data_dir}/jwt_secret`, generated on first use and reused after, so that `stsgate token`
//! and `stsgate serve` agree without any set-up.

use std::path::{Path, PathBuf};

use crate::config::AuthConfig;
use crate::files::{create_private_dir, write_private_atomically};
use crate::random;
use crate::secret::Secret;

/// Why token verification could not be set up; each names the setting or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `auth.jwt_secret_file` unreadable or empty.
    #[error("auth.jwt_secret_file {}: {source}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data dir for the generated secret cannot be created.
    #[error("cannot create data dir {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The generated secret's file cannot be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Generated {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The operating system gave no randomness.
    #[error("no randomness from the OS: {0}")]
    Randomness(getrandom::Error),
    /// `auth.public_key_file` unreadable, or not a public key.
    #[error("auth.public_key_file {}: {reason}", path.display())]
    PublicKeyFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The HTTP client for `auth.jwks_url` cannot be built.
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(reqwest::Error),
}

/// The JWT secret, generating it into the data dir when none is configured.
pub fn load_or_generate(config: &AuthConfig, data_dir: &Path) -> Result<Secret, SetupError> {
    if let Some(secret) = &config.jwt_secret {
        return Ok(secret.clone());
    }
    if let Some(path) = &config.jwt_secret_file {
        return read_secret_file(path).map_err(|source| SetupError::SecretFile {
            path: path.clone(),
            source,
        });
    }
    let path = data_dir.join("jwt_secret");
    let generated = |action, path: &Path| {
        let path = path.to_owned();
        move |source| SetupError::Generated {
            action,
            path,
            source,
        }
    };
    match read_secret_file(&path) {
        Ok(secret) => Ok(secret),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            create_private_dir(data_dir).map_err(|source| SetupError::DataDir {
                path: data_dir.to_owned(),
                source,
            })?;
            let secret = random::string(random::BASE64, 64).map_err(SetupError::Randomness)?;
            write_private_atomically(&path, secret.as_bytes())
                .map_err(generated("write", &path))?;
            tracing::info!(path = %path.display(), "generated a new JWT secret");
            Ok(Secret::new(secret))
        }
        Err(e) => Err(generated("read", &path)(e)),
    }
}

/// Reads a secret from a file (trimmed); an empty file is an error.
pub fn read_secret_file(path: &Path) -> std::io::Result<Secret> {
    let text = std::fs::read_to_string(path)?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is empty",
        ));
    }
    Ok(Secret::new(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let a = load_or_generate(&AuthConfig::default(), &data).expect("generated");
        let b = load_or_generate(&AuthConfig::default(), &data).expect("reused");
        assert_eq!(a, b);
        assert_eq!(a.expose().len(), 64);
    }

    #[test]
    fn configured_secret_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = AuthConfig {
            jwt_secret: Some(Secret::new("CloudApiSample")),
            ..AuthConfig::default()
        };
        let s = load_or_generate(&config, dir.path()).expect("configured");
        assert_eq!(s.expose(), "CloudApiSample");
        assert!(!dir.path().join("jwt_secret").exists());
    }
}
