//! Logging (`tracing`, text or JSON lines on stderr) and metrics (a process-wide Prometheus
//! recorder rendered by `GET /metrics`).
//!
//! Log lines are formatted on the thread that logs them and written by a thread of their own
//! (`tracing-appender`'s non-blocking writer, batched through a buffer flushed whenever the queue
//! is empty), so a request never waits on a `write` to stderr. The queue is bounded: when the
//! writer cannot keep up, lines are dropped and counted (`stsgate_log_dropped_total`) rather
//! than slowing requests.

pub mod audit;
pub mod metrics;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

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

/// Lines waiting for the writer thread at most.
const LOG_QUEUE: usize = 8 * 1024;

/// Lines dropped because the writer thread could not keep up.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the log writer thread; dropping it writes out what is queued (hold it until exit).
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    /// Held for its `Drop`.
    _writer: Option<WorkerGuard>,
}

/// Installs the global subscriber. `RUST_LOG` overrides `log.filter`, within
/// [`only_our_own_detail`]. Safe to call twice (the second call changes nothing).
pub fn init_logging(config: &LogConfig) -> LogGuard {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("{},{QUIET}", config.filter));
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_QUEUE)
        .thread_name("stsgate-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let dropped = writer.error_counter();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    let fmt = match config.format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(only_our_own_detail()))
        .try_init()
        .is_ok();
    if installed {
        let _ = DROPPED.set(dropped);
        LogGuard {
            _writer: Some(guard),
        }
    } else {
        LogGuard { _writer: None }
    }
}

/// Log lines dropped so far because the writer could not keep up.
pub fn log_lines_dropped() -> u64 {
    DROPPED
        .get()
        .map_or(0, |c| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX))
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
