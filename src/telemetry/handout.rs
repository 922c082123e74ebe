//! The line logged for each credential handed out, the one line of a cache hit: its fields are
//! kept at hand while its event is dispatched, so the text formatter writes them directly instead
//! of visiting the event's.
//!
//! Visiting goes through `tracing`'s `ValueSet`, a `dyn Visit` call per field and `core::fmt` for
//! the `%`-written values: some 2,000 instructions of a cache hit's 23,000, of which writing the
//! same seven fields from here takes 1,200 off (`scripts/instructions.sh`). The
//! event is still a `tracing` event with all its fields, so filters, the JSON and coloured
//! formats and every other subscriber see it as before; only the plain text formatter
//! (`line::Text`, stderr a file or a pipe as in production) takes the fields from here, and
//! writes the same bytes (a test holds both ways equal).
//!
//! `tracing` hands a formatter an event's values only through its visitor, and a thread-local
//! cannot hold borrowed values without `unsafe`, so the values are copied into buffers this
//! thread keeps (no allocation once they have grown to a line's size).

use std::cell::RefCell;
use std::fmt::{self, Write as _};

use crate::domain::Requester;

/// The fields of the line per credential handed out, as the event carries them.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// Who asked: a token's subject (`front="http"`) or a dock's serial number (`front="mqtt"`).
    pub requester: Requester<'a>,
    /// The workspace.
    pub workspace: &'a str,
    /// The credential's access key id.
    pub access_key_id: &'a str,
    /// Seconds the device may rely on it.
    pub expire: u64,
    /// Whether it came from the cache.
    pub cache_hit: bool,
}

/// The message of the line.
pub const MESSAGE: &str = "credentials handed out";

/// The fields of the event being dispatched on this thread, when it is a handout's.
#[derive(Default)]
struct Kept {
    active: bool,
    device: bool,
    requester: String,
    workspace: String,
    access_key_id: String,
    expire: u64,
    cache_hit: bool,
}

thread_local! {
    static KEPT: RefCell<Kept> = RefCell::default();
}

/// Logs the line for `line`: one `tracing` event at info, with the target of the gateway that
/// hands credentials out (so `log.filter` directives for `stsgate::gateway` apply), its fields
/// kept for the text formatter while it is dispatched.
pub fn log(line: &Line<'_>) {
    let kept = keep(line);
    // Reset however logging ends, so that no later event is taken for this one.
    let _reset = kept.then_some(Reset);
    // The fields in the order `write_fields` writes them.
    match line.requester {
        Requester::Token(subject) => tracing::info!(
            target: TARGET,
            front = "http",
            workspace = %line.workspace,
            subject,
            access_key_id = %line.access_key_id,
            expire = line.expire,
            cache_hit = line.cache_hit,
            "credentials handed out"
        ),
        Requester::Device(sn) => tracing::info!(
            target: TARGET,
            front = "mqtt",
            sn,
            workspace = %line.workspace,
            access_key_id = %line.access_key_id,
            expire = line.expire,
            cache_hit = line.cache_hit,
            "credentials handed out"
        ),
    }
}

/// The line's target: the module that hands credentials out, as when it logged the line itself.
const TARGET: &str = "stsgate::gateway";

/// Copies `line` into this thread's [`Kept`]; false if it cannot be written from there.
fn keep(line: &Line<'_>) -> bool {
    KEPT.with(|kept| {
        let Ok(mut kept) = kept.try_borrow_mut() else {
            return false;
        };
        let (device, requester) = match line.requester {
            Requester::Device(sn) => (true, sn),
            Requester::Token(subject) => (false, subject),
        };
        // A quoted value that `Debug` would escape is left to the visitor.
        if !plain(requester) {
            return false;
        }
        kept.device = device;
        refill(&mut kept.requester, requester);
        refill(&mut kept.workspace, line.workspace);
        refill(&mut kept.access_key_id, line.access_key_id);
        kept.expire = line.expire;
        kept.cache_hit = line.cache_hit;
        kept.active = true;
        true
    })
}

/// The names of a handout event's fields, in order, for a token and for a dock.
const TOKEN_FIELDS: [&str; 7] = [
    "message",
    "front",
    "workspace",
    "subject",
    "access_key_id",
    "expire",
    "cache_hit",
];
const DEVICE_FIELDS: [&str; 7] = [
    "message",
    "front",
    "sn",
    "workspace",
    "access_key_id",
    "expire",
    "cache_hit",
];

