//! The audit log: one JSON line per credential handed out — time, front, workspace, device serial
//! number or token subject, bucket, prefix, provider, access key id, `expire`, cache hit — and
//! never a secret. Lines go through a bounded channel to a writer task, so a slow disk never
//! slows a request; if the channel is full the record is dropped and counted
//! (`stsgate_audit_dropped_total`).
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

/// A handle to the audit log; a no-op when none is configured. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Audit {
    tx: Option<mpsc::Sender<Message>>,
}

/// What the writer task is asked to do, in order.
#[derive(Debug)]
enum Message {
    /// Write a record's line.
    Line(String),
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
    provider: &'a str,
    access_key_id: &'a str,
    expire: u64,
    cache_hit: bool,
}

// === impl Audit ===

impl Audit {
    /// Opens (appending, mode 0600) the audit file and starts its writer task.
    pub async fn open(path: &Path) -> std::io::Result<Self> {
        let file = open_file(path).await?;
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(file, rx, path.to_owned()));
        Ok(Self { tx: Some(tx) })
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

    /// Records a credential handed out to `requester`.
    pub fn record(&self, handout: Handout<'_>, requester: Requester<'_>) {
        let Some(tx) = &self.tx else { return };
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
            provider: handout.provider,
            access_key_id: handout.access_key_id,
            expire: handout.expire,
            cache_hit: handout.cache_hit,
        };
        let Ok(mut line) = serde_json::to_string(&record) else {
            return;
        };
        line.push('\n');
        if tx.try_send(Message::Line(line)).is_err() {
            metrics::counter!("stsgate_audit_dropped_total").increment(1);
        }
    }
}

/// Opens the audit file for appending, created with mode 0600.
async fn open_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

async fn write(mut file: tokio::fs::File, mut rx: mpsc::Receiver<Message>, path: PathBuf) {
    while let Some(message) = rx.recv().await {
        let line = match message {
            Message::Line(line) => line,
            Message::Reopen(done) => {
                let reopened = match file.flush().await {
                    Ok(()) => open_file(&path).await,
                    Err(e) => Err(e),
                };
                let reopened = match reopened {
                    Ok(new) => {
                        file = new;
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                let _ = done.send(reopened);
                continue;
            }
        };
        let mut result = file.write_all(line.as_bytes()).await;
        // Flush once the queue is empty: batches under load, prompt when idle.
        if result.is_ok() && rx.is_empty() {
            result = file.flush().await;
        }
        if let Err(e) = result {
            metrics::counter!("stsgate_audit_dropped_total").increment(1);
            tracing::error!(path = %path.display(), error = %e, "cannot write the audit log");
        }
    }
}
