//! Stock S3 clients from PyPI — the `aws` CLI and boto3 — upload into the embedded store with
//! exactly the credentials the service hands out, and are refused outside the prefix.
//! `scripts/test.sh` installs them when missing.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::TestService;
use common::s3::{succeeds, with_credentials};
use serde_json::Value;

async fn credentials(svc: &TestService, workspace: &str) -> Value {
    let (status, body) = svc.sts(workspace, Some(&svc.token(workspace))).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

#[tokio::test]
async fn the_aws_cli_uploads_with_the_issued_credentials() {
    let svc = TestService::start().await;
    let config = credentials(&svc, "ws-cli").await;
    let endpoint = config["endpoint"].as_str().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("DJI_0004.JPG");
    std::fs::write(&file, vec![7_u8; 300_000]).unwrap();

    let cp = |target: String| {
        let mut cmd = with_credentials("aws", &config);
        cmd.args(["--endpoint-url", &endpoint, "s3", "cp"])
            .arg(&file)
            .arg(target);
        cmd
    };
    let inside = cp("s3://media/ws-cli/DJI_0004.JPG".to_owned())
        .output()
        .await
        .expect("the aws CLI is installed (scripts/test.sh installs it)");
    assert!(
        inside.status.success(),
        "{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    let outside = cp("s3://media/ws-elsewhere/DJI_0004.JPG".to_owned())
        .output()
        .await
        .expect("runs");
    assert!(!outside.status.success());
    assert!(
        String::from_utf8_lossy(&outside.stderr).contains("AccessDenied"),
        "{}",
        String::from_utf8_lossy(&outside.stderr)
    );

    let got = svc
        .admin_s3()
        .get_object()
        .bucket("media")
        .key("ws-cli/DJI_0004.JPG")
        .send()
        .await
        .expect("admin reads");
    assert_eq!(got.content_length(), Some(300_000));
}

const BOTO3: &str = r#"
import io, os, sys, boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from boto3.s3.transfer import TransferConfig

s3 = boto3.client("s3", endpoint_url=sys.argv[1], config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"))
prefix = sys.argv[2]
s3.put_object(Bucket="media", Key=prefix + "/small.jpg", Body=b"small")
big = os.urandom(6 * 1024 * 1024 + 17)
s3.upload_fileobj(io.BytesIO(big), "media", prefix + "/big.mp4",
                  Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
url = s3.generate_presigned_url("put_object", Params={"Bucket": "media", "Key": prefix + "/presigned.jpg"}, ExpiresIn=300)
import urllib.request
urllib.request.urlopen(urllib.request.Request(url, data=b"presigned", method="PUT")).read()
for key in ["other/x.jpg", prefix + "-x/x.jpg"]:
    try:
        s3.put_object(Bucket="media", Key=key, Body=b"x")
        print("ALLOWED", key); sys.exit(1)
    except ClientError as e:
        assert e.response["Error"]["Code"] == "AccessDenied", e.response
try:
    s3.list_objects_v2(Bucket="media"); print("LIST ALLOWED"); sys.exit(1)
except ClientError as e:
    assert e.response["Error"]["Code"] == "AccessDenied", e.response
print("OK", len(big))
"#;

#[tokio::test]
async fn boto3_uploads_small_multipart_and_presigned_and_is_refused_elsewhere() {
    let svc = TestService::start().await;
    let config = credentials(&svc, "ws-boto").await;
    let mut python = with_credentials("python3", &config);
    python.args(["-c", BOTO3, config["endpoint"].as_str().unwrap(), "ws-boto"]);
    let stdout = succeeds(python).await;
    assert!(stdout.contains("OK 6291473"), "{stdout}");
    let listed = svc
        .admin_s3()
        .list_objects_v2()
        .bucket("media")
        .send()
        .await
        .expect("admin lists");
    let mut keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "ws-boto/big.mp4",
            "ws-boto/presigned.jpg",
            "ws-boto/small.jpg"
        ]
    );
}

/// The administrator's tools: boto3 and the aws CLI with the store's administrator key.
fn as_admin(svc: &TestService, program: &str) -> tokio::process::Command {
    let admin = &svc.service.store.as_ref().expect("embedded store").admin;
    let config = serde_json::json!({
        "region": "us-east-1",
        "credentials": {
            "access_key_id": admin.access_key_id,
            "access_key_secret": admin.secret_access_key.expose(),
            "security_token": "",
        },
    });
    let mut cmd = with_credentials(program, &config);
    cmd.env_remove("AWS_SESSION_TOKEN");
    cmd
}

/// A platform lists the store and reads what it listed: boto3 URL-decodes the listing it asked
/// to be URL-encoded, so every key must come back as exactly itself, whatever it holds.
#[tokio::test]
async fn boto3_gets_every_key_back_as_itself_through_every_operation() {
    let svc = TestService::start().await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/s3_every_key.py"
    );
    let mut python = as_admin(&svc, "python3");
    python.args([script, &svc.store_url(), "ws-keys"]);
    let stdout = succeeds(python).await;
    assert!(stdout.contains("OK 38"), "{stdout}");
}

/// The aws CLI's `s3 cp`, `s3 ls`, `s3api list-objects` (V1) and `s3 rm` with keys that a URL
/// or a listing could change.
#[tokio::test]
async fn the_aws_cli_lists_reads_and_deletes_keys_as_they_are() {
    let svc = TestService::start().await;
    let endpoint = svc.store_url();
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "a b.jpg",
        "a+b.jpg",
        "a%20b.jpg",
        "照片 1.jpg",
        "x&y=z;w,v~*.jpg",
    ];
    let aws = |args: &[&str]| {
        let mut cmd = as_admin(&svc, "aws");
        cmd.args(["--endpoint-url", &endpoint]).args(args);
        cmd
    };
    let run = succeeds;
    for name in names {
        let file = dir.path().join("up");
        std::fs::write(&file, name).unwrap();
        let target = format!("s3://media/ws-cli-keys/{name}");
        run(aws(&["s3", "cp", file.to_str().unwrap(), &target])).await;
    }
    let listed = run(aws(&["s3", "ls", "--recursive", "s3://media/ws-cli-keys/"])).await;
    for name in names {
        assert!(
            listed
                .lines()
                .any(|l| l.ends_with(&format!(" ws-cli-keys/{name}"))),
            "{name} in\n{listed}"
        );
    }
    let v1 = run(aws(&[
        "s3api",
        "list-objects",
        "--bucket",
        "media",
        "--prefix",
        "ws-cli-keys/",
    ]))
    .await;
    let v1: Value = serde_json::from_str(&v1).unwrap();
    let mut keys: Vec<_> = v1["Contents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["Key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    let mut want: Vec<_> = names.iter().map(|n| format!("ws-cli-keys/{n}")).collect();
    want.sort();
    assert_eq!(keys, want);
    for name in names {
        let back = dir.path().join("back");
        let source = format!("s3://media/ws-cli-keys/{name}");
        run(aws(&["s3", "cp", &source, back.to_str().unwrap()])).await;
        assert_eq!(std::fs::read_to_string(&back).unwrap(), name);
        run(aws(&["s3", "rm", &source])).await;
    }
    let left = svc
        .admin_s3()
        .list_objects_v2()
        .bucket("media")
        .prefix("ws-cli-keys/")
        .send()
        .await
        .expect("admin lists");
    assert!(left.contents().is_empty(), "{:?}", left.contents());
}
