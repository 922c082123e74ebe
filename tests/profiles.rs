//! Storage profiles: each workspace gets its own profile's provider, endpoint, region, bucket and
//! credentials, and can upload there and nowhere else. Three profiles behind one service: the
//! embedded store (`[storage]`, the default), AWS STS in a second moto account with an
//! ExternalId (`eu`), and MinIO's STS protocol on moto's first account (`site`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use common::{Moto, Options, TestService, device_s3, device_upload, s3_client, storage_config_get};
use serde_json::Value;

const EU_ROLE: &str = "arn:aws:iam::210987654321:role/stsgate-upload";
const EU_ACCOUNT: &str = "210987654321";
const EXTERNAL_ID: &str = "acme-7f3a";

fn config(moto: &str) -> String {
    format!(
        r#"[devices]
default_workspace = "ws-home"

[devices.bind]
DOCKACME1 = "ws-acme"

[profiles.eu]
provider = "aws"
region = "eu-central-1"
bucket = "acme-media"
endpoint = "{moto}"
sts_endpoint = "{moto}"
role_arn = "{EU_ROLE}"
external_id = "{EXTERNAL_ID}"
duration = "900s"

[profiles.site]
provider = "minio"
bucket = "site-media"
sts_endpoint = "{moto}"
access_key_id = "AKIASITEEXAMPLE00000"
object_key_prefix = "site/{{workspace_id}}"
duration = "900s"

[workspaces.profile]
ws-acme = "eu"
ws-site = "site"
"#
    )
}

/// An S3 client of moto acting in the eu account (as the customer's own administrator would):
/// credentials of a role there, from moto's STS.
async fn eu_admin(moto: &Moto) -> aws_sdk_s3::Client {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .endpoint_url(&moto.url)
        .credentials_provider(aws_sdk_sts::config::Credentials::new(
            "AKIAMOTOADMIN0000000",
            "secret",
            None,
            None,
            "test",
        ))
        .load()
        .await;
    let assumed = aws_sdk_sts::Client::new(&sdk)
        .assume_role()
        .role_arn(format!("arn:aws:iam::{EU_ACCOUNT}:role/admin"))
        .role_session_name("admin")
        .send()
        .await
        .expect("an admin session in the eu account");
    let c = assumed.credentials().expect("credentials");
    s3_client(
        &moto.url,
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token()),
    )
}

