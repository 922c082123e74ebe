//! The embedded S3 store with a real S3 client (aws-sdk-s3): credentials handed out by either
//! front upload under their prefix, and nothing else.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use common::{Options, TestService, device_s3, s3_client, storage_config_get};
use serde_json::Value;

async fn http_config(svc: &TestService, workspace: &str) -> Value {
    let (status, body) = svc.sts(workspace, Some(&svc.token(workspace))).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

async fn put(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &[u8],
) -> Result<String, (u16, String)> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .map(|out| out.e_tag().unwrap_or_default().to_owned())
        .map_err(failure)
}

/// HTTP status and S3 error code of a failed call.
fn failure<E: ProvideErrorMetadata>(
    e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> (u16, String) {
    let status = e.raw_response().map_or(0, |r| r.status().as_u16());
    let code = e.code().unwrap_or("(no code)").to_owned();
    (status, code)
}

async fn read(svc: &TestService, key: &str) -> Vec<u8> {
    svc.read_object(key).await.expect("admin reads")
}

fn md5_digest(data: &[u8]) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(data).to_vec()
}

fn md5_hex(data: &[u8]) -> String {
    md5_digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn credentials_from_both_fronts_upload_under_their_prefix() {
    let svc = TestService::start().await;
    let config = http_config(&svc, "ws-up").await;
    assert_eq!(config["endpoint"], svc.store_url());
    let client = device_s3(&config);
    let etag = put(&client, "media", "ws-up/DJI_0001.JPG", b"photo bytes")
        .await
        .expect("upload");
    assert_eq!(etag.trim_matches('"'), md5_hex(b"photo bytes"));
    assert_eq!(read(&svc, "ws-up/DJI_0001.JPG").await, b"photo bytes");

    let mut dock = svc.dock("STORE0001").await;
    let reply = dock.request(&storage_config_get("s", "1")).await;
    let from_mqtt = device_s3(&reply["data"]["output"]);
    put(&from_mqtt, "media", "default/DJI_0002.MP4", b"video")
        .await
        .expect("dock upload");
    assert_eq!(read(&svc, "default/DJI_0002.MP4").await, b"video");
}

#[tokio::test]
async fn everything_outside_the_grant_is_refused() {
    let svc = TestService::start().await;
    svc.admin_s3()
        .create_bucket()
        .bucket("other")
        .send()
        .await
        .expect("admin creates a bucket");
    put(&svc.admin_s3(), "media", "ws-b/theirs.jpg", b"not yours")
        .await
        .expect("admin writes");
    let config = http_config(&svc, "ws-a").await;
    let client = device_s3(&config);
    let creds = &config["credentials"];
    let (ak, sk) = (
        creds["access_key_id"].as_str().unwrap(),
        creds["access_key_secret"].as_str().unwrap(),
    );
    let denied = (403, "AccessDenied".to_owned());

    assert_eq!(
        put(&client, "media", "ws-b/x.jpg", b"x").await,
        Err(denied.clone()),
        "another prefix"
    );
    assert_eq!(
        put(&client, "media", "ws-a-x/x.jpg", b"x").await,
        Err(denied.clone()),
        "look-alike prefix"
    );
    assert_eq!(
        put(&client, "media", "ws-ab/x.jpg", b"x").await,
        Err(denied.clone()),
        "look-alike prefix"
    );
    assert_eq!(
        put(&client, "other", "ws-a/x.jpg", b"x").await,
        Err(denied.clone()),
        "another bucket"
    );
    let get = client
        .get_object()
        .bucket("media")
        .key("ws-b/theirs.jpg")
        .send()
        .await
        .map_err(failure);
    assert_eq!(get.err(), Some(denied.clone()), "reads");
    let own = client
        .get_object()
        .bucket("media")
        .key("ws-a/x.jpg")
        .send()
        .await
        .map_err(failure);
    assert_eq!(
        own.err(),
        Some(denied.clone()),
        "even reads of its own prefix"
    );
    let delete = client
        .delete_object()
        .bucket("media")
        .key("ws-b/theirs.jpg")
        .send()
        .await
        .map_err(failure);
    assert_eq!(delete.err(), Some(denied.clone()), "deletes");
    let list = client
        .list_objects_v2()
        .bucket("media")
        .send()
        .await
        .map_err(failure);
    assert_eq!(list.err(), Some(denied.clone()), "listing");
    let buckets = client.list_buckets().send().await.map_err(failure);
    assert_eq!(buckets.err(), Some(denied.clone()), "bucket listing");
    let copy = client
        .copy_object()
        .bucket("media")
        .key("ws-a/copy.jpg")
        .copy_source("media/ws-b/theirs.jpg")
        .send()
        .await
        .map_err(failure);
    assert_eq!(copy.err(), Some(denied.clone()), "copies");

    let no_token = s3_client(&svc.store_url(), ak, sk, None);
    assert_eq!(
        put(&no_token, "media", "ws-a/x.jpg", b"x").await,
        Err(denied.clone()),
        "no session token"
    );
    let wrong_token = s3_client(&svc.store_url(), ak, sk, Some("forged-token"));
    assert_eq!(
        put(&wrong_token, "media", "ws-a/x.jpg", b"x").await,
        Err(denied.clone()),
        "wrong session token"
    );
    let wrong_secret = s3_client(
        &svc.store_url(),
        ak,
        "wrong-secret",
        creds["security_token"].as_str(),
    );
    assert_eq!(
        put(&wrong_secret, "media", "ws-a/x.jpg", b"x")
            .await
            .map_err(|e| e.1),
        Err("SignatureDoesNotMatch".to_owned())
    );
    let unknown = s3_client(&svc.store_url(), "ASIAUNKNOWNKEY000000", sk, None);
    assert_eq!(
        put(&unknown, "media", "ws-a/x.jpg", b"x")
            .await
            .map_err(|e| e.0),
        Err(403)
    );

    // Nothing landed outside the prefix, and the other workspace's object is intact.
    let listed = svc
        .admin_s3()
        .list_objects_v2()
        .bucket("media")
        .send()
        .await
        .expect("admin lists");
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["ws-b/theirs.jpg"]);
    assert_eq!(read(&svc, "ws-b/theirs.jpg").await, b"not yours");
}

