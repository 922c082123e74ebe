//! Validation after loading: every bad key is reported with its reason, then loading fails.

use std::fmt;

use super::{Config, DEFAULT_PROFILE, StorageProfile};
use crate::domain::{PrefixTemplate, ProviderKind, WorkspaceId};
use crate::protocol::mqtt::valid_sn;

/// One bad key, in the operator's words: `c.toml line 2: storage.duration: "soon" is not a
/// duration; e.g. duration = "1h"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `storage.bucket`.
    pub key: String,
    /// Why its value is unusable.
    pub reason: String,
    /// Where the value came from: `c.toml line 2`, `STSGATE_STORAGE__DURATION`, `--http-listen`;
    /// `None` for a default.
    pub origin: Option<String>,
    /// A good value, written as that source writes it.
    pub example: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        write!(f, "{}: {}", self.key, self.reason)?;
        if let Some(example) = &self.example {
            let sep = if self.reason.ends_with('?') { "" } else { ";" };
            write!(f, "{sep} e.g. {example}")?;
        }
        Ok(())
    }
}

/// Every problem of `config`; empty means valid.
pub fn validate(config: &Config) -> Vec<Problem> {
    let mut p = Problems::default();
    listeners(config, &mut p);
    mqtt(config, &mut p);
    auth(config, &mut p);
    storage(config, &mut p);
    workspaces(config, &mut p);
    devices(config, &mut p);
    if config.audit.required && config.audit.path.is_none() {
        p.add(
            "audit.required",
            "needs audit.path (there is no log to require); e.g. path = \"/var/log/stsgate/audit.jsonl\"",
        );
    }
    if config.log.filter.trim().is_empty() {
        p.add(
            "log.filter",
            "is empty (it would log nothing); e.g. \"info\"",
        );
    } else if let Err(why) = tracing_subscriber::EnvFilter::try_new(&config.log.filter) {
        p.add(
            "log.filter",
            format!("is not a filter ({why}); e.g. \"info\" or \"stsgate=debug,info\""),
        );
    }
    p.0
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            reason: reason.into(),
            origin: None,
            example: None,
        });
    }
}

fn listeners(c: &Config, p: &mut Problems) {
    for (prefix, max, timeout) in [
        ("http", c.http.max_connections, c.http.header_timeout),
        (
            "storage.local",
            c.storage.local.max_connections,
            c.storage.local.header_timeout,
        ),
    ] {
        if max < 16 {
            p.add(format!("{prefix}.max_connections"), "must be at least 16");
        }
        if timeout < std::time::Duration::from_secs(1) {
            p.add(format!("{prefix}.header_timeout"), "must be at least 1s");
        }
    }
}

fn mqtt(c: &Config, p: &mut Problems) {
    let m = &c.mqtt;
    if let Some(url) = &m.url {
        match url.split_once("://") {
            Some(("mqtt" | "mqtts", rest)) if !rest.is_empty() => {}
            _ => p.add(
                "mqtt.url",
                format!("`{url}` is not an mqtt://host:port URL"),
            ),
        }
    }
    let tls = m.url.as_deref().is_some_and(|u| u.starts_with("mqtts://"));
    for (key, set) in [
        ("mqtt.ca_file", m.ca_file.is_some()),
        ("mqtt.client_cert_file", m.client_cert_file.is_some()),
        ("mqtt.client_key_file", m.client_key_file.is_some()),
    ] {
        if set && !tls {
            p.add(key, "only applies to an mqtts:// mqtt.url");
        }
    }
    if m.url.is_none() && m.protocol == super::MqttProtocol::V5 {
        p.add(
            "mqtt.protocol",
            "the embedded broker speaks 3.1.1; \"5\" needs an external broker (mqtt.url)",
        );
    }
    if m.client_cert_file.is_some() != m.client_key_file.is_some() {
        p.add(
            "mqtt.client_cert_file",
            "set both mqtt.client_cert_file and mqtt.client_key_file, or neither",
        );
    }
    if m.reply_qos > 2 {
        p.add("mqtt.reply_qos", "must be 0, 1 or 2");
    }
    if m.password.is_some() && m.password_file.is_some() {
        p.add(
            "mqtt.password",
            "set either mqtt.password or mqtt.password_file, not both",
        );
    }
    if let Some(group) = &m.share_group
        && (group.is_empty() || group.contains(['/', '+', '#']))
    {
        p.add(
            "mqtt.share_group",
            "must be non-empty and contain no '/', '+' or '#'",
        );
    }
    if m.url.is_none() && !m.embedded_listen.ip().is_loopback() && !m.embedded_auth {
        p.add(
            "mqtt.embedded_listen",
            format!(
                "{} is reachable from other hosts, and without authentication any client could \
                 read every dock's credentials: set mqtt.embedded_auth = true (clients log in with \
                 the users in {{data_dir}}/mqtt_users.json), listen on loopback, or use an \
                 external broker (mqtt.url)",
                m.embedded_listen
            ),
        );
    }
    for (key, value, min) in [
        ("mqtt.embedded_max_sessions", m.embedded_max_sessions, 2),
        (
            "mqtt.embedded_max_retained_bytes",
            m.embedded_max_retained_bytes,
            0,
        ),
        (
            "mqtt.embedded_max_queued_bytes",
            m.embedded_max_queued_bytes,
            64 * 1024,
        ),
    ] {
        if value < min {
            p.add(key, format!("must be at least {min}"));
        }
    }
    if m.keep_alive.as_secs() < 5 {
        p.add("mqtt.keep_alive", "must be at least 5s");
    }
    if m.max_payload < 1024 {
        p.add("mqtt.max_payload", "must be at least 1024 bytes");
    }
}

