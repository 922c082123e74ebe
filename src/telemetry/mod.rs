//! Logging (`tracing`, text or JSON lines on stderr) and metrics (a process-wide Prometheus
//! recorder rendered by `GET /metrics`).

pub mod audit;
pub mod metrics;

use std::io::IsTerminal;

use tracing::{Level, Metadata};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// Crates whose chatter is held back unless asked for; the service's own session logs say what
/// matters.
const QUIET: &str = "rumqttc=warn";

/// Installs the global subscriber. `RUST_LOG` overrides `log.filter`, within
/// [`only_our_own_detail`]. Safe to call twice.
pub fn init_logging(config: &LogConfig) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("{},{QUIET}", config.filter));
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match config.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(only_our_own_detail()))
        .try_init();
}

/// Debug and trace detail from stsgate's own code only; other crates log at info and above,
/// whatever `RUST_LOG` says. The libraries beneath us log secrets at those levels: s3s logs
/// every request with its headers (`x-amz-security-token`, the `Authorization` signature) and,
/// on a mismatch, the signature it expected; rumqttc logs its packets (the CONNECT password, the
/// replies' credentials); the AWS SDK its signed requests. stsgate's own logs never carry a
/// secret (see `tests/cli.rs`, `no_secret_reaches_the_log_at_trace_level`).
pub fn only_our_own_detail() -> FilterFn<impl Fn(&Metadata<'_>) -> bool + Clone> {
    filter_fn(|meta: &Metadata<'_>| {
        *meta.level() <= Level::INFO || meta.target().starts_with(env!("CARGO_CRATE_NAME"))
    })
}
