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
        "HTTP POST …/sts, cache hit ({} connections, {} pairs of {:?} rounds, alternating which goes first; body {} bytes)",
        scale.connections,
        scale.http_pairs,
        scale.http_round,
        body.len()
    )];
    // Warm both up, then alternate, in pairs whose order alternates too, so that drift in the
    // machine's load hits both alike; the median of the pairs' ratios shrugs off a noisy pair.
    load(bare, &token, scale.connections, scale.warmup).await;
    load(service.http, &token, scale.connections, scale.warmup).await;
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    let mut ratios = Vec::with_capacity(scale.http_pairs);
    for pair in 0..scale.http_pairs {
        let (a, b) = if pair % 2 == 0 {
            let a = load(bare, &token, scale.connections, scale.http_round).await;
            (
                a,
                load(service.http, &token, scale.connections, scale.http_round).await,
            )
        } else {
            let b = load(service.http, &token, scale.connections, scale.http_round).await;
            (
                load(bare, &token, scale.connections, scale.http_round).await,
                b,
            )
        };
        ratios.push(b.per_second() / a.per_second());
        theirs.append(a);
        ours.append(b);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    let pooled = ours.per_second() / theirs.per_second();
    let p50 = ours.quantile(0.5) / theirs.quantile(0.5);
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    lines.push(theirs.line("bare axum handler"));
    lines.push(ours.line("stsgate /sts (cache hit)"));
    lines.push(format!(
        "ratio stsgate / bare: throughput {median:.2}x median of pairs (target >= 0.90), {pooled:.2}x pooled, p50 latency {p50:.2}x; pairs sorted: {}",
        each.join(" ")
    ));
    lines
}
