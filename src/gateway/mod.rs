//! The core both fronts call, through one entry point: [`Gateway::credentials`] takes a decoded
//! [`Request`] (Pilot 2's verified token, or a dock's serial number) through admit → resolve →
//! scope → cache → audit → log and count, and returns the credential [`Issued`] (which writes the
//! [`StorageConfig`] devices receive), or the [`Error`] each front maps to its reply. Fronts
//! depend on this, never on an issuer.

mod error;
mod limits;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::time::Instant;

use arc_swap::ArcSwap;

pub use error::Error;
pub use limits::Limits;

use crate::cache::{Cache, Lease};
use crate::config::{Config, DEFAULT_PROFILE};
use crate::domain::{
    DeviceKey, PrefixTemplate, Principal, Requester, Scope, WorkspaceError, WorkspaceId,
};
use crate::issuer::IssuerHandle;
use crate::protocol::{Credentials, Provider, ResultCode, StorageConfig};
use crate::registry::Registry;
use crate::secret::Fingerprint;
use crate::telemetry::audit::{Audit, Handout};
use crate::telemetry::{self, metrics};

/// Resolves scopes and hands out storage configurations.
pub struct Gateway {
    /// The storage profiles and the workspaces routed to them, as one snapshot: a request reads
    /// the one current when it starts (a load takes no lock), and a new configuration replaces
    /// it whole.
    live: ArcSwap<Live>,
}

/// Everything of the configuration a reload may change, as one immutable snapshot: the storage
/// profiles, which workspace goes to which, the device registry, the rate limits and the audit
/// log; and the workspaces resolved under it.
struct Live {
    /// Gateway serial number → workspace.
    registry: Registry,
    /// The rate limits, and the settings they were built from (kept, with their buckets' state,
    /// by a reload that leaves them alone).
    limits: Arc<Limits>,
    limits_config: crate::config::LimitsConfig,
    /// Where each credential handed out is recorded.
    audit: Audit,
    /// `[workspaces.sql]`: the database asked for workspaces not in `routed`.
    profile_sql: Option<(Arc<crate::registry::sql::SqlRegistry>, Fingerprint)>,
    /// How long a route from that database is kept (its `unbound_ttl`).
    sql_route_for: std::time::Duration,
    /// Every profile by name; `default` is `[storage]`.
    profiles: BTreeMap<Arc<str>, Arc<Profile>>,
    /// The profile of workspaces not routed elsewhere.
    default: Arc<Profile>,
    /// `[workspaces.profile]`: workspace id → its profile.
    routed: HashMap<Box<str>, Arc<Profile>, foldhash::fast::RandomState>,
    /// Workspaces resolved so far: each one's id is validated, its profile found and its scope
    /// rendered once, not per request (parsing, rendering and hashing them anew was some 1,000
    /// instructions of a cache hit). Kept with the snapshot, so a workspace moved to another
    /// profile is resolved anew.
    routes: RwLock<HashMap<Box<str>, Arc<Route>, foldhash::fast::RandomState>>,
}

/// The most workspaces [`Gateway`] keeps resolved; past that, a new workspace is resolved for
/// each of its requests (a DJI deployment has a handful, and tokens name only those its
/// identity provider signs, so this is far beyond any real one).
const MAX_ROUTES: usize = 10_000;

/// One storage profile as the gateway serves it: its own cache (and so its own issuer and
/// single-flight: two profiles never share a credential), what its credentials write and where
/// devices are told to upload.
pub struct Profile {
    name: Arc<str>,
    /// Its settings and secrets as built: a reload that leaves them alone keeps this profile,
    /// cache and all.
    fingerprint: Fingerprint,
    cache: Cache,
    template: PrefixTemplate,
    bucket: Arc<str>,
    storage: Storage,
    /// Credentials per device (`per_device = true`), not per workspace.
    per_device: bool,
}

/// A workspace resolved: its id, its profile and the scope its credentials write.
#[derive(Debug)]
struct Route {
    workspace: WorkspaceId,
    scope: Scope,
    profile: Arc<Profile>,
    /// The audit log of the snapshot it was resolved in.
    audit: Audit,
    /// When it must be looked up again (a route from `[workspaces.sql]`); `None`: never.
    until: Option<Instant>,
}

