//! The log line: `tracing-subscriber`'s full text format and its flattened JSON format, with the
//! request's [`Context`] written as the outermost span.
//!
//! Written here because `tracing-subscriber`'s formatters take a line's context only from spans
//! in its registry, and a span per request cost more than the line (`telemetry::context`). The
//! bytes are the defaults' with the context in place of a span of the same name and fields, which
//! the tests hold: time, level, `name{fields}:` for the context then each span from the root,
//! target, fields; in JSON `timestamp`, `level`, the event's fields, `target`, `span` (the
//! innermost) and `spans` (from the root).

use std::cell::RefCell;
use std::fmt;
use std::time::SystemTime;

use serde::ser::{SerializeMap, SerializeSeq, Serializer as _};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::{LookupSpan, SpanRef};

use super::context::{self, Context, Value};
use super::{handout, plain};

/// Text lines, coloured when the writer takes ANSI escapes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Text;

/// JSON lines, the event's fields at the top level.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

const BOLD: &str = "\x1b[1m";
const DIMMED: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";
const RESET: &str = "\x1b[0m";

// === impl Text ===

impl<S, N> FormatEvent<S, N> for Text
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ansi = w.has_ansi_escapes();
        if ansi || !w.sanitizes_ansi_escapes() {
            return write_line(ctx, &mut w, ansi, event, |w| {
                ctx.format_fields(w.by_ref(), event)
            });
        }
        // Without colours (stderr a file or a pipe: production), the line is assembled in a
        // `String` of this thread's and handed over whole, rather than in some thirty pieces
        // through `Writer`'s `dyn fmt::Write`; the fields as `PlainFields` writes them, which
        // are the default's bytes without colours whatever `N` is.
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        LINE.with(|line| {
            let mut own;
            let mut borrowed;
            // Taken already only if formatting a line logs (it does not); then a line of its own.
            let line: &mut String = match line.try_borrow_mut() {
                Ok(line) => {
                    borrowed = line;
                    &mut borrowed
                }
                Err(_) => {
                    own = String::new();
                    &mut own
                }
            };
            line.clear();
            write_line(ctx, line, false, event, |line| {
                if handout::write_fields(line, event)? {
                    return Ok(());
                }
                plain::write_fields(line, event)
            })?;
            let written = w.write_str(line);
            // A rare long line leaves no large buffer behind.
            if line.capacity() > LINE_KEPT {
                *line = String::new();
            }
            written
        })
    }
}

/// The longest line whose buffer a thread keeps for the next.
const LINE_KEPT: usize = 16 << 10;

/// Writes a text line to `w`, coloured if `ansi`: time, level, the context and spans, target,
/// then the event's fields by `fields`.
fn write_line<S, N, W>(
    ctx: &FmtContext<'_, S, N>,
    w: &mut W,
    ansi: bool,
    event: &Event<'_>,
    fields: impl FnOnce(&mut W) -> fmt::Result,
) -> fmt::Result
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    W: fmt::Write,
{
    let meta = event.metadata();
    let paint = |w: &mut W, style: &str, text: &str| {
        if ansi {
            w.write_str(style)?;
            w.write_str(text)?;
            w.write_str(RESET)
        } else {
            w.write_str(text)
        }
    };
    if ansi {
        w.write_str(DIMMED)?;
    }
    plain::write_time(SystemTime::now(), w)?;
    if ansi {
        w.write_str(RESET)?;
    }
    w.write_char(' ')?;
    let (colour, level) = level(meta.level());
    paint(w, colour, level)?;
    w.write_char(' ')?;

    let mut seen = context::with_current(|context| -> Result<bool, fmt::Error> {
        let Some(context) = context else {
            return Ok(false);
        };
        paint(w, BOLD, context.name())?;
        paint(w, BOLD, "{")?;
        for (i, (name, value)) in context.fields().enumerate() {
            if i > 0 {
                w.write_char(' ')?;
            }
            paint(w, ITALIC, name)?;
            paint(w, DIMMED, "=")?;
            match value {
                Value::Shown(text) => w.write_str(text)?,
                Value::Quoted(text) => write!(w, "{text:?}")?,
            }
        }
        paint(w, BOLD, "}")?;
        paint(w, DIMMED, ":")?;
        Ok(true)
    })?;
    if let Some(scope) = ctx.event_scope() {
        for span in scope.from_root() {
            paint(w, BOLD, span.metadata().name())?;
            seen = true;
            let extensions = span.extensions();
            if let Some(fields) = extensions.get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                paint(w, BOLD, "{")?;
                w.write_str(fields)?;
                paint(w, BOLD, "}")?;
            }
            paint(w, DIMMED, ":")?;
        }
    }
    if seen {
        w.write_char(' ')?;
    }
    paint(w, DIMMED, meta.target())?;
    paint(w, DIMMED, ":")?;
    w.write_char(' ')?;
    fields(w)?;
    w.write_char('\n')
}

