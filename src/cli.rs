//! The command line: `serve`, `token`, `check`, `config`, `reload`. Flags override environment variables, which
//! override the config file, which overrides the defaults.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use stsgate::app::Service;
use stsgate::auth;
use stsgate::config::{self, Config, Sources};
use stsgate::domain::WorkspaceId;
use stsgate::telemetry;

/// Temporary, least-privilege storage credentials for DJI Cloud API docks and Pilot 2.
#[derive(Debug, Parser)]
#[command(name = "stsgate", version, about)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// TOML config file. Without one, the embedded default runs.
    #[arg(long, global = true, env = "STSGATE_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (secrets, minted credentials, objects) [env: STSGATE_DATA_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log format: text or json [env: STSGATE_LOG__FORMAT].
    #[arg(long, global = true, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the service.
    Serve(ServeArgs),
    /// Print an x-auth-token for a workspace, signed with the configured secret.
    Token(TokenArgs),
    /// Prove the configuration end to end, as a dock would; exits non-zero on failure.
    Check(CheckArgs),
    /// Print the effective configuration (secrets redacted).
    Config,
    /// Make the service running with this data dir read its configuration again (SIGHUP through
    /// its pid file) and print the outcome; exits non-zero if it was rejected.
    Reload,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Workspace whose profile is checked and under whose prefix the probe is written.
    #[arg(long, default_value = "stsgate-check")]
    workspace: String,
    /// Check every storage profile once (the probe under `--workspace`'s prefix in each).
    #[arg(long)]
    all: bool,
    /// Embedded S3 store listen address, when the check has to start one [env: STSGATE_STORAGE__LOCAL__LISTEN].
    #[arg(long, value_name = "ADDR")]
    storage_local_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// HTTP API listen address [env: STSGATE_HTTP__LISTEN].
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Embedded MQTT broker listen address [env: STSGATE_MQTT__EMBEDDED_LISTEN].
    #[arg(long, value_name = "ADDR")]
    mqtt_embedded_listen: Option<SocketAddr>,
    /// External broker, mqtt://host:port, instead of the embedded one [env: STSGATE_MQTT__URL].
    #[arg(long, value_name = "URL")]
    mqtt_url: Option<String>,
    /// Embedded S3 store listen address [env: STSGATE_STORAGE__LOCAL__LISTEN].
    #[arg(long, value_name = "ADDR")]
    storage_local_listen: Option<SocketAddr>,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Workspace id the token is for.
    #[arg(long)]
    workspace: String,
    /// Lifetime, e.g. 24h, 30m.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    ttl: Duration,
    /// Username claim.
    #[arg(long, default_value = "stsgate")]
    username: String,
}

/// Exit code for a configuration that cannot be used (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

// === impl Global ===

impl Global {
    /// This binary with the config file it was given and the data dir `serve` uses, as absolute
    /// paths: how to run another command against the same configuration and data dir from any
    /// directory (the banner's `token` line; a token signed from another directory's default
    /// data dir would carry another secret, and be a 401).
    fn command_line(&self, data_dir: &std::path::Path) -> String {
        let absolute = |p: &std::path::Path| {
            std::fs::canonicalize(p)
                .map_or_else(|_| p.display().to_string(), |p| p.display().to_string())
        };
        let exe = std::env::current_exe()
            .map_or_else(|_| "stsgate".to_owned(), |p| p.display().to_string());
        let mut line = exe;
        if let Some(config) = &self.config {
            line.push_str(&format!(" --config {}", absolute(config)));
        }
        line.push_str(&format!(" --data-dir {}", absolute(data_dir)));
        line
    }
}

// === impl Cli ===

impl Cli {
    /// Loads the configuration from the file, the environment and the flags.
    pub fn load_config(&self) -> Result<Config, config::Error> {
        config::load(&self.sources())
    }

    /// Where the configuration comes from: the file, the environment as it is now, the flags.
    fn sources(&self) -> Sources {
        let mut flags = Vec::new();
        let mut flag = |key: &str, value: Option<String>| {
            if let Some(value) = value {
                flags.push((key.to_owned(), value));
            }
        };
        flag(
            "data_dir",
            self.global
                .data_dir
                .as_ref()
                .map(|p| p.display().to_string()),
        );
        flag("log.format", self.global.log_format.clone());
        if let Command::Serve(serve) = &self.command {
            flag("http.listen", serve.http_listen.map(|a| a.to_string()));
            flag(
                "mqtt.embedded_listen",
                serve.mqtt_embedded_listen.map(|a| a.to_string()),
            );
            flag("mqtt.url", serve.mqtt_url.clone());
            flag(
                "storage.local.listen",
                serve.storage_local_listen.map(|a| a.to_string()),
            );
        }
        if let Command::Check(check) = &self.command {
            flag(
                "storage.local.listen",
                check.storage_local_listen.map(|a| a.to_string()),
            );
        }
        Sources {
            file: self.global.config.clone(),
            env: std::env::vars().collect(),
            flags,
        }
    }

