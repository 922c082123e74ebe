//! Background clean-up of the embedded store, at start and then every
//! `storage.local.cleanup_interval`:
//! - credentials expired for more than a day are forgotten (until then they read as expired);
//! - temporary areas of stores that are gone (their `flock` is free: a crash, a `kill -9`) are
//!   removed with whatever half-written bodies they hold;
//! - multipart uploads with no activity (their newest file) for longer than
//!   `storage.local.multipart_ttl` are removed, since a dock that loses power never aborts;
//!   completed uploads keep only their `completed.json` (for retries), for the same time;
//! - metadata that describes no body (the object was deleted, or a crash came between the two
//!   renames of a write) is removed once an hour old;
//! - files of the s3s-fs layout of earlier versions (`.upload-*`, `.upload_id-*`, `.bucket-*`,
//!   `.tmp.*` in the root) are removed once older than the multipart TTL.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::disk::{self, META, TMP, UPLOADS};
use super::keyring::Keyring;
use super::meta::Meta;
use super::multipart::{COMPLETED, RECORD};

/// Metadata that describe no body are only removed once they are this old, so that metadata
/// written just before its body is renamed into place are never mistaken for an orphan.
const SIDECAR_GRACE: Duration = Duration::from_secs(3600);

/// What one clean-up pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired credentials forgotten.
    pub credentials: usize,
    /// Temporary areas of stores that are gone.
    pub temporary: usize,
    /// Abandoned multipart uploads, and records of completed ones past the TTL.
    pub uploads: usize,
    /// Files of completed uploads left by a crash.
    pub leftovers: usize,
    /// Metadata files that describe no body.
    pub sidecars: usize,
    /// Files of the layout before 0.2.
    pub legacy: usize,
}

/// One clean-up pass over the store rooted at `root` (`{data_dir}/objects`).
pub fn sweep(keyring: &Keyring, root: &Path, multipart_ttl: Duration, now: SystemTime) -> Swept {
    let mut swept = Swept {
        credentials: keyring.purge_expired(now),
        ..Swept::default()
    };
    let older = |modified: SystemTime, than: Duration| {
        now.duration_since(modified).unwrap_or_default() > than
    };
    for area in children(&root.join(TMP)) {
        if disk::abandoned(&area) && std::fs::remove_dir_all(&area).is_ok() {
            swept.temporary += 1;
        }
    }
    for upload in children(&root.join(UPLOADS)) {
        let files = children(&upload);
        // The newest file; an empty directory (a removal cut short) by its own time.
        let newest = if files.is_empty() {
            upload.metadata().and_then(|m| m.modified()).ok()
        } else {
            files
                .iter()
                .filter_map(|p| p.metadata().and_then(|m| m.modified()).ok())
                .max()
        };
        let completed = files.iter().any(|p| p.ends_with(COMPLETED));
        if newest.is_some_and(|t| older(t, multipart_ttl)) {
            // The record first: from then on the upload no longer exists for any request.
            let _ = std::fs::remove_file(upload.join(RECORD));
            if std::fs::remove_dir_all(&upload).is_ok() {
                swept.uploads += 1;
            }
        } else if completed {
            for file in files.iter().filter(|p| !p.ends_with(COMPLETED)) {
                if std::fs::remove_file(file).is_ok() {
                    swept.leftovers += 1;
                }
            }
        }
    }
    swept.sidecars = sweep_meta(root, &root.join(META), "", &|t| older(t, SIDECAR_GRACE));
    for entry in children(root) {
        let Some(name) = entry.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let legacy = [".upload-", ".upload_id-", ".bucket-", ".tmp."]
            .iter()
            .any(|p| name.starts_with(p));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| older(t, multipart_ttl));
        if legacy && old && std::fs::remove_file(&entry).is_ok() {
            swept.legacy += 1;
        }
    }
    if swept != Swept::default() {
        tracing::info!(?swept, "embedded store clean-up");
    }
    swept
}

