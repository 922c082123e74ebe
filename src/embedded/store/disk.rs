//! The store's files, and the one way anything becomes visible in them: written to a private
//! temporary file, verified, fsynced, renamed into place, and the directory fsynced. A crash at
//! any point leaves either the old file or the new one under the final name, never a mix, and
//! its leftovers only in the temporary area, which the clean-up empties.
//!
//! Layout under `{data_dir}/objects`:
//! - `{bucket}/{key}` — object bodies, as plain files (readable with any tool);
//! - `.meta/{bucket}/{key}` — each object's metadata (ETag, checksums, headers; `meta.rs`);
//! - `.uploads/{id}/` — a multipart upload: `upload.json`, parts `{n:05}.{md5}`, and after
//!   completion `completed.json` only;
//! - `.tmp/{instance}/` — temporary files of one running store, which holds an exclusive `flock`
//!   on `.tmp/{instance}/lock` while it lives, so that the clean-up knows, exactly and without
//!   timing guesses, which temporary areas belong to a process that is gone.
//!
//! Bucket names cannot begin with a dot, so none of the dot directories can be mistaken for one.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use s3s::{S3Error, S3ErrorCode};

/// Directory of object metadata.
pub const META: &str = ".meta";
/// Directory of multipart uploads.
pub const UPLOADS: &str = ".uploads";
/// Directory of the temporary areas.
pub const TMP: &str = ".tmp";
/// The lock file inside a temporary area.
pub const LOCK: &str = "lock";

/// The store's root and this process's temporary area.
#[derive(Debug)]
pub struct Disk {
    root: PathBuf,
    tmp: PathBuf,
    /// Held (with its `flock`) for as long as the store lives.
    _lock: File,
    counter: AtomicU64,
    locks: Locks,
}

/// A temporary file that is removed when dropped, unless it was published.
#[derive(Debug)]
pub struct Temp {
    path: PathBuf,
    /// False once published: nothing left to remove.
    armed: bool,
}

// === impl Disk ===

impl Disk {
    /// Opens (creating what is missing) the store under `root` and claims a temporary area.
    pub fn open(root: &Path) -> io::Result<Self> {
        for dir in [META, UPLOADS, TMP] {
            crate::files::create_private_dir(&root.join(dir))?;
        }
        let instance = crate::random::string(b"0123456789abcdef", 16).map_err(io::Error::other)?;
        let tmp = root.join(TMP).join(instance);
        crate::files::create_private_dir(&tmp)?;
        // Created, then held open read-only: a file open for writing would keep the file system
        // from being remounted read-only.
        drop(File::create(tmp.join(LOCK))?);
        let lock = File::open(tmp.join(LOCK))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive)?;
        Ok(Self {
            root: root.to_owned(),
            tmp,
            _lock: lock,
            counter: AtomicU64::new(0),
            locks: Locks::default(),
        })
    }

    /// The root (`{data_dir}/objects`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A bucket's directory.
    pub fn bucket(&self, bucket: &str) -> PathBuf {
        self.root.join(bucket)
    }

    /// The body of an object; the key must have passed [`check_key`].
    pub fn object(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(bucket).join(key)
    }

    /// The metadata of an object.
    pub fn meta(&self, bucket: &str, key: &str) -> PathBuf {
        self.root.join(META).join(bucket).join(key)
    }

    /// A multipart upload's directory; the id must have passed [`check_upload_id`].
    pub fn upload(&self, id: &str) -> PathBuf {
        self.root.join(UPLOADS).join(id)
    }

    /// A new, unique path in this process's temporary area (nothing is created).
    pub fn temp_path(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.tmp.join(format!("t{n}"))
    }

    /// Creates a new temporary file, mode 0600.
    pub fn temp(&self) -> io::Result<(Temp, File)> {
        let path = self.temp_path();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&path)?;
        Ok((Temp { path, armed: true }, file))
    }

    /// Writes `bytes` to `dest` durably and atomically (blocking).
    pub fn write_atomically(&self, dest: &Path, bytes: &[u8]) -> io::Result<()> {
        use std::io::Write;
        let (temp, mut file) = self.temp()?;
        file.write_all(bytes)?;
        file.sync_all()?;
        temp.publish(dest, &self.root)
    }

    /// An exclusive lock on `name` within this process (uploads and object keys).
    pub async fn lock(&self, name: String) -> tokio::sync::OwnedMutexGuard<()> {
        self.locks.get(name).lock_owned().await
    }
}

// === impl Temp ===

