//! Session policies and session names for each provider: what a credential may do is decided
//! here, once, for every upstream.
//!
//! The policy grants writing under `bucket/prefix/*` only — PutObject (which also covers creating,
//! uploading parts of and completing a multipart upload), aborting a multipart upload and listing
//! its parts — and nothing else: no reads, no deletes, no bucket listing, and never `prefix*`
//! (which would also match `prefix-other/…`). The effective permissions are the role's own policy
//! intersected with this one, so the role must allow at least these actions.

use serde_json::json;

use crate::domain::Scope;

/// AWS (and MinIO) limit on a session policy's plaintext.
pub const AWS_POLICY_MAX: usize = 2048;
/// Alibaba Cloud limit on a session policy, as the older (stricter) documentation states it.
pub const ALI_POLICY_MAX: usize = 1024;
/// AWS `RoleSessionName`: 2-64 characters of `[\w+=,.@-]`.
pub const AWS_SESSION_NAME_MAX: usize = 64;
/// Alibaba Cloud `RoleSessionName`: 2-64 characters of `[A-Za-z0-9.@_-]` (2-32 in older
/// documentation: we stay within 32).
pub const ALI_SESSION_NAME_MAX: usize = 32;

/// The AWS/MinIO session policy for a scope (compact JSON, no `Sid`).
pub fn aws(scope: &Scope) -> String {
    json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"],
            "Resource": [format!("arn:aws:s3:::{}/{}/*", scope.bucket, scope.prefix)],
        }],
    })
    .to_string()
}

/// The Alibaba Cloud OSS session policy for a scope.
pub fn oss(scope: &Scope) -> String {
    json!({
        "Version": "1",
        "Statement": [{
            "Effect": "Allow",
            "Action": ["oss:PutObject", "oss:AbortMultipartUpload", "oss:ListParts"],
            "Resource": [format!("acs:oss:*:*:{}/{}/*", scope.bucket, scope.prefix)],
        }],
    })
    .to_string()
}

/// A `RoleSessionName` valid for every provider, at most `max` characters of
/// `[A-Za-z0-9.@_-]`: `stsgate-` and what the credential is for — the device's key for a
/// per-device credential, else the prefix. When that does not fit or holds other characters,
/// its safe characters are cut to fit and a hash of the whole is appended, so that two scopes
/// never share a name (a name cut short would, for long workspace ids). It shows in the cloud
/// account's audit trail (CloudTrail, ActionTrail).
pub fn session_name(scope: &Scope, max: usize) -> String {
    let of = scope
        .device
        .as_ref()
        .map_or(&*scope.prefix, |d| d.key.as_str());
    let safe = |c: char| c.is_ascii_alphanumeric() || ".@_-".contains(c);
    let name = format!("stsgate-{of}");
    if name.len() <= max && of.chars().all(safe) {
        return name;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, of.as_bytes());
    let hash: String = digest.as_ref()[..SESSION_HASH_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let keep = max.saturating_sub(SESSION_HASH_HEX + 1);
    let readable: String = name
        .chars()
        .map(|c| if safe(c) { c } else { '-' })
        .take(keep)
        .collect();
    format!("{readable}-{hash}")
}

/// Hex digits of the hash a changed session name ends with (48 bits).
const SESSION_HASH_HEX: usize = 12;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::MAX_WORKSPACE_LEN;

    fn scope(prefix: &str) -> Scope {
        Scope {
            bucket: "media".into(),
            prefix: prefix.into(),
            device: None,
        }
    }

    #[test]
    fn aws_policy_is_exactly_write_under_the_prefix() {
        assert_eq!(
            aws(&scope("ws1")),
            r#"{"Statement":[{"Action":["s3:PutObject","s3:AbortMultipartUpload","s3:ListMultipartUploadParts"],"Effect":"Allow","Resource":["arn:aws:s3:::media/ws1/*"]}],"Version":"2012-10-17"}"#
        );
    }

    #[test]
    fn oss_policy_is_exactly_write_under_the_prefix() {
        assert_eq!(
            oss(&scope("media/ws1")),
            r#"{"Statement":[{"Action":["oss:PutObject","oss:AbortMultipartUpload","oss:ListParts"],"Effect":"Allow","Resource":["acs:oss:*:*:media/media/ws1/*"]}],"Version":"1"}"#
        );
    }

    #[test]
    fn policies_fit_the_providers_limits_for_the_longest_scopes() {
        // The longest bucket (63) and a template with a long literal part around the longest id.
        let long = Scope {
            bucket: "b".repeat(63).into(),
            prefix: format!(
                "{}/{}/{}",
                "p".repeat(100),
                "w".repeat(MAX_WORKSPACE_LEN),
                "d".repeat(crate::domain::MAX_DEVICE_KEY_LEN)
            )
            .into(),
            device: None,
        };
        assert!(aws(&long).len() <= AWS_POLICY_MAX, "{}", aws(&long).len());
        assert!(oss(&long).len() <= ALI_POLICY_MAX, "{}", oss(&long).len());
    }

    #[test]
    fn policies_never_grant_a_bare_prefix_wildcard() {
        for policy in [aws(&scope("abc")), oss(&scope("abc"))] {
            assert!(
                policy.contains("/abc/*\"") && !policy.contains("abc*"),
                "{policy}"
            );
            for forbidden in [
                "GetObject",
                "DeleteObject",
                "ListBucket",
                "\"s3:*\"",
                "\"oss:*\"",
            ] {
                assert!(!policy.contains(forbidden), "{policy}");
            }
        }
    }

    #[test]
    fn session_names_are_valid_everywhere_and_never_shared() {
        let uuid = "e3dea0f5-37f2-4d79-ae58-490af3228069";
        assert_eq!(
            session_name(&scope(uuid), AWS_SESSION_NAME_MAX),
            format!("stsgate-{uuid}")
        );
        let changed = session_name(&scope("media/ws 1+x"), AWS_SESSION_NAME_MAX);
        assert!(changed.starts_with("stsgate-media-ws-1-x-"), "{changed}");
        let long = |tail: &str| scope(&format!("{}/{uuid}{tail}", "x".repeat(80)));
        let device = |id: &str| Scope {
            device: Some(crate::domain::Principal {
                key: crate::domain::DeviceKey::new(id),
                front: "mqtt",
                workspace: crate::domain::WorkspaceId::parse("ws").expect("id"),
            }),
            ..scope("ws")
        };
        for max in [AWS_SESSION_NAME_MAX, ALI_SESSION_NAME_MAX] {
            let names = [
                session_name(&long("a"), max),
                session_name(&long("b"), max),
                // a uuid (36) does not fit Alibaba's 32 with `stsgate-`
                session_name(&scope(uuid), max),
                session_name(&scope("e3dea0f5-37f2-4d79-ae58-490af3228070"), max),
                session_name(&device("4TADKAQ000002J"), max),
                session_name(&device("4TADKAQ000002K"), max),
                session_name(&device(&"x".repeat(70)), max),
                session_name(&device(&"x".repeat(71)), max),
            ];
            for name in &names {
                assert!((2..=max).contains(&name.len()), "{name}");
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".@_-".contains(c)),
                    "{name}"
                );
            }
            let distinct: std::collections::HashSet<_> = names.iter().collect();
            assert_eq!(distinct.len(), names.len(), "{names:?}");
        }
        assert_eq!(
            session_name(&device("4TADKAQ000002J"), ALI_SESSION_NAME_MAX),
            "stsgate-4TADKAQ000002J",
            "a serial number is named as it is"
        );
    }
}
