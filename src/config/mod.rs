//! Configuration: types with documented defaults ([`Config`]), loading from defaults, a TOML
//! file, `STSGATE_<SECTION>__<KEY>` environment variables and command-line flags, in that order of
//! increasing precedence ([`load`]), and validation that names every bad key (`validate`, reported as [`Problem`]s).
//!
//! Secrets (`auth.jwt_secret`, `mqtt.password`) may come from the environment, never from the
//! file: the file is meant to be committed and shared; use `*_file` keys to point at a secret file.

mod duration;
mod load;
pub mod sql;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::{Error, Sources, load};
pub use validate::Problem;

use crate::domain::ProviderKind;
use crate::secret::Secret;

/// Prefix of configuration environment variables: `STSGATE_HTTP__LISTEN` is `http.listen`.
pub const ENV_PREFIX: &str = "STSGATE_";
/// The environment variable for a key path: `http.listen` → `STSGATE_HTTP__LISTEN`.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

/// The whole configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where generated secrets, minted credentials and stored objects live.
    pub data_dir: PathBuf,
    /// The HTTP API (Pilot 2).
    pub http: HttpConfig,
    /// The MQTT session (docks).
    pub mqtt: MqttConfig,
    /// `x-auth-token` verification.
    pub auth: AuthConfig,
    /// Where devices upload and how their credentials are obtained: the profile named
    /// [`DEFAULT_PROFILE`], which every workspace not routed elsewhere uses.
    pub storage: StorageProfile,
    /// Named storage profiles (`[profiles.<name>]`), each with every key `[storage]` takes.
    pub profiles: BTreeMap<String, StorageProfile>,
    /// Workspace → storage profile.
    pub workspaces: WorkspacesConfig,
    /// Gateway serial number → workspace.
    pub devices: DevicesConfig,
    /// Logging.
    pub log: LogConfig,
    /// The audit log of credentials handed out.
    pub audit: AuditConfig,
    /// Rate limits.
    pub limits: LimitsConfig,
}

/// The name of the profile `[storage]` configures.
pub const DEFAULT_PROFILE: &str = "default";

/// `[workspaces]`: which storage profile a workspace's credentials come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkspacesConfig {
    /// Workspace id → profile name; unlisted workspaces use the default profile (`[storage]`).
    pub profile: BTreeMap<String, String>,
    /// The platform's database, asked for workspaces not listed in `profile`: its `query`
    /// returns the profile name of the workspace bound by its one parameter (no row or `''`:
    /// the default profile).
    pub sql: Option<Box<SqlConfig>>,
}

/// `[limits]`: token buckets per gateway serial number and per token subject; 0 per minute
/// disables a limit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sustained requests per minute per gateway.
    pub device_per_minute: u32,
    /// Requests a gateway may make at once.
    pub device_burst: u32,
    /// Sustained requests per minute per token subject.
    pub subject_per_minute: u32,
    /// Requests a token subject may make at once.
    pub subject_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            device_per_minute: 60,
            device_burst: 10,
            subject_per_minute: 120,
            subject_burst: 20,
        }
    }
}

/// `[audit]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// JSON-lines file, appended to; unset: no audit log.
    pub path: Option<PathBuf>,
    /// A credential whose record cannot be written is not handed out (needs `path`).
    pub required: bool,
}

/// `[http]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of the HTTP API.
    pub listen: SocketAddr,
    /// Connections open at once; at the cap the oldest one not serving a request is closed.
    /// Scaled down at start when the process's descriptor limit cannot hold every listener's.
    pub max_connections: usize,
    /// Longest wait for a request's headers, and for the next request on an idle connection.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
}

/// `[mqtt]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// External broker, `mqtt://host:port` or `mqtts://host:port` (TLS). Unset: run the embedded
    /// broker on `embedded_listen`.
    pub url: Option<String>,
    /// Listen address of the embedded broker (only used when `url` is unset). Anything but a
    /// loopback address needs `embedded_auth`.
    pub embedded_listen: SocketAddr,
    /// Require a user name and password on the embedded broker: the users in
    /// `{data_dir}/mqtt_users.json` (generated on first run: `stsgate` for the service itself,
    /// `dock` for devices).
    pub embedded_auth: bool,
    /// Sessions the embedded broker keeps, online or offline.
    pub embedded_max_sessions: usize,
    /// Bytes of all retained messages together on the embedded broker.
    pub embedded_max_retained_bytes: usize,
    /// Bytes of the messages waiting for one session on the embedded broker.
    pub embedded_max_queued_bytes: usize,
    /// Username for the external broker.
    pub username: Option<String>,
    /// Password for the external broker (environment only: `STSGATE_MQTT__PASSWORD`).
    pub password: Option<Secret>,
    /// A file holding the password (alternative to `password`).
    pub password_file: Option<PathBuf>,
    /// MQTT client id; default `stsgate-<random>`.
    pub client_id: Option<String>,
    /// Shared-subscription group, so that N replicas answer each request once.
    pub share_group: Option<String>,
    /// QoS of replies (the DJI demo uses 2).
    pub reply_qos: u8,
    /// MQTT keep-alive interval.
    #[serde(with = "duration")]
    pub keep_alive: Duration,
    /// Largest payload accepted on a requests topic; larger ones are dropped with a warning.
    pub max_payload: usize,
    /// MQTT protocol version spoken to the external broker: `"3.1.1"` or `"5"`.
    pub protocol: MqttProtocol,
    /// PEM file of the CA(s) that sign the broker's certificate (`mqtts://`); unset: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain), for brokers that require one.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

