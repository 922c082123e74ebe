//! Background clean-up of the embedded store: forget credentials expired for more than a day,
//! remove multipart uploads with no activity for longer than `storage.local.multipart_ttl` (their
//! parts would otherwise fill the disk, since a dock that loses power never aborts), and remove
//! the metadata files s3s-fs 0.14 leaves behind when an object is deleted.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::issuer::local::Keyring;

/// Metadata of a deleted object is only removed once it is this old, so that a sidecar written
/// just before its object lands is never mistaken for an orphan.
const SIDECAR_GRACE: Duration = Duration::from_secs(3600);

/// What one clean-up pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Expired credentials forgotten.
    pub credentials: usize,
    /// Abandoned multipart uploads removed.
    pub uploads: usize,
    /// Metadata files of deleted objects removed.
    pub sidecars: usize,
}

/// One clean-up pass.
pub fn sweep(keyring: &Keyring, root: &Path, multipart_ttl: Duration, now: SystemTime) -> Swept {
    let credentials = keyring.purge_expired(now);
    let scanned = scan(root, multipart_ttl, now).unwrap_or_else(|e| {
        tracing::warn!(root = %root.display(), error = %e, "cannot scan the embedded store");
        Scan::default()
    });
    let uploads = scanned
        .uploads
        .iter()
        .filter(|id| remove_upload(root, id))
        .count();
    let sidecars = scanned
        .sidecars
        .iter()
        .filter(|p| std::fs::remove_file(p).is_ok())
        .count();
    let swept = Swept {
        credentials,
        uploads,
        sidecars,
    };
    if swept != Swept::default() {
        tracing::info!(?swept, "embedded store clean-up");
    }
    swept
}

#[derive(Default)]
struct Scan {
    uploads: Vec<String>,
    sidecars: Vec<std::path::PathBuf>,
}

/// Runs [`sweep`] every `interval` until cancelled.
pub async fn run(
    keyring: Arc<Keyring>,
    root: std::path::PathBuf,
    multipart_ttl: Duration,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let (keyring, root) = (keyring.clone(), root.clone());
        let _ = tokio::task::spawn_blocking(move || {
            sweep(&keyring, &root, multipart_ttl, SystemTime::now())
        })
        .await;
    }
}

/// Upload ids whose last activity — the newest of their record (`.upload-{id}.json`, written by
/// s3s-fs at CreateMultipartUpload) and their parts (`.upload_id-{id}.part-{n}`) — is older than
/// the TTL, so that an upload still receiving parts is never removed mid-way; parts whose record
/// is gone (s3s-fs deletes it when it refuses a Complete) count as an upload of their own and go
/// the same way. And metadata files (`.bucket-{b64}.object-{b64}.{metadata,internal}.json`) whose
/// object no longer exists.
fn scan(root: &Path, ttl: Duration, now: SystemTime) -> std::io::Result<Scan> {
    let mut found = Scan::default();
    let mut last_activity: std::collections::HashMap<String, SystemTime> =
        std::collections::HashMap::new();
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let modified = entry.metadata()?.modified()?;
        let age = now.duration_since(modified).unwrap_or_default();
        if let Some(id) = upload_of(name) {
            let newest = last_activity.entry(id.to_owned()).or_insert(modified);
            *newest = (*newest).max(modified);
        } else if age > SIDECAR_GRACE
            && let Some((bucket, key)) = sidecar_object(name)
            && !root.join(bucket).join(key).is_file()
        {
            found.sidecars.push(entry.path());
        }
    }
    found.uploads = last_activity
        .into_iter()
        .filter(|(_, newest)| now.duration_since(*newest).unwrap_or_default() > ttl)
        .map(|(id, _)| id)
        .collect();
    Ok(found)
}

/// The upload id of an upload's record or part file.
fn upload_of(name: &str) -> Option<&str> {
    if let Some(id) = name
        .strip_prefix(".upload-")
        .and_then(|n| n.strip_suffix(".json"))
    {
        return Some(id);
    }
    let rest = name.strip_prefix(".upload_id-")?;
    rest.split_once(".part-").map(|(id, _)| id)
}

/// The (bucket, key) a metadata file belongs to; `None` for anything else, including the
/// metadata of pending multipart uploads.
fn sidecar_object(name: &str) -> Option<(String, String)> {
    use base64::Engine;
    let rest = name.strip_prefix(".bucket-")?;
    let rest = rest
        .strip_suffix(".metadata.json")
        .or_else(|| rest.strip_suffix(".internal.json"))?;
    let (bucket, key) = rest.split_once(".object-")?;
    if key.contains(".upload-") {
        return None;
    }
    let decode = |s: &str| {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .ok()?;
        String::from_utf8(bytes).ok()
    };
    Some((decode(bucket)?, decode(key)?))
}

