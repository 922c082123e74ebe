//! The SQL device registry: the platform's own database (PostgreSQL or MySQL/MariaDB, through
//! `sqlx`) answers which workspace a gateway belongs to. Answers are cached for a short time;
//! while the database is unavailable, gateways it answered for before keep being served from the
//! cache and the others get a clear "unavailable" error, never a guess.

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::AssertSqlSafe;
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::cache::{Answers, Cached};
use crate::config::SqlDevicesConfig;
use crate::config::sql::Dialect;
use crate::domain::WorkspaceId;
use crate::secret::Secret;

/// Why the SQL registry could not be built; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `[devices.sql]` without a URL.
    #[error("devices.sql.url is required when [devices.sql] is set")]
    NoUrl,
    /// A URL of no known database.
    #[error("devices.sql.url {0}")]
    Scheme(#[from] crate::config::sql::UnknownScheme),
    /// A URL the driver refuses.
    #[error("devices.sql.url cannot be used: {0}")]
    Url(sqlx::Error),
    /// `devices.sql.password_file` unreadable or empty.
    #[error("devices.sql.password_file {}: {source}", path.display())]
    PasswordFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The database refused `devices.sql.query` at start-up.
#[derive(Debug, thiserror::Error)]
#[error("devices.sql.query fails on {database}: {reason}")]
pub struct ProbeError {
    /// The database URL without its password.
    pub database: String,
    /// What the database said.
    pub reason: String,
}

/// Why a gateway's workspace could not be looked up.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LookupError {
    /// The database did not answer (down, unreachable, too slow).
    #[error(
        "the device registry is unavailable and has no recent answer for gateway {sn}; try again later"
    )]
    Unavailable {
        /// The serial number.
        sn: String,
    },
    /// The database answered, but not with a usable workspace id (a query or data problem).
    #[error("the device registry has no usable workspace for gateway {sn}; see the service log")]
    Unusable {
        /// The serial number.
        sn: String,
    },
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
    pub fn new(config: &SqlDevicesConfig, password: Option<Secret>) -> Result<Self, SetupError> {
        let url = config.url.as_ref().ok_or(SetupError::NoUrl)?;
        let dialect = Dialect::of(url.expose())?;
        let bad_url = SetupError::Url;
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
            pool,
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
                tracing::info!(database = %self.shown, "device registry database reachable");
                Ok(())
            }
            Err(Failure::Query(reason)) => Err(ProbeError {
                database: self.shown.clone(),
                reason,
            }),
            Err(Failure::Unavailable(e)) => {
                tracing::warn!(database = %self.shown, error = %e, "device registry database unavailable at start-up; will retry on each lookup");
                Ok(())
            }
        }
    }

    /// The workspace of gateway `sn`: `Ok(None)` when the database says it is not bound.
    pub async fn workspace_of(&self, sn: &str) -> Result<Option<WorkspaceId>, LookupError> {
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
        let sn = sn.to_owned();
        match failure {
            Failure::Unavailable(e) => {
                tracing::warn!(sn, database = %self.shown, error = %e, "device registry unavailable");
                Err(LookupError::Unavailable { sn })
            }
            Failure::Query(e) => {
                tracing::error!(sn, database = %self.shown, error = %e, "device registry query failed (check devices.sql.query)");
                Err(LookupError::Unusable { sn })
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
