//! The crash test of the embedded store (issue 12.6): the `stsgate` binary is killed with SIGKILL
//! at random moments during PutObject, UploadPart and CompleteMultipartUpload, many rounds over,
//! and restarted on the same data dir. Every time, each object is its old or its new complete
//! version, never partial, and the dock's retry with the credential it holds succeeds. At the
//! end, after a clean-up pass, nothing but objects and their metadata remains under the data dir.
//!
//! `STSGATE_CRASH_ROUNDS` sets the number of rounds (default 60, 20 per operation); the moments
//! come from a fixed seed (`STSGATE_CRASH_SEED`), so a failing round can be replayed.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use common::s3::{complete, create, failure, upload_part};
use common::s3_client;
use common::served::{Served, token};
use serde_json::Value;

const MIB: usize = 1 << 20;

/// A small deterministic generator (xorshift): reproducible moments without a dependency.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn md5_hex(data: &[u8]) -> String {
    use md5::Digest;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The dock: its credential (kept across restarts) and the store's current address.
struct Dock {
    config: Value,
}

impl Dock {
    fn s3(&self, store: &str) -> aws_sdk_s3::Client {
        let creds = &self.config["credentials"];
        s3_client(
            &format!("http://{store}"),
            creds["access_key_id"].as_str().unwrap(),
            creds["access_key_secret"].as_str().unwrap(),
            creds["security_token"].as_str(),
        )
    }
}

async fn read(s3: &aws_sdk_s3::Client, key: &str) -> Option<Vec<u8>> {
    let out = s3.get_object().bucket("media").key(key).send().await.ok()?;
    Some(out.body.collect().await.ok()?.into_bytes().to_vec())
}

async fn put(s3: &aws_sdk_s3::Client, key: &str, data: &[u8]) -> Result<(), (u16, String)> {
    s3.put_object()
        .bucket("media")
        .key(key)
        .body(ByteStream::from(data.to_vec()))
        .send()
        .await
        .map(|_| ())
        .map_err(failure)
}

struct Node {
    data: PathBuf,
    log: PathBuf,
    served: Option<Served>,
}

impl Node {
    fn start(&mut self) -> String {
        let served = Served::spawn(&self.data, &self.log, &[("RUST_LOG", "info")]);
        let store = served.store.clone().expect("an embedded store");
        self.served = Some(served);
        store
    }

    fn kill(&mut self) {
        if let Some(mut served) = self.served.take() {
            served.kill();
        }
    }

    fn admin(&self, store: &str) -> aws_sdk_s3::Client {
        let admin: Value = serde_json::from_slice(
            &std::fs::read(self.data.join(stsgate::embedded::store::ADMIN_FILE)).unwrap(),
        )
        .unwrap();
        s3_client(
            &format!("http://{store}"),
            admin["access_key_id"].as_str().unwrap(),
            admin["secret_access_key"].as_str().unwrap(),
            None,
        )
    }
}

