//! The `aws` and `minio` providers against a real STS peer: moto server (PyPI), which speaks the
//! AWS STS wire protocol MinIO also speaks, and S3. AssumeRole goes through our code; the returned
//! credentials then upload into moto's S3.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use aws_sdk_s3::primitives::ByteStream;
use common::{Moto, Options, TestService, device_s3, storage_config_get};
use serde_json::Value;

const ROLE: &str = "arn:aws:iam::123456789012:role/stsgate-upload";

async fn service(moto: &Moto, provider: &str, device_endpoint: Option<&str>) -> TestService {
    moto.s3()
        .create_bucket()
        .bucket("media")
        .send()
        .await
        .expect("bucket in moto");
    let mut options = Options::default()
        .env("STSGATE_STORAGE__PROVIDER", provider)
        .env("STSGATE_STORAGE__STS_ENDPOINT", &moto.url)
        .env("STSGATE_STORAGE__ROLE_ARN", ROLE)
        .env("STSGATE_STORAGE__ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env(
            "STSGATE_STORAGE__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env("STSGATE_STORAGE__DURATION", "900");
    if let Some(endpoint) = device_endpoint {
        options = options.env("STSGATE_STORAGE__ENDPOINT", endpoint);
    }
    options.start().await
}

async fn upload(config: &Value, key: &str) {
    device_s3(config)
        .put_object()
        .bucket("media")
        .key(key)
        .body(ByteStream::from_static(b"from a dock"))
        .send()
        .await
        .expect("upload with the issued credentials");
}

#[tokio::test]
async fn aws_credentials_come_from_assume_role_and_upload() {
    let moto = Moto::start();
    let svc = service(&moto, "aws", Some(&moto.url)).await;
    assert!(
        svc.service.store.is_none(),
        "no embedded store with a cloud provider"
    );
    let calls = || {
        svc.counter(
            "stsgate_upstream_calls_total",
            r#"provider="aws",profile="default",outcome="ok""#,
        )
    };
    let before = calls().await;

    let (status, body) = svc.sts("ws-aws", Some(&svc.token("ws-aws"))).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["provider"], "aws");
    assert_eq!(data["region"], "us-east-1");
    assert_eq!(data["endpoint"], moto.url.as_str());
    assert!(
        data["credentials"]["access_key_id"]
            .as_str()
            .unwrap()
            .starts_with("ASIA"),
        "{data}"
    );
    let expire = data["credentials"]["expire"].as_u64().unwrap();
    assert!(
        (800..=840).contains(&expire),
        "900 s less the margin: {expire}"
    );
    upload(data, "ws-aws/DJI_0001.JPG").await;
    let got = moto
        .s3()
        .get_object()
        .bucket("media")
        .key("ws-aws/DJI_0001.JPG")
        .send()
        .await
        .expect("in moto");
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"from a dock"
    );

    // The dock side gets the same credential for the same workspace: one AssumeRole in all.
    let mut dock = svc.dock("AWSDOCK1").await;
    let reply = dock.request(&storage_config_get("a", "1")).await;
    assert_eq!(reply["data"]["output"]["provider"], "aws");
    let (_, again) = svc.sts("ws-aws", Some(&svc.token("ws-aws"))).await;
    assert_eq!(
        again["data"]["credentials"]["access_key_id"],
        data["credentials"]["access_key_id"]
    );
    assert_eq!(
        calls().await - before,
        2.0,
        "one AssumeRole for ws-aws, one for the dock's workspace"
    );
}

#[tokio::test]
async fn minio_uses_the_same_protocol_and_advertises_its_endpoint() {
    let moto = Moto::start();
    let svc = service(&moto, "minio", None).await;
    let (status, body) = svc.sts("ws-minio", Some(&svc.token("ws-minio"))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["provider"], "minio");
    assert_eq!(
        body["data"]["endpoint"],
        moto.url.as_str(),
        "the MinIO URL is the device endpoint by default"
    );
    upload(&body["data"], "ws-minio/clip.mp4").await;
}

#[test]
fn cloud_providers_refuse_incomplete_configuration() {
    let load = |env: &[(&str, &str)]| {
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        stsgate::config::load(&stsgate::config::Sources {
            env,
            ..Default::default()
        })
    };
    let err = load(&[("STSGATE_STORAGE__PROVIDER", "aws")])
        .expect_err("no role")
        .to_string();
    assert!(err.contains("storage.role_arn"), "{err}");
    let err = load(&[
        ("STSGATE_STORAGE__PROVIDER", "aws"),
        ("STSGATE_STORAGE__ROLE_ARN", ROLE),
        ("STSGATE_STORAGE__DURATION", "60000"),
    ])
    .expect_err("too long")
    .to_string();
    assert!(err.contains("storage.duration"), "{err}");
    let err = load(&[("STSGATE_STORAGE__PROVIDER", "minio")])
        .expect_err("no endpoint, no keys")
        .to_string();
    assert!(
        err.contains("storage.sts_endpoint") && err.contains("storage.access_key_id"),
        "{err}"
    );
    let err = load(&[
        ("STSGATE_STORAGE__PROVIDER", "aws"),
        ("STSGATE_STORAGE__ROLE_ARN", "role/x"),
    ])
    .expect_err("bad arn")
    .to_string();
    assert!(err.contains("storage.role_arn"), "{err}");
    let ok = load(&[
        ("STSGATE_STORAGE__PROVIDER", "aws"),
        ("STSGATE_STORAGE__ROLE_ARN", ROLE),
        ("STSGATE_STORAGE__REGION", "eu-west-1"),
    ])
    .expect("aws with the default credential chain");
    assert_eq!(
        ok.advertised_endpoint(),
        "https://s3.eu-west-1.amazonaws.com"
    );
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let with_keys = load(&[
        ("STSGATE_STORAGE__PROVIDER", "aws"),
        ("STSGATE_STORAGE__ROLE_ARN", ROLE),
        ("STSGATE_STORAGE__ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        ("STSGATE_STORAGE__SECRET_ACCESS_KEY", secret),
    ])
    .expect("valid");
    assert!(!format!("{with_keys:?}").contains(secret) && !toml_text(&with_keys).contains(secret));
}

fn toml_text(config: &stsgate::config::Config) -> String {
    serde_json::to_string(config).unwrap()
}

#[tokio::test]
async fn check_reports_credentials_that_are_not_least_privilege() {
    // moto evaluates no session policy, so the write outside the prefix goes through: exactly
    // what `check` exists to catch with a misconfigured role.
    let moto = Moto::start();
    moto.s3()
        .create_bucket()
        .bucket("media")
        .send()
        .await
        .expect("bucket in moto");
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stsgate"))
        .args(["--data-dir"])
        .arg(dir.path())
        .arg("check")
        .env("STSGATE_STORAGE__PROVIDER", "aws")
        .env("STSGATE_STORAGE__STS_ENDPOINT", &moto.url)
        .env("STSGATE_STORAGE__ENDPOINT", &moto.url)
        .env("STSGATE_STORAGE__ROLE_ARN", ROLE)
        .env("STSGATE_STORAGE__ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env(
            "STSGATE_STORAGE__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env("STSGATE_STORAGE__DURATION", "900")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("✓ credentials issued") && text.contains("✓ probe uploaded"),
        "stdout:\n{text}\nstderr:\n{errors}"
    );
    assert!(text.contains("NOT least-privilege"), "{text}");
    assert!(
        text.contains("– read the probe back"),
        "no administrator access on aws: {text}"
    );
}
