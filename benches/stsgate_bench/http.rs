//! HTTP: `POST …/sts` on a cache hit against a bare axum handler returning the same JSON, both
//! served in this process on the same runtime and driven by the same load generator (hyper
//! HTTP/1.1 clients on keep-alive connections, each sending its next request when the last is
//! answered).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;

use crate::stats::Samples;
use crate::{Scale, Started};

const PATH: &str = "/storage/api/v1/workspaces/bench/sts";

/// `connections` clients against `addr` for `duration`.
pub async fn load(
    addr: SocketAddr,
    token: &str,
    connections: usize,
    duration: Duration,
) -> Samples {
    load_workspace(addr, "bench", token, connections, duration, Duration::ZERO).await
}

/// `connections` clients asking for `workspace`, each pausing `pause` between requests.
pub async fn load_workspace(
    addr: SocketAddr,
    workspace: &str,
    token: &str,
    connections: usize,
    duration: Duration,
    pause: Duration,
) -> Samples {
    let deadline = Instant::now() + duration;
    let path = format!("/storage/api/v1/workspaces/{workspace}/sts");
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (token, path) = (token.to_owned(), path.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).ok();
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut samples = Samples::with_capacity(100_000);
            let start = Instant::now();
            while Instant::now() < deadline {
                let request = Request::post(path.as_str())
                    .header("host", "bench")
                    .header("x-auth-token", &token)
                    .header("content-length", "0")
                    .body(Full::new(Bytes::new()))
                    .expect("request");
                // (hyper hands the connection back only once the last response is fully read)
                sender.ready().await.expect("connection ready");
                let sent = Instant::now();
                let response = sender.send_request(request).await.expect("response");
                assert!(response.status().is_success(), "{}", response.status());
                let body = response.into_body().collect().await.expect("body");
                std::hint::black_box(body);
                samples.record(sent.elapsed());
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
            samples.elapsed = start.elapsed();
            samples
        }));
    }
    let mut all = Samples::default();
    for task in tasks {
        all.merge(task.await.expect("load task"));
    }
    all
}

/// A bare axum server answering `PATH` with `body`.
pub async fn bare(body: Bytes) -> SocketAddr {
    let app = axum::Router::new().route(
        PATH,
        axum::routing::post(move || {
            let body = body.clone();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    serve(app).await
}

/// Serves `app` on a free loopback port in the background; returns the address.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// One cache-hit answer of the service, as bytes.
async fn one_answer(addr: SocketAddr, token: &str) -> Bytes {
    let mut samples_body = None;
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    for _ in 0..2 {
        let request = Request::post(PATH)
            .header("host", "bench")
            .header("x-auth-token", token)
            .header("content-length", "0")
            .body(Full::new(Bytes::new()))
            .expect("request");
        sender.ready().await.expect("connection ready");
        let response = sender.send_request(request).await.expect("response");
        assert!(response.status().is_success());
        samples_body = Some(
            response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes(),
        );
    }
    samples_body.expect("an answer")
}

pub async fn run(scale: &Scale, service: &Started) -> Vec<String> {
    let token = service.token("bench");
    let body = one_answer(service.http, &token).await;
    let bare = bare(body.clone()).await;
    let mut lines = vec![format!(
        "HTTP POST …/sts, cache hit ({} connections, {} rounds of {:?} each, alternating; body {} bytes)",
        scale.connections,
        scale.rounds,
        scale.duration,
        body.len()
    )];
    // Warm both up, then alternate so that drift in the machine's load hits both alike.
    load(bare, &token, scale.connections, scale.warmup).await;
    load(service.http, &token, scale.connections, scale.warmup).await;
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    for _ in 0..scale.rounds {
        theirs.append(load(bare, &token, scale.connections, scale.duration).await);
        ours.append(load(service.http, &token, scale.connections, scale.duration).await);
    }
    let ratio = ours.per_second() / theirs.per_second();
    let p50 = ours.quantile(0.5) / theirs.quantile(0.5);
    lines.push(theirs.line("bare axum handler"));
    lines.push(ours.line("stsgate /sts (cache hit)"));
    lines.push(format!(
        "ratio stsgate / bare: throughput {ratio:.2}x (target >= 0.90), p50 latency {p50:.2}x"
    ));
    lines
}
