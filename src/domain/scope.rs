//! Scope resolution: a workspace id (validated) and the `object_key_prefix` template turn into
//! the [`Scope`] a credential is issued and cached for.

use std::fmt;
use std::sync::Arc;

use super::{DeviceKey, Principal};

/// Longest workspace id accepted (DJI workspace ids are 36-character UUIDs).
pub const MAX_WORKSPACE_LEN: usize = 64;

/// A validated workspace id: 1-64 ASCII letters, digits, `-` or `_`, so that it is safe in an
/// object key, a file name and a log line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkspaceId(Arc<str>);

/// Why a workspace id was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("workspace id {shown} is invalid: {reason}")]
pub struct WorkspaceError {
    shown: String,
    reason: &'static str,
}

/// What a credential is issued for: writing under `bucket/prefix/`, by one device when its
/// profile issues per device.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Scope {
    /// The bucket.
    pub bucket: Arc<str>,
    /// The object key prefix, without a trailing `/`.
    pub prefix: Arc<str>,
    /// The device it is issued to (`per_device = true`); `None`: every device of the workspace.
    pub device: Option<Principal>,
}

/// Why an `object_key_prefix` template was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrefixError {
    /// A `{` without its `}`.
    #[error("unclosed '{{'")]
    Unclosed,
    /// A `}` without its `{`.
    #[error("unmatched '}}'")]
    Unmatched,
    /// A placeholder other than `{workspace_id}` and `{device}`.
    #[error("unknown placeholder {{{0}}}; the placeholders are {{workspace_id}} and {{device}}")]
    Placeholder(String),
    /// A character that is not safe in an object key.
    #[error("character {0:?} is not allowed; use letters, digits and -_./")]
    Character(char),
    /// Empty, or a leading or trailing `/`.
    #[error("must not be empty, start or end with '/'")]
    Edges,
    /// An empty, `.` or `..` segment.
    #[error("must not contain empty, '.' or '..' path segments")]
    Segments,
}

/// The parsed `storage.object_key_prefix` template.
#[derive(Clone, Debug)]
pub struct PrefixTemplate {
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
enum Part {
    Literal(String),
    WorkspaceId,
    Device,
}

// === impl WorkspaceId ===

impl WorkspaceId {
    /// Validates a workspace id.
    pub fn parse(s: &str) -> Result<Self, WorkspaceError> {
        let reason = if s.is_empty() {
            Some("it is empty")
        } else if s.len() > MAX_WORKSPACE_LEN {
            Some("it is longer than 64 characters")
        } else if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            Some("only ASCII letters, digits, '-' and '_' are allowed")
        } else {
            None
        };
        match reason {
            None => Ok(Self(s.into())),
            Some(reason) => Err(WorkspaceError {
                shown: shown(s),
                reason,
            }),
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A quoted, escaped and truncated rendering of untrusted input for error messages.
fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(MAX_WORKSPACE_LEN)
        .flat_map(char::escape_default)
        .collect();
    if s.chars().count() > MAX_WORKSPACE_LEN {
        out.push('…');
    }
    format!("\"{out}\"")
}

// === impl PrefixTemplate ===

impl PrefixTemplate {
    /// Parses a template. Placeholders: `{workspace_id}` and `{device}` (the [`DeviceKey`] of a
    /// per-device credential). Literal text is letters, digits and
    /// `-_./`; segments may not be empty, `.` or `..`; no leading or trailing `/`.
    pub fn parse(template: &str) -> Result<Self, PrefixError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            push_literal(&mut parts, &rest[..open])?;
            let close = rest[open..].find('}').ok_or(PrefixError::Unclosed)? + open;
            match &rest[open + 1..close] {
                "workspace_id" => parts.push(Part::WorkspaceId),
                "device" => parts.push(Part::Device),
                other => return Err(PrefixError::Placeholder(other.to_owned())),
            }
            rest = &rest[close + 1..];
        }
        push_literal(&mut parts, rest)?;
        let template = Self { parts };
        let sample = template.render(&WorkspaceId("w".into()), Some(&DeviceKey::new("dv")));
        if sample.is_empty() || sample.starts_with('/') || sample.ends_with('/') {
            return Err(PrefixError::Edges);
        }
        if sample
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(PrefixError::Segments);
        }
        Ok(template)
    }

    /// The prefix for a workspace, and for a device when the credential is per device
    /// (`{device}` without one renders as nothing: validation refuses such a template on a
    /// profile that does not issue per device).
    pub fn render(&self, workspace: &WorkspaceId, device: Option<&DeviceKey>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::WorkspaceId => out.push_str(workspace.as_str()),
                Part::Device => out.push_str(device.map_or("", DeviceKey::as_str)),
            }
        }
        out
    }

    /// Whether it names the device (`{device}`).
    pub fn names_device(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Device))
    }
}

fn push_literal(parts: &mut Vec<Part>, text: &str) -> Result<(), PrefixError> {
    if text.contains('}') {
        return Err(PrefixError::Unmatched);
    }
    if let Some(c) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_./".contains(*c)))
    {
        return Err(PrefixError::Character(c));
    }
    if !text.is_empty() {
        parts.push(Part::Literal(text.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_ids() {
        for ok in [
            "e3dea0f5-37f2-4d79-ae58-490af3228069",
            "default",
            "a_b",
            "X",
        ] {
            assert!(WorkspaceId::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "a/b", "a b", "ws\n", "é", "a.b", &"a".repeat(65)] {
            assert!(WorkspaceId::parse(bad).is_err(), "{bad:?}");
        }
        let err = WorkspaceId::parse("a\nb").expect_err("refused").to_string();
        assert!(err.contains("\"a\\nb\""), "{err}");
    }

    #[test]
    fn templates() {
        let ws = WorkspaceId::parse("ws1").expect("valid");
        let render = |t: &str| PrefixTemplate::parse(t).map(|p| p.render(&ws, None));
        assert_eq!(render("{workspace_id}"), Ok("ws1".to_owned()));
        assert_eq!(
            render("media/{workspace_id}/dji"),
            Ok("media/ws1/dji".to_owned())
        );
        assert_eq!(render("wayline"), Ok("wayline".to_owned()));
        let device = DeviceKey::new("4TADKAQ000002J");
        let per_device = PrefixTemplate::parse("{workspace_id}/{device}").expect("valid");
        assert!(per_device.names_device());
        assert_eq!(per_device.render(&ws, Some(&device)), "ws1/4TADKAQ000002J");
        assert!(
            !PrefixTemplate::parse("{workspace_id}")
                .unwrap()
                .names_device()
        );
        for bad in [
            "",
            "/{workspace_id}",
            "{workspace_id}/",
            "a//{workspace_id}",
            "../{workspace_id}",
            "{gateway_sn}",
            "{device}/",
            "{workspace_id}/{device}{device",
            "{workspace_id",
            "a}b",
            "a b",
            "a*",
        ] {
            assert!(render(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