/// MQTT protocol version: `"3.1.1"` or `"5"` (a number works too, as environment variables
/// arrive as numbers when they look like one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 3.1.1 (what DJI docks speak).
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

impl Serialize for MqttProtocol {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match self {
            Self::V311 => "3.1.1",
            Self::V5 => "5",
        })
    }
}

impl<'de> Deserialize<'de> for MqttProtocol {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) if t.trim() == "3.1.1" => Ok(Self::V311),
            Raw::Text(t) if t.trim() == "5" => Ok(Self::V5),
            Raw::Number(5) => Ok(Self::V5),
            _ => Err(serde::de::Error::custom(r#"expected "3.1.1" or "5""#)),
        }
    }
}

/// `[auth]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret shared with the platform that mints `x-auth-token`s (environment only:
    /// `STSGATE_AUTH__JWT_SECRET`). Unset: generated into `{data_dir}/jwt_secret` on first run.
    pub jwt_secret: Option<Secret>,
    /// A file holding the JWT secret (alternative to `jwt_secret`).
    pub jwt_secret_file: Option<PathBuf>,
    /// Required `iss` claim, when set (the DJI demo mints `DJI`).
    pub issuer: Option<String>,
    /// Required `aud` claim, when set.
    pub audience: Option<String>,
    /// PEM public key (RSA or EC P-256) for RS256/ES256 tokens from an identity provider.
    pub public_key_file: Option<PathBuf>,
    /// JWKS URL of an identity provider for RS256/ES256 tokens (keys cached by `kid`).
    pub jwks_url: Option<String>,
    /// The shortest interval between two JWKS fetches (a token with an unknown `kid` triggers one).
    #[serde(with = "duration")]
    pub jwks_refetch_after: Duration,
    /// Clock-skew tolerance for `exp`/`nbf`.
    #[serde(with = "duration")]
    pub leeway: Duration,
    /// Longest lifetime accepted for a token (`exp` after `iat`, or after now without `iat`);
    /// unset: any. Bounds what a leaked token is worth.
    #[serde(default, with = "duration::optional")]
    pub max_token_lifetime: Option<Duration>,
}

/// `[storage]`: where credentials come from and what devices are told to upload to — the one
/// storage profile (not to be confused with `protocol::StorageConfig`, the object devices get).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageProfile {
    /// Credential source: `local` (embedded store), `minio`, `aws` or `ali`.
    pub provider: ProviderKind,
    /// Bucket devices upload into.
    pub bucket: String,
    /// Region of the bucket, as devices must sign for it.
    pub region: String,
    /// Storage endpoint advertised to devices, with scheme. Default for `local`: the embedded
    /// store's address.
    pub endpoint: Option<String>,
    /// Template of `object_key_prefix`; `{workspace_id}` is replaced, and `{device}` by the
    /// device's key when `per_device` is on.
    pub object_key_prefix: String,
    /// Credentials per device (a dock's serial number, a pilot's token subject) instead of per
    /// workspace: each device its own cached credential, named upstream as its source identity.
    pub per_device: bool,
    /// Lifetime requested for each credential.
    #[serde(with = "duration")]
    pub duration: Duration,
    /// A cached credential with less than this left is never handed out.
    #[serde(with = "duration")]
    pub min_remaining: Duration,
    /// Subtracted from the remaining lifetime when telling a device its `expire`.
    #[serde(with = "duration")]
    pub expire_margin: Duration,
    /// Longest wait on the upstream STS for one credential.
    #[serde(with = "duration")]
    pub upstream_timeout: Duration,
    /// After an upstream failure, how long the failure is answered from memory before retrying.
    #[serde(with = "duration")]
    pub failure_backoff: Duration,
    /// The STS endpoint the service calls. `aws`: the regional endpoint of `region` by default;
    /// `minio`: the MinIO server URL as this service reaches it (required); `ali`:
    /// `https://sts.aliyuncs.com` by default.
    pub sts_endpoint: Option<String>,
    /// The role to assume (`aws`: `arn:aws:iam::<account>:role/<name>`; `ali`:
    /// `acs:ram::<account>:role/<name>`; `minio` ignores it).
    pub role_arn: Option<String>,
    /// The service's own access key id (`aws`: unset means the standard AWS credential chain;
    /// `minio` and `ali`: required).
    pub access_key_id: Option<String>,
    /// The service's own secret key (environment only: `STSGATE_STORAGE__SECRET_ACCESS_KEY`,
    /// `STSGATE_PROFILES__<NAME>__SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<Secret>,
    /// A file holding the secret key (alternative to `secret_access_key`; read at start and on
    /// reload).
    pub secret_access_key_file: Option<PathBuf>,
    /// Sent as `ExternalId` on AssumeRole (`aws`, `ali`), for roles whose trust policy requires
    /// one (a customer's account trusting the platform's).
    pub external_id: Option<String>,
    /// The embedded S3-compatible store (`provider = "local"`).
    pub local: LocalStoreConfig,
}

