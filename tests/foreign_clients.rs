//! Stock S3 clients from PyPI — the `aws` CLI and boto3 — upload into the embedded store with
//! exactly the credentials the service hands out, and are refused outside the prefix.
//! `scripts/test.sh` installs them when missing.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::TestService;
use common::s3::with_credentials;
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
    let out = with_credentials("python3", &config)
        .args(["-c", BOTO3, config["endpoint"].as_str().unwrap(), "ws-boto"])
        .output()
        .await
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
