//! The ready banner `stsgate serve` prints on stdout once its listeners are bound:
//!
//! ```text
//! stsgate is ready
//!   HTTP API     http://127.0.0.1:6789  (POST …)
//!   MQTT broker  mqtt://127.0.0.1:1883 (embedded); …
//!   storage      local credentials for …
//!   S3 store     http://127.0.0.1:9000 (embedded), …
//! ```
//!
//! Tests and the bench start the binary with every listener on port 0 and learn the addresses
//! from here.

use std::io::{BufRead, BufReader, Read};

/// `serve` with every listener on a free port (the addresses are then read from the banner).
pub const SERVE_ON_FREE_PORTS: [&str; 7] = [
    "serve",
    "--http-listen",
    "127.0.0.1:0",
    "--mqtt-embedded-listen",
    "127.0.0.1:0",
    "--storage-local-listen",
    "127.0.0.1:0",
];
use std::sync::mpsc;
use std::time::Duration;

/// The addresses the banner names.
#[derive(Clone, Debug)]
pub struct Banner {
    /// `host:port` of the HTTP API.
    pub http: String,
    /// The broker the service uses, `mqtt://host:port` (embedded or external).
    pub mqtt: String,
    /// `host:port` of the embedded S3 store, when there is one.
    pub store: Option<String>,
}

/// Reads the banner from a `stsgate serve` child's stdout, in a thread that then keeps draining
/// it (so the child never blocks on a full pipe); `None` if no banner came within `within`.
pub fn read(stdout: impl Read + Send + 'static, within: Duration) -> Option<Banner> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            for label in ["HTTP API", "MQTT broker", "storage", "S3 store"] {
                if let Some(rest) = line.trim().strip_prefix(label) {
                    let value = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send((label, value.to_owned()));
                }
            }
        }
    });
    let (mut http, mut mqtt, mut store) = (None, None, None);
    loop {
        let (label, value) = rx.recv_timeout(within).ok()?;
        match label {
            "HTTP API" => http = Some(value.trim_start_matches("http://").to_owned()),
            "MQTT broker" => mqtt = Some(value),
            "S3 store" => store = Some(value.trim_start_matches("http://").to_owned()),
            // "storage" comes before "S3 store", and the banner is one write: the store line,
            // if any, is already there.
            _ => {
                if let Ok(("S3 store", value)) = rx.recv_timeout(Duration::from_millis(200)) {
                    store = Some(value.trim_start_matches("http://").to_owned());
                }
                break;
            }
        }
        if store.is_some() {
            break;
        }
    }
    Some(Banner {
        http: http?,
        mqtt: mqtt?,
        store,
    })
}
