//! Receiving a request body: streamed into a temporary file while its MD5 and every checksum the
//! client asked for are computed, then verified against `Content-MD5`, the `x-amz-checksum-*`
//! headers and the trailers of an aws-chunked body, then fsynced. Only a body that passed all of
//! this comes back as [`Received`]; anything else leaves nothing behind (the temporary file goes
//! with the error) and so cannot touch the object or part it was meant to replace.

use futures_util::StreamExt;
use s3s::checksum::ChecksumHasher;
use s3s::crypto::{Checksum as _, Md5};
use s3s::dto::{self, ChecksumAlgorithm, StreamingBlob};
use s3s::{S3Error, S3ErrorCode, S3Result, TrailingHeaders};
use tokio::io::AsyncWriteExt;

use super::disk::{Disk, Temp, io_error};
use super::meta::Checksums;

/// Write buffer: large enough that a 1 GiB upload costs a few thousand write calls.
const BUFFER: usize = 1 << 20;
/// S3's largest PutObject body and largest part: 5 GiB (AWS S3 API reference, PutObject and
/// UploadPart; "Amazon S3 multipart upload limits").
pub const MAX_BODY: u64 = 5 << 30;

/// What the client declared about the body.
#[derive(Debug, Default)]
pub struct Expected {
    /// `Content-Length`, when sent.
    pub length: Option<i64>,
    /// `Content-MD5` (base64).
    pub content_md5: Option<String>,
    /// `x-amz-checksum-*` headers.
    pub checksums: dto::Checksum,
    /// `x-amz-sdk-checksum-algorithm`: a checksum whose value may come in a trailer.
    pub algorithm: Option<ChecksumAlgorithm>,
}

/// A verified, fsynced body in a temporary file.
#[derive(Debug)]
pub struct Received {
    /// The file (removed if dropped unpublished).
    pub temp: Temp,
    /// Its MD5.
    pub md5: [u8; 16],
    /// The checksums the client sent, all verified.
    pub checksums: Checksums,
}

/// `EntityTooLarge`, naming S3's limit.
fn too_large() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::EntityTooLarge,
        "an object or part is at most 5 GiB (5368709120 bytes)",
    )
}

/// Streams `body` to a temporary file and verifies it (see the module docs).
pub async fn receive(
    disk: &Disk,
    body: Option<StreamingBlob>,
    expected: Expected,
    trailers: Option<TrailingHeaders>,
) -> S3Result<Received> {
    receive_at_most(disk, body, expected, trailers, MAX_BODY).await
}

/// [`receive`], with bodies bounded at `max` bytes.
async fn receive_at_most(
    disk: &Disk,
    body: Option<StreamingBlob>,
    expected: Expected,
    trailers: Option<TrailingHeaders>,
    max: u64,
) -> S3Result<Received> {
    // Refused from the headers, before a byte is read or a file created.
    if expected
        .length
        .is_some_and(|length| u64::try_from(length).is_ok_and(|l| l > max))
    {
        return Err(too_large());
    }
    let mut body = body.ok_or_else(|| S3Error::new(S3ErrorCode::IncompleteBody))?;
    let content_md5 = expected
        .content_md5
        .as_deref()
        .map(|b64| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .ok()
                .and_then(|d| <[u8; 16]>::try_from(d).ok())
                .ok_or_else(|| {
                    S3Error::with_message(S3ErrorCode::InvalidDigest, "Content-MD5 is not an MD5")
                })
        })
        .transpose()?;
    let mut hasher = hasher_for(&expected)?;
    let (temp, file) = disk.temp().map_err(|e| io_error("upload", &e))?;
    let mut writer = tokio::io::BufWriter::with_capacity(BUFFER, tokio::fs::File::from_std(file));
    let mut md5 = Md5::new();
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::debug!(error = %e, "embedded store: request body failed");
            S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                "the request body was cut short",
            )
        })?;
        size += chunk.len() as u64;
        // A body of no declared length (chunked) is held to the same bound as it arrives.
        if size > max {
            return Err(too_large());
        }
        md5.update(&chunk);
        hasher.update(&chunk);
        writer
            .write_all(&chunk)
            .await
            .map_err(|e| io_error("upload", &e))?;
    }
    if let Some(length) = expected.length
        && u64::try_from(length).ok() != Some(size)
    {
        return Err(S3Error::with_message(
            S3ErrorCode::IncompleteBody,
            "the body is not as long as Content-Length says",
        ));
    }
    writer.flush().await.map_err(|e| io_error("upload", &e))?;
    let md5 = md5.finalize();
    if content_md5.is_some_and(|want| want != md5) {
        return Err(S3Error::with_message(
            S3ErrorCode::BadDigest,
            "the Content-MD5 you specified did not match what was received",
        ));
    }
    let mut claimed = expected.checksums;
    if let Some(trailers) = trailers.and_then(|t| t.take()) {
        for (name, slot) in [
            ("x-amz-checksum-crc32", &mut claimed.checksum_crc32),
            ("x-amz-checksum-crc32c", &mut claimed.checksum_crc32c),
            ("x-amz-checksum-crc64nvme", &mut claimed.checksum_crc64nvme),
            ("x-amz-checksum-sha1", &mut claimed.checksum_sha1),
            ("x-amz-checksum-sha256", &mut claimed.checksum_sha256),
        ] {
            if let Some(value) = trailers.get(name) {
                let value = value.to_str().map_err(|_| {
                    S3Error::with_message(
                        S3ErrorCode::InvalidArgument,
                        "unreadable checksum trailer",
                    )
                })?;
                *slot = Some(value.to_owned());
            }
        }
    }
    let computed = hasher.finalize();
    for (name, want, got) in [
        ("CRC32", &claimed.checksum_crc32, &computed.checksum_crc32),
        (
            "CRC32C",
            &claimed.checksum_crc32c,
            &computed.checksum_crc32c,
        ),
        (
            "CRC64NVME",
            &claimed.checksum_crc64nvme,
            &computed.checksum_crc64nvme,
        ),
        ("SHA1", &claimed.checksum_sha1, &computed.checksum_sha1),
        (
            "SHA256",
            &claimed.checksum_sha256,
            &computed.checksum_sha256,
        ),
    ] {
        if let Some(want) = want
            && Some(want) != got.as_ref()
        {
            return Err(S3Error::with_message(
                S3ErrorCode::BadDigest,
                format!("the {name} checksum you specified did not match what was received"),
            ));
        }
    }
    let file = writer.into_inner();
    file.sync_all().await.map_err(|e| io_error("upload", &e))?;
    Ok(Received {
        temp,
        md5,
        checksums: Checksums::from_dto(computed),
    })
}

