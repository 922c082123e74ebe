//! `gateway::Error`: everything that can stop a credential from reaching a device, and the one
//! mapping from it to the shared [`ResultCode`]. Each front maps the code to its own reply.

use crate::issuer;
use crate::protocol::ResultCode;

use crate::domain::WorkspaceError;

/// Why a request for credentials failed. `Display` is the message devices see: it names the
/// cause and never holds a secret or an upstream response body.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The workspace id is unusable.
    #[error(transparent)]
    InvalidWorkspace(#[from] WorkspaceError),
    /// The gateway has no workspace.
    #[error(
        "gateway {sn} is not bound to any workspace; bind it in [devices.bind] or set devices.default_workspace"
    )]
    DeviceNotBound {
        /// The serial number.
        sn: String,
    },
    /// The device registry could not say which workspace the gateway belongs to.
    #[error(transparent)]
    Registry(#[from] crate::registry::LookupError),
    /// Too many requests from this device or token subject.
    #[error("too many requests; retry in {}s", .retry_after.as_secs().max(1))]
    RateLimited {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
    /// The issuer failed and no usable cached credential exists.
    #[error(transparent)]
    Issuer(#[from] issuer::Error),
    /// `audit.required` is set and the credential's record could not be written.
    #[error(transparent)]
    AuditUnwritten(#[from] crate::telemetry::audit::Unwritten),
}

// === impl Error ===

impl Error {
    /// The result code both fronts report.
    pub fn code(&self) -> ResultCode {
        match self {
            Self::InvalidWorkspace(_) => ResultCode::BadRequest,
            Self::DeviceNotBound { .. } => ResultCode::DeviceNotBound,
            Self::Registry(crate::registry::LookupError::Unavailable { .. }) => {
                ResultCode::Unavailable
            }
            Self::Registry(crate::registry::LookupError::Unusable { .. }) => ResultCode::Internal,
            Self::RateLimited { .. } => ResultCode::RateLimited,
            Self::AuditUnwritten(_) => ResultCode::Internal,
            Self::Issuer(e) => match e {
                issuer::Error::Rejected(_) | issuer::Error::TooShort(_) => {
                    ResultCode::UpstreamFailed
                }
                issuer::Error::Throttled | issuer::Error::Unavailable(_) => ResultCode::Unavailable,
                issuer::Error::Timeout(_) => ResultCode::UpstreamTimeout,
                issuer::Error::Internal(_) => ResultCode::Internal,
            },
        }
    }
}
