//! The audit log: one JSON line per credential handed out — time, front, workspace, device serial
//! number or token subject, profile, bucket, prefix, source identity, provider, access key id,
//! `expire`, cache hit — and never a secret. Lines go through a bounded channel to a writer task,
//! so a slow disk never slows a request; if the channel is full the record is dropped and counted
//! (`stsgate_audit_dropped_total`).
//!
//! With `audit.required = true` a record is written instead of queued: the request waits until
//! the writer has written it out (with the others ready at the time, in one write) and hands
//! the credential out only then; a record that cannot be written within
//! [`REQUIRED_WAIT`] refuses the credential ([`Unwritten`]), as a broker refuses what it cannot
//! audit.
//!
//! [`Audit::reopen`] (on `SIGHUP`) closes the file and opens `audit.path` again, so that a log
//! rotator may rename the file and signal: a record queued before the signal goes to the renamed
//! file, every later one to the new file, none to both and none lost.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::domain::Requester;

const QUEUE: usize = 4096;

/// The longest a request waits for its record to be written when records are required.
pub const REQUIRED_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The most bytes the writer gathers into one write.
const BATCH_BYTES: usize = 256 * 1024;

/// A handle to the audit log; a no-op when none is configured. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<Message>>,
    /// `audit.required`: a credential is handed out only once its record is written.
    required: bool,
}

/// A required record was not written: why, in words for the device and the log.
#[derive(Clone, Debug, thiserror::Error)]
#[error(
    "the audit log cannot be written ({0}) and audit.required is set: no credentials are handed out until it can"
)]
pub struct Unwritten(String);

/// What the writer task is asked to do, in order.
#[derive(Debug)]
enum Message {
    /// Write a record's line.
    Line(String),
    /// Write a record's line, and say whether it was written.
    Required(String, tokio::sync::oneshot::Sender<Result<(), String>>),
    /// Open the file again; say how it went.
    Reopen(tokio::sync::oneshot::Sender<std::io::Result<()>>),
}

/// What was handed out, as the audit trail records it (never a secret).
#[derive(Clone, Copy, Debug)]
pub struct Handout<'a> {
    /// The workspace it was issued for.
    pub workspace: &'a str,
    /// The storage profile it came from.
    pub profile: &'a str,
    /// The bucket it may write to.
    pub bucket: &'a str,
    /// The prefix it may write under.
    pub prefix: &'a str,
    /// The device's key the upstream was told as its source identity (`per_device`).
    pub source_identity: Option<&'a str>,
    /// The provider devices were told (`ali`, `aws`, `minio`).
    pub provider: &'static str,
    /// The credential's access key id.
    pub access_key_id: &'a str,
    /// Seconds the device may rely on it.
    pub expire: u64,
    /// Whether it came from the cache.
    pub cache_hit: bool,
}

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    front: &'static str,
    workspace: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    profile: &'a str,
    bucket: &'a str,
    prefix: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    source_identity: Option<&'a str>,
    provider: &'a str,
    access_key_id: &'a str,
    expire: u64,
    cache_hit: bool,
}

// === impl Audit ===

