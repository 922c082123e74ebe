//! Test harness: the whole service in-process on free ports with its own data dir, a dock
//! (rumqttc, MQTT 3.1.1) and Pilot 2 (reqwest). Each test gets its own service, workspace or
//! serial numbers, so tests run in parallel.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod s3;
pub mod served;

use std::io::Write;
use std::time::Duration;

use reqwest::StatusCode;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use stsgate::app::Service;
use stsgate::config::{self, Sources};
use stsgate::mqtt::BrokerAddr;
use stsgate::secret::Secret;
use tempfile::TempDir;
use tokio::sync::mpsc;

/// How long a test waits for an answer that must come.
pub const ANSWER: Duration = Duration::from_secs(10);
/// How long a test waits to conclude that no answer comes.
pub const SILENCE: Duration = Duration::from_millis(600);

/// A running service and what a test needs to talk to it.
pub struct TestService {
    pub service: Service,
    pub data: TempDir,
    /// The service's data dir (in `data` unless [`Options::data_dir`] put it elsewhere).
    pub data_dir: std::path::PathBuf,
    pub base_url: String,
    /// Where its configuration came from, to read again ([`Service::reload`]).
    pub sources: Sources,
    http: reqwest::Client,
}

/// Builder for a test service.
#[derive(Default)]
pub struct Options {
    env: Vec<(String, String)>,
    file: Option<String>,
    data: Option<TempDir>,
    data_dir: Option<std::path::PathBuf>,
    unready: bool,
}

impl Options {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn file(mut self, toml: &str) -> Self {
        self.file = Some(toml.to_owned());
        self
    }

    /// Returns without waiting for the MQTT subscription (for tests where it must not happen).
    pub fn unready(mut self) -> Self {
        self.unready = true;
        self
    }

    /// Reuses the data dir of an earlier (stopped) service: a restart.
    pub fn data(mut self, data: TempDir) -> Self {
        self.data = Some(data);
        self
    }