fn auth(c: &Config, p: &mut Problems) {
    if c.auth.jwt_secret.is_some() && c.auth.jwt_secret_file.is_some() {
        p.add(
            "auth.jwt_secret",
            "set either auth.jwt_secret or auth.jwt_secret_file, not both",
        );
    }
    if c.auth.public_key_file.is_some() && c.auth.jwks_url.is_some() {
        p.add(
            "auth.jwks_url",
            "set either auth.public_key_file or auth.jwks_url, not both",
        );
    }
    if let Some(url) = &c.auth.jwks_url
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        p.add("auth.jwks_url", "must be an http:// or https:// URL");
    }
    if c.auth.jwt_secret.as_ref().is_some_and(|s| s.is_empty()) {
        p.add("auth.jwt_secret", "is empty");
    }
}

fn storage(c: &Config, p: &mut Problems) {
    let local = &c.storage.local;
    if local.admin_access_key.is_some() != local.admin_secret_key.is_some() {
        p.add("storage.local.admin_access_key", "set storage.local.admin_access_key and STSGATE_STORAGE__LOCAL__ADMIN_SECRET_KEY together");
    }
    if local.cleanup_interval.is_zero() {
        p.add("storage.local.cleanup_interval", "must be more than 0");
    }
    let mut local_profile: Option<&str> = None;
    for (name, profile) in c.all_profiles() {
        let section = Config::section_of(name);
        if name != DEFAULT_PROFILE
            && let Err(reason) = valid_profile_name(name)
        {
            p.add(section.clone(), reason);
        }
        if profile.provider == ProviderKind::Local {
            match local_profile {
                Some(first) => p.add(
                    format!("{section}.provider"),
                    format!(
                        "the embedded store is one: profile `{first}` is local already (at most \
                         one profile may be local)"
                    ),
                ),
                None => local_profile = Some(name),
            }
        }
        profile_keys(&section, profile, p);
    }
}

/// A profile's name as `[profiles.<name>]` and `STSGATE_PROFILES__<NAME>__…` can carry it.
fn valid_profile_name(name: &str) -> Result<(), String> {
    if name == DEFAULT_PROFILE {
        return Err(format!(
            "`{DEFAULT_PROFILE}` is the name of [storage]; give this profile another name"
        ));
    }
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err("a profile name is 1-64 lowercase letters, digits, '-' or '_'".to_owned())
    }
}

