//! Multipart uploads, with a lifecycle that survives refusals, crashes and credential rotation.
//!
//! An upload is the directory `.uploads/{id}/` holding `upload.json` (bucket, key, headers) and
//! its parts as `{n:05}.{md5}`. It belongs to its object key, not to the access key that created
//! it: every request names the bucket and key, the access policy has already checked that the
//! caller's credential covers that key, and here the upload must be for that same bucket and key
//! (else `NoSuchUpload`, also for ListParts). So a refreshed credential for the same prefix can
//! carry on, and a credential for another prefix learns nothing.
//!
//! - **Create** builds the directory in the temporary area and renames it into place: an upload
//!   exists whole or not at all.
//! - **UploadPart** verifies the part in a temporary file (see [`super::body`]) and renames it in
//!   under the upload's lock; a part sent again replaces the old one only once it has arrived
//!   whole. Its ETag is in its name, so a part and its ETag change in one rename.
//! - **Complete** checks everything before writing anything (order, ETags, sizes): a refused
//!   Complete changes nothing and the upload stays usable. It then assembles the object in a
//!   temporary file, commits it like a PutObject, records `completed.json` (bucket, key, ETag),
//!   and only then removes the parts. A crash before the object is committed leaves the upload
//!   intact for the retry; a crash after it leaves either the intact upload (the retry assembles
//!   the same bytes again) or `completed.json` (the retry is answered from it).
//! - **Abort** renames the directory out of `.uploads` (atomic) before deleting it.
//! - The clean-up removes uploads whose newest file is older than `storage.local.multipart_ttl`,
//!   and leftovers of completed ones.

use std::path::Path;

use s3s::dto::{
    self, AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, ETag,
    ListPartsInput, ListPartsOutput, Part, Timestamp, UploadPartInput, UploadPartOutput,
};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use serde::{Deserialize, Serialize};

use super::Store;
use super::body::{self, hex};
use super::disk::{Disk, check_key, check_upload_id, io_error};
use super::meta::{Checksums, Headers};

/// The record of an upload in progress.
pub const RECORD: &str = "upload.json";
/// The record of a completed upload.
pub const COMPLETED: &str = "completed.json";
/// S3's smallest part, except the last.
const MIN_PART: u64 = 5 << 20;
/// S3's largest part number.
const MAX_PART: i32 = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    bucket: String,
    key: String,
    #[serde(default)]
    headers: Headers,
}

#[derive(Debug, Serialize, Deserialize)]
struct Completed {
    bucket: String,
    key: String,
    etag: String,
}

/// A part on disk.
#[derive(Debug)]
struct PartFile {
    number: i32,
    md5: String,
    size: u64,
    modified: std::time::SystemTime,
}

// === impl Store ===