/// `[storage.local]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalStoreConfig {
    /// Listen address of the embedded S3 endpoint.
    pub listen: SocketAddr,
    /// Administrator access key id; unset: generated into `{data_dir}/store_admin.json`.
    pub admin_access_key: Option<String>,
    /// Administrator secret key (environment only: `STSGATE_STORAGE__LOCAL__ADMIN_SECRET_KEY`).
    pub admin_secret_key: Option<Secret>,
    /// Multipart uploads untouched for longer than this are removed.
    #[serde(with = "duration")]
    pub multipart_ttl: Duration,
    /// How often expired credentials and abandoned uploads are cleaned up.
    #[serde(with = "duration")]
    pub cleanup_interval: Duration,
    /// Connections open at once (as `http.max_connections`).
    pub max_connections: usize,
    /// Longest wait for a request's headers (as `http.header_timeout`).
    #[serde(with = "duration")]
    pub header_timeout: Duration,
}

/// `[devices]`
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Workspace of gateways not listed in `bind`; unset (or `""`): such gateways are refused.
    pub default_workspace: Option<String>,
    /// Gateway serial number → workspace id.
    pub bind: BTreeMap<String, String>,
    /// The platform's database, asked for gateways not listed in `bind`.
    pub sql: Option<Box<SqlConfig>>,
}

