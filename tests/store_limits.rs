//! S3's documented limits (AWS S3 API reference: PutObject, UploadPart, "Amazon S3 multipart
//! upload limits", "Naming Amazon S3 objects") are refused up front, from the request line and
//! headers, before a byte of the body is read or written, and the store goes on serving others.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use common::TestService;
use common::s3::{create, failure, upload_part};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// 5 GiB and one byte.
const OVER_5_GIB: u64 = (5 << 30) + 1;

async fn device(svc: &TestService, workspace: &str) -> aws_sdk_s3::Client {
    let (status, body) = svc.sts(workspace, Some(&svc.token(workspace))).await;
    assert_eq!(status, 200, "{body}");
    common::device_s3(&body["data"])
}

/// Sends the request line and headers of a presigned PUT announcing `length` bytes, and no body;
/// the answer, which must come without the body.
async fn announce(url: &str, length: u64) -> String {
    let url: reqwest::Url = url.parse().unwrap();
    let mut stream = tokio::net::TcpStream::connect((url.host_str().unwrap(), url.port().unwrap()))
        .await
        .unwrap();
    let target = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let head = format!(
        "PUT {target} HTTP/1.1\r\nHost: {}:{}\r\nContent-Length: {length}\r\n\r\n",
        url.host_str().unwrap(),
        url.port().unwrap()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0_u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn presign() -> PresigningConfig {
    PresigningConfig::expires_in(Duration::from_secs(300)).unwrap()
}

#[tokio::test]
async fn a_body_announced_over_5_gib_is_entity_too_large_before_it_is_read() {
    let svc = TestService::start().await;
    let s3 = device(&svc, "ws-big").await;
    let put = s3
        .put_object()
        .bucket("media")
        .key("ws-big/huge.mp4")
        .presigned(presign())
        .await
        .unwrap();
    let answer = announce(put.uri(), OVER_5_GIB).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>EntityTooLarge</Code>"), "{answer}");

    let id = create(&s3, "ws-big/huge-mp.mp4").await;
    let part = s3
        .upload_part()
        .bucket("media")
        .key("ws-big/huge-mp.mp4")
        .upload_id(&id)
        .part_number(1)
        .presigned(presign())
        .await
        .unwrap();
    let answer = announce(part.uri(), OVER_5_GIB).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("<Code>EntityTooLarge</Code>"), "{answer}");

    // Nothing was written for either, and the same credential still uploads.
    assert_eq!(svc.read_object("ws-big/huge.mp4").await, None);
    let parts = s3
        .list_parts()
        .bucket("media")
        .key("ws-big/huge-mp.mp4")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert!(parts.parts().is_empty(), "{:?}", parts.parts());
    // (Each running store's temporary area holds its lock file and nothing else.)
    let temp: Vec<_> = walk(&svc.data_dir.join("objects/.tmp"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "lock"))
        .collect();
    assert!(temp.is_empty(), "temporary files left: {temp:?}");
    s3.put_object()
        .bucket("media")
        .key("ws-big/small.jpg")
        .body(ByteStream::from_static(b"small"))
        .send()
        .await
        .expect("an ordinary upload still works");
}

#[tokio::test]
async fn part_numbers_outside_1_to_10000_are_invalid_arguments() {
    let svc = TestService::start().await;
    let s3 = device(&svc, "ws-parts").await;
    let id = create(&s3, "ws-parts/video.mp4").await;
    for n in [0, -1, 10_001] {
        let refused = upload_part(&s3, "ws-parts/video.mp4", &id, n, b"x").await;
        assert_eq!(
            refused.err(),
            Some((400, "InvalidArgument".to_owned())),
            "part {n}"
        );
    }
    for n in [1, 10_000] {
        upload_part(&s3, "ws-parts/video.mp4", &id, n, b"x")
            .await
            .unwrap_or_else(|e| panic!("part {n}: {e:?}"));
    }
}

#[tokio::test]
async fn a_key_over_1024_bytes_is_key_too_long() {
    let svc = TestService::start().await;
    let s3 = device(&svc, "ws-long").await;
    // 1,024 bytes in segments a file name can hold: accepted; one byte more: refused.
    let segment = "s".repeat(200);
    let mut key = format!("ws-long/{segment}/{segment}/{segment}/{segment}/{segment}/");
    key.push_str(&"k".repeat(1024 - key.len()));
    assert_eq!(key.len(), 1024);
    for (key, ok) in [(key.clone(), true), (format!("{key}k"), false)] {
        let put = s3
            .put_object()
            .bucket("media")
            .key(&key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await;
        match (put, ok) {
            (Ok(_), true) => {}
            (Err(e), false) => assert_eq!(failure(e), (400, "KeyTooLongError".to_owned())),
            (other, _) => panic!("{} bytes: {other:?}", key.len()),
        }
        let created = s3
            .create_multipart_upload()
            .bucket("media")
            .key(&key)
            .send()
            .await;
        assert_eq!(created.is_ok(), ok, "{} bytes", key.len());
    }
}