#[tokio::test]
async fn dot_segments_cannot_climb_out_of_the_prefix() {
    let svc = TestService::start().await;
    let config = http_config(&svc, "ws-dot").await;
    // Signed by the SDK, sent with the dot segments as they are.
    for key in ["ws-dot/../ws-other/x.jpg", "ws-dot/./x.jpg"] {
        let client = device_s3(&config);
        let result = put(&client, "media", key, b"x").await;
        assert!(matches!(&result, Err((403 | 400, _))), "{key}: {result:?}");
    }
    let listed = svc
        .admin_s3()
        .list_objects_v2()
        .bucket("media")
        .send()
        .await
        .expect("admin lists");
    assert!(listed.contents().is_empty(), "{:?}", listed.contents());
}

#[tokio::test]
async fn multipart_uploads_stream_and_get_correct_etags() {
    let svc = TestService::start().await;
    let config = http_config(&svc, "ws-mp").await;
    let client = device_s3(&config);
    let key = "ws-mp/flight/DJI_0003.MP4";
    let parts: Vec<Vec<u8>> = vec![vec![b'a'; 5 << 20], vec![b'b'; 5 << 20], b"tail".to_vec()];
    let upload = client
        .create_multipart_upload()
        .bucket("media")
        .key(key)
        .send()
        .await
        .expect("create");
    let id = upload.upload_id().expect("upload id");
    let mut completed = Vec::new();
    for (i, data) in parts.iter().enumerate() {
        let n = i32::try_from(i + 1).unwrap();
        let out = client
            .upload_part()
            .bucket("media")
            .key(key)
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(data.clone()))
            .send()
            .await
            .expect("part");
        assert_eq!(
            out.e_tag().map(|e| e.trim_matches('"').to_owned()),
            Some(md5_hex(data))
        );
        completed.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(out.e_tag().unwrap())
                .build(),
        );
    }
    let listed = client
        .list_parts()
        .bucket("media")
        .key(key)
        .upload_id(id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(listed.parts().len(), 3);
    let done = client
        .complete_multipart_upload()
        .bucket("media")
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .expect("complete");
    let concatenated: Vec<u8> = parts.iter().flat_map(|p| md5_digest(p)).collect();
    let expected = format!("{}-3", md5_hex(&concatenated));
    assert_eq!(
        done.e_tag().map(|e| e.trim_matches('"').to_owned()),
        Some(expected)
    );
    let body = read(&svc, key).await;
    assert_eq!(body.len(), (10 << 20) + 4);
    assert_eq!(md5_hex(&body), md5_hex(&parts.concat()));

    // An aborted upload leaves nothing behind.
    let other = client
        .create_multipart_upload()
        .bucket("media")
        .key("ws-mp/aborted")
        .send()
        .await
        .expect("create");
    client
        .upload_part()
        .bucket("media")
        .key("ws-mp/aborted")
        .upload_id(other.upload_id().unwrap())
        .part_number(1)
        .body(ByteStream::from(vec![1_u8; 1024]))
        .send()
        .await
        .expect("part");
    client
        .abort_multipart_upload()
        .bucket("media")
        .key("ws-mp/aborted")
        .upload_id(other.upload_id().unwrap())
        .send()
        .await
        .expect("abort");
    let listed = svc
        .admin_s3()
        .list_objects_v2()
        .bucket("media")
        .send()
        .await
        .expect("admin lists");
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, [key]);
}