/// `[devices.sql]` (a query that maps a gateway serial number to a workspace id) and
/// `[workspaces.sql]` (a workspace id to a profile name).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqlConfig {
    /// `postgres://…`, `mysql://…` or `mariadb://…`. Treated as a secret (it may hold a
    /// password): never logged.
    pub url: Option<Secret>,
    /// The database password, when the URL holds none (environment only:
    /// `STSGATE_DEVICES__SQL__PASSWORD`).
    pub password: Option<Secret>,
    /// A file holding the password (alternative to `password`).
    pub password_file: Option<PathBuf>,
    /// Returns the answer (text) for the one parameter (`$1` on PostgreSQL, `?` on
    /// MySQL/MariaDB); no row or `''` means none. `[devices.sql]`: the workspace id of a gateway,
    /// by default from the DJI demo's `manage_device` table; `[workspaces.sql]`: the profile name
    /// of a workspace (required).
    pub query: Option<String>,
    /// How long an answer is reused.
    #[serde(with = "duration")]
    pub cache_ttl: Duration,
    /// How long "not bound" is reused (shorter, so a newly bound dock is served soon).
    #[serde(with = "duration")]
    pub unbound_ttl: Duration,
    /// How long one lookup may take before the database counts as unavailable.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Connections in the pool.
    pub max_connections: u32,
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            url: None,
            password: None,
            password_file: None,
            query: None,
            cache_ttl: Duration::from_secs(60),
            unbound_ttl: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            max_connections: 4,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info` or `stsgate=debug,info`; `RUST_LOG` overrides it.
    pub filter: String,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

// === impl Config ===

impl Config {
    /// The embedded default: everything in-process, unbound gateways go to workspace `default`.
    pub fn embedded_default() -> Self {
        let mut config = Self::default();
        config.devices.default_workspace = Some("default".to_owned());
        config
    }

    /// The endpoint advertised to devices by the default profile ([`Config::endpoint_of`]).
    pub fn advertised_endpoint(&self) -> String {
        self.endpoint_of(&self.storage)
    }

    /// The endpoint `profile` advertises to devices: its `endpoint`, else the provider's public
    /// endpoint for the region (`aws`, `ali`), the STS endpoint (`minio`: the same server), or
    /// the embedded store's address (`local`, whichever profile it is).
    pub fn endpoint_of(&self, profile: &StorageProfile) -> String {
        if let Some(endpoint) = &profile.endpoint {
            return endpoint.trim_end_matches('/').to_owned();
        }
        match profile.provider {
            ProviderKind::Local => format!("http://{}", self.storage.local.listen),
            ProviderKind::Aws => format!("https://s3.{}.amazonaws.com", profile.region),
            ProviderKind::Ali => format!("https://oss-{}.aliyuncs.com", profile.region),
            ProviderKind::Minio => profile
                .sts_endpoint
                .as_deref()
                .unwrap_or_default()
                .trim_end_matches('/')
                .to_owned(),
        }
    }

    /// Every profile by name, the default first: `("default", [storage])`, then
    /// `[profiles.*]` in name order.
    pub fn all_profiles(&self) -> impl Iterator<Item = (&str, &StorageProfile)> {
        std::iter::once((DEFAULT_PROFILE, &self.storage))
            .chain(self.profiles.iter().map(|(n, p)| (n.as_str(), p)))
    }

    /// The profile named `name`, if there is one.
    pub fn profile(&self, name: &str) -> Option<&StorageProfile> {
        if name == DEFAULT_PROFILE {
            Some(&self.storage)
        } else {
            self.profiles.get(name)
        }
    }

    /// The configuration key of profile `name`'s section: `storage` or `profiles.<name>`.
    pub fn section_of(name: &str) -> String {
        if name == DEFAULT_PROFILE {
            "storage".to_owned()
        } else {
            format!("profiles.{name}")
        }
    }

    /// The one profile served by the embedded store (at most one is `local`), with its name.
    pub fn local_profile(&self) -> Option<(&str, &StorageProfile)> {
        self.all_profiles()
            .find(|(_, p)| p.provider == ProviderKind::Local)
    }

    /// The default workspace, with `""` meaning unset.
    pub fn default_workspace(&self) -> Option<&str> {
        self.devices
            .default_workspace
            .as_deref()
            .filter(|w| !w.is_empty())
    }
}

impl Default for Config {
    /// The defaults used under a config file: like the embedded default, but unbound gateways
    /// are refused unless `devices.default_workspace` is set.
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./stsgate-data"),
            http: HttpConfig::default(),
            mqtt: MqttConfig::default(),
            auth: AuthConfig::default(),
            storage: StorageProfile::default(),
            profiles: BTreeMap::new(),
            workspaces: WorkspacesConfig::default(),
            devices: DevicesConfig::default(),
            log: LogConfig::default(),
            audit: AuditConfig::default(),
            limits: LimitsConfig::default(),
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6789)),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Default `mqtt.embedded_max_sessions` (the embedded broker's own default; a broker test checks
/// that the two agree).
pub const EMBEDDED_MAX_SESSIONS: usize = 10_000;
/// Default `mqtt.embedded_max_retained_bytes`.
pub const EMBEDDED_MAX_RETAINED_BYTES: usize = 16 << 20;
/// Default `mqtt.embedded_max_queued_bytes`: the service's own session carries every dock's
/// requests, a few hundred bytes each.
pub const EMBEDDED_MAX_QUEUED_BYTES: usize = 8 << 20;
/// Default `auth.jwks_refetch_after`: the shortest interval between two JWKS fetches.
pub const JWKS_REFETCH_AFTER: Duration = Duration::from_secs(30);

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            url: None,
            embedded_listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            embedded_auth: false,
            embedded_max_sessions: EMBEDDED_MAX_SESSIONS,
            embedded_max_retained_bytes: EMBEDDED_MAX_RETAINED_BYTES,
            embedded_max_queued_bytes: EMBEDDED_MAX_QUEUED_BYTES,
            username: None,
            password: None,
            password_file: None,
            client_id: None,
            share_group: None,
            reply_qos: 1,
            keep_alive: Duration::from_secs(30),
            max_payload: 64 * 1024,
            protocol: MqttProtocol::V311,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_secret_file: None,
            issuer: None,
            audience: None,
            public_key_file: None,
            jwks_url: None,
            jwks_refetch_after: JWKS_REFETCH_AFTER,
            leeway: Duration::from_secs(60),
            max_token_lifetime: None,
        }
    }
}

impl Default for StorageProfile {
    fn default() -> Self {
        Self {
            provider: ProviderKind::Local,
            bucket: "media".to_owned(),
            region: "us-east-1".to_owned(),
            endpoint: None,
            object_key_prefix: "{workspace_id}".to_owned(),
            per_device: false,
            duration: Duration::from_secs(3600),
            min_remaining: Duration::from_secs(300),
            expire_margin: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(5),
            failure_backoff: Duration::from_secs(2),
            sts_endpoint: None,
            role_arn: None,
            access_key_id: None,
            secret_access_key: None,
            secret_access_key_file: None,
            external_id: None,
            local: LocalStoreConfig::default(),
        }
    }
}

impl Default for LocalStoreConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            admin_access_key: None,
            admin_secret_key: None,
            multipart_ttl: Duration::from_secs(24 * 3600),
            cleanup_interval: Duration::from_secs(60),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_owned(),
        }
    }
}
