//! AWS STS and MinIO STS: `AssumeRole` through the official AWS SDK (`aws-sdk-sts`). MinIO speaks
//! the same wire API (form POST, SigV4 service `sts`) at its server URL, so both providers share
//! this module and differ only in configuration.
//!
//! Each call sends the scope's session policy ([`policy::aws`]) and a session name derived from
//! the scope. The SDK retries, with exponential back-off and jitter, only what retrying can help
//! (throttling, 5xx, transient network errors), within `storage.upstream_timeout`. Failures are
//! classified into [`Error`] with a message that names the cause; the upstream's own message and
//! request id go to the log, not to devices.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_sts::operation::RequestId;
use aws_sdk_sts::operation::assume_role::AssumeRoleError;

use super::{Credential, Error, IssueRequest, Issuer, policy};

use crate::config::StorageProfile;
use crate::domain::ProviderKind;
use crate::secret::Secret;

/// The session tag naming a per-device credential's workspace.
pub const TAG_WORKSPACE: &str = "stsgate-workspace";
/// The session tag naming the front a per-device credential was asked through (`mqtt`, `http`).
pub const TAG_FRONT: &str = "stsgate-front";

/// What a role's trust policy must allow for per-device credentials, besides `sts:AssumeRole`.
pub const SESSION_PERMISSIONS: [&str; 2] = ["sts:SetSourceIdentity", "sts:TagSession"];

/// The hint of a refusal naming one of [`SESSION_PERMISSIONS`]; `stsgate check` recognises it.
pub const PER_DEVICE_HINT: &str = "per-device credentials (storage.per_device) send SourceIdentity and session tags: the role's trust policy must allow sts:SetSourceIdentity and sts:TagSession to the service, beside sts:AssumeRole";

/// MinIO ignores `RoleArn`, but the AWS API requires one.
const MINIO_ROLE_ARN: &str = "arn:minio:iam:::role/stsgate";

/// An AssumeRole client for AWS or MinIO.
pub struct AwsSts {
    client: aws_sdk_sts::Client,
    kind: ProviderKind,
    role_arn: String,
    external_id: Option<String>,
    timeout: Duration,
    /// The profile's configuration section, named in refusals (`storage`, `profiles.eu`).
    section: String,
}

// === impl AwsSts ===

impl AwsSts {
    /// A client for `storage.provider` (`aws` or `minio`), from validated config. The service's own
    /// identity is the configured key pair, or for AWS the standard credential chain
    /// (environment, profile, web identity, container and instance metadata). `section` is the
    /// profile's configuration section.
    pub async fn new(storage: &StorageProfile, section: &str) -> Self {
        let timeouts = aws_sdk_sts::config::timeout::TimeoutConfig::builder()
            .operation_timeout(storage.upstream_timeout)
            .connect_timeout(storage.upstream_timeout.min(Duration::from_secs(3)))
            .build();
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(storage.region.clone()))
            .timeout_config(timeouts)
            .retry_config(aws_sdk_sts::config::retry::RetryConfig::standard().with_max_attempts(3));
        if let (Some(id), Some(secret)) = (&storage.access_key_id, &storage.secret_access_key) {
            let credentials = aws_sdk_sts::config::Credentials::new(
                id,
                secret.expose(),
                None,
                None,
                "stsgate-config",
            );
            loader = loader.credentials_provider(credentials);
        }
        if let Some(endpoint) = &storage.sts_endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk = loader.load().await;
        let kind = storage.provider;
        let role_arn = match kind {
            ProviderKind::Minio => storage
                .role_arn
                .clone()
                .unwrap_or_else(|| MINIO_ROLE_ARN.to_owned()),
            _ => storage.role_arn.clone().unwrap_or_default(),
        };
        Self {
            client: aws_sdk_sts::Client::new(&sdk),
            kind,
            role_arn,
            external_id: storage.external_id.clone(),
            timeout: storage.upstream_timeout,
            section: section.to_owned(),
        }
    }
}

#[async_trait]
impl Issuer for AwsSts {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    async fn issue(&self, request: &IssueRequest) -> Result<Credential, Error> {
        let duration = i32::try_from(request.duration.as_secs()).unwrap_or(i32::MAX);
        let mut call = self
            .client
            .assume_role()
            .role_arn(&self.role_arn)
            .set_external_id(self.external_id.clone())
            .role_session_name(policy::session_name(
                &request.scope,
                policy::AWS_SESSION_NAME_MAX,
            ))
            .duration_seconds(duration)
            .policy(policy::aws(&request.scope));
        // Per device, on AWS: the device as `SourceIdentity` (CloudTrail names it on every call
        // the credential makes) and the workspace and front as session tags. MinIO ignores
        // both (`reference/sts-providers.md`), so they are not sent there.
        if let (Some(device), ProviderKind::Aws) = (&request.scope.device, self.kind) {
            call = call.source_identity(device.key.as_str());
            for (key, value) in [
                (TAG_WORKSPACE, device.workspace.as_str()),
                (TAG_FRONT, device.front),
            ] {
                let tag = aws_sdk_sts::types::Tag::builder()
                    .key(key)
                    .value(value)
                    .build()
                    .map_err(|e| Error::Internal(format!("session tag {key}: {e}")))?;
                call = call.tags(tag);
            }
        }
        let result = call.send().await;
        let output =
            result.map_err(|e| classify(self.kind, self.timeout, e).in_section(&self.section))?;
        tracing::debug!(provider = %self.kind, request_id = output.request_id().unwrap_or("-"), "AssumeRole succeeded");
        let credentials = output.credentials().ok_or_else(|| {
            Error::Unavailable("the STS answer carried no credentials".to_owned())
        })?;
        let expiration = SystemTime::try_from(*credentials.expiration()).map_err(|_| {
            Error::Unavailable("the STS answer carried an unreadable expiration".to_owned())
        })?;
        Ok(Credential {
            access_key_id: credentials.access_key_id().to_owned(),
            secret_access_key: Secret::new(credentials.secret_access_key()),
            session_token: Secret::new(credentials.session_token()),
            expiration,
        })
    }
}

