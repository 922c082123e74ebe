//! TLS to the broker (`mqtts://`): rustls with the aws-lc-rs provider, the CA from `mqtt.ca_file`
//! (else the system's roots), and an optional client certificate for brokers that require one.
//! The broker's certificate must name the host in `mqtt.url` (a DNS name or an IP address).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttConfig;

/// Why the TLS client configuration could not be built; each names the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `mqtt.ca_file` unreadable or without certificates.
    #[error("mqtt.ca_file {0}")]
    CaFile(CertFileError),
    /// A certificate of `mqtt.ca_file` rustls cannot use.
    #[error("mqtt.ca_file {}: {source}", path.display())]
    CaCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// No `mqtt.ca_file` and no system roots.
    #[error("mqtt.url is mqtts:// but the system has no CA certificates; set mqtt.ca_file")]
    NoSystemRoots,
    /// The TLS provider refused its protocol versions.
    #[error("mqtt TLS: {0}")]
    Protocols(rustls::Error),
    /// `mqtt.client_cert_file` unreadable or without certificates.
    #[error("mqtt.client_cert_file {0}")]
    ClientCertFile(CertFileError),
    /// `mqtt.client_key_file` without a usable key.
    #[error("mqtt.client_key_file {}: no usable private key ({source})", path.display())]
    ClientKey {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// The certificate and key do not go together.
    #[error("mqtt.client_cert_file / mqtt.client_key_file: {0}")]
    ClientAuth(rustls::Error),
}

/// A PEM certificate file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CertFileError {
    /// Unreadable, or not PEM.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// No certificate in it.
    #[error("{}: no PEM certificate in the file", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// The client configuration for `mqtts://`, or why not, naming the key at fault.
pub fn client_config(m: &MqttConfig) -> Result<Arc<ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    match &m.ca_file {
        Some(path) => {
            for cert in certificates(path).map_err(Error::CaFile)? {
                roots.add(cert).map_err(|source| Error::CaCertificate {
                    path: path.clone(),
                    source,
                })?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system store may hold certificates rustls cannot use; skip those.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(Error::NoSystemRoots);
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(Error::Protocols)?
    .with_root_certificates(roots);
    let config = match (&m.client_cert_file, &m.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert).map_err(Error::ClientCertFile)?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|source| Error::ClientKey {
                path: key.clone(),
                source,
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(Error::ClientAuth)?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertFileError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|source| CertFileError::Read {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CertFileError::Empty {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_or_empty_files_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let mut m = MqttConfig {
            ca_file: Some(empty),
            ..MqttConfig::default()
        };
        let e = client_config(&m).unwrap_err().to_string();
        assert!(
            e.starts_with("mqtt.ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
        m.ca_file = Some(dir.path().join("missing.pem"));
        let e = client_config(&m).unwrap_err().to_string();
        assert!(
            e.starts_with("mqtt.ca_file") && e.contains("missing.pem"),
            "{e}"
        );
    }
}