/// A profile's credential source, as built from its settings and secrets.
pub struct Sourced {
    /// The issuer.
    pub issuer: IssuerHandle,
    /// The digest of the settings and secrets it was built from.
    pub fingerprint: Fingerprint,
}

/// What a reload changed, in words for the log: `profile eu added`, and so on.
pub type Changes = Vec<String>;

/// Why the gateway could not be built; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// An `object_key_prefix` is not a usable template.
    #[error("{section}.object_key_prefix: {source}")]
    Prefix {
        /// `storage` or `profiles.<name>`.
        section: String,
        /// Why.
        source: crate::domain::PrefixError,
    },
    /// A profile has no issuer.
    #[error("{0}: no credential source was built for this profile")]
    NoIssuer(String),
    /// A workspace is routed to a profile that does not exist.
    #[error("workspaces.profile.{workspace}: profile `{profile}` does not exist")]
    NoProfile {
        /// The workspace id.
        workspace: String,
        /// The profile named.
        profile: String,
    },
    /// The device registry could not be built.
    #[error(transparent)]
    Registry(#[from] crate::registry::SetupError),
    /// The device registry's new database refused its query.
    #[error(transparent)]
    Probe(#[from] crate::registry::ProbeError),
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

/// A credential handed out: the cache's [`Lease`] on it, and the route (workspace, profile,
/// [`Scope`]) it was issued for. Shared references only, so an answer copies no string; the
/// wire [`StorageConfig`] is built on demand ([`Issued::config`]) or written from a rendering
/// made once per credential ([`Issued::write_json`]).
///
/// One credential, one name per stage: the issuer returns a [`crate::issuer::Credential`], the
/// cache hands out a [`Lease`] on it, the gateway an `Issued`.
#[derive(Debug)]
pub struct Issued {
    route: Arc<Route>,
    lease: Lease,
    /// The device's own scope, from a profile that issues per device; `None`: the route's.
    device_scope: Option<Box<Scope>>,
}

/// The device `stsgate check` and the other callers outside the fronts ask for, from a profile
/// that issues per device.
pub const CHECK_DEVICE: &str = "stsgate-check";

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
            self.scope(),
            &self.route.profile.storage,
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

    /// What it may write, and for which device.
    pub fn scope(&self) -> &Scope {
        self.device_scope.as_deref().unwrap_or(&self.route.scope)
    }

    /// The device it was issued to, when its profile issues per device: the source identity
    /// the upstream was told.
    pub fn device(&self) -> Option<&Principal> {
        self.scope().device.as_ref()
    }

    /// The storage profile it came from.
    pub fn profile(&self) -> &str {
        &self.route.profile.name
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
            profile: &self.route.profile.name,
            bucket: &self.scope().bucket,
            prefix: &self.scope().prefix,
            source_identity: self.device().map(|d| d.key.as_str()),
            provider: self.route.profile.storage.provider.as_str(),
            access_key_id: self.access_key_id(),
            expire: self.expire(),
            cache_hit: self.cache_hit(),
        }
    }
}

// === impl Gateway ===

impl Gateway {
    /// Builds the gateway from a validated config, each profile's credential source (by profile
    /// name) and the audit log.
    pub fn new(
        config: &Config,
        sources: BTreeMap<String, Sourced>,
        audit: Audit,
    ) -> Result<Self, SetupError> {
        let (live, _) = Live::build(config, sources, audit, None)?;
        Ok(Self {
            live: ArcSwap::from_pointee(live),
        })
    }

    /// A gateway whose one profile, `[storage]`, gets its credentials from `issuer` (tests and
    /// benchmarks).
    pub fn single(config: &Config, issuer: IssuerHandle) -> Result<Self, SetupError> {
        let sourced = Sourced {
            issuer,
            fingerprint: [0; 32],
        };
        Self::new(
            config,
            BTreeMap::from([(DEFAULT_PROFILE.to_owned(), sourced)]),
            Audit::default(),
        )
    }

