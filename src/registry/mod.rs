//! Device registry: gateway serial number → workspace. The `bind` table from `[devices]` first,
//! then the platform's database (`[devices.sql]`, see [`sql`]), then `default_workspace`, else
//! the gateway is not bound. A database that cannot answer is an error, never a fall-through to
//! the default: a dock bound elsewhere must not get another workspace's credentials.
//!
//! Serial numbers in `bind` match case-insensitively: DJI serial numbers are upper case, and
//! keys set through environment variables (`STSGATE_DEVICES__BIND__<SN>`) arrive in lower case.

mod cache;
pub mod sql;

use std::collections::HashMap;
use std::sync::Arc;

pub use sql::{LookupError, ProbeError, SetupError};

use crate::config::DevicesConfig;
use crate::domain::WorkspaceId;

/// The registry.
#[derive(Debug, Default)]
pub struct Registry {
    bind: HashMap<String, WorkspaceId>,
    /// The database, shared by the registries a reload builds while its settings (password
    /// included) stay the same, so its pool and its cache of answers live on.
    sql: Option<(Arc<sql::SqlRegistry>, crate::secret::Fingerprint)>,
    default: Option<WorkspaceId>,
}

// === impl Registry ===

impl Registry {
    /// Builds the registry from validated config (entries that fail validation are skipped;
    /// `config::validate` has already refused them at start-up). The database, if any, is not
    /// contacted yet: see [`Registry::probe`].
    pub fn from_config(
        devices: &DevicesConfig,
        default_workspace: Option<&str>,
    ) -> Result<Self, SetupError> {
        Self::reloaded(devices, default_workspace, None)
    }

    /// Like [`Registry::from_config`], keeping `old`'s database (pool and cached answers) when
    /// its settings and password are unchanged.
    pub fn reloaded(
        devices: &DevicesConfig,
        default_workspace: Option<&str>,
        old: Option<&Self>,
    ) -> Result<Self, SetupError> {
        let bind = devices
            .bind
            .iter()
            .filter_map(|(sn, ws)| Some((sn.to_ascii_uppercase(), WorkspaceId::parse(ws).ok()?)))
            .collect();
        let default = default_workspace.and_then(|ws| WorkspaceId::parse(ws).ok());
        let sql = sql::open(
            sql::Kind::Devices,
            devices.sql.as_deref(),
            old.and_then(|o| o.sql.as_ref()),
        )?;
        Ok(Self { bind, sql, default })
    }

    /// Whether both ask the same database (one pool and cache of answers), or neither asks one.
    pub fn same_database(&self, other: &Self) -> bool {
        match (&self.sql, &other.sql) {
            (Some((a, _)), Some((b, _))) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        }
    }

    /// Checks the database query once (start-up).
    pub async fn probe(&self) -> Result<(), ProbeError> {
        match &self.sql {
            Some((sql, _)) => Box::pin(sql.probe()).await,
            None => Ok(()),
        }
    }

    /// The workspace a gateway belongs to; `Ok(None)` when it belongs to none.
    pub async fn workspace_of(&self, sn: &str) -> Result<Option<WorkspaceId>, LookupError> {
        if let Some(ws) = self.bind.get(&sn.to_ascii_uppercase()) {
            return Ok(Some(ws.clone()));
        }
        if let Some((sql, _)) = &self.sql
            // Boxed: the driver's future is large, and most requests never need it.
            && let Some(ws) = Box::pin(sql.lookup(sn)).await?
        {
            return Ok(Some(ws));
        }
        Ok(self.default.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bound_then_default_then_none() {
        let mut devices = DevicesConfig::default();
        devices.bind.insert("SN1".into(), "ws-a".into());
        let with_default = Registry::from_config(&devices, Some("fallback")).unwrap();
        assert_eq!(
            with_default
                .workspace_of("SN1")
                .await
                .unwrap()
                .map(|w| w.to_string()),
            Some("ws-a".into())
        );
        assert_eq!(
            with_default
                .workspace_of("SN2")
                .await
                .unwrap()
                .map(|w| w.to_string()),
            Some("fallback".into())
        );
        assert_eq!(
            with_default
                .workspace_of("sn1")
                .await
                .unwrap()
                .map(|w| w.to_string()),
            Some("ws-a".into())
        );
        let strict = Registry::from_config(&devices, None).unwrap();
        assert_eq!(strict.workspace_of("SN2").await.unwrap(), None);
    }
}
