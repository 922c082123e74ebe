//! Responses and errors in the shapes Alibaba documents (AssumeRole API reference and error
//! codes); request structure. The signature itself is verified independently in `tests/aliyun.rs`.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::domain::Scope;

fn request() -> IssueRequest {
    IssueRequest {
        scope: Scope {
            bucket: "media".into(),
            prefix: "e3dea0f5-37f2-4d79-ae58-490af3228069".into(),
            device: None,
        },
        duration: Duration::from_secs(3600),
    }
}

#[test]
fn the_documented_success_response_parses() {
    let body = br#"{"RequestId":"6894B13B-6D71-4EF5-88FA-F32781734A7F","AssumedRoleUser":{"Arn":"acs:ram::123456789012****:role/adminrole/alice","AssumedRoleId":"34458433936495****:alice"},"Credentials":{"SecurityToken":"********","AccessKeyId":"STS.L4aBSCSJVMuKg5U1****","AccessKeySecret":"wyLTSmsyPGP1ohvvw8xYgB29dlGI8KMiH2pK****","Expiration":"2015-04-09T11:52:19Z"}}"#;
    let c = parse_response(200, body).expect("credentials");
    assert_eq!(c.access_key_id, "STS.L4aBSCSJVMuKg5U1****");
    assert_eq!(
        c.secret_access_key.expose(),
        "wyLTSmsyPGP1ohvvw8xYgB29dlGI8KMiH2pK****"
    );
    assert_eq!(c.session_token.expose(), "********");
    assert_eq!(
        c.expiration,
        UNIX_EPOCH + Duration::from_secs(1_428_580_339)
    );
}

#[test]
fn documented_errors_are_classified() {
    let err = |status: u16, code: &str| {
        let body = format!(
            r#"{{"RequestId":"7A5B26D9-4E9B-4B4C-A8FA-3E4A1B8E5D2C","HostId":"sts.aliyuncs.com","Code":"{code}","Message":"m","Recommend":"https://api.aliyun.com/troubleshoot"}}"#
        );
        parse_response(status, body.as_bytes()).expect_err("an error")
    };
    assert!(matches!(err(400, "Throttling.User"), Error::Throttled));
    assert!(matches!(err(429, "Throttling.User"), Error::Throttled));
    assert!(matches!(err(400, "Throttling"), Error::Throttled));
    let denied = err(403, "NoPermission").to_string();
    assert!(
        denied.contains("NoPermission")
            && denied.contains("sts:AssumeRole")
            && denied.contains("7A5B26D9"),
        "{denied}"
    );
    assert!(
        err(404, "EntityNotExist.Role")
            .to_string()
            .contains("does not exist")
    );
    assert!(
        err(400, "InvalidParameter.DurationSeconds")
            .to_string()
            .contains("storage.duration")
    );
    assert!(
        err(400, "InvalidTimeStamp.Expired")
            .to_string()
            .contains("clock")
    );
    assert!(
        err(403, "InvalidAccessKeyId.NotFound")
            .to_string()
            .contains("access key")
    );
    assert!(matches!(err(500, "InternalError"), Error::Unavailable(_)));
    assert!(matches!(
        parse_response(502, b"<html>bad gateway</html>"),
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        parse_response(200, b"{}"),
        Err(Error::Unavailable(_))
    ));
    assert!(matches!(
        parse_response(200, b"not json"),
        Err(Error::Unavailable(_))
    ));
}

#[test]
fn the_request_carries_the_documented_parameters() {
    let stamp = Stamp {
        nonce: "3ee8c1b8-83d3-44af-a94f-4e0ad82fd6cf".into(),
        timestamp: "2016-02-23T12:46:24Z".into(),
    };
    let signed = build_request(
        "testid",
        &Secret::new("testsecret"),
        "acs:ram::123456789012:role/stsgate",
        None,
        &request(),
        &stamp,
    );
    let names: Vec<&str> = signed.query.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "AccessKeyId",
            "Action",
            "Format",
            "SignatureMethod",
            "SignatureNonce",
            "SignatureVersion",
            "Timestamp",
            "Version",
            "Signature"
        ]
    );
    let get = |list: &[(String, String)], k: &str| {
        list.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get(&signed.query, "Action"), "AssumeRole");
    assert_eq!(get(&signed.query, "Version"), "2015-04-01");
    assert_eq!(
        get(&signed.form, "RoleArn"),
        "acs:ram::123456789012:role/stsgate"
    );
    assert_eq!(get(&signed.form, "DurationSeconds"), "3600");
    assert_eq!(get(&signed.form, "Policy"), policy::oss(&request().scope));
    let session = get(&signed.form, "RoleSessionName");
    assert!(
        session.len() <= 32 && session.starts_with("stsgate-e3dea0f5"),
        "{session}"
    );
    // Same inputs, same signature; another nonce, another signature.
    let again = build_request(
        "testid",
        &Secret::new("testsecret"),
        "acs:ram::123456789012:role/stsgate",
        None,
        &request(),
        &stamp,
    );
    assert_eq!(signed, again);
    let other = Stamp {
        nonce: "x".into(),
        ..stamp
    };
    assert_ne!(
        get(&signed.query, "Signature"),
        get(
            &build_request(
                "testid",
                &Secret::new("testsecret"),
                "acs:ram::123456789012:role/stsgate",
                None,
                &request(),
                &other
            )
            .query,
            "Signature"
        )
    );
}

#[test]
fn an_external_id_travels_in_the_signed_form() {
    let stamp = Stamp {
        nonce: "n".into(),
        timestamp: "2016-02-23T12:46:24Z".into(),
    };
    let role = "acs:ram::123456789012:role/stsgate";
    let secret = Secret::new("testsecret");
    let with = build_request(
        "testid",
        &secret,
        role,
        Some("acme-7f3a"),
        &request(),
        &stamp,
    );
    let without = build_request("testid", &secret, role, None, &request(), &stamp);
    let names: Vec<&str> = with.form.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "DurationSeconds",
            "ExternalId",
            "Policy",
            "RoleArn",
            "RoleSessionName"
        ]
    );
    assert!(
        with.form
            .contains(&("ExternalId".to_owned(), "acme-7f3a".to_owned()))
    );
    assert!(!without.form.iter().any(|(k, _)| k == "ExternalId"));
    // The signature covers it.
    let signature = |r: &SignedRequest| r.query.last().cloned();
    assert_ne!(signature(&with), signature(&without));
}