/// The keys of one profile, `[storage]` or `[profiles.<name>]` (`section`).
fn profile_keys(section: &str, s: &StorageProfile, p: &mut Problems) {
    let key = |k: &str| format!("{section}.{k}");
    if let Err(reason) = valid_bucket(&s.bucket) {
        p.add(key("bucket"), reason);
    }
    if s.region.is_empty()
        || !s
            .region
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        p.add(
            key("region"),
            "must be a non-empty region name (letters, digits, '-')",
        );
    }
    if let Some(endpoint) = &s.endpoint
        && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
    {
        p.add(
            key("endpoint"),
            "must start with http:// or https:// (devices need the scheme)",
        );
    }
    match PrefixTemplate::parse(&s.object_key_prefix) {
        Err(reason) => p.add(key("object_key_prefix"), reason.to_string()),
        Ok(template) if template.names_device() && !s.per_device => p.add(
            key("object_key_prefix"),
            format!(
                "{{device}} needs {section}.per_device = true (credentials are per workspace \
                 otherwise)"
            ),
        ),
        Ok(_) => {}
    }
    if s.expire_margin >= s.min_remaining {
        p.add(
            key("expire_margin"),
            format!("must be shorter than {section}.min_remaining"),
        );
    }
    if s.duration <= s.min_remaining * 2 {
        p.add(
            key("duration"),
            format!(
                "must be more than twice {section}.min_remaining, or credentials would be \
                 refreshed on every request"
            ),
        );
    }
    if s.upstream_timeout.is_zero() {
        p.add(key("upstream_timeout"), "must be more than 0");
    }
    provider(section, s, p);
}

/// What each upstream requires (sts-providers reference: parameters and limits).
fn provider(section: &str, s: &StorageProfile, p: &mut Problems) {
    let key = |k: &str| format!("{section}.{k}");
    let secret_env = super::env_name(&key("secret_access_key"));
    if let Some(url) = &s.sts_endpoint
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        p.add(key("sts_endpoint"), "must start with http:// or https://");
    }
    if s.secret_access_key.is_some() && s.secret_access_key_file.is_some() {
        p.add(
            key("secret_access_key"),
            format!("set either {secret_env} or {section}.secret_access_key_file, not both"),
        );
    }
    let has_secret = s.secret_access_key.is_some() || s.secret_access_key_file.is_some();
    if s.access_key_id.is_some() != has_secret {
        p.add(
            key("access_key_id"),
            format!(
                "set {section}.access_key_id together with {secret_env} or \
                 {section}.secret_access_key_file"
            ),
        );
    }
    if let Some(id) = &s.external_id {
        match s.provider {
            ProviderKind::Aws | ProviderKind::Ali => {
                // AssumeRole's ExternalId, the same on both (sts-providers reference).
                let ok = (2..=1224).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b));
                if !ok {
                    p.add(
                        key("external_id"),
                        "must be 2-1224 letters, digits or _+=,.@:/-",
                    );
                }
            }
            ProviderKind::Minio => p.add(
                key("external_id"),
                "MinIO's AssumeRole ignores ExternalId (it honours only Policy and \
                 DurationSeconds): remove it, or the role would seem protected by it",
            ),
            ProviderKind::Local => p.add(key("external_id"), "only applies to provider aws or ali"),
        }
    }
    let needs_keys = |p: &mut Problems, why: &str| {
        if s.access_key_id.is_none() {
            p.add(
                key("access_key_id"),
                format!("required with provider {}: {why}", s.provider),
            );
        }
    };
    let (min, max) = (900, 43_200);
    match s.provider {
        ProviderKind::Local => {}
        ProviderKind::Aws => {
            require_prefix(
                p,
                section,
                s.role_arn.as_deref(),
                "arn:",
                "arn:aws:iam::<account>:role/<name>",
            );
            duration_range(
                p,
                section,
                s.duration,
                min,
                max,
                "AWS STS (and the role's maximum session duration)",
            );
        }
        ProviderKind::Minio => {
            if s.sts_endpoint.is_none() {
                p.add(
                    key("sts_endpoint"),
                    "required with provider minio: the MinIO server URL as this service reaches it",
                );
            }
            needs_keys(
                p,
                "the keys of the MinIO user whose policy the credentials inherit",
            );
            duration_range(p, section, s.duration, min, 31_536_000, "MinIO STS");
        }
        ProviderKind::Ali => {
            require_prefix(
                p,
                section,
                s.role_arn.as_deref(),
                "acs:ram::",
                "acs:ram::<account>:role/<name>",
            );
            needs_keys(p, "the RAM user's keys that may call sts:AssumeRole");
            duration_range(
                p,
                section,
                s.duration,
                min,
                max,
                "Alibaba Cloud STS (and the role's maximum session duration)",
            );
        }
    }
}

