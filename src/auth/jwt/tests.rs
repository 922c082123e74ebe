//! Tokens here were produced outside this crate (Python's hmac/hashlib, the DJI demo's claim
//! layout and its documented secret `CloudApiSample`), so they test our verifier against an
//! independent signer rather than against our own `mint`.

const DEMO_VALID: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjoiYmU3YzZjM2QtYWZlOS00YmU0LWI5ZWItYzU1MDY2YzA5MTRlIiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6IjIiLCJ3b3Jrc3BhY2VfaWQiOiJlM2RlYTBmNS0zN2YyLTRkNzktYWU1OC00OTBhZjMyMjgwNjkiLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.s7DPoXE8ng5c1QPU9OlavSRL7J7Mxfri7n5VggdJAOg";
const DEMO_EXPIRED: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjoiYmU3YzZjM2QtYWZlOS00YmU0LWI5ZWItYzU1MDY2YzA5MTRlIiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6IjIiLCJ3b3Jrc3BhY2VfaWQiOiJlM2RlYTBmNS0zN2YyLTRkNzktYWU1OC00OTBhZjMyMjgwNjkiLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDg2NDAwfQ.YqioEEnJEheLhFGzTyylWPPRUl6zB-OYfuvJpiqgjFM";
const DEMO_NOT_YET: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjoiYmU3YzZjM2QtYWZlOS00YmU0LWI5ZWItYzU1MDY2YzA5MTRlIiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6IjIiLCJ3b3Jrc3BhY2VfaWQiOiJlM2RlYTBmNS0zN2YyLTRkNzktYWU1OC00OTBhZjMyMjgwNjkiLCJuYmYiOjQwMDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.JqV6eAprfUR2MyOlhAsYFjmvZnDfjhFiPjNpo782I7A";
const DEMO_NO_WORKSPACE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjoiYmU3YzZjM2QtYWZlOS00YmU0LWI5ZWItYzU1MDY2YzA5MTRlIiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6IjIiLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.p-qoNb936R1jrkwwlvub57hEGrdtLS4OPIAkt0SeoEQ";
const DEMO_OTHER_SECRET: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjoiYmU3YzZjM2QtYWZlOS00YmU0LWI5ZWItYzU1MDY2YzA5MTRlIiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6IjIiLCJ3b3Jrc3BhY2VfaWQiOiJlM2RlYTBmNS0zN2YyLTRkNzktYWU1OC00OTBhZjMyMjgwNjkiLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.sMvs-SkJg6vrxxMMlo6nURoNqxUJPN7MpIrjYH8Eoe8";
const ALG_NONE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJub25lIn0.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjoiYmU3YzZjM2QtYWZlOS00YmU0LWI5ZWItYzU1MDY2YzA5MTRlIiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6IjIiLCJ3b3Jrc3BhY2VfaWQiOiJlM2RlYTBmNS0zN2YyLTRkNzktYWU1OC00OTBhZjMyMjgwNjkiLCJuYmYiOjE3MDAwMDAwMDAsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjo0MTAyNDQ0ODAwfQ.";
const NUMERIC_CLAIMS: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJDbG91ZEFwaVNhbXBsZSIsImlzcyI6IkRKSSIsImlkIjo0MiwidXNlcm5hbWUiOiJwaWxvdCIsInVzZXJfdHlwZSI6Miwid29ya3NwYWNlX2lkIjoiZTNkZWEwZjUtMzdmMi00ZDc5LWFlNTgtNDkwYWYzMjI4MDY5IiwibmJmIjoxNzAwMDAwMDAwLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6NDEwMjQ0NDgwMH0.BGnCxLBsyMUM4wInyGTBM2pc9d2B_-nxSGCJTRMPUY4";

use super::*;

fn verifier(issuer: Option<&str>) -> Verifier {
    let config = AuthConfig {
        issuer: issuer.map(str::to_owned),
        ..AuthConfig::default()
    };
    Verifier::new(&Secret::new("CloudApiSample"), &config).expect("verifier")
}

