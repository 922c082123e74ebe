//! `stsgate check`: prove a configuration end to end, as a dock would. Obtain credentials through
//! the configured provider exactly as the fronts do (the same [`Gateway`]), upload a probe object
//! under the prefix with them, read it back with administrator access where there is one,
//! confirm that a write outside the prefix is refused, and clean up. Each step is a line of the
//! report; a failing step says the most likely cause and the fix.

mod diagnose;

use std::fmt::Write as _;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::domain::WorkspaceId;
use crate::embedded::store::{self, AdminKey};
use crate::gateway::Gateway;
use crate::protocol::{Provider, StorageConfig};
use crate::random;
use crate::source;

/// The outcome of one step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// It worked.
    Pass,
    /// It failed: the configuration does not work.
    Fail,
    /// Not applicable or not possible with this provider; not a failure.
    Skip,
    /// Information.
    Note,
    /// The start of one profile's checklist.
    Section,
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Step {
    /// Outcome.
    pub mark: Mark,
    /// What was checked.
    pub title: String,
    /// Details, or for a failure the likely cause and the fix.
    pub detail: Option<String>,
}

/// The whole report.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// One line per step, in order.
    pub steps: Vec<Step>,
}

/// What to check.
#[derive(Clone, Debug)]
pub enum Target {
    /// The profile this workspace routes to, with the probe under its prefix.
    Workspace(WorkspaceId),
    /// Every profile once, each with the probe under this workspace's prefix there.
    All(WorkspaceId),
}

