//! Problems in the operator's words: each names the key as it was written and where (`c.toml
//! line 2`, `STSGATE_STORAGE__DURATION`, `--http-listen`), says what is wrong without a Rust type
//! name, a source location or figment's `default.` profile, suggests the key meant when an
//! unknown one is close to a known one, and shows a good value as that source writes it.

use std::collections::HashMap;
use std::path::Path;

use figment::Figment;
use figment::error::{Actual, Kind};
use figment::value::{Dict, Value};

use super::{Problem, as_storage_key, env_name, is_secret};

/// Where each key's value came from, by dotted key path.
#[derive(Debug, Default)]
pub struct Origins(HashMap<String, Origin>);

/// Where one value came from.
#[derive(Clone, Debug)]
pub enum Origin {
    /// The config file, at a line.
    File {
        /// The path as given.
        path: String,
        /// 1-based.
        line: usize,
    },
    /// An environment variable, as it was written.
    Env(String),
    /// A command-line flag, without its dashes.
    Flag(String),
}

/// Examples of good values for keys whose default is unset (so it cannot serve as one).
const EXAMPLES: &[(&str, &str)] = &[
    ("mqtt.url", "\"mqtt://127.0.0.1:1883\""),
    ("mqtt.username", "\"stsgate\""),
    ("mqtt.client_id", "\"stsgate-1\""),
    ("mqtt.share_group", "\"stsgate\""),
    ("mqtt.ca_file", "\"/etc/stsgate/ca.pem\""),
    ("mqtt.client_cert_file", "\"/etc/stsgate/client.pem\""),
    ("mqtt.client_key_file", "\"/etc/stsgate/client.key\""),
    ("auth.issuer", "\"DJI\""),
    ("auth.audience", "\"stsgate\""),
    ("auth.jwt_secret_file", "\"/etc/stsgate/jwt_secret\""),
    ("auth.public_key_file", "\"/etc/stsgate/idp.pem\""),
    (
        "auth.jwks_url",
        "\"https://idp.example.com/.well-known/jwks.json\"",
    ),
    ("auth.max_token_lifetime", "\"24h\""),
    (
        "storage.role_arn",
        "\"arn:aws:iam::123456789012:role/stsgate-upload\"",
    ),
    (
        "storage.sts_endpoint",
        "\"https://sts.eu-central-1.amazonaws.com\"",
    ),
    (
        "storage.endpoint",
        "\"https://s3.eu-central-1.amazonaws.com\"",
    ),
    ("storage.access_key_id", "\"AKIAIOSFODNN7EXAMPLE\""),
    (
        "storage.secret_access_key_file",
        "\"/etc/stsgate/storage_secret\"",
    ),
    ("audit.path", "\"/var/log/stsgate/audit.jsonl\""),
    (
        "devices.sql.url",
        "\"postgres://stsgate@db.example.com/platform\"",
    ),
    (
        "workspaces.sql.url",
        "\"postgres://stsgate@db.example.com/platform\"",
    ),
    (
        "workspaces.sql.query",
        "\"SELECT storage_profile FROM workspace WHERE workspace_id = $1\"",
    ),
];

// === impl Origins ===

impl Origins {
    /// Records that `key` was last set by `origin`.
    pub fn set(&mut self, key: &str, origin: Origin) {
        self.0.insert(key.to_owned(), origin);
    }

    /// Records the line of every key of `table` (at `prefix`) in the file at `path`.
    pub fn file(&mut self, path: &Path, text: &str, table: &toml_edit::Table, prefix: &str) {
        for (key, item) in table.iter() {
            let full = if prefix.is_empty() {
                key.to_owned()
            } else {
                format!("{prefix}.{key}")
            };
            let span = table
                .key(key)
                .and_then(toml_edit::Key::span)
                .or_else(|| item.span());
            if let Some(span) = span {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                let origin = Origin::File {
                    path: path.display().to_string(),
                    line,
                };
                self.set(&full, origin);
            }
            if let Some(inner) = item.as_table() {
                self.file(path, text, inner, &full);
            } else if let Some(inline) = item.as_inline_table() {
                self.file(path, text, &inline.clone().into_table(), &full);
            }
        }
    }

