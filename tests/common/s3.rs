//! S3 calls the store tests make again and again: errors as (HTTP status, S3 code), multipart
//! steps with a device's client, and a foreign client's process with a device's credentials.

use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use serde_json::Value;

/// HTTP status and S3 error code of a failed call.
pub fn failure<E: ProvideErrorMetadata>(
    e: aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> (u16, String) {
    let status = e.raw_response().map_or(0, |r| r.status().as_u16());
    (status, e.code().unwrap_or("(no code)").to_owned())
}

/// CreateMultipartUpload in bucket `media`: the upload id.
pub async fn create(s3: &aws_sdk_s3::Client, key: &str) -> String {
    s3.create_multipart_upload()
        .bucket("media")
        .key(key)
        .send()
        .await
        .expect("create")
        .upload_id()
        .expect("an upload id")
        .to_owned()
}

/// UploadPart: the part as Complete names it.
pub async fn upload_part(
    s3: &aws_sdk_s3::Client,
    key: &str,
    id: &str,
    n: i32,
    body: &[u8],
) -> Result<CompletedPart, (u16, String)> {
    let out = s3
        .upload_part()
        .bucket("media")
        .key(key)
        .upload_id(id)
        .part_number(n)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .map_err(failure)?;
    Ok(CompletedPart::builder()
        .part_number(n)
        .e_tag(out.e_tag().expect("an ETag"))
        .build())
}

/// CompleteMultipartUpload: the object's ETag, unquoted.
pub async fn complete(
    s3: &aws_sdk_s3::Client,
    key: &str,
    id: &str,
    parts: &[CompletedPart],
) -> Result<String, (u16, String)> {
    s3.complete_multipart_upload()
        .bucket("media")
        .key(key)
        .upload_id(id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts.to_vec()))
                .build(),
        )
        .send()
        .await
        .map(|o| o.e_tag().unwrap_or_default().trim_matches('"').to_owned())
        .map_err(failure)
}

/// A command with the device's credentials in the standard AWS environment variables, and no
/// configuration from the machine it runs on.
pub fn with_credentials(program: &str, config: &Value) -> tokio::process::Command {
    let creds = &config["credentials"];
    let mut cmd = tokio::process::Command::new(program);
    cmd.env(
        "AWS_ACCESS_KEY_ID",
        creds["access_key_id"].as_str().expect("access key"),
    )
    .env(
        "AWS_SECRET_ACCESS_KEY",
        creds["access_key_secret"].as_str().expect("secret"),
    )
    .env(
        "AWS_SESSION_TOKEN",
        creds["security_token"].as_str().expect("token"),
    )
    .env(
        "AWS_DEFAULT_REGION",
        config["region"].as_str().expect("region"),
    )
    .env("AWS_CONFIG_FILE", "/dev/null")
    .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
    .env_remove("AWS_PROFILE");
    cmd
}

/// Runs a foreign client's process to its end: its stdout, once it has succeeded.
pub async fn succeeds(mut command: tokio::process::Command) -> String {
    let out = command.output().await.expect("the client runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
