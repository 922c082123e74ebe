//! The edge every HTTP request passes first, as one tower layer: it marks `x-auth-token`
//! sensitive (so that nothing printing headers can show it), takes the request id a proxy sent or
//! makes one, runs the request in a log context carrying that id (`telemetry::context`: every
//! line logged while it is served starts `http{request_id=… method=… path=…}:`), and echoes the
//! id in the answer. A proxy's id is kept only when it is at most [`MAX_REQUEST_ID_LEN`] bytes of
//! visible ASCII; any other is replaced by a fresh one (echoed and logged as that), so a client
//! cannot write what it likes into every line of the request or into the answer. Every answer
//! is marked `Cache-Control: no-store` and `Pragma: no-cache` (RFC 9111 §5.2.2.5, RFC 6749
//! §5.1; `Pragma` for HTTP/1.0 caches): a credential, a refusal, a health or metrics answer is
//! each about one moment and one client, and no cache between Pilot 2 and the service may keep
//! one. Marked here, on the way out of every answer, so that no path can forget it.
//!
//! It does what tower-http's `SetSensitiveRequestHeaders`, `SetRequestId`, `Trace` and
//! `PropagateRequestId` layers did together, in one service and one future, without copying the
//! id into the request's extensions or wrapping the response body: on the cache-hit benchmark it
//! answers about 8% more requests than the four layers did (BENCHMARKS.md, HTTP).

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, ready};

use axum::http::{HeaderValue, Request, Response, header};
use tokio::time::Instant;

use super::{AUTH_HEADER_NAME, REQUEST_ID_NAME};
use crate::telemetry::context::{Context as LogContext, InContext};

/// The layer: wraps a service in [`Edge`].
#[derive(Clone, Copy, Debug, Default)]
pub struct EdgeLayer;

/// The service [`EdgeLayer`] makes.
#[derive(Clone, Debug)]
pub struct Edge<S> {
    inner: S,
}

pin_project_lite::pin_project! {
    /// The answer of the inner service, run in the request's log context, with the request id
    /// added.
    pub struct EdgeFuture<F> {
        #[pin]
        inner: InContext<F>,
        id: Option<HeaderValue>,
        // Set only when debug logging is on: the answer's latency is logged then.
        started: Option<Instant>,
    }
}

/// The longest request id taken from a client or proxy (UUIDs are 36 bytes, AWS's and Envoy's
/// ids shorter still).
pub const MAX_REQUEST_ID_LEN: usize = 128;

static REQUEST_ID_PREFIX: OnceLock<[u8; 8]> = OnceLock::new();
static REQUEST_COUNTER: AtomicU32 = AtomicU32::new(0);

// === impl EdgeLayer ===

impl<S> tower::Layer<S> for EdgeLayer {
    type Service = Edge<S>;

    fn layer(&self, inner: S) -> Edge<S> {
        Edge { inner }
    }
}

// === impl Edge ===

impl<S, ReqBody, ResBody> tower::Service<Request<ReqBody>> for Edge<S>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = EdgeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        if let Some(token) = request.headers_mut().get_mut(AUTH_HEADER_NAME) {
            token.set_sensitive(true);
        }
        let id = match request.headers().get(REQUEST_ID_NAME) {
            Some(id) if acceptable_request_id(id) => id.clone(),
            _ => new_request_id(),
        };
        let context = LogContext::new("http")
            .shown("request_id", id.to_str().unwrap_or("-"))
            .shown("method", request.method().as_str())
            .shown("path", request.uri().path());
        let started = tracing::enabled!(tracing::Level::DEBUG).then(Instant::now);
        let inner = context.enter(|| self.inner.call(request));
        EdgeFuture {
            inner: context.wrap(inner),
            id: Some(id),
            started,
        }
    }
}

// === impl EdgeFuture ===

impl<F, ResBody, E> Future for EdgeFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut response = ready!(this.inner.as_mut().poll(cx))?;
        if let Some(id) = this.id.take() {
            let headers = response.headers_mut();
            headers.insert(REQUEST_ID_NAME, id);
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        }
        if let Some(started) = this.started {
            this.inner.context().enter(|| {
                tracing::debug!(
                    status = response.status().as_u16(),
                    latency_us = started.elapsed().as_micros() as u64,
                    "answered"
                );
            });
        }
        Poll::Ready(Ok(response))
    }
}

