//! Alibaba Cloud STS `AssumeRole` (RPC API, version 2015-04-01). No well-kept Rust SDK exists, so
//! this is a small client of our own: the signer ([`sign`]) is proven against Alibaba's
//! published examples, the request is built by the pure [`build_request`], and responses are
//! parsed from the documented JSON shapes ([`parse_response`]).
//!
//! Like Alibaba's own credentials library, the common parameters travel in the query string and
//! the operation parameters in a form body; the signature covers both. Throttling, 5xx and
//! network errors are retried (at most three attempts, exponential back-off with jitter) within
//! `storage.upstream_timeout`; refusals are not.

pub mod sign;

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use serde::Deserialize;

use super::{Credential, Error, IssueRequest, Issuer, policy};

use crate::config::StorageProfile;
use crate::domain::ProviderKind;
use crate::random;
use crate::secret::Secret;

/// The public mainland endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://sts.aliyuncs.com";
const ATTEMPTS: u32 = 3;

/// An AssumeRole client.
pub struct AliyunSts {
    http: reqwest::Client,
    endpoint: String,
    role_arn: String,
    external_id: Option<String>,
    access_key_id: String,
    secret: Secret,
    timeout: Duration,
    /// The profile's configuration section, named in refusals (`storage`, `profiles.eu`).
    section: String,
}

/// One signed request: query (common parameters and `Signature`) and form body (operation
/// parameters).
#[derive(Debug, PartialEq, Eq)]
pub struct SignedRequest {
    /// Query parameters, `Signature` last.
    pub query: Vec<(String, String)>,
    /// Form body parameters.
    pub form: Vec<(String, String)>,
}

/// What varies between two otherwise equal requests.
#[derive(Clone, Debug)]
pub struct Stamp {
    /// `SignatureNonce`.
    pub nonce: String,
    /// `Timestamp`, UTC `yyyy-MM-ddTHH:mm:ssZ`.
    pub timestamp: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Success {
    credentials: Option<WireCredentials>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireCredentials {
    access_key_id: String,
    access_key_secret: String,
    security_token: String,
    expiration: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Failure {
    #[serde(default)]
    code: String,
    #[serde(default)]
    request_id: String,
}

// === impl AliyunSts ===

impl AliyunSts {
    /// A client from a validated profile (`role_arn` and the key pair are required there), whose
    /// configuration section is `section`.
    pub fn new(storage: &StorageProfile, section: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(storage.upstream_timeout.min(Duration::from_secs(3)))
            .timeout(storage.upstream_timeout)
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoint: storage
                .sts_endpoint
                .clone()
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned()),
            role_arn: storage.role_arn.clone().unwrap_or_default(),
            external_id: storage.external_id.clone(),
            access_key_id: storage.access_key_id.clone().unwrap_or_default(),
            secret: storage.secret_access_key.clone().unwrap_or_default(),
            timeout: storage.upstream_timeout,
            section: section.to_owned(),
        })
    }

    async fn attempt(&self, request: &IssueRequest) -> Result<Credential, Error> {
        let stamp = Stamp::now()?;
        let signed = build_request(
            &self.access_key_id,
            &self.secret,
            &self.role_arn,
            self.external_id.as_deref(),
            request,
            &stamp,
        );
        let response = self
            .http
            .post(format!("{}/", self.endpoint.trim_end_matches('/')))
            .query(&signed.query)
            .form(&signed.form)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    Error::Timeout(self.timeout)
                } else {
                    Error::Unavailable(
                        "cannot reach the ali STS endpoint (network, DNS or TLS)".to_owned(),
                    )
                }
            })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|_| Error::Unavailable("the ali STS answer was cut off".to_owned()))?;
        parse_response(status, &body).map_err(|e| e.in_section(&self.section))
    }
}

#[async_trait]
impl Issuer for AliyunSts {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ali
    }

    async fn issue(&self, request: &IssueRequest) -> Result<Credential, Error> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.attempt(request).await {
                Err(e @ (Error::Throttled | Error::Unavailable(_))) if attempt < ATTEMPTS => {
                    let delay = backoff(attempt);
                    tracing::debug!(error = %e, ?delay, "retrying AssumeRole at ali STS");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }
}

// === impl Stamp ===

impl Stamp {
    fn now() -> Result<Self, Error> {
        let nonce = random::string(random::BASE32, 26)
            .map_err(|e| Error::Internal(format!("no randomness from the OS: {e}")))?;
        let timestamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        Ok(Self { nonce, timestamp })
    }
}

