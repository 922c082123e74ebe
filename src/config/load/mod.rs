//! Loading: defaults < TOML file < environment < flags. Sources are passed in as a value, so tests
//! never touch the process environment. A configuration that cannot be used is reported whole,
//! one problem a line, each in the operator's words (`report`).

use std::path::PathBuf;

use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Provider};

use super::validate::{Problem, validate};
use super::{Config, ENV_PREFIX, env_name};
use report::{Origin, Origins};

mod report;

/// Whether `key` (a dotted path) holds a secret.
pub fn is_secret(key: &str) -> bool {
    SECRET_KEYS.contains(&key) || SECRET_KEYS.contains(&as_storage_key(key).as_ref())
}

/// A named profile's key as the same key of `[storage]` (`profiles.eu.role_arn` →
/// `storage.role_arn`), for what is said of every profile alike (examples, secrets); other keys
/// as they are.
pub fn as_storage_key(key: &str) -> std::borrow::Cow<'_, str> {
    match key
        .strip_prefix("profiles.")
        .and_then(|rest| rest.split_once('.'))
    {
        Some((_, rest)) => format!("storage.{rest}").into(),
        None => key.into(),
    }
}

/// Environment variables with the prefix that are not configuration keys.
const NOT_KEYS: &[&str] = &["STSGATE_CONFIG"];
/// Keys that may not be written in the file; a named profile's `secret_access_key` is one too
/// ([`is_secret`]).
const SECRET_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "mqtt.password",
    "devices.sql.password",
    "workspaces.sql.password",
    "storage.secret_access_key",
    "storage.local.admin_secret_key",
];

/// Where configuration comes from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The TOML file, if any. Without one the embedded default applies.
    pub file: Option<PathBuf>,
    /// Environment variables (all of them; only `STSGATE_*` are read).
    pub env: Vec<(String, String)>,
    /// Command-line flags as `(key path, value)`, e.g. `("http.listen", "127.0.0.1:0")`.
    pub flags: Vec<(String, String)>,
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing, unreadable or not TOML.
    #[error("config file {path}: {reason}")]
    File {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Every problem found, each naming its key, where it came from, what is wrong and an
    /// example of a good value.
    #[error("invalid configuration ({} problem{}):\n{}", .0.len(), if .0.len() == 1 { "" } else { "s" }, list(.0))]
    Invalid(Vec<Problem>),
}

/// The most problems gathered from one configuration: each is found by extracting again without
/// the keys already found bad.
const MAX_PROBLEMS: usize = 64;

/// Loads and validates the configuration: every problem of every source is reported at once.
pub fn load(sources: &Sources) -> Result<Config, Error> {
    let base = match sources.file {
        Some(_) => Config::default(),
        None => Config::embedded_default(),
    };
    let mut origins = Origins::default();
    let mut problems = Vec::new();
    let mut data = Dict::new();
    if let Some(path) = &sources.file {
        let (dict, file_problems) = file(path, &mut origins)?;
        problems.extend(file_problems);
        data = merge(data, dict);
    }
    for (name, key, value) in env_pairs(&sources.env) {
        origins.set(&key, Origin::Env(name.to_owned()));
        data = merge(data, nested(&key, value));
    }
    for (key, value) in &sources.flags {
        origins.set(key, Origin::Flag(key.replace(['.', '_'], "-")));
        data = merge(data, nested(key, value.clone()));
    }
    let early = profile_problems(&data, &origins);
    for problem in &early {
        remove(&mut data, &problem.key);
    }
    problems.extend(early);
    let defaults = Figment::from(Serialized::defaults(&base));
    let config = loop {
        let figment = defaults.clone().merge(Serialized::defaults(data.clone()));
        let errors = match figment.extract_lossy::<Config>() {
            Ok(config) => break Some(config),
            Err(errors) => errors,
        };
        let mut progress = false;
        for error in errors {
            let problem = report::parse_problem(&error, &data, &origins, &defaults);
            progress |= remove(&mut data, &problem.key);
            problems.push(problem);
        }
        if !progress || problems.len() >= MAX_PROBLEMS {
            break None;
        }
    };
    if let Some(config) = &config {
        for mut problem in validate(config) {
            if problems.iter().any(|p| p.key == problem.key) {
                continue;
            }
            problem.origin = origins.of(&problem.key);
            problems.push(problem);
        }
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            // In the order the operator reads them: the file by line, then the environment,
            // then the flags.
            problems.sort_by_key(|p| origins.order(&p.key));
            Err(Error::Invalid(problems))
        }
    }
}

