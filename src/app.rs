//! Wiring and shutdown: builds every part from a validated [`Config`], starts the broker (when
//! embedded), the HTTP API and the MQTT session, and stops them on one cancellation signal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Verifier};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::http::{self, AppState, Readiness};
use crate::issuer;
use crate::mqtt::{self, BrokerAddr};
use crate::secret::Secret;
use crate::telemetry;
use crate::telemetry::audit::Audit;

/// How long shutdown waits for in-flight work.
const GRACE: Duration = Duration::from_secs(5);

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The data dir is unusable.
    #[error("data dir {path}: {reason}")]
    DataDir {
        /// The path.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The token verification keys could not be loaded or generated.
    #[error("auth: {0}")]
    Secret(String),
    /// The issuer could not be built.
    #[error("storage: {0}")]
    Issuer(#[from] issuer::Error),
    /// The gateway could not be built (the message names the key).
    #[error("{0}")]
    Gateway(String),
    /// The device registry's database refused its query.
    #[error("{0}")]
    Registry(String),
    /// The embedded broker failed.
    #[error(transparent)]
    Broker(#[from] crate::embedded::broker::Error),
    /// The external broker URL is unusable.
    #[error("mqtt.url: {0}")]
    BrokerUrl(String),
    /// The TLS settings for the broker are unusable (the message names the key).
    #[error("{0}")]
    BrokerTls(String),
    /// The MQTT password file is unreadable.
    #[error("mqtt.password_file: {0}")]
    BrokerPassword(String),
    /// The audit log cannot be opened.
    #[error("audit.path {0}")]
    Audit(String),
    /// The embedded store failed.
    #[error(transparent)]
    Store(#[from] crate::embedded::store::Error),
    /// The HTTP listener could not bind.
    #[error(
        "cannot listen on {addr} for the HTTP API: {error}; set --http-listen / STSGATE_HTTP__LISTEN"
    )]
    Http {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        error: std::io::Error,
    },
}

/// A running service.
pub struct Service {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The broker the MQTT session uses.
    pub broker: BrokerAddr,
    /// True when the broker is the embedded one.
    pub embedded_broker: bool,
    /// The core, for callers that embed the service.
    pub gateway: Arc<Gateway>,
    /// Readiness flags.
    pub readiness: Readiness,
    /// The embedded S3 store, when `storage.provider = "local"`.
    pub store: Option<crate::embedded::store::Started>,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    /// Stopped last, once the MQTT session has said goodbye.
    embedded_mqtt: Option<crate::embedded::broker::Broker>,
}

// === impl Service ===

impl Service {
    /// Starts everything; returns once the listeners are bound (the MQTT session connects in the
    /// background: see [`Service::wait_ready`]).
    pub async fn start(mut config: Config) -> Result<Self, Error> {
        crate::issuer::local::create_private_dir(&config.data_dir).map_err(|e| Error::DataDir {
            path: config.data_dir.display().to_string(),
            reason: e.to_string(),
        })?;
        let metrics = telemetry::metrics::install();
        let jwt_secret =
            auth::load_or_generate(&config.auth, &config.data_dir).map_err(Error::Secret)?;
        let opened = issuer::open(&config).await?;
        let caps = Caps::new(&config, opened.keyring.is_some());
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let store = match &opened.keyring {
            Some(keyring) => {
                let started = crate::embedded::store::start(
                    &config.storage.local,
                    caps.store,
                    &config.data_dir,
                    &config.storage.bucket,
                    keyring.clone(),
                    &shutdown,
                    &mut tasks,
                )
                .await?;
                // Advertise the port actually bound (it differs when port 0 was asked for).
                config.storage.local.listen = started.addr;
                Some(started)
            }
            None => None,
        };
        let audit = match &config.audit.path {
            Some(path) => Audit::open(path)
                .await
                .map_err(|e| Error::Audit(format!("{}: {e}", path.display())))?,
            None => Audit::default(),
        };
        let gateway = Gateway::new(&config, opened.issuer).map_err(Error::Gateway)?;
        gateway.probe_registry().await.map_err(Error::Registry)?;
        let gateway = Arc::new(gateway.with_audit(audit));
        let (broker, embedded_mqtt) = match &config.mqtt.url {
            Some(url) => (BrokerAddr::parse(url).map_err(Error::BrokerUrl)?, None),
            None => {
                let started = crate::embedded::broker::start_capped(
                    config.mqtt.embedded_listen,
                    config.mqtt.max_payload,
                    caps.broker,
                )
                .await?;
                let addr = started.addr();
                (
                    BrokerAddr {
                        host: addr.ip().to_string(),
                        port: addr.port(),
                        tls: false,
                    },
                    Some(started),
                )
            }
        };
        let embedded_broker = embedded_mqtt.is_some();
        let readiness = Readiness::default();

        let state = AppState {
            gateway: gateway.clone(),
            verifier: Arc::new(Verifier::new(&jwt_secret, &config.auth).map_err(Error::Secret)?),
            readiness: readiness.clone(),
            metrics,
        };
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .map_err(|error| Error::Http {
                addr: config.http.listen,
                error,
            })?;
        let http_addr = listener.local_addr().map_err(|error| Error::Http {
            addr: config.http.listen,
            error,
        })?;
        tasks.spawn(crate::net::serve(
            listener,
            hyper_util::service::TowerToHyperService::new(http::router(state)),
            crate::net::Limits {
                max_connections: caps.http,
                header_timeout: config.http.header_timeout,
            },
            shutdown.clone(),
            "http",
        ));

        let password = mqtt_password(&config)?;
        let tls = if broker.tls {
            Some(mqtt::tls::client_config(&config.mqtt).map_err(Error::BrokerTls)?)
        } else {
            None
        };
        let settings = mqtt::Settings::new(&config.mqtt, broker.clone(), password, tls);
        tasks.spawn(mqtt::run(
            settings,
            gateway.clone(),
            readiness.clone(),
            shutdown.clone(),
        ));

        Ok(Self {
            http_addr,
            broker,
            embedded_broker,
            gateway,
            readiness,
            store,
            shutdown,
            tasks,
            embedded_mqtt,
        })
    }

    /// Waits until the MQTT subscription is in place, at most `timeout`. False on time-out.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let poll = async {
            while !self.readiness.mqtt() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(timeout, poll).await.is_ok()
    }

    /// A token that stops the service when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops taking new work, lets in-flight requests finish (at most the grace period) and
    /// disconnects from the broker.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let joined = tokio::time::timeout(GRACE, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            tracing::warn!("shutdown grace period over; abandoning remaining tasks");
            self.tasks.abort_all();
        }
        if let Some(broker) = self.embedded_mqtt.take() {
            broker.stop();
        }
    }
}

