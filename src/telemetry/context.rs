//! What every log line of one request carries: its request id (HTTP) or its device and tid
//! (MQTT), written at the head of the line as a span's fields are (`http{request_id=… method=POST
//! path=…}:`), by the event formatter (`telemetry::line`) from a scoped thread-local set while the
//! request's future is polled.
//!
//! A `tracing` span did this before, and cost more than the rest of the line: the registry
//! allocates a slot and an extension map per span, formats its fields when it is created and
//! pushes and pops a stack on every poll, and all of it for a context that, on a cache hit, one
//! line reads (BENCHMARKS.md, wrk). Here a request sets a pointer around each poll of its future
//! (`scoped-tls`) and the formatter reads the fields only when a line is written. Lines logged in
//! the request's future, at any depth, carry them; tasks it spawns do not, as with a span entered
//! by the caller.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

scoped_tls::scoped_thread_local!(static CURRENT: Context);

/// A request's identity in the log: a name (`http`, `mqtt`) and up to [`MAX_FIELDS`] fields, in
/// order. The values share one string: one allocation per request.
#[derive(Clone, Debug)]
pub struct Context {
    name: &'static str,
    values: String,
    fields: [Field; MAX_FIELDS],
    len: usize,
}

/// The most fields a context holds; more are not kept.
pub const MAX_FIELDS: usize = 4;

/// The most bytes of one field's value that are kept: what a client sends (a path, a method, a
/// request id) is written at the head of every line of its request, so it is bounded here, once
/// for every front, and the rest is marked cut (`…`). What a value may hold is the caller's to
/// check (the edge keeps only visible-ASCII request ids; a path or method cannot hold a space
/// or a control character; a tid is escaped), so that lines stay those `tracing` would write.
pub const MAX_VALUE_LEN: usize = 256;

/// A field: its name, how its value is written, and where the value ends in `values`.
#[derive(Clone, Copy, Debug, Default)]
struct Field {
    name: &'static str,
    quoted: bool,
    end: usize,
}

/// A field's value, written as `tracing` writes `%value` (as it is) or a string field (quoted
/// and escaped) in text lines; always as a JSON string in JSON lines.
#[derive(Clone, Copy, Debug)]
pub enum Value<'a> {
    /// Written as it is, like `%value`.
    Shown(&'a str),
    /// Written quoted and escaped, like a `&str` field.
    Quoted(&'a str),
}

pin_project_lite::pin_project! {
    /// A future polled with its request's [`Context`] current.
    pub struct InContext<F> {
        #[pin]
        inner: F,
        context: Context,
    }
}

// === impl Context ===

impl Context {
    /// A context named `name`, with no fields yet.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            values: String::with_capacity(96),
            fields: [Field::default(); MAX_FIELDS],
            len: 0,
        }
    }

    /// Adds a field written as it is (`%value`).
    #[must_use]
    pub fn shown(self, name: &'static str, value: &str) -> Self {
        self.with(name, false, value)
    }

    /// Adds a field written as a quoted string.
    #[must_use]
    pub fn quoted(self, name: &'static str, value: &str) -> Self {
        self.with(name, true, value)
    }

    fn with(mut self, name: &'static str, quoted: bool, value: &str) -> Self {
        let Some(field) = self.fields.get_mut(self.len) else {
            debug_assert!(false, "more than {MAX_FIELDS} fields in a log context");
            return self;
        };
        if value.len() <= MAX_VALUE_LEN {
            self.values.push_str(value);
        } else {
            // Cut on a character boundary, the cut marked.
            let mut end = MAX_VALUE_LEN;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            self.values.push_str(&value[..end]);
            self.values.push('…');
        }
        *field = Field {
            name,
            quoted,
            end: self.values.len(),
        };
        self.len += 1;
        self
    }

    /// Runs `future` with this context current on every poll.
    pub fn wrap<F: Future>(self, future: F) -> InContext<F> {
        InContext {
            inner: future,
            context: self,
        }
    }

    /// Runs `f` with this context current.
    pub fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        CURRENT.set(self, f)
    }

    /// The name, as a span's.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The fields, in the order they were added.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, Value<'_>)> {
        let mut start = 0;
        self.fields[..self.len].iter().map(move |field| {
            let text = self.values.get(start..field.end).unwrap_or_default();
            start = field.end;
            let value = if field.quoted {
                Value::Quoted(text)
            } else {
                Value::Shown(text)
            };
            (field.name, value)
        })
    }
}

/// Runs `f` with the context of the request being served on this thread, if any.
pub fn with_current<R>(f: impl FnOnce(Option<&Context>) -> R) -> R {
    if CURRENT.is_set() {
        CURRENT.with(|context| f(Some(context)))
    } else {
        f(None)
    }
}

// === impl Value ===

impl<'a> Value<'a> {
    /// The text.
    pub fn as_str(self) -> &'a str {
        match self {
            Self::Shown(text) | Self::Quoted(text) => text,
        }
    }
}

// === impl InContext ===

impl<F> InContext<F> {
    /// The context the future runs in.
    pub fn context(&self) -> &Context {
        &self.context
    }
}

impl<F: Future> Future for InContext<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let inner = this.inner;
        CURRENT.set(this.context, || inner.poll(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current_fields() -> Option<String> {
        with_current(|context| {
            context.map(|c| {
                let fields: Vec<_> = c
                    .fields()
                    .map(|(name, value)| format!("{name}={}", value.as_str()))
                    .collect();
                format!("{}{{{}}}", c.name(), fields.join(" "))
            })
        })
    }

    #[tokio::test]
    async fn the_context_is_current_while_its_future_runs_and_only_then() {
        assert_eq!(current_fields(), None);
        let context = Context::new("mqtt").quoted("sn", "DOCK1").shown("tid", "7");
        let inside = context
            .wrap(async {
                let before = current_fields();
                tokio::task::yield_now().await;
                // Still current after a suspension, polled again.
                (before, current_fields())
            })
            .await;
        assert_eq!(inside.0.as_deref(), Some("mqtt{sn=DOCK1 tid=7}"));
        assert_eq!(inside.0, inside.1);
        assert_eq!(current_fields(), None);
        // A spawned task does not inherit it.
        let spawned = Context::new("http")
            .wrap(async { tokio::spawn(async { current_fields() }).await.unwrap() })
            .await;
        assert_eq!(spawned, None);
    }

    #[test]
    fn what_a_client_sends_is_bounded() {
        let long = "/a".repeat(MAX_VALUE_LEN);
        let context = Context::new("http")
            .shown("path", &long)
            .quoted("sn", &"é".repeat(MAX_VALUE_LEN))
            .shown("request_id", "plain-7");
        let values: Vec<_> = context
            .fields()
            .map(|(_, v)| v.as_str().to_owned())
            .collect();
        assert_eq!(values[0], format!("{}…", &long[..MAX_VALUE_LEN]));
        // On a character boundary.
        assert!(values[1].starts_with("éé") && values[1].ends_with('…'));
        assert!(values[1].len() <= MAX_VALUE_LEN + '…'.len_utf8());
        assert_eq!(values[2], "plain-7");
    }
}
