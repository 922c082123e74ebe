//! Pilot 2's side: `POST /storage/api/v1/workspaces/{id}/sts` with `x-auth-token`, against the
//! whole service in-process.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;

use common::{Options, TestService};
use reqwest::StatusCode;
use serde_json::Value;

/// Produced outside this crate (Python hmac/hashlib) in the DJI demo's claim layout, signed with
/// the demo's documented secret `CloudApiSample`, issuer `DJI`, expiring in 2100.
const DEMO_TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjoiYmU3YzZjM2QtYWZlOS00YmU0LWI5ZWItYzU1MDY2YzA5MTRlIiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6IjIiLCJ3b3Jrc3BhY2VfaWQiOiJlM2RlYTBmNS0zN2YyLTRkNzktYWU1OC00OTBhZjMyMjgwNjkiLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.s7DPoXE8ng5c1QPU9OlavSRL7J7Mxfri7n5VggdJAOg";
/// The same claims with `exp` in 2023.
const DEMO_EXPIRED: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjoiYmU3YzZjM2QtYWZlOS00YmU0LWI5ZWItYzU1MDY2YzA5MTRlIiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6IjIiLCJ3b3Jrc3BhY2VfaWQiOiJlM2RlYTBmNS0zN2YyLTRkNzktYWU1OC00OTBhZjMyMjgwNjkiLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDg2NDAwfQ.YqioEEnJEheLhFGzTyylWPPRUl6zB-OYfuvJpiqgjFM";
const DEMO_WORKSPACE: &str = "e3dea0f5-37f2-4d79-ae58-490af3228069";

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn assert_error(
    status: StatusCode,
    body: &Value,
    want_status: StatusCode,
    want_code: i64,
    mentions: &str,
) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["code"], want_code, "{body}");
    assert_eq!(
        keys(body),
        set(&["code", "message"]),
        "an error has no data: {body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains(mentions),
        "`{message}` should mention `{mentions}`"
    );
}

#[tokio::test]
async fn pilot_gets_credentials_for_its_workspace() {
    let svc = TestService::start().await;
    let token = svc.token("ws-pilot");
    let (status, body) = svc.sts("ws-pilot", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["code"], 0);
    assert_eq!(body["message"], "success");
    let data = &body["data"];
    assert_eq!(
        keys(data),
        set(&[
            "bucket",
            "credentials",
            "endpoint",
            "object_key_prefix",
            "provider",
            "region"
        ])
    );
    assert_eq!(
        keys(&data["credentials"]),
        set(&[
            "access_key_id",
            "access_key_secret",
            "expire",
            "security_token"
        ])
    );
    assert_eq!(data["bucket"], "media");
    assert_eq!(data["provider"], "minio");
    assert_eq!(data["region"], "us-east-1");
    assert_eq!(data["object_key_prefix"], "ws-pilot");
    assert!(
        data["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("http://127.0.0.1:")),
        "{data}"
    );
    let creds = &data["credentials"];
    assert!(
        creds["access_key_id"]
            .as_str()
            .is_some_and(|k| k.starts_with("ASIA") && k.len() == 20)
    );
    assert!(
        creds["access_key_secret"]
            .as_str()
            .is_some_and(|s| s.len() == 40)
    );
    assert!(
        creds["security_token"]
            .as_str()
            .is_some_and(|s| s.len() >= 100)
    );
    // An integer number of seconds: the 1 h default less the 60 s margin, give or take a second.
    let expire = creds["expire"].as_u64().expect("expire is an integer");
    assert!((3530..=3540).contains(&expire), "{expire}");
}

#[tokio::test]
async fn the_same_workspace_gets_the_cached_credential() {
    let svc = TestService::start().await;
    let token = svc.token("ws-cache");
    let (_, first) = svc.sts("ws-cache", Some(&token)).await;
    let (_, second) = svc.sts("ws-cache", Some(&token)).await;
    assert_eq!(
        first["data"]["credentials"]["access_key_id"],
        second["data"]["credentials"]["access_key_id"]
    );
    assert!(
        second["data"]["credentials"]["expire"].as_u64()
            <= first["data"]["credentials"]["expire"].as_u64()
    );
    let other_token = svc.token("ws-other");
    let (_, other) = svc.sts("ws-other", Some(&other_token)).await;
    assert_ne!(
        first["data"]["credentials"]["access_key_id"],
        other["data"]["credentials"]["access_key_id"]
    );
    assert_eq!(other["data"]["object_key_prefix"], "ws-other");
}

#[tokio::test]
async fn a_dji_demo_token_is_accepted() {
    let svc = Options::default()
        .env("STSGATE_AUTH__JWT_SECRET", "CloudApiSample")
        .env("STSGATE_AUTH__ISSUER", "DJI")
        .start()
        .await;
    let (status, body) = svc.sts(DEMO_WORKSPACE, Some(DEMO_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["object_key_prefix"], DEMO_WORKSPACE);
}

#[tokio::test]
async fn every_auth_failure_is_a_401_with_a_reason() {
    let svc = Options::default()
        .env("STSGATE_AUTH__JWT_SECRET", "CloudApiSample")
        .start()
        .await;
    let (s, b) = svc.sts(DEMO_WORKSPACE, None).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, 10401, "missing");
    let (s, b) = svc.sts(DEMO_WORKSPACE, Some("not-a-jwt")).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, 10401, "not a valid jwt");
    let (s, b) = svc.sts(DEMO_WORKSPACE, Some(DEMO_EXPIRED)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, 10401, "expired");
    let forged = stsgate::auth::mint(
        &stsgate::secret::Secret::new("some-other-secret"),
        DEMO_WORKSPACE,
        "mallory",
        std::time::Duration::from_secs(60),
        None,
    )
    .expect("token");
    let (s, b) = svc.sts(DEMO_WORKSPACE, Some(&forged)).await;
    assert_error(s, &b, StatusCode::UNAUTHORIZED, 10401, "signature");
}

