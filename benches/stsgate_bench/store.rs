//! Embedded store: a multipart upload with the credentials a device is issued, against writing
//! the same number of bytes straight to a file on the same file system, in the same run.

use std::io::Write;
use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use stsgate::gateway::WorkspaceId;

use crate::Scale;

const PART: usize = 64 << 20;

fn mib_per_s(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / secs
}

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

    // Raw: the same bytes to a file beside the store's objects, buffered, then also synced.
    let raw_path = root.join("raw-write-probe");
    let raw = {
        let (chunk, path) = (chunk.clone(), raw_path.clone());
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
    };

    // Through the store, with a device's credentials, four parts in flight.
    let issued = service
        .service
        .gateway
        .for_workspace(WorkspaceId::parse("bench-store").expect("ws"))
        .await
        .expect("credentials");
    let c = &issued.config;
    let s3 = stsgate::check::s3_client(
        &c.endpoint,
        &c.region,
        true,
        &c.credentials.access_key_id,
        c.credentials.access_key_secret.expose(),
        Some(c.credentials.security_token.expose()),
    );
    let key = format!("{}/bench/upload.bin", c.object_key_prefix);
    let start = Instant::now();
    let upload = s3
        .create_multipart_upload()
        .bucket(&c.bucket)
        .key(&key)
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
            c.bucket.clone(),
            key.clone(),
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
    s3.complete_multipart_upload()
        .bucket(&c.bucket)
        .key(&key)
        .upload_id(&id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    let store_secs = start.elapsed().as_secs_f64();
    let stored = std::fs::metadata(root.join(&c.bucket).join(&key)).map_or(0, |m| m.len());
    assert_eq!(stored, total, "the object holds every byte");
    service.stop().await;

    let (raw_buffered, raw_synced) = raw;
    vec![
        format!(
            "embedded store: {:.0} MiB multipart upload ({parts} parts of {} MiB, 4 in flight) with a device's credentials",
            total as f64 / 1048576.0,
            part_size >> 20
        ),
        format!(
            "  raw file write, same file system: {:.0} MiB/s buffered, {:.0} MiB/s including fsync",
            mib_per_s(total, raw_buffered),
            mib_per_s(total, raw_synced)
        ),
        format!(
            "  upload through the store: {:.0} MiB/s",
            mib_per_s(total, store_secs)
        ),
        format!(
            "  ratio store / raw: {:.2}x of buffered, {:.2}x of fsynced",
            raw_buffered / store_secs,
            raw_synced / store_secs
        ),
    ]
}
