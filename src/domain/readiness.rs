//! Whether the service is ready: flags set by the parts that own them (the MQTT session), read
//! by `/readyz`. Shared by both fronts, so it lives below them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness flags set by the parts that own them.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    mqtt: Arc<AtomicBool>,
}

// === impl Readiness ===

impl Readiness {
    /// Records whether the MQTT session is connected.
    pub fn set_mqtt(&self, up: bool) {
        self.mqtt.store(up, Ordering::Relaxed);
    }

    /// Whether the MQTT session is connected.
    pub fn mqtt(&self) -> bool {
        self.mqtt.load(Ordering::Relaxed)
    }
}
