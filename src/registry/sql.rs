//! An SQL registry: the platform's own database (PostgreSQL or MySQL/MariaDB, through `sqlx`)
//! answers which workspace a gateway belongs to (`[devices.sql]`), or which storage profile a
//! workspace uses (`[workspaces.sql]`). Answers are cached for a short time; while the database
//! is unavailable, keys it answered for before keep being served from the cache and the others
//! get a clear "unavailable" error, never a guess. Both answers are identifiers of the same
//! syntax (a profile name is a workspace id in lower case), so one validated type carries them.

use std::sync::Arc;

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::cache::{Answers, Cached};
use crate::config::SqlConfig;
use crate::config::sql::Dialect;
use crate::domain::WorkspaceId;
use crate::secret::Secret;

/// Which registry: its configuration section and what it maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `[devices.sql]`: gateway serial number → workspace id.
    Devices,
    /// `[workspaces.sql]`: workspace id → profile name.
    Workspaces,
}

/// Why the SQL registry could not be built; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A section without a URL.
    #[error("{0}.url is required when [{0}] is set")]
    NoUrl(&'static str),
    /// A URL of no known database.
    #[error("{0}.url {1}")]
    Scheme(&'static str, crate::config::sql::UnknownScheme),
    /// A URL the driver refuses.
    #[error("{0}.url cannot be used: {1}")]
    Url(&'static str, sqlx::Error),
    /// `password_file` unreadable or empty.
    #[error("{section}.password_file {}: {source}", path.display())]
    PasswordFile {
        /// `devices.sql` or `workspaces.sql`.
        section: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The database refused the registry's query.
#[derive(Debug, thiserror::Error)]
#[error("{section}.query fails on {database}: {reason}")]
pub struct ProbeError {
    /// `devices.sql` or `workspaces.sql`.
    pub section: &'static str,
    /// The database URL without its password.
    pub database: String,
    /// What the database said.
    pub reason: String,
}

/// Why a gateway's workspace, or a workspace's profile, could not be looked up.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LookupError {
    /// The database did not answer (down, unreachable, too slow).
    #[error(
        "the {} registry is unavailable and has no recent answer for {}; try again later", .kind.registry(), .kind.subject(.key)
    )]
    Unavailable {
        /// Which registry.
        kind: Kind,
        /// The serial number or workspace id.
        key: String,
    },
    /// The database answered, but not with a usable answer (a query or data problem).
    #[error("the {} registry has no usable {} for {}; see the service log", .kind.registry(), .kind.answer(), .kind.subject(.key))]
    Unusable {
        /// Which registry.
        kind: Kind,
        /// The serial number or workspace id.
        key: String,
    },
}

// === impl Kind ===

impl Kind {
    /// The configuration section.
    pub const fn section(self) -> &'static str {
        match self {
            Self::Devices => "devices.sql",
            Self::Workspaces => "workspaces.sql",
        }
    }

    const fn registry(self) -> &'static str {
        match self {
            Self::Devices => "device",
            Self::Workspaces => "workspace",
        }
    }

    const fn answer(self) -> &'static str {
        match self {
            Self::Devices => "workspace",
            Self::Workspaces => "storage profile",
        }
    }

    fn subject(self, key: &str) -> String {
        match self {
            Self::Devices => format!("gateway {key}"),
            Self::Workspaces => format!("workspace {key}"),
        }
    }
}

/// A connection pool of either kind.
#[derive(Debug)]
enum Pool {
    Postgres(PgPool),
    MySql(MySqlPool),
}

/// The SQL registry with its cache.
#[derive(Debug)]
pub struct SqlRegistry {
    kind: Kind,
    pool: Pool,
    query: String,
    timeout: Duration,
    answers: Mutex<Answers>,
    /// The URL without its password, for logs.
    shown: String,
}

/// How a query failed.
#[derive(Debug)]
enum Failure {
    /// Could not reach the database in time.
    Unavailable(String),
    /// The database refused the query, or its answer has the wrong shape.
    Query(String),
}

// === impl SqlRegistry ===