impl Store {
    pub(super) async fn create_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        self.bucket_exists(&input.bucket)?;
        let id = crate::random::string(b"0123456789abcdef", 32)
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?;
        let record = Record {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            headers: headers_of!(input),
        };
        let disk = self.disk.clone();
        let dest = disk.upload(&id);
        blocking(move || {
            let staging = disk.temp_path();
            std::fs::create_dir(&staging)?;
            let json = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
            let result = (|| {
                write_durably(&staging.join(RECORD), &json)?;
                super::disk::fsync_dir(&staging)?;
                std::fs::rename(&staging, &dest)?;
                super::disk::fsync_dir(dest.parent().unwrap_or(disk.root()))
            })();
            if result.is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
            result
        })
        .await
        .map_err(|e| io_error("creating the upload", &e))?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    pub(super) async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        if !(1..=MAX_PART).contains(&input.part_number) {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "part numbers are 1 to 10000",
            ));
        }
        // Before a byte of the body is read: the upload must exist and be for this key.
        self.record(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let received = body::receive(
            &self.disk,
            input.body,
            expected_of!(input),
            req.trailing_headers,
        )
        .await?;
        let md5 = hex(&received.md5);
        let _guard = self.disk.lock(format!("u:{}", input.upload_id)).await;
        // Completed or aborted while the body was arriving?
        self.record(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let dir = self.disk.upload(&input.upload_id);
        let number = input.part_number;
        let name = format!("{number:05}.{md5}");
        let root = self.disk.root().to_owned();
        let temp = received.temp;
        blocking(move || {
            temp.publish(&dir.join(&name), &root)?;
            for old in parts(&dir)?.into_iter().filter(|p| p.number == number) {
                if format!("{:05}.{}", old.number, old.md5) != name {
                    let _ =
                        std::fs::remove_file(dir.join(format!("{:05}.{}", old.number, old.md5)));
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| io_error("storing the part", &e))?;
        Ok(S3Response::new(with_checksums!(
            UploadPartOutput {
                e_tag: Some(ETag::Strong(md5)),
            },
            received.checksums.to_dto()
        )))
    }

    pub(super) async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        self.record(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let dir = self.disk.upload(&input.upload_id);
        let found = blocking(move || parts(&dir))
            .await
            .map_err(|e| io_error("listing parts", &e))?;
        let marker = input.part_number_marker.unwrap_or(0);
        let max = usize::try_from(input.max_parts.unwrap_or(1000).clamp(0, 1000)).unwrap_or(1000);
        let later: Vec<_> = current(found)
            .into_iter()
            .filter(|p| p.number > marker)
            .collect();
        let truncated = later.len() > max;
        let shown: Vec<Part> = later
            .into_iter()
            .take(max)
            .map(|p| Part {
                part_number: Some(p.number),
                e_tag: Some(ETag::Strong(p.md5)),
                size: Some(i64::try_from(p.size).unwrap_or(i64::MAX)),
                last_modified: Some(Timestamp::from(p.modified)),
                ..Default::default()
            })
            .collect();
        let next = truncated
            .then(|| shown.last().and_then(|p| p.part_number))
            .flatten();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            parts: Some(shown),
            is_truncated: Some(truncated),
            max_parts: Some(i32::try_from(max).unwrap_or(1000)),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: next,
            ..Default::default()
        }))
    }

    pub(super) async fn complete(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let input = req.input;
        check_upload_id(&input.upload_id)?;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "conditional writes are not supported by the embedded store",
            ));
        }
        let _guard = self.disk.lock(format!("u:{}", input.upload_id)).await;
        let dir = self.disk.upload(&input.upload_id);
        // A retry of a Complete that already went through.
        if let Ok(bytes) = tokio::fs::read(dir.join(COMPLETED)).await
            && let Ok(done) = serde_json::from_slice::<Completed>(&bytes)
            && done.bucket == input.bucket
            && done.key == input.key
        {
            return Ok(completed(done.bucket, done.key, done.etag));
        }
        let record = self
            .record(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let wanted = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        let scan = dir.clone();
        let on_disk = blocking(move || parts(&scan))
            .await
            .map_err(|e| io_error("reading the upload", &e))?;
        let chosen = choose(&wanted, &on_disk)?;

        let md5s: Vec<u8> = chosen.iter().flat_map(|p| decode_hex(&p.md5)).collect();
        let etag = format!(
            "{}-{}",
            hex(&<s3s::crypto::Md5 as s3s::crypto::Checksum>::checksum(
                &md5s
            )),
            chosen.len()
        );
        let names: Vec<String> = chosen
            .iter()
            .map(|p| format!("{:05}.{}", p.number, p.md5))
            .collect();
        let disk = self.disk.clone();
        let assemble_dir = dir.clone();
        let body = blocking(move || assemble(&disk, &assemble_dir, &names))
            .await
            .map_err(|e| io_error("assembling the object", &e))?;
        self.commit(
            &input.bucket,
            &input.key,
            body,
            etag.clone(),
            Checksums::default(),
            record.headers,
        )
        .await?;
        let done = Completed {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            etag: etag.clone(),
        };
        let disk = self.disk.clone();
        blocking(move || {
            let json = serde_json::to_vec(&done).map_err(std::io::Error::other)?;
            disk.write_atomically(&dir.join(COMPLETED), &json)?;
            remove_all_but_completed(&dir);
            Ok(())
        })
        .await
        .map_err(|e| io_error("recording the completed upload", &e))?;
        Ok(completed(input.bucket, input.key, etag))
    }

    pub(super) async fn abort(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let input = req.input;
        let _guard = self.disk.lock(format!("u:{}", input.upload_id)).await;
        self.record(&input.upload_id, &input.bucket, &input.key)
            .await?;
        let disk = self.disk.clone();
        let id = input.upload_id.clone();
        blocking(move || {
            let gone = disk.temp_path();
            std::fs::rename(disk.upload(&id), &gone)?;
            std::fs::remove_dir_all(&gone)
        })
        .await
        .map_err(|e| io_error("aborting the upload", &e))?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    /// The record of upload `id`, which must be in progress and for `bucket`/`key`.
    async fn record(&self, id: &str, bucket: &str, key: &str) -> S3Result<Record> {
        check_upload_id(id)?;
        let path = self.disk.upload(id).join(RECORD);
        let no_such = || S3Error::new(S3ErrorCode::NoSuchUpload);
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if matches!(e.raw_os_error(), Some(2 | 20)) => return Err(no_such()),
            Err(e) => return Err(io_error("reading the upload", &e)),
        };
        let record: Record = serde_json::from_slice(&bytes).map_err(|_| no_such())?;
        if record.bucket == bucket && record.key == key {
            Ok(record)
        } else {
            Err(no_such())
        }
    }
}