    /// Where `key` came from, rendered; for a key not set anywhere, where its nearest set parent
    /// came from (a section written whole); `None` for a default.
    pub fn of(&self, key: &str) -> Option<String> {
        let mut key = key;
        loop {
            if let Some(origin) = self.0.get(key) {
                return Some(origin.to_string());
            }
            key = &key[..key.rfind('.')?];
        }
    }

    /// Where `key`'s problem is listed: file lines first, in order, then the environment, then
    /// the flags, then defaults.
    pub fn order(&self, key: &str) -> (u8, usize) {
        let mut key = key;
        loop {
            match self.0.get(key) {
                Some(Origin::File { line, .. }) => return (0, *line),
                Some(Origin::Env(_)) => return (1, 0),
                Some(Origin::Flag(_)) => return (2, 0),
                None => match key.rfind('.') {
                    Some(i) => key = &key[..i],
                    None => return (3, 0),
                },
            }
        }
    }

    fn get(&self, key: &str) -> Option<&Origin> {
        self.0.get(key)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { path, line } => write!(f, "{path} line {line}"),
            Self::Env(name) => f.write_str(name),
            Self::Flag(flag) => write!(f, "--{flag}"),
        }
    }
}

/// The problem a figment error stands for.
pub fn parse_problem(
    error: &figment::Error,
    given: &Dict,
    origins: &Origins,
    defaults: &Figment,
) -> Problem {
    let mut path = error.path.clone();
    // An unknown key is reported at its section; name the key itself.
    if let Kind::UnknownField(field, _) = &error.kind
        && path.last() != Some(field)
    {
        path.push(field.clone());
    }
    let key = path.join(".");
    let secret = is_secret(&key);
    let reason = match &error.kind {
        Kind::UnknownField(field, known) => {
            let mut reason = "is not a configuration key".to_owned();
            if let Some(close) = closest(field, known) {
                reason.push_str(&format!("; did you mean `{close}`?"));
            }
            reason
        }
        Kind::UnknownVariant(value, known) => {
            let mut reason = format!("`{value}` is not one of {}", known.join(", "));
            if let Some(close) = closest(value, known) {
                reason.push_str(&format!("; did you mean `{close}`?"));
            }
            reason
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            let given = if secret {
                "the value".to_owned()
            } else {
                shown(actual)
            };
            format!("{given} is not {}", expected_words(expected))
        }
        Kind::InvalidLength(n, expected) => format!("{n} values given, expected {expected}"),
        Kind::MissingField(field) => format!("`{field}` is missing"),
        Kind::DuplicateField(field) => format!("`{field}` is given twice"),
        Kind::ISizeOutOfRange(n) => format!("{n} is out of range"),
        Kind::USizeOutOfRange(n) => format!("{n} is out of range"),
        Kind::Unsupported(actual) | Kind::UnsupportedKey(actual, _) => {
            format!("{} is not supported here", shown(actual))
        }
        Kind::Message(message) if secret => format!("unusable value ({})", first_clause(message)),
        Kind::Message(message) => {
            let message = message_words(message);
            match value_at(given, &path) {
                // (Our own parsers' messages quote the value already.)
                Some(value) if !message.contains(value.trim_matches(['"', '`'])) => {
                    let sep = if message.starts_with("is ") {
                        " "
                    } else {
                        ": "
                    };
                    format!("{value}{sep}{message}")
                }
                _ => message,
            }
        }
    };
    let origin = origins.get(&key).or_else(|| {
        // An unknown key's own line, else its section's.
        path.len()
            .checked_sub(1)
            .and_then(|n| origins.get(&path[..n].join(".")))
    });
    let example = match &error.kind {
        Kind::UnknownField(field, known) => closest(field, known).and_then(|close| {
            let mut good = path.clone();
            good.pop();
            good.push(close.to_owned());
            example(&good.join("."), origin, defaults)
        }),
        _ => example(&key, origin, defaults),
    };
    Problem {
        key,
        reason,
        origin: origin.map(ToString::to_string),
        example,
    }
}

