//! ListMultipartUploads: the uploads in progress (`.uploads/{id}/upload.json`), by key then
//! upload id, with `prefix`, `delimiter`, `key-marker`, `upload-id-marker`, `max-uploads` and
//! `encoding-type` as the AWS S3 API reference describes them.

use std::path::Path;
use std::time::SystemTime;

use s3s::dto::{ListMultipartUploadsInput, ListMultipartUploadsOutput, MultipartUpload, Timestamp};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::{Encoding, MAX_KEYS, common_prefixes};
use crate::embedded::store::Store;
use crate::embedded::store::disk::{UPLOADS, check_upload_id, io_error};

/// An upload in progress, as [`uploads`] finds it.
struct Upload {
    key: String,
    id: String,
    initiated: Option<SystemTime>,
}

/// What a listing needs of an upload's record (`multipart::RECORD`).
#[derive(serde::Deserialize)]
struct UploadRecord {
    bucket: String,
    key: String,
}

// === impl Store ===

impl Store {
    pub(in crate::embedded::store) async fn list_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let encoding = Encoding::of(input.encoding_type.as_ref())?;
        self.bucket_exists(&input.bucket)?;
        let root = self.disk.root().join(UPLOADS);
        let (bucket, prefix) = (
            input.bucket.clone(),
            input.prefix.clone().unwrap_or_default(),
        );
        let mut found = tokio::task::spawn_blocking(move || uploads(&root, &bucket, &prefix))
            .await
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?
            .map_err(|e| io_error("listing uploads", &e))?;
        found.sort_by(|a, b| (&a.key, &a.id).cmp(&(&b.key, &b.id)));

        let max = input.max_uploads.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS);
        let room = usize::try_from(max).unwrap_or(0);
        let prefix = input.prefix.clone().unwrap_or_default();
        let delimiter = input.delimiter.clone().filter(|d| !d.is_empty());
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input
            .upload_id_marker
            .clone()
            .filter(|_| !key_marker.is_empty());
        let (mut listed, mut prefixes) = (Vec::new(), Vec::<String>::new());
        let mut truncated = false;
        for upload in found {
            let after_marker = match &id_marker {
                Some(id) => (upload.key.as_str(), upload.id.as_str()) > (&key_marker, id),
                None => upload.key > key_marker,
            };
            if !key_marker.is_empty() && !after_marker {
                continue;
            }
            let group = delimiter.as_deref().and_then(|d| {
                let rest = &upload.key[prefix.len()..];
                rest.find(d)
                    .map(|i| upload.key[..prefix.len() + i + d.len()].to_owned())
            });
            if group.is_some() && prefixes.last() == group.as_ref() {
                continue;
            }
            if listed.len() + prefixes.len() >= room {
                truncated = true;
                break;
            }
            match group {
                Some(group) => prefixes.push(group),
                None => listed.push(upload),
            }
        }
        let (next_key, next_id) = match listed.last() {
            Some(last) if truncated => (Some(last.key.clone()), Some(last.id.clone())),
            _ => (None, None),
        };
        let uploads = listed
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(encoding.name(u.key)),
                upload_id: Some(u.id),
                initiated: u.initiated.map(Timestamp::from),
                ..Default::default()
            })
            .collect::<Vec<_>>();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            common_prefixes: common_prefixes(prefixes, encoding),
            delimiter: encoding.maybe(input.delimiter),
            encoding_type: encoding.element(),
            is_truncated: Some(truncated),
            key_marker: encoding.maybe(input.key_marker),
            max_uploads: Some(max),
            next_key_marker: encoding.maybe(next_key),
            next_upload_id_marker: next_id,
            prefix: encoding.maybe(input.prefix),
            upload_id_marker: input.upload_id_marker,
            uploads: (!uploads.is_empty()).then_some(uploads),
            ..Default::default()
        }))
    }
}

/// The uploads in progress under `root` (`.uploads`) for `bucket` whose key starts with
/// `prefix`. An upload being created, completed or aborted while this runs is listed or not, as
/// on S3; a record that cannot be read is not listed.
fn uploads(root: &Path, bucket: &str, prefix: &str) -> std::io::Result<Vec<Upload>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        // (A completed upload keeps its directory until the clean-up: it is no longer in
        // progress.)
        if check_upload_id(&id).is_err()
            || entry
                .path()
                .join(crate::embedded::store::multipart::COMPLETED)
                .exists()
        {
            continue;
        }
        let record = std::fs::read(entry.path().join(crate::embedded::store::multipart::RECORD))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<UploadRecord>(&bytes).ok());
        if let Some(record) = record
            && record.bucket == bucket
            && record.key.starts_with(prefix)
        {
            out.push(Upload {
                key: record.key,
                id,
                initiated: entry.metadata().and_then(|m| m.modified()).ok(),
            });
        }
    }
    Ok(out)
}
