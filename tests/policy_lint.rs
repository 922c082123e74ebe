//! The AWS/MinIO session policies stsgate sends, linted by a real IAM policy linter
//! (`parliament`, PyPI; `scripts/test.sh` installs it).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Command;

use stsgate::domain::Scope;
use stsgate::issuer::policy;

const LINT: &str = r#"
import json, sys
from parliament import analyze_policy_string
findings = analyze_policy_string(sys.argv[1]).findings
print(json.dumps([{"issue": f.issue, "detail": str(f.detail)} for f in findings]))
"#;

fn lint(policy: &str) -> Vec<serde_json::Value> {
    let out = Command::new("python3")
        .args(["-c", LINT, policy])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "parliament is installed (scripts/test.sh): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON findings")
}

#[test]
fn our_session_policies_have_no_findings() {
    for (bucket, prefix) in [
        ("media", "e3dea0f5-37f2-4d79-ae58-490af3228069"),
        ("dji-media.example", "wayline/ws_1"),
    ] {
        let scope = Scope {
            bucket: bucket.into(),
            prefix: prefix.into(),
            device: None,
        };
        let policy = policy::aws(&scope);
        assert_eq!(lint(&policy), Vec::<serde_json::Value>::new(), "{policy}");
    }
}

#[test]
fn the_linter_does_catch_a_broken_policy() {
    // Guards the test above against a linter that finds nothing in anything.
    let broken = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["s3:PutObjekt"],"Resource":["arn:aws:s3:::media"]}]}"#;
    assert!(!lint(broken).is_empty());
}