/// Removes every file of an upload: its info, its parts and its pending metadata.
fn remove_upload(root: &Path, id: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(root) else {
        return false;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let belongs = name.to_str().is_some_and(|n| n.contains(id));
        if belongs && let Err(e) = std::fs::remove_file(entry.path()) {
            tracing::warn!(path = %entry.path().display(), error = %e, "cannot remove an abandoned upload file");
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_old_uploads_are_removed_with_all_their_files() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        let old = "11111111-1111-4111-8111-111111111111";
        let new = "22222222-2222-4222-8222-222222222222";
        for name in [
            format!(".upload-{old}.json"),
            format!(".upload_id-{old}.part-1"),
            format!(".upload_id-{old}.part-2"),
            format!(".upload-{new}.json"),
            format!(".upload_id-{new}.part-1"),
            "unrelated".to_owned(),
        ] {
            std::fs::write(root.join(name), b"x").expect("write");
        }
        let keyring = Keyring::open(&root.join("keys")).expect("keyring");
        // Pretend a day has passed for the old upload only, by moving "now" and giving the new
        // one a fresh timestamp relative to it.
        let later = SystemTime::now() + Duration::from_secs(3600);
        let new_file = std::fs::File::options()
            .write(true)
            .open(root.join(format!(".upload-{new}.json")))
            .expect("open");
        new_file.set_modified(later).expect("touch");
        let swept = sweep(&keyring, root, Duration::from_secs(1800), later);
        assert_eq!(swept.uploads, 1);
        let mut left: Vec<String> = std::fs::read_dir(root)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                format!(".upload-{new}.json"),
                format!(".upload_id-{new}.part-1"),
                "keys".to_owned(),
                "unrelated".to_owned()
            ]
        );
    }
}

#[cfg(test)]
mod activity_tests {
    use super::*;

    fn touch(path: &Path, at: SystemTime) {
        std::fs::write(path, b"x").expect("write");
        std::fs::File::options()
            .write(true)
            .open(path)
            .expect("open")
            .set_modified(at)
            .expect("touch");
    }

    /// Issue 12.2: the TTL counted from the upload's creation, so an upload still receiving parts
    /// after `multipart_ttl` was deleted mid-way; and parts whose record s3s-fs had deleted (a
    /// refused Complete) were never found.
    #[test]
    fn uploads_go_after_their_last_activity_and_orphaned_parts_go_too() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let (busy, orphan) = (
            "33333333-3333-4333-8333-333333333333",
            "44444444-4444-4444-8444-444444444444",
        );
        // Created two days ago, a part a minute ago: still in use.
        touch(&root.join(format!(".upload-{busy}.json")), now - 2 * day);
        touch(
            &root.join(format!(".upload_id-{busy}.part-1")),
            now - 2 * day,
        );
        touch(
            &root.join(format!(".upload_id-{busy}.part-2")),
            now - Duration::from_secs(60),
        );
        // Parts without a record, last written two days ago.
        touch(
            &root.join(format!(".upload_id-{orphan}.part-1")),
            now - 2 * day,
        );
        let keyring = Keyring::open(&root.join("keys")).expect("keyring");
        let swept = sweep(&keyring, root, day, now);
        assert_eq!(swept.uploads, 1);
        assert!(root.join(format!(".upload_id-{busy}.part-1")).exists());
        assert!(!root.join(format!(".upload_id-{orphan}.part-1")).exists());
    }
}

#[cfg(test)]
mod sidecar_tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn metadata_of_deleted_objects_is_removed_after_the_grace_period() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path();
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        std::fs::create_dir_all(root.join("media/ws")).expect("dirs");
        std::fs::write(root.join("media/ws/kept.jpg"), b"x").expect("object");
        let kept = format!(
            ".bucket-{}.object-{}.metadata.json",
            b64("media"),
            b64("ws/kept.jpg")
        );
        let orphan = format!(
            ".bucket-{}.object-{}.internal.json",
            b64("media"),
            b64("ws/deleted.jpg")
        );
        let pending = format!(
            ".bucket-{}.object-{}.upload-abc.metadata.json",
            b64("media"),
            b64("ws/big.mp4")
        );
        for name in [&kept, &orphan, &pending] {
            std::fs::write(root.join(name), b"{}").expect("sidecar");
        }
        let keyring = Keyring::open(&root.join("keys")).expect("keyring");
        let soon = SystemTime::now() + Duration::from_secs(60);
        assert_eq!(
            sweep(&keyring, root, Duration::from_secs(86_400), soon).sidecars,
            0,
            "within the grace period"
        );
        let later = SystemTime::now() + SIDECAR_GRACE + Duration::from_secs(60);
        assert_eq!(
            sweep(&keyring, root, Duration::from_secs(86_400), later).sidecars,
            1
        );
        assert!(
            root.join(&kept).exists()
                && root.join(&pending).exists()
                && !root.join(&orphan).exists()
        );
    }
}
