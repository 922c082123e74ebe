//! Objects: PutObject through a verified temporary file (see [`super::body`]) and an atomic
//! commit; reads, listing and deletion for the administrator.

use std::path::Path;
use std::time::SystemTime;

use s3s::dto::{
    self, CommonPrefix, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, DeletedObject, ETag, GetObjectInput, GetObjectOutput, HeadObjectInput,
    HeadObjectOutput, ListObjectsV2Input, ListObjectsV2Output, Object, PutObjectInput,
    PutObjectOutput, StreamingBlob, Timestamp,
};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::Store;
use super::body::{self, hex};
use super::disk::{Disk, Temp, check_key, io_error};
use super::meta::{Checksums, Headers, Meta, Version};

/// What is known about an object on disk.
struct Found {
    file: std::fs::File,
    stat: std::fs::Metadata,
    meta: Meta,
}

// === impl Store ===

impl Store {
    pub(super) async fn put(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let input = req.input;
        check_key(&input.key)?;
        if input.if_match.is_some() || input.if_none_match.is_some() {
            return Err(S3Error::with_message(
                S3ErrorCode::NotImplemented,
                "conditional writes are not supported by the embedded store",
            ));
        }
        self.bucket_exists(&input.bucket)?;
        let received = body::receive(
            &self.disk,
            input.body,
            expected_of!(input),
            req.trailing_headers,
        )
        .await?;
        let etag = hex(&received.md5);
        let headers = headers_of!(input);
        let checksums = received.checksums.clone();
        self.commit(
            &input.bucket,
            &input.key,
            received.temp,
            etag.clone(),
            checksums.clone(),
            headers,
        )
        .await?;
        Ok(S3Response::new(with_checksums!(
            PutObjectOutput {
                e_tag: Some(ETag::Strong(etag)),
            },
            checksums.to_dto()
        )))
    }

    /// Makes a verified, fsynced body the object `bucket/key`: metadata first, then the body, each
    /// by rename, under the key's lock so that two writers of one key cannot interleave.
    pub(super) async fn commit(
        &self,
        bucket: &str,
        key: &str,
        body: Temp,
        etag: String,
        checksums: Checksums,
        headers: Headers,
    ) -> S3Result<()> {
        let _guard = self.disk.lock(format!("o:{bucket}/{key}")).await;
        let disk = self.disk.clone();
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        tokio::task::spawn_blocking(move || {
            let version = Version::of(&std::fs::metadata(body.path())?);
            let meta = Meta {
                version,
                etag,
                checksums,
                headers,
            };
            let json = serde_json::to_vec(&meta).map_err(std::io::Error::other)?;
            disk.write_atomically(&disk.meta(&bucket, &key), &json)?;
            body.publish(&disk.object(&bucket, &key), disk.root())
        })
        .await
        .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?
        .map_err(|e| io_error("storing the object", &e))
    }

    pub(super) async fn get(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let found = self.find(&input.bucket, &input.key).await?;
        let full = found.stat.len();
        let (range, range_header) = match &input.range {
            None => (0..full, None),
            Some(r) => {
                let range = r.check(full)?;
                let header = format!("bytes {}-{}/{full}", range.start, range.end - 1);
                (range, Some(header))
            }
        };
        let mut file = tokio::fs::File::from_std(found.file);
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(|e| io_error("reading the object", &e))?;
        let length = range.end - range.start;
        let stream = tokio_util::io::ReaderStream::with_capacity(file.take(length), 64 * 1024);
        let meta = found.meta;
        let whole = range_header.is_none();
        let c = if whole {
            meta.checksums.to_dto()
        } else {
            dto::Checksum::default()
        };
        Ok(S3Response::new(object_output!(
            GetObjectOutput {
                body: Some(StreamingBlob::wrap(stream)),
                content_length: Some(i64::try_from(length).unwrap_or(i64::MAX)),
                content_range: range_header,
                last_modified: modified(&found.stat),
            },
            meta,
            c
        )))
    }

