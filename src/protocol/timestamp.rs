//! The envelope `timestamp`: milliseconds since the Unix epoch. Devices send it as a JSON number
//! (`1654070968655`) or a numeric string (`"1234567890123"`, as in the spec example); replies
//! always carry a JSON number.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A millisecond timestamp decoded leniently from a number or a numeric string.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(pub u64);

/// The current time in milliseconds since the Unix epoch (13 digits until the year 2286).
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

// === impl Timestamp ===

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TimestampVisitor)
    }
}

struct TimestampVisitor;

impl Visitor<'_> for TimestampVisitor {
    type Value = Timestamp;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a millisecond timestamp as a non-negative integer or a string of digits")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Timestamp, E> {
        Ok(Timestamp(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Timestamp, E> {
        u64::try_from(v)
            .map(Timestamp)
            .map_err(|_| E::custom("timestamp is negative"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Timestamp, E> {
        let digits = v.trim();
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(E::custom("timestamp string is not a number"));
        }
        digits
            .parse()
            .map(Timestamp)
            .map_err(|_| E::custom("timestamp is out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<Timestamp, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn accepts_numbers_and_numeric_strings() {
        assert_eq!(
            decode("1654070968655").ok(),
            Some(Timestamp(1_654_070_968_655))
        );
        assert_eq!(
            decode("\"1234567890123\"").ok(),
            Some(Timestamp(1_234_567_890_123))
        );
        assert_eq!(decode("\" 42 \"").ok(), Some(Timestamp(42)));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "-1", "\"abc\"", "\"\"", "\"12a\"", "1.5", "true", "{}", "[1]", "\"-5\"",
        ] {
            assert!(decode(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn now_is_thirteen_digits() {
        assert_eq!(now_millis().to_string().len(), 13);
    }
}
