//! The credential source the configuration names: an upstream STS (`aws`, `minio`, `ali`, from
//! [`crate::issuer`]) or the embedded store's own issuer (`local`, whose keyring the store
//! authenticates against). Above both, so that neither imports the other.

use std::sync::Arc;

use crate::config::Config;
use crate::domain::ProviderKind;
use crate::embedded::store::keyring::{Keyring, LocalIssuer};
use crate::issuer::{Error, IssuerHandle, aliyun, aws_sts};

/// The configured issuer, and for `local` the keyring the embedded store authenticates against.
pub struct Source {
    /// The issuer.
    pub issuer: IssuerHandle,
    /// The keyring of minted credentials (`local` only).
    pub keyring: Option<Arc<Keyring>>,
}

/// Builds the issuer `config.storage.provider` names.
pub async fn open(config: &Config) -> Result<Source, Error> {
    match config.storage.provider {
        ProviderKind::Local => {
            let dir = config.data_dir.join("credentials");
            let keyring = Keyring::open(&dir).map_err(|e| {
                Error::Internal(format!(
                    "cannot open the credential store in {}: {e}",
                    dir.display()
                ))
            })?;
            let keyring = Arc::new(keyring);
            Ok(Source {
                issuer: IssuerHandle::new(LocalIssuer::new(keyring.clone())),
                keyring: Some(keyring),
            })
        }
        ProviderKind::Aws | ProviderKind::Minio => Ok(Source {
            issuer: IssuerHandle::new(aws_sts::AwsSts::new(&config.storage).await),
            keyring: None,
        }),
        ProviderKind::Ali => Ok(Source {
            issuer: IssuerHandle::new(aliyun::AliyunSts::new(&config.storage)?),
            keyring: None,
        }),
    }
}