fn require_prefix(p: &mut Problems, section: &str, value: Option<&str>, prefix: &str, shape: &str) {
    let key = format!("{section}.role_arn");
    match value {
        None => p.add(key, format!("required: {shape}")),
        Some(v) if !v.starts_with(prefix) => {
            p.add(key, format!("`{v}` is not of the form {shape}"))
        }
        Some(_) => {}
    }
}

fn duration_range(
    p: &mut Problems,
    section: &str,
    d: std::time::Duration,
    min: u64,
    max: u64,
    who: &str,
) {
    if !(min..=max).contains(&d.as_secs()) {
        p.add(
            format!("{section}.duration"),
            format!("must be between {min}s and {max}s for {who}"),
        );
    }
}

/// `[workspaces.profile]`: each workspace id valid, each profile one that exists.
fn workspaces(c: &Config, p: &mut Problems) {
    if let Some(sql) = &c.workspaces.sql {
        sql_keys("workspaces.sql", sql, true, p);
    }
    for (ws, profile) in &c.workspaces.profile {
        let key = format!("workspaces.profile.{ws}");
        if let Err(e) = WorkspaceId::parse(ws) {
            p.add(key.clone(), e.to_string());
        }
        if c.profile(profile).is_none() {
            let known: Vec<&str> = c.all_profiles().map(|(n, _)| n).collect();
            p.add(
                key,
                format!(
                    "profile `{profile}` does not exist (the profiles are {})",
                    known.join(", ")
                ),
            );
        }
    }
}

fn devices(c: &Config, p: &mut Problems) {
    if let Some(ws) = c.default_workspace()
        && let Err(e) = WorkspaceId::parse(ws)
    {
        p.add("devices.default_workspace", e.to_string());
    }
    for (sn, ws) in &c.devices.bind {
        if !valid_sn(sn) {
            p.add(
                format!("devices.bind.{sn}"),
                "a gateway serial number is 1-64 ASCII letters and digits",
            );
        }
        if let Err(e) = WorkspaceId::parse(ws) {
            p.add(format!("devices.bind.{sn}"), e.to_string());
        }
    }
    if let Some(sql) = &c.devices.sql {
        sql_keys("devices.sql", sql, false, p);
    }
}

/// The keys of `[devices.sql]` or `[workspaces.sql]` (`section`); `query` is required for the
/// latter (no default query exists for it).
fn sql_keys(section: &str, sql: &super::SqlConfig, query_required: bool, p: &mut Problems) {
    let key = |k: &str| format!("{section}.{k}");
    match sql
        .url
        .as_ref()
        .map(|u| super::sql::Dialect::of(u.expose()))
    {
        None => p.add(key("url"), format!("is required when [{section}] is set")),
        Some(Err(e)) => p.add(key("url"), e.to_string()),
        Some(Ok(_)) => {}
    }
    if sql.password.is_some() && sql.password_file.is_some() {
        p.add(
            key("password"),
            format!("set either {section}.password or {section}.password_file, not both"),
        );
    }
    match sql.query.as_deref() {
        Some(q) if q.trim().is_empty() => p.add(key("query"), "must not be empty"),
        None if query_required => p.add(
            key("query"),
            format!(
                "is required when [{section}] is set: a query returning the profile name of \
                 the workspace id given as its one parameter"
            ),
        ),
        _ => {}
    }
    if sql.timeout.is_zero() {
        p.add(key("timeout"), "must be more than 0s");
    }
    if sql.max_connections == 0 {
        p.add(key("max_connections"), "must be at least 1");
    }
    if sql.unbound_ttl > sql.cache_ttl {
        p.add(
            key("unbound_ttl"),
            format!("must not be longer than {section}.cache_ttl"),
        );
    }
}

/// S3 bucket naming rules (the subset every provider shares).
fn valid_bucket(b: &str) -> Result<(), &'static str> {
    let ok_chars = b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.');
    let ok_ends = b.bytes().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.bytes().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if (3..=63).contains(&b.len()) && ok_chars && ok_ends && !b.contains("..") {
        Ok(())
    } else {
        Err(
            "must be 3-63 lowercase letters, digits, '-' or '.', starting and ending with a letter or digit",
        )
    }
}