    /// Whether the profile `name` is already built from settings and secrets with this
    /// fingerprint (a reload keeps it, and needs no new source for it).
    pub fn has_profile(&self, name: &str, fingerprint: &Fingerprint) -> bool {
        self.live
            .load()
            .profiles
            .get(name)
            .is_some_and(|p| p.fingerprint == *fingerprint)
    }

    /// Replaces the snapshot with one built from `config`, a validated configuration: the
    /// profiles in `fresh` are new or changed (their credentials are obtained anew); every
    /// other profile of `config` must be one [`Gateway::has_profile`] knows, and is kept with
    /// its cached credentials. The rate limits keep their state when their settings are the
    /// same; the device database its pool and answers (a new one is asked its query first, as
    /// at start). Requests already past their start finish on the snapshot they began with.
    /// Returns what changed; on error nothing does.
    pub async fn reload(
        &self,
        config: &Config,
        fresh: BTreeMap<String, Sourced>,
        audit: Audit,
    ) -> Result<Changes, SetupError> {
        let old = self.live.load_full();
        let (live, mut changes) = Live::build(config, fresh, audit, Some(&old))?;
        if !live.registry.same_database(&old.registry) {
            live.registry.probe().await?;
            changes.push("device database changed".to_owned());
        }
        let same =
            |a: &Option<(Arc<crate::registry::sql::SqlRegistry>, Fingerprint)>,
             b: &Option<(Arc<crate::registry::sql::SqlRegistry>, Fingerprint)>| {
                match (a, b) {
                    (Some((a, _)), Some((b, _))) => Arc::ptr_eq(a, b),
                    (None, None) => true,
                    _ => false,
                }
            };
        if !same(&live.profile_sql, &old.profile_sql) {
            if let Some((sql, _)) = &live.profile_sql {
                Box::pin(sql.probe()).await?;
            }
            changes.push("workspace database changed".to_owned());
        }
        self.live.store(Arc::new(live));
        Ok(changes)
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
        // One snapshot from start to end: a pilot's is read without a reference count (the route
        // keeps what the rest of the request needs); a dock's is held across the registry's
        // database lookup.
        let route = match request {
            Request::Pilot { workspace, .. } => {
                let live = self.live.load();
                live.admit(bucket, requester.front())?;
                if live.profile_sql.is_none() {
                    live.route(workspace)?
                } else {
                    let live = arc_swap::Guard::into_inner(live);
                    live.resolve(workspace).await?
                }
            }
            Request::Dock { sn } => {
                let live = self.live.load_full();
                live.admit(bucket, requester.front())?;
                let workspace = live
                    .registry
                    .workspace_of(sn)
                    .await?
                    .ok_or_else(|| Error::DeviceNotBound { sn: sn.to_owned() })?;
                live.resolve(workspace.as_str()).await?
            }
        };
        let issued = self.issue(route, requester).await?;
        let audit = &issued.route.audit;
        if audit.required() {
            // Boxed: what only a required record needs is not carried by every request's future.
            Box::pin(audit.record_required(issued.handout(), requester)).await?;
        } else {
            audit.record(issued.handout(), requester);
        }
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
        let live = self.live.load_full();
        let route = live.resolve(workspace.as_str()).await?;
        self.issue(route, Requester::Token(CHECK_DEVICE)).await
    }

    /// Like [`Gateway::for_workspace`], from the profile named `profile` whatever the workspace
    /// is routed to (`stsgate check --all`); `None` when there is no such profile.
    pub async fn for_profile(
        &self,
        profile: &str,
        workspace: WorkspaceId,
    ) -> Option<Result<Issued, Error>> {
        let route = {
            let live = self.live.load();
            let profile = live.profiles.get(profile)?.clone();
            live.new_route(workspace, profile, None)
        };
        Some(self.issue(route, Requester::Token(CHECK_DEVICE)).await)
    }

    /// The names of the profiles, `default` among them.
    pub fn profiles(&self) -> Vec<String> {
        self.live
            .load()
            .profiles
            .keys()
            .map(|n| n.to_string())
            .collect()
    }

