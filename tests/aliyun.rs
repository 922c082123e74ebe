//! The `ali` provider against a loopback stand-in for Alibaba Cloud STS (no real peer can run
//! here). The stand-in only records requests and answers in the documented shapes; it computes no
//! signature. The signature of each recorded request is recomputed by Python's standard library,
//! an implementation independent of ours, from the raw bytes on the wire.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{Options, TestService, storage_config_get};

const SECRET: &str = "testsecret*~ 中";
/// A role name with a space, `~` and non-ASCII, to exercise the percent-encoding rules.
const ROLE: &str = "acs:ram::123456789012:role/stsgate upload~ü";

#[derive(Clone, Copy)]
enum Answer {
    Credentials,
    Throttled,
}

type Recorded = Arc<Mutex<Vec<(String, String)>>>;

async fn fake_sts(answer: Answer) -> (String, Recorded) {
    let recorded: Recorded = Arc::default();
    let log = recorded.clone();
    let app = axum::Router::new().fallback(move |RawQuery(query): RawQuery, body: String| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push((query.unwrap_or_default(), body));
            match answer {
                Answer::Credentials => (
                    StatusCode::OK,
                    r#"{"RequestId":"6894B13B-6D71-4EF5-88FA-F32781734A7F","AssumedRoleUser":{"Arn":"acs:ram::123456789012:role/stsgate/x","AssumedRoleId":"1:x"},"Credentials":{"SecurityToken":"CAIS8AN1q6Ft5B2yfSjIr5b3","AccessKeyId":"STS.NUBdKtVadL1U8aBJ2TH6PWoYo","AccessKeySecret":"9NG2P2yJaUrck576CkdRoRbchKssJiZygi5D93CBsduY","Expiration":"2099-01-01T00:00:00Z"}}"#,
                )
                    .into_response(),
                Answer::Throttled => (
                    StatusCode::BAD_REQUEST,
                    r#"{"RequestId":"A1","HostId":"sts.aliyuncs.com","Code":"Throttling.User","Message":"Request was denied due to user flow control."}"#,
                )
                    .into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, recorded)
}

async fn service(sts: &str) -> TestService {
    options(sts).start().await
}

/// The service's options for the `ali` provider with `sts` as its STS endpoint.
fn options(sts: &str) -> Options {
    Options::default()
        .env("STSGATE_STORAGE__PROVIDER", "ali")
        .env("STSGATE_STORAGE__REGION", "cn-hangzhou")
        .env("STSGATE_STORAGE__BUCKET", "dji-media")
        .env("STSGATE_STORAGE__STS_ENDPOINT", sts)
        .env("STSGATE_STORAGE__ROLE_ARN", ROLE)
        .env("STSGATE_STORAGE__ACCESS_KEY_ID", "testid")
        .env("STSGATE_STORAGE__SECRET_ACCESS_KEY", SECRET)
}

/// What Python makes of a recorded request: `OK` when its signature is as documented, then the
/// role ARN it read.
fn verify(query: &str, form: &str) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", VERIFY, query, form, SECRET])
        .output()
        .expect("python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const VERIFY: &str = r#"
import base64, hashlib, hmac, sys, urllib.parse
query, body, secret = sys.argv[1], sys.argv[2], sys.argv[3]
params = urllib.parse.parse_qsl(query, keep_blank_values=True) + urllib.parse.parse_qsl(body, keep_blank_values=True)
sent = [v for k, v in params if k == "Signature"]
enc = lambda s: urllib.parse.quote(s, safe="-_.~")
canonical = "&".join(enc(k) + "=" + enc(v) for k, v in sorted((k, v) for k, v in params if k != "Signature"))
string_to_sign = "POST&" + enc("/") + "&" + enc(canonical)
expected = base64.b64encode(hmac.new((secret + "&").encode(), string_to_sign.encode(), hashlib.sha1).digest()).decode()
print("OK" if sent == [expected] else "MISMATCH expected %s sent %s" % (expected, sent))
print(dict(params).get("RoleArn"))
"#;

#[tokio::test]
async fn assume_role_is_signed_as_documented_and_devices_get_oss_settings() {
    let (url, recorded) = fake_sts(Answer::Credentials).await;
    let svc = service(&url).await;
    let (status, body) = svc.sts("ws-ali", Some(&svc.token("ws-ali"))).await;
    assert_eq!(status, 200, "{body}");
    let data = &body["data"];
    assert_eq!(data["provider"], "ali");
    assert_eq!(data["endpoint"], "https://oss-cn-hangzhou.aliyuncs.com");
    assert_eq!(data["region"], "cn-hangzhou");
    assert_eq!(data["bucket"], "dji-media");
    assert_eq!(
        data["credentials"]["access_key_id"],
        "STS.NUBdKtVadL1U8aBJ2TH6PWoYo"
    );
    assert_eq!(
        data["credentials"]["security_token"],
        "CAIS8AN1q6Ft5B2yfSjIr5b3"
    );

    let (query, form) = recorded.lock().unwrap()[0].clone();
    let stdout = verify(&query, &form);
    assert!(
        stdout.starts_with("OK"),
        "{stdout}\nquery: {query}\nform: {form}"
    );
    assert!(
        stdout.contains(ROLE),
        "the role ARN survives the encoding: {stdout}"
    );
    for part in [
        "Action=AssumeRole",
        "Version=2015-04-01",
        "Format=JSON",
        "SignatureMethod=HMAC-SHA1",
        "SignatureVersion=1.0",
    ] {
        assert!(query.contains(part), "{part} in {query}");
    }
    assert!(
        form.contains("Policy=") && form.contains("oss%3APutObject"),
        "{form}"
    );

    // The dock gets the same object for the default workspace, from its own AssumeRole.
    let mut dock = svc.dock("ALIDOCK1").await;
    let reply = dock.request(&storage_config_get("ali", "1")).await;
    assert_eq!(reply["data"]["output"]["provider"], "ali", "{reply}");
    assert_eq!(recorded.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn throttling_is_retried_then_reported() {
    let (url, recorded) = fake_sts(Answer::Throttled).await;
    let svc = service(&url).await;
    let (status, body) = svc.sts("ws-ali", Some(&svc.token("ws-ali"))).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_i64()),
        (503, Some(10503)),
        "{body}"
    );
    assert_eq!(
        recorded.lock().unwrap().len(),
        3,
        "three attempts with back-off"
    );
}

#[tokio::test]
async fn a_cached_credential_is_served_while_the_upstream_is_down() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, SystemTime};

    // Credentials live 20 s: fresh for 10 s, then served (and refreshed) down to the 5 s floor.
    let down = Arc::new(AtomicBool::new(false));
    let switch = down.clone();
    let app = axum::Router::new().fallback(move || {
        let down = switch.clone();
        async move {
            if down.load(Ordering::SeqCst) {
                return (StatusCode::SERVICE_UNAVAILABLE, r#"{"Code":"ServiceUnavailable","RequestId":"B2"}"#.to_owned());
            }
            let expiration = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(20));
            (
                StatusCode::OK,
                format!(r#"{{"RequestId":"C3","Credentials":{{"SecurityToken":"t","AccessKeyId":"STS.CACHED","AccessKeySecret":"s","Expiration":"{expiration}"}}}}"#),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    let svc = Options::default()
        .env("STSGATE_STORAGE__PROVIDER", "ali")
        .env("STSGATE_STORAGE__REGION", "cn-hangzhou")
        .env("STSGATE_STORAGE__STS_ENDPOINT", &url)
        .env("STSGATE_STORAGE__ROLE_ARN", ROLE)
        .env("STSGATE_STORAGE__ACCESS_KEY_ID", "testid")
        .env("STSGATE_STORAGE__SECRET_ACCESS_KEY", SECRET)
        .env("STSGATE_STORAGE__MIN_REMAINING", "5s")
        .env("STSGATE_STORAGE__EXPIRE_MARGIN", "1s")
        .env("STSGATE_STORAGE__FAILURE_BACKOFF", "1s")
        .start()
        .await;
    let ask = || async { svc.sts("ws-down", Some(&svc.token("ws-down"))).await };
    let (status, first) = ask().await;
    assert_eq!(status, 200, "{first}");

    down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(11)).await; // stale: 9 s left, floor 5 s
    for _ in 0..3 {
        let (status, body) = ask().await;
        assert_eq!(
            status, 200,
            "a still-valid credential is served while the upstream is down: {body}"
        );
        assert_eq!(body["data"]["credentials"]["access_key_id"], "STS.CACHED");
        assert!(
            body["data"]["credentials"]["expire"].as_u64().unwrap() < 10,
            "{body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(4)).await; // below the floor now
    let (status, body) = ask().await;
    assert_eq!(
        (status.as_u16(), body["code"].as_i64()),
        (503, Some(10503)),
        "never a credential below the floor: {body}"
    );
}

/// Per device on Alibaba Cloud: the dock is the `SourceIdentity` and names the session, inside
/// the signed form (verified independently); no session tags, which Alibaba's AssumeRole lacks.
#[tokio::test]
async fn a_per_device_credential_carries_the_device_as_source_identity() {
    let (url, recorded) = fake_sts(Answer::Credentials).await;
    let svc = options(&url)
        .env("STSGATE_STORAGE__PER_DEVICE", "true")
        .env(
            "STSGATE_STORAGE__OBJECT_KEY_PREFIX",
            "{workspace_id}/{device}",
        )
        .start()
        .await;
    let mut dock = svc.dock("ALIDOCK1").await;
    let reply = dock.request(&storage_config_get("ali-1", "1")).await;
    assert_eq!(
        reply["data"]["output"]["object_key_prefix"], "default/ALIDOCK1",
        "{reply}"
    );
    let (query, form) = recorded.lock().unwrap()[0].clone();
    let stdout = verify(&query, &form);
    assert!(stdout.starts_with("OK"), "{stdout}\nform: {form}");
    assert!(form.contains("SourceIdentity=ALIDOCK1"), "{form}");
    assert!(form.contains("RoleSessionName=stsgate-ALIDOCK1"), "{form}");
    assert!(
        form.contains("default%2FALIDOCK1%2F*"),
        "the policy names the device's prefix: {form}"
    );
    assert!(!form.contains("Tags"), "{form}");
}