/// The parts to assemble for the client's list, or why it is refused (before anything changes).
fn choose<'a>(
    wanted: &[dto::CompletedPart],
    on_disk: &'a [PartFile],
) -> S3Result<Vec<&'a PartFile>> {
    if wanted.is_empty() {
        return Err(S3Error::with_message(
            S3ErrorCode::MalformedXML,
            "you must specify at least one part",
        ));
    }
    let mut chosen = Vec::with_capacity(wanted.len());
    let mut previous = 0;
    for part in wanted {
        let number = part.part_number.ok_or_else(|| {
            S3Error::with_message(S3ErrorCode::InvalidPart, "a part has no number")
        })?;
        if number <= previous {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidPartOrder,
                "the list of parts was not in ascending order",
            ));
        }
        previous = number;
        let etag = part
            .e_tag
            .as_ref()
            .map(|e| e.value().trim_matches('"').to_ascii_lowercase());
        let file = on_disk
            .iter()
            .filter(|p| p.number == number && etag.as_ref().is_none_or(|e| *e == p.md5))
            .max_by_key(|p| p.modified)
            .ok_or_else(|| {
                S3Error::with_message(
                    S3ErrorCode::InvalidPart,
                    format!("part {number} was not uploaded or its ETag does not match"),
                )
            })?;
        chosen.push(file);
    }
    if let Some((_, all_but_last)) = chosen.split_last()
        && all_but_last.iter().any(|p| p.size < MIN_PART)
    {
        return Err(S3Error::with_message(
            S3ErrorCode::EntityTooSmall,
            "every part but the last must be at least 5 MiB",
        ));
    }
    Ok(chosen)
}

/// The parts in an upload directory (all versions of a part, should a crash have left two).
fn parts(dir: &Path) -> std::io::Result<Vec<PartFile>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some((number, md5)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        let Ok(number) = number.parse::<i32>() else {
            continue;
        };
        let stat = entry.metadata()?;
        out.push(PartFile {
            number,
            md5: md5.to_owned(),
            size: stat.len(),
            modified: stat.modified()?,
        });
    }
    Ok(out)
}

