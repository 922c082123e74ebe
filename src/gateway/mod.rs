//! The core both fronts call, through one entry point: [`Gateway::credentials`] takes a decoded
//! [`Request`] (Pilot 2's verified token, or a dock's serial number) through admit → resolve →
//! scope → cache → audit → log and count, and returns the credential [`Issued`] (which writes the
//! [`StorageConfig`] devices receive), or the [`Error`] each front maps to its reply. Fronts
//! depend on this, never on an issuer.

mod error;
mod limits;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

pub use error::Error;
pub use limits::Limits;

use crate::cache::{Cache, Lease};
use crate::config::Config;
use crate::domain::{PrefixTemplate, Requester, Scope, WorkspaceError, WorkspaceId};
use crate::issuer::IssuerHandle;
use crate::protocol::{Credentials, Provider, ResultCode, StorageConfig};
use crate::registry::Registry;
use crate::telemetry::audit::{Audit, Handout};
use crate::telemetry::{self, metrics};

/// Resolves scopes and hands out storage configurations.
pub struct Gateway {
    cache: Cache,
    registry: Registry,
    template: PrefixTemplate,
    bucket: Arc<str>,
    storage: Arc<Storage>,
    /// Workspaces resolved so far: each one's id is validated and its scope rendered once, not
    /// per request (parsing, rendering and hashing them anew was some 1,000 instructions of a
    /// cache hit). Where per-workspace storage profiles will be looked up.
    routes: RwLock<HashMap<Box<str>, Arc<Route>, foldhash::fast::RandomState>>,
    audit: Audit,
    limits: Limits,
}

/// The most workspaces [`Gateway`] keeps resolved; past that, a new workspace is resolved for
/// each of its requests (a DJI deployment has a handful, and tokens name only those its
/// identity provider signs, so this is far beyond any real one).
const MAX_ROUTES: usize = 10_000;

/// A workspace resolved: its id, the scope its credentials write and the storage they are for.
#[derive(Debug)]
struct Route {
    workspace: WorkspaceId,
    scope: Scope,
    storage: Arc<Storage>,
}

/// Why the gateway could not be built; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `storage.object_key_prefix` is not a usable template.
    #[error("storage.object_key_prefix: {0}")]
    Prefix(#[from] crate::domain::PrefixError),
    /// The device registry could not be built.
    #[error(transparent)]
    Registry(#[from] crate::registry::SetupError),
}

/// A request for credentials, as a front decoded it.
#[derive(Clone, Copy, Debug)]
pub enum Request<'a> {
    /// Pilot 2 with a verified token: the workspace as the path names it (checked against the
    /// token by the front), and the token's subject.
    Pilot {
        /// The workspace id, not yet validated.
        workspace: &'a str,
        /// The token's subject.
        subject: &'a str,
    },
    /// A dock by gateway serial number, for the workspace the device registry binds it to.
    Dock {
        /// The gateway serial number.
        sn: &'a str,
    },
}

/// A credential handed out: the cache's [`Lease`] on it, the [`Scope`] it may write, and where
/// that storage is. Shared references only, so an answer copies no string; the wire
/// [`StorageConfig`] is built on demand ([`Issued::config`]) or written from a rendering made
/// once per credential ([`Issued::write_json`]).
///
/// One credential, one name per stage: the issuer returns a [`crate::issuer::Credential`], the
/// cache hands out a [`Lease`] on it, the gateway an `Issued`.
#[derive(Debug)]
pub struct Issued {
    route: Arc<Route>,
    lease: Lease,
}

/// The storage devices upload to, as they are told it.
#[derive(Debug)]
struct Storage {
    endpoint: String,
    region: String,
    provider: Provider,
}

// === impl Issued ===

impl Issued {
    /// The workspace it was issued for.
    pub fn workspace(&self) -> &WorkspaceId {
        &self.route.workspace
    }

    /// What the device receives.
    pub fn config(&self) -> StorageConfig {
        let (credential, scope, storage) = (
            &self.lease.credential,
            &self.route.scope,
            &self.route.storage,
        );
        StorageConfig {
            bucket: scope.bucket.to_string(),
            credentials: Credentials {
                access_key_id: credential.access_key_id.clone(),
                access_key_secret: credential.secret_access_key.clone(),
                expire: self.lease.expire,
                security_token: credential.session_token.clone(),
            },
            endpoint: storage.endpoint.clone(),
            object_key_prefix: scope.prefix.to_string(),
            provider: storage.provider,
            region: storage.region.clone(),
        }
    }