impl SqlRegistry {
    /// Builds the pool (connections are opened on first use) from validated config.
    pub fn new(
        kind: Kind,
        config: &SqlConfig,
        password: Option<Secret>,
    ) -> Result<Self, SetupError> {
        let section = kind.section();
        let url = config.url.as_ref().ok_or(SetupError::NoUrl(section))?;
        let dialect = Dialect::of(url.expose()).map_err(|e| SetupError::Scheme(section, e))?;
        let bad_url = |e| SetupError::Url(section, e);
        let pool = match dialect {
            Dialect::Postgres => {
                let mut options = PgConnectOptions::from_str(url.expose())
                    .map_err(bad_url)?
                    .application_name("stsgate");
                if let Some(password) = &password {
                    options = options.password(password.expose());
                }
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(config.max_connections)
                        .acquire_timeout(config.timeout)
                        .connect_lazy_with(options),
                )
            }
            Dialect::MySql => {
                let mysql = url.expose().replacen("mariadb://", "mysql://", 1);
                let mut options = MySqlConnectOptions::from_str(&mysql).map_err(bad_url)?;
                if let Some(password) = &password {
                    options = options.password(password.expose());
                }
                Pool::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(config.max_connections)
                        .acquire_timeout(config.timeout)
                        .connect_lazy_with(options),
                )
            }
        };
        Ok(Self {
            kind,
            pool,
            // (Validation requires a query of [workspaces.sql].)
            query: config
                .query
                .clone()
                .unwrap_or_else(|| dialect.default_query().to_owned()),
            timeout: config.timeout,
            answers: Mutex::new(Answers::new(config.cache_ttl, config.unbound_ttl)),
            shown: redact(url.expose()),
        })
    }

    /// Runs the query once at start-up. A query the database refuses is a configuration error;
    /// a database that cannot be reached is only logged (it may come back; static bindings and
    /// `default_workspace` work meanwhile).
    pub async fn probe(&self) -> Result<(), ProbeError> {
        match self.fetch("").await {
            Ok(_) => {
                tracing::info!(database = %self.shown, section = self.kind.section(), "registry database reachable");
                Ok(())
            }
            Err(Failure::Query(reason)) => Err(ProbeError {
                section: self.kind.section(),
                database: self.shown.clone(),
                reason,
            }),
            Err(Failure::Unavailable(e)) => {
                tracing::warn!(database = %self.shown, section = self.kind.section(), error = %e, "registry database unavailable; will retry on each lookup");
                Ok(())
            }
        }
    }

    /// The answer for `sn` (a gateway's workspace, a workspace's profile): `Ok(None)` when the
    /// database has none.
    pub async fn lookup(&self, sn: &str) -> Result<Option<WorkspaceId>, LookupError> {
        let cached = self.cached(sn);
        if let Cached::Fresh(workspace) = cached {
            metrics::counter!("stsgate_registry_lookups_total", "outcome" => "cached").increment(1);
            return Ok(workspace);
        }
        let failure = match self.fetch(sn).await {
            Ok(value) => match parse(value) {
                Ok(workspace) => {
                    metrics::counter!("stsgate_registry_lookups_total", "outcome" => "queried")
                        .increment(1);
                    self.answers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .put(sn, workspace.clone());
                    return Ok(workspace);
                }
                Err(e) => Failure::Query(e),
            },
            Err(failure) => failure,
        };
        if let Cached::Stale(workspace) = cached {
            metrics::counter!("stsgate_registry_lookups_total", "outcome" => "stale").increment(1);
            tracing::warn!(sn, workspace = %workspace, error = ?failure, "device registry lookup failed; serving the last known binding");
            return Ok(Some(workspace));
        }
        metrics::counter!("stsgate_registry_lookups_total", "outcome" => "failed").increment(1);
        let (kind, key) = (self.kind, sn.to_owned());
        let section = kind.section();
        match failure {
            Failure::Unavailable(e) => {
                tracing::warn!(key, section, database = %self.shown, error = %e, "registry database unavailable");
                Err(LookupError::Unavailable { kind, key })
            }
            Failure::Query(e) => {
                tracing::error!(key, section, database = %self.shown, error = %e, "registry query failed (check {section}.query)");
                Err(LookupError::Unusable { kind, key })
            }
        }
    }

    fn cached(&self, sn: &str) -> Cached {
        self.answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(sn)
    }

    /// Runs the query for `sn` within the timeout.
    async fn fetch(&self, sn: &str) -> Result<Option<Option<String>>, Failure> {
        let query = AssertSqlSafe(self.query.as_str());
        let run = async {
            match &self.pool {
                Pool::Postgres(pool) => {
                    sqlx::query_scalar(query)
                        .bind(sn)
                        .fetch_optional(pool)
                        .await
                }
                Pool::MySql(pool) => {
                    sqlx::query_scalar(query)
                        .bind(sn)
                        .fetch_optional(pool)
                        .await
                }
            }
        };
        match tokio::time::timeout(self.timeout, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(Failure::Unavailable(format!(
                "no answer within {:?}",
                self.timeout
            ))),
        }
    }
}