/// One version per part number, the newest, in order.
fn current(mut all: Vec<PartFile>) -> Vec<PartFile> {
    all.sort_by(|a, b| a.number.cmp(&b.number).then(b.modified.cmp(&a.modified)));
    all.dedup_by_key(|p| p.number);
    all
}

/// Concatenates the parts into a new fsynced temporary file (`copy_file_range` on Linux: the
/// kernel copies, nothing passes through this process).
fn assemble(disk: &Disk, dir: &Path, names: &[String]) -> std::io::Result<super::disk::Temp> {
    let (temp, mut out) = disk.temp()?;
    for name in names {
        let mut part = std::fs::File::open(dir.join(name))?;
        std::io::copy(&mut part, &mut out)?;
    }
    out.sync_all()?;
    Ok(temp)
}

/// Removes an upload's record and parts, keeping `completed.json` for retries.
fn remove_all_but_completed(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name() != COMPLETED {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = std::fs::File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

fn completed(
    bucket: String,
    key: String,
    etag: String,
) -> S3Response<CompleteMultipartUploadOutput> {
    S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(bucket),
        key: Some(key),
        e_tag: Some(ETag::Strong(etag)),
        ..Default::default()
    })
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(number: i32, md5: &str, size: u64, age: u64) -> PartFile {
        PartFile {
            number,
            md5: md5.into(),
            size,
            modified: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 - age),
        }
    }

    fn completed_part(number: i32, etag: &str) -> dto::CompletedPart {
        dto::CompletedPart {
            part_number: Some(number),
            e_tag: Some(ETag::Strong(etag.into())),
            ..Default::default()
        }
    }

    fn code(r: S3Result<Vec<&PartFile>>) -> Option<String> {
        r.err().map(|e| e.code().as_str().to_owned())
    }

    #[test]
    fn a_complete_is_checked_whole_before_anything_is_written() {
        let disk = [
            part(1, "aa", MIN_PART, 5),
            part(2, "bb", MIN_PART, 4),
            part(2, "cc", MIN_PART, 1),
            part(3, "dd", 10, 1),
        ];
        let ok = choose(
            &[
                completed_part(1, "\"AA\""),
                completed_part(2, "bb"),
                completed_part(3, "dd"),
            ],
            &disk,
        )
        .expect("valid");
        assert_eq!(
            ok.iter().map(|p| p.md5.as_str()).collect::<Vec<_>>(),
            ["aa", "bb", "dd"]
        );
        assert_eq!(code(choose(&[], &disk)).as_deref(), Some("MalformedXML"));
        assert_eq!(
            code(choose(
                &[completed_part(2, "bb"), completed_part(1, "aa")],
                &disk
            ))
            .as_deref(),
            Some("InvalidPartOrder")
        );
        assert_eq!(
            code(choose(&[completed_part(1, "ff")], &disk)).as_deref(),
            Some("InvalidPart")
        );
        assert_eq!(
            code(choose(
                &[completed_part(3, "dd"), completed_part(4, "ee")],
                &disk
            ))
            .as_deref(),
            Some("InvalidPart")
        );
        assert_eq!(
            code(choose(
                &[completed_part(3, "dd"), completed_part(2, "cc")],
                &disk
            ))
            .as_deref(),
            Some("InvalidPartOrder")
        );
        let small_first = [part(1, "aa", 10, 1), part(2, "bb", 10, 1)];
        assert_eq!(
            code(choose(
                &[completed_part(1, "aa"), completed_part(2, "bb")],
                &small_first
            ))
            .as_deref(),
            Some("EntityTooSmall")
        );
    }

    #[test]
    fn the_newest_version_of_a_part_is_the_current_one() {
        let listed = current(vec![
            part(2, "old", 1, 9),
            part(1, "a", 1, 1),
            part(2, "new", 1, 2),
        ]);
        assert_eq!(
            listed
                .iter()
                .map(|p| (p.number, p.md5.as_str()))
                .collect::<Vec<_>>(),
            [(1, "a"), (2, "new")]
        );
    }
}
