//! Who may connect to the embedded broker when `mqtt.embedded_auth` is on: the users of
//! `{data_dir}/mqtt_users.json` (user name → password), generated on first run with `stsgate`,
//! the service's own session, and `dock`, for devices. Operators add users by editing the file.

use std::collections::HashMap;
use std::path::Path;

use super::router::Users;
use crate::files::write_private_atomically;
use crate::random;
use crate::secret::Secret;

/// File name of the users inside the data dir.
pub const FILE: &str = "mqtt_users.json";
/// The user the service's own session logs in as.
pub const SERVICE_USER: &str = "stsgate";
/// The user generated for devices.
pub const DOCK_USER: &str = "dock";

/// Why the users cannot be had.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct Error {
    /// The file.
    pub path: String,
    /// What failed.
    pub reason: String,
}

/// The users in `data_dir`, generated when there are none yet (then `true`).
pub fn load_or_generate(data_dir: &Path) -> Result<(Users, bool), Error> {
    let path = data_dir.join(FILE);
    let error = |reason: String| Error {
        path: path.display().to_string(),
        reason,
    };
    let (users, generated): (HashMap<String, String>, bool) = match std::fs::read(&path) {
        Ok(bytes) => (
            serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))?,
            false,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut users = HashMap::new();
            for user in [SERVICE_USER, DOCK_USER] {
                let password = random::string(random::BASE64, 32)
                    .map_err(|e| error(format!("no randomness from the OS: {e}")))?;
                users.insert(user.to_owned(), password);
            }
            let json = serde_json::to_vec_pretty(&users).map_err(|e| error(e.to_string()))?;
            write_private_atomically(&path, &json).map_err(|e| error(e.to_string()))?;
            (users, true)
        }
        Err(e) => return Err(error(e.to_string())),
    };
    if !users.contains_key(SERVICE_USER) {
        return Err(error(format!(
            "no `{SERVICE_USER}` user, which the service's own session logs in as"
        )));
    }
    Ok((
        Users(
            users
                .into_iter()
                .map(|(user, password)| (user, Secret::new(password)))
                .collect(),
        ),
        generated,
    ))
}
