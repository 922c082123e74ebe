//! Logging (`tracing`, text or JSON lines on stderr) and metrics (a process-wide Prometheus
//! recorder rendered by `GET /metrics`).

pub mod audit;
pub mod metrics;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Crates whose chatter is held back unless asked for; the service's own session logs say what
/// matters.
const QUIET: &str = "rumqttc=warn";

/// Installs the global subscriber. `RUST_LOG` overrides `log.filter`. Safe to call twice.
pub fn init_logging(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("{},{QUIET}", config.filter));
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
