//! The SQL dialect a `devices.sql.url` names: known to the configuration (which validates the URL)
//! and to the registry (which speaks it).

/// A database URL of no kind understood.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[error("must start with postgres://, mysql:// or mariadb://")]
pub struct UnknownScheme;

/// The database kinds understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL (`postgres://`, `postgresql://`).
    Postgres,
    /// MySQL or MariaDB (`mysql://`, `mariadb://`).
    MySql,
}

// === impl Dialect ===

impl Dialect {
    /// The dialect of a database URL.
    pub fn of(url: &str) -> Result<Self, UnknownScheme> {
        let scheme = url.split_once("://").map_or("", |(s, _)| s);
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => Ok(Self::Postgres),
            "mysql" | "mariadb" => Ok(Self::MySql),
            _ => Err(UnknownScheme),
        }
    }

    /// The DJI demo's `manage_device` table, in this dialect's placeholder.
    pub fn default_query(self) -> &'static str {
        match self {
            Self::Postgres => "SELECT workspace_id FROM manage_device WHERE device_sn = $1",
            Self::MySql => "SELECT workspace_id FROM manage_device WHERE device_sn = ?",
        }
    }
}
