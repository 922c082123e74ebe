//! The data dir on a small tmpfs: a full disk and a read-only file system. Uploads that cannot be
//! written fail with an S3 error and leave nothing behind, credentials that cannot be persisted
//! are refused (never handed out unverifiable), what was stored stays readable, and the service
//! recovers by itself once there is room again.
//!
//! Mounting needs root (or CAP_SYS_ADMIN). Without it these tests say so and pass, unless
//! `TMPFS_TESTS=1` (set by `scripts/test.sh` when it runs as root) demands them.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use common::{ANSWER, Options, TestService, device_s3, storage_config_get};
use serde_json::Value;

/// A tmpfs of `size` mounted in a temp dir for the life of the value.
struct Mount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mount {
    /// Mounts, or returns `None` (after saying why) when this process may not mount.
    fn tmpfs(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("data");
        std::fs::create_dir_all(&path).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self { path, _dir: dir }),
            other => {
                let why = match other {
                    Ok(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                assert!(
                    std::env::var_os("TMPFS_TESTS").is_none(),
                    "TMPFS_TESTS is set but mounting a tmpfs failed: {why}"
                );
                eprintln!("skipped: cannot mount a tmpfs here ({why})");
                None
            }
        }
    }

    fn remount(&self, mode: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.path)
            .status()
            .expect("mount");
        assert!(status.success(), "remount {mode}");
    }
}

impl Drop for Mount {
    // (runs before the temp dir's own clean-up: fields drop after this)
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A service whose data dir is a fresh tmpfs of `size`.
async fn on_tmpfs(size: &str) -> Option<(TestService, Mount)> {
    let mount = Mount::tmpfs(size)?;
    let svc = Options::default().data_dir(&mount.path).start().await;
    Some((svc, mount))
}

/// Fills the file system holding `dir` to the last byte; returns the filler to delete later.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0_u8; 64 * 1024];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling the disk: {e}"),
        }
    }
    // The last bytes of a partly written chunk.
    while file.write(&[0_u8; 512]).map(|n| n > 0).unwrap_or(false) {}
    path
}

async fn put(client: &aws_sdk_s3::Client, key: &str, body: Vec<u8>) -> Result<(), (u16, String)> {
    client
        .put_object()
        .bucket("media")
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| {
            let status = e.raw_response().map_or(0, |r| r.status().as_u16());
            (status, e.code().unwrap_or("(no code)").to_owned())
        })
}

/// Object keys under `prefix` as the administrator lists them.
async fn keys(svc: &TestService, prefix: &str) -> Vec<String> {
    let out = svc
        .admin_s3()
        .list_objects_v2()
        .bucket("media")
        .prefix(prefix)
        .send()
        .await
        .expect("list");
    out.contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_owned))
        .collect()
}

/// Temporary files the store left in its root.
fn leftovers(svc: &TestService) -> Vec<String> {
    let root = svc.service.store.as_ref().unwrap().root.clone();
    common::store_temp_files(&root)
}

/// An HTTP answer that is an explicit failure: non-200, non-zero code, a message, no credentials.
fn assert_refused(status: reqwest::StatusCode, body: &Value, why: &str) {
    assert!(status.is_server_error(), "{why}: {status} {body}");
    assert_ne!(body["code"], 0, "{why}: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{why}: {body}"
    );
    assert!(
        body["data"].get("credentials").is_none(),
        "{why}: no credentials in a failure: {body}"
    );
}

fn prefix(config: &Value) -> String {
    config["object_key_prefix"]
        .as_str()
        .expect("prefix")
        .to_owned()
}

