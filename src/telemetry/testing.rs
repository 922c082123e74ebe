//! What the log format tests share: a writer that keeps what it is given, times masked, and
//! events with every kind of field.

use std::sync::{Arc, Mutex, PoisonError};

use tracing_subscriber::fmt::MakeWriter;

/// Keeps every byte written, for reading back.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    /// What was written, as text.
    pub fn text(&self) -> String {
        let bytes = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

/// `text` with every `2026-12-06T13:34:32.671453Z` replaced by `<time>`.
pub fn mask_times(text: &str) -> String {
    const SHAPE: &[u8; 27] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let is_time = bytes.get(i..i + SHAPE.len()).is_some_and(|window| {
            window.iter().zip(SHAPE).all(|(&b, &s)| {
                if s == b'd' {
                    b.is_ascii_digit()
                } else {
                    b == s
                }
            })
        });
        if is_time {
            out.push_str("<time>");
            i += SHAPE.len();
        } else {
            let c = text[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8().max(1);
        }
    }
    out
}

/// An error to log as a field.
#[derive(Debug)]
struct Failure;

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("it failed")
    }
}

impl std::error::Error for Failure {}

/// Logs events with every kind of field, each with texts that need escaping or quoting, inside
/// a span: what the field formatters are compared on.
pub fn every_kind_of_field() {
    let texts = [
        "pilot-7",
        "",
        "with space",
        "quote\"d",
        "back\\slash",
        "tab\tnew\nline",
        "é ü 中文",
        "\u{1b}[31mred",
        "bell\u{7} bs\u{8} ff\u{c} del\u{7f} c1\u{85}\u{9b}[0m \u{a0}\u{100}",
        "~!@#$%^&*()_+`-=[]{}|;':,./<>?",
    ];
    for (i, text) in texts.iter().enumerate() {
        let span = tracing::info_span!("http", request_id = %text, method = "POST", n = i);
        let _entered = span.enter();
        tracing::info!(
            front = "http",
            subject = *text,
            expire = 3515_u64,
            delta = -7_i64,
            cache_hit = true,
            other = false,
            ratio = 0.5_f64,
            shown = %text,
            debugged = ?text,
            r#type = "raw",
            error = &Failure as &(dyn std::error::Error + 'static),
            "credentials handed out {}", text
        );
        tracing::warn!(message = *text, subject = *text);
        tracing::info!(big = u64::MAX, small = i64::MIN, "{}", i);
    }
}
