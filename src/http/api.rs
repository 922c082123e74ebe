//! What the edge calls: `POST /storage/api/v1/workspaces/{workspace_id}/sts` with a plain
//! workspace segment (letters, digits, `-` and `_`: what every valid workspace id is made of) is
//! matched here by hand and answered directly; every other request goes to axum's router, which
//! serves the same path in every other case (another method, a percent-encoded or empty
//! segment) through the same [`handlers::sts_answer`], so an answer does not depend on the way
//! it took.
//!
//! By hand because routing a path with a parameter through axum costs what a cache hit can least
//! afford: the router collects the parameters into a vector of shared strings, stores it in the
//! request's extensions and frees it afterwards, `Path` percent-decodes the segment into a
//! `String` of its own, and the handler runs behind a boxed route, its extractors and the
//! response mapping. Answering directly took some 4,900 instructions off a cache hit's 29,000
//! (counted with `scripts/instructions.sh`); comparing the path with its prefix and suffix costs
//! some fifty. axum offers no route whose parameters are not collected this way.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::http::{HeaderValue, Method, Request, Response, Uri};
use axum::response::IntoResponse;
use futures_util::future::{BoxFuture, Either};

use super::{AUTH_HEADER_NAME, AppState, handlers};

/// The path of `/sts` around its workspace id.
const STS_PREFIX: &str = "/storage/api/v1/workspaces/";
const STS_SUFFIX: &str = "/sts";

/// The HTTP API: the hot path by hand, the rest by `router`.
#[derive(Clone)]
pub struct Api {
    state: Arc<AppState>,
    router: Router,
}

// === impl Api ===

impl Api {
    /// The API answering with `state`, through `router` for everything but a plain `/sts`.
    pub fn new(state: Arc<AppState>, router: Router) -> Self {
        Self { state, router }
    }
}

impl<B> tower::Service<Request<B>> for Api
where
    B: HttpBody<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<
        BoxFuture<'static, Result<Response<Body>, Infallible>>,
        <Router as tower::Service<Request<B>>>::Future,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.method() == Method::POST
            && let Some(workspace) = plain_workspace(request.uri().path())
        {
            let end = STS_PREFIX.len() + workspace.len();
            // The body is not read (the answer needs none), as by the routed handler.
            let (parts, _) = request.into_parts();
            let token = parts.headers.get(AUTH_HEADER_NAME).cloned();
            return Either::Left(Box::pin(sts(self.state.clone(), parts.uri, end, token)));
        }
        Either::Right(self.router.call(request))
    }
}

/// Answers a plain `/sts`: `uri` checked by [`plain_workspace`], its workspace id ending at
/// byte `end` of the path.
async fn sts(
    state: Arc<AppState>,
    uri: Uri,
    end: usize,
    token: Option<HeaderValue>,
) -> Result<Response<Body>, Infallible> {
    let workspace = uri.path().get(STS_PREFIX.len()..end).unwrap_or_default();
    Ok(handlers::sts_answer(&state, workspace, token.as_ref())
        .await
        .into_response())
}

/// The workspace segment of a `/sts` path when it is plain, `None` for any other path.
fn plain_workspace(path: &str) -> Option<&str> {
    let workspace = path.strip_prefix(STS_PREFIX)?.strip_suffix(STS_SUFFIX)?;
    let plain = !workspace.is_empty()
        && workspace
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    plain.then_some(workspace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `f` returns.
    fn size_of_output<A, B, C, D, R>(_: impl Fn(A, B, C, D) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// Every request's future is allocated and moved whole, so what only a cache miss needs (a
    /// signature check that may fetch a key set) is boxed, not carried: it was 1,968 bytes.
    #[test]
    fn the_request_future_carries_no_rare_path() {
        let size = size_of_output(sts);
        assert!(size <= 1024, "the /sts future is {size} bytes");
    }

    #[test]
    fn only_a_plain_sts_path_is_taken_by_hand() {
        for (path, taken) in [
            ("/storage/api/v1/workspaces/ws-1/sts", Some("ws-1")),
            (
                "/storage/api/v1/workspaces/e3dea0f5-37f2-4d79-ae58-490af3228069/sts",
                Some("e3dea0f5-37f2-4d79-ae58-490af3228069"),
            ),
            ("/storage/api/v1/workspaces/a_B_9/sts", Some("a_B_9")),
            // Left to the router: it decodes, refuses or answers 404 as it always did.
            ("/storage/api/v1/workspaces/ws%2D1/sts", None),
            ("/storage/api/v1/workspaces//sts", None),
            ("/storage/api/v1/workspaces/a/b/sts", None),
            ("/storage/api/v1/workspaces/a.b/sts", None),
            ("/storage/api/v1/workspaces/ws/sts/", None),
            ("/storage/api/v1/workspaces/ws/stsx", None),
            ("/storage/api/v1/workspaces/sts", None),
            ("/storage/api/v1/workspaces/", None),
            ("/storage/api/v2/workspaces/ws/sts", None),
            ("//storage/api/v1/workspaces/ws/sts", None),
        ] {
            assert_eq!(plain_workspace(path), taken, "{path}");
        }
    }
}