/// Removes metadata under `dir` (the tree `.meta/{rel}`) that describe no body and are old.
fn sweep_meta(root: &Path, dir: &Path, rel: &str, old: &dyn Fn(SystemTime) -> bool) -> usize {
    let mut removed = 0;
    for path in children(dir) {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let rel = if rel.is_empty() {
            name.to_owned()
        } else {
            format!("{rel}/{name}")
        };
        let Ok(stat) = path.symlink_metadata() else {
            continue;
        };
        if stat.is_dir() {
            removed += sweep_meta(root, &path, &rel, old);
            continue;
        }
        let describes_its_body = std::fs::metadata(root.join(&rel)).is_ok_and(|body| {
            std::fs::read(&path).is_ok_and(|bytes| Meta::parse_for(&bytes, &body).is_some())
        });
        if !describes_its_body
            && stat.modified().is_ok_and(old)
            && std::fs::remove_file(&path).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// The entries of a directory (none if it cannot be read).
fn children(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Runs [`sweep`] now and then every `interval` until cancelled.
pub async fn run(
    keyring: Arc<Keyring>,
    root: std::path::PathBuf,
    multipart_ttl: Duration,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        let (keyring, root) = (keyring.clone(), root.clone());
        let _ = tokio::task::spawn_blocking(move || {
            sweep(&keyring, &root, multipart_ttl, SystemTime::now())
        })
        .await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path, at: SystemTime) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("dirs");
        }
        std::fs::write(path, b"x").expect("write");
        std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open")
            .set_modified(at)
            .expect("touch");
    }

    /// Issue 12.2: the TTL counts from an upload's last activity, not its creation; abandoned
    /// uploads go whole; completed ones keep only their record of completion.
    #[test]
    fn uploads_go_after_their_last_activity() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        let store = disk::Disk::open(root).expect("open");
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let up = |id: &str| root.join(UPLOADS).join(id);
        // Created two days ago, a part a minute ago: still in use.
        touch(&up("busy").join(RECORD), now - 2 * day);
        touch(&up("busy").join("00001.aa"), now - 2 * day);
        touch(&up("busy").join("00002.bb"), now - Duration::from_secs(60));
        // Nothing for two days.
        touch(&up("idle").join(RECORD), now - 2 * day);
        touch(&up("idle").join("00001.aa"), now - 2 * day);
        // Completed an hour ago, with a part a crash left behind.
        touch(&up("done").join(COMPLETED), now - Duration::from_secs(3600));
        touch(
            &up("done").join("00001.aa"),
            now - Duration::from_secs(3600),
        );
        let keyring = Keyring::open(&root.join("keys")).expect("keyring");
        let swept = sweep(&keyring, root, day, now);
        assert_eq!((swept.uploads, swept.leftovers), (1, 1), "{swept:?}");
        assert!(up("busy").join("00001.aa").exists());
        assert!(!up("idle").exists());
        assert!(up("done").join(COMPLETED).exists() && !up("done").join("00001.aa").exists());
        // A day later the completed record goes too.
        assert_eq!(sweep(&keyring, root, day, now + 2 * day).uploads, 2);
        drop(store);
    }

    #[test]
    fn temporary_areas_go_once_their_store_is_gone() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        let keyring = Keyring::open(&root.join("keys")).expect("keyring");
        let live = disk::Disk::open(root).expect("open");
        let dead = disk::Disk::open(root).expect("open");
        let (kept, _) = live.temp().expect("temp");
        let (left, _) = dead.temp().expect("temp");
        let left_path = left.path().to_owned();
        std::mem::forget(left); // as a kill -9 would
        drop(dead);
        let swept = sweep(&keyring, root, Duration::from_secs(60), SystemTime::now());
        assert_eq!(swept.temporary, 1);
        assert!(kept.path().exists() && !left_path.exists());
    }

    #[test]
    fn metadata_of_no_body_is_removed_after_the_grace_period() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        let store = disk::Disk::open(root).expect("open");
        let keyring = Keyring::open(&root.join("keys")).expect("keyring");
        let body = store.object("media", "ws/kept.jpg");
        touch(&body, SystemTime::now());
        let meta = Meta {
            version: super::super::meta::Version::of(&std::fs::metadata(&body).expect("stat")),
            etag: "e".into(),
            ..Meta::default()
        };
        let json = serde_json::to_vec(&meta).expect("json");
        store
            .write_atomically(&store.meta("media", "ws/kept.jpg"), &json)
            .expect("meta");
        store
            .write_atomically(&store.meta("media", "ws/deleted.jpg"), &json)
            .expect("meta");
        let ttl = Duration::from_secs(86_400);
        assert_eq!(sweep(&keyring, root, ttl, SystemTime::now()).sidecars, 0);
        let later = SystemTime::now() + SIDECAR_GRACE + Duration::from_secs(60);
        assert_eq!(sweep(&keyring, root, ttl, later).sidecars, 1);
        assert!(store.meta("media", "ws/kept.jpg").exists());
        assert!(!store.meta("media", "ws/deleted.jpg").exists());
    }
}