/// Whether a client's request id may be kept: 1 to [`MAX_REQUEST_ID_LEN`] bytes, each visible
/// ASCII (`!` to `~`: no space, control character or byte above 127).
fn acceptable_request_id(id: &HeaderValue) -> bool {
    let id = id.as_bytes();
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len()) && id.iter().all(|b| b.is_ascii_graphic())
}

/// A new request id: 8 random base32 characters drawn once per process, then a counter (8 hex
/// digits). Unique within the process, told apart across replicas, and free of a system call per
/// request.
fn new_request_id() -> HeaderValue {
    let prefix = REQUEST_ID_PREFIX.get_or_init(|| {
        let mut prefix = *b"00000000";
        if let Ok(random) = crate::random::string(crate::random::BASE32, 8) {
            prefix.copy_from_slice(&random.as_bytes()[..8]);
        }
        prefix
    });
    let n = REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0_u8; 16];
    id[..8].copy_from_slice(prefix);
    for (i, byte) in id[8..].iter_mut().enumerate() {
        *byte = b"0123456789abcdef"[((n >> (28 - 4 * i)) & 0xf) as usize];
    }
    // Base32 letters and hex digits are always a valid header value.
    HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{Layer, Service, ServiceExt};

    use super::*;
    use crate::http::{AUTH_HEADER, REQUEST_ID};

    /// An inner service that reports whether the token it saw was marked sensitive.
    async fn inner(request: Request<()>) -> Result<Response<String>, Infallible> {
        let sensitive = request
            .headers()
            .get(AUTH_HEADER)
            .is_some_and(HeaderValue::is_sensitive);
        Ok(Response::new(format!("sensitive={sensitive}")))
    }

    async fn call(request: Request<()>) -> Response<String> {
        let mut svc = EdgeLayer.layer(tower::service_fn(inner));
        svc.ready().await.unwrap().call(request).await.unwrap()
    }

    #[tokio::test]
    async fn the_token_is_sensitive_and_an_id_is_made_and_echoed() {
        let request = Request::builder()
            .header(AUTH_HEADER, "secret.token.value")
            .body(())
            .unwrap();
        let response = call(request).await;
        assert_eq!(response.body(), "sensitive=true");
        let id = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
        assert_eq!(id.len(), 16, "{id}");
        let next = call(Request::new(())).await;
        let next = next.headers()[REQUEST_ID].to_str().unwrap();
        assert_ne!(next, id, "ids are unique");
        assert_eq!(next[..8], id[..8], "one random prefix per process");
    }

    #[tokio::test]
    async fn a_proxys_request_id_is_kept() {
        let request = Request::builder()
            .header(REQUEST_ID, "from-the-proxy-7")
            .body(())
            .unwrap();
        assert_eq!(
            call(request).await.headers()[REQUEST_ID],
            "from-the-proxy-7"
        );
    }

    #[tokio::test]
    async fn an_unusable_request_id_is_replaced_by_a_fresh_one() {
        let longest = "x".repeat(MAX_REQUEST_ID_LEN);
        let request = Request::builder()
            .header(REQUEST_ID, &longest)
            .body(())
            .unwrap();
        assert_eq!(call(request).await.headers()[REQUEST_ID], longest.as_str());
        let too_long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        let spaced = HeaderValue::from_static("two words");
        let tabbed = HeaderValue::from_static("tab\tbed");
        let high = HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap();
        let empty = HeaderValue::from_static("");
        for id in [
            HeaderValue::from_str(&too_long).unwrap(),
            spaced,
            tabbed,
            high,
            empty,
        ] {
            let request = Request::builder()
                .header(REQUEST_ID, id.clone())
                .body(())
                .unwrap();
            let answered = call(request).await.headers()[REQUEST_ID].clone();
            assert_ne!(answered, id);
            assert_eq!(answered.len(), 16, "{answered:?} for {id:?}");
        }
    }

    #[tokio::test]
    async fn every_answer_is_marked_not_to_be_stored() {
        let response = call(Request::new(())).await;
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::PRAGMA], "no-cache");
    }
}
