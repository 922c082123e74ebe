//! PostObject (a browser form upload, `POST /{bucket}` with a `multipart/form-data` body) is
//! refused before the S3 library sees the request: s3s reads the form's file into memory, up to
//! 5 GiB, before any access check, so one anonymous 200 MiB form grew the process by 187 MiB
//! only to be refused. No device uses PostObject and the access policy never allows it; here it
//! is answered `AccessDenied` from the headers alone, and its body is never read.

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};

/// A boxed error, as hyper's service bounds want it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The store's service with PostObject refused up front.
#[derive(Clone)]
pub struct RefusePostObject<S>(pub S);

/// Whether `request` is a form upload.
fn is_post_object(request: &Request<Incoming>) -> bool {
    request.method() == Method::POST
        && request
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("multipart/form-data")
            })
}

const DENIED: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<Error><Code>AccessDenied</Code><Message>PostObject (form uploads) is not allowed on this \
store</Message></Error>";

impl<S, B> hyper::service::Service<Request<Incoming>> for RefusePostObject<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<UnsyncBoxBody<Bytes, BoxError>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        if is_post_object(&request) {
            // The body is dropped unread; hyper closes the connection after the answer.
            drop(request);
            let body = http_body_util::Full::new(Bytes::from_static(DENIED.as_bytes()))
                .map_err(|never| match never {})
                .boxed_unsync();
            let mut response = Response::new(body);
            *response.status_mut() = StatusCode::FORBIDDEN;
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/xml"),
            );
            return Box::pin(async move { Ok(response) });
        }
        let response = self.0.call(request);
        Box::pin(async move {
            let response = response.await.map_err(Into::into)?;
            Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()))
        })
    }
}