    /// The profile workspace `id` is routed to (asking `[workspaces.sql]` if need be).
    pub async fn profile_of(&self, id: &str) -> Result<String, Error> {
        let live = self.live.load_full();
        Ok(live.resolve(id).await?.profile.name.to_string())
    }

    /// The credential for a resolved workspace, from the cache: the workspace's, or
    /// `requester`'s own when the profile issues per device.
    async fn issue(&self, route: Arc<Route>, requester: Requester<'_>) -> Result<Issued, Error> {
        if !route.profile.per_device {
            let lease = route.profile.cache.get(&route.scope).await?;
            return Ok(Issued {
                route,
                lease,
                device_scope: None,
            });
        }
        let scope = route.profile.device_scope(&route, requester);
        let lease = route.profile.cache.get(&scope).await?;
        Ok(Issued {
            route,
            lease,
            device_scope: Some(Box::new(scope)),
        })
    }

    /// Checks the device registry's database query once (start-up).
    pub async fn probe_registry(&self) -> Result<(), crate::registry::ProbeError> {
        let live = self.live.load_full();
        live.registry.probe().await?;
        match &live.profile_sql {
            Some((sql, _)) => Box::pin(sql.probe()).await,
            None => Ok(()),
        }
    }

    /// The audit log credentials are recorded in now.
    pub fn audit(&self) -> Audit {
        self.live.load().audit.clone()
    }

    /// The storage endpoint the default profile advertises to devices.
    pub fn endpoint(&self) -> String {
        self.live.load().default.storage.endpoint.clone()
    }

    /// The scope of a workspace in the profile it is routed to.
    pub fn scope(&self, workspace: &WorkspaceId) -> Scope {
        self.live
            .load()
            .profile_of(workspace.as_str())
            .scope(workspace)
    }
}

// === impl Live ===

impl Live {
    /// The snapshot of a validated config. Profiles come from `fresh`, else (on a reload) from
    /// `old` when they are still in `config`; the rate limits and the device database are kept
    /// from `old` when their settings are the same. Returns what changed from `old`.
    fn build(
        config: &Config,
        mut fresh: BTreeMap<String, Sourced>,
        audit: Audit,
        old: Option<&Self>,
    ) -> Result<(Self, Changes), SetupError> {
        let mut changes = Changes::new();
        let mut profiles = BTreeMap::new();
        for (name, profile) in config.all_profiles() {
            let section = Config::section_of(name);
            let built = match (fresh.remove(name), old.and_then(|o| o.profiles.get(name))) {
                (None, Some(kept)) => kept.clone(),
                (None, None) => return Err(SetupError::NoIssuer(section)),
                (Some(sourced), before) => {
                    changes.push(match before {
                        Some(_) => {
                            format!("profile {name} changed: its cached credentials are dropped")
                        }
                        None if old.is_some() => format!("profile {name} added"),
                        None => format!("profile {name}"),
                    });
                    Arc::new(Profile::new(config, name, profile, sourced)?)
                }
            };
            profiles.insert(built.name.clone(), built);
        }
        if let Some(old) = old {
            for name in old.profiles.keys() {
                if !profiles.contains_key(name) {
                    changes.push(format!("profile {name} removed"));
                }
            }
        }
        let default = profiles
            .get(DEFAULT_PROFILE)
            .cloned()
            .ok_or_else(|| SetupError::NoIssuer("storage".to_owned()))?;
        let mut routed: HashMap<Box<str>, Arc<Profile>, foldhash::fast::RandomState> =
            HashMap::default();
        for (workspace, name) in &config.workspaces.profile {
            let profile = profiles
                .get(name.as_str())
                .ok_or_else(|| SetupError::NoProfile {
                    workspace: workspace.clone(),
                    profile: name.clone(),
                })?;
            routed.insert(workspace.as_str().into(), profile.clone());
        }
        if let Some(old) = old {
            let moved = routed
                .iter()
                .filter(|(ws, p)| old.profile_of(ws).name != p.name)
                .count()
                + old
                    .routed
                    .keys()
                    .filter(|ws| !routed.contains_key(*ws))
                    .count();
            if moved > 0 {
                changes.push(format!("{moved} workspace(s) routed to another profile"));
            }
        }
        let limits = match old {
            Some(old) if old.limits_config == config.limits => old.limits.clone(),
            _ => {
                if old.is_some() {
                    changes.push("rate limits changed: every bucket starts full".to_owned());
                }
                Arc::new(Limits::new(&config.limits))
            }
        };
        let profile_sql = crate::registry::sql::open(
            crate::registry::sql::Kind::Workspaces,
            config.workspaces.sql.as_deref(),
            old.and_then(|o| o.profile_sql.as_ref()),
        )?;
        let sql_route_for = config
            .workspaces
            .sql
            .as_ref()
            .map_or(std::time::Duration::ZERO, |s| s.unbound_ttl);
        let registry = Registry::reloaded(
            &config.devices,
            config.default_workspace(),
            old.map(|o| &o.registry),
        )?;
        Ok((
            Self {
                registry,
                limits,
                limits_config: config.limits.clone(),
                audit,
                profiles,
                default,
                routed,
                routes: RwLock::default(),
                profile_sql,
                sql_route_for,
            },
            changes,
        ))
    }