#[tokio::test]
async fn a_full_disk_fails_uploads_and_new_credentials_cleanly_then_recovers() {
    let Some((svc, mount)) = on_tmpfs("12m").await else {
        return;
    };
    let (status, body) = svc.sts("ws-full", Some(&svc.token("ws-full"))).await;
    assert_eq!(status, 200, "{body}");
    let config = body["data"].clone();
    let s3 = device_s3(&config);
    let dir = prefix(&config);
    let small: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    put(&s3, &format!("{dir}/small.jpg"), small.clone())
        .await
        .expect("a small photo fits");

    // Larger than the whole disk: the write runs out of space part-way.
    let err = put(&s3, &format!("{dir}/big.mp4"), vec![7_u8; 16 * 1024 * 1024])
        .await
        .expect_err("no room for 16 MiB");
    assert!(err.0 >= 500, "a server-side S3 error, got {err:?}");
    assert_eq!(
        keys(&svc, &format!("{dir}/")).await,
        vec![format!("{dir}/small.jpg")],
        "no partial object listed"
    );
    assert!(leftovers(&svc).is_empty(), "{:?}", leftovers(&svc));
    assert!(
        svc.read_object(&format!("{dir}/small.jpg"))
            .await
            .as_deref()
            == Some(small.as_slice()),
        "what was stored is intact"
    );

    // Now not a byte left.
    let filler = fill(&mount.path);
    let err = put(&s3, &format!("{dir}/late.jpg"), vec![1_u8; 256 * 1024])
        .await
        .expect_err("disk full");
    assert!(err.0 >= 500, "{err:?}");
    // A credential the store could not persist would be refused by the store: so none is issued.
    let (status, body) = svc.sts("ws-new", Some(&svc.token("ws-new"))).await;
    assert_refused(status, &body, "new credentials on a full disk");
    assert_eq!(body["code"], 10500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("No space left on device")),
        "{body}"
    );
    let mut dock = svc.dock("DOCKFULL1").await;
    let reply = dock
        .request(&storage_config_get("full-1", "1700000000000"))
        .await;
    assert_eq!(reply["data"]["result"], 10500, "{reply}");
    assert!(
        reply["data"]
            .get("output")
            .is_none_or(|o| o.get("credentials").is_none()),
        "no credentials to the dock: {reply}"
    );
    let (status, _) = svc.get("/healthz").await;
    assert_eq!(status, 200, "the service lives on");
    assert!(
        svc.read_object(&format!("{dir}/small.jpg"))
            .await
            .as_deref()
            == Some(small.as_slice()),
        "still readable on a full disk"
    );

    // Room again: everything works without a restart, once the failure's back-off
    // (`storage.failure_backoff`, 2 s) has passed.
    std::fs::remove_file(&filler).expect("free the disk");
    let started = tokio::time::Instant::now();
    loop {
        let (status, body) = svc.sts("ws-new", Some(&svc.token("ws-new"))).await;
        if status == 200 {
            break;
        }
        assert_refused(status, &body, "still backing off");
        assert!(started.elapsed() < ANSWER, "recovered in time: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let mut tid = 2;
    loop {
        let reply = dock
            .request(&storage_config_get(&format!("full-{tid}"), "1700000000001"))
            .await;
        if reply["data"]["result"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < ANSWER,
            "the dock is served again: {reply}"
        );
        tid += 1;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    put(&s3, &format!("{dir}/late.jpg"), vec![1_u8; 256 * 1024])
        .await
        .expect("uploads work again");
    assert!(leftovers(&svc).is_empty(), "{:?}", leftovers(&svc));
    svc.service.stop().await;
    drop(mount);
}

#[tokio::test]
async fn a_read_only_data_dir_fails_writes_cleanly_and_refuses_to_start() {
    let Some((svc, mount)) = on_tmpfs("16m").await else {
        return;
    };
    let (status, body) = svc.sts("ws-ro", Some(&svc.token("ws-ro"))).await;
    assert_eq!(status, 200, "{body}");
    let config = body["data"].clone();
    let s3 = device_s3(&config);
    let dir = prefix(&config);
    put(&s3, &format!("{dir}/before.jpg"), b"stored before".to_vec())
        .await
        .expect("writable at first");

    mount.remount("ro");
    let err = put(&s3, &format!("{dir}/after.jpg"), b"no".to_vec())
        .await
        .expect_err("read-only");
    assert!(err.0 >= 500, "{err:?}");
    let (status, body) = svc.sts("ws-ro-new", Some(&svc.token("ws-ro-new"))).await;
    assert_refused(status, &body, "new credentials on a read-only data dir");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("persist")),
        "the message says what failed: {body}"
    );
    // The cached credential of ws-ro is still valid and still served.
    let (status, again) = svc.sts("ws-ro", Some(&svc.token("ws-ro"))).await;
    assert_eq!(status, 200, "{again}");
    assert!(
        svc.read_object(&format!("{dir}/before.jpg"))
            .await
            .as_deref()
            == Some(&b"stored before"[..]),
        "objects stay readable"
    );
    assert_eq!(
        keys(&svc, &format!("{dir}/")).await,
        vec![format!("{dir}/before.jpg")]
    );

    // A second service on the read-only data dir refuses to start, naming the problem.
    svc.service.stop().await;
    let err = Options::default()
        .data_dir(&mount.path)
        .try_start()
        .await
        .err()
        .expect("refused to start on a read-only data dir");
    assert!(
        err.contains("Read-only file system") && err.contains(&mount.path.display().to_string()),
        "{err}"
    );

    // Writable again: the same data dir starts, serves what it had and takes uploads.
    mount.remount("rw");
    let svc = Options::default().data_dir(&mount.path).start().await;
    let (status, body) = svc.sts("ws-ro", Some(&svc.token("ws-ro"))).await;
    assert_eq!(status, 200, "{body}");
    let s3 = device_s3(&body["data"]);
    put(&s3, &format!("{dir}/after.jpg"), b"yes".to_vec())
        .await
        .expect("writable again");
    assert_eq!(
        keys(&svc, &format!("{dir}/")).await,
        vec![format!("{dir}/after.jpg"), format!("{dir}/before.jpg")]
    );
    svc.service.stop().await;
}