#[tokio::test]
async fn presigned_puts_work_within_the_prefix_only() {
    let svc = TestService::start().await;
    let config = http_config(&svc, "ws-pre").await;
    let client = device_s3(&config);
    let presign =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let http = reqwest::Client::new();
    for (key, want) in [
        ("ws-pre/presigned.jpg", 200),
        ("ws-other/presigned.jpg", 403),
    ] {
        let request = client
            .put_object()
            .bucket("media")
            .key(key)
            .presigned(presign.clone())
            .await
            .expect("presign");
        assert!(
            request.uri().contains("X-Amz-Security-Token"),
            "{}",
            request.uri()
        );
        let response = http
            .put(request.uri())
            .body("presigned body")
            .send()
            .await
            .expect("answer");
        assert_eq!(
            response.status().as_u16(),
            want,
            "{key}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    assert_eq!(read(&svc, "ws-pre/presigned.jpg").await, b"presigned body");
}

#[tokio::test]
async fn an_expired_credential_is_refused() {
    let svc = Options::default()
        .env("STSGATE_STORAGE__DURATION", "3s")
        .env("STSGATE_STORAGE__MIN_REMAINING", "1s")
        .env("STSGATE_STORAGE__EXPIRE_MARGIN", "0s")
        .start()
        .await;
    let config = http_config(&svc, "ws-exp").await;
    let client = device_s3(&config);
    put(&client, "media", "ws-exp/early.jpg", b"x")
        .await
        .expect("valid at first");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let late = put(&client, "media", "ws-exp/late.jpg", b"x").await;
    assert_eq!(late.map_err(|e| e.1), Err("ExpiredToken".to_owned()));

    // Issue 12.5: still `ExpiredToken` (which makes a dock ask for a new credential) after a
    // clean-up pass and a restart; it used to become `InvalidAccessKeyId` once the clean-up had
    // forgotten the credential.
    let keyring =
        stsgate::embedded::store::keyring::Keyring::open(&svc.data_dir.join("credentials"))
            .unwrap();
    stsgate::embedded::store::sweep(
        &keyring,
        &svc.data_dir.join("objects"),
        Duration::from_secs(3600),
        std::time::SystemTime::now(),
    );
    let data = svc.stop().await;
    let svc = Options::default().data(data).start().await;
    let mut moved = config.clone();
    moved["endpoint"] = Value::String(svc.store_url());
    let after = put(&device_s3(&moved), "media", "ws-exp/after.jpg", b"x").await;
    assert_eq!(after.map_err(|e| e.1), Err("ExpiredToken".to_owned()));
}

#[tokio::test]
async fn objects_and_credentials_survive_a_restart() {
    let svc = TestService::start().await;
    let config = http_config(&svc, "ws-restart").await;
    put(
        &device_s3(&config),
        "media",
        "ws-restart/before.jpg",
        b"before",
    )
    .await
    .expect("upload");
    let admin_key = svc
        .service
        .store
        .as_ref()
        .unwrap()
        .admin
        .access_key_id
        .clone();
    let data = svc.stop().await;

    let svc = Options::default().data(data).start().await;
    assert_eq!(
        svc.service.store.as_ref().unwrap().admin.access_key_id,
        admin_key,
        "admin key reused"
    );
    assert!(!svc.service.store.as_ref().unwrap().admin_generated);
    assert_eq!(read(&svc, "ws-restart/before.jpg").await, b"before");
    // The dock still holds the credential from before the restart; only the port moved.
    let creds = &config["credentials"];
    let same_credential = s3_client(
        &svc.store_url(),
        creds["access_key_id"].as_str().unwrap(),
        creds["access_key_secret"].as_str().unwrap(),
        creds["security_token"].as_str(),
    );
    put(&same_credential, "media", "ws-restart/after.jpg", b"after")
        .await
        .expect("old credential still works");
    assert_eq!(read(&svc, "ws-restart/after.jpg").await, b"after");
}

#[tokio::test]
async fn an_interrupted_upload_leaves_no_partial_object() {
    use tokio::io::AsyncWriteExt;

    let svc = TestService::start().await;
    let config = http_config(&svc, "ws-cut").await;
    let presign =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let request = device_s3(&config)
        .put_object()
        .bucket("media")
        .key("ws-cut/cut.mp4")
        .presigned(presign)
        .await
        .expect("presign");
    let url = reqwest::Url::parse(request.uri()).expect("url");
    let path_and_query = format!("{}?{}", url.path(), url.query().unwrap_or_default());
    let host = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());

    // Promise a megabyte, send half, hang up: as a dock losing power mid-upload.
    let mut socket = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let head =
        format!("PUT {path_and_query} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1048576\r\n\r\n");
    socket.write_all(head.as_bytes()).await.expect("head");
    socket
        .write_all(&vec![b'v'; 512 * 1024])
        .await
        .expect("half the body");
    socket.flush().await.expect("flush");
    drop(socket);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let head = svc
        .admin_s3()
        .head_object()
        .bucket("media")
        .key("ws-cut/cut.mp4")
        .send()
        .await;
    assert_eq!(
        head.map_err(failure).err().map(|e| e.0),
        Some(404),
        "no partial object is visible"
    );
    let root = svc.service.store.as_ref().unwrap().root.clone();
    let leftovers = common::store_temp_files(&root);
    assert!(
        leftovers.is_empty(),
        "temporary files removed: {leftovers:?}"
    );
    // And the same key uploads fine afterwards.
    put(&device_s3(&config), "media", "ws-cut/cut.mp4", b"complete")
        .await
        .expect("retry");
    assert_eq!(read(&svc, "ws-cut/cut.mp4").await, b"complete");
}
