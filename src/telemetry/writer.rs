//! The log writer: the threads that log append each formatted line to one bounded buffer, and a
//! thread of its own writes the buffer to stderr in batches. A line costs a lock and a copy; the
//! writer thread wakes once per batch; when it cannot keep up (stderr slow or not read at all),
//! lines are dropped and counted, never waited for.
//!
//! Written here rather than taken from `tracing-appender` (used before): its non-blocking writer
//! sends every line through a channel whose receiving thread spins and yields between lines. At
//! tens of thousands of lines a second on two cores that thread burnt CPU the requests needed
//! (BENCHMARKS.md, wrk). No crate we found batches on the producer side.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, mpsc};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes waiting for the writer at most (some 7,000 lines); past that, lines are dropped.
const CAPACITY: usize = 2 << 20;
/// How long the writer gathers lines after the first of a batch, unless the buffer is half full.
const GATHER: Duration = Duration::from_millis(10);
/// How long dropping the [`Guard`] waits for the last lines to be written.
const LAST_WRITE: Duration = Duration::from_secs(1);

/// Appends lines for the writer thread (a [`MakeWriter`] for `tracing-subscriber`).
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Keeps the writer thread; dropping it writes out what is waiting (for up to a second).
pub struct Guard {
    shared: Arc<Shared>,
    finished: mpsc::Receiver<()>,
}

/// One line being written (what [`BatchWriter`] makes per log event).
pub struct Line<'a> {
    shared: &'a Shared,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    dropped: AtomicU64,
}

struct State {
    pending: Vec<u8>,
    closing: bool,
}

/// Starts the writer thread, writing to `out`.
pub fn spawn<W: Write + Send + 'static>(mut out: W) -> io::Result<(BatchWriter, Guard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            pending: Vec::with_capacity(64 << 10),
            closing: false,
        }),
        wake: Condvar::new(),
        dropped: AtomicU64::new(0),
    });
    let (finished_tx, finished) = mpsc::channel();
    let theirs = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("stsgate-log".to_owned())
        .spawn(move || {
            let mut batch = Vec::with_capacity(64 << 10);
            while theirs.next_batch(&mut batch) {
                // Nowhere to report a failed write of the log but the log: the lines are lost.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
                batch.clear();
                // A burst may have grown the buffer; keep what a usual batch needs.
                batch.shrink_to(CAPACITY / 4);
            }
            let _ = finished_tx.send(());
        })?;
    Ok((
        BatchWriter {
            shared: shared.clone(),
        },
        Guard { shared, finished },
    ))
}

// === impl BatchWriter ===

impl BatchWriter {
    /// Lines dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
        }
    }
}

// === impl Line ===

impl Write for Line<'_> {
    /// Takes a whole line (`tracing-subscriber` writes each event in one call) or drops it.
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let mut state = self.shared.lock();
        if state.closing || state.pending.len() + line.len() > CAPACITY {
            drop(state);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        let before = state.pending.len();
        state.pending.extend_from_slice(line);
        let after = state.pending.len();
        drop(state);
        // Wake the writer for the first line of a batch, and once more when the buffer passes
        // half full; not per line (each notify is a system call).
        if before == 0 || (before < CAPACITY / 2 && after >= CAPACITY / 2) {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// === impl Shared ===

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits for lines, gathers more for [`GATHER`] and moves them into `batch`; false once
    /// closing and nothing is left.
    fn next_batch(&self, batch: &mut Vec<u8>) -> bool {
        let state = self.lock();
        let state = self
            .wake
            .wait_while(state, |s| s.pending.is_empty() && !s.closing)
            .unwrap_or_else(PoisonError::into_inner);
        let (mut state, _) = self
            .wake
            .wait_timeout_while(state, GATHER, |s| {
                s.pending.len() < CAPACITY / 2 && !s.closing
            })
            .unwrap_or_else(PoisonError::into_inner);
        if state.pending.is_empty() {
            return !state.closing;
        }
        std::mem::swap(&mut state.pending, batch);
        true
    }
}

// === impl Guard ===

impl Drop for Guard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        // Bounded: a stderr nobody reads must not keep the process from exiting.
        let _ = self.finished.recv_timeout(LAST_WRITE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test reads, which can be made to stall.
    #[derive(Clone, Default)]
    struct Sink {
        written: Arc<Mutex<Vec<u8>>>,
        stalled: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let _wait = self.stalled.lock().unwrap();
            self.written.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(writer: &BatchWriter, text: &str) {
        writer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_are_written_whole_in_order_and_the_last_ones_on_drop() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone()).unwrap();
        for i in 0..10_000 {
            line(&writer, &format!("line {i}\n"));
        }
        drop(guard);
        let written = String::from_utf8(sink.written.lock().unwrap().clone()).unwrap();
        let expected: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        assert!(written == expected, "{} bytes written", written.len());
        assert_eq!(writer.dropped(), 0);
    }

    #[test]
    fn a_stalled_sink_drops_and_counts_lines_and_never_blocks_the_logger() {
        let sink = Sink::default();
        let stall = sink.stalled.lock().unwrap();
        let (writer, guard) = spawn(sink.clone()).unwrap();
        let text = format!("{}\n", "x".repeat(255));
        // Far more than the buffer holds; returns at once although nothing can be written.
        let lines = 4 * CAPACITY / text.len();
        for _ in 0..lines {
            line(&writer, &text);
        }
        let dropped = writer.dropped() as usize;
        assert!(
            dropped >= lines - 2 * CAPACITY / text.len() && dropped < lines,
            "{dropped} of {lines} dropped"
        );
        drop(stall);
        drop(guard);
        let written = sink.written.lock().unwrap().len();
        assert_eq!(
            written,
            (lines - dropped) * text.len(),
            "every line kept is written"
        );
    }
}