/// The level as the default writes it (five columns) and its colour.
fn level(level: &Level) -> (&'static str, &'static str) {
    match *level {
        Level::TRACE => ("\x1b[35m", "TRACE"),
        Level::DEBUG => ("\x1b[34m", "DEBUG"),
        Level::INFO => ("\x1b[32m", " INFO"),
        Level::WARN => ("\x1b[33m", " WARN"),
        Level::ERROR => ("\x1b[31m", "ERROR"),
    }
}

// === impl Json ===

impl<S> FormatEvent<S, JsonFields> for Json
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::with_capacity(32);
        plain::write_time(SystemTime::now(), &mut timestamp)?;
        let meta = event.metadata();
        let leaf = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        let mut write = || -> Result<(), serde_json::Error> {
            let mut serializer = serde_json::Serializer::new(Adaptor(&mut w));
            let mut map = serializer.serialize_map(None)?;
            map.serialize_entry("timestamp", &timestamp)?;
            map.serialize_entry("level", meta.level().as_str())?;
            let mut visitor = tracing_serde::SerdeMapVisitor::new(map);
            event.record(&mut visitor);
            let mut map = visitor.take_serializer()?;
            map.serialize_entry("target", meta.target())?;
            context::with_current(|context| {
                match (&leaf, context) {
                    (Some(span), _) => map.serialize_entry("span", &JsonSpan(span))?,
                    (None, Some(context)) => map.serialize_entry("span", &JsonContext(context))?,
                    (None, None) => return Ok(()),
                }
                map.serialize_entry(
                    "spans",
                    &JsonScope {
                        context,
                        leaf: leaf.as_ref(),
                    },
                )
            })?;
            SerializeMap::end(map)
        };
        write().map_err(|_| fmt::Error)?;
        writeln!(w)
    }
}

/// `fmt::Write` as `io::Write`, for `serde_json`.
struct Adaptor<'a, 'w>(&'a mut Writer<'w>);

impl std::io::Write for Adaptor<'_, '_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        // serde_json writes whole UTF-8 strings and ASCII punctuation.
        let text = std::str::from_utf8(bytes).map_err(std::io::Error::other)?;
        self.0.write_str(text).map_err(std::io::Error::other)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The context as a JSON span: its fields in name order (the default parses a span's fields into
/// a sorted map), then its name.
struct JsonContext<'a>(&'a Context);

impl serde::Serialize for JsonContext<'_> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut fields: Vec<(&str, &str)> = self
            .0
            .fields()
            .map(|(name, value)| (name, value.as_str()))
            .collect();
        fields.sort_unstable_by_key(|(name, _)| *name);
        let mut map = serializer.serialize_map(Some(fields.len() + 1))?;
        for (name, value) in fields {
            map.serialize_entry(name, value)?;
        }
        map.serialize_entry("name", self.0.name())?;
        map.end()
    }
}

/// A span as the default writes it: its recorded fields, then its name.
struct JsonSpan<'a, 'b, S: for<'l> LookupSpan<'l>>(&'b SpanRef<'a, S>);