    /// Runs the command.
    pub async fn run(self, config: Config) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(_) => {
                // Read again on SIGHUP, with the environment and flags of this start.
                let sources = self.sources();
                let global = self.global;
                Box::pin(serve(config, sources, move |data_dir| {
                    global.command_line(data_dir)
                }))
                .await
            }
            Command::Token(args) => token(&config, &args),
            Command::Check(args) => Box::pin(check(config, &args)).await,
            Command::Reload => reload(&config),
            Command::Config => {
                say(&toml::to_string_pretty(&config).context("cannot print the configuration")?);
                Ok(())
            }
        }
    }
}

/// The dock request the banner shows, as in README.
const DOCK_EXAMPLE: &str = r#"{"tid":"6a7bfe89-c386-4043-b600-b518e10096cc","bid":"42a19f36-5117-4520-bd13-fd61d818d52e","method":"storage_config_get","timestamp":1654070968655,"data":{"module":0}}"#;

async fn serve(
    config: Config,
    sources: Sources,
    again: impl FnOnce(&std::path::Path) -> String,
) -> anyhow::Result<()> {
    let _log = telemetry::init_logging(&config.log).context("cannot start the log writer")?;
    let (data_dir, bucket, provider) = (
        config.data_dir.clone(),
        config.storage.bucket.clone(),
        config.storage.provider,
    );
    let service = Service::start(config).await?;
    // For `stsgate reload`; removed when the service stops.
    let _pid = stsgate::control::PidFile::write(&data_dir).with_context(|| {
        format!(
            "cannot write {}",
            data_dir.join(stsgate::control::PID_FILE).display()
        )
    })?;
    if !service.wait_ready(Duration::from_secs(5)).await {
        tracing::warn!(broker = %service.broker, "not subscribed yet; still trying in the background");
    }
    let broker_kind = if service.embedded_broker {
        "embedded"
    } else {
        "external"
    };
    let mut banner = format!(
        "stsgate is ready\n  \
         HTTP API     http://{http}  (POST /storage/api/v1/workspaces/{{workspace_id}}/sts)\n  \
         MQTT broker  {broker} ({broker_kind}); docks publish on thing/product/{{sn}}/requests\n  \
         storage      {provider} credentials for {endpoint}, bucket {bucket} (devices see provider \"{wire}\")\n",
        http = service.http_addr,
        broker = service.broker,
        endpoint = service.gateway.endpoint(),
        wire = provider.wire(),
    );
    if let Some(generated) = service.mqtt_users_generated {
        banner.push_str(&format!(
            "  MQTT users   docks log in as `dock` (and stsgate as `stsgate`) with the passwords in {}{}\n",
            data_dir
                .join(stsgate::embedded::broker::users::FILE)
                .display(),
            if generated { " (generated now)" } else { "" },
        ));
    }
    if let Some(store) = &service.store {
        banner.push_str(&format!(
            "  S3 store     http://{} (embedded), objects in {}\n",
            store.addr,
            store.root.display()
        ));
        let admin = &store.admin;
        let admin_file = data_dir.join(stsgate::embedded::store::ADMIN_FILE);
        if store.admin_generated {
            banner.push_str(&format!(
                "  store admin  {} / {}  (generated now and shown only this once; kept in {})\n",
                admin.access_key_id,
                admin.secret_access_key.expose(),
                data_dir
                    .join(stsgate::embedded::store::ADMIN_FILE)
                    .display(),
            ));
        } else if admin_file.exists() {
            banner.push_str(&format!(
                "  store admin  {} (its secret: jq -r .secret_access_key {})\n",
                admin.access_key_id,
                admin_file.display()
            ));
        } else {
            banner.push_str(&format!(
                "  store admin  {} (its secret is in your configuration)\n",
                admin.access_key_id
            ));
        }
    }
    // (After the start, which made the data dir, so that its absolute path can be shown.)
    let again = again(&data_dir);
    let broker = &service.broker;
    let mut mosquitto = format!("-h {} -p {}", broker.host, broker.port);
    if broker.tls {
        mosquitto.push_str(" --capath /etc/ssl/certs");
    }
    if service.mqtt_users_generated.is_some() {
        mosquitto.push_str(" -u dock -P <dock's password>");
    }
    banner.push_str(&format!(
        "  data dir     {}\n  a token      {again} token --workspace default\n  \
         a dock       mosquitto_sub {mosquitto} -t 'thing/product/4TADKAQ000002J/requests_reply' -v\n  \
         \x20            and in another terminal:\n  \
         \x20            mosquitto_pub {mosquitto} -q 1 -t 'thing/product/4TADKAQ000002J/requests' -m '{DOCK_EXAMPLE}'",
        data_dir.display()
    ));
    say(&banner);
    until_stopped(&service, &sources).await;
    tracing::info!("shutting down");
    service.stop().await;
    Ok(())
}

