//! The SQL device registry against the real PostgreSQL and MariaDB servers (`scripts/test.sh`
//! starts them when they are not running): docks bound in the platform's `manage_device` table
//! are served for their workspace, rebinding is picked up after the cache TTL, and while the
//! database is cut off cached bindings keep working and unknown docks get a clear error.
//!
//! Each test works in a schema (PostgreSQL) or database (MariaDB) of its own, dropped at the end.
//! `TEST_POSTGRES_ADDR` / `TEST_MARIADB_ADDR` (host:port) point elsewhere.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Link, Options, TestService, storage_config_get};
use serde_json::Value;
use sqlx::AssertSqlSafe;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Postgres,
    MariaDb,
}

/// A namespace of our own on a real database server.
struct Db {
    kind: Kind,
    server: String,
    name: String,
}

impl Db {
    async fn create(kind: Kind) -> Self {
        let server = match kind {
            Kind::Postgres => std::env::var("TEST_POSTGRES_ADDR"),
            Kind::MariaDb => std::env::var("TEST_MARIADB_ADDR"),
        }
        .unwrap_or_else(|_| {
            match kind {
                Kind::Postgres => "127.0.0.1:5432",
                Kind::MariaDb => "127.0.0.1:3306",
            }
            .to_owned()
        });
        let name = format!(
            "stsgate_{}",
            stsgate::random::string(stsgate::random::BASE32, 10)
                .unwrap()
                .to_lowercase()
        );
        let db = Self { kind, server, name };
        let n = &db.name;
        match kind {
            Kind::Postgres => {
                db.admin(&format!(
                    "CREATE SCHEMA {n}; CREATE TABLE {n}.manage_device (
                       id serial PRIMARY KEY,
                       device_sn varchar(32) NOT NULL UNIQUE,
                       device_name varchar(64) NOT NULL DEFAULT 'undefined',
                       workspace_id varchar(64) NOT NULL DEFAULT '');
                     CREATE TABLE {n}.workspace (
                       workspace_id varchar(64) PRIMARY KEY,
                       storage_profile varchar(64) NOT NULL DEFAULT '')"
                ))
                .await;
            }
            Kind::MariaDb => {
                db.admin(&format!(
                    "CREATE DATABASE {n}; CREATE TABLE {n}.manage_device (
                       id int unsigned NOT NULL AUTO_INCREMENT PRIMARY KEY,
                       device_sn varchar(32) NOT NULL UNIQUE,
                       device_name varchar(64) NOT NULL DEFAULT 'undefined',
                       workspace_id varchar(64) NOT NULL DEFAULT ''
                     ) DEFAULT CHARSET=utf8mb4;
                     CREATE TABLE {n}.workspace (
                       workspace_id varchar(64) PRIMARY KEY,
                       storage_profile varchar(64) NOT NULL DEFAULT ''
                     ) DEFAULT CHARSET=utf8mb4"
                ))
                .await;
            }
        }
        db
    }

    /// Runs statements as the administrator.
    async fn admin(&self, sql: &str) {
        let sql = AssertSqlSafe(sql.to_owned());
        let result = match self.kind {
            Kind::Postgres => {
                let url = format!("postgres://postgres@{}/test", self.server);
                let pool = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL at {url} (scripts/test.sh starts it): {e}")
                });
                let r = sqlx::raw_sql(sql).execute(&pool).await.map(|_| ());
                pool.close().await;
                r
            }
            Kind::MariaDb => {
                let url = format!("mysql://root@{}/mysql", self.server);
                let pool = sqlx::MySqlPool::connect(&url).await.unwrap_or_else(|e| {
                    panic!("MariaDB at {url} (scripts/test.sh starts it): {e}")
                });
                let r = sqlx::raw_sql(sql).execute(&pool).await.map(|_| ());
                pool.close().await;
                r
            }
        };
        result.unwrap_or_else(|e| panic!("admin statement failed: {e}"));
    }

    fn admin_user(&self) -> &'static str {
        match self.kind {
            Kind::Postgres => "postgres",
            Kind::MariaDb => "root",
        }
    }

    /// Binds (or rebinds) a gateway.
    async fn bind(&self, sn: &str, workspace: &str) {
        let n = &self.name;
        let upsert = match self.kind {
            Kind::Postgres => format!(
                "INSERT INTO {n}.manage_device (device_sn, workspace_id) VALUES ('{sn}', '{workspace}')
                 ON CONFLICT (device_sn) DO UPDATE SET workspace_id = EXCLUDED.workspace_id"
            ),
            Kind::MariaDb => format!(
                "INSERT INTO {n}.manage_device (device_sn, workspace_id) VALUES ('{sn}', '{workspace}')
                 ON DUPLICATE KEY UPDATE workspace_id = VALUES(workspace_id)"
            ),
        };
        self.admin(&upsert).await;
    }

    /// Routes (or reroutes) a workspace to a storage profile.
    async fn route(&self, workspace: &str, profile: &str) {
        let n = &self.name;
        let upsert = match self.kind {
            Kind::Postgres => format!(
                "INSERT INTO {n}.workspace (workspace_id, storage_profile) VALUES ('{workspace}', '{profile}')
                 ON CONFLICT (workspace_id) DO UPDATE SET storage_profile = EXCLUDED.storage_profile"
            ),
            Kind::MariaDb => format!(
                "INSERT INTO {n}.workspace (workspace_id, storage_profile) VALUES ('{workspace}', '{profile}')
                 ON DUPLICATE KEY UPDATE storage_profile = VALUES(storage_profile)"
            ),
        };
        self.admin(&upsert).await;
    }

    /// The URL the service uses, through `via` (host:port), without a password.
    fn url(&self, via: &str, user: &str) -> String {
        match self.kind {
            Kind::Postgres => format!(
                "postgres://{user}@{via}/test?options[search_path]={}",
                self.name
            ),
            Kind::MariaDb => format!("mysql://{user}@{via}/{}", self.name),
        }
    }

    async fn drop(self) {
        let n = &self.name;
        match self.kind {
            Kind::Postgres => self.admin(&format!("DROP SCHEMA {n} CASCADE")).await,
            Kind::MariaDb => self.admin(&format!("DROP DATABASE {n}")).await,
        }
    }
}