/// The one place an AssumeRole failure becomes an [`Error`].
fn classify(
    kind: ProviderKind,
    timeout: Duration,
    e: SdkError<AssumeRoleError, aws_sdk_sts::config::http::HttpResponse>,
) -> Error {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().unwrap_or_default().to_owned();
    let request_id = e.request_id().unwrap_or("-").to_owned();
    tracing::warn!(
        provider = %kind,
        status,
        code = %code,
        upstream_message = e.message().unwrap_or_default(),
        request_id = %request_id,
        error = %DisplayErrorContext(&e),
        "AssumeRole failed"
    );
    match &e {
        SdkError::TimeoutError(_) => Error::Timeout(timeout),
        SdkError::DispatchFailure(d) if d.is_timeout() => Error::Timeout(timeout),
        SdkError::DispatchFailure(_) => Error::Unavailable(format!(
            "cannot reach the {kind} STS endpoint (network, DNS or TLS)"
        )),
        SdkError::ResponseError(_) => Error::Unavailable(format!(
            "the {kind} STS endpoint answered something that is not an STS response"
        )),
        SdkError::ServiceError(_) => {
            let message = e.message().unwrap_or_default();
            service_error(
                kind,
                status.unwrap_or_default(),
                &code,
                message,
                &request_id,
            )
        }
        _ => Error::Internal(format!("cannot build the AssumeRole request for {kind}")),
    }
}

fn service_error(
    kind: ProviderKind,
    status: u16,
    code: &str,
    message: &str,
    request_id: &str,
) -> Error {
    if code.starts_with("Throttling") || status == 429 {
        return Error::Throttled;
    }
    if code.is_empty() {
        return Error::Unavailable(format!(
            "the {kind} STS endpoint answered {status} with something that is not an STS response"
        ));
    }
    if status >= 500 {
        return Error::Unavailable(format!(
            "{kind} STS answered {status} {code} (request id {request_id})"
        ));
    }
    let hint = match code {
        "AccessDenied" if SESSION_PERMISSIONS.iter().any(|p| message.contains(p)) => {
            PER_DEVICE_HINT
        }
        "AccessDenied" => {
            "the service may not assume the role: check the role's trust policy and the caller's sts:AssumeRole permission"
        }
        "InvalidClientTokenId" | "SignatureDoesNotMatch" | "InvalidAccessKeyId" => {
            "the service's own access key is unknown or its secret is wrong"
        }
        "ExpiredToken" | "ExpiredTokenException" => {
            "the service's own session credentials have expired"
        }
        "ValidationError" | "InvalidParameterValue" => {
            "a request parameter was refused; is storage.duration above the role's maximum session duration?"
        }
        "MalformedPolicyDocument" | "PackedPolicyTooLarge" => {
            "the session policy was refused; shorten storage.bucket or storage.object_key_prefix"
        }
        "RegionDisabledException" => {
            "STS is not activated in this region for the account; set storage.sts_endpoint to another region"
        }
        "RequestExpired" => "the request arrived too late: check this host's clock",
        _ => "see the service log for the upstream message",
    };
    Error::Rejected(format!(
        "{code} from {kind} STS (request id {request_id}): {hint}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trust_policy_without_the_session_permissions_is_named_as_such() {
        // The refusal's shape as AWS words it when the trust policy lacks the action.
        for action in SESSION_PERMISSIONS {
            let message = format!(
                "User: arn:aws:iam::123456789012:user/stsgate is not authorized to perform: \
                 {action} on resource: arn:aws:iam::210987654321:role/stsgate-upload"
            );
            let e = service_error(ProviderKind::Aws, 403, "AccessDenied", &message, "r-1");
            assert!(e.to_string().contains(PER_DEVICE_HINT), "{e}");
        }
        let plain = service_error(
            ProviderKind::Aws,
            403,
            "AccessDenied",
            "User: arn:aws:iam::123456789012:user/stsgate is not authorized to perform: \
             sts:AssumeRole on resource: arn:aws:iam::210987654321:role/stsgate-upload",
            "r-2",
        );
        assert!(!plain.to_string().contains(PER_DEVICE_HINT), "{plain}");
    }
}