    pub(super) async fn head(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let found = self.find(&input.bucket, &input.key).await?;
        let c = found.meta.checksums.to_dto();
        Ok(S3Response::new(object_output!(
            HeadObjectOutput {
                content_length: Some(i64::try_from(found.stat.len()).unwrap_or(i64::MAX)),
                last_modified: modified(&found.stat),
            },
            found.meta,
            c
        )))
    }

    pub(super) async fn delete(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        self.remove(&input.bucket, &input.key).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(super) async fn delete_many(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        let mut deleted = Vec::new();
        for object in input.delete.objects {
            self.remove(&input.bucket, &object.key).await?;
            deleted.push(DeletedObject {
                key: Some(object.key),
                version_id: object.version_id,
                ..Default::default()
            });
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            ..Default::default()
        }))
    }

    pub(super) async fn list(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        self.bucket_exists(&input.bucket)?;
        let prefix = input.prefix.clone().unwrap_or_default();
        let disk = self.disk.clone();
        let bucket = input.bucket.clone();
        let scan_prefix = prefix.clone();
        let mut entries = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&disk, &bucket, &scan_prefix, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?
        .map_err(|e| io_error("listing", &e))?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));

        let max_keys = usize::try_from(input.max_keys.unwrap_or(1000).clamp(0, 1000)).unwrap_or(0);
        let marker = match (&input.continuation_token, &input.start_after) {
            (Some(t), Some(s)) => Some(t.max(s).clone()),
            (Some(t), None) => Some(t.clone()),
            (None, s) => s.clone(),
        };
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let mut contents = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut last: Option<String> = None;
        let mut truncated = false;
        for entry in entries {
            let group = delimiter.as_deref().and_then(|d| {
                let rest = &entry.key[prefix.len()..];
                rest.find(d)
                    .map(|i| entry.key[..prefix.len() + i + d.len()].to_owned())
            });
            let name = group.as_deref().unwrap_or(&entry.key);
            if marker.as_deref().is_some_and(|m| name <= m) || last.as_deref() == Some(name) {
                continue;
            }
            if contents.len() + prefixes.len() >= max_keys {
                truncated = true;
                break;
            }
            last = Some(name.to_owned());
            match group {
                Some(group) => prefixes.push(group),
                None => contents.push(entry.object()),
            }
        }
        let count = contents.len() + prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            key_count: Some(i32::try_from(count).unwrap_or(i32::MAX)),
            max_keys: Some(i32::try_from(max_keys).unwrap_or(1000)),
            is_truncated: Some(truncated),
            contents: (!contents.is_empty()).then_some(contents),
            common_prefixes: (!prefixes.is_empty()).then(|| {
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix { prefix: Some(p) })
                    .collect()
            }),
            next_continuation_token: if truncated { last } else { None },
            continuation_token: input.continuation_token,
            delimiter: input.delimiter,
            encoding_type: input.encoding_type,
            name: Some(input.bucket),
            prefix: input.prefix,
            start_after: input.start_after,
            ..Default::default()
        }))
    }

    /// `NoSuchBucket` unless the bucket exists.
    pub(super) fn bucket_exists(&self, bucket: &str) -> S3Result<()> {
        if s3s::path::check_bucket_name(bucket) && self.disk.bucket(bucket).is_dir() {
            Ok(())
        } else {
            Err(S3Error::new(S3ErrorCode::NoSuchBucket))
        }
    }

    /// Opens an object with the metadata that describe it (or an ETag computed from its bytes).
    async fn find(&self, bucket: &str, key: &str) -> S3Result<Found> {
        check_key(key).map_err(|_| S3Error::new(S3ErrorCode::NoSuchKey))?;
        self.bucket_exists(bucket)?;
        let disk = self.disk.clone();
        let (bucket, key) = (bucket.to_owned(), key.to_owned());
        tokio::task::spawn_blocking(move || {
            let no_such_key = || S3Error::new(S3ErrorCode::NoSuchKey);
            let file = std::fs::File::open(disk.object(&bucket, &key)).map_err(|e| {
                if matches!(e.raw_os_error(), Some(2 | 20)) {
                    no_such_key()
                } else {
                    io_error("reading the object", &e)
                }
            })?;
            let stat = file
                .metadata()
                .map_err(|e| io_error("reading the object", &e))?;
            if !stat.is_file() {
                return Err(no_such_key());
            }
            let meta = std::fs::read(disk.meta(&bucket, &key))
                .ok()
                .and_then(|bytes| Meta::parse_for(&bytes, &stat));
            let meta = match meta {
                Some(meta) => meta,
                None => Meta {
                    etag: md5_of(&file).map_err(|e| io_error("reading the object", &e))?,
                    ..Meta::default()
                },
            };
            Ok(Found { file, stat, meta })
        })
        .await
        .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?
    }

    /// Removes an object's body, then its metadata.
    async fn remove(&self, bucket: &str, key: &str) -> S3Result<()> {
        if check_key(key).is_err() {
            return Ok(());
        }
        let _guard = self.disk.lock(format!("o:{bucket}/{key}")).await;
        for path in [self.disk.object(bucket, key), self.disk.meta(bucket, key)] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if matches!(e.raw_os_error(), Some(2 | 20 | 21)) => {}
                Err(e) => return Err(io_error("deleting the object", &e)),
            }
        }
        Ok(())
    }
}

