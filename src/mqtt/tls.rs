//! TLS to the broker (`mqtts://`): rustls with the aws-lc-rs provider, the CA from `mqtt.ca_file`
//! (else the system's roots), and an optional client certificate for brokers that require one.
//! The broker's certificate must name the host in `mqtt.url` (a DNS name or an IP address).

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::MqttConfig;

/// The client configuration for `mqtts://`, or a message naming the key at fault.
pub fn client_config(m: &MqttConfig) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    match &m.ca_file {
        Some(path) => {
            for cert in certificates(path).map_err(|e| format!("mqtt.ca_file {e}"))? {
                roots
                    .add(cert)
                    .map_err(|e| format!("mqtt.ca_file {}: {e}", path.display()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system store may hold certificates rustls cannot use; skip those.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err(
                    "mqtt.url is mqtts:// but the system has no CA certificates; set mqtt.ca_file"
                        .to_owned(),
                );
            }
        }
    }
    let builder = ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("mqtt TLS: {e}"))?
    .with_root_certificates(roots);
    let config = match (&m.client_cert_file, &m.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cert).map_err(|e| format!("mqtt.client_cert_file {e}"))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "mqtt.client_key_file {}: no usable private key ({e})",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("mqtt.client_cert_file / mqtt.client_key_file: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file; at least one.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
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
        let e = client_config(&m).unwrap_err();
        assert!(
            e.starts_with("mqtt.ca_file") && e.contains("no PEM certificate"),
            "{e}"
        );
        m.ca_file = Some(dir.path().join("missing.pem"));
        let e = client_config(&m).unwrap_err();
        assert!(
            e.starts_with("mqtt.ca_file") && e.contains("missing.pem"),
            "{e}"
        );
    }
}