    /// Admits a request under the rate limits, or refuses it with the time to wait.
    fn admit(&self, key: limits::Key<'_>, front: &'static str) -> Result<(), Error> {
        self.limits.check(key).map_err(|retry_after| {
            ::metrics::counter!("stsgate_rate_limited_total", "front" => front).increment(1);
            Error::RateLimited { retry_after }
        })
    }

    /// The profile `[workspaces.profile]` routes workspace `id` to, else the default.
    fn profile_of(&self, id: &str) -> &Arc<Profile> {
        self.routed.get(id).unwrap_or(&self.default)
    }

    /// The route kept for workspace `id`, unless it was looked up in `[workspaces.sql]` and its
    /// time is up.
    fn kept(&self, id: &str) -> Option<Arc<Route>> {
        let routes = self.routes.read().unwrap_or_else(PoisonError::into_inner);
        let route = routes.get(id)?;
        match route.until {
            Some(until) if Instant::now() >= until => None,
            _ => Some(route.clone()),
        }
    }

    /// Keeps `route` for workspace `id` (replacing one whose time is up), while fewer than
    /// [`MAX_ROUTES`] are kept.
    fn keep(&self, id: &str, route: &Arc<Route>) {
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if routes.len() < MAX_ROUTES || routes.contains_key(id) {
            routes.insert(id.into(), route.clone());
        }
    }

    fn new_route(
        &self,
        workspace: WorkspaceId,
        profile: Arc<Profile>,
        until: Option<Instant>,
    ) -> Arc<Route> {
        Arc::new(Route {
            scope: profile.scope(&workspace),
            workspace,
            profile,
            audit: self.audit.clone(),
            until,
        })
    }

    /// The workspace `id` resolved without the database (none is configured, or `id` is in
    /// `[workspaces.profile]`): as kept from an earlier request, else validated, routed and
    /// scoped now, and kept.
    fn route(&self, id: &str) -> Result<Arc<Route>, WorkspaceError> {
        if let Some(route) = self.kept(id) {
            return Ok(route);
        }
        let workspace = WorkspaceId::parse(id)?;
        let route = self.new_route(workspace, self.profile_of(id).clone(), None);
        self.keep(id, &route);
        Ok(route)
    }

