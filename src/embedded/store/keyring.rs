//! The embedded store's own issuer (provider `local`): [`LocalIssuer`] mints an access key,
//! secret and session token and records each credential — its scope and expiry, a [`Grant`] — in
//! the [`Keyring`], which persists one file per credential under `{data_dir}/credentials/` so
//! that a restart does not invalidate credentials already handed out. The store authenticates
//! and authorises requests against the keyring.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::domain::ProviderKind;
use crate::files::{create_private_dir, write_private_atomically};
use crate::issuer::{Credential, Error, IssueRequest, Issuer};
use crate::random;
use crate::secret::Secret;

/// Issues credentials into a [`Keyring`].
pub struct LocalIssuer {
    keyring: Arc<Keyring>,
}

/// Every credential minted and not forgotten (see [`REMEMBER_EXPIRED`]), by access key id.
#[derive(Debug)]
pub struct Keyring {
    dir: PathBuf,
    keys: RwLock<HashMap<String, Arc<Grant>>>,
}

/// A credential minted by the local issuer, with what it may do: the record the embedded store
/// authorises its requests against.
#[derive(Debug)]
pub struct Grant {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: Secret,
    /// Session token the request must carry.
    pub session_token: Secret,
    /// The only bucket it may write to.
    pub bucket: String,
    /// It may write only under `prefix/`.
    pub prefix: String,
    /// When it stops working.
    pub expiration: SystemTime,
}

/// The on-disk form of a [`Grant`] (file mode 0600 in a 0700 directory).
#[derive(Serialize, Deserialize)]
struct Record {
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    bucket: String,
    prefix: String,
    /// Seconds since the Unix epoch.
    expires_at: u64,
}

// === impl LocalIssuer ===

impl LocalIssuer {
    /// An issuer minting into `keyring`.
    pub fn new(keyring: Arc<Keyring>) -> Self {
        Self { keyring }
    }

    /// The keyring (the embedded store authenticates against it).
    pub fn keyring(&self) -> &Arc<Keyring> {
        &self.keyring
    }
}

#[async_trait]
impl Issuer for LocalIssuer {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    async fn issue(&self, request: &IssueRequest) -> Result<Credential, Error> {
        let grant = Grant::generate(request)?;
        let credential = Credential {
            access_key_id: grant.access_key_id.clone(),
            secret_access_key: grant.secret_access_key.clone(),
            session_token: grant.session_token.clone(),
            expiration: grant.expiration,
        };
        let keyring = self.keyring.clone();
        tokio::task::spawn_blocking(move || keyring.insert(grant))
            .await
            .map_err(|e| Error::Internal(format!("credential store task failed: {e}")))?
            .map_err(|e| {
                Error::Internal(format!(
                    "cannot persist the new credential in {}: {e}",
                    self.keyring.dir.display()
                ))
            })?;
        Ok(credential)
    }
}

// === impl Grant ===

impl Grant {
    fn generate(request: &IssueRequest) -> Result<Self, Error> {
        let rng = |e: getrandom::Error| Error::Internal(format!("no randomness from the OS: {e}"));
        Ok(Self {
            // The shape of AWS temporary keys: "ASIA" and 16 base32 characters.
            access_key_id: format!("ASIA{}", random::string(random::BASE32, 16).map_err(rng)?),
            secret_access_key: Secret::new(random::string(random::BASE64, 40).map_err(rng)?),
            session_token: Secret::new(random::string(random::BASE64, 128).map_err(rng)?),
            bucket: request.scope.bucket.to_string(),
            prefix: request.scope.prefix.to_string(),
            expiration: SystemTime::now() + request.duration,
        })
    }

    /// Whether the credential has expired at `now`.
    pub fn expired(&self, now: SystemTime) -> bool {
        now >= self.expiration
    }