/// One object found by [`walk`].
struct Entry {
    key: String,
    size: u64,
    modified: Option<SystemTime>,
    etag: Option<String>,
}

impl Entry {
    fn object(self) -> Object {
        Object {
            key: Some(self.key),
            size: Some(i64::try_from(self.size).unwrap_or(i64::MAX)),
            last_modified: self.modified.map(Timestamp::from),
            e_tag: self.etag.map(ETag::Strong),
            ..Default::default()
        }
    }
}

/// Every object of `bucket` whose key starts with `prefix`, reading only the directories that
/// can hold one.
fn walk(disk: &Disk, bucket: &str, prefix: &str, out: &mut Vec<Entry>) -> std::io::Result<()> {
    let base = disk.bucket(bucket);
    let start = prefix.rfind('/').map_or("", |i| &prefix[..i]);
    if check_key(start).is_err() && !start.is_empty() {
        return Ok(());
    }
    let dir = if start.is_empty() {
        base.clone()
    } else {
        base.join(start)
    };
    walk_dir(disk, bucket, &dir, start, prefix, out)
}

fn walk_dir(
    disk: &Disk,
    bucket: &str,
    dir: &Path,
    rel: &str,
    prefix: &str,
    out: &mut Vec<Entry>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.raw_os_error(), Some(2 | 20)) => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let key = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type()?;
        if kind.is_dir() {
            let could_match = key.starts_with(prefix) || prefix.starts_with(&format!("{key}/"));
            if could_match {
                walk_dir(disk, bucket, &entry.path(), &key, prefix, out)?;
            }
        } else if kind.is_file() && key.starts_with(prefix) {
            let stat = entry.metadata()?;
            let etag = std::fs::read(disk.meta(bucket, &key))
                .ok()
                .and_then(|bytes| Meta::parse_for(&bytes, &stat))
                .map(|m| m.etag);
            out.push(Entry {
                key,
                size: stat.len(),
                modified: stat.modified().ok(),
                etag,
            });
        }
    }
    Ok(())
}

/// The MD5 of a file, hex: the ETag of an object whose metadata do not describe it.
fn md5_of(file: &std::fs::File) -> std::io::Result<String> {
    use s3s::crypto::Checksum as _;
    use std::io::Read;
    let mut md5 = s3s::crypto::Md5::new();
    let mut reader = file;
    let mut buf = vec![0_u8; 1 << 16];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        md5.update(&buf[..n]);
    }
    Ok(hex(&md5.finalize()))
}

fn modified(stat: &std::fs::Metadata) -> Option<Timestamp> {
    stat.modified().ok().map(Timestamp::from)
}