/// A hasher for every checksum the client sent or announced.
fn hasher_for(expected: &Expected) -> S3Result<ChecksumHasher> {
    let c = &expected.checksums;
    let mut hasher = ChecksumHasher::default();
    let algorithm = expected.algorithm.as_ref().map(ChecksumAlgorithm::as_str);
    let wants = |value: &Option<String>, name: &str| value.is_some() || algorithm == Some(name);
    if wants(&c.checksum_crc32, ChecksumAlgorithm::CRC32) {
        hasher.crc32 = Some(Default::default());
    }
    if wants(&c.checksum_crc32c, ChecksumAlgorithm::CRC32C) {
        hasher.crc32c = Some(Default::default());
    }
    if wants(&c.checksum_crc64nvme, ChecksumAlgorithm::CRC64NVME) {
        hasher.crc64nvme = Some(Default::default());
    }
    if wants(&c.checksum_sha1, ChecksumAlgorithm::SHA1) {
        hasher.sha1 = Some(Default::default());
    }
    if wants(&c.checksum_sha256, ChecksumAlgorithm::SHA256) {
        hasher.sha256 = Some(Default::default());
    }
    if let Some(name) = algorithm
        && ![
            ChecksumAlgorithm::CRC32,
            ChecksumAlgorithm::CRC32C,
            ChecksumAlgorithm::CRC64NVME,
            ChecksumAlgorithm::SHA1,
            ChecksumAlgorithm::SHA256,
        ]
        .contains(&name)
    {
        return Err(S3Error::with_message(
            S3ErrorCode::InvalidArgument,
            "unknown checksum algorithm",
        ));
    }
    Ok(hasher)
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(chunks: usize) -> Option<StreamingBlob> {
        let chunks =
            (0..chunks).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"0123456789")));
        Some(StreamingBlob::wrap(futures_util::stream::iter(chunks)))
    }

    fn temp_files(disk: &Disk) -> usize {
        std::fs::read_dir(disk.temp_path().parent().expect("area"))
            .map(|d| d.flatten().filter(|e| e.file_name() != "lock").count())
            .unwrap_or(0)
    }

    /// A body of no declared length (chunked) is held to the bound as it arrives, and leaves no
    /// temporary file behind; one that stays within it is received whole.
    #[tokio::test]
    async fn a_chunked_body_past_the_bound_is_entity_too_large() {
        let dir = tempfile::tempdir().expect("dir");
        let disk = Disk::open(dir.path()).expect("disk");
        let refused = receive_at_most(&disk, stream(5), Expected::default(), None, 45).await;
        assert_eq!(
            refused.err().map(|e| e.code().clone()),
            Some(S3ErrorCode::EntityTooLarge)
        );
        assert_eq!(temp_files(&disk), 0);
        let announced = Expected {
            length: Some(46),
            ..Expected::default()
        };
        let refused = receive_at_most(&disk, stream(0), announced, None, 45).await;
        assert_eq!(
            refused.err().map(|e| e.code().clone()),
            Some(S3ErrorCode::EntityTooLarge)
        );
        let received = receive_at_most(&disk, stream(4), Expected::default(), None, 45)
            .await
            .expect("within the bound");
        assert_eq!(
            std::fs::metadata(received.temp.path()).expect("temp").len(),
            40
        );
    }
}
