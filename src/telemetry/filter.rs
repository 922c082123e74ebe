//! The log filter, replaceable while the service runs (`log.filter` on a reload).
//!
//! A plain `target=level` list, the usual case, is a [`Targets`] behind an [`ArcSwap`]: it is read
//! when a call site registers and, for call sites another filter left undecided, when an event
//! or span is made; never on a span's enter or exit. `tracing_subscriber::reload` would put a
//! lock read on every layer callback, and the HTTP front enters its request span on every poll.
//! A new list is stored and every call site's interest is computed again
//! (`rebuild_interest_cache`), so call sites that were off come on and the other way round.
//!
//! A list with span or field directives needs [`EnvFilter`], which already takes a lock on every
//! span callback; it is installed behind `tracing_subscriber::reload`, whose lock then costs no
//! more. Which of the two is installed is decided at start: a reload that would need the other
//! takes effect at the next start, and says so.

use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::{EnvFilter, Registry, reload};

/// Crates whose chatter is held back unless asked for; the service's own session logs say what
/// matters.
const QUIET: &str = "rumqttc=warn";

/// The installed filter, for [`set`].
static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// What [`set`] replaces; made the one it replaces by [`Installed::commit`].
pub(super) enum Installed {
    /// `RUST_LOG` decides; `log.filter` is not read.
    Environment,
    Targets(Arc<ArcSwap<Targets>>),
    Env(reload::Handle<EnvFilter, Registry>),
}

/// The filters to install: at most one of the two is `Some`.
pub(super) struct Filters {
    pub env: Option<reload::Layer<EnvFilter, Registry>>,
    pub targets: Option<LiveTargets>,
    pub installed: Installed,
}

impl Filters {
    /// The filter for `log.filter`, or for `RUST_LOG` when it is set and not empty. An unusable
    /// `RUST_LOG` falls back to `info` (`log.filter` is validated with the configuration).
    pub(super) fn new(filter: &str) -> Self {
        let environment = std::env::var("RUST_LOG")
            .ok()
            .filter(|v| !v.trim().is_empty());
        let directives = match &environment {
            Some(v) => v.clone(),
            None => with_quiet(filter),
        };
        let (env, targets, installed) = match plain(&directives) {
            Some(targets) => {
                let live = Arc::new(ArcSwap::from_pointee(targets));
                (
                    None,
                    Some(LiveTargets(live.clone())),
                    Installed::Targets(live),
                )
            }
            None => {
                let filter =
                    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
                let (layer, handle) = reload::Layer::new(filter);
                (Some(layer), None, Installed::Env(handle))
            }
        };
        let installed = if environment.is_some() {
            Installed::Environment
        } else {
            installed
        };
        Self {
            env,
            targets,
            installed,
        }
    }
}

impl Installed {
    /// Makes this the filter [`set`] replaces, once the subscriber holding it is installed.
    pub(super) fn commit(self) {
        let _ = INSTALLED.set(self);
    }
}

/// Why a new `log.filter` was not applied.
#[derive(Debug, thiserror::Error)]
pub enum Unapplied {
    /// `RUST_LOG` overrides `log.filter`.
    #[error("RUST_LOG is set and overrides log.filter")]
    Environment,
    /// The running filter cannot take this one's kind of directives.
    #[error("span and field directives need a restart when the running filter has none")]
    Kind,
    /// No subscriber of ours is installed (a library user, a test).
    #[error("the service's logging is not installed")]
    NotInstalled,
    /// The directives do not parse (validation normally catches this first).
    #[error("not a filter: {0}")]
    Invalid(String),
}

/// Replaces the running filter with `filter` (a `log.filter`), from the next event on.
pub fn set(filter: &str) -> Result<(), Unapplied> {
    let directives = with_quiet(filter);
    match INSTALLED.get() {
        None => Err(Unapplied::NotInstalled),
        Some(Installed::Environment) => Err(Unapplied::Environment),
        Some(Installed::Targets(live)) => {
            let targets = plain(&directives).ok_or(Unapplied::Kind)?;
            live.store(Arc::new(targets));
            tracing::callsite::rebuild_interest_cache();
            Ok(())
        }
        Some(Installed::Env(handle)) => {
            let new =
                EnvFilter::try_new(&directives).map_err(|e| Unapplied::Invalid(e.to_string()))?;
            handle
                .reload(new)
                .map_err(|e| Unapplied::Invalid(e.to_string()))
        }
    }
}

/// `directives` as a [`Targets`], if they are a plain `target=level` list. `Targets` would take
/// a span directive's `target[span]` for a target of that name, so anything with `[` is not.
fn plain(directives: &str) -> Option<Targets> {
    if directives.contains('[') {
        return None;
    }
    directives.parse().ok()
}

fn with_quiet(filter: &str) -> String {
    format!("{filter},{QUIET}")
}

/// A [`Targets`] that [`set`] replaces.
pub(super) struct LiveTargets(Arc<ArcSwap<Targets>>);

impl<S: Subscriber> Layer<S> for LiveTargets {
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        Layer::<S>::register_callsite(&**self.0.load(), metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        Layer::<S>::enabled(&**self.0.load(), metadata, ctx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Layer::<S>::max_level_hint(&**self.0.load())
    }
}
