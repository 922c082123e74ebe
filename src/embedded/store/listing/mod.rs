//! Listing for the administrator: ListObjects (V1) and ListObjectsV2 over the object directory,
//! and ListMultipartUploads (`uploads`), as the AWS S3 API reference describes them.
//!
//! - `encoding-type=url` (which boto3 and the aws CLI send by default, and then URL-decode
//!   `Key`, `Prefix`, `Delimiter`, `StartAfter`, `Marker`, `NextMarker` and `CommonPrefixes`):
//!   every element the reference lists for the operation is URL-encoded as S3 encodes it —
//!   everything but letters, digits and `-_.*/` as `%XX` of its UTF-8 bytes, a space as `+` —
//!   so a key holding `+`, `%20` or a space is listed as itself. Without it, keys are written as
//!   they are (XML-escaped).
//! - ListMultipartUploads (`uploads`) encodes `Key`, `Prefix`, `Delimiter`, `KeyMarker` and
//!   `NextKeyMarker` the same way. (ListParts has no `encoding-type`: its key is written as it
//!   is.)
//! - V2's continuation token is opaque (the last key listed, base64url), so it is valid XML
//!   whatever the key holds; V1's `NextMarker` is that key itself, as V1 clients pass it back as
//!   `Marker`.

use std::path::Path;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use s3s::dto::{
    CommonPrefix, ETag, EncodingType, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input,
    ListObjectsV2Output, Object, Timestamp,
};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use super::Store;
use super::disk::{Disk, check_key, io_error};
use super::meta::Meta;

mod uploads;

/// What S3 leaves as it is when it URL-encodes a key.
const KEY_SAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'*')
    .remove(b'/');

/// The most keys one page lists.
const MAX_KEYS: i32 = 1000;

/// Whether a response's key names are URL-encoded (`encoding-type=url`).
#[derive(Clone, Copy, Debug)]
pub(super) struct Encoding {
    url: bool,
}

/// One page of a listing, with keys as they are.
struct Page {
    contents: Vec<Entry>,
    prefixes: Vec<String>,
    truncated: bool,
    /// The last key or common prefix on the page: where the next one starts after.
    last: Option<String>,
    max_keys: i32,
}

/// One object found by [`walk`].
struct Entry {
    key: String,
    size: u64,
    modified: Option<SystemTime>,
    etag: Option<String>,
}

// === impl Encoding ===

impl Encoding {
    /// The encoding a request asks for; anything but `url` is `InvalidArgument`, as on S3.
    pub(super) fn of(requested: Option<&EncodingType>) -> S3Result<Self> {
        match requested.map(EncodingType::as_str) {
            None => Ok(Self { url: false }),
            Some(e) if e.eq_ignore_ascii_case(EncodingType::URL) => Ok(Self { url: true }),
            Some(_) => Err(S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "Invalid Encoding Method specified in Request (encoding-type: only url)",
            )),
        }
    }

    /// A key name (or prefix, delimiter, marker) as the response carries it.
    pub(super) fn name(self, name: String) -> String {
        if self.url { url_encoded(&name) } else { name }
    }

    /// [`Self::name`] of an optional name.
    pub(super) fn maybe(self, name: Option<String>) -> Option<String> {
        name.map(|n| self.name(n))
    }

    /// The `EncodingType` element of the response: present when the request asked for it.
    pub(super) fn element(self) -> Option<EncodingType> {
        self.url
            .then(|| EncodingType::from(EncodingType::URL.to_owned()))
    }
}

/// `name` URL-encoded as S3 encodes key names.
fn url_encoded(name: &str) -> String {
    // Every `%` the encoder writes starts an escape of two hex digits, so `%20` stands only for
    // a space here.
    utf8_percent_encode(name, KEY_SAFE)
        .to_string()
        .replace("%20", "+")
}

// === impl Store ===