#[tokio::test]
async fn kill_9_at_any_moment_never_leaves_a_partial_object_or_a_lost_upload() {
    let rounds: u64 = std::env::var("STSGATE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("STSGATE_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5757_4a7e);
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node {
        data: dir.path().join("data"),
        log: dir.path().join("serve.log"),
        served: None,
    };
    let mut store = node.start();
    let served = node.served.as_ref().unwrap();
    let (status, answer) = served.sts("ws-crash", &token(&node.data, "ws-crash")).await;
    assert_eq!(status, 200, "{answer}");
    let dock = Dock {
        config: answer["data"].clone(),
    };
    let prefix = dock.config["object_key_prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut moments = Moments(seed);
    let mut kills_mid_way = 0;

    for round in 0..rounds {
        let s3 = dock.s3(&store);
        let key = format!("{prefix}/round-{}.mp4", round % 7);
        let old = read(&node.admin(&store), &key).await;
        let delay = Duration::from_millis(moments.next_ms(250));
        let kind = round % 3;
        // Prepare (not killed), then the operation that the kill interrupts.
        let (operation, expected, retry): (_, Vec<u8>, Retry) = match kind {
            0 => {
                let new = body(4 * MIB + 7, round);
                let (s3, key, data) = (s3.clone(), key.clone(), new.clone());
                let op = tokio::spawn(async move { put(&s3, &key, &data).await });
                (op, new.clone(), Retry::Put(new))
            }
            1 => {
                let id = create(&s3, &key).await;
                let first = body(5 * MIB, round);
                let second = body(3 * MIB + 1, round + 1000);
                let p1 = upload_part(&s3, &key, &id, 1, &first).await.unwrap();
                let (s3c, keyc, idc, data) = (s3.clone(), key.clone(), id.clone(), second.clone());
                let op = tokio::spawn(async move {
                    upload_part(&s3c, &keyc, &idc, 2, &data).await.map(|_| ())
                });
                let whole = [first, second.clone()].concat();
                (
                    op,
                    whole,
                    Retry::Part {
                        id,
                        p1: Box::new(p1),
                        second,
                    },
                )
            }
            _ => {
                let id = create(&s3, &key).await;
                let first = body(5 * MIB, round);
                let second = body(5 * MIB + 3, round + 1000);
                let parts = vec![
                    upload_part(&s3, &key, &id, 1, &first).await.unwrap(),
                    upload_part(&s3, &key, &id, 2, &second).await.unwrap(),
                ];
                let (s3c, keyc, idc, pc) = (s3.clone(), key.clone(), id.clone(), parts.clone());
                let op =
                    tokio::spawn(async move { complete(&s3c, &keyc, &idc, &pc).await.map(|_| ()) });
                (op, [first, second].concat(), Retry::Complete { id, parts })
            }
        };
        tokio::time::sleep(delay).await;
        let finished_before_kill = operation.is_finished();
        node.kill();
        let outcome = operation.await.unwrap();
        if !finished_before_kill {
            kills_mid_way += 1;
        }

        store = node.start();
        let admin = node.admin(&store);
        let now = read(&admin, &key).await;
        let what = format!(
            "round {round} (kind {kind}, kill after {delay:?}, op {outcome:?}): {}",
            std::fs::read_to_string(&node.log)
                .unwrap_or_default()
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .join("\n")
        );
        match &now {
            None => assert!(old.is_none(), "the old object vanished: {what}"),
            Some(bytes) => assert!(
                *bytes == expected || Some(bytes) == old.as_ref(),
                "a partial or foreign object ({} bytes, md5 {}): {what}",
                bytes.len(),
                md5_hex(bytes)
            ),
        }
        // An acknowledged write is durable: the object for PutObject and Complete, the part for
        // UploadPart (the object appears only with the Complete of the retry).
        match (&outcome, &retry) {
            (Ok(()), Retry::Part { id, second, .. }) => {
                let listed = dock
                    .s3(&store)
                    .list_parts()
                    .bucket("media")
                    .key(&key)
                    .upload_id(id)
                    .send()
                    .await
                    .unwrap_or_else(|e| panic!("list parts: {e:?}; {what}"));
                let part2 = listed.parts().iter().find(|p| p.part_number() == Some(2));
                assert_eq!(
                    part2.and_then(|p| p.e_tag()).map(|e| e.trim_matches('"')),
                    Some(md5_hex(second).as_str()),
                    "an acknowledged part is durable: {what}"
                );
            }
            (Ok(()), _) => assert_eq!(
                now.as_deref().map(md5_hex),
                Some(md5_hex(&expected)),
                "an acknowledged write is durable: {what}"
            ),
            (Err(_), _) => {}
        }

        // The dock retries with the credential it holds, at the store's new address.
        let s3 = dock.s3(&store);
        match retry {
            Retry::Put(data) => put(&s3, &key, &data).await,
            Retry::Part { id, p1, second } => {
                let p2 = upload_part(&s3, &key, &id, 2, &second).await;
                match p2 {
                    Ok(p2) => complete(&s3, &key, &id, &[*p1, p2]).await.map(|_| ()),
                    Err(e) => Err(e),
                }
            }
            Retry::Complete { id, parts } => complete(&s3, &key, &id, &parts).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("the dock's retry fails: {e:?}; {what}"));
        assert_eq!(
            read(&admin, &key).await.as_deref().map(md5_hex),
            Some(md5_hex(&expected)),
            "after the retry: {what}"
        );
    }
    assert!(
        kills_mid_way >= rounds / 3,
        "too few kills landed mid-operation ({kills_mid_way} of {rounds}): the test proves little"
    );

    // Stop for good, then one clean-up pass as after the TTL: only objects and their metadata.
    node.kill();
    let root = node.data.join("objects");
    let keyring =
        stsgate::embedded::store::keyring::Keyring::open(&node.data.join("credentials")).unwrap();
    let later = std::time::SystemTime::now() + Duration::from_secs(3 * 86_400);
    stsgate::embedded::store::sweep(&keyring, &root, Duration::from_secs(86_400), later);
    let mut files = Vec::new();
    walk(&root, &mut files);
    let objects: Vec<_> = files
        .iter()
        .filter_map(|f| f.strip_prefix(root.join("media")).ok())
        .map(Path::to_path_buf)
        .collect();
    let meta: Vec<_> = files
        .iter()
        .filter_map(|f| f.strip_prefix(root.join(".meta/media")).ok())
        .map(Path::to_path_buf)
        .collect();
    assert!(!objects.is_empty());
    assert_eq!(
        objects.len() + meta.len(),
        files.len(),
        "orphans: {files:?}"
    );
    let mut sorted = (objects.clone(), meta.clone());
    sorted.0.sort();
    sorted.1.sort();
    assert_eq!(
        sorted.0, sorted.1,
        "each object has its metadata, and nothing else is left"
    );
}

enum Retry {
    Put(Vec<u8>),
    Part {
        id: String,
        p1: Box<CompletedPart>,
        second: Vec<u8>,
    },
    Complete {
        id: String,
        parts: Vec<CompletedPart>,
    },
}

/// Every file under `dir`.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}
