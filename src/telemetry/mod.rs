//! Logging (`tracing`, text or JSON lines on stderr) and metrics (a process-wide Prometheus
//! recorder rendered by `GET /metrics`).
//!
//! Log lines are formatted on the thread that logs them and written in batches by a thread of
//! their own (`telemetry::writer`), so a request never waits on a `write` to stderr. The buffer is
//! bounded: when the writer cannot keep up, lines are dropped and counted
//! (`stsgate_log_dropped_total`) rather than slowing requests.

pub mod audit;
pub mod context;
pub mod filter;
pub mod handout;
mod line;
pub mod metrics;
mod plain;
#[cfg(test)]
mod testing;
mod writer;

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::{Level, Metadata};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{LogConfig, LogFormat};

/// The installed writer, for the count of lines it dropped.
static WRITER: OnceLock<writer::BatchWriter> = OnceLock::new();

/// Keeps the log writer thread; dropping it writes out what is waiting (hold it until exit).
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    /// Held for its `Drop`.
    _writer: Option<writer::Guard>,
}

/// Installs the global subscriber. `RUST_LOG` overrides `log.filter`, within
/// [`only_our_own_detail`]; a reload replaces `log.filter` ([`filter::set`]). Safe to call twice
/// (the second call changes nothing). Fails only when the writer thread cannot be started.
pub fn init_logging(config: &LogConfig) -> std::io::Result<LogGuard> {
    // Plain `target=level` lists go to `Targets`, which decides once per call site; `EnvFilter`
    // only for span and field directives (`target[span{field=value}]=level`), since it takes a
    // lock on every span enter, exit and close, and the HTTP front enters its request span on
    // every poll: with the per-layer filter it was a fifth of a cache hit at info (BENCHMARKS.md).
    let filters = filter::Filters::new(&config.filter);
    let (writer, guard) = writer::spawn(std::io::stderr())?;
    let colours = std::io::stderr().is_terminal();
    // A request's id and its other context come from `context`, not from a span (see there).
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(writer.clone())
        .with_ansi(colours);
    let fmt = match config.format {
        LogFormat::Text if colours => fmt.event_format(line::Text).boxed(),
        LogFormat::Text => fmt
            .fmt_fields(plain::PlainFields)
            .event_format(line::Text)
            .boxed(),
        LogFormat::Json => fmt
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(line::Json)
            .boxed(),
    };
    // `EnvFilter` first: its reload handle is typed by the subscriber beneath it.
    let installed = tracing_subscriber::registry()
        .with(filters.env)
        .with(filters.targets)
        .with(only_our_own_detail())
        .with(fmt)
        .try_init()
        .is_ok();
    if installed {
        filters.installed.commit();
        let _ = WRITER.set(writer);
        Ok(LogGuard {
            _writer: Some(guard),
        })
    } else {
        Ok(LogGuard { _writer: None })
    }
}

/// Log lines dropped so far because the writer could not keep up.
pub fn log_lines_dropped() -> u64 {
    WRITER.get().map_or(0, writer::BatchWriter::dropped)
}

/// Debug and trace detail from stsgate's own code only; other crates log at info and above,
/// whatever `RUST_LOG` says (decided once per call site). The libraries beneath us log secrets at those levels: s3s logs
/// every request with its headers (`x-amz-security-token`, the `Authorization` signature) and,
/// on a mismatch, the signature it expected; rumqttc logs its packets (the CONNECT password, the
/// replies' credentials); the AWS SDK its signed requests. stsgate's own logs never carry a
/// secret (see `tests/cli.rs`, `no_secret_reaches_the_log_at_trace_level`).
///
/// s3s's `ops` lines are not written at all: it logs every S3 error at ERROR, a client's refused
/// upload or missing key as much as a failing disk, twice per request. The store says what an
/// operator must know itself: a refusal once at info (`embedded::store::access`), an I/O error
/// at error (`embedded::store::disk::io_error`).
pub fn only_our_own_detail() -> FilterFn<impl Fn(&Metadata<'_>) -> bool + Clone> {
    filter_fn(|meta: &Metadata<'_>| {
        let target = meta.target();
        if target.starts_with(env!("CARGO_CRATE_NAME")) {
            return true;
        }
        *meta.level() <= Level::INFO && !target.starts_with("s3s::ops")
    })
}