impl Store {
    pub(super) async fn list_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = req.input;
        let encoding = Encoding::of(input.encoding_type.as_ref())?;
        let after = match &input.continuation_token {
            Some(token) => Some(token_key(token)?),
            None => None,
        };
        let after = match (after, &input.start_after) {
            (Some(t), Some(s)) => Some(t.max(s.clone())),
            (t, s) => t.or_else(|| s.clone()),
        };
        let page = self
            .page(
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                after,
                input.max_keys,
            )
            .await?;
        let count = page.contents.len() + page.prefixes.len();
        let next = page
            .truncated
            .then(|| page.last.as_ref().map(|k| URL_SAFE_NO_PAD.encode(k)))
            .flatten();
        Ok(S3Response::new(ListObjectsV2Output {
            key_count: Some(i32::try_from(count).unwrap_or(i32::MAX)),
            max_keys: Some(page.max_keys),
            is_truncated: Some(page.truncated),
            contents: objects(page.contents, encoding),
            common_prefixes: common_prefixes(page.prefixes, encoding),
            next_continuation_token: next,
            continuation_token: input.continuation_token,
            delimiter: encoding.maybe(input.delimiter),
            encoding_type: encoding.element(),
            name: Some(input.bucket),
            prefix: encoding.maybe(input.prefix),
            start_after: encoding.maybe(input.start_after),
            ..Default::default()
        }))
    }

    pub(super) async fn list_v1(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let encoding = Encoding::of(input.encoding_type.as_ref())?;
        let page = self
            .page(
                &input.bucket,
                input.prefix.as_deref(),
                input.delimiter.as_deref(),
                input.marker.clone(),
                input.max_keys,
            )
            .await?;
        let next = page.truncated.then_some(page.last).flatten();
        Ok(S3Response::new(ListObjectsOutput {
            max_keys: Some(page.max_keys),
            is_truncated: Some(page.truncated),
            contents: objects(page.contents, encoding),
            common_prefixes: common_prefixes(page.prefixes, encoding),
            next_marker: encoding.maybe(next),
            marker: encoding.maybe(input.marker),
            delimiter: encoding.maybe(input.delimiter),
            encoding_type: encoding.element(),
            name: Some(input.bucket),
            prefix: encoding.maybe(input.prefix),
            ..Default::default()
        }))
    }

    /// The objects and common prefixes of `bucket` under `prefix` that come after `after`, at
    /// most `max_keys` (1,000 at most) of them together, in key order.
    async fn page(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        delimiter: Option<&str>,
        after: Option<String>,
        max_keys: Option<i32>,
    ) -> S3Result<Page> {
        self.bucket_exists(bucket)?;
        let prefix = prefix.unwrap_or_default().to_owned();
        let disk = self.disk.clone();
        let (scan_bucket, scan_prefix) = (bucket.to_owned(), prefix.clone());
        let mut entries = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&disk, &scan_bucket, &scan_prefix, &mut out).map(|()| out)
        })
        .await
        .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?
        .map_err(|e| io_error("listing", &e))?;
        entries.sort_by(|a, b| a.key.cmp(&b.key));

        let max_keys = max_keys.unwrap_or(MAX_KEYS).clamp(0, MAX_KEYS);
        let room = usize::try_from(max_keys).unwrap_or(0);
        let delimiter = delimiter.filter(|d| !d.is_empty());
        let mut page = Page {
            contents: Vec::new(),
            prefixes: Vec::new(),
            truncated: false,
            last: None,
            max_keys,
        };
        for entry in entries {
            let group = delimiter.and_then(|d| {
                let rest = &entry.key[prefix.len()..];
                rest.find(d)
                    .map(|i| entry.key[..prefix.len() + i + d.len()].to_owned())
            });
            let name = group.as_deref().unwrap_or(&entry.key);
            if after.as_deref().is_some_and(|m| name <= m) || page.last.as_deref() == Some(name) {
                continue;
            }
            if page.contents.len() + page.prefixes.len() >= room {
                page.truncated = true;
                break;
            }
            page.last = Some(name.to_owned());
            match group {
                Some(group) => page.prefixes.push(group),
                None => page.contents.push(entry),
            }
        }
        Ok(page)
    }
}

/// The key a continuation token stands for.
fn token_key(token: &str) -> S3Result<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            S3Error::with_message(
                S3ErrorCode::InvalidArgument,
                "The continuation token provided is incorrect",
            )
        })
}

fn objects(entries: Vec<Entry>, encoding: Encoding) -> Option<Vec<Object>> {
    (!entries.is_empty()).then(|| {
        entries
            .into_iter()
            .map(|entry| Object {
                key: Some(encoding.name(entry.key)),
                size: Some(i64::try_from(entry.size).unwrap_or(i64::MAX)),
                last_modified: entry.modified.map(Timestamp::from),
                e_tag: entry.etag.map(ETag::Strong),
                ..Default::default()
            })
            .collect()
    })
}

fn common_prefixes(prefixes: Vec<String>, encoding: Encoding) -> Option<Vec<CommonPrefix>> {
    (!prefixes.is_empty()).then(|| {
        prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(encoding.name(p)),
            })
            .collect()
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// S3's own encoding of key names (as MinIO's `s3URLEncode` mirrors it): letters, digits and
    /// `-_.*/` as they are, a space as `+`, everything else `%XX` of its UTF-8 bytes, `~` too.
    #[test]
    fn keys_are_encoded_as_s3_encodes_them() {
        for (key, encoded) in [
            ("photos/DJI_0001.JPG", "photos/DJI_0001.JPG"),
            ("a b", "a+b"),
            ("a+b", "a%2Bb"),
            ("a%20b", "a%2520b"),
            ("~*-_./", "%7E*-_./"),
            ("é照", "%C3%A9%E7%85%A7"),
            ("q?&=#;,", "q%3F%26%3D%23%3B%2C"),
            ("tab\t", "tab%09"),
        ] {
            assert_eq!(url_encoded(key), encoded, "{key:?}");
        }
    }

    #[test]
    fn only_url_encoding_is_accepted_and_a_token_is_a_key() {
        assert!(Encoding::of(None).is_ok_and(|e| !e.url));
        assert!(Encoding::of(Some(&EncodingType::from("url".to_owned()))).is_ok_and(|e| e.url));
        assert!(Encoding::of(Some(&EncodingType::from("base64".to_owned()))).is_err());
        let token = URL_SAFE_NO_PAD.encode("ws/a b+c");
        assert_eq!(token_key(&token).ok().as_deref(), Some("ws/a b+c"));
        assert!(token_key("not base64!").is_err());
    }
}
