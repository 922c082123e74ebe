//! Loading: defaults < TOML file < environment < flags. Sources are passed in as a value, so tests
//! never touch the process environment.

use std::path::PathBuf;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Value};

use super::Config;
use super::validate::{Problem, validate};

/// Prefix of configuration environment variables: `STSGATE_HTTP__LISTEN` is `http.listen`.
pub const ENV_PREFIX: &str = "STSGATE_";
/// Environment variables with the prefix that are not configuration keys.
const NOT_KEYS: &[&str] = &["STSGATE_CONFIG"];
/// Keys that may not be written in the file.
const SECRET_KEYS: &[&str] = &[
    "auth.jwt_secret",
    "mqtt.password",
    "devices.sql.password",
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

/// A configuration that cannot be used. The message names the key and why.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file is missing or unreadable.
    #[error("config file {path}: {reason}")]
    File {
        /// The path given.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A secret was written in the file.
    #[error(
        "config file {path}: `{key}` is a secret and may not be written in the file; set it with \
         the environment variable {env} or point `{key}_file` at a file only the service can read"
    )]
    SecretInFile {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// The environment variable to use instead.
        env: String,
    },
    /// A value has the wrong type or shape, or a key is unknown.
    #[error("{0}")]
    Parse(String),
    /// Values that parse but make no sense.
    #[error("invalid configuration:\n{}", list(.0))]
    Invalid(Vec<Problem>),
}

/// Loads and validates the configuration.
pub fn load(sources: &Sources) -> Result<Config, Error> {
    let base = match sources.file {
        Some(_) => Config::default(),
        None => Config::embedded_default(),
    };
    let mut figment = Figment::from(Serialized::defaults(base));
    if let Some(path) = &sources.file {
        figment = figment.merge(file(path)?);
    }
    figment = figment
        .merge(Serialized::defaults(dict(env_pairs(&sources.env))))
        .merge(Serialized::defaults(dict(
            sources.flags.iter().map(|(k, v)| (k.clone(), v.clone())),
        )));
    let config: Config = figment
        .extract_lossy()
        .map_err(|e| Error::Parse(render(e)))?;
    let problems = validate(&config);
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Error::Invalid(problems))
    }
}

/// The environment variable for a key path: `http.listen` → `STSGATE_HTTP__LISTEN`.
pub fn env_name(key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

fn file(path: &PathBuf) -> Result<figment::providers::Data<Toml>, Error> {
    let err = |reason: String| Error::File {
        path: path.clone(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if !meta.is_file() {
        return Err(err("not a regular file".to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let only_file = Figment::from(Toml::string(&text));
    if let Some(key) = SECRET_KEYS.iter().find(|k| only_file.find_value(k).is_ok()) {
        return Err(Error::SecretInFile {
            path: path.clone(),
            key,
            env: env_name(key),
        });
    }
    Ok(Toml::file_exact(path))
}

fn env_pairs(env: &[(String, String)]) -> impl Iterator<Item = (String, String)> + '_ {
    env.iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !NOT_KEYS.contains(&k.as_str()))
        .map(|(k, v)| {
            (
                k[ENV_PREFIX.len()..]
                    .to_ascii_lowercase()
                    .replace("__", "."),
                v.clone(),
            )
        })
}

/// Nests `a.b = v` pairs into a dictionary of string values; numbers and booleans are read from
/// strings by the lossy extraction, as figment's own environment provider does.
fn dict(pairs: impl Iterator<Item = (String, String)>) -> Dict {
    let mut dict = Dict::new();
    for (key, value) in pairs {
        if let Some(nested) = figment::util::nest(&key, Value::from(value)).into_dict() {
            dict = merge(dict, nested);
        }
    }
    dict
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

fn render(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
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
