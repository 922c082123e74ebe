//! Text log lines without colours (stderr a file or a pipe, as under systemd or a container
//! runtime), written with less work per line than `tracing-subscriber`'s defaults and to the same
//! bytes: [`PlainFields`] formats fields as `DefaultFields` does, and [`write_time`] the time as
//! `fmt::time::SystemTime` does.
//!
//! The defaults style every field name through `nu_ansi_term` even with colours off and format
//! every value through `core::fmt`; the timestamp is computed from the epoch for every line. With
//! a line per credential handed out, field and time formatting were a tenth of what a cache hit
//! cost the service (BENCHMARKS.md, wrk). Here strings, integers and booleans are written
//! directly, the message is escaped by runs rather than a character at a time, the date is
//! formatted once per second, and everything else (errors, escaped strings, `r#` names) goes to
//! the default visitor. Tests hold the output equal to the defaults'.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::FormatFields;
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};

/// Fields as `DefaultFields` writes them without colours: `name=value`, space-separated, the
/// message first and bare.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainFields;

struct Visitor<W> {
    writer: W,
    is_empty: bool,
    result: fmt::Result,
}

/// Where a [`Visitor`] writes: `tracing-subscriber`'s [`Writer`] (as a field formatter, for
/// spans and in any layer), or a `String` of ours (`line::Text` assembles a whole line before it
/// hands it over; written through `Writer`, each piece is a call through a `dyn fmt::Write`).
pub trait Out: fmt::Write {
    /// A `tracing-subscriber` writer onto the same output, for the default visitor.
    fn tracing(&mut self) -> Writer<'_>;
    /// Whether terminal escapes in a message are escaped.
    fn sanitizes(&self) -> bool;
}

impl Out for Writer<'_> {
    fn tracing(&mut self) -> Writer<'_> {
        self.by_ref()
    }

    fn sanitizes(&self) -> bool {
        self.sanitizes_ansi_escapes()
    }
}

/// A line without colours, its escapes sanitized (what the fmt layer's writer does by default).
impl Out for &mut String {
    fn tracing(&mut self) -> Writer<'_> {
        Writer::new(&mut **self)
    }

    fn sanitizes(&self) -> bool {
        true
    }
}

/// Writes `fields` to `out` as [`PlainFields`] does.
pub fn write_fields(out: impl Out, fields: impl RecordFields) -> fmt::Result {
    let mut visitor = Visitor {
        writer: out,
        is_empty: true,
        result: Ok(()),
    };
    fields.record(&mut visitor);
    visitor.result
}

// === impl PlainFields ===

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        write_fields(writer, fields)
    }
}

// === impl Visitor ===

impl<W: Out> Visitor<W> {
    /// Writes `name=` after a separating space, as the default does for a field other than the
    /// message; false if an earlier write failed.
    fn name(&mut self, field: &Field) -> bool {
        if self.result.is_err() {
            return false;
        }
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
        self.result = self
            .result
            .and_then(|()| self.writer.write_str(field.name()))
            .and_then(|()| self.writer.write_char('='));
        self.result.is_ok()
    }

    /// Whether the default visitor handles `field` in a way of its own (the message, `r#` raw
    /// names, `log.` metadata of `log` records).
    fn special(field: &Field) -> bool {
        let name = field.name();
        name == "message" || name.starts_with("r#") || name.starts_with("log.")
    }

    /// Writes the message as the default does: bare, after a separating space, with terminal
    /// control characters escaped when the writer sanitizes them.
    fn message(&mut self, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
        if self.result.is_ok() {
            self.result = if self.writer.sanitizes() {
                write!(Escaping(&mut self.writer), "{value:?}")
            } else {
                write!(self.writer, "{value:?}")
            };
        }
    }

    /// Lets the default visitor write one field.
    fn delegate(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() {
            return;
        }
        let mut default = DefaultVisitor::new(self.writer.tracing(), self.is_empty);
        record(&mut default);
        self.result = default.finish();
        // The default skips `log.` fields without writing anything.
        if !field.name().starts_with("log.") {
            self.is_empty = false;
        }
    }
}

/// Escapes what `tracing-subscriber` escapes in a message (ESC, BEL, BS, FF, DEL and the C1
/// controls), writing runs without any of them whole rather than a character at a time.
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // C1 controls (U+0080..U+009F) are encoded as 0xC2 0x80..0x9F.
        if !s
            .bytes()
            .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
        {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            match c {
                '\x1b' | '\x07' | '\x08' | '\x0c' | '\x7f' => {
                    write!(self.0, "\\x{:02x}", c as u32)?;
                }
                '\u{80}'..='\u{9f}' => write!(self.0, "\\u{{{:x}}}", c as u32)?,
                c => self.0.write_char(c)?,
            }
        }
        Ok(())
    }
}