/// Runs the check of `target`.
pub async fn run(mut config: Config, target: Target) -> Report {
    let mut report = Report::default();
    report.add(
        Mark::Pass,
        "configuration is valid",
        format!("{} storage profile(s)", config.all_profiles().count()),
    );
    let opened = match source::open(&config).await {
        Ok(opened) => opened,
        Err(e) => {
            report.add(Mark::Fail, "open the credential source", format!("{e}"));
            return report;
        }
    };
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut admin: Option<AdminKey> = None;
    if let Some(keyring) = &opened.keyring {
        let running =
            config.storage.endpoint.is_some() || reachable(config.storage.local.listen).await;
        if running {
            admin = AdminKey::load_or_generate(&config.storage.local, &config.data_dir)
                .ok()
                .map(|(key, _)| key);
        } else {
            let bucket = config
                .local_profile()
                .map_or_else(|| config.storage.bucket.clone(), |(_, p)| p.bucket.clone());
            let started = store::start(
                &config.storage.local,
                config.storage.local.max_connections,
                &config.data_dir,
                &bucket,
                keyring.clone(),
                &shutdown,
                &mut tasks,
            )
            .await;
            match started {
                Ok(started) => {
                    report.add(
                        Mark::Note,
                        "no embedded store was running; started one for this check",
                        format!("http://{}", started.addr),
                    );
                    config.storage.local.listen = started.addr;
                    admin = Some(started.admin);
                }
                Err(e) => {
                    report.add(Mark::Fail, "start the embedded store", e.to_string());
                    return report;
                }
            }
        }
    }
    let gateway = match Gateway::new(&config, opened.issuers, Default::default()) {
        Ok(gateway) => gateway,
        Err(e) => {
            report.add(Mark::Fail, "build the gateway", e.to_string());
            return report;
        }
    };
    let (workspace, profiles) = match target {
        Target::Workspace(ws) => match gateway.profile_of(ws.as_str()).await {
            Ok(profile) => (ws, vec![profile]),
            Err(e) => {
                report.add(
                    Mark::Fail,
                    "find the workspace's profile",
                    diagnose::gateway(&e),
                );
                shutdown.cancel();
                while tasks.join_next().await.is_some() {}
                return report;
            }
        },
        // `default` first, then the named ones.
        Target::All(ws) => (
            ws,
            config
                .all_profiles()
                .map(|(name, _)| name.to_owned())
                .collect(),
        ),
    };
    let local = config.local_profile().map(|(name, _)| name.to_owned());
    for name in profiles {
        let Some(profile) = config.profile(&name) else {
            continue;
        };
        report.add(
            Mark::Section,
            format!("profile {name} ([{}])", Config::section_of(&name)),
            format!(
                "provider {}, bucket {}, region {}",
                profile.provider, profile.bucket, profile.region
            ),
        );
        let admin = admin.as_ref().filter(|_| local.as_deref() == Some(&name));
        probe(&mut report, &gateway, &name, workspace.clone(), admin).await;
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    report
}

async fn probe(
    report: &mut Report,
    gateway: &Gateway,
    profile: &str,
    workspace: WorkspaceId,
    admin: Option<&AdminKey>,
) {
    let issued = match gateway.for_profile(profile, workspace.clone()).await {
        Some(Ok(issued)) => issued,
        None => {
            report.add(
                Mark::Fail,
                "obtain credentials",
                format!("no profile {profile}"),
            );
            return;
        }
        Some(Err(e)) => {
            report.add(Mark::Fail, "obtain credentials", diagnose::gateway(&e));
            return;
        }
    };
    let sc = &issued.config();
    report.add(
        Mark::Pass,
        format!("credentials issued for workspace {workspace}"),
        format!(
            "access key {}, prefix {}, expire {} s, endpoint {}",
            sc.credentials.access_key_id, sc.object_key_prefix, sc.credentials.expire, sc.endpoint
        ),
    );
    let device = client(
        sc,
        &sc.credentials.access_key_id,
        sc.credentials.access_key_secret.expose(),
        Some(sc.credentials.security_token.expose()),
    );
    let tag = random::string(random::BASE32, 8)
        .unwrap_or_default()
        .to_lowercase();
    let key = format!("{}/stsgate-check-{tag}.txt", sc.object_key_prefix);
    let body = format!("stsgate check probe {tag}\n");
    match put(&device, &sc.bucket, &key, &body).await {
        Ok(()) => report.add(
            Mark::Pass,
            format!("probe uploaded to {}/{key}", sc.bucket),
            "",
        ),
        Err(e) => {
            report.add(
                Mark::Fail,
                format!("upload a probe to {}/{key}", sc.bucket),
                diagnose::s3(&e, sc),
            );
            return;
        }
    }
    let admin_client =
        admin.map(|a| client(sc, &a.access_key_id, a.secret_access_key.expose(), None));
    match &admin_client {
        Some(admin) => match read(admin, &sc.bucket, &key).await {
            Ok(got) if got == body.as_bytes() => report.add(
                Mark::Pass,
                "probe is there (read back with the administrator key)",
                "",
            ),
            Ok(_) => report.add(
                Mark::Fail,
                "read the probe back",
                "the object read back differs from the one uploaded",
            ),
            Err(e) => report.add(
                Mark::Fail,
                "read the probe back with the administrator key",
                diagnose::s3(&e, sc),
            ),
        },
        None => report.add(
            Mark::Skip,
            "read the probe back",
            "no administrator access for this provider; device credentials cannot read, by design",
        ),
    }
    let outside = format!("{}-stsgate-check/{tag}.txt", sc.object_key_prefix);
    match put(&device, &sc.bucket, &outside, "must be refused").await {
        Err(e) if diagnose::code(&e) == Some("AccessDenied") => {
            report.add(
                Mark::Pass,
                "a write outside the prefix is refused",
                format!("{}/{outside}: AccessDenied", sc.bucket),
            );
        }
        Err(e) => report.add(
            Mark::Fail,
            "a write outside the prefix is refused",
            format!("refused, but not as AccessDenied: {}", diagnose::s3(&e, sc)),
        ),
        Ok(()) => {
            report.add(
                Mark::Fail,
                "a write outside the prefix is refused",
                format!(
                    "ACCEPTED: {}/{outside} was written. These credentials are NOT least-privilege: any device can \
                     write anywhere in the bucket. Check the session policy and the role's own policy.",
                    sc.bucket
                ),
            );
            if let Some(admin) = &admin_client {
                let _ = admin
                    .delete_object()
                    .bucket(&sc.bucket)
                    .key(&outside)
                    .send()
                    .await;
            }
        }
    }
    match &admin_client {
        Some(admin) => match admin
            .delete_object()
            .bucket(&sc.bucket)
            .key(&key)
            .send()
            .await
        {
            Ok(_) => report.add(Mark::Pass, "probe removed", ""),
            Err(e) => report.add(
                Mark::Fail,
                "remove the probe",
                diagnose::s3(&diagnose::Failure::from_sdk(e), sc),
            ),
        },
        None => report.add(
            Mark::Skip,
            "remove the probe",
            format!(
                "left at {}/{key}: device credentials cannot delete, by design",
                sc.bucket
            ),
        ),
    }
}

/// An S3 client for the storage configuration, as a device would build it.
fn client(
    sc: &StorageConfig,
    access_key: &str,
    secret: &str,
    token: Option<&str>,
) -> aws_sdk_s3::Client {
    s3_client(
        &sc.endpoint,
        &sc.region,
        sc.provider == Provider::Minio,
        access_key,
        secret,
        token,
    )
}

/// An S3 client for `endpoint` with the given keys: one attempt, short time-outs, path-style
/// addressing when `path_style` (MinIO and the embedded store).
pub fn s3_client(
    endpoint: &str,
    region: &str,
    path_style: bool,
    access_key: &str,
    secret: &str,
    token: Option<&str>,
) -> aws_sdk_s3::Client {
    let credentials = aws_sdk_s3::config::Credentials::new(
        access_key,
        secret,
        token.map(str::to_owned),
        None,
        "stsgate",
    );
    let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(15))
        .build();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(region.to_owned()))
        .endpoint_url(endpoint)
        .force_path_style(path_style)
        .credentials_provider(credentials)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(1))
        .timeout_config(timeouts)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