    /// Appends [`Issued::config`] as JSON to `out`: the same bytes as `serde_json`, from a
    /// rendering made once per credential (only `expire` differs between answers).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self.rendering() {
            Some(rendered) => rendered.write(self.lease.expire, out),
            None => {
                if let Err(e) = serde_json::to_writer(&mut *out, &self.config()) {
                    tracing::error!(error = %e, "cannot encode a storage configuration");
                }
            }
        }
    }

    /// How many bytes [`Issued::write_json`] appends (0 when not known beforehand), so that an
    /// answer's buffer can be the exact size: a `Vec` with room to spare becomes `Bytes` only
    /// through one more allocation.
    pub fn json_len(&self) -> usize {
        self.rendering()
            .map_or(0, |rendered| rendered.len(self.lease.expire))
    }

    /// The rendering of this credential's configuration, made on first use.
    fn rendering(&self) -> Option<&crate::protocol::Rendered> {
        self.lease
            .rendered
            .get_or_init(|| crate::protocol::Rendered::new(&self.config()))
            .as_ref()
    }

    /// The credential's access key id.
    pub fn access_key_id(&self) -> &str {
        &self.lease.credential.access_key_id
    }

    /// Seconds the device may rely on it.
    pub fn expire(&self) -> u64 {
        self.lease.expire
    }

    /// Whether it came from the cache.
    pub fn cache_hit(&self) -> bool {
        self.lease.hit
    }

    /// What the audit trail records of it.
    fn handout(&self) -> Handout<'_> {
        Handout {
            workspace: self.route.workspace.as_str(),
            bucket: &self.route.scope.bucket,
            prefix: &self.route.scope.prefix,
            provider: self.route.storage.provider.as_str(),
            access_key_id: self.access_key_id(),
            expire: self.expire(),
            cache_hit: self.cache_hit(),
        }
    }
}

// === impl Gateway ===

impl Gateway {
    /// Builds the gateway from a validated config and an issuer.
    pub fn new(config: &Config, issuer: IssuerHandle) -> Result<Self, SetupError> {
        let template = PrefixTemplate::parse(&config.storage.object_key_prefix)?;
        Ok(Self {
            storage: Arc::new(Storage {
                endpoint: config.advertised_endpoint(),
                region: config.storage.region.clone(),
                provider: issuer.provider(),
            }),
            cache: Cache::new(issuer, &config.storage),
            registry: Registry::from_config(&config.devices, config.default_workspace())?,
            template,
            bucket: config.storage.bucket.as_str().into(),
            routes: RwLock::default(),
            audit: Audit::default(),
            limits: Limits::new(&config.limits),
        })
    }

    /// The one way both fronts get credentials, top to bottom: admit the requester under the rate
    /// limits, resolve its workspace (as given by a verified token, or the dock's binding in the
    /// device registry), scope it, take the credential from the cache, then audit, log and count
    /// what was handed out. A front authenticates and decodes before, encodes after, and reports
    /// the errors it returns (each front maps them in one place).
    pub async fn credentials(&self, request: Request<'_>) -> Result<Issued, Error> {
        let (requester, bucket) = match request {
            Request::Pilot { workspace, subject } => (
                Requester::Token(subject),
                limits::Key::Pilot { workspace, subject },
            ),
            Request::Dock { sn } => (Requester::Device(sn), limits::Key::Device(sn)),
        };
        self.admit(bucket, requester.front())?;
        let route = match request {
            Request::Pilot { workspace, .. } => self.route(workspace)?,
            Request::Dock { sn } => {
                let workspace = self
                    .registry
                    .workspace_of(sn)
                    .await?
                    .ok_or_else(|| Error::DeviceNotBound { sn: sn.to_owned() })?;
                self.route(workspace.as_str())?
            }
        };
        let issued = self.issue(route).await?;
        self.audit.record(issued.handout(), requester);
        telemetry::handout::log(&telemetry::handout::Line {
            requester,
            workspace: issued.workspace().as_str(),
            access_key_id: issued.access_key_id(),
            expire: issued.expire(),
            cache_hit: issued.cache_hit(),
        });
        metrics::request(requester.front(), ResultCode::Success.label());
        Ok(issued)
    }

    /// The storage configuration for a workspace already resolved, with no rate limit, audit or
    /// request count: for `stsgate check` and benchmarks, not for the fronts.
    pub async fn for_workspace(&self, workspace: WorkspaceId) -> Result<Issued, Error> {
        self.issue(self.route(workspace.as_str())?).await
    }

    /// The credential for a resolved workspace, from the cache.
    async fn issue(&self, route: Arc<Route>) -> Result<Issued, Error> {
        let lease = self.cache.get(&route.scope).await?;
        Ok(Issued { route, lease })
    }