async fn service(moto: &Moto) -> TestService {
    eu_admin(moto)
        .await
        .create_bucket()
        .bucket("acme-media")
        .send()
        .await
        .expect("the eu bucket, in the eu account");
    moto.s3()
        .create_bucket()
        .bucket("site-media")
        .send()
        .await
        .expect("the site bucket, in moto's first account");
    Options::default()
        .file(&config(&moto.url))
        .env(
            "STSGATE_PROFILES__EU__ACCESS_KEY_ID",
            "AKIAIOSFODNN7EXAMPLE",
        )
        .env(
            "STSGATE_PROFILES__EU__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env("STSGATE_PROFILES__SITE__SECRET_ACCESS_KEY", "site-secret")
        // (Pilots here ask as fast as they are answered.)
        .env("STSGATE_LIMITS__SUBJECT_PER_MINUTE", "0")
        .start()
        .await
}

/// moto's record of every AssumeRole it answered.
async fn assumed_roles(moto: &Moto) -> Vec<Value> {
    let data: Value = reqwest::get(format!("{}/moto-api/data.json", moto.url))
        .await
        .expect("moto's state")
        .json()
        .await
        .expect("JSON");
    data["sts"]["AssumedRole"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn each_workspace_gets_its_profiles_storage_and_uploads_there_only() {
    let moto = Moto::start();
    let svc = service(&moto).await;
    let eu_admin = eu_admin(&moto).await;

    // ws-acme: AWS in the eu account, with the ExternalId its role requires.
    let (status, acme) = svc.sts("ws-acme", Some(&svc.token("ws-acme"))).await;
    assert_eq!(status, 200, "{acme}");
    let acme = &acme["data"];
    assert_eq!(acme["provider"], "aws");
    assert_eq!(acme["region"], "eu-central-1");
    assert_eq!(acme["bucket"], "acme-media");
    assert_eq!(acme["endpoint"], moto.url.as_str());
    assert_eq!(acme["object_key_prefix"], "ws-acme");
    device_upload(acme, "ws-acme/DJI_0001.JPG", b"acme's photo").await;
    let stored = eu_admin
        .get_object()
        .bucket("acme-media")
        .key("ws-acme/DJI_0001.JPG")
        .send()
        .await
        .expect("in the eu account's bucket");
    assert_eq!(
        stored.body.collect().await.unwrap().into_bytes().as_ref(),
        b"acme's photo"
    );
    let acme_key = acme["credentials"]["access_key_id"].as_str().unwrap();
    let roles = assumed_roles(&moto).await;
    let issued = roles
        .iter()
        .find(|r| r["access_key_id"] == acme_key)
        .unwrap_or_else(|| panic!("moto issued {acme_key}: {roles:?}"));
    assert_eq!(issued["role_arn"], EU_ROLE);
    assert_eq!(issued["account_id"], EU_ACCOUNT);
    assert_eq!(
        issued["external_id"], EXTERNAL_ID,
        "ExternalId reached AssumeRole"
    );

    // ws-site: MinIO's protocol on moto, its own bucket and prefix template, no ExternalId.
    let (status, site) = svc.sts("ws-site", Some(&svc.token("ws-site"))).await;
    assert_eq!(status, 200, "{site}");
    let site = &site["data"];
    assert_eq!(site["provider"], "minio");
    assert_eq!(site["bucket"], "site-media");
    assert_eq!(site["endpoint"], moto.url.as_str());
    assert_eq!(site["object_key_prefix"], "site/ws-site");
    device_upload(site, "site/ws-site/clip.mp4", b"site's clip").await;
    let site_key = site["credentials"]["access_key_id"].as_str().unwrap();
    let roles = assumed_roles(&moto).await;
    let issued = roles
        .iter()
        .find(|r| r["access_key_id"] == site_key)
        .expect("moto issued the site's credential");
    assert!(issued["external_id"].is_null(), "{issued}");

    // Any other workspace: the default profile, the embedded store.
    let (status, home) = svc.sts("ws-other", Some(&svc.token("ws-other"))).await;
    assert_eq!(status, 200, "{home}");
    let home = &home["data"];
    assert_eq!(home["provider"], "minio");
    assert_eq!(home["bucket"], "media");
    assert_eq!(home["endpoint"], svc.store_url().as_str());
    device_upload(home, "ws-other/DJI_0002.JPG", b"home photo").await;
    assert_eq!(
        svc.read_object("ws-other/DJI_0002.JPG").await.as_deref(),
        Some(&b"home photo"[..])
    );

    // Nowhere else: the eu credential means nothing to the embedded store, the store's
    // credential writes nothing outside its prefix. (moto evaluates no session policy, so
    // prefixes on moto are the embedded store's tests' and the policy documents' to prove.)
    let foreign = serde_json::json!({
        "endpoint": svc.store_url(),
        "credentials": acme["credentials"],
    });
    let refused = |answer: &serde_json::Value| {
        device_s3(answer)
            .put_object()
            .bucket("media")
            .key("ws-acme/x.jpg")
            .body(b"x".to_vec().into())
            .send()
    };
    assert!(
        refused(&foreign).await.is_err(),
        "the eu credential is refused by the embedded store"
    );
    assert!(
        refused(home).await.is_err(),
        "the store's credential writes only under ws-other/"
    );
    let names = |out: aws_sdk_s3::operation::list_buckets::ListBucketsOutput| -> Vec<String> {
        out.buckets()
            .iter()
            .filter_map(|b| b.name().map(str::to_owned))
            .collect()
    };
    let first = names(moto.s3().list_buckets().send().await.unwrap());
    let eu = names(eu_admin.list_buckets().send().await.unwrap());
    assert_eq!(
        (first, eu),
        (vec!["site-media".to_owned()], vec!["acme-media".to_owned()]),
        "each customer's bucket in its own account"
    );

    // A dock bound to ws-acme gets the eu profile's credential: the same one, cached.
    let mut dock = svc.dock("DOCKACME1").await;
    let reply = dock.request(&storage_config_get("p1", "1")).await;
    let output = &reply["data"]["output"];
    assert_eq!(output["provider"], "aws", "{reply}");
    assert_eq!(output["bucket"], "acme-media");
    assert_eq!(output["credentials"]["access_key_id"], acme_key);

    // Series by profile (the recorder is the process's: other tests count there too).
    for labels in [
        r#"provider="aws",profile="eu",outcome="ok""#,
        r#"provider="minio",profile="site",outcome="ok""#,
    ] {
        assert!(
            svc.counter("stsgate_upstream_calls_total", labels).await >= 1.0,
            "{labels}"
        );
    }
    assert!(
        svc.counter(
            "stsgate_cache_requests_total",
            r#"profile="eu",outcome="hit""#
        )
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn a_profile_whose_secret_file_is_unreadable_stops_start_up_naming_the_key() {
    let data = tempfile::tempdir().unwrap();
    let missing = data.path().join("no-such-secret");
    let err = Options::default()
        .file(&format!(
            "[profiles.cn]\nprovider = \"ali\"\nregion = \"cn-hangzhou\"\n\
             role_arn = \"acs:ram::1234567890123456:role/up\"\naccess_key_id = \"LTAI5t\"\n\
             secret_access_key_file = \"{}\"\n",
            missing.display()
        ))
        .try_start()
        .await
        .err()
        .expect("refused");
    assert!(
        err.contains("profiles.cn.secret_access_key_file") && err.contains("no-such-secret"),
        "{err}"
    );
}

/// Pilots of `workspaces`, each asked as fast as it is answered until the returned flag is
/// set; the task returns how many answers there were, and panics on any that is not a 200
/// carrying credentials.
fn keep_asking(
    svc: &TestService,
    workspaces: &[&str],
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    tokio::task::JoinHandle<usize>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = stop.clone();
    let base = svc.base_url.clone();
    let asks: Vec<(String, String)> = workspaces
        .iter()
        .map(|w| ((*w).to_owned(), svc.token(w)))
        .collect();
    let task = tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut answered = 0;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for (workspace, token) in &asks {
                let response = client
                    .post(format!("{base}/storage/api/v1/workspaces/{workspace}/sts"))
                    .header("x-auth-token", token)
                    .send()
                    .await
                    .expect("answered");
                let status = response.status();
                let body: Value = response.json().await.unwrap_or_default();
                assert_eq!(status, 200, "{workspace} during the reload: {body}");
                assert!(
                    body["data"]["credentials"]["access_key_id"]
                        .as_str()
                        .is_some_and(|k| !k.is_empty()),
                    "{body}"
                );
                answered += 1;
            }
        }
        answered
    });
    (stop, task)
}

fn rewrite(svc: &TestService, toml: &str) {
    let path = svc.sources.file.as_ref().expect("a config file");
    std::fs::write(path, toml).expect("config rewritten");
}

async fn key_of(svc: &TestService, workspace: &str) -> (String, Value) {
    let (status, body) = svc.sts(workspace, Some(&svc.token(workspace))).await;
    assert_eq!(status, 200, "{body}");
    let data = body["data"].clone();
    (
        data["credentials"]["access_key_id"]
            .as_str()
            .unwrap()
            .to_owned(),
        data,
    )
}

/// An operator adds a customer: a profile and a mapping, then a reload, while docks and pilots
/// are being answered. Every request is answered throughout; the new workspace gets its new
/// profile; nobody else's cached credential is dropped. Then a broken file changes nothing, a
/// changed profile gets fresh credentials, and a workspace moved to another profile never gets
/// the old profile's credential again.
#[tokio::test]
async fn a_reload_adds_a_customer_while_everyone_is_answered_and_a_broken_one_changes_nothing() {
    let moto = Moto::start();
    let svc = service(&moto).await;
    let reloads = |result: &'static str| {
        let svc = &svc;
        async move {
            svc.counter(
                "stsgate_config_reloads_total",
                &format!(r#"result="{result}""#),
            )
            .await
        }
    };
    let (ok_before, rejected_before) = (reloads("ok").await, reloads("rejected").await);
    let (home_key, _) = key_of(&svc, "ws-home").await;
    let (site_key, _) = key_of(&svc, "ws-site").await;
    let (_, before) = key_of(&svc, "ws-new").await;
    assert_eq!(before["bucket"], "media", "unlisted: the default profile");
    let mut dock = svc.dock("DOCKACME1").await;

    let asking = keep_asking(&svc, &["ws-home", "ws-site", "ws-acme"]);
    let added = config(&moto.url).replace(
        "[workspaces.profile]\n",
        "[profiles.new]\nprovider = \"minio\"\nbucket = \"new-media\"\n\
         sts_endpoint = \"MOTO\"\naccess_key_id = \"AKIANEWEXAMPLE000000\"\n\
         secret_access_key_file = \"SECRET\"\nduration = \"900s\"\n\n\
         [workspaces.profile]\nws-new = \"new\"\n",
    );
    let secret = svc.data.path().join("new_secret");
    std::fs::write(&secret, "new-secret\n").unwrap();
    let added = added
        .replace("MOTO", &moto.url)
        .replace("SECRET", secret.to_str().unwrap());
    rewrite(&svc, &added);
    let changes = svc.service.reload(&svc.sources).await.expect("reloaded");
    assert_eq!(
        changes,
        [
            "profile new added",
            "1 workspace(s) routed to another profile"
        ],
        "only what changed"
    );
    let reply = dock.request(&storage_config_get("r1", "1")).await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    asking.0.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(asking.1.await.expect("asker") > 3);

    let (_, new) = key_of(&svc, "ws-new").await;
    assert_eq!(
        (new["provider"].as_str(), new["bucket"].as_str()),
        (Some("minio"), Some("new-media"))
    );
    assert_eq!(
        key_of(&svc, "ws-home").await.0,
        home_key,
        "kept, cache and all"
    );
    assert_eq!(
        key_of(&svc, "ws-site").await.0,
        site_key,
        "kept, cache and all"
    );
    assert!(reloads("ok").await >= ok_before + 1.0);

    // A broken file: rejected whole, every problem named, nothing changes.
    rewrite(
        &svc,
        &format!(
            "{}\n[limits]\ndevice_per_minit = 5\n",
            added.replace("role_arn = \"arn:", "role_arn = \"arm:")
        ),
    );
    let refused = svc
        .service
        .reload(&svc.sources)
        .await
        .expect_err("rejected")
        .to_string();
    assert!(
        refused.contains("profiles.eu.role_arn") && refused.contains("limits.device_per_minit"),
        "{refused}"
    );
    assert!(reloads("rejected").await >= rejected_before + 1.0);
    assert_eq!(key_of(&svc, "ws-new").await.1["bucket"], "new-media");
    assert_eq!(key_of(&svc, "ws-home").await.0, home_key);

    // A changed profile gets fresh credentials; a workspace moved away never gets the old
    // profile's credential again.
    let changed = added
        .replace(
            "object_key_prefix = \"site/{workspace_id}\"",
            "object_key_prefix = \"site2/{workspace_id}\"",
        )
        .replace("ws-new = \"new\"\n", "");
    rewrite(&svc, &changed);
    let changes = svc.service.reload(&svc.sources).await.expect("reloaded");
    assert!(
        changes.contains(&"profile site changed: its cached credentials are dropped".to_owned()),
        "{changes:?}"
    );
    let (site_again, site) = key_of(&svc, "ws-site").await;
    assert_ne!(site_again, site_key);
    assert_eq!(site["object_key_prefix"], "site2/ws-site");
    let (_, moved) = key_of(&svc, "ws-new").await;
    assert_eq!(moved["bucket"], "media", "back on the default profile");
    assert_eq!(key_of(&svc, "ws-home").await.0, home_key);
}

/// The embedded store starts with the service: a reload that adds, removes or moves its profile
/// is rejected naming why, and changes nothing.
#[tokio::test]
async fn a_reload_that_needs_a_restart_is_rejected() {
    let svc = Options::default()
        .file("[storage]\nprovider = \"local\"\n")
        .start()
        .await;
    let (key, _) = key_of(&svc, "ws-1").await;
    rewrite(
        &svc,
        "[storage]\nprovider = \"local\"\nbucket = \"elsewhere\"\n",
    );
    let refused = svc
        .service
        .reload(&svc.sources)
        .await
        .expect_err("rejected")
        .to_string();
    assert!(refused.contains("restart"), "{refused}");
    let (again, data) = key_of(&svc, "ws-1").await;
    assert_eq!((again, data["bucket"].as_str()), (key, Some("media")));
}

/// `stsgate check --all` proves each profile once, a checklist per profile; `--workspace`
/// checks the profile that workspace routes to, and no other.
#[tokio::test]
async fn check_all_proves_every_profile_and_check_workspace_its_own() {
    let moto = Moto::start();
    let svc = service(&moto).await;
    let file = svc.sources.file.clone().expect("file");
    let data = svc.data.path().join("check");
    let run = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_stsgate"));
        cmd.arg("--config")
            .arg(&file)
            .arg("--data-dir")
            .arg(&data)
            .arg("check");
        cmd.args(args)
            .args(["--storage-local-listen", "127.0.0.1:0"]);
        for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("STSGATE_")) {
            cmd.env_remove(key);
        }
        cmd.env(
            "STSGATE_PROFILES__EU__ACCESS_KEY_ID",
            "AKIAIOSFODNN7EXAMPLE",
        )
        .env(
            "STSGATE_PROFILES__EU__SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        )
        .env("STSGATE_PROFILES__SITE__SECRET_ACCESS_KEY", "site-secret");
        let out = cmd.output().expect("runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (ok, text) = run(&["--all"]);
    // moto evaluates no session policy: its profiles' writes outside the prefix go through,
    // which is exactly what check exists to report.
    assert!(!ok, "{text}");
    let sections: Vec<&str> = text.split("• profile ").skip(1).collect();
    assert_eq!(sections.len(), 3, "one checklist per profile:\n{text}");
    for (section, (name, says)) in sections.iter().zip([
        ("default", "provider local, bucket media"),
        ("eu", "provider aws, bucket acme-media, region eu-central-1"),
        ("site", "provider minio, bucket site-media"),
    ]) {
        assert!(
            section.starts_with(name) && section.contains(says),
            "{section}"
        );
        assert!(
            section.contains("✓ credentials issued") && section.contains("✓ probe uploaded"),
            "{section}"
        );
    }
    assert!(
        sections[0].contains("✓ a write outside the prefix is refused"),
        "{}",
        sections[0]
    );
    assert!(
        sections[1].contains("NOT least-privilege"),
        "{}",
        sections[1]
    );

    let (_, text) = run(&["--workspace", "ws-acme"]);
    assert!(
        text.contains("workspace ws-acme, profile eu: provider aws"),
        "{text}"
    );
    assert_eq!(text.matches("• profile ").count(), 1, "{text}");
    assert!(text.contains("• profile eu"), "{text}");
}
