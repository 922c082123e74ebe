//! Upstream STS failures, scripted by a loopback server that answers as AWS STS does when it
//! throttles, denies, fails, stalls or returns garbage: every case reaches the device as the
//! documented error, within the time-out, retried only where retrying can help.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{Options, TestService};
use tokio::time::Instant;

#[derive(Clone, Copy)]
enum Upstream {
    Throttle,
    Deny,
    Internal,
    Slow,
    Garbage,
}

fn error_xml(code: &str, message: &str) -> String {
    format!(
        r#"<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"#
    )
}

/// Starts the scripted STS; returns its URL and a counter of requests received.
async fn fake_sts(behaviour: Upstream) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            // AWS sends the request id as a header as well as in the body.
            let xml = [("content-type", "text/xml"), ("x-amzn-requestid", "c6104cbe-af31-11e0-8154-cbc7ccf896c7")];
            match behaviour {
                Upstream::Throttle => (StatusCode::BAD_REQUEST, xml, error_xml("Throttling", "Rate exceeded")).into_response(),
                Upstream::Deny => (
                    StatusCode::FORBIDDEN,
                    xml,
                    error_xml("AccessDenied", "User: arn:aws:iam::123456789012:user/internal-user-name is not authorized to perform: sts:AssumeRole"),
                )
                    .into_response(),
                Upstream::Internal => (StatusCode::INTERNAL_SERVER_ERROR, xml, error_xml("InternalFailure", "oops")).into_response(),
                Upstream::Slow => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    StatusCode::OK.into_response()
                }
                Upstream::Garbage => (StatusCode::OK, "<html>definitely not STS</html>").into_response(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, hits)
}

async fn service(sts: &str, timeout: &str) -> TestService {
    Options::default()
        .env("STSGATE_STORAGE__PROVIDER", "aws")
        .env("STSGATE_STORAGE__STS_ENDPOINT", sts)
        .env(
            "STSGATE_STORAGE__ROLE_ARN",
            "arn:aws:iam::123456789012:role/stsgate-upload",
        )
        .env("STSGATE_STORAGE__ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
        .env(
            "STSGATE_STORAGE__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env("STSGATE_STORAGE__DURATION", "900")
        .env("STSGATE_STORAGE__UPSTREAM_TIMEOUT", timeout)
        .start()
        .await
}

/// Asks for credentials over HTTP: (status, code, message, seconds taken).
async fn ask(svc: &TestService, workspace: &str) -> (u16, i64, String, f64) {
    let started = Instant::now();
    let (status, body) = svc.sts(workspace, Some(&svc.token(workspace))).await;
    assert!(
        body.get("data").is_none(),
        "no credentials on failure: {body}"
    );
    let message = body["message"].as_str().unwrap_or_default().to_owned();
    (
        status.as_u16(),
        body["code"].as_i64().unwrap_or_default(),
        message,
        started.elapsed().as_secs_f64(),
    )
}

#[tokio::test]
async fn throttling_is_retried_then_reported_as_unavailable() {
    let (url, hits) = fake_sts(Upstream::Throttle).await;
    let svc = service(&url, "8s").await;
    let (status, code, message, _) = ask(&svc, "ws-throttle").await;
    assert_eq!((status, code), (503, 10503), "{message}");
    assert!(message.contains("throttling"), "{message}");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        3,
        "retried with back-off, three attempts in all"
    );
}

#[tokio::test]
async fn access_denied_is_not_retried_and_names_the_cause_without_leaking() {
    let (url, hits) = fake_sts(Upstream::Deny).await;
    let svc = service(&url, "5s").await;
    let (status, code, message, _) = ask(&svc, "ws-deny").await;
    assert_eq!((status, code), (502, 10502), "{message}");
    assert!(
        message.contains("AccessDenied") && message.contains("trust policy"),
        "{message}"
    );
    assert!(
        message.contains("c6104cbe-af31-11e0-8154-cbc7ccf896c7"),
        "the request id helps support: {message}"
    );
    assert!(
        !message.contains("internal-user-name"),
        "the upstream's own text stays in the log: {message}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1, "retrying cannot help");
    // Inside the failure back-off the answer comes from memory: no second upstream call.
    let (_, code, _, _) = ask(&svc, "ws-deny").await;
    assert_eq!(code, 10502);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_as_unavailable() {
    let (url, hits) = fake_sts(Upstream::Internal).await;
    let svc = service(&url, "8s").await;
    let (status, code, message, _) = ask(&svc, "ws-500").await;
    assert_eq!((status, code), (503, 10503), "{message}");
    assert!(
        message.contains("500") && message.contains("InternalFailure"),
        "{message}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_stalled_upstream_is_cut_off_at_the_timeout() {
    let (url, _) = fake_sts(Upstream::Slow).await;
    let svc = service(&url, "1s").await;
    let (status, code, message, took) = ask(&svc, "ws-slow").await;
    assert_eq!((status, code), (504, 10504), "{message}");
    assert!(took < 3.0, "answered within the timeout, took {took:.1}s");
}

#[tokio::test]
async fn garbage_from_the_upstream_is_reported_as_unavailable() {
    let (url, _) = fake_sts(Upstream::Garbage).await;
    let svc = service(&url, "5s").await;
    let (status, code, message, _) = ask(&svc, "ws-garbage").await;
    assert_eq!((status, code), (503, 10503), "{message}");
    assert!(message.contains("not an STS response"), "{message}");
    // The service keeps serving other requests.
    assert_eq!(svc.get("/healthz").await.0, 200);
}
