//! The embedded store never loses or corrupts an upload, tried as a dock and an attacker would
//! (issue 12): refused checksums, refused Completes, a credential rotated mid-upload, another
//! workspace's upload ids. Each case with aws-sdk-s3 and with boto3 (a foreign client).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use base64::Engine;
use common::s3::{complete, create, failure, succeeds, upload_part as part, with_credentials};
use common::{Options, TestService, device_s3};
use serde_json::Value;

const MIB: usize = 1 << 20;

async fn credentials(svc: &TestService, workspace: &str) -> Value {
    let (status, body) = svc.sts(workspace, Some(&svc.token(workspace))).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn md5(data: &[u8]) -> Vec<u8> {
    use md5::Digest;
    md5::Md5::digest(data).to_vec()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn sha256_b64(data: &[u8]) -> String {
    b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data).as_ref())
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The service restarted on its data dir, and the new credential it hands out for `workspace`
/// (its cache starts empty) while the old one stays valid: what a dock sees when its workspace's
/// credential is refreshed in the middle of an upload, without waiting for a refresh. The store
/// is at a new port afterwards.
async fn with_a_new_credential(svc: TestService, workspace: &str) -> (TestService, Value) {
    let old = credentials(&svc, workspace).await;
    let svc = Options::default().data(svc.stop().await).start().await;
    let new = credentials(&svc, workspace).await;
    assert_ne!(
        new["credentials"]["access_key_id"], old["credentials"]["access_key_id"],
        "a new credential"
    );
    (svc, new)
}

/// Files under the store's `.uploads` (upload records and parts).
fn upload_files(svc: &TestService) -> Vec<String> {
    let root = svc.service.store.as_ref().unwrap().root.join(".uploads");
    let mut out = Vec::new();
    for dir in std::fs::read_dir(root).unwrap().flatten() {
        for file in std::fs::read_dir(dir.path()).unwrap().flatten() {
            out.push(file.path().display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn a_refused_checksum_leaves_the_previous_object_and_part() {
    let svc = TestService::start().await;
    let s3 = device_s3(&credentials(&svc, "ws-sum").await);
    let key = "ws-sum/DJI_0001.JPG";
    let good = pattern(300_000, 1);
    let bad = pattern(300_000, 2);
    s3.put_object()
        .bucket("media")
        .key(key)
        .body(ByteStream::from(good.clone()))
        .send()
        .await
        .expect("the good version");

    let wrong_md5 = s3
        .put_object()
        .bucket("media")
        .key(key)
        .content_md5(b64(&md5(&good)))
        .body(ByteStream::from(bad.clone()))
        .send()
        .await
        .map_err(failure);
    assert_eq!(wrong_md5.err(), Some((400, "BadDigest".to_owned())));
    let wrong_sha = s3
        .put_object()
        .bucket("media")
        .key(key)
        .checksum_sha256(sha256_b64(&good))
        .body(ByteStream::from(bad.clone()))
        .send()
        .await
        .map_err(failure);
    assert_eq!(wrong_sha.err(), Some((400, "BadDigest".to_owned())));
    assert_eq!(
        svc.read_object(key).await.unwrap(),
        good,
        "the good object stays"
    );
    let head = svc
        .admin_s3()
        .head_object()
        .bucket("media")
        .key(key)
        .send()
        .await
        .expect("head");
    assert_eq!(head.e_tag().unwrap().trim_matches('"'), hex(&md5(&good)));
    // A right checksum is accepted and kept.
    s3.put_object()
        .bucket("media")
        .key(key)
        .checksum_sha256(sha256_b64(&bad))
        .body(ByteStream::from(bad.clone()))
        .send()
        .await
        .expect("a correct checksum");
    assert_eq!(svc.read_object(key).await.unwrap(), bad);

    // The same for a part sent again with a wrong digest: the part that arrived whole stays.
    let key = "ws-sum/flight.mp4";
    let id = create(&s3, key).await;
    let first = pattern(5 * MIB, 3);
    let kept = part(&s3, key, &id, 1, &first).await.expect("part 1");
    let resent = s3
        .upload_part()
        .bucket("media")
        .key(key)
        .upload_id(&id)
        .part_number(1)
        .content_md5(b64(&md5(b"something else")))
        .body(ByteStream::from(pattern(5 * MIB, 4)))
        .send()
        .await
        .map_err(failure);
    assert_eq!(resent.err(), Some((400, "BadDigest".to_owned())));
    let listed = s3
        .list_parts()
        .bucket("media")
        .key(key)
        .upload_id(&id)
        .send()
        .await
        .expect("list parts");
    assert_eq!(listed.parts().len(), 1);
    assert_eq!(listed.parts()[0].e_tag(), kept.e_tag());
    complete(&s3, key, &id, &[kept]).await.expect("complete");
    assert_eq!(svc.read_object(key).await.unwrap(), first);
    assert!(common::store_temp_files(&svc.service.store.as_ref().unwrap().root).is_empty());
}

#[tokio::test]
async fn a_refused_complete_leaves_the_upload_usable() {
    let svc = TestService::start().await;
    let s3 = device_s3(&credentials(&svc, "ws-cmp").await);
    let key = "ws-cmp/DJI_0002.MP4";
    let id = create(&s3, key).await;
    let small = pattern(1024, 5);
    let tail = pattern(2048, 6);
    let p1 = part(&s3, key, &id, 1, &small).await.expect("part 1");
    let p2 = part(&s3, key, &id, 2, &tail).await.expect("part 2");

    let too_small = complete(&s3, key, &id, &[p1.clone(), p2.clone()]).await;
    assert_eq!(too_small.err(), Some((400, "EntityTooSmall".to_owned())));
    let out_of_order = complete(&s3, key, &id, &[p2.clone(), p1.clone()]).await;
    assert_eq!(
        out_of_order.err(),
        Some((400, "InvalidPartOrder".to_owned()))
    );
    let forged = CompletedPart::builder()
        .part_number(2)
        .e_tag("\"00000000000000000000000000000000\"")
        .build();
    let wrong_etag = complete(&s3, key, &id, &[p1.clone(), forged]).await;
    assert_eq!(wrong_etag.err(), Some((400, "InvalidPart".to_owned())));
    let missing = CompletedPart::builder()
        .part_number(3)
        .e_tag(p2.e_tag().unwrap())
        .build();
    let unknown = complete(&s3, key, &id, &[missing]).await;
    assert_eq!(unknown.err(), Some((400, "InvalidPart".to_owned())));
    assert!(
        svc.read_object(key).await.is_none(),
        "nothing visible after refusals"
    );

    // The dock corrects its first part and completes the same upload.
    let big = pattern(5 * MIB, 7);
    let p1 = part(&s3, key, &id, 1, &big).await.expect("part 1 again");
    let parts = vec![p1, p2.clone()];
    let etag = complete(&s3, key, &id, &parts).await.expect("complete");
    let expected = format!("{}-2", hex(&md5(&[md5(&big), md5(&tail)].concat())));
    assert_eq!(etag, expected);
    assert_eq!(svc.read_object(key).await.unwrap(), [big, tail].concat());
    // A retry of the Complete (its answer lost) is answered the same.
    let again = complete(&s3, key, &id, &parts).await;
    assert_eq!(again, Ok(expected));

    // A refused Complete, then Abort: nothing of the upload remains.
    let other = create(&s3, "ws-cmp/aborted.mp4").await;
    let q1 = part(&s3, "ws-cmp/aborted.mp4", &other, 1, &small)
        .await
        .unwrap();
    let q2 = part(&s3, "ws-cmp/aborted.mp4", &other, 2, &small)
        .await
        .unwrap();
    assert!(
        complete(&s3, "ws-cmp/aborted.mp4", &other, &[q1, q2])
            .await
            .is_err()
    );
    s3.abort_multipart_upload()
        .bucket("media")
        .key("ws-cmp/aborted.mp4")
        .upload_id(&other)
        .send()
        .await
        .expect("abort after a refused complete");
    let files = upload_files(&svc);
    assert!(
        files.iter().all(|f| f.ends_with("completed.json")),
        "only the record of the completed upload remains: {files:?}"
    );
}

#[tokio::test]
async fn uploads_belong_to_the_scope_not_to_the_access_key() {
    let svc = TestService::start().await;
    let before = credentials(&svc, "ws-rot").await;
    let s3 = device_s3(&before);
    let key = "ws-rot/long-video.mp4";
    let id = create(&s3, key).await;
    let first = pattern(5 * MIB, 8);
    let p1 = part(&s3, key, &id, 1, &first).await.expect("part 1");

    let (svc, after) = with_a_new_credential(svc, "ws-rot").await;
    let rotated = device_s3(&after);
    let second = pattern(1000, 9);
    let p2 = part(&rotated, key, &id, 2, &second)
        .await
        .expect("the new credential continues");
    let listed = rotated
        .list_parts()
        .bucket("media")
        .key(key)
        .upload_id(&id)
        .send()
        .await
        .expect("and lists");
    assert_eq!(listed.parts().len(), 2);

    // Another workspace's credential: outside its prefix refused by policy; under its own
    // prefix with this upload id, no such upload, for every multipart action.
    let stranger = device_s3(&credentials(&svc, "ws-x").await);
    let denied = stranger
        .list_parts()
        .bucket("media")
        .key(key)
        .upload_id(&id)
        .send()
        .await
        .map_err(failure);
    assert_eq!(denied.err().map(|e| e.1), Some("AccessDenied".to_owned()));
    let own = "ws-x/long-video.mp4";
    let no_such = Some((404, "NoSuchUpload".to_owned()));
    let listed = stranger
        .list_parts()
        .bucket("media")
        .key(own)
        .upload_id(&id)
        .send()
        .await
        .map_err(failure);
    assert_eq!(listed.err(), no_such, "ListParts");
    assert_eq!(
        part(&stranger, own, &id, 3, b"x").await.err(),
        no_such,
        "UploadPart"
    );
    assert_eq!(
        complete(&stranger, own, &id, std::slice::from_ref(&p1))
            .await
            .err(),
        no_such,
        "Complete"
    );
    let abort = stranger
        .abort_multipart_upload()
        .bucket("media")
        .key(own)
        .upload_id(&id)
        .send()
        .await
        .map_err(failure);
    assert_eq!(abort.err(), no_such, "Abort");

    complete(&rotated, key, &id, &[p1, p2])
        .await
        .expect("the new credential completes");
    assert_eq!(
        svc.read_object(key).await.unwrap(),
        [first, second].concat()
    );
}

/// The same cases from boto3. `argv`: endpoint, prefix; credentials from the environment.
const BOTO3: &str = r#"
import base64, hashlib, os, sys, boto3
from botocore.config import Config
from botocore.exceptions import ClientError

s3 = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
p = sys.argv[2]
def code(f):
    try:
        f(); return "OK"
    except ClientError as e:
        return e.response["Error"]["Code"]

good, bad = os.urandom(100000), os.urandom(100000)
s3.put_object(Bucket="media", Key=p + "/a.jpg", Body=good)
md5 = base64.b64encode(hashlib.md5(good).digest()).decode()
c = code(lambda: s3.put_object(Bucket="media", Key=p + "/a.jpg", Body=bad, ContentMD5=md5)); assert c == "BadDigest", c
sha = base64.b64encode(hashlib.sha256(good).digest()).decode()
c = code(lambda: s3.put_object(Bucket="media", Key=p + "/a.jpg", Body=bad, ChecksumSHA256=sha)); assert c == "BadDigest", c
print("KEPT", hashlib.md5(good).hexdigest())

key = p + "/b.mp4"
uid = s3.create_multipart_upload(Bucket="media", Key=key)["UploadId"]
small, big = os.urandom(1000), os.urandom(5 * 1024 * 1024)
e1 = s3.upload_part(Bucket="media", Key=key, UploadId=uid, PartNumber=1, Body=small)["ETag"]
e2 = s3.upload_part(Bucket="media", Key=key, UploadId=uid, PartNumber=2, Body=small)["ETag"]
parts = lambda a, b: {"Parts": [{"PartNumber": 1, "ETag": a}, {"PartNumber": 2, "ETag": b}]}
assert code(lambda: s3.complete_multipart_upload(Bucket="media", Key=key, UploadId=uid, MultipartUpload=parts(e1, e2))) == "EntityTooSmall"
assert code(lambda: s3.complete_multipart_upload(Bucket="media", Key=key, UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 2, "ETag": e2}, {"PartNumber": 1, "ETag": e1}]})) == "InvalidPartOrder"
e1 = s3.upload_part(Bucket="media", Key=key, UploadId=uid, PartNumber=1, Body=big)["ETag"]
assert len(s3.list_parts(Bucket="media", Key=key, UploadId=uid)["Parts"]) == 2
s3.complete_multipart_upload(Bucket="media", Key=key, UploadId=uid, MultipartUpload=parts(e1, e2))
print("COMPLETED", hashlib.md5(big + small).hexdigest())

other = s3.create_multipart_upload(Bucket="media", Key=p + "/c.mp4")["UploadId"]
s3.upload_part(Bucket="media", Key=p + "/c.mp4", UploadId=other, PartNumber=1, Body=small)
print("OPEN", other)
"#;

/// Another workspace's view of an upload id from boto3.
const BOTO3_STRANGER: &str = r#"
import sys, boto3
from botocore.config import Config
from botocore.exceptions import ClientError
s3 = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
own, theirs, uid = sys.argv[2], sys.argv[3], sys.argv[4]
def code(f):
    try:
        f(); return "OK"
    except ClientError as e:
        return e.response["Error"]["Code"]
print("THEIRS", code(lambda: s3.list_parts(Bucket="media", Key=theirs, UploadId=uid)))
print("LIST", code(lambda: s3.list_parts(Bucket="media", Key=own, UploadId=uid)))
print("PART", code(lambda: s3.upload_part(Bucket="media", Key=own, UploadId=uid, PartNumber=1, Body=b"x")))
print("ABORT", code(lambda: s3.abort_multipart_upload(Bucket="media", Key=own, UploadId=uid)))
"#;

async fn python(config: &Value, script: &str, args: &[&str]) -> String {
    let mut python = with_credentials("python3", config);
    python.arg("-c").arg(script).args(args);
    succeeds(python).await
}

fn field<'a>(stdout: &'a str, label: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{label} in {stdout}"))
}

#[tokio::test]
async fn boto3_cannot_lose_or_reach_an_upload_either() {
    let svc = TestService::start().await;
    let config = credentials(&svc, "ws-py").await;
    let endpoint = config["endpoint"].as_str().unwrap().to_owned();
    let out = python(&config, BOTO3, &[&endpoint, "ws-py"]).await;
    let a = svc.read_object("ws-py/a.jpg").await.unwrap();
    assert_eq!(hex(&md5(&a)), field(&out, "KEPT"), "the good object stays");
    let b = svc.read_object("ws-py/b.mp4").await.unwrap();
    assert_eq!(hex(&md5(&b)), field(&out, "COMPLETED"));

    let open = field(&out, "OPEN").to_owned();
    let stranger = credentials(&svc, "ws-py2").await;
    let seen = python(
        &stranger,
        BOTO3_STRANGER,
        &[&endpoint, "ws-py2/c.mp4", "ws-py/c.mp4", &open],
    )
    .await;
    assert_eq!(field(&seen, "THEIRS"), "AccessDenied");
    for action in ["LIST", "PART", "ABORT"] {
        assert_eq!(field(&seen, action), "NoSuchUpload", "{action}: {seen}");
    }
    // Still there for its owner's scope, and a refreshed credential finishes it.
    let (svc, refreshed) = with_a_new_credential(svc, "ws-py").await;
    let endpoint = refreshed["endpoint"].as_str().unwrap().to_owned();
    let finished = python(
        &refreshed,
        BOTO3_CONTINUE,
        &[&endpoint, "ws-py/c.mp4", &open],
    )
    .await;
    assert_eq!(field(&finished, "PARTS"), "1");
    let c = svc.read_object("ws-py/c.mp4").await.unwrap();
    assert_eq!(hex(&md5(&c)), field(&finished, "COMPLETED"));
}

/// A refreshed credential carries on with an upload it did not create.
const BOTO3_CONTINUE: &str = r#"
import hashlib, os, sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
key, uid = sys.argv[2], sys.argv[3]
print("PARTS", len(s3.list_parts(Bucket="media", Key=key, UploadId=uid)["Parts"]))
first, last = os.urandom(5 * 1024 * 1024), os.urandom(10)
e1 = s3.upload_part(Bucket="media", Key=key, UploadId=uid, PartNumber=1, Body=first)["ETag"]
e2 = s3.upload_part(Bucket="media", Key=key, UploadId=uid, PartNumber=2, Body=last)["ETag"]
s3.complete_multipart_upload(Bucket="media", Key=key, UploadId=uid, MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": e2}]})
print("COMPLETED", hashlib.md5(first + last).hexdigest())
"#;