    /// The workspace `id` resolved: as kept from an earlier request, else validated and scoped
    /// now (and kept, up to [`MAX_ROUTES`] workspaces).
    fn route(&self, id: &str) -> Result<Arc<Route>, WorkspaceError> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(route) = routes.get(id) {
            return Ok(route.clone());
        }
        let full = routes.len() >= MAX_ROUTES;
        drop(routes);
        let workspace = WorkspaceId::parse(id)?;
        let route = Arc::new(Route {
            scope: self.scope(&workspace),
            workspace,
            storage: self.storage.clone(),
        });
        if !full {
            self.routes
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id.into())
                .or_insert_with(|| route.clone());
        }
        Ok(route)
    }

    /// Checks the device registry's database query once (start-up).
    pub async fn probe_registry(&self) -> Result<(), crate::registry::ProbeError> {
        self.registry.probe().await
    }

    /// Records every credential handed out in `audit`.
    pub fn with_audit(mut self, audit: Audit) -> Self {
        self.audit = audit;
        self
    }

    /// Admits a request under the rate limits, or refuses it with the time to wait.
    fn admit(&self, key: limits::Key<'_>, front: &'static str) -> Result<(), Error> {
        self.limits.check(key).map_err(|retry_after| {
            ::metrics::counter!("stsgate_rate_limited_total", "front" => front).increment(1);
            Error::RateLimited { retry_after }
        })
    }

    /// The storage endpoint advertised to devices.
    pub fn endpoint(&self) -> &str {
        &self.storage.endpoint
    }

    /// The scope of a workspace.
    pub fn scope(&self, workspace: &WorkspaceId) -> Scope {
        Scope {
            bucket: self.bucket.clone(),
            prefix: self.template.render(workspace).into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use async_trait::async_trait;

    use super::*;
    use crate::domain::ProviderKind;
    use crate::issuer::{Credential, IssueRequest, Issuer};
    use crate::secret::Secret;

    /// Hands out a credential named after the prefix it was asked for.
    struct Named;

    #[async_trait]
    impl Issuer for Named {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Local
        }

        async fn issue(&self, request: &IssueRequest) -> Result<Credential, crate::issuer::Error> {
            Ok(Credential {
                access_key_id: format!("AK-{}", request.scope.prefix),
                secret_access_key: Secret::new("secret"),
                session_token: Secret::new("token"),
                expiration: SystemTime::now() + Duration::from_secs(3600),
            })
        }
    }

    fn pilot(workspace: &str) -> Request<'_> {
        Request::Pilot {
            workspace,
            subject: "pilot",
        }
    }

    #[tokio::test]
    async fn a_workspace_is_resolved_once_and_past_the_bound_for_each_request() {
        let config = Config::default();
        let gateway = Gateway::new(&config, IssuerHandle::new(Named)).expect("gateway");
        let prefix_of = |workspace: &str| {
            PrefixTemplate::parse(&config.storage.object_key_prefix)
                .expect("template")
                .render(&WorkspaceId::parse(workspace).expect("id"))
        };

        // Refused as before, and not kept.
        let refused = gateway.credentials(pilot("a.b")).await;
        assert!(
            matches!(refused, Err(Error::InvalidWorkspace(_))),
            "{refused:?}"
        );
        let first = gateway.credentials(pilot("ws-1")).await.expect("issued");
        let again = gateway.credentials(pilot("ws-1")).await.expect("issued");
        assert!(Arc::ptr_eq(&first.route, &again.route), "resolved once");
        assert_eq!(first.config().object_key_prefix, prefix_of("ws-1"));
        assert_eq!(first.access_key_id(), format!("AK-{}", prefix_of("ws-1")));
        assert_eq!(gateway.routes.read().expect("routes").len(), 1);

        // Full: a new workspace is still answered with its own scope, resolved anew each time.
        for i in 1..MAX_ROUTES {
            gateway.route(&format!("w{i}")).expect("valid");
        }
        let late = gateway
            .for_workspace(WorkspaceId::parse("late").expect("id"))
            .await
            .expect("issued");
        let late_again = gateway
            .for_workspace(WorkspaceId::parse("late").expect("id"))
            .await
            .expect("issued");
        assert_eq!(late.config().object_key_prefix, prefix_of("late"));
        assert_eq!(late.access_key_id(), format!("AK-{}", prefix_of("late")));
        assert!(!Arc::ptr_eq(&late.route, &late_again.route));
        assert_eq!(gateway.routes.read().expect("routes").len(), MAX_ROUTES);
    }
}
