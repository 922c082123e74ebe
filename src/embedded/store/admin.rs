//! The administrator key pair of the embedded store: full access, so operators can list, read and
//! delete what devices uploaded. Configured (`storage.local.admin_access_key` and
//! `STSGATE_STORAGE__LOCAL__ADMIN_SECRET_KEY`), or generated into `{data_dir}/store_admin.json` on
//! first run and reused after.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::LocalStoreConfig;
use crate::files::write_private_atomically;
use crate::random;
use crate::secret::Secret;

/// The administrator key pair.
#[derive(Clone)]
pub struct AdminKey {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
}

#[derive(Serialize, Deserialize)]
struct Record {
    access_key_id: String,
    secret_access_key: String,
}

/// File name of the generated key pair inside the data dir.
pub const FILE: &str = "store_admin.json";

// === impl AdminKey ===

impl AdminKey {
    /// The configured key, the one generated earlier, or a new one (then `true`).
    pub fn load_or_generate(
        config: &LocalStoreConfig,
        data_dir: &Path,
    ) -> Result<(Self, bool), String> {
        if let (Some(id), Some(secret)) = (&config.admin_access_key, &config.admin_secret_key) {
            return Ok((
                Self {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                },
                false,
            ));
        }
        let path = data_dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let r: Record = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((
                    Self {
                        access_key_id: r.access_key_id,
                        secret_access_key: Secret::new(r.secret_access_key),
                    },
                    false,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let rng = |e: getrandom::Error| format!("no randomness from the OS: {e}");
                let key = Self {
                    access_key_id: format!(
                        "STSGATEADMIN{}",
                        random::string(random::BASE32, 8).map_err(rng)?
                    ),
                    secret_access_key: Secret::new(
                        random::string(random::BASE64, 40).map_err(rng)?,
                    ),
                };
                let record = Record {
                    access_key_id: key.access_key_id.clone(),
                    secret_access_key: key.secret_access_key.expose().to_owned(),
                };
                let json = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
                write_private_atomically(&path, &json)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                Ok((key, true))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }
}

impl fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminKey")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .finish()
    }
}