    /// The workspace `id` resolved in order: `[workspaces.profile]`, then `[workspaces.sql]`,
    /// then the default profile. A database that cannot answer (and has no recent answer) is an
    /// error, never a fall-through to the default: a workspace of one customer must not get
    /// another's storage. A route from the database is kept for its `unbound_ttl`, then asked
    /// again (through the registry's own cache of answers).
    async fn resolve(&self, id: &str) -> Result<Arc<Route>, Error> {
        let Some((sql, _)) = self
            .profile_sql
            .as_ref()
            .filter(|_| !self.routed.contains_key(id))
        else {
            return Ok(self.route(id)?);
        };
        if let Some(route) = self.kept(id) {
            return Ok(route);
        }
        let workspace = WorkspaceId::parse(id)?;
        let profile = match Box::pin(sql.lookup(id)).await? {
            None => self.default.clone(),
            Some(name) => match self.profiles.get(name.as_str()) {
                Some(profile) => profile.clone(),
                None => {
                    tracing::error!(workspace = id, profile = %name, "workspaces.sql answered a profile that does not exist");
                    return Err(Error::Registry(crate::registry::LookupError::Unusable {
                        kind: crate::registry::sql::Kind::Workspaces,
                        key: id.to_owned(),
                    }));
                }
            },
        };
        let route = self.new_route(
            workspace,
            profile,
            Some(Instant::now() + self.sql_route_for),
        );
        self.keep(id, &route);
        Ok(route)
    }
}

// === impl Profile ===

impl Profile {
    /// Profile `name` of `config`, whose credentials come from `sourced`.
    fn new(
        config: &Config,
        name: &str,
        profile: &crate::config::StorageProfile,
        sourced: Sourced,
    ) -> Result<Self, SetupError> {
        let template = PrefixTemplate::parse(&profile.object_key_prefix).map_err(|source| {
            SetupError::Prefix {
                section: Config::section_of(name),
                source,
            }
        })?;
        let name: Arc<str> = name.into();
        Ok(Self {
            cache: Cache::new(sourced.issuer.clone(), profile, &name),
            name,
            fingerprint: sourced.fingerprint,
            template,
            bucket: profile.bucket.as_str().into(),
            storage: Storage {
                endpoint: config.endpoint_of(profile),
                region: profile.region.clone(),
                provider: sourced.issuer.provider(),
            },
            per_device: profile.per_device,
        })
    }

    /// The scope of `requester`'s own credentials in the workspace of `route`.
    fn device_scope(&self, route: &Route, requester: Requester<'_>) -> Scope {
        let (Requester::Device(id) | Requester::Token(id)) = requester;
        let (key, front) = (DeviceKey::new(id), requester.front());
        Scope {
            bucket: self.bucket.clone(),
            prefix: self.template.render(&route.workspace, Some(&key)).into(),
            device: Some(Principal {
                key,
                front,
                workspace: route.workspace.clone(),
            }),
        }
    }

    /// The scope of a workspace's credentials from this profile.
    fn scope(&self, workspace: &WorkspaceId) -> Scope {
        Scope {
            bucket: self.bucket.clone(),
            prefix: self.template.render(workspace, None).into(),
            device: None,
        }
    }
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("name", &self.name)
            .field("bucket", &self.bucket)
            .field("storage", &self.storage)
            .finish_non_exhaustive()
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

    /// One issuer behind several handles, so that a test can count its calls.
    #[async_trait]
    impl<T: Issuer> Issuer for Arc<T> {
        fn kind(&self) -> ProviderKind {
            (**self).kind()
        }

