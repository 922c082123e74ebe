//! Embedded store: a multipart upload with the credentials a device is issued, against writing
//! the same number of bytes straight to a file on the same file system, in the same run.

use std::io::Write;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use stsgate::domain::WorkspaceId;

use crate::Scale;

const PART: usize = 64 << 20;

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

/// Alternating rounds (raw write, then upload), so that the page cache and the disk's write-back
/// state, which vary a lot from second to second on a VM, weigh on both sides alike.
const ROUNDS: usize = 3;

pub async fn run(scale: &Scale) -> Vec<String> {
    let service = crate::start(&[]).await;
    let store = service.service.store.as_ref().expect("embedded store");
    let root = store.root.clone();
    let part_size = PART.min(usize::try_from(scale.upload_bytes).expect("size") / 2);
    // Incompressible-looking bytes, made once.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let chunk: Bytes = (0..part_size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect::<Vec<u8>>()
        .into();
    let parts = usize::try_from(scale.upload_bytes).expect("size") / part_size;
    let total = (parts * part_size) as u64;

    let issued = service
        .service
        .gateway
        .for_workspace(WorkspaceId::parse("bench-store").expect("ws"))
        .await
        .expect("credentials");
    let c = &issued.config();
    let s3 = stsgate::check::s3_client(
        &c.endpoint,
        &c.region,
        true,
        &c.credentials.access_key_id,
        c.credentials.access_key_secret.expose(),
        Some(c.credentials.security_token.expose()),
    );
    let rounds = if scale.upload_bytes >= 1 << 30 {
        ROUNDS
    } else {
        1
    };
    let mut lines = vec![format!(
        "embedded store: {:.0} MiB multipart upload ({parts} parts of {} MiB, 4 in flight) with a device's credentials, {rounds} alternating rounds",
        total as f64 / 1048576.0,
        part_size >> 20
    )];
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // Each side starts with no dirty pages of the other's (the machine-wide `sync`).
        flush_dirty_pages();
        let (raw_buffered, raw_synced) = raw_write(&root, &chunk, parts).await;
        let key = format!("{}/bench/upload-{round}.bin", c.object_key_prefix);
        flush_dirty_pages();
        let (store_secs, complete_secs) = upload(&s3, &c.bucket, &key, &chunk, parts).await;
        let stored = std::fs::metadata(root.join(&c.bucket).join(&key)).map_or(0, |m| m.len());
        assert_eq!(stored, total, "the object holds every byte");
        lines.push(format!(
            "  round {round}: raw {:.0} MiB/s buffered, {:.0} MiB/s with fsync; store {:.0} MiB/s ({:.1} s, of which Complete {:.1} s); ratio {:.2}x of buffered, {:.2}x of fsynced",
            mib_per_s(total, raw_buffered),
            mib_per_s(total, raw_synced),
            mib_per_s(total, store_secs),
            store_secs,
            complete_secs,
            raw_buffered / store_secs,
            raw_synced / store_secs
        ));
        ratios.push((raw_buffered / store_secs, raw_synced / store_secs));
    }
    service.stop().await;
    ratios.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (buffered, _) = ratios[ratios.len() / 2];
    ratios.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (_, synced) = ratios[ratios.len() / 2];
    lines.push(format!(
        "  ratio store / raw (median): {buffered:.2}x of buffered, {synced:.2}x of fsynced"
    ));
    lines
}

/// `sync(1)`: writes back every dirty page of the machine.
fn flush_dirty_pages() {
    let _ = std::process::Command::new("sync").status();
}

/// The same bytes to a file beside the store's objects, buffered, then also synced: seconds.
async fn raw_write(root: &std::path::Path, chunk: &Bytes, parts: usize) -> (f64, f64) {
    let (chunk, path) = (chunk.clone(), root.join("raw-write-probe"));
    tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut f = std::fs::File::create(&path).expect("raw file");
        for _ in 0..parts {
            f.write_all(&chunk).expect("write");
        }
        f.flush().expect("flush");
        let buffered = start.elapsed().as_secs_f64();
        f.sync_all().expect("sync");
        let synced = start.elapsed().as_secs_f64();
        drop(f);
        std::fs::remove_file(&path).ok();
        (buffered, synced)
    })
    .await
    .expect("raw write")
}

/// A multipart upload through the store, four parts in flight: seconds in all, and in Complete.
async fn upload(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    chunk: &Bytes,
    parts: usize,
) -> (f64, f64) {
    let start = Instant::now();
    let upload = s3
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .expect("create multipart upload");
    let id = upload.upload_id().expect("upload id").to_owned();
    let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = Vec::new();
    for n in 1..=parts {
        let permit = semaphore.clone().acquire_owned().await.expect("permit");
        let (s3, bucket, key, id, body) = (
            s3.clone(),
            bucket.to_owned(),
            key.to_owned(),
            id.clone(),
            chunk.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let part = s3
                .upload_part()
                .bucket(bucket)
                .key(key)
                .upload_id(id)
                .part_number(i32::try_from(n).expect("part"))
                .body(ByteStream::from(body))
                .send()
                .await
                .expect("upload part");
            drop(permit);
            CompletedPart::builder()
                .part_number(i32::try_from(n).expect("part"))
                .e_tag(part.e_tag().expect("etag"))
                .build()
        }));
    }
    let mut completed = Vec::new();
    for t in tasks {
        completed.push(t.await.expect("part task"));
    }
    let completing = Instant::now();
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    (
        start.elapsed().as_secs_f64(),
        completing.elapsed().as_secs_f64(),
    )
}