/// Each listener's connection cap: the configured ones, scaled to the descriptor limit.
struct Caps {
    http: usize,
    store: usize,
    broker: usize,
}

impl Caps {
    fn new(config: &Config, store: bool) -> Self {
        let fd_limit = crate::net::raise_fd_limit();
        let configured = [
            config.http.max_connections,
            if store {
                config.storage.local.max_connections
            } else {
                0
            },
            if config.mqtt.url.is_none() {
                crate::embedded::broker::MAX_CONNECTIONS
            } else {
                0
            },
        ];
        let caps = crate::net::budget(&configured, fd_limit);
        if caps != configured {
            tracing::warn!(
                fd_limit,
                http = caps[0],
                store = caps[1],
                broker = caps[2],
                "the descriptor limit (ulimit -n) cannot hold every listener's configured \
                 connections (http.max_connections, storage.local.max_connections, the embedded \
                 broker's); each gets a share"
            );
        }
        Self {
            http: caps[0],
            store: caps[1],
            broker: caps[2],
        }
    }
}

fn mqtt_password(config: &Config) -> Result<Option<Secret>, Error> {
    if let Some(password) = &config.mqtt.password {
        return Ok(Some(password.clone()));
    }
    match &config.mqtt.password_file {
        Some(path) => auth::read_secret_file(path)
            .map(Some)
            .map_err(|e| Error::BrokerPassword(format!("{}: {e}", path.display()))),
        None => Ok(None),
    }
}