    /// Keeps the service's data in `dir` (which the test owns) instead of the temp dir.
    pub fn data_dir(mut self, dir: &std::path::Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    pub async fn start(self) -> TestService {
        self.try_start().await.expect("service starts")
    }

    /// Starts the service, or returns why it refused to start.
    pub async fn try_start(self) -> Result<TestService, String> {
        let data = self
            .data
            .unwrap_or_else(|| tempfile::tempdir().expect("data dir"));
        let file = self.file.map(|text| {
            let path = data.path().join("stsgate.toml");
            std::fs::File::create(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .expect("config file");
            path
        });
        let data_dir = self.data_dir.unwrap_or_else(|| data.path().join("data"));
        let flags = vec![
            ("data_dir".to_owned(), data_dir.display().to_string()),
            ("http.listen".to_owned(), "127.0.0.1:0".to_owned()),
            ("mqtt.embedded_listen".to_owned(), "127.0.0.1:0".to_owned()),
            ("storage.local.listen".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        let sources = Sources {
            file,
            env: self.env,
            flags,
        };
        let config = config::load(&sources).expect("valid test config");
        let service = Service::start(config).await.map_err(|e| e.to_string())?;
        assert!(
            self.unready || service.wait_ready(ANSWER).await,
            "MQTT session subscribed"
        );
        let base_url = format!("http://{}", service.http_addr);
        Ok(TestService {
            service,
            data,
            data_dir,
            base_url,
            sources,
            http: reqwest::Client::new(),
        })
    }
}

impl TestService {
    /// The embedded default on free ports.
    pub async fn start() -> Self {
        Options::default().start().await
    }

    /// The JWT secret the service uses (generated into its data dir unless configured).
    pub fn secret(&self) -> Secret {
        let path = self.data_dir.join("jwt_secret");
        Secret::new(
            std::fs::read_to_string(path)
                .expect("generated secret")
                .trim(),
        )
    }

    /// A valid token for `workspace`, signed with the service's secret.
    pub fn token(&self, workspace: &str) -> String {
        stsgate::auth::mint(
            &self.secret(),
            workspace,
            "pilot",
            Duration::from_secs(3600),
            None,
        )
        .expect("token")
    }

    /// `POST /storage/api/v1/workspaces/{workspace}/sts` as Pilot 2 does it.
    pub async fn sts(&self, workspace: &str, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self
            .http
            .post(format!(
                "{}/storage/api/v1/workspaces/{workspace}/sts",
                self.base_url
            ))
            .header("content-type", "application/json");
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        let response = request.send().await.expect("HTTP answer");
        let status = response.status();
        let body = response.json().await.expect("JSON body");
        (status, body)
    }

    /// A GET on any path: status and body text.
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
            .expect("HTTP answer");
        (response.status(), response.text().await.expect("body"))
    }

    /// A dock with serial number `sn` connected to the service's broker.
    pub async fn dock(&self, sn: &str) -> Dock {
        Dock::connect(&self.service.broker, sn).await
    }

    /// The embedded store's address.
    pub fn store_url(&self) -> String {
        format!(
            "http://{}",
            self.service.store.as_ref().expect("embedded store").addr
        )
    }

    /// An S3 client of the embedded store using the administrator key.
    pub fn admin_s3(&self) -> aws_sdk_s3::Client {
        let admin = &self.service.store.as_ref().expect("embedded store").admin;
        s3_client(
            &self.store_url(),
            &admin.access_key_id,
            admin.secret_access_key.expose(),
            None,
        )
    }

    /// An object of the embedded store's `media` bucket as the administrator reads it (devices
    /// may only write); `None` when it cannot be read.
    pub async fn read_object(&self, key: &str) -> Option<Vec<u8>> {
        let out = self
            .admin_s3()
            .get_object()
            .bucket("media")
            .key(key)
            .send()
            .await
            .ok()?;
        Some(out.body.collect().await.ok()?.into_bytes().to_vec())
    }

    /// Stops the service and hands back its data dir, for a restart.
    pub async fn stop(self) -> TempDir {
        self.service.stop().await;
        self.data
    }

    /// The value of a counter with these labels on `/metrics` (0 when absent).
    pub async fn counter(&self, name: &str, labels: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        metric(&text, name, labels)
    }
}

/// Reads `name{…labels…} value` from a Prometheus exposition; every `k="v"` in `labels` must match.
pub fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            labels
                .split(',')
                .filter(|p| !p.is_empty())
                .all(|p| l.contains(p))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A dock: publishes on `thing/product/{sn}/requests`, listens on `…/requests_reply`.
pub struct Dock {
    pub sn: String,
    client: AsyncClient,
    replies: mpsc::UnboundedReceiver<Value>,
}

impl Dock {
    pub async fn connect(broker: &BrokerAddr, sn: &str) -> Self {
        Self::connect_as(broker, sn, None).await
    }

    /// A client that uses gateway `sn`'s topics, logged in as `login` (user, password).
    pub async fn connect_as(broker: &BrokerAddr, sn: &str, login: Option<(&str, &str)>) -> Self {
        let id = format!(
            "dock-{sn}-{}",
            stsgate::random::string(stsgate::random::BASE32, 6).expect("rng")
        );
        let mut options = MqttOptions::new(id, &broker.host, broker.port);
        if let Some((user, password)) = login {
            options.set_credentials(user, password);
        }
        options.set_keep_alive(Duration::from_secs(10));
        options.set_max_packet_size(2 << 20, 2 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 64);
        let (tx, replies) = mpsc::unbounded_channel();
        let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
        client
            .subscribe(
                format!("thing/product/{sn}/requests_reply"),
                QoS::AtLeastOnce,
            )
            .await
            .expect("queue subscribe");
        let (resubscribe, topic) = (client.clone(), format!("thing/product/{sn}/requests_reply"));
        tokio::spawn(async move {
            let mut subscribed = Some(subscribed_tx);
            loop {
                match eventloop.poll().await {
                    // Back after a lost connection: subscribe again, as a dock does.
                    Ok(Event::Incoming(Packet::ConnAck(_))) if subscribed.is_none() => {
                        let _ = resubscribe.try_subscribe(&topic, QoS::AtLeastOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(s) = subscribed.take() {
                            let _ = s.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let value = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                        if tx.send(value).is_err() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(ANSWER, subscribed_rx)
            .await
            .expect("dock subscribed in time")
            .expect("suback");
        Self {
            sn: sn.to_owned(),
            client,
            replies,
        }
    }

    /// Publishes a raw payload on this dock's requests topic.
    pub async fn send(&self, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(
                format!("thing/product/{}/requests", self.sn),
                QoS::AtLeastOnce,
                false,
                payload.into(),
            )
            .await
            .expect("publish queued");
    }

    /// The next reply; fails the test after [`ANSWER`].
    pub async fn reply(&mut self) -> Value {
        tokio::time::timeout(ANSWER, self.replies.recv())
            .await
            .expect("a reply in time")
            .expect("reply channel open")
    }

    /// The next reply, if one arrives within `within`.
    pub async fn try_reply(&mut self, within: Duration) -> Option<Value> {
        tokio::time::timeout(within, self.replies.recv())
            .await
            .ok()
            .flatten()
    }

    /// Sends a request and returns the reply.
    pub async fn request(&mut self, payload: &str) -> Value {
        self.send(payload).await;
        self.reply().await
    }

    /// Asserts that no reply arrives within [`SILENCE`].
    pub async fn assert_silence(&mut self, why: &str) {
        if let Ok(Some(reply)) = tokio::time::timeout(SILENCE, self.replies.recv()).await {
            panic!("expected no reply ({why}), got {reply}");
        }
    }
}

impl Drop for Dock {
    fn drop(&mut self) {
        let _ = self.client.try_disconnect();
    }
}

/// A well-formed `storage_config_get` with the given tid and timestamp JSON.
pub fn storage_config_get(tid: &str, timestamp: &str) -> String {
    format!(
        r#"{{"tid":"{tid}","bid":"bid-{tid}","method":"storage_config_get","timestamp":{timestamp},"data":{{"module":0}}}}"#
    )
}

/// An S3 client (path-style) for `endpoint` with the given keys.
pub fn s3_client(
    endpoint: &str,
    access_key: &str,
    secret: &str,
    token: Option<&str>,
) -> aws_sdk_s3::Client {
    stsgate::check::s3_client(endpoint, "us-east-1", true, access_key, secret, token)
}

/// An S3 client built from the `StorageConfig` JSON a device received, used exactly as given.
pub fn device_s3(storage_config: &Value) -> aws_sdk_s3::Client {
    let creds = &storage_config["credentials"];
    s3_client(
        storage_config["endpoint"].as_str().expect("endpoint"),
        creds["access_key_id"].as_str().expect("access key"),
        creds["access_key_secret"].as_str().expect("secret"),
        creds["security_token"].as_str(),
    )
}

/// Uploads `body` to `key` in the bucket of the `StorageConfig` JSON a device received, with
/// exactly its credentials.
pub async fn device_upload(storage_config: &Value, key: &str, body: &[u8]) {
    device_s3(storage_config)
        .put_object()
        .bucket(storage_config["bucket"].as_str().expect("bucket"))
        .key(key)
        .body(body.to_vec().into())
        .send()
        .await
        .unwrap_or_else(|e| panic!("upload of {key} with the issued credentials: {e:?}"));
}

/// A moto server (PyPI `moto[server]`) on a free port: a real AWS STS and S3 peer. Killed on drop.
pub struct Moto {
    child: std::process::Child,
    pub url: String,
}

impl Moto {
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("moto_server is installed (scripts/test.sh installs moto[server])");
        let moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("moto did not listen on {port}");
    }

    /// An S3 client of moto with any keys (moto does not enforce auth by default).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        s3_client(&self.url, "AKIAMOTOADMIN0000000", "secret", None)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP link to a real server that a test can cut and restore: while cut, open connections
/// are severed and new ones are closed at once, as when a database host becomes unreachable.
pub struct Link {
    pub addr: std::net::SocketAddr,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Link {
    pub async fn to(target: &str) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (target, up2, open2) = (target.to_owned(), up.clone(), open.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                open2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            up,
            open,
            accept,
        }
    }

    /// Severs every open connection and refuses new ones.
    pub fn cut(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for task in self.open.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// Temporary files the embedded store rooted at `root` holds (in `.tmp/{instance}/`, beside each
/// area's lock file): what an interrupted or refused upload would leave if it leaked.
#[allow(dead_code)]
pub fn store_temp_files(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for area in std::fs::read_dir(root.join(".tmp"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for file in std::fs::read_dir(area.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.file_name() != "lock" {
                out.push(file.path().display().to_string());
            }
        }
    }
    out
}
