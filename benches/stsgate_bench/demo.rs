//! Against the DJI demo's design: its `StorageController` calls `AssumeRole` for every request
//! and caches nothing. Both sides here use the same upstream (a moto STS server, PyPI
//! `moto[server]`), the same STS client and session policy (stsgate's own `AwsSts` issuer), the
//! same HTTP server (axum) and the same load generator. The demo-style handler does not even
//! check the token, which only flatters it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use stsgate::domain::Scope;
use stsgate::issuer::aws_sts::AwsSts;
use stsgate::issuer::{IssueRequest, Issuer};

use crate::Scale;
use crate::footprint::free_port;
use crate::stats::Samples;

const ROLE: &str = "arn:aws:iam::123456789012:role/stsgate-bench";

/// A moto server on a free port, killed on drop.
struct Moto(std::process::Child, String);

impl Moto {
    fn start() -> Option<Self> {
        let port = free_port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let moto = Self(child, format!("http://127.0.0.1:{port}"));
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(moto);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The demo's design: every request is an `AssumeRole`.
async fn per_request_server(issuer: Arc<AwsSts>, bucket: &str) -> SocketAddr {
    let scope = Scope {
        bucket: bucket.into(),
        prefix: "bench".into(),
        device: None,
    };
    let handler = move || {
        let (issuer, scope) = (issuer.clone(), scope.clone());
        async move {
            let request = IssueRequest {
                scope,
                duration: Duration::from_secs(3600),
            };
            match issuer.issue(&request).await {
                Ok(c) => axum::Json(serde_json::json!({
                    "code": 0,
                    "message": "success",
                    "data": {
                        "bucket": request.scope.bucket.as_ref(),
                        "credentials": {
                            "access_key_id": c.access_key_id,
                            "access_key_secret": c.secret_access_key.expose(),
                            "expire": 3600,
                            "security_token": c.session_token.expose(),
                        },
                        "endpoint": "https://s3.us-east-1.amazonaws.com",
                        "object_key_prefix": "bench",
                        "provider": "aws",
                        "region": "us-east-1",
                    }
                }))
                .into_response(),
                Err(e) => (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
    };
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/storage/api/v1/workspaces/{workspace}/sts",
        axum::routing::post(handler),
    );
    crate::http::serve(app).await
}

pub async fn run(scale: &Scale) -> Vec<String> {
    let Some(moto) = Moto::start() else {
        return vec![
            "DJI demo design: skipped, moto_server is not installed (pip install 'moto[server]')"
                .to_owned(),
        ];
    };
    let env = [
        ("STSGATE_STORAGE__PROVIDER", "aws"),
        ("STSGATE_STORAGE__STS_ENDPOINT", moto.1.as_str()),
        ("STSGATE_STORAGE__ROLE_ARN", ROLE),
        ("STSGATE_STORAGE__ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        (
            "STSGATE_STORAGE__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ),
        ("STSGATE_STORAGE__BUCKET", "media"),
    ];
    let storage = stsgate::config::load(&stsgate::config::Sources {
        file: None,
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        flags: vec![],
    })
    .expect("config")
    .storage;
    let issuer = Arc::new(AwsSts::new(&storage, "storage").await);
    let calls_before = crate::herd::upstream_calls();
    let service = crate::start(&env).await;
    let demo = per_request_server(issuer, "media").await;
    let token = service.token("bench");
    // The demo side is slow (one STS round trip per request): fewer rounds would not change it.
    let connections = scale.connections.min(8);
    let load = |addr| crate::http::load(addr, &token, connections, scale.duration);
    crate::http::load(demo, &token, connections, scale.warmup).await;
    crate::http::load(service.http, &token, connections, scale.warmup).await;
    let (mut ours, mut theirs) = (Samples::default(), Samples::default());
    for _ in 0..scale.rounds {
        theirs.append(load(demo).await);
        ours.append(load(service.http).await);
    }
    let our_calls = crate::herd::upstream_calls() - calls_before;
    service.stop().await;
    assert!(
        (our_calls - 1.0).abs() < f64::EPSILON,
        "stsgate made {our_calls} upstream calls for one scope"
    );
    drop(moto);
    let ratio = ours.per_second() / theirs.per_second();
    let p50 = theirs.quantile(0.5) / ours.quantile(0.5);
    vec![
        format!(
            "DJI demo design (AssumeRole on moto for every request) vs stsgate (cache) against the same moto STS ({connections} connections, {} rounds of {:?}, alternating)",
            scale.rounds, scale.duration
        ),
        format!(
            "{} ({} upstream calls)",
            theirs.line("demo design: STS per request"),
            theirs.count()
        ),
        format!(
            "{} ({our_calls} upstream call(s), warm-up included)",
            ours.line("stsgate /sts (cached)")
        ),
        format!("ratio stsgate / demo design: throughput {ratio:.1}x, p50 latency {p50:.1}x lower"),
    ]
}
