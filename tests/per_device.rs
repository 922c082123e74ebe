//! Per-device credentials (`per_device = true`): each dock and pilot its own credential, under its
//! own prefix, named upstream as its source identity. AWS against moto behind a recording proxy
//! (moto answers AssumeRole but keeps no SourceIdentity or Tags, so the proxy records what was
//! sent); the embedded store refusing one device's credential under another device's prefix; and
//! `audit.required`, which hands out nothing it cannot record.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Moto, Options, TestService, device_s3, device_upload, storage_config_get};
use serde_json::Value;

/// A proxy in front of moto's STS that records every request's form body.
async fn recording_proxy(moto: &str) -> (String, Arc<Mutex<Vec<String>>>) {
    let recorded: Arc<Mutex<Vec<String>>> = Arc::default();
    let (log, target) = (recorded.clone(), moto.to_owned());
    let client = reqwest::Client::new();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: String| {
            let (log, target, client) = (log.clone(), target.clone(), client.clone());
            async move {
                log.lock().unwrap().push(body.clone());
                let mut forward = client.request(method, format!("{target}{uri}"));
                for (name, value) in &headers {
                    if name != "host" && name != "content-length" {
                        forward = forward.header(name, value);
                    }
                }
                let answer = forward.body(body).send().await.expect("moto answers");
                let status = answer.status().as_u16();
                let bytes = answer.bytes().await.expect("moto's body");
                (axum::http::StatusCode::from_u16(status).unwrap(), bytes)
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, recorded)
}

/// The form's fields, decoded.
fn form(body: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A dock connected as `sn` and its answer to one `storage_config_get`.
async fn ask_as(svc: &TestService, sn: &str) -> (common::Dock, Value) {
    let mut dock = svc.dock(sn).await;
    let reply = dock.request(&storage_config_get(sn, "1")).await;
    (dock, reply)
}

/// The audit file's records.
fn audit_records(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record"))
        .collect()
}

#[tokio::test]
async fn aws_per_device_credentials_name_the_device_upstream_and_in_the_audit_trail() {
    let moto = Moto::start();
    moto.s3()
        .create_bucket()
        .bucket("fleet-media")
        .send()
        .await
        .expect("bucket");
    let (proxy, recorded) = recording_proxy(&moto.url).await;
    let audit = tempfile::NamedTempFile::new().expect("audit file");
    let svc = Options::default()
        .file(&format!(
            r#"[devices]
default_workspace = "ws-fleet"

[audit]
path = "{audit}"

[profiles.fleet]
provider = "aws"
bucket = "fleet-media"
endpoint = "{moto}"
sts_endpoint = "{proxy}"
role_arn = "arn:aws:iam::123456789012:role/stsgate-upload"
access_key_id = "AKIAIOSFODNN7EXAMPLE"
per_device = true
object_key_prefix = "{{workspace_id}}/{{device}}"
duration = "900s"

[workspaces.profile]
ws-fleet = "fleet"
"#,
            audit = audit.path().display(),
            moto = moto.url,
        ))
        .env(
            "STSGATE_PROFILES__FLEET__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .start()
        .await;

    let (mut dock_a, a) = ask_as(&svc, "DOCKA0001").await;
    let (_, b) = ask_as(&svc, "DOCKB0002").await;
    let (a, b) = (&a["data"]["output"], &b["data"]["output"]);
    assert_eq!(a["object_key_prefix"], "ws-fleet/DOCKA0001", "{a}");
    assert_eq!(b["object_key_prefix"], "ws-fleet/DOCKB0002", "{b}");
    assert_ne!(
        a["credentials"]["access_key_id"], b["credentials"]["access_key_id"],
        "each dock its own credential"
    );
    // A pilot whose user name needs cleaning: its key is readable and unique.
    let token = stsgate::auth::mint(
        &svc.secret(),
        "ws-fleet",
        "jane doe",
        Duration::from_secs(3600),
        None,
    )
    .unwrap();
    let (status, pilot) = svc.sts("ws-fleet", Some(&token)).await;
    assert_eq!(status, 200, "{pilot}");
    let pilot_prefix = pilot["data"]["object_key_prefix"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        pilot_prefix.starts_with("ws-fleet/jane-doe-")
            && pilot_prefix.len() == "ws-fleet/jane-doe-".len() + 12,
        "{pilot_prefix}"
    );

    let sent: Vec<Vec<(String, String)>> =
        recorded.lock().unwrap().iter().map(|b| form(b)).collect();
    let of = |identity: &str| {
        sent.iter()
            .find(|f| field(f, "SourceIdentity") == Some(identity))
            .unwrap_or_else(|| panic!("an AssumeRole for {identity}: {sent:?}"))
            .clone()
    };
    let dock_call = of("DOCKA0001");
    assert_eq!(field(&dock_call, "Action"), Some("AssumeRole"));
    assert_eq!(
        field(&dock_call, "RoleSessionName"),
        Some("stsgate-DOCKA0001")
    );
    assert_eq!(
        field(&dock_call, "Tags.member.1.Key"),
        Some("stsgate-workspace")
    );
    assert_eq!(field(&dock_call, "Tags.member.1.Value"), Some("ws-fleet"));
    assert_eq!(
        field(&dock_call, "Tags.member.2.Key"),
        Some("stsgate-front")
    );
    assert_eq!(field(&dock_call, "Tags.member.2.Value"), Some("mqtt"));
    let policy: Value = serde_json::from_str(field(&dock_call, "Policy").unwrap()).unwrap();
    assert_eq!(
        policy["Statement"][0]["Resource"][0],
        "arn:aws:s3:::fleet-media/ws-fleet/DOCKA0001/*"
    );
    let pilot_key = pilot_prefix.trim_start_matches("ws-fleet/");
    let pilot_call = of(pilot_key);
    assert_eq!(field(&pilot_call, "Tags.member.2.Value"), Some("http"));
    assert_eq!(sent.len(), 3, "one call per device");

    // The device uploads under its own prefix with what it was given.
    device_upload(a, "ws-fleet/DOCKA0001/DJI_0001.JPG", b"photo").await;

    // Asking again is a cache hit: no new call upstream.
    let again = dock_a.request(&storage_config_get("a2", "2")).await;
    assert_eq!(
        again["data"]["output"]["credentials"]["access_key_id"],
        a["credentials"]["access_key_id"]
    );
    assert_eq!(recorded.lock().unwrap().len(), 3);

    // The audit trail joins with CloudTrail on the source identity.
    let wait = async {
        while audit_records(audit.path()).len() < 4 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("four records");
    let records = audit_records(audit.path());
    let dock_record = records
        .iter()
        .find(|r| r["device"] == "DOCKA0001")
        .expect("the dock's record");
    assert_eq!(dock_record["source_identity"], "DOCKA0001");
    assert_eq!(dock_record["profile"], "fleet");
    assert_eq!(dock_record["prefix"], "ws-fleet/DOCKA0001");
    let pilot_record = records
        .iter()
        .find(|r| r["subject"] == "jane doe")
        .expect("the pilot's record");
    assert_eq!(pilot_record["source_identity"], pilot_key);
}

/// On the embedded store a dock's credential writes under its own prefix only: another dock's
/// prefix in the same workspace is refused, and that dock keeps uploading.
#[tokio::test]
async fn a_devices_credential_writes_under_its_own_prefix_and_no_other_devices() {
    let svc = Options::default()
        .env("STSGATE_STORAGE__PER_DEVICE", "true")
        .env(
            "STSGATE_STORAGE__OBJECT_KEY_PREFIX",
            "{workspace_id}/{device}",
        )
        .start()
        .await;
    let (_, a) = ask_as(&svc, "DOCKA0001").await;
    let (_, b) = ask_as(&svc, "DOCKB0002").await;
    let (a, b) = (&a["data"]["output"], &b["data"]["output"]);
    assert_eq!(a["object_key_prefix"], "default/DOCKA0001", "{a}");

    let put = |config: &Value, key: &'static str| {
        device_s3(config)
            .put_object()
            .bucket("media")
            .key(key)
            .body(b"x".to_vec().into())
            .send()
    };
    let refused = put(a, "default/DOCKB0002/forged.jpg")
        .await
        .expect_err("a's credential under b's prefix");
    assert_eq!(
        refused.into_service_error().meta().code(),
        Some("AccessDenied")
    );
    put(a, "default/DOCKA0001/own.jpg").await.expect("a's own");
    put(b, "default/DOCKB0002/own.jpg").await.expect("b's own");
    assert!(
        svc.read_object("default/DOCKB0002/forged.jpg")
            .await
            .is_none()
    );
    assert_eq!(
        svc.read_object("default/DOCKA0001/own.jpg")
            .await
            .as_deref(),
        Some(&b"x"[..])
    );
}

/// `audit.required`: a credential whose record cannot be written (here a full disk: writes to
/// `/dev/full` fail with ENOSPC) is not handed out on either front; 10500 with a message, and
/// counted. Without it, the same service answers and counts the records it dropped.
#[tokio::test]
async fn audit_required_hands_out_nothing_it_cannot_record() {
    let full = Options::default()
        .env("STSGATE_AUDIT__PATH", "/dev/full")
        .env("STSGATE_AUDIT__REQUIRED", "true")
        .start()
        .await;
    let (status, body) = full.sts("default", Some(&full.token("default"))).await;
    assert!(status.is_server_error(), "{status} {body}");
    assert_eq!(body["code"], 10500, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("audit log cannot be written"),
        "{body}"
    );
    assert!(
        body.get("data")
            .is_none_or(|d| d.get("credentials").is_none()),
        "{body}"
    );
    let mut dock = full.dock("DOCK1").await;
    let reply = dock.request(&storage_config_get("t", "1")).await;
    assert_eq!(reply["data"]["result"], 10500, "{reply}");
    assert!(
        reply["data"]
            .get("output")
            .is_none_or(|o| o.get("credentials").is_none()),
        "{reply}"
    );
    assert_eq!(full.counter("stsgate_audit_refused_total", "").await, 2.0);

    let lenient = Options::default()
        .env("STSGATE_AUDIT__PATH", "/dev/full")
        .start()
        .await;
    let (status, body) = lenient
        .sts("default", Some(&lenient.token("default")))
        .await;
    assert_eq!(status, 200, "{body}");
}