/// The registry of `config` (`None`: none configured), its password read from the file when
/// given; `old`'s when its settings and password are the same, so that its pool and answers
/// live on across a reload.
pub fn open(
    kind: Kind,
    config: Option<&SqlConfig>,
    old: Option<&(Arc<SqlRegistry>, crate::secret::Fingerprint)>,
) -> Result<Option<(Arc<SqlRegistry>, crate::secret::Fingerprint)>, SetupError> {
    let Some(config) = config else {
        return Ok(None);
    };
    let password = match (&config.password, &config.password_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(path)) => Some(crate::auth::read_secret_file(path).map_err(|source| {
            SetupError::PasswordFile {
                section: kind.section(),
                path: path.clone(),
                source,
            }
        })?),
        (None, None) => None,
    };
    let print = crate::secret::fingerprint(config, &[config.url.as_ref(), password.as_ref()]);
    Ok(Some(match old {
        Some((sql, old_print)) if *old_print == print => (sql.clone(), print),
        _ => (Arc::new(SqlRegistry::new(kind, config, password)?), print),
    }))
}

/// No row, NULL or `''` means not bound.
fn parse(value: Option<Option<String>>) -> Result<Option<WorkspaceId>, String> {
    match value.flatten() {
        None => Ok(None),
        Some(ws) if ws.trim().is_empty() => Ok(None),
        Some(ws) => WorkspaceId::parse(ws.trim())
            .map(Some)
            .map_err(|e| format!("workspace id {ws:?}: {e}")),
    }
}

fn classify(e: sqlx::Error) -> Failure {
    match e {
        sqlx::Error::Database(_)
        | sqlx::Error::ColumnDecode { .. }
        | sqlx::Error::ColumnNotFound(_)
        | sqlx::Error::ColumnIndexOutOfBounds { .. }
        | sqlx::Error::Decode(_)
        | sqlx::Error::TypeNotFound { .. } => Failure::Query(e.to_string()),
        other => Failure::Unavailable(other.to_string()),
    }
}

/// `scheme://user:password@host/db?params` → `scheme://user@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<database>".to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        None => format!("{scheme}://{rest}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialects_by_scheme() {
        assert_eq!(Dialect::of("postgres://h/db"), Ok(Dialect::Postgres));
        assert_eq!(Dialect::of("postgresql://h/db"), Ok(Dialect::Postgres));
        assert_eq!(Dialect::of("mysql://h/db"), Ok(Dialect::MySql));
        assert_eq!(Dialect::of("MariaDB://h/db"), Ok(Dialect::MySql));
        assert!(Dialect::of("sqlite://x").is_err());
        assert!(Dialect::of("h/db").is_err());
    }

    #[test]
    fn passwords_never_reach_the_log_form() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/cloud?password=again"),
            "postgres://app@db:5432/cloud"
        );
        assert_eq!(redact("mysql://db/cloud"), "mysql://db/cloud");
        assert_eq!(redact("mysql://a:b@c@db/x"), "mysql://a@db/x");
        assert_eq!(redact("nonsense"), "<database>");
    }

    #[test]
    fn rows_to_bindings() {
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some(None)), Ok(None));
        assert_eq!(parse(Some(Some(String::new()))), Ok(None));
        assert_eq!(
            parse(Some(Some(" ws-1 ".into()))).map(|w| w.map(|w| w.to_string())),
            Ok(Some("ws-1".into()))
        );
        assert!(parse(Some(Some("../etc".into()))).is_err());
    }
}
