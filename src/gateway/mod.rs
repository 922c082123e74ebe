//! The core both fronts call: resolve a workspace (HTTP) or a gateway serial number (MQTT) to a
//! [`Scope`], get a credential for it from the [`Cache`], and assemble the [`StorageConfig`]
//! devices receive. Fronts depend on this, never on an issuer.

mod error;
mod limits;

use std::sync::Arc;

pub use error::Error;
pub use limits::Limits;

use crate::cache::{Cache, Lease};
use crate::config::Config;
use crate::domain::{PrefixTemplate, Requester, Scope, WorkspaceId};
use crate::issuer::IssuerHandle;
use crate::protocol::{Credentials, Provider, StorageConfig};
use crate::registry::Registry;
use crate::telemetry::audit::Audit;

/// Resolves scopes and hands out storage configurations.
pub struct Gateway {
    cache: Cache,
    registry: Registry,
    template: PrefixTemplate,
    bucket: Arc<str>,
    endpoint: String,
    region: String,
    provider: Provider,
    audit: Audit,
    limits: Limits,
}

/// A storage configuration handed out, with what the audit trail needs.
#[derive(Debug)]
pub struct Issued {
    /// What the device receives.
    pub config: StorageConfig,
    /// The workspace it was issued for.
    pub workspace: WorkspaceId,
    /// Whether the credential came from the cache.
    pub cache_hit: bool,
    /// `config` serialised once per credential.
    rendered: crate::protocol::RenderedOnce,
}

// === impl Issued ===

impl Issued {
    /// Appends `config` as JSON to `out`: the same bytes as `serde_json`, from a rendering made
    /// once per credential (only `expire` differs between answers).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self
            .rendered
            .get_or_init(|| crate::protocol::Rendered::new(&self.config))
        {
            Some(rendered) => rendered.write(self.config.credentials.expire, out),
            None => {
                if let Err(e) = serde_json::to_writer(&mut *out, &self.config) {
                    tracing::error!(error = %e, "cannot encode a storage configuration");
                }
            }
        }
    }
}

// === impl Gateway ===

impl Gateway {
    /// Builds the gateway from a validated config and an issuer.
    pub fn new(config: &Config, issuer: IssuerHandle) -> Result<Self, String> {
        let template = PrefixTemplate::parse(&config.storage.object_key_prefix)
            .map_err(|e| format!("storage.object_key_prefix: {e}"))?;
        Ok(Self {
            provider: issuer.provider(),
            cache: Cache::new(issuer, &config.storage),
            registry: Registry::from_config(&config.devices, config.default_workspace())?,
            template,
            bucket: config.storage.bucket.as_str().into(),
            endpoint: config.advertised_endpoint(),
            region: config.storage.region.clone(),
            audit: Audit::default(),
            limits: Limits::new(&config.limits),
        })
    }

    /// The storage configuration for a workspace (HTTP front).
    pub async fn for_workspace(&self, workspace: WorkspaceId) -> Result<Issued, Error> {
        let scope = self.scope(&workspace);
        let lease = self.cache.get(&scope).await?;
        Ok(self.issued(workspace, &scope, lease))
    }

    /// The storage configuration for a gateway (MQTT front), via the device registry.
    pub async fn for_device(&self, sn: &str) -> Result<Issued, Error> {
        let workspace = self
            .registry
            .workspace_of(sn)
            .await?
            .ok_or_else(|| Error::DeviceNotBound { sn: sn.to_owned() })?;
        self.for_workspace(workspace).await
    }

    /// Checks the device registry's database query once (start-up).
    pub async fn probe_registry(&self) -> Result<(), String> {
        self.registry.probe().await
    }

    /// Records every credential handed out in `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Whether tokens are rate-limited at all (`limits.subject_per_minute` > 0).
    pub fn limits_subjects(&self) -> bool {
        self.limits.subjects_limited()
    }

    /// Admits a request from `requester` under the rate limits, or refuses it with the time to
    /// wait.
    pub fn admit(&self, requester: Requester<'_>) -> Result<(), Error> {
        self.limits.check(requester).map_err(|retry_after| {
            let front = match requester {
                Requester::Device(_) => "mqtt",
                Requester::Token(_) => "http",
            };
            metrics::counter!("stsgate_rate_limited_total", "front" => front).increment(1);
            Error::RateLimited { retry_after }
        })
    }

    /// Writes an audit record for a credential handed out to `requester`.
    pub fn audit(&self, issued: &Issued, requester: Requester<'_>) {
        self.audit.record(
            &issued.workspace,
            &issued.config,
            issued.cache_hit,
            requester,
        );
    }

    /// The storage endpoint advertised to devices.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The scope of a workspace.
    pub fn scope(&self, workspace: &WorkspaceId) -> Scope {
        Scope {
            bucket: self.bucket.clone(),
            prefix: self.template.render(workspace).into(),
        }
    }

    fn issued(&self, workspace: WorkspaceId, scope: &Scope, lease: Lease) -> Issued {
        let credential = &lease.credential;
        Issued {
            config: StorageConfig {
                bucket: scope.bucket.to_string(),
                credentials: Credentials {
                    access_key_id: credential.access_key_id.clone(),
                    access_key_secret: credential.secret_access_key.clone(),
                    expire: lease.expire,
                    security_token: credential.session_token.clone(),
                },
                endpoint: self.endpoint.clone(),
                object_key_prefix: scope.prefix.to_string(),
                provider: self.provider,
                region: self.region.clone(),
            },
            workspace,
            cache_hit: lease.hit,
            rendered: lease.rendered,
        }
    }
}