    /// Whether the credential expired more than [`REMEMBER_EXPIRED`] before `now`, and may be
    /// forgotten.
    pub fn forgettable(&self, now: SystemTime) -> bool {
        now >= self.expiration + REMEMBER_EXPIRED
    }

    fn record(&self) -> Record {
        Record {
            access_key_id: self.access_key_id.clone(),
            secret_access_key: self.secret_access_key.expose().to_owned(),
            session_token: self.session_token.expose().to_owned(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            expires_at: self
                .expiration
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }

    fn from_record(r: Record) -> Self {
        Self {
            access_key_id: r.access_key_id,
            secret_access_key: Secret::new(r.secret_access_key),
            session_token: Secret::new(r.session_token),
            bucket: r.bucket,
            prefix: r.prefix,
            expiration: UNIX_EPOCH + Duration::from_secs(r.expires_at),
        }
    }
}

// === impl Keyring ===

impl Keyring {
    /// Opens (creating it if needed) the keyring directory and loads every unexpired credential;
    /// expired ones are deleted, unreadable ones are reported and skipped. A directory that
    /// cannot be written (read-only file system, no space, wrong owner) is refused here, at
    /// start-up, rather than by every request that needs a new credential.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        create_private_dir(dir)?;
        // (no fsync: this only asks whether the directory takes new files)
        let probe = dir.join(format!(".writable.{}", std::process::id()));
        std::fs::File::create(&probe)?;
        std::fs::remove_file(&probe)?;
        let now = SystemTime::now();
        let mut keys = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match read_record(&path) {
                Ok(m) if m.forgettable(now) => remove_quietly(&path),
                Ok(m) => {
                    keys.insert(m.access_key_id.clone(), Arc::new(m));
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable credential record")
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            keys: RwLock::new(keys),
        })
    }

    /// The credential with this access key id, if it exists (expired or not). A key not in
    /// memory is looked for on disk, so that processes sharing the data dir (`stsgate check`
    /// beside `stsgate serve`, or a restart) see each other's credentials.
    pub fn get(&self, access_key_id: &str) -> Option<Arc<Grant>> {
        if let Some(m) = self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(access_key_id)
        {
            return Some(m.clone());
        }
        if !is_access_key_id(access_key_id) {
            return None;
        }
        let grant = Arc::new(read_record(&self.record_path(access_key_id)).ok()?);
        if grant.access_key_id != access_key_id {
            return None;
        }
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        Some(
            keys.entry(access_key_id.to_owned())
                .or_insert(grant)
                .clone(),
        )
    }

    /// How many credentials are held.
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True when no credential is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets and deletes every credential that expired more than [`REMEMBER_EXPIRED`] before
    /// `now`; returns how many. (Until then a device using it is told `ExpiredToken`, which
    /// makes it ask for a new one, rather than `InvalidAccessKeyId`.)
    pub fn purge_expired(&self, now: SystemTime) -> usize {
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        let before = keys.len();
        keys.retain(|ak, m| {
            let keep = !m.forgettable(now);
            if !keep {
                remove_quietly(&self.record_path(ak));
            }
            keep
        });
        before - keys.len()
    }

    fn insert(&self, grant: Grant) -> std::io::Result<()> {
        let path = self.record_path(&grant.access_key_id);
        let json = serde_json::to_vec(&grant.record())?;
        write_private_atomically(&path, &json)?;
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        keys.insert(grant.access_key_id.clone(), Arc::new(grant));
        Ok(())
    }

    fn record_path(&self, access_key_id: &str) -> PathBuf {
        self.dir.join(format!("{access_key_id}.json"))
    }
}

/// How long an expired credential is still known (and answered `ExpiredToken`) before the
/// clean-up forgets it, in memory and on disk, across restarts.
pub const REMEMBER_EXPIRED: Duration = Duration::from_secs(24 * 3600);

/// The shape of the ids this issuer mints ("ASIA" and 16 base32 characters): anything else never
/// reaches the file system.
fn is_access_key_id(s: &str) -> bool {
    s.len() == 20 && s.starts_with("ASIA") && s.bytes().all(|b| random::BASE32.contains(&b))
}

fn read_record(path: &Path) -> std::io::Result<Grant> {
    let bytes = std::fs::read(path)?;
    let record: Record = serde_json::from_slice(&bytes)?;
    Ok(Grant::from_record(record))
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "cannot delete expired credential record");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Scope;