impl<W: Out> Visit for Visitor<W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            return self.message(&format_args!("{value}"));
        }
        // `Debug` for `str` leaves printable ASCII as it is, except `"` and `\`.
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if Self::special(field) || !plain {
            return self.delegate(field, |v| v.record_str(field, value));
        }
        if self.name(field) {
            self.result = self
                .writer
                .write_char('"')
                .and_then(|()| self.writer.write_str(value))
                .and_then(|()| self.writer.write_char('"'));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if Self::special(field) {
            return self.delegate(field, |v| v.record_u64(field, value));
        }
        if self.name(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if Self::special(field) {
            return self.delegate(field, |v| v.record_i64(field, value));
        }
        if self.name(field) {
            self.result = self.writer.write_str(itoa::Buffer::new().format(value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if Self::special(field) {
            return self.delegate(field, |v| v.record_bool(field, value));
        }
        if self.name(field) {
            self.result = self.writer.write_str(if value { "true" } else { "false" });
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.delegate(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            return self.message(value);
        }
        if Self::special(field) {
            return self.delegate(field, |v| v.record_debug(field, value));
        }
        if self.name(field) {
            self.result = write!(self.writer, "{value:?}");
        }
    }
}

// === the time ===

thread_local! {
    /// The second last formatted on this thread and its text up to the fraction's dot (kept as
    /// a `String`: bytes would be checked for UTF-8 again on every line).
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// Writes `at` as `2026-12-06T13:34:32.671453Z`, as `tracing-subscriber`'s `SystemTime` timer
/// does (RFC 3339, microseconds, UTC).
pub fn write_time(at: SystemTime, w: &mut impl fmt::Write) -> fmt::Result {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    SECOND.with(|second| {
        let Ok(mut second) = second.try_borrow_mut() else {
            return w.write_str(&humantime::format_rfc3339_micros(at).to_string());
        };
        if second.0 != since.as_secs() {
            // `2026-12-06T13:34:32Z`: the date and time up to the seconds, then the dot.
            let seconds = humantime::format_rfc3339_seconds(at).to_string();
            let Some(date) = seconds.get(..19) else {
                return w.write_str(&humantime::format_rfc3339_micros(at).to_string());
            };
            second.1.clear();
            second.1.push_str(date);
            second.1.push('.');
            second.0 = since.as_secs();
        }
        w.write_str(&second.1)
    })?;
    // The microseconds, six digits.
    let micros = since.subsec_micros();
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(micros);
    w.write_str(&"000000"[digits.len().min(6)..])?;
    w.write_str(digits)?;
    w.write_char('Z')
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::testing::{Captured, every_kind_of_field};

    /// Runs `log` under a text subscriber without colours, time or target, with `fields`.
    fn lines<F>(fields: F, log: impl Fn()) -> String
    where
        F: for<'w> FormatFields<'w> + Send + Sync + 'static,
    {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_writer(out.clone())
                .with_ansi(false)
                .without_time()
                .fmt_fields(fields),
        );
        tracing::subscriber::with_default(subscriber, log);
        out.text()
    }

    #[test]
    fn fields_are_written_as_the_default_writes_them() {
        let ours = lines(PlainFields, every_kind_of_field);
        let theirs = lines(DefaultFields::new(), every_kind_of_field);
        assert!(ours.lines().count() >= 27, "{ours}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn the_time_is_written_as_rfc_3339_with_microseconds() {
        let mut at = UNIX_EPOCH + Duration::new(1_780_000_000, 0);
        for step in [
            0,
            1,
            999,
            999_999,
            1_000_000,
            123_456_789,
            999_999_999,
            3_600_000_000_000,
        ] {
            at += Duration::from_nanos(step);
            let mut ours = String::new();
            write_time(at, &mut ours).unwrap();
            assert_eq!(ours, humantime::format_rfc3339_micros(at).to_string());
        }
        // The same second again, from the cache, and the next one.
        let mut again = String::new();
        write_time(at, &mut again).unwrap();
        assert_eq!(again, humantime::format_rfc3339_micros(at).to_string());
        let next = at + Duration::from_secs(1);
        let mut later = String::new();
        write_time(next, &mut later).unwrap();
        assert_eq!(later, humantime::format_rfc3339_micros(next).to_string());
    }
}