impl Temp {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames the (already fsynced) file to `dest`, creating its parent directories, and fsyncs
    /// the directories it changed, so that the rename survives a power cut. `root` bounds the
    /// directories created.
    pub fn publish(mut self, dest: &Path, root: &Path) -> io::Result<()> {
        let parent = dest.parent().unwrap_or(root);
        create_dirs_durably(parent, root)?;
        std::fs::rename(&self.path, dest)?;
        self.armed = false;
        fsync_dir(parent)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        if self.armed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Creates `dir` and its missing ancestors below `root`, fsyncing the parent of each directory
/// created.
fn create_dirs_durably(dir: &Path, root: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent()
        && parent != root
        && parent.starts_with(root)
    {
        create_dirs_durably(parent, root)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => fsync_dir(dir.parent().unwrap_or(root)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Fsyncs a directory, making the renames and creations in it durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether the temporary area `dir` belongs to a process that is gone (its lock can be taken).
/// An area without a lock file is one whose process died while creating it.
pub fn abandoned(dir: &Path) -> bool {
    match File::open(dir.join(LOCK)) {
        Ok(file) => {
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_ok()
        }
        Err(e) => e.kind() == io::ErrorKind::NotFound,
    }
}

/// Refuses keys that cannot map one-to-one onto a file path: empty, ending in `/` (directory
/// markers), with empty, `.` or `..` segments, a NUL, or a segment longer than a file name may be.
pub fn check_key(key: &str) -> Result<(), S3Error> {
    let bad = |why: &str| {
        Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            why.to_owned(),
        ))
    };
    if key.is_empty() || key.len() > 1024 {
        return Err(S3Error::with_message(
            S3ErrorCode::KeyTooLongError,
            "object keys are 1 to 1024 bytes long",
        ));
    }
    if key.ends_with('/') {
        return bad("this store keeps no directory markers (keys ending in '/')");
    }
    if key.contains('\0') {
        return bad("object keys cannot contain NUL");
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return bad("object keys cannot have empty, '.' or '..' segments");
        }
        if segment.len() > 255 {
            return Err(S3Error::with_message(
                S3ErrorCode::KeyTooLongError,
                "each '/'-separated segment of a key is at most 255 bytes here",
            ));
        }
    }
    Ok(())
}

/// Upload ids are 32 lower-case hex digits; anything else names no upload.
pub fn check_upload_id(id: &str) -> Result<(), S3Error> {
    if id.len() == 32
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(())
    } else {
        Err(S3Error::new(S3ErrorCode::NoSuchUpload))
    }
}

/// An I/O failure as an S3 error: a clear message, never a path outside the store's words.
pub fn io_error(what: &str, e: &io::Error) -> S3Error {
    let why = match e.raw_os_error() {
        Some(28) => "the store's disk is full",
        Some(30) => "the store's data directory is read-only",
        _ => "an I/O error in the store",
    };
    // An operator's to fix (a full disk, a read-only or broken data dir): ERROR.
    tracing::error!(error = %e, what, "embedded store I/O error");
    S3Error::with_message(S3ErrorCode::InternalError, format!("{what}: {why}"))
}

/// Named locks, made on demand and forgotten when nobody holds them.
#[derive(Debug, Default)]
struct Locks {
    map: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Locks {
    fn get(&self, name: String) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(lock) = map.get(&name).and_then(Weak::upgrade) {
            return lock;
        }
        if map.len() >= 1024 {
            map.retain(|_, weak| weak.strong_count() > 0);
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(name, Arc::downgrade(&lock));
        lock
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_do_not_map_onto_one_file_are_refused() {
        for good in ["a", "ws/DJI_0001.JPG", "ws/flight 1/b c.mp4", "a.b/..c"] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in ["", "a/", "/a", "a//b", "a/./b", "a/../b", "..", "a\0b"] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        assert!(check_key(&"x".repeat(256)).is_err());
        assert!(check_key(&"x".repeat(1025)).is_err());
    }

    #[test]
    fn upload_ids_are_32_lower_hex_digits() {
        assert!(check_upload_id("0123456789abcdef0123456789abcdef").is_ok());
        for bad in ["", "../x", "0123456789ABCDEF0123456789abcdef", "0123"] {
            assert!(check_upload_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_temporary_area_is_abandoned_only_once_its_store_is_gone() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = Disk::open(dir.path()).expect("open");
        let area = disk.tmp.clone();
        assert!(!abandoned(&area), "held by a live store");
        drop(disk);
        assert!(abandoned(&area), "free once the store is gone");
        let half_made = dir.path().join(TMP).join("nolock");
        std::fs::create_dir(&half_made).expect("dir");
        assert!(abandoned(&half_made));
    }

    #[test]
    fn a_dropped_temp_file_is_removed_and_a_published_one_is_in_place() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = Disk::open(dir.path()).expect("open");
        let (temp, _file) = disk.temp().expect("temp");
        let path = temp.path().to_owned();
        drop(temp);
        assert!(!path.exists());
        let dest = disk.object("media", "ws/a/b.jpg");
        disk.write_atomically(&dest, b"body").expect("write");
        assert_eq!(std::fs::read(&dest).expect("read"), b"body");
    }
}