#[tokio::test]
async fn dji_demo_tokens_verify() {
    let pilot = verifier(None)
        .verify(DEMO_VALID)
        .await
        .expect("valid demo token");
    assert_eq!(pilot.workspace(), "e3dea0f5-37f2-4d79-ae58-490af3228069");
    assert_eq!(pilot.subject(), "pilot");
    assert_eq!(pilot.exp, 4_102_444_800);
    let claims = verifier(None).verify_now(DEMO_VALID).await.expect("valid");
    assert_eq!(claims.username.as_deref(), Some("pilot"));
    assert_eq!(claims.user_type.as_deref(), Some("2"));
    assert_eq!(claims.subject(), "pilot");
    assert!(verifier(Some("DJI")).verify(DEMO_VALID).await.is_ok());
}

#[tokio::test]
async fn numeric_custom_claims_are_tolerated() {
    let claims = verifier(None)
        .verify_now(NUMERIC_CLAIMS)
        .await
        .expect("valid");
    assert_eq!(claims.user_type.as_deref(), Some("2"));
    assert_eq!(claims.id.as_deref(), Some("42"));
}

#[tokio::test]
async fn every_failure_is_classified() {
    let v = verifier(None);
    assert_eq!(v.verify("").await.err(), Some(Error::Missing));
    assert_eq!(v.verify(DEMO_EXPIRED).await.err(), Some(Error::Expired));
    assert_eq!(v.verify(DEMO_NOT_YET).await.err(), Some(Error::NotYetValid));
    assert_eq!(
        v.verify(DEMO_OTHER_SECRET).await.err(),
        Some(Error::BadSignature)
    );
    assert!(
        matches!(v.verify(DEMO_NO_WORKSPACE).await, Err(Error::Claims(m)) if m.contains("workspace_id"))
    );
    assert!(matches!(v.verify(ALG_NONE).await, Err(Error::Malformed(_))));
    assert!(matches!(v.verify("abc").await, Err(Error::Malformed(_))));
    assert!(matches!(v.verify("a.b.c").await, Err(Error::Malformed(_))));
    assert_eq!(
        verifier(Some("stsgate")).verify(DEMO_VALID).await.err(),
        Some(Error::WrongIssuer)
    );
}

#[tokio::test]
async fn tampered_payloads_fail_the_signature() {
    let mut parts: Vec<String> = DEMO_VALID.split('.').map(str::to_owned).collect();
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        br#"{"workspace_id":"other","exp":4102444800}"#,
    );
    parts[1] = forged;
    assert_eq!(
        verifier(None).verify(&parts.join(".")).await.err(),
        Some(Error::BadSignature)
    );
}

#[tokio::test]
async fn minted_tokens_verify_and_carry_the_workspace() {
    let secret = Secret::new("CloudApiSample");
    let token = mint(&secret, "ws-1", "ops", Duration::from_secs(60), Some("DJI")).expect("minted");
    let pilot = verifier(Some("DJI"))
        .verify(&token)
        .await
        .expect("verifies");
    assert_eq!(pilot.workspace(), "ws-1");
    assert_eq!(pilot.subject(), "ops");
    let claims = verifier(Some("DJI"))
        .verify_now(&token)
        .await
        .expect("verifies");
    assert_eq!(claims.exp - claims.iat.unwrap_or_default(), 60);
    let expired = mint(&secret, "ws-1", "ops", Duration::ZERO, None).expect("minted");
    let strict = Verifier::new(
        &secret,
        &AuthConfig {
            leeway: Duration::ZERO,
            ..AuthConfig::default()
        },
    )
    .expect("verifier");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(strict.verify(&expired).await.err(), Some(Error::Expired));
}