/// A good value for `key`, written as `origin` writes values.
fn example(key: &str, origin: Option<&Origin>, defaults: &Figment) -> Option<String> {
    if is_secret(key) {
        return None;
    }
    let same = as_storage_key(key);
    let toml = EXAMPLES
        .iter()
        .find(|(k, _)| *k == key || *k == same)
        .map(|(_, v)| (*v).to_owned())
        .or_else(|| {
            let value = defaults
                .find_value(key)
                .ok()
                .or_else(|| defaults.find_value(&same).ok())?;
            let value = toml::Value::try_from(&value).ok()?;
            // A section or a list says little as an example.
            (!value.is_table()).then(|| value.to_string())
        })?;
    let leaf = key.rsplit('.').next().unwrap_or(key);
    Some(match origin {
        Some(Origin::Env(_)) => format!("{}={}", env_name(key), toml.trim_matches('"')),
        Some(Origin::Flag(flag)) => format!("--{flag} {}", toml.trim_matches('"')),
        _ => format!("{leaf} = {toml}"),
    })
}

/// The known name closest to `given`, if one is close enough to be what was meant.
fn closest<'a>(given: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (strsim::jaro_winkler(given, k), *k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// A value as the operator wrote it, in plain words.
fn shown(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => format!("`{b}`"),
        Actual::Unsigned(n) => format!("`{n}`"),
        Actual::Signed(n) => format!("`{n}`"),
        Actual::Float(n) => format!("`{n}`"),
        Actual::Char(c) => format!("`{c}`"),
        Actual::Str(s) => format!("{s:?}"),
        Actual::Seq => "a list".to_owned(),
        Actual::Map => "a table".to_owned(),
        Actual::Unit | Actual::Option => "an empty value".to_owned(),
        _ => "this value".to_owned(),
    }
}

/// What serde expected, without Rust's type names.
fn expected_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".to_owned(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".to_owned(),
        "f32" | "f64" => "a number".to_owned(),
        "a boolean" | "bool" => "true or false".to_owned(),
        "a string" | "string" | "a borrowed string" => "text in quotes".to_owned(),
        "socket address" => "an address and port like \"127.0.0.1:6789\"".to_owned(),
        "path string" => "a path".to_owned(),
        e if e.starts_with("struct ") || e.starts_with("a map") => "a table".to_owned(),
        e if e.starts_with("a sequence") => "a list".to_owned(),
        e => e.to_owned(),
    }
}

/// A message from a parser in plain words.
fn message_words(message: &str) -> String {
    match message {
        "invalid socket address syntax" => {
            "is not an address and port like \"127.0.0.1:6789\"".to_owned()
        }
        "invalid IP address syntax" => "is not an IP address".to_owned(),
        m => m.to_owned(),
    }
}

/// The value given at `path`, quoted, if it is a string or number.
fn value_at(dict: &Dict, path: &[String]) -> Option<String> {
    let (last, parents) = path.split_last()?;
    let mut dict = dict;
    for key in parents {
        match dict.get(key)? {
            Value::Dict(_, inner) => dict = inner,
            _ => return None,
        }
    }
    match dict.get(last)? {
        Value::String(_, s) => Some(format!("{s:?}")),
        Value::Num(_, n) => Some(format!(
            "`{}`",
            n.to_u128()
                .map_or_else(|| format!("{:?}", n.to_f64()), |n| n.to_string())
        )),
        _ => None,
    }
}

/// The first clause of a message (before a colon or parenthesis), which names no value.
fn first_clause(message: &str) -> &str {
    message.split([':', '(']).next().unwrap_or(message).trim()
}