#[tokio::test]
async fn a_token_for_another_workspace_is_a_403() {
    let svc = TestService::start().await;
    let token = svc.token("ws-a");
    let (s, b) = svc.sts("ws-b", Some(&token)).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, 10403, "another workspace");
    // A path that is not even a valid workspace id cannot match the token either.
    let (s, b) = svc.sts("..%2Fetc", Some(&token)).await;
    assert_error(s, &b, StatusCode::FORBIDDEN, 10403, "another workspace");
}

#[tokio::test]
async fn a_token_whose_workspace_is_unusable_is_a_400() {
    let svc = TestService::start().await;
    let token = svc.token("a.b");
    let (s, b) = svc.sts("a.b", Some(&token)).await;
    assert_error(s, &b, StatusCode::BAD_REQUEST, 10400, "workspace id");
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let svc = TestService::start().await;
    let (status, body) = svc.get("/nope").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.contains("\"code\":10400"), "{body}");
    let (status, body) = svc.get("/storage/api/v1/workspaces/ws/sts").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body.contains("\"code\":10400"), "{body}");
}

/// A plain workspace segment is answered by hand and any other by axum's router (`http/api.rs`):
/// the answers are the same whichever way a request takes.
#[tokio::test]
async fn every_shape_of_sts_path_is_answered_alike() {
    let svc = TestService::start().await;
    let token = svc.token("ws-1");
    let (s, plain) = svc.sts("ws-1", Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{plain}");
    // Percent-encoded, so routed: decoded to the same workspace, the same credential and prefix.
    let (s, encoded) = svc.sts("ws%2D1", Some(&token)).await;
    assert_eq!(s, StatusCode::OK, "{encoded}");
    for field in ["/data/credentials/access_key_id", "/data/object_key_prefix"] {
        assert_eq!(encoded.pointer(field), plain.pointer(field), "{field}");
    }
    // The same refusals either way, in the same order: no token, then another workspace.
    for workspace in ["ws-1", "ws%2D1"] {
        let (s, b) = svc.sts(workspace, None).await;
        assert_error(s, &b, StatusCode::UNAUTHORIZED, 10401, "");
    }
    // (An empty segment is a workspace id the router matches, and no token's.)
    for workspace in ["ws-2", "ws%2D2", ""] {
        let (s, b) = svc.sts(workspace, Some(&token)).await;
        assert_error(s, &b, StatusCode::FORBIDDEN, 10403, "another workspace");
    }
    // No such endpoint: two segments, an empty one after, a trailing slash.
    for workspace in ["ws/1", "ws-1/", "ws-1/sts/"] {
        let (s, b) = svc.sts(workspace, Some(&token)).await;
        assert_error(s, &b, StatusCode::NOT_FOUND, 10400, "no such endpoint");
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let svc = TestService::start().await;
    assert_eq!(svc.get("/healthz").await.0, StatusCode::OK);
    let (status, body) = svc.get("/readyz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let before = svc
        .counter(
            "stsgate_requests_total",
            r#"front="http",result="unauthorized""#,
        )
        .await;
    svc.sts("ws", None).await;
    let after = svc
        .counter(
            "stsgate_requests_total",
            r#"front="http",result="unauthorized""#,
        )
        .await;
    assert!(after >= before + 1.0, "{before} -> {after}");
}

#[tokio::test]
async fn no_secret_reaches_error_bodies_or_debug_output() {
    let svc = TestService::start().await;
    let token = svc.token("ws-secret");
    let (_, ok) = svc.sts("ws-secret", Some(&token)).await;
    let secret = ok["data"]["credentials"]["access_key_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let (_, refused) = svc.sts("ws-x", Some(&token)).await;
    let text = refused.to_string();
    assert!(!text.contains(&secret) && !text.contains(&token));
    let issued = svc
        .service
        .gateway
        .for_workspace(stsgate::domain::WorkspaceId::parse("ws-secret").expect("id"))
        .await
        .expect("issued");
    let debug = format!("{issued:?}");
    assert!(!debug.contains(&secret), "{debug}");
    assert!(
        !debug.contains(issued.config().credentials.security_token.expose()),
        "{debug}"
    );
}

#[tokio::test]
async fn short_lived_credentials_are_refreshed_ahead_of_expiry() {
    // Life 4 s, floor 1 s: fresh for 2 s, then served while one refresh runs, never under 1 s.
    let svc = Options::default()
        .env("STSGATE_STORAGE__DURATION", "4s")
        .env("STSGATE_STORAGE__MIN_REMAINING", "1s")
        .env("STSGATE_STORAGE__EXPIRE_MARGIN", "0s")
        .start()
        .await;
    let token = svc.token("ws-short");
    let key = |body: &Value| {
        body["data"]["credentials"]["access_key_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (_, first) = svc.sts("ws-short", Some(&token)).await;
    let first_key = key(&first);
    assert!(
        first["data"]["credentials"]["expire"]
            .as_u64()
            .is_some_and(|e| (3..=4).contains(&e)),
        "{first}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    let (_, stale) = svc.sts("ws-short", Some(&token)).await;
    assert_eq!(key(&stale), first_key, "a stale credential is still served");
    assert!(
        stale["data"]["credentials"]["expire"]
            .as_u64()
            .is_some_and(|e| e <= 2),
        "{stale}"
    );

    // The background refresh replaces it while the old one is still valid (1.7 s left, and the
    // floor is at 1 s): poll for it rather than guess how long a loaded machine takes.
    let mut refreshed = stale.clone();
    for _ in 0..14 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        refreshed = svc.sts("ws-short", Some(&token)).await.1;
        if key(&refreshed) != first_key {
            break;
        }
    }
    assert_ne!(key(&refreshed), first_key, "refreshed ahead of expiry");
    assert!(
        refreshed["data"]["credentials"]["expire"]
            .as_u64()
            .is_some_and(|e| e >= 3),
        "{refreshed}"
    );
    let upstream = svc
        .counter(
            "stsgate_upstream_calls_total",
            r#"provider="local",profile="default",outcome="ok""#,
        )
        .await;
    assert!(upstream >= 2.0, "{upstream}");
}

#[tokio::test]
async fn every_credential_handed_out_is_audited_without_secrets() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("audit.jsonl");
    let svc = Options::default()
        .env("STSGATE_AUDIT__PATH", path.to_str().unwrap())
        .start()
        .await;
    let token = svc.token("ws-audit");
    let (_, http) = svc.sts("ws-audit", Some(&token)).await;
    let (_, again) = svc.sts("ws-audit", Some(&token)).await;
    let mut dock = svc.dock("AUDIT0001").await;
    let reply = dock.request(&common::storage_config_get("a", "1")).await;
    svc.sts("ws-audit", None).await; // refused: not audited

    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    let records: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let first = &records[0];
    assert_eq!(first["front"], "http");
    assert_eq!(first["workspace"], "ws-audit");
    assert_eq!(first["subject"], "pilot");
    assert_eq!(first["prefix"], "ws-audit");
    assert_eq!(first["provider"], "minio");
    assert_eq!(first["profile"], "default");
    assert_eq!(
        first["access_key_id"],
        http["data"]["credentials"]["access_key_id"]
    );
    assert_eq!(first["cache_hit"], false);
    assert!(
        first["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{first}"
    );
    assert_eq!(records[1]["cache_hit"], true);
    assert_eq!(records[2]["front"], "mqtt");
    assert_eq!(records[2]["device"], "AUDIT0001");
    assert_eq!(records[2]["workspace"], "default");
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [
        &http["data"]["credentials"]["access_key_secret"],
        &http["data"]["credentials"]["security_token"],
        &again["data"]["credentials"]["security_token"],
        &reply["data"]["output"]["credentials"]["access_key_secret"],
    ] {
        assert!(
            !text.contains(secret.as_str().unwrap()),
            "a secret in the audit log"
        );
    }
    assert!(!text.contains(&token));
}

#[tokio::test]
async fn a_pilot_over_its_limit_gets_429_with_retry_after() {
    let svc = Options::default()
        .env("STSGATE_LIMITS__SUBJECT_PER_MINUTE", "6")
        .env("STSGATE_LIMITS__SUBJECT_BURST", "2")
        .start()
        .await;
    let token = svc.token("ws-limit");
    for _ in 0..2 {
        assert_eq!(svc.sts("ws-limit", Some(&token)).await.0, StatusCode::OK);
    }
    let response = reqwest::Client::new()
        .post(format!(
            "{}/storage/api/v1/workspaces/ws-limit/sts",
            svc.base_url
        ))
        .header("x-auth-token", &token)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        10429,
        "retry in",
    );
    // The same username in another workspace is someone else, with a bucket of its own.
    let other = svc.token("ws-limit-2");
    assert_eq!(svc.sts("ws-limit-2", Some(&other)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn every_answer_carries_a_request_id() {
    let svc = TestService::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/storage/api/v1/workspaces/ws/sts", svc.base_url);
    let generated = client.post(&url).send().await.expect("answer");
    let id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 16, "{id}");
    let next = client.post(&url).send().await.expect("answer");
    assert_ne!(
        next.headers()["x-request-id"],
        id.as_str(),
        "ids are unique"
    );
    let proxied = client
        .post(&url)
        .header("x-request-id", "from-the-proxy-42")
        .send()
        .await
        .expect("answer");
    assert_eq!(proxied.headers()["x-request-id"], "from-the-proxy-42");
}

/// RFC 9111 §5.2.2.5 and RFC 6749 §5.1: no cache between Pilot 2 and the service may keep a
/// credential or a refusal. Every way to the answer: the hand-matched path and the router's
/// (percent-encoded), success and each kind of error, and the other endpoints.
#[tokio::test]
async fn no_answer_may_be_stored_by_a_cache() {
    let svc = Options::default()
        .env("STSGATE_LIMITS__SUBJECT_PER_MINUTE", "1")
        .env("STSGATE_LIMITS__SUBJECT_BURST", "2")
        .start()
        .await;
    let token = svc.token("ws-1");
    let client = reqwest::Client::new();
    let sts = |workspace: &str, token: Option<&str>| {
        let mut request = client.post(format!(
            "{}/storage/api/v1/workspaces/{workspace}/sts",
            svc.base_url
        ));
        if let Some(token) = token {
            request = request.header("x-auth-token", token);
        }
        request.send()
    };
    let mut seen = BTreeSet::new();
    for (workspace, token) in [
        ("ws-1", Some(token.as_str())),   // 200, by hand
        ("ws%2D1", Some(token.as_str())), // 200, routed
        ("ws-1", None),                   // 401
        ("ws-2", Some(token.as_str())),   // 403
        ("ws%2D1", None),                 // 401, routed
        ("ws-1", Some(token.as_str())),   // 429: the burst is spent
    ] {
        let response = sts(workspace, token).await.expect("answer");
        seen.insert(response.status().as_u16());
        assert_eq!(
            response.headers()["cache-control"],
            "no-store",
            "{workspace}"
        );
        assert_eq!(response.headers()["pragma"], "no-cache", "{workspace}");
    }
    assert_eq!(seen, BTreeSet::from([200, 401, 403, 429]));
    for path in ["/healthz", "/readyz", "/metrics", "/nope"] {
        let response = client
            .get(format!("{}{path}", svc.base_url))
            .send()
            .await
            .expect("answer");
        assert_eq!(response.headers()["cache-control"], "no-store", "{path}");
    }
}

/// A proxy's request id is echoed and logged only when it is short visible ASCII; any other is
/// replaced by a fresh one, so a client cannot write what it likes into the answer and the log.
#[tokio::test]
async fn an_oversized_or_odd_request_id_is_replaced_by_a_fresh_one() {
    let svc = TestService::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/storage/api/v1/workspaces/ws/sts", svc.base_url);
    let kept = "k".repeat(128);
    for (sent, echoed) in [
        (kept.clone(), true),
        ("k".repeat(129), false),
        ("with space".to_owned(), false),
        ("tab\there".to_owned(), false),
    ] {
        let response = client
            .post(&url)
            .header("x-request-id", &sent)
            .send()
            .await
            .expect("answer");
        let id = response.headers()["x-request-id"].to_str().unwrap();
        assert_eq!(id == sent, echoed, "{sent:?} answered as {id:?}");
        if !echoed {
            assert_eq!(id.len(), 16, "{id}");
        }
    }
}

#[tokio::test]
async fn metrics_show_requests_cache_and_upstream() {
    let svc = TestService::start().await;
    let token = svc.token("ws-metrics");
    let miss = r#"profile="default",outcome="miss""#;
    let hit = r#"profile="default",outcome="hit""#;
    let (misses, hits) = (
        svc.counter("stsgate_cache_requests_total", miss).await,
        svc.counter("stsgate_cache_requests_total", hit).await,
    );
    let ok = r#"front="http",result="success""#;
    let served = svc.counter("stsgate_requests_total", ok).await;
    svc.sts("ws-metrics", Some(&token)).await;
    svc.sts("ws-metrics", Some(&token)).await;
    assert!(svc.counter("stsgate_cache_requests_total", miss).await >= misses + 1.0);
    assert!(svc.counter("stsgate_cache_requests_total", hit).await >= hits + 1.0);
    assert!(svc.counter("stsgate_requests_total", ok).await >= served + 2.0);
    let (_, text) = svc.get("/metrics").await;
    // The latency histogram, by provider and outcome.
    assert!(
        text.contains(
            r#"stsgate_upstream_seconds_count{provider="local",profile="default",outcome="ok"}"#
        ) || text.contains(
            r#"stsgate_upstream_seconds{provider="local",profile="default",outcome="ok",quantile="#
        ),
        "{text}"
    );
    assert!(text.contains("stsgate_upstream_calls_total{"), "{text}");
}

/// The answer is written from a rendering made once per credential: it must be exactly the bytes
/// serde writes for the same envelope, on the first answer and on cache hits alike.
#[tokio::test]
async fn the_answer_is_byte_for_byte_what_serde_writes() {
    use stsgate::protocol::StorageConfig;
    use stsgate::protocol::http::Envelope;

    let svc = TestService::start().await;
    let token = svc.token("ws-bytes");
    let client = reqwest::Client::new();
    let mut expires = BTreeSet::new();
    for _ in 0..3 {
        let response = client
            .post(format!(
                "{}/storage/api/v1/workspaces/ws-bytes/sts",
                svc.base_url
            ))
            .header("x-auth-token", &token)
            .send()
            .await
            .expect("answer");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "content type"
        );
        let raw = response.text().await.expect("body");
        let parsed: Envelope<StorageConfig> = serde_json::from_str(&raw).expect("envelope");
        expires.insert(parsed.data.as_ref().expect("data").credentials.expire);
        assert_eq!(raw, serde_json::to_string(&parsed).expect("json"));
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    }
    assert!(expires.len() > 1, "expire counts down: {expires:?}");
}
