//! Objects: PutObject through a verified temporary file (see [`super::body`]) and an atomic
//! commit; reads and deletion for the administrator (listing: [`super::listing`]).

use s3s::dto::{
    self, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput,
    DeletedObject, ETag, GetObjectInput, GetObjectOutput, HeadObjectInput, HeadObjectOutput,
    PutObjectInput, PutObjectOutput, StreamingBlob, Timestamp,
};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use super::Store;
use super::body::{self, hex};
use super::disk::{Temp, check_key, io_error};
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