#[tokio::test]
async fn errors_never_echo_the_token() {
    for token in [
        DEMO_EXPIRED,
        DEMO_OTHER_SECRET,
        ALG_NONE,
        "garbage.token.value",
    ] {
        let message = verifier(None)
            .verify(token)
            .await
            .expect_err("refused")
            .to_string();
        assert!(
            !message.contains(token) && !message.contains("eyJ"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_remembered_token_still_expires_on_time() {
    let config = AuthConfig {
        leeway: Duration::ZERO,
        ..AuthConfig::default()
    };
    let secret = Secret::new("CloudApiSample");
    let verifier = Verifier::new(&secret, &config).expect("verifier");
    let token = mint(&secret, "ws-short", "pilot", Duration::from_secs(1), None).expect("token");
    assert!(verifier.verify(&token).await.is_ok());
    assert!(verifier.verify(&token).await.is_ok(), "remembered");
    // A token that was never verified is not taken from the memory of another.
    let tampered = format!("{}x", &token[..token.len() - 1]);
    assert!(verifier.verify(&tampered).await.is_err());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(matches!(verifier.verify(&token).await, Err(Error::Expired)));
}

#[tokio::test]
async fn a_token_that_lives_longer_than_the_maximum_is_refused() {
    let config = AuthConfig {
        max_token_lifetime: Some(Duration::from_secs(24 * 3600)),
        ..AuthConfig::default()
    };
    let secret = Secret::new("CloudApiSample");
    let strict = Verifier::new(&secret, &config).expect("verifier");
    // The demo token is valid until 2100.
    match strict.verify(DEMO_VALID).await {
        Err(Error::Claims(why)) => assert!(why.contains("max_token_lifetime"), "{why}"),
        other => panic!("refused for its lifetime, got {other:?}"),
    }
    let day = mint(&secret, "ws", "pilot", Duration::from_secs(3600), None).expect("minted");
    assert!(strict.verify(&day).await.is_ok(), "an hour is within a day");
    assert!(
        verifier(None).verify(DEMO_VALID).await.is_ok(),
        "unset: any"
    );
}

#[tokio::test]
async fn a_fleet_of_twenty_thousand_pilots_is_remembered_within_its_bound() {
    let secret = Secret::new("CloudApiSample");
    let verifier = Verifier::new(&secret, &AuthConfig::default()).expect("verifier");
    let tokens: Vec<String> = (0..20_000)
        .map(|i| {
            mint(
                &secret,
                "ws",
                &format!("pilot-{i}"),
                Duration::from_secs(3600),
                None,
            )
            .expect("token")
        })
        .collect();
    for token in &tokens {
        verifier.verify(token).await.expect("valid");
    }
    // Every pilot asks again: each token is answered from the memory, none verified anew (the
    // memory used to be cleared at 10,000 tokens, so a larger fleet was verified every time).
    let forgotten = tokens
        .iter()
        .filter(|t| verifier.verified.get(verifier.key_of(t)).is_none())
        .count();
    assert_eq!(forgotten, 0, "of 20,000 tokens");
    // Tokens of 64 KiB each are remembered in 32 bytes like any other (their subject is cut, so
    // read by parsing the payload again), and answer the same from the memory.
    let large = "x".repeat(64 << 10);
    for i in 0..40 {
        let token = mint(
            &secret,
            "ws",
            &format!("{large}{i}"),
            Duration::from_secs(3600),
            None,
        )
        .expect("token");
        let first = verifier.verify(&token).await.expect("valid");
        assert_eq!(verifier.verify(&token).await.expect("remembered"), first);
    }
    assert_eq!(verifier.verified.len(), 20_040);
}

/// Whatever a token's claims look like, the pilot read from the memory is the one its
/// verification found: the spans kept point at the same bytes, and a value they cannot point at
/// is parsed again.
#[tokio::test]
async fn a_remembered_token_reads_as_when_it_was_verified() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let exp = 4_102_444_800_u64;
    let long = "ü".repeat(100);
    let payloads = [
        serde_json::json!({"workspace_id": "e3dea0f5-37f2-4d79-ae58-490af3228069", "username": "pilot", "exp": exp}),
        serde_json::json!({"workspace_id": "ws", "exp": exp}),
        serde_json::json!({"workspace_id": "ws", "username": "-", "exp": exp}),
        serde_json::json!({"workspace_id": "ws", "username": "", "exp": exp}),
        serde_json::json!({"workspace_id": "ws", "username": null, "id": 42, "exp": exp}),
        serde_json::json!({"workspace_id": "ws", "id": 1.5e3, "exp": exp}),
        serde_json::json!({"workspace_id": "ws", "username": true, "exp": exp}),
        serde_json::json!({"workspace_id": "ws", "username": {"a": 1}, "sub": "s", "exp": exp}),
        serde_json::json!({"workspace_id": "w\"s\n", "username": "a\u{0}b", "exp": exp}),
        serde_json::json!({"workspace_id": "工作区", "username": "飞手😀", "exp": exp}),
        serde_json::json!({"workspace_id": "ws", "username": long, "exp": exp}),
        serde_json::json!({"exp": exp, "sub": "x", "id": "y", "workspace_id": "ws"}),
    ];
    let key = EncodingKey::from_secret(b"CloudApiSample");
    let mut tokens: Vec<String> = payloads
        .iter()
        .map(|p| encode(&Header::default(), p, &key).expect("token"))
        .collect();
    // Payloads written by another encoder: spaces and a key order of its own, the values at
    // every position modulo three; a number written otherwise than it reads.
    let mut written: Vec<String> = ["", " ", "  "]
        .iter()
        .map(|pad| {
            format!(r#"{{ "exp" : {exp},{pad} "username" :"pilot-7" , "workspace_id":  "ws-9" }}"#)
        })
        .collect();
    written.push(format!(r#"{{"workspace_id":"ws","id":1.5e3,"exp":{exp}}}"#));
    for json in written {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(json.as_bytes());
        let signed = format!("{header}.{body}");
        let tag = aws_lc_rs::hmac::sign(
            &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"CloudApiSample"),
            signed.as_bytes(),
        );
        tokens.push(format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref())));
    }
    // Which are read back from their spans, and which are parsed again.
    let parsed = [8, 10, 15];
    let verifier = verifier(None);
    for (i, token) in tokens.iter().enumerate() {
        let first = verifier.verify(token).await.expect("valid");
        let entry = verifier.verified.get(verifier.key_of(token));
        assert_eq!(
            entry.map(|e| e.spans == Spans::Parse),
            Some(parsed.contains(&i)),
            "token {i}"
        );
        let claims = verifier.verify_now(token).await.expect("valid");
        assert_eq!(first, Pilot::of(&claims));
        let again = verifier.verify(token).await.expect("remembered");
        assert_eq!(again, first, "{claims:?}");
    }
}

#[tokio::test]
async fn a_long_subject_is_bounded_and_stays_apart() {
    let secret = Secret::new("CloudApiSample");
    let verifier = Verifier::new(&secret, &AuthConfig::default()).expect("verifier");
    let long = "名".repeat(4000);
    let mut seen = Vec::new();
    for suffix in ["a", "b"] {
        let name = format!("{long}{suffix}");
        let token = mint(&secret, "ws", &name, Duration::from_secs(60), None).expect("token");
        let pilot = verifier.verify(&token).await.expect("valid");
        assert!(
            pilot.subject().len() <= MAX_SUBJECT_LEN,
            "{}",
            pilot.subject()
        );
        assert!(pilot.subject().starts_with("名名"), "{}", pilot.subject());
        assert_eq!(pilot.workspace(), "ws");
        seen.push(pilot.subject().to_owned());
    }
    assert_ne!(seen[0], seen[1], "two long subjects stay two");
    assert_eq!(bounded_subject("pilot-7"), "pilot-7");
}

/// A claim's value quoted in an error is bounded: it goes into the 401's body and the log.
#[tokio::test]
async fn a_long_claim_value_is_not_echoed_whole() {
    use jsonwebtoken::{EncodingKey, Header, encode};
    let long = "x".repeat(20_000);
    let token = encode(
        &Header::default(),
        &serde_json::json!({"workspace_id": "ws", "exp": long}),
        &EncodingKey::from_secret(b"CloudApiSample"),
    )
    .unwrap();
    match verifier(None).verify(&token).await {
        Err(Error::Claims(message)) => assert!(message.len() <= 210, "{} bytes", message.len()),
        other => panic!("{other:?}"),
    }
}
