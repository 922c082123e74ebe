//! Device registry: gateway serial number → workspace. Static, from `[devices]` in config: the
//! `bind` table first, then `default_workspace`, else the gateway is not bound.
//!
//! Serial numbers match case-insensitively: DJI serial numbers are upper case, and keys set
//! through environment variables (`STSGATE_DEVICES__BIND__<SN>`) arrive in lower case.

use std::collections::HashMap;

use crate::config::DevicesConfig;
use crate::gateway::WorkspaceId;

/// The static registry.
#[derive(Clone, Debug, Default)]
pub struct Registry {
    bind: HashMap<String, WorkspaceId>,
    default: Option<WorkspaceId>,
}

// === impl Registry ===

impl Registry {
    /// Builds the registry from validated config (entries that fail validation are skipped;
    /// `config::validate` has already refused them at start-up).
    pub fn from_config(devices: &DevicesConfig, default_workspace: Option<&str>) -> Self {
        let bind = devices
            .bind
            .iter()
            .filter_map(|(sn, ws)| Some((sn.to_ascii_uppercase(), WorkspaceId::parse(ws).ok()?)))
            .collect();
        let default = default_workspace.and_then(|ws| WorkspaceId::parse(ws).ok());
        Self { bind, default }
    }

    /// The workspace a gateway belongs to, if any.
    pub fn workspace_of(&self, sn: &str) -> Option<WorkspaceId> {
        self.bind
            .get(&sn.to_ascii_uppercase())
            .or(self.default.as_ref())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_then_default_then_none() {
        let mut devices = DevicesConfig::default();
        devices.bind.insert("SN1".into(), "ws-a".into());
        let with_default = Registry::from_config(&devices, Some("fallback"));
        assert_eq!(
            with_default.workspace_of("SN1").map(|w| w.to_string()),
            Some("ws-a".into())
        );
        assert_eq!(
            with_default.workspace_of("SN2").map(|w| w.to_string()),
            Some("fallback".into())
        );
        assert_eq!(
            with_default.workspace_of("sn1").map(|w| w.to_string()),
            Some("ws-a".into())
        );
        let strict = Registry::from_config(&devices, None);
        assert_eq!(strict.workspace_of("SN2"), None);
    }
}