async fn check(config: Config, args: &CheckArgs) -> anyhow::Result<()> {
    let workspace = WorkspaceId::parse(&args.workspace)?;
    let target = if args.all {
        say(&format!(
            "stsgate check: every profile ({})",
            config
                .all_profiles()
                .map(|(name, _)| name)
                .collect::<Vec<_>>()
                .join(", ")
        ));
        stsgate::check::Target::All(workspace)
    } else {
        let name = config
            .workspaces
            .profile
            .get(workspace.as_str())
            .map_or(config::DEFAULT_PROFILE, String::as_str);
        let profile = config.profile(name).unwrap_or(&config.storage);
        say(&format!(
            "stsgate check: workspace {workspace}, profile {name}: provider {}, bucket {}",
            profile.provider, profile.bucket
        ));
        stsgate::check::Target::Workspace(workspace)
    };
    let report = stsgate::check::run(config, target).await;
    say(report.render().trim_end());
    anyhow::ensure!(report.passed(), "check failed");
    Ok(())
}

/// `stsgate reload`: the file is valid (or this command would not have started), so the
/// service is signalled; what it made of it is its own answer (the environment may differ).
fn reload(config: &Config) -> anyhow::Result<()> {
    let status = stsgate::control::request_reload(&config.data_dir, Duration::from_secs(10))?;
    let mut out = format!("stsgate reload: process {}: {}", status.pid, status.result);
    for line in &status.lines {
        out.push_str(&format!("\n  {line}"));
    }
    for key in &status.restart {
        out.push_str(&format!(
            "\n  {key}: changed, takes effect at the next start"
        ));
    }
    say(&out);
    anyhow::ensure!(status.result == "ok", "the running configuration is kept");
    Ok(())
}

fn token(config: &Config, args: &TokenArgs) -> anyhow::Result<()> {
    WorkspaceId::parse(&args.workspace)?;
    let secret =
        auth::load_or_generate(&config.auth, &config.data_dir).map_err(anyhow::Error::msg)?;
    let token = auth::mint(
        &secret,
        &args.workspace,
        &args.username,
        args.ttl,
        config.auth.issuer.as_deref(),
    )?;
    say(&token);
    Ok(())
}

fn parse_duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

/// Serves until SIGTERM or SIGINT (Ctrl-C). No other signal that a process manager, a terminal
/// or a log rotator sends stops the service, though their default action would: SIGHUP
/// (`systemctl reload`, `stsgate reload`, a closed terminal, logrotate's `postrotate`) reads the
/// configuration again and opens the audit file again ([`stsgate::app::Service::reload`]);
/// SIGUSR1, SIGUSR2 and SIGALRM (runit's `sv 1`, `sv 2`, `sv alarm`) are logged and ignored.
/// (Rust's runtime ignores SIGPIPE; SIGQUIT is left to dump core, as its sender asks.)
async fn until_stopped(service: &stsgate::app::Service, sources: &Sources) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        /// The next delivery of `signal`, or never if it could not be listened for.
        async fn next(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        let listen = |kind| signal(kind).ok();
        let mut term = listen(SignalKind::terminate());
        let mut hangup = listen(SignalKind::hangup());
        let mut usr1 = listen(SignalKind::user_defined1());
        let mut usr2 = listen(SignalKind::user_defined2());
        let mut alarm = listen(SignalKind::alarm());
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return,
                () = next(&mut term) => return,
                () = next(&mut hangup) => {
                    tracing::info!(signal = "SIGHUP", "reading the configuration again");
                    // The outcome is logged and counted by the reload itself; on a rejected
                    // one the audit file is still opened again, as a rotator needs.
                    if service.reload(sources).await.is_err()
                        && let Err(error) = service.reopen_files().await
                    {
                        tracing::error!(%error, "the audit file cannot be opened again; records go on to the file that was open");
                    }
                }
                () = next(&mut usr1) => tracing::info!(signal = "SIGUSR1", "signal ignored"),
                () = next(&mut usr2) => tracing::info!(signal = "SIGUSR2", "signal ignored"),
                () = next(&mut alarm) => tracing::info!(signal = "SIGALRM", "signal ignored"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (service, sources);
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Writes a line to standard output (the CLI's own output, not logging).
#[allow(clippy::print_stdout)]
fn say(text: &str) {
    println!("{text}");
}
