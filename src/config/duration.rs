//! Durations in config: a number of seconds (`3600`) or a human string (`"1h"`, `"90s"`,
//! `"5m 30s"`); written back as a human string.

use std::time::Duration;

use serde::Serializer;
use serde::de::{self, Deserializer, Visitor};

/// Serde `serialize_with`.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

/// Serde `deserialize_with`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(DurationVisitor)
}

/// The same for an optional duration (unset: `None`).
pub mod optional {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serde `serialize_with`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    /// Serde `deserialize_with`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        struct Wrapped(Duration);
        impl<'de> Deserialize<'de> for Wrapped {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                super::deserialize(d).map(Wrapped)
            }
        }
        Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
    }
}

/// A value that is not a duration.
#[derive(Debug, thiserror::Error)]
#[error("{text:?} is not a duration like \"90s\", \"15m\" or \"1h\"")]
pub struct NotADuration {
    text: String,
}

/// Parses a duration as config accepts it.
pub fn parse(s: &str) -> Result<Duration, NotADuration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s).map_err(|_| NotADuration { text: s.to_owned() })
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a duration: seconds, or a string like \"90s\", \"15m\", \"1h\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom("a duration cannot be negative"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seconds_and_human_strings() {
        assert_eq!(parse("3600").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse("1h").ok(), Some(Duration::from_secs(3600)));
        assert_eq!(parse("5m 30s").ok(), Some(Duration::from_secs(330)));
        assert!(parse("soon").is_err());
        assert!(parse("-5").is_err());
    }
}
