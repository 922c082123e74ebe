//! Field-by-field conversions between s3s's input and output types that share field names but no
//! trait (PutObject and UploadPart inputs, the four outputs that carry checksums). Macros, because
//! the s3s types are generated structs with nothing in common to write a function against.

/// The [`super::body::Expected`] of an input that carries a body (`PutObjectInput`,
/// `UploadPartInput`); moves its fields.
macro_rules! expected_of {
    ($input:expr) => {
        $crate::embedded::store::body::Expected {
            length: $input.content_length,
            content_md5: $input.content_md5,
            checksums: s3s::dto::Checksum {
                checksum_crc32: $input.checksum_crc32,
                checksum_crc32c: $input.checksum_crc32c,
                checksum_crc64nvme: $input.checksum_crc64nvme,
                checksum_sha1: $input.checksum_sha1,
                checksum_sha256: $input.checksum_sha256,
                ..Default::default()
            },
            algorithm: $input.checksum_algorithm,
        }
    };
}

/// The [`super::meta::Headers`] an object is created with (`PutObjectInput`,
/// `CreateMultipartUploadInput`); moves its fields.
macro_rules! headers_of {
    ($input:expr) => {
        $crate::embedded::store::meta::Headers {
            content_type: $input.content_type.map(|c| c.to_string()),
            content_encoding: $input.content_encoding,
            content_disposition: $input.content_disposition,
            content_language: $input.content_language,
            cache_control: $input.cache_control,
            user: $input.metadata.unwrap_or_default().into_iter().collect(),
        }
    };
}

/// `$ty { $fields, the five checksum fields from $c, ..Default::default() }`.
macro_rules! with_checksums {
    ($ty:ident { $($field:ident: $value:expr),* $(,)? }, $c:expr) => {{
        let c: s3s::dto::Checksum = $c;
        $ty {
            $($field: $value,)*
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }
    }};
}

/// A Get/HeadObject output: `$fields`, then the ETag, stored headers and checksums `$c` of `$meta`.
macro_rules! object_output {
    ($ty:ident { $($field:ident: $value:expr),* $(,)? }, $meta:expr, $c:expr) => {{
        let meta: $crate::embedded::store::meta::Meta = $meta;
        with_checksums!(
            $ty {
                $($field: $value,)*
                e_tag: Some(s3s::dto::ETag::Strong(meta.etag)),
                metadata: meta.headers.user_dto(),
                content_type: meta.headers.content_type.as_deref().and_then(|c| c.parse().ok()),
                content_encoding: meta.headers.content_encoding,
                content_disposition: meta.headers.content_disposition,
                content_language: meta.headers.content_language,
                cache_control: meta.headers.cache_control,
            },
            $c
        )
    }};
}
