use std::io::Write;
use std::time::Duration;

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn toml_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write");
    f
}

#[test]
fn no_sources_is_the_embedded_default() {
    let c = load(&Sources::default()).expect("defaults are valid");
    assert_eq!(c.http.listen.to_string(), "127.0.0.1:6789");
    assert_eq!(c.mqtt.embedded_listen.to_string(), "127.0.0.1:1883");
    assert_eq!(c.storage.local.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(c.data_dir.to_str(), Some("./stsgate-data"));
    assert_eq!(c.default_workspace(), Some("default"));
    assert_eq!(c.advertised_endpoint(), "http://127.0.0.1:9000");
    assert!(c.mqtt.url.is_none());
}

#[test]
fn flag_beats_env_beats_file_beats_default() {
    let f = toml_file("[http]\nlisten = \"127.0.0.1:1001\"\n[storage]\nduration = \"2h\"\n");
    let file = Some(f.path().to_path_buf());
    let env = env(&[("STSGATE_HTTP__LISTEN", "127.0.0.1:1002"), ("PATH", "/bin")]);
    let flags = vec![("http.listen".to_owned(), "127.0.0.1:1003".to_owned())];

    let all = Sources {
        file: file.clone(),
        env: env.clone(),
        flags,
    };
    assert_eq!(load(&all).expect("valid").http.listen.port(), 1003);
    let no_flag = Sources {
        file: file.clone(),
        env,
        flags: vec![],
    };
    assert_eq!(load(&no_flag).expect("valid").http.listen.port(), 1002);
    let file_only = Sources {
        file,
        ..Sources::default()
    };
    let c = load(&file_only).expect("valid");
    assert_eq!(c.http.listen.port(), 1001);
    assert_eq!(c.storage.duration, Duration::from_secs(7200));
    // Under a config file, unbound devices are refused unless a default workspace is set.
    assert_eq!(c.default_workspace(), None);
}

#[test]
fn env_reaches_nested_and_numeric_keys() {
    let e = env(&[
        ("STSGATE_DATA_DIR", "/tmp/x"),
        ("STSGATE_MQTT__URL", "mqtt://127.0.0.1:1"),
        ("STSGATE_MQTT__REPLY_QOS", "2"),
        ("STSGATE_STORAGE__LOCAL__LISTEN", "127.0.0.1:0"),
        ("STSGATE_STORAGE__DURATION", "900"),
        ("STSGATE_STORAGE__MIN_REMAINING", "60"),
        ("STSGATE_STORAGE__EXPIRE_MARGIN", "30s"),
        ("STSGATE_AUTH__JWT_SECRET", "12345"),
        ("STSGATE_DEVICES__DEFAULT_WORKSPACE", ""),
        ("STSGATE_CONFIG", "ignored.toml"),
    ]);
    let c = load(&Sources {
        env: e,
        ..Sources::default()
    })
    .expect("valid");
    assert_eq!(c.data_dir.to_str(), Some("/tmp/x"));
    assert_eq!(c.mqtt.url.as_deref(), Some("mqtt://127.0.0.1:1"));
    assert_eq!(c.mqtt.reply_qos, 2);
    assert_eq!(c.storage.local.listen.port(), 0);
    assert_eq!(c.storage.duration, Duration::from_secs(900));
    assert_eq!(
        c.auth.jwt_secret.as_ref().map(|s| s.expose()),
        Some("12345")
    );
    assert_eq!(c.default_workspace(), None);
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("STSGATE_HTTP__LISTEN", "nope", "http.listen"),
        ("STSGATE_STORAGE__DURATION", "soon", "storage.duration"),
        ("STSGATE_STORAGE__BUCKET", "Bad_Bucket", "storage.bucket"),
        ("STSGATE_STORAGE__PROVIDER", "gcs", "storage.provider"),
        ("STSGATE_MQTT__URL", "http://x", "mqtt.url"),
        (
            "STSGATE_STORAGE__OBJECT_KEY_PREFIX",
            "{gateway}",
            "storage.object_key_prefix",
        ),
        (
            "STSGATE_STORAGE__ENDPOINT",
            "oss.example.com",
            "storage.endpoint",
        ),
        (
            "STSGATE_DEVICES__DEFAULT_WORKSPACE",
            "../etc",
            "devices.default_workspace",
        ),
        ("STSGATE_HTTP__LISTN", "127.0.0.1:1", "listn"),
        // TLS files without an mqtts:// broker.
        ("STSGATE_MQTT__CA_FILE", "/etc/ca.pem", "mqtt.ca_file"),
        ("STSGATE_MQTT__PROTOCOL", "5", "mqtt.protocol"),
        ("STSGATE_MQTT__PROTOCOL", "3", "mqtt.protocol"),
        (
            "STSGATE_DEVICES__SQL__URL",
            "sqlite://x.db",
            "devices.sql.url",
        ),
        ("STSGATE_DEVICES__SQL__QUERY", "SELECT 1", "devices.sql.url"),
    ];
    for (k, v, key) in cases {
        let err = load(&Sources {
            env: env(&[(k, v)]),
            ..Sources::default()
        })
        .expect_err(k)
        .to_string();
        assert!(err.contains(key), "{k}={v}: `{err}` should name {key}");
    }
}