async fn put(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: &str,
) -> Result<(), diagnose::Failure> {
    client
        .put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.as_bytes().to_vec()))
        .send()
        .await
        .map(|_| ())
        .map_err(diagnose::Failure::from_sdk)
}

async fn read(
    client: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<Vec<u8>, diagnose::Failure> {
    let out = client
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .map_err(diagnose::Failure::from_sdk)?;
    out.body
        .collect()
        .await
        .map(|b| b.into_bytes().to_vec())
        .map_err(|e| diagnose::Failure {
            status: None,
            code: None,
            message: e.to_string(),
        })
}

async fn reachable(addr: std::net::SocketAddr) -> bool {
    let addr = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    addr.port() != 0
        && tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
            .await
            .is_ok_and(|r| r.is_ok())
}

// === impl Report ===

impl Report {
    /// Adds a step; an empty `detail` means none.
    fn add(&mut self, mark: Mark, title: impl Into<String>, detail: impl Into<String>) {
        let detail = Some(detail.into()).filter(|d| !d.is_empty());
        self.steps.push(Step {
            mark,
            title: title.into(),
            detail,
        });
    }

    /// True when no step failed.
    pub fn passed(&self) -> bool {
        self.steps.iter().all(|s| s.mark != Mark::Fail)
    }

    /// The checklist as printed.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let mark = match step.mark {
                Mark::Pass => "✓",
                Mark::Fail => "✗",
                Mark::Skip => "–",
                Mark::Note => "i",
                Mark::Section => {
                    let _ = writeln!(out, "• {}", step.title);
                    if let Some(detail) = &step.detail {
                        let _ = writeln!(out, "    {detail}");
                    }
                    continue;
                }
            };
            let _ = writeln!(out, "  {mark} {}", step.title);
            if let Some(detail) = &step.detail {
                for line in detail.lines() {
                    let _ = writeln!(out, "      {line}");
                }
            }
        }
        out.push_str(if self.passed() {
            "all checks passed\n"
        } else {
            "the configuration does not work: see ✗ above\n"
        });
        out
    }
}