/// The signed AssumeRole request for `request`.
pub fn build_request(
    access_key_id: &str,
    secret: &Secret,
    role_arn: &str,
    external_id: Option<&str>,
    request: &IssueRequest,
    stamp: &Stamp,
) -> SignedRequest {
    let query: Vec<(String, String)> = [
        ("AccessKeyId", access_key_id),
        ("Action", "AssumeRole"),
        ("Format", "JSON"),
        ("SignatureMethod", "HMAC-SHA1"),
        ("SignatureNonce", stamp.nonce.as_str()),
        ("SignatureVersion", "1.0"),
        ("Timestamp", stamp.timestamp.as_str()),
        ("Version", "2015-04-01"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut form = vec![
        (
            "DurationSeconds".to_owned(),
            request.duration.as_secs().to_string(),
        ),
        ("Policy".to_owned(), policy::oss(&request.scope)),
        ("RoleArn".to_owned(), role_arn.to_owned()),
        (
            "RoleSessionName".to_owned(),
            policy::session_name(&request.scope, policy::ALI_SESSION_NAME_MAX),
        ),
    ];
    if let Some(id) = external_id {
        form.insert(1, ("ExternalId".to_owned(), id.to_owned()));
    }
    // Per device: the device as `SourceIdentity` (condition key `sts:SourceIdentity`; Alibaba's
    // AssumeRole takes no session tags).
    if let Some(device) = &request.scope.device {
        form.push(("SourceIdentity".to_owned(), device.key.as_str().to_owned()));
    }
    let all: Vec<(&str, &str)> = query
        .iter()
        .chain(form.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let signature = sign::signature("POST", &all, secret.expose());
    let mut query = query;
    query.push(("Signature".to_owned(), signature));
    SignedRequest { query, form }
}

/// Reads an AssumeRole answer: credentials on 200, else the documented error envelope
/// `{RequestId, HostId, Code, Message, Recommend}`, classified.
pub fn parse_response(status: u16, body: &[u8]) -> Result<Credential, Error> {
    if status == 200 {
        let not_sts = || {
            Error::Unavailable(
                "the ali STS endpoint answered something that is not an STS response".to_owned(),
            )
        };
        let success: Success = serde_json::from_slice(body).map_err(|_| not_sts())?;
        let c = success.credentials.ok_or_else(not_sts)?;
        let expiration = humantime::parse_rfc3339(&c.expiration).map_err(|_| not_sts())?;
        return Ok(Credential {
            access_key_id: c.access_key_id,
            secret_access_key: Secret::new(c.access_key_secret),
            session_token: Secret::new(c.security_token),
            expiration,
        });
    }
    let failure: Failure = serde_json::from_slice(body).unwrap_or(Failure {
        code: String::new(),
        request_id: String::new(),
    });
    let (code, request_id) = (
        failure.code.as_str(),
        if failure.request_id.is_empty() {
            "-"
        } else {
            failure.request_id.as_str()
        },
    );
    tracing::warn!(provider = "ali", status, code, request_id, upstream_body = %String::from_utf8_lossy(body).chars().take(500).collect::<String>(), "AssumeRole failed");
    if code.starts_with("Throttling") || status == 429 {
        return Err(Error::Throttled);
    }
    if status >= 500 || code.is_empty() {
        return Err(Error::Unavailable(format!(
            "ali STS answered {status} {code} (request id {request_id})"
        )));
    }
    let hint = match code {
        "NoPermission" => {
            "the RAM user may not assume the role: grant it sts:AssumeRole and name it in the role's trust policy (the root account cannot assume roles)"
        }
        "EntityNotExist.Role" => "the role in storage.role_arn does not exist",
        "InvalidParameter.DurationSeconds" => {
            "storage.duration is above the role's maximum session duration"
        }
        "InvalidParameter.PolicyGrammar" | "InvalidParameter.PolicySize" => {
            "the session policy was refused; shorten storage.bucket or storage.object_key_prefix"
        }
        "InvalidParameter.RoleArn" => {
            "storage.role_arn is malformed: acs:ram::<account>:role/<name>"
        }
        "InvalidTimeStamp.Expired" => "this host's clock is more than 15 minutes off",
        c if c.starts_with("InvalidAccessKeyId") || c == "SignatureDoesNotMatch" => {
            "the service's own access key is unknown, inactive, or its secret is wrong"
        }
        _ => "see the service log for the upstream message",
    };
    Err(Error::Rejected(format!(
        "{code} from ali STS (request id {request_id}): {hint}"
    )))
}

/// Exponential back-off with jitter before attempt `attempt + 1`: 200 ms, 400 ms, … ± half.
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(200).saturating_mul(1 << attempt.min(6));
    let mut byte = [0_u8; 1];
    let jitter = getrandom::fill(&mut byte).map_or(0.5, |()| f64::from(byte[0]) / 255.0);
    base.mul_f64(0.5 + jitter)
}

#[cfg(test)]
mod tests;
