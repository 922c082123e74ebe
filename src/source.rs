//! The credential sources the configuration names, one per storage profile: an upstream STS
//! (`aws`, `minio`, `ali`, from [`crate::issuer`]) or the embedded store's own issuer (`local`,
//! whose keyring the store authenticates against; at most one profile is local). Above both, so
//! that neither imports the other.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{Config, StorageProfile};
use crate::domain::ProviderKind;
use crate::embedded::store::keyring::{Keyring, LocalIssuer};
use crate::gateway::Sourced;
use crate::issuer::{IssuerHandle, aliyun, aws_sts};
use crate::secret::Fingerprint;

/// Every profile's issuer, and for the `local` one the keyring the embedded store
/// authenticates against.
pub struct Source {
    /// Each profile's issuer, by profile name (`default` is `[storage]`).
    pub issuers: BTreeMap<String, Sourced>,
    /// The keyring of minted credentials (when a profile is `local`).
    pub keyring: Option<Arc<Keyring>>,
}

/// Why a profile's issuer could not be built; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The issuer refused its settings.
    #[error("{section}: {source}")]
    Issuer {
        /// `storage` or `profiles.<name>`.
        section: String,
        /// Why.
        source: crate::issuer::Error,
    },
    /// A profile's `secret_access_key_file` cannot be read.
    #[error("{section}.secret_access_key_file {}: {source}", path.display())]
    SecretFile {
        /// `storage` or `profiles.<name>`.
        section: String,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Builds the issuer of every profile the configuration names.
pub async fn open(config: &Config) -> Result<Source, Error> {
    let mut issuers = BTreeMap::new();
    let mut keyring = None;
    for (name, profile) in config.all_profiles() {
        let resolved = resolve(name, profile)?;
        let issuer = open_profile(config, &resolved, &mut keyring).await?;
        issuers.insert(name.to_owned(), issuer);
    }
    Ok(Source { issuers, keyring })
}

/// A profile with its secret read from `secret_access_key_file`, and the fingerprint of both.
pub struct Resolved {
    /// `storage` or `profiles.<name>`.
    section: String,
    /// The settings, the secret in `secret_access_key`.
    profile: StorageProfile,
    /// The digest of both (a reload that finds it unchanged keeps the profile).
    pub fingerprint: Fingerprint,
}

/// Profile `name` with its secret file read.
pub fn resolve(name: &str, profile: &StorageProfile) -> Result<Resolved, Error> {
    let section = Config::section_of(name);
    let profile = with_secret(&section, profile)?;
    // The embedded store's own settings (`[storage.local]`) are no part of a profile: they are
    // read at start only, and the address bound is filled in after it.
    let mut identity = profile.clone();
    identity.local = Default::default();
    let fingerprint = crate::secret::fingerprint(&identity, &[profile.secret_access_key.as_ref()]);
    Ok(Resolved {
        section,
        profile,
        fingerprint,
    })
}

/// Builds the issuer of one resolved profile; a `local` one opens the keyring into `keyring`
/// (or shares the one there).
pub async fn open_profile(
    config: &Config,
    resolved: &Resolved,
    keyring: &mut Option<Arc<Keyring>>,
) -> Result<Sourced, Error> {
    let (section, profile) = (&resolved.section, &resolved.profile);
    let issuer_error = |source| Error::Issuer {
        section: section.clone(),
        source,
    };
    let issuer = match profile.provider {
        ProviderKind::Local => {
            let keyring = match keyring {
                Some(keyring) => keyring.clone(),
                None => {
                    let dir = config.data_dir.join("credentials");
                    let opened = Keyring::open(&dir).map_err(|e| {
                        issuer_error(crate::issuer::Error::Internal(format!(
                            "cannot open the credential store in {}: {e}",
                            dir.display()
                        )))
                    })?;
                    keyring.insert(Arc::new(opened)).clone()
                }
            };
            IssuerHandle::new(LocalIssuer::new(keyring))
        }
        ProviderKind::Aws | ProviderKind::Minio => {
            IssuerHandle::new(aws_sts::AwsSts::new(profile, section).await)
        }
        ProviderKind::Ali => {
            IssuerHandle::new(aliyun::AliyunSts::new(profile, section).map_err(issuer_error)?)
        }
    };
    Ok(Sourced {
        issuer,
        fingerprint: resolved.fingerprint,
    })
}

/// The profile with its `secret_access_key_file` read into `secret_access_key`.
fn with_secret(section: &str, profile: &StorageProfile) -> Result<StorageProfile, Error> {
    let mut profile = profile.clone();
    if let Some(path) = &profile.secret_access_key_file {
        let secret = crate::auth::read_secret_file(path).map_err(|source| Error::SecretFile {
            section: section.to_owned(),
            path: path.clone(),
            source,
        })?;
        profile.secret_access_key = Some(secret);
    }
    Ok(profile)
}