fn prefix(reply: &Value) -> &str {
    reply["data"]["output"]["object_key_prefix"]
        .as_str()
        .unwrap_or_else(|| panic!("credentials expected: {reply}"))
}

async fn ask(svc: &TestService, sn: &str) -> Value {
    let mut dock = svc.dock(sn).await;
    dock.request(&storage_config_get(&format!("tid-{sn}"), "1"))
        .await
}

/// One scenario for both databases: lookups, rebinding, an outage and the recovery.
async fn docks_are_bound_by_the_platform_database(kind: Kind) {
    let db = Db::create(kind).await;
    db.bind("SQLGW0001", "ws-sql-a").await;
    db.bind("SQLGW0002", "").await; // the DJI demo's "not bound"
    db.bind("SQLGW0003", "ws-sql-c").await;
    let link = Link::to(&db.server).await;
    let (user, password) = match kind {
        // PostgreSQL here trusts local connections; MariaDB gets a read-only user with a
        // password given apart from the URL, as a production deployment would.
        Kind::Postgres => ("postgres".to_owned(), None),
        Kind::MariaDb => {
            let user = format!("{}_ro", db.name);
            for host in ["%", "localhost"] {
                db.admin(&format!(
                    "CREATE USER '{user}'@'{host}' IDENTIFIED BY 'ro-pass';
                     GRANT SELECT ON {}.manage_device TO '{user}'@'{host}'",
                    db.name
                ))
                .await;
            }
            (user, Some("ro-pass"))
        }
    };
    let mut options = Options::default()
        .env(
            "STSGATE_DEVICES__SQL__URL",
            &db.url(&link.addr.to_string(), &user),
        )
        .env("STSGATE_DEVICES__SQL__CACHE_TTL", "1s")
        .env("STSGATE_DEVICES__SQL__UNBOUND_TTL", "1s")
        .env("STSGATE_DEVICES__SQL__TIMEOUT", "1s")
        // Without a default workspace, a gateway the database does not bind is refused.
        .env("STSGATE_DEVICES__DEFAULT_WORKSPACE", "")
        .env("STSGATE_DEVICES__BIND__STATICGW1", "ws-static");
    if let Some(password) = password {
        options = options.env("STSGATE_DEVICES__SQL__PASSWORD", password);
    }
    let svc = options.start().await;

    let reply = ask(&svc, "SQLGW0001").await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    assert_eq!(prefix(&reply), "ws-sql-a");
    for unbound in ["SQLGW0002", "SQLGW9999"] {
        let reply = ask(&svc, unbound).await;
        assert_eq!(reply["data"]["result"], 10404, "{reply}");
        assert!(reply["data"]["output"].get("credentials").is_none());
    }
    // The static table comes first and needs no database.
    assert_eq!(prefix(&ask(&svc, "STATICGW1").await), "ws-static");

    // Bound on the platform: served once the "not bound" answer has expired.
    db.bind("SQLGW0002", "ws-sql-b").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = ask(&svc, "SQLGW0002").await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    assert_eq!(prefix(&reply), "ws-sql-b");

    // The database becomes unreachable, and the cached answers expire.
    let stale_before = svc
        .counter("stsgate_registry_lookups_total", r#"outcome="stale""#)
        .await;
    link.cut();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = ask(&svc, "SQLGW0001").await;
    assert_eq!(
        reply["data"]["result"], 0,
        "a known dock keeps working: {reply}"
    );
    assert_eq!(prefix(&reply), "ws-sql-a");
    let reply = ask(&svc, "SQLGW0003").await;
    assert_eq!(reply["data"]["result"], 10503, "{reply}");
    let message = reply["data"]["output"]["message"].as_str().unwrap();
    assert!(message.contains("registry is unavailable"), "{message}");
    assert!(reply["data"]["output"].get("credentials").is_none());
    assert_eq!(prefix(&ask(&svc, "STATICGW1").await), "ws-static");
    let stale_after = svc
        .counter("stsgate_registry_lookups_total", r#"outcome="stale""#)
        .await;
    assert!(stale_after > stale_before, "stale answers are counted");

    // Back again: the dock it could not answer for is served.
    link.restore();
    let reply = ask(&svc, "SQLGW0003").await;
    assert_eq!(reply["data"]["result"], 0, "{reply}");
    assert_eq!(prefix(&reply), "ws-sql-c");

    svc.stop().await;
    if let Some(user) = password.map(|_| user) {
        for host in ["%", "localhost"] {
            db.admin(&format!("DROP USER '{user}'@'{host}'")).await;
        }
    }
    db.drop().await;
}

#[tokio::test]
async fn postgres_binds_docks_to_workspaces() {
    docks_are_bound_by_the_platform_database(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_binds_docks_to_workspaces() {
    docks_are_bound_by_the_platform_database(Kind::MariaDb).await;
}

#[tokio::test]
async fn a_query_the_database_refuses_stops_start_up() {
    for kind in [Kind::Postgres, Kind::MariaDb] {
        let db = Db::create(kind).await;
        let error = Options::default()
            .env(
                "STSGATE_DEVICES__SQL__URL",
                &db.url(&db.server, db.admin_user()),
            )
            .env(
                "STSGATE_DEVICES__SQL__QUERY",
                "SELECT workspace FROM no_such_table WHERE sn = $1",
            )
            .try_start()
            .await
            .err()
            .expect("start-up refused");
        assert!(error.contains("devices.sql.query"), "{error}");
        assert!(!error.contains("ro-pass"), "{error}");
        let error = Options::default()
            .env(
                "STSGATE_WORKSPACES__SQL__URL",
                &db.url(&db.server, db.admin_user()),
            )
            .env(
                "STSGATE_WORKSPACES__SQL__QUERY",
                "SELECT profile FROM no_such_table WHERE id = $1",
            )
            .try_start()
            .await
            .err()
            .expect("start-up refused");
        assert!(error.contains("workspaces.sql.query"), "{error}");
        db.drop().await;
    }
}

#[tokio::test]
async fn a_database_down_at_start_up_does_not_stop_the_service() {
    // Nothing listens behind a cut link.
    let link = Link::to("127.0.0.1:9").await;
    link.cut();
    let svc = Options::default()
        .env(
            "STSGATE_DEVICES__SQL__URL",
            &format!("postgres://stsgate:secret-pw@{}/platform", link.addr),
        )
        .env("STSGATE_DEVICES__SQL__TIMEOUT", "500ms")
        .env("STSGATE_DEVICES__DEFAULT_WORKSPACE", "")
        .env("STSGATE_DEVICES__BIND__STATICGW2", "ws-static")
        .start()
        .await;
    assert_eq!(prefix(&ask(&svc, "STATICGW2").await), "ws-static");
    let reply = ask(&svc, "SQLGW0100").await;
    assert_eq!(reply["data"]["result"], 10503, "{reply}");
    assert!(!reply.to_string().contains("secret-pw"), "{reply}");
    svc.stop().await;
}

/// `[workspaces.sql]`: the platform's database names each workspace's storage profile. The
/// order is `[workspaces.profile]`, then the database, then the default; a reroute is picked up
/// after `unbound_ttl`; an answer naming no profile is refused (10500), and while the database
/// is cut off a workspace it answered for before keeps its profile while one it never answered
/// for is refused (503), never sent to the default profile.
async fn workspaces_are_routed_by_the_platform_database(kind: Kind) {
    let moto = common::Moto::start();
    moto.s3()
        .create_bucket()
        .bucket("site-media")
        .send()
        .await
        .expect("bucket");
    let db = Db::create(kind).await;
    db.route("ws-sql-1", "site").await;
    db.route("ws-sql-2", "").await;
    db.route("ws-sql-3", "nowhere").await;
    db.route("ws-pinned", "site").await;
    let link = Link::to(&db.server).await;
    let query = match kind {
        Kind::Postgres => "SELECT storage_profile FROM workspace WHERE workspace_id = $1",
        Kind::MariaDb => "SELECT storage_profile FROM workspace WHERE workspace_id = ?",
    };
    let file = format!(
        "[profiles.site]\nprovider = \"minio\"\nbucket = \"site-media\"\n\
         sts_endpoint = \"{}\"\naccess_key_id = \"AKIASITEEXAMPLE00000\"\nduration = \"900s\"\n\n\
         [workspaces.profile]\nws-pinned = \"default\"\n\n\
         [workspaces.sql]\nquery = \"{query}\"\ncache_ttl = \"1s\"\nunbound_ttl = \"1s\"\n\
         timeout = \"1s\"\n",
        moto.url
    );
    let svc = Options::default()
        .file(&file)
        .env(
            "STSGATE_WORKSPACES__SQL__URL",
            &db.url(&link.addr.to_string(), db.admin_user()),
        )
        .env("STSGATE_PROFILES__SITE__SECRET_ACCESS_KEY", "site-secret")
        .start()
        .await;
    let pilot = |ws: &'static str| {
        let svc = &svc;
        async move { svc.sts(ws, Some(&svc.token(ws))).await }
    };
    let bucket = |body: &Value| body["data"]["bucket"].as_str().map(str::to_owned);

    let (status, body) = pilot("ws-sql-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bucket(&body).as_deref(), Some("site-media"), "{body}");
    assert_eq!(body["data"]["provider"], "minio");
    let (_, body) = pilot("ws-sql-2").await;
    assert_eq!(
        bucket(&body).as_deref(),
        Some("media"),
        "'' is the default: {body}"
    );
    let (_, body) = pilot("ws-unknown").await;
    assert_eq!(bucket(&body).as_deref(), Some("media"), "no row: {body}");
    let (_, body) = pilot("ws-pinned").await;
    assert_eq!(
        bucket(&body).as_deref(),
        Some("media"),
        "the file comes first: {body}"
    );
    let (status, body) = pilot("ws-sql-3").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.get("data").is_none(), "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("no usable storage profile for workspace ws-sql-3"),
        "{body}"
    );

    db.route("ws-sql-2", "site").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (_, body) = pilot("ws-sql-2").await;
    assert_eq!(
        bucket(&body).as_deref(),
        Some("site-media"),
        "rerouted: {body}"
    );

    link.cut();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = pilot("ws-sql-1").await;
    assert_eq!(
        status, 200,
        "a workspace answered for before keeps its profile: {body}"
    );
    assert_eq!(bucket(&body).as_deref(), Some("site-media"));
    let (status, body) = pilot("ws-never-seen").await;
    assert_eq!(
        status, 503,
        "never the default while the database is away: {body}"
    );
    assert!(body.get("data").is_none(), "{body}");
    let (status, body) = pilot("ws-pinned").await;
    assert_eq!(
        (status.as_u16(), bucket(&body).as_deref()),
        (200, Some("media"))
    );

    link.restore();
    let (status, body) = pilot("ws-never-seen").await;
    assert_eq!(
        (status.as_u16(), bucket(&body).as_deref()),
        (200, Some("media")),
        "{body}"
    );
    svc.stop().await;
    db.drop().await;
}

#[tokio::test]
async fn postgres_routes_workspaces_to_profiles() {
    workspaces_are_routed_by_the_platform_database(Kind::Postgres).await;
}

#[tokio::test]
async fn mariadb_routes_workspaces_to_profiles() {
    workspaces_are_routed_by_the_platform_database(Kind::MariaDb).await;
}