/// The file's keys as a dictionary, where each was written (`origins`), and a problem for each
/// secret written in it (left out of the dictionary, its value never shown).
fn file(path: &PathBuf, origins: &mut Origins) -> Result<(Dict, Vec<Problem>), Error> {
    let err = |reason: String| Error::File {
        path: path.clone(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let document = toml_edit::ImDocument::parse(text.as_str())
        .map_err(|e| err(format!("not TOML: {}", e.to_string().trim_end())))?;
    let mut dict = Toml::string(&text)
        .data()
        .map_err(|e| err(format!("not TOML: {e}")))?
        .remove(&figment::Profile::Default)
        .unwrap_or_default();
    origins.file(path, &text, document.as_table(), "");
    let mut problems = Vec::new();
    let profile_secrets: Vec<String> = match dict.get("profiles") {
        Some(Value::Dict(_, profiles)) => profiles
            .keys()
            .map(|name| format!("profiles.{name}.secret_access_key"))
            .collect(),
        _ => Vec::new(),
    };
    let keys = SECRET_KEYS
        .iter()
        .map(|k| (*k).to_owned())
        .chain(profile_secrets);
    for key in keys {
        let key = key.as_str();
        if remove(&mut dict, key) {
            problems.push(Problem {
                key: (*key).to_owned(),
                reason: format!(
                    "is a secret and may not be written in the file; set it with the \
                     environment variable {} or point `{key}_file` at a file only the service \
                     can read",
                    env_name(key)
                ),
                origin: origins.of(key),
                example: None,
            });
        }
    }
    Ok((dict, problems))
}

/// What a named profile must say for itself and may not say, found in what was given (`data`)
/// rather than in the loaded profile, whose defaults would hide it: its `provider` (the
/// default, `local`, is the embedded store, which one profile at most may be), and no `local`
/// table (the embedded store is configured once, in `[storage.local]`). A profile that only
/// the environment names (a secret without its `[profiles.<name>]`) says neither.
fn profile_problems(data: &Dict, origins: &Origins) -> Vec<Problem> {
    let Some(Value::Dict(_, profiles)) = data.get("profiles") else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for (name, profile) in profiles {
        let Value::Dict(_, keys) = profile else {
            continue;
        };
        let section = format!("profiles.{name}");
        let mut problem = |key: String, reason: String, example: Option<&str>| {
            problems.push(Problem {
                origin: origins.of(&key),
                key,
                reason,
                example: example.map(str::to_owned),
            })
        };
        if !keys.contains_key("provider") {
            problem(
                format!("{section}.provider"),
                "is required in a named profile: local, minio, aws or ali".to_owned(),
                Some("provider = \"aws\""),
            );
        }
        if keys.contains_key("local") {
            problem(
                format!("{section}.local"),
                "the embedded store is configured once, in [storage.local]; a profile with \
                 provider = \"local\" uses it"
                    .to_owned(),
                None,
            );
        }
    }
    problems
}

/// `STSGATE_*` variables as (name as written, key path, value).
fn env_pairs(env: &[(String, String)]) -> impl Iterator<Item = (&str, String, String)> + '_ {
    env.iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NOT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k.as_str(),
                k[ENV_PREFIX.len()..]
                    .to_ascii_lowercase()
                    .replace("__", "."),
                v.clone(),
            )
        })
}

/// `a.b = value` as a dictionary of a string value; numbers and booleans are read from strings
/// by the lossy extraction, as figment's own environment provider does.
fn nested(key: &str, value: String) -> Dict {
    figment::util::nest(key, Value::from(value))
        .into_dict()
        .unwrap_or_default()
}

/// Removes `key` (a dotted path) from `dict`; whether it was there.
fn remove(dict: &mut Dict, key: &str) -> bool {
    match key.split_once('.') {
        None => dict.remove(key).is_some(),
        Some((head, rest)) => match dict.get_mut(head) {
            Some(Value::Dict(_, inner)) => remove(inner, rest),
            _ => false,
        },
    }
}

fn merge(mut into: Dict, from: Dict) -> Dict {
    for (k, v) in from {
        let merged = match (into.remove(&k), v) {
            (Some(Value::Dict(_, a)), Value::Dict(_, b)) => Value::from(merge(a, b)),
            (_, v) => v,
        };
        into.insert(k, merged);
    }
    into
}

fn list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests;