impl Audit {
    /// Opens (appending, mode 0600) the audit file and starts its writer task; `required`:
    /// see [`Audit::record_required`].
    pub async fn open(path: &Path, required: bool) -> std::io::Result<Self> {
        let file = open_file(path).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(file, rx, path.to_owned()));
        Ok(Self {
            tx: Some(tx),
            required,
        })
    }

    /// The same log, with records required or not (a reload that changed only that).
    pub fn with_required(&self, required: bool) -> Self {
        Self {
            tx: self.tx.clone(),
            required,
        }
    }

    /// Whether a credential waits for its record ([`Audit::record_required`]).
    pub fn required(&self) -> bool {
        self.required && self.tx.is_some()
    }

    /// Writes out what is queued, closes the file and opens `audit.path` again (created if a
    /// rotator moved it away). If it cannot be opened, records go on to the old file and the
    /// error is returned. A no-op without an audit log.
    pub async fn reopen(&self) -> std::io::Result<()> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (done, result) = tokio::sync::oneshot::channel();
        // Waits for room: a reopen is never dropped, unlike a record under a flood.
        let gone = || std::io::Error::other("the audit writer has stopped");
        tx.send(Message::Reopen(done)).await.map_err(|_| gone())?;
        result.await.map_err(|_| gone())?
    }

    /// Records a credential handed out to `requester`, dropping (and counting) the record when
    /// the writer is behind.
    pub fn record(&self, handout: Handout<'_>, requester: Requester<'_>) {
        let Some(tx) = &self.tx else { return };
        if tx
            .try_send(Message::Line(line(handout, requester)))
            .is_err()
        {
            metrics::counter!("stsgate_audit_dropped_total").increment(1);
        }
    }

    /// Records a credential about to be handed out to `requester` and waits until the record
    /// is written, at most [`REQUIRED_WAIT`]; the credential must not be handed out on an
    /// error (counted as `stsgate_audit_refused_total`).
    pub async fn record_required(
        &self,
        handout: Handout<'_>,
        requester: Requester<'_>,
    ) -> Result<(), Unwritten> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let line = line(handout, requester);
        let written = async {
            let (done, result) = tokio::sync::oneshot::channel();
            tx.send(Message::Required(line, done))
                .await
                .map_err(|_| "the audit writer has stopped".to_owned())?;
            result
                .await
                .map_err(|_| "the audit writer has stopped".to_owned())?
        };
        let outcome = match tokio::time::timeout(REQUIRED_WAIT, written).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("not written within {}s", REQUIRED_WAIT.as_secs())),
        };
        outcome.map_err(|why| {
            metrics::counter!("stsgate_audit_refused_total").increment(1);
            Unwritten(why)
        })
    }
}

/// The JSON line of a record.
fn line(handout: Handout<'_>, requester: Requester<'_>) -> String {
    let (front, device, subject) = match requester {
        Requester::Device(sn) => ("mqtt", Some(sn), None),
        Requester::Token(subject) => ("http", None, Some(subject)),
    };
    let record = Record {
        time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        front,
        workspace: handout.workspace,
        device,
        subject,
        profile: handout.profile,
        bucket: handout.bucket,
        prefix: handout.prefix,
        source_identity: handout.source_identity,
        provider: handout.provider,
        access_key_id: handout.access_key_id,
        expire: handout.expire,
        cache_hit: handout.cache_hit,
    };
    // A record of strings, numbers and booleans always serialises.
    let mut line = serde_json::to_string(&record).unwrap_or_default();
    line.push('\n');
    line
}

/// Opens the audit file for appending, created with mode 0600.
async fn open_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

/// The writer task: each message in order; the lines ready at once are written in one write,
/// flushed before the next wait, and every required record among them told how it went.
async fn write(mut file: tokio::fs::File, mut rx: mpsc::Receiver<Message>, path: PathBuf) {
    let mut batch = Batch::default();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Line(line) => batch.push(line, None),
                Message::Required(line, done) => batch.push(line, Some(done)),
                Message::Reopen(done) => {
                    batch.write(&mut file, &path).await;
                    let reopened = match file.flush().await {
                        Ok(()) => open_file(&path).await.map(|new| file = new),
                        Err(e) => Err(e),
                    };
                    let _ = done.send(reopened);
                }
            }
            if batch.text.len() < BATCH_BYTES {
                next = rx.try_recv().ok();
            }
        }
        batch.write(&mut file, &path).await;
    }
}

/// Lines gathered for one write, and the required records waiting on it.
#[derive(Default)]
struct Batch {
    text: String,
    lines: u64,
    waiting: Vec<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

impl Batch {
    fn push(
        &mut self,
        line: String,
        done: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
    ) {
        self.text.push_str(&line);
        self.lines += 1;
        self.waiting.extend(done);
    }

    /// Writes and flushes what is gathered (a write error surfaces at the latest on the flush).
    async fn write(&mut self, file: &mut tokio::fs::File, path: &Path) {
        if self.lines == 0 {
            return;
        }
        let mut result = file.write_all(self.text.as_bytes()).await;
        if result.is_ok() {
            result = file.flush().await;
        }
        let outcome = result.map_err(|e| {
            metrics::counter!("stsgate_audit_dropped_total").increment(self.lines);
            tracing::error!(path = %path.display(), error = %e, "cannot write the audit log");
            e.to_string()
        });
        for done in self.waiting.drain(..) {
            let _ = done.send(outcome.clone());
        }
        self.text.clear();
        self.lines = 0;
    }
}