#[test]
fn a_client_certificate_needs_its_key() {
    let err = load(&Sources {
        env: env(&[
            ("STSGATE_MQTT__URL", "mqtts://broker:8883"),
            ("STSGATE_MQTT__CLIENT_CERT_FILE", "/etc/client.pem"),
        ]),
        ..Sources::default()
    })
    .expect_err("refused")
    .to_string();
    assert!(err.contains("mqtt.client_cert_file"), "{err}");
    let ok = load(&Sources {
        env: env(&[
            ("STSGATE_MQTT__URL", "mqtts://broker:8883"),
            ("STSGATE_MQTT__CA_FILE", "/etc/ca.pem"),
        ]),
        ..Sources::default()
    });
    assert!(ok.is_ok(), "{ok:?}");
    for (value, expected) in [
        ("5", crate::config::MqttProtocol::V5),
        ("3.1.1", crate::config::MqttProtocol::V311),
    ] {
        let c = load(&Sources {
            env: env(&[
                ("STSGATE_MQTT__URL", "mqtt://broker"),
                ("STSGATE_MQTT__PROTOCOL", value),
            ]),
            ..Sources::default()
        })
        .expect("valid");
        assert_eq!(c.mqtt.protocol, expected);
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = env(&[
        ("STSGATE_STORAGE__BUCKET", "x"),
        ("STSGATE_STORAGE__REGION", ""),
    ]);
    match load(&Sources {
        env: e,
        ..Sources::default()
    }) {
        Err(Error::Invalid(problems)) => {
            let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, ["storage.bucket", "storage.region"]);
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn secrets_may_not_be_written_in_the_file() {
    let f = toml_file("[auth]\njwt_secret = \"file-secret-value\"\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .expect_err("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("auth.jwt_secret") && msg.contains("STSGATE_AUTH__JWT_SECRET"),
        "{msg}"
    );
    assert!(!msg.contains("file-secret-value"), "{msg}");
    for (section, key, env) in [
        (
            "storage",
            "secret_access_key",
            "STSGATE_STORAGE__SECRET_ACCESS_KEY",
        ),
        ("devices.sql", "password", "STSGATE_DEVICES__SQL__PASSWORD"),
        ("mqtt", "password", "STSGATE_MQTT__PASSWORD"),
    ] {
        let f = toml_file(&format!("[{section}]\n{key} = \"file-secret-value\"\n"));
        let msg = load(&Sources {
            file: Some(f.path().to_path_buf()),
            ..Sources::default()
        })
        .expect_err("refused")
        .to_string();
        assert!(msg.contains(env), "{msg}");
        assert!(!msg.contains("file-secret-value"), "{msg}");
    }
}

#[test]
fn unknown_file_keys_and_missing_files_fail() {
    let f = toml_file("[storage]\nbukket = \"media\"\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .expect_err("refused");
    assert!(err.to_string().contains("bukket"), "{err}");
    let missing = Sources {
        file: Some("/nonexistent/stsgate.toml".into()),
        ..Sources::default()
    };
    assert!(
        load(&missing)
            .expect_err("refused")
            .to_string()
            .contains("/nonexistent/stsgate.toml")
    );
}

#[test]
fn debug_of_config_hides_secrets() {
    let e = env(&[
        ("STSGATE_AUTH__JWT_SECRET", "jwt-secret-value"),
        ("STSGATE_MQTT__PASSWORD", "broker-password"),
        (
            "STSGATE_DEVICES__SQL__URL",
            "postgres://app:db-password@db/platform",
        ),
    ]);
    let c = load(&Sources {
        env: e,
        ..Sources::default()
    })
    .expect("valid");
    let dbg = format!("{c:?}");
    let toml = toml::to_string(&c).expect("serializes");
    for text in [dbg, toml] {
        assert!(
            !text.contains("jwt-secret-value")
                && !text.contains("broker-password")
                && !text.contains("db-password"),
            "{text}"
        );
    }
}

/// Five different mistakes in one file, two in the environment and one flag: every one is
/// reported, in the operator's words, each with where it was written.
#[test]
fn every_mistake_is_reported_in_the_operators_words() {
    let f = toml_file(
        "[storage]\nprovder = \"aws\"\nduration = \"soon\"\n\n[http]\nlisten = \"localhost\"\n\
         max_connections = \"many\"\n\n[strage]\nregion = \"x\"\n",
    );
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        env: env(&[
            ("STSGATE_LIMITS__DEVICE_PER_MINUT", "5"),
            ("STSGATE_MQTT__EMBEDDED_MAX_SESSIONS", "lots"),
        ]),
        flags: vec![("storage.local.listen".to_owned(), "nowhere".to_owned())],
    })
    .expect_err("refused");
    let Error::Invalid(problems) = &err else {
        panic!("{err:?}");
    };
    let name = f.path().display().to_string();
    let want = [
        (
            format!("{name} line 2"),
            "storage.provder",
            "did you mean `provider`?",
        ),
        (
            format!("{name} line 3"),
            "storage.duration",
            "\"soon\" is not a duration",
        ),
        (
            format!("{name} line 6"),
            "http.listen",
            "\"localhost\" is not an address and port",
        ),
        (
            format!("{name} line 7"),
            "http.max_connections",
            "\"many\" is not a whole number",
        ),
        (
            format!("{name} line 9"),
            "strage",
            "did you mean `storage`?",
        ),
        (
            "STSGATE_LIMITS__DEVICE_PER_MINUT".to_owned(),
            "limits.device_per_minut",
            "did you mean `device_per_minute`?",
        ),
        (
            "STSGATE_MQTT__EMBEDDED_MAX_SESSIONS".to_owned(),
            "mqtt.embedded_max_sessions",
            "\"lots\" is not a whole number",
        ),
        (
            "--storage-local-listen".to_owned(),
            "storage.local.listen",
            "\"nowhere\" is not an address and port",
        ),
    ];
    assert_eq!(problems.len(), want.len(), "{err}");
    for (problem, (origin, key, says)) in problems.iter().zip(&want) {
        assert_eq!(
            problem.origin.as_deref(),
            Some(origin.as_str()),
            "{problem}"
        );
        assert_eq!(problem.key, *key, "{problem}");
        assert!(problem.reason.contains(says), "{problem} should say {says}");
    }
    // Good values as each source writes them.
    let text = err.to_string();
    for example in [
        "e.g. provider = \"local\"",
        "e.g. duration = \"1h\"",
        "e.g. STSGATE_LIMITS__DEVICE_PER_MINUTE=60",
        "e.g. --storage-local-listen 127.0.0.1:9000",
    ] {
        assert!(text.contains(example), "{example} in\n{text}");
    }
    // One line a problem, and nothing of the implementation.
    assert_eq!(text.lines().count(), 1 + want.len(), "{text}");
    for internal in [
        "default.", "src/", ".rs:", "alloc::", "u32", "usize", "BTreeMap", "Option<",
    ] {
        assert!(!text.contains(internal), "`{internal}` in\n{text}");
    }
}

#[test]
fn a_value_of_the_wrong_shape_and_a_secret_in_the_file_are_reported_with_the_rest() {
    let f = toml_file("storage = 5\n\n[auth]\njwt_secret = \"file-secret-value\"\nleeway = true\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.contains("line 1: storage: `5` is not a table"),
        "{text}"
    );
    assert!(
        text.contains("line 4: auth.jwt_secret: is a secret"),
        "{text}"
    );
    assert!(
        text.contains("line 5: auth.leeway: `true` is not a duration"),
        "{text}"
    );
    assert!(!text.contains("file-secret-value"), "{text}");
}

const TWO_CUSTOMERS: &str = r#"[storage]
provider = "local"

[profiles.eu]
provider = "aws"
region = "eu-central-1"
bucket = "acme-media"
role_arn = "arn:aws:iam::210987654321:role/stsgate-upload"
external_id = "acme-7f3a"
object_key_prefix = "acme/{workspace_id}"

[profiles.cn-site_2]
provider = "ali"
region = "cn-hangzhou"
bucket = "site-media"
role_arn = "acs:ram::1234567890123456:role/stsgate-upload"
access_key_id = "LTAI5tEXAMPLE"
secret_access_key_file = "/etc/stsgate/ali_secret"

[workspaces.profile]
"2f8e1c55-6a9d-4f51-9d1b-0c7b8a3e4f10" = "eu"
ws-cn = "cn-site_2"
ws-home = "default"
"#;

#[test]
fn named_profiles_take_every_storage_key_and_workspaces_name_them() {
    let f = toml_file(TWO_CUSTOMERS);
    let c = load(&Sources {
        file: Some(f.path().to_path_buf()),
        env: env(&[
            ("STSGATE_PROFILES__EU__ACCESS_KEY_ID", "AKIAEXAMPLE"),
            ("STSGATE_PROFILES__EU__SECRET_ACCESS_KEY", "env-secret"),
        ]),
        ..Sources::default()
    })
    .expect("valid");
    let names: Vec<&str> = c.all_profiles().map(|(n, _)| n).collect();
    assert_eq!(names, ["default", "cn-site_2", "eu"]);
    let eu = c.profile("eu").expect("eu");
    assert_eq!(eu.provider, crate::domain::ProviderKind::Aws);
    assert_eq!(eu.external_id.as_deref(), Some("acme-7f3a"));
    assert_eq!(eu.access_key_id.as_deref(), Some("AKIAEXAMPLE"));
    assert_eq!(
        eu.secret_access_key.as_ref().map(|s| s.expose()),
        Some("env-secret")
    );
    // Keys a profile leaves out take [storage]'s defaults.
    assert_eq!(eu.duration, Duration::from_secs(3600));
    assert_eq!(c.endpoint_of(eu), "https://s3.eu-central-1.amazonaws.com");
    let cn = c.profile("cn-site_2").expect("cn");
    assert_eq!(c.endpoint_of(cn), "https://oss-cn-hangzhou.aliyuncs.com");
    assert_eq!(
        cn.secret_access_key_file.as_deref(),
        Some(std::path::Path::new("/etc/stsgate/ali_secret"))
    );
    assert_eq!(c.local_profile().map(|(n, _)| n), Some("default"));
    assert_eq!(c.workspaces.profile["ws-cn"], "cn-site_2");
    assert_eq!(Config::section_of("eu"), "profiles.eu");
}

#[test]
fn every_profile_mistake_is_reported_at_once_with_its_profile_key() {
    let f = toml_file(
        r#"[profiles.eu]
provider = "aws"
role_arn = "arm:aws:iam::1:role/x"
regoin = "eu-central-1"
secret_access_key = "file-secret-value"

[profiles.Bad]
provider = "aws"
role_arn = "arn:aws:iam::1:role/x"

[profiles.site]
provider = "minio"
sts_endpoint = "http://minio:9000"
access_key_id = "site"
secret_access_key_file = "/etc/stsgate/site"
external_id = "acme-7f3a"

[profiles.again]
provider = "local"

[profiles.vague]
bucket = "vague-media"

[workspaces.profile]
ws-1 = "nowhere"
"#,
    );
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .expect_err("refused");
    let Error::Invalid(problems) = &err else {
        panic!("{err:?}");
    };
    let name = f.path().display().to_string();
    let text = err.to_string();
    let want = [
        (
            "line 3",
            "profiles.eu.role_arn",
            "is not of the form arn:aws:iam",
        ),
        ("line 4", "profiles.eu.regoin", "did you mean `region`?"),
        (
            "line 5",
            "profiles.eu.secret_access_key",
            "STSGATE_PROFILES__EU__SECRET_ACCESS_KEY",
        ),
        ("line 7", "profiles.Bad", "lowercase letters"),
        (
            "line 16",
            "profiles.site.external_id",
            "MinIO's AssumeRole ignores ExternalId",
        ),
        (
            "line 19",
            "profiles.again.provider",
            "at most one profile may be local",
        ),
        (
            "line 21",
            "profiles.vague.provider",
            "is required in a named profile",
        ),
        (
            "line 25",
            "workspaces.profile.ws-1",
            "profile `nowhere` does not exist",
        ),
    ];
    for (line, key, says) in want {
        let found = problems
            .iter()
            .find(|p| p.key == key)
            .unwrap_or_else(|| panic!("{key} missing in\n{text}"));
        assert_eq!(
            found.origin.as_deref(),
            Some(format!("{name} {line}").as_str()),
            "{found}"
        );
        assert!(found.reason.contains(says), "{found} should say {says}");
    }
    assert_eq!(problems.len(), want.len(), "{text}");
    assert!(text.contains("e.g. region = \"us-east-1\""), "{text}");
    assert!(!text.contains("file-secret-value"), "{text}");
}

#[test]
fn a_profile_needs_its_secret_with_its_key_and_may_not_carry_the_store() {
    let f = toml_file(
        "[profiles.eu]\nprovider = \"ali\"\nrole_arn = \"acs:ram::1:role/x\"\n\
         access_key_id = \"LTAI\"\n\n[profiles.eu.local]\nlisten = \"127.0.0.1:0\"\n",
    );
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("profiles.eu.access_key_id: set profiles.eu.access_key_id together with STSGATE_PROFILES__EU__SECRET_ACCESS_KEY or profiles.eu.secret_access_key_file"),
        "{err}"
    );
    assert!(
        err.contains(
            "profiles.eu.local: the embedded store is configured once, in [storage.local]"
        ),
        "{err}"
    );
}

#[test]
fn workspaces_sql_needs_its_url_and_query_and_keeps_its_password_out_of_the_file() {
    let f = toml_file("[workspaces.sql]\npassword = \"file-secret-value\"\nunbound_ttl = \"2m\"\n");
    let err = load(&Sources {
        file: Some(f.path().to_path_buf()),
        ..Sources::default()
    })
    .expect_err("refused")
    .to_string();
    for says in [
        "workspaces.sql.url: is required when [workspaces.sql] is set",
        "workspaces.sql.query: is required when [workspaces.sql] is set",
        "workspaces.sql.password: is a secret",
        "workspaces.sql.unbound_ttl: must not be longer than workspaces.sql.cache_ttl",
    ] {
        assert!(err.contains(says), "{says} in\n{err}");
    }
    assert!(!err.contains("file-secret-value"), "{err}");
}

#[test]
fn a_log_filter_that_logs_nothing_or_does_not_parse_is_refused() {
    for (filter, said) in [
        ("", "is empty"),
        ("stsgate=loud", "is not a filter"),
        ("info,stsgate[request{id=}=debug", "is not a filter"),
    ] {
        let err = load(&Sources {
            env: env(&[("STSGATE_LOG__FILTER", filter)]),
            ..Sources::default()
        })
        .expect_err(filter)
        .to_string();
        assert!(
            err.contains("log.filter") && err.contains(said),
            "{filter}: {err}"
        );
    }
    for filter in ["info", "stsgate=debug,info", "info,stsgate[request]=debug"] {
        let c = load(&Sources {
            env: env(&[("STSGATE_LOG__FILTER", filter)]),
            ..Sources::default()
        });
        assert!(c.is_ok(), "{filter}: {c:?}");
    }
}

#[test]
fn a_device_prefix_needs_per_device_and_a_required_audit_needs_a_path() {
    let err = load(&Sources {
        env: env(&[
            (
                "STSGATE_STORAGE__OBJECT_KEY_PREFIX",
                "{workspace_id}/{device}",
            ),
            ("STSGATE_AUDIT__REQUIRED", "true"),
        ]),
        ..Sources::default()
    })
    .expect_err("refused")
    .to_string();
    assert!(
        err.contains("storage.object_key_prefix") && err.contains("storage.per_device = true"),
        "{err}"
    );
    assert!(
        err.contains("audit.required") && err.contains("needs audit.path"),
        "{err}"
    );
    let c = load(&Sources {
        env: env(&[
            (
                "STSGATE_STORAGE__OBJECT_KEY_PREFIX",
                "{workspace_id}/{device}",
            ),
            ("STSGATE_STORAGE__PER_DEVICE", "true"),
            ("STSGATE_AUDIT__REQUIRED", "true"),
            ("STSGATE_AUDIT__PATH", "/var/log/stsgate/audit.jsonl"),
        ]),
        ..Sources::default()
    })
    .expect("valid");
    assert!(c.storage.per_device && c.audit.required);
}