/// Writes the kept handout's fields as `plain::write_fields` writes its event's, if `event` is
/// the handout's being dispatched on this thread; false if it is not (or they are not at hand).
pub fn write_fields(out: &mut String, event: &tracing::Event<'_>) -> Result<bool, fmt::Error> {
    KEPT.with(|kept| {
        let Ok(kept) = kept.try_borrow() else {
            return Ok(false);
        };
        if !kept.active {
            return Ok(false);
        }
        let names = if kept.device {
            DEVICE_FIELDS
        } else {
            TOKEN_FIELDS
        };
        let fields = event.metadata().fields();
        if fields.len() != names.len() || !fields.iter().zip(names).all(|(f, n)| f.name() == n) {
            return Ok(false);
        }
        out.push_str(MESSAGE);
        if kept.device {
            out.push_str(" front=\"mqtt\" sn=\"");
            out.push_str(&kept.requester);
            out.push_str("\" workspace=");
            out.push_str(&kept.workspace);
        } else {
            out.push_str(" front=\"http\" workspace=");
            out.push_str(&kept.workspace);
            out.push_str(" subject=\"");
            out.push_str(&kept.requester);
            out.push('"');
        }
        out.push_str(" access_key_id=");
        out.push_str(&kept.access_key_id);
        out.push_str(" expire=");
        out.push_str(itoa::Buffer::new().format(kept.expire));
        out.write_str(if kept.cache_hit {
            " cache_hit=true"
        } else {
            " cache_hit=false"
        })?;
        Ok(true)
    })
}

/// Marks the kept handout done when dropped.
struct Reset;

impl Drop for Reset {
    fn drop(&mut self) {
        KEPT.with(|kept| {
            if let Ok(mut kept) = kept.try_borrow_mut() {
                kept.active = false;
            }
        });
    }
}

/// Replaces `buffer`'s text with `text`, keeping its allocation (unless a rare long value grew it
/// past a line's size).
fn refill(buffer: &mut String, text: &str) {
    buffer.clear();
    if buffer.capacity() > 1024 {
        buffer.shrink_to(1024);
    }
    buffer.push_str(text);
}

/// Whether `Debug` writes `value` quoted as it is: printable ASCII without `"` or `\`.
fn plain(value: &str) -> bool {
    value
        .bytes()
        .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::{Context, SubscriberExt};

    use super::*;

    /// For every event: whether the handout's fields were written from here, those, and what
    /// the plain visitor writes for the event (the default format's bytes, as its tests hold).
    #[derive(Clone, Default)]
    struct BothWays(Arc<Mutex<Vec<(bool, String, String)>>>);

    impl<S: Subscriber> tracing_subscriber::Layer<S> for BothWays {
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut ours = String::new();
            let taken = write_fields(&mut ours, event).expect("written");
            let mut visited = String::new();
            crate::telemetry::plain::write_fields(&mut visited, event).expect("written");
            self.0.lock().expect("lines").push((taken, ours, visited));
        }
    }

    #[test]
    fn the_fields_written_from_here_are_the_visited_ones() {
        let lines = BothWays::default();
        let subscriber = tracing_subscriber::registry().with(lines.clone());
        tracing::subscriber::with_default(subscriber, || {
            for requester in [
                Requester::Token("pilot-7"),
                Requester::Device("4TADKAQ000002J"),
                Requester::Token("~!@#$%^&*()_+`-=[]{}|;':,./<>? x"),
                Requester::Device(""),
            ] {
                for cache_hit in [true, false] {
                    log(&Line {
                        requester,
                        workspace: "e3dea0f5-37f2-4d79-ae58-490af3228069",
                        access_key_id: "ASIA3XXOYT7CF3GQV3VP",
                        expire: 3515,
                        cache_hit,
                    });
                }
            }
            // Quoted values `Debug` escapes, and an odd key: visited.
            for requester in [
                Requester::Token("with \"quotes\" and \\"),
                Requester::Device("é\u{1b}[31m\ttab"),
            ] {
                log(&Line {
                    requester,
                    workspace: "ws-1",
                    access_key_id: "AK \u{1b}[0m é",
                    expire: u64::MAX,
                    cache_hit: false,
                });
            }
            // Not the handout's event: the same fields, logged while no line is kept.
            tracing::info!(
                front = "http",
                workspace = %"ws-1",
                subject = "pilot-7",
                access_key_id = %"AK",
                expire = 1_u64,
                cache_hit = true,
                "credentials handed out"
            );
        });
        let lines = lines.0.lock().expect("lines");
        let taken: Vec<bool> = lines.iter().map(|(taken, _, _)| *taken).collect();
        assert_eq!(taken, [[true; 8].as_slice(), &[false; 3]].concat());
        for (taken, ours, visited) in lines.iter() {
            if *taken {
                assert_eq!(ours, visited);
            } else {
                assert!(ours.is_empty(), "{ours}");
            }
        }
        assert!(
            lines[0]
                .2
                .starts_with("credentials handed out front=\"http\" workspace=e3dea0f5")
        );
        assert!(
            lines[2].2.contains(" sn=\"4TADKAQ000002J\" "),
            "{}",
            lines[2].2
        );
    }
}