impl<S: for<'l> LookupSpan<'l>> serde::Serialize for JsonSpan<'_, '_, S> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut map = serializer.serialize_map(None)?;
        let extensions = self.0.extensions();
        let recorded = extensions
            .get::<FormattedFields<JsonFields>>()
            .map(|fields| serde_json::from_str::<serde_json::Value>(fields));
        match recorded {
            Some(Ok(serde_json::Value::Object(fields))) => {
                for (name, value) in fields {
                    map.serialize_entry(&name, &value)?;
                }
            }
            Some(Ok(value)) => {
                map.serialize_entry("field", &value)?;
                map.serialize_entry("field_error", "field was no a valid object")?;
            }
            Some(Err(e)) => map.serialize_entry("field_error", &e.to_string())?,
            None => {}
        }
        map.serialize_entry("name", self.0.metadata().name())?;
        map.end()
    }
}

/// The context, then every span from the root to `leaf`.
struct JsonScope<'a, 'b, S: for<'l> LookupSpan<'l>> {
    context: Option<&'b Context>,
    leaf: Option<&'b SpanRef<'a, S>>,
}

impl<S: for<'l> LookupSpan<'l>> serde::Serialize for JsonScope<'_, '_, S> {
    fn serialize<Ser: serde::Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        if let Some(context) = self.context {
            seq.serialize_element(&JsonContext(context))?;
        }
        if let Some(leaf) = self.leaf {
            for span in leaf.scope().from_root() {
                seq.serialize_element(&JsonSpan(&span))?;
            }
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::fmt::format::DefaultFields;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::telemetry::plain::PlainFields;
    use crate::telemetry::testing::{self, Captured, mask_times};

    const REQUESTS: [(&str, &str); 3] = [
        ("0123ABCDef012345", "/storage/api/v1/workspaces/ws-1/sts"),
        (
            "from-the-proxy \"7\"",
            "/storage/api/v1/workspaces/%E4%B8%AD/sts",
        ),
        ("", "/"),
    ];
    const DOCKS: [(&str, &str); 3] = [
        ("DOCK1", "c0ffee"),
        ("dock with \"quotes\" and \\", "\"raw\""),
        ("é\u{1b}[31m", "-"),
    ];

    /// What a request logs: a line, a line in a span of its own, a line in two nested spans.
    fn request_body() {
        tracing::info!(
            front = "http",
            subject = "pilot-7",
            expire = 3515_u64,
            cache_hit = true,
            shown = %"a b",
            "credentials handed out"
        );
        let upstream = tracing::info_span!("upstream", provider = "aws", attempt = 2);
        upstream.in_scope(|| {
            tracing::warn!(error = %"timed out", "AssumeRole failed");
            tracing::info_span!("retry", n = 1_u64).in_scope(|| tracing::error!("gave up"));
            tracing::info_span!("empty").in_scope(|| tracing::debug!(status = 200, "answered"));
        });
    }

    /// The requests with `tracing` spans, as the default formats expect.
    fn with_spans() {
        tracing::info!("before any request");
        for (id, path) in REQUESTS {
            let span =
                tracing::info_span!("http", request_id = %id, method = %"POST", path = %path);
            span.in_scope(request_body);
        }
        for (sn, tid) in DOCKS {
            tracing::info_span!("mqtt", sn, tid = %tid).in_scope(request_body);
        }
        tracing::trace!(n = 3, "after");
    }

    /// The same requests with a [`Context`] each.
    fn with_contexts() {
        tracing::info!("before any request");
        for (id, path) in REQUESTS {
            Context::new("http")
                .shown("request_id", id)
                .shown("method", "POST")
                .shown("path", path)
                .enter(request_body);
        }
        for (sn, tid) in DOCKS {
            Context::new("mqtt")
                .quoted("sn", sn)
                .shown("tid", tid)
                .enter(request_body);
        }
        tracing::trace!(n = 3, "after");
    }

    fn captured<L>(layer: impl FnOnce(Captured) -> L, log: fn()) -> String
    where
        L: tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync,
    {
        let out = Captured::default();
        let subscriber = tracing_subscriber::registry().with(layer(out.clone()));
        tracing::subscriber::with_default(subscriber, log);
        mask_times(&out.text())
    }

    #[test]
    fn text_lines_are_the_defaults_with_the_context_as_the_outer_span() {
        let theirs = captured(
            |out| {
                tracing_subscriber::fmt::layer()
                    .with_writer(out)
                    .with_ansi(false)
                    .fmt_fields(PlainFields)
            },
            with_spans,
        );
        let ours = captured(
            |out| {
                tracing_subscriber::fmt::layer()
                    .with_writer(out)
                    .with_ansi(false)
                    .fmt_fields(PlainFields)
                    .event_format(Text)
            },
            with_contexts,
        );
        assert_eq!(ours.lines().count(), 2 + 6 * 4, "{ours}");
        assert!(ours.contains("<time>  INFO http{request_id=0123ABCDef012345 method=POST path=/storage/api/v1/workspaces/ws-1/sts}: stsgate::telemetry::line::tests: credentials handed out front=\"http\""), "{ours}");
        assert!(
            ours.contains(
                "mqtt{sn=\"DOCK1\" tid=c0ffee}:upstream{provider=\"aws\" attempt=2}:retry{n=1}: "
            ),
            "{ours}"
        );
        assert_eq!(ours, theirs);
    }

    /// Without sanitizing (not how stsgate sets it up, but a layer may), the line goes the
    /// general way: no colours, still the default's bytes.
    #[test]
    fn unsanitized_text_lines_are_the_defaults_too() {
        let layer = |out| {
            tracing_subscriber::fmt::layer()
                .with_writer(out)
                .with_ansi(false)
                .with_ansi_sanitization(false)
                .fmt_fields(PlainFields)
        };
        let theirs = captured(layer, with_spans);
        let ours = captured(|out| layer(out).event_format(Text), with_contexts);
        assert!(!ours.contains("\x1b[1m"), "no colours: {ours:?}");
        assert_eq!(ours, theirs);
    }

    /// Whole lines of ours (fields written by `plain`'s visitor into the line's own buffer) against
    /// the default format's, for every kind of field.
    #[test]
    fn whole_lines_with_every_kind_of_field_are_the_defaults() {
        let plain = |out| {
            tracing_subscriber::fmt::layer()
                .with_writer(out)
                .with_ansi(false)
        };
        let theirs = captured(plain, testing::every_kind_of_field);
        let ours = captured(
            |out| plain(out).fmt_fields(PlainFields).event_format(Text),
            testing::every_kind_of_field,
        );
        assert!(ours.lines().count() >= 27, "{ours}");
        assert!(ours.contains("\\x1b[31mred"), "{ours}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn coloured_text_lines_are_the_defaults_too() {
        let theirs = captured(
            |out| {
                tracing_subscriber::fmt::layer()
                    .with_writer(out)
                    .with_ansi(true)
                    .fmt_fields(DefaultFields::new())
            },
            with_spans,
        );
        let ours = captured(
            |out| {
                tracing_subscriber::fmt::layer()
                    .with_writer(out)
                    .with_ansi(true)
                    .fmt_fields(DefaultFields::new())
                    .event_format(Text)
            },
            with_contexts,
        );
        assert!(ours.contains("\x1b[32m INFO\x1b[0m"), "{ours:?}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn json_lines_are_the_defaults_with_the_context_as_the_outer_span() {
        let theirs = captured(
            |out| {
                tracing_subscriber::fmt::layer()
                    .with_writer(out)
                    .json()
                    .flatten_event(true)
            },
            with_spans,
        );
        let ours = captured(
            |out| {
                tracing_subscriber::fmt::layer()
                    .with_writer(out)
                    .fmt_fields(JsonFields::new())
                    .event_format(Json)
            },
            with_contexts,
        );
        for line in ours.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("each line is JSON");
        }
        assert!(
            ours.contains(r#""span":{"method":"POST","path":"/","request_id":"","name":"http"}"#),
            "{ours}"
        );
        assert_eq!(ours, theirs);
    }
}