        async fn issue(&self, request: &IssueRequest) -> Result<Credential, crate::issuer::Error> {
            (**self).issue(request).await
        }
    }

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
        let gateway = Gateway::single(&config, IssuerHandle::new(Named)).expect("gateway");
        let prefix_of = |workspace: &str| {
            PrefixTemplate::parse(&config.storage.object_key_prefix)
                .expect("template")
                .render(&WorkspaceId::parse(workspace).expect("id"), None)
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
        assert_eq!(gateway.live.load().routes.read().expect("routes").len(), 1);

        // Full: a new workspace is still answered with its own scope, resolved anew each time.
        for i in 1..MAX_ROUTES {
            gateway.live.load().route(&format!("w{i}")).expect("valid");
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
        assert_eq!(
            gateway.live.load().routes.read().expect("routes").len(),
            MAX_ROUTES
        );
    }

    /// Hands out credentials named after its profile and the prefix after `pause`, counting its
    /// calls (with a pause, requests pile up on one flight).
    struct Tagged {
        profile: &'static str,
        pause: Duration,
        calls: std::sync::atomic::AtomicUsize,
    }

    #[async_trait]
    impl Issuer for Tagged {
        fn kind(&self) -> ProviderKind {
            ProviderKind::Minio
        }

        async fn issue(&self, request: &IssueRequest) -> Result<Credential, crate::issuer::Error> {
            self.calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(self.pause).await;
            Ok(Credential {
                access_key_id: format!("AK-{}-{}", self.profile, request.scope.prefix),
                secret_access_key: Secret::new("secret"),
                session_token: Secret::new("token"),
                expiration: SystemTime::now() + Duration::from_secs(3600),
            })
        }
    }

    /// A gateway for `config` whose profiles `names` each have a [`Tagged`] issuer, and the
    /// count of each one's calls.
    fn tagged(
        config: &Config,
        names: &[&'static str],
        pause: Duration,
    ) -> (Gateway, impl Fn(&str) -> usize) {
        let issuers: BTreeMap<&str, Arc<Tagged>> = names
            .iter()
            .map(|&profile| {
                let tagged = Tagged {
                    profile,
                    pause,
                    calls: Default::default(),
                };
                (profile, Arc::new(tagged))
            })
            .collect();
        let sources = issuers
            .iter()
            .map(|(n, i)| {
                let sourced = Sourced {
                    issuer: IssuerHandle::new(i.clone()),
                    fingerprint: [0; 32],
                };
                ((*n).to_owned(), sourced)
            })
            .collect();
        let gateway = Gateway::new(config, sources, Audit::default()).expect("gateway");
        let calls = move |n: &str| issuers[n].calls.load(std::sync::atomic::Ordering::Relaxed);
        (gateway, calls)
    }

    #[tokio::test]
    async fn two_profiles_never_share_a_credential_and_each_workspace_goes_to_its_own() {
        let mut config = Config::default();
        // `twin` is `a` to the letter: same bucket, same prefix template.
        for name in ["a", "twin"] {
            config
                .profiles
                .insert(name.to_owned(), config.storage.clone());
        }
        config
            .workspaces
            .profile
            .insert("ws-a".to_owned(), "a".to_owned());
        let (gateway, calls) = tagged(&config, &["default", "a", "twin"], Duration::ZERO);

        let a = gateway.credentials(pilot("ws-a")).await.expect("a");
        assert_eq!((a.profile(), a.access_key_id()), ("a", "AK-a-ws-a"));
        let other = gateway.credentials(pilot("ws-b")).await.expect("default");
        assert_eq!(other.profile(), "default");
        assert_eq!(gateway.profile_of("ws-a").await.expect("routed"), "a");
        assert_eq!(gateway.profile_of("ws-b").await.expect("routed"), "default");
        let twin = gateway
            .for_profile("twin", WorkspaceId::parse("ws-a").expect("id"))
            .await
            .expect("a profile named twin")
            .expect("issued");
        assert_eq!(twin.access_key_id(), "AK-twin-ws-a", "its own, not a's");
        let again = gateway.credentials(pilot("ws-a")).await.expect("a");
        assert_eq!(again.access_key_id(), "AK-a-ws-a");
        assert!(again.cache_hit());
        assert_eq!((calls("a"), calls("twin"), calls("default")), (1, 1, 1));
        assert!(
            gateway
                .for_profile("nowhere", WorkspaceId::parse("ws-a").expect("id"))
                .await
                .is_none()
        );
        assert_eq!(gateway.profiles(), ["a", "default", "twin"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_herd_makes_one_upstream_call_per_profile_and_scope() {
        let mut config = Config::default();
        config
            .profiles
            .insert("a".to_owned(), config.storage.clone());
        config
            .workspaces
            .profile
            .insert("ws-a".to_owned(), "a".to_owned());
        let mut limits = config.limits.clone();
        limits.subject_per_minute = 0;
        config.limits = limits;
        let (gateway, calls) = tagged(&config, &["default", "a"], Duration::from_millis(50));
        let gateway = Arc::new(gateway);
        let mut herd = tokio::task::JoinSet::new();
        for i in 0..1_000 {
            let gateway = gateway.clone();
            herd.spawn(async move {
                let workspace = ["ws-a", "ws-b"][i % 2];
                let issued = gateway.credentials(pilot(workspace)).await.expect("issued");
                (
                    workspace,
                    issued.access_key_id().to_owned(),
                    issued.profile().to_owned(),
                )
            });
        }
        while let Some(answer) = herd.join_next().await {
            let (workspace, key, profile) = answer.expect("answered");
            assert_eq!(key, format!("AK-{profile}-{workspace}"));
            assert_eq!(profile, if workspace == "ws-a" { "a" } else { "default" });
        }
        assert_eq!((calls("a"), calls("default")), (1, 1));
    }

    /// Per device: each device its own credential, prefix and source identity; a device asking
    /// again is a cache hit; a herd of 1,000 requests from 100 devices makes 100 calls; a profile
    /// that does not issue per device still gives every device of a workspace one credential.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_device_credentials_are_one_per_device_and_never_shared() {
        let mut config = Config::default();
        let mut per_device = config.storage.clone();
        per_device.per_device = true;
        per_device.object_key_prefix = "{workspace_id}/{device}".to_owned();
        config.profiles.insert("fleet".to_owned(), per_device);
        config
            .workspaces
            .profile
            .insert("ws-fleet".to_owned(), "fleet".to_owned());
        config.devices.default_workspace = Some("ws-fleet".to_owned());
        config.limits.device_per_minute = 0;
        config.limits.subject_per_minute = 0;
        let (gateway, calls) = tagged(&config, &["default", "fleet"], Duration::from_millis(20));
        let gateway = Arc::new(gateway);

        let dock = |sn: &'static str| Request::Dock { sn };
        let a = gateway.credentials(dock("DOCK-A")).await.expect("a");
        let b = gateway.credentials(dock("DOCK-B")).await.expect("b");
        assert_eq!(a.scope().prefix.as_ref(), "ws-fleet/DOCK-A");
        assert_eq!(b.scope().prefix.as_ref(), "ws-fleet/DOCK-B");
        assert_eq!(a.access_key_id(), "AK-fleet-ws-fleet/DOCK-A");
        assert_ne!(a.access_key_id(), b.access_key_id());
        let device = a.device().expect("per device");
        assert_eq!(
            (device.key.as_str(), device.front, device.workspace.as_str()),
            ("DOCK-A", "mqtt", "ws-fleet")
        );
        // A pilot whose subject is a dock's serial number is another principal.
        let named_like_a_dock = gateway
            .credentials(Request::Pilot {
                workspace: "ws-fleet",
                subject: "DOCK-A",
            })
            .await
            .expect("pilot");
        assert_eq!(
            named_like_a_dock.device().expect("per device").front,
            "http"
        );
        assert!(!named_like_a_dock.cache_hit());
        let again = gateway.credentials(dock("DOCK-A")).await.expect("a");
        assert!(again.cache_hit());
        assert_eq!(calls("fleet"), 3);

        let mut herd = tokio::task::JoinSet::new();
        for i in 0..1_000 {
            let gateway = gateway.clone();
            herd.spawn(async move {
                let sn = format!("HERD-{:03}", i % 100);
                let issued = gateway
                    .credentials(Request::Dock { sn: &sn })
                    .await
                    .expect("issued");
                assert_eq!(issued.scope().prefix.as_ref(), format!("ws-fleet/{sn}"));
            });
        }
        while let Some(done) = herd.join_next().await {
            done.expect("answered");
        }
        assert_eq!(calls("fleet"), 103, "one upstream call per device");

        // The default profile issues per workspace: two pilots, one credential.
        let one = gateway.credentials(pilot("ws-b")).await.expect("one");
        let two = gateway
            .credentials(Request::Pilot {
                workspace: "ws-b",
                subject: "other",
            })
            .await
            .expect("two");
        assert!(one.device().is_none());
        assert_eq!(one.access_key_id(), two.access_key_id());
        assert_eq!(calls("default"), 1);
    }
}