    fn request(prefix: &str, secs: u64) -> IssueRequest {
        IssueRequest {
            scope: Scope {
                bucket: "media".into(),
                prefix: prefix.into(),
                device: None,
            },
            duration: Duration::from_secs(secs),
        }
    }

    #[tokio::test]
    async fn minted_credentials_persist_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("credentials");
        let issuer = LocalIssuer::new(Arc::new(Keyring::open(&path).expect("open")));
        let before = SystemTime::now();
        let c = issuer.issue(&request("ws1", 3600)).await.expect("issued");
        assert!(c.access_key_id.starts_with("ASIA") && c.access_key_id.len() == 20);
        assert_eq!(c.secret_access_key.expose().len(), 40);
        let lifetime = c.expiration.duration_since(before).expect("in the future");
        assert!(lifetime <= Duration::from_secs(3601) && lifetime >= Duration::from_secs(3599));

        let reopened = Keyring::open(&path).expect("reopen");
        let m = reopened.get(&c.access_key_id).expect("persisted");
        assert_eq!(m.secret_access_key, c.secret_access_key);
        assert_eq!(m.session_token, c.session_token);
        assert_eq!((m.bucket.as_str(), m.prefix.as_str()), ("media", "ws1"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let file = path.join(format!("{}.json", c.access_key_id));
            let mode = std::fs::metadata(file).expect("file").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn expired_credentials_are_purged_and_not_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keyring = Arc::new(Keyring::open(dir.path()).expect("open"));
        let issuer = LocalIssuer::new(keyring.clone());
        let short = issuer.issue(&request("a", 0)).await.expect("issued");
        let long = issuer
            .issue(&request("b", 3 * 24 * 3600))
            .await
            .expect("issued");
        assert_eq!(keyring.len(), 2);
        // Expired, but remembered for a day: across a restart and a clean-up it still reads as
        // expired, not unknown.
        let reopened = Keyring::open(dir.path()).expect("reopen");
        assert_eq!(reopened.len(), 2, "an expired record is still loaded");
        assert_eq!(keyring.purge_expired(SystemTime::now()), 0);
        let known = keyring.get(&short.access_key_id).expect("still known");
        assert!(known.expired(SystemTime::now()));
        // A day later it is forgotten.
        let later = SystemTime::now() + REMEMBER_EXPIRED + Duration::from_secs(1);
        assert_eq!(keyring.purge_expired(later), 1);
        assert!(keyring.get(&short.access_key_id).is_none());
        assert!(keyring.get(&long.access_key_id).is_some());
        let files = std::fs::read_dir(dir.path()).expect("dir").count();
        assert_eq!(files, 1);
    }

    #[tokio::test]
    async fn credentials_minted_by_another_process_are_found_on_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let serving = Keyring::open(dir.path()).expect("open");
        let other = LocalIssuer::new(Arc::new(Keyring::open(dir.path()).expect("open")));
        let c = other.issue(&request("ws", 3600)).await.expect("issued");
        let found = serving.get(&c.access_key_id).expect("found on disk");
        assert_eq!(found.session_token, c.session_token);
        assert_eq!(serving.len(), 1, "and remembered");
        for bad in [
            "../../etc/passwd",
            "ASIA../../../../etc/x",
            "ASIAAAAAAAAAAAAAAAA1",
            "",
        ] {
            assert!(serving.get(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn corrupt_records_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ASIAX.json"), b"{not json").expect("write");
        assert!(Keyring::open(dir.path()).expect("opens anyway").is_empty());
    }
}
