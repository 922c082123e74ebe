//! The embedded MQTT broker (rumqttd, MQTT 3.1.1) for the laptop default.
//!
//! rumqttd's `start()` blocks forever on threads of its own, has no shutdown call and cannot
//! report a port it bound for `:0`; so the port is chosen here (a free one when asked for 0, and a
//! taken one is refused up front with a clear message), the broker runs on a dedicated thread for
//! the life of the process, and start-up waits until it accepts connections.
//!
//! It has no topic ACLs: any client can subscribe to another gateway's replies. Fine on loopback;
//! production uses Mosquitto or EMQX with per-device ACLs (`mqtt.url`).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use rumqttd::{Broker, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is taken or not bindable.
    #[error(
        "cannot listen on {addr} for the embedded MQTT broker: {error}. Another broker may be \
         running there: use it with STSGATE_MQTT__URL=mqtt://{addr}, or move the embedded one \
         with --mqtt-embedded-listen / STSGATE_MQTT__EMBEDDED_LISTEN"
    )]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The bind error.
        error: std::io::Error,
    },
    /// The thread could not start or the broker never accepted connections.
    #[error("the embedded MQTT broker did not start: {0}")]
    Start(String),
}

/// Starts the broker on `listen` (port 0: a free port) and returns the address it accepts on.
pub async fn start(listen: SocketAddr, max_payload: usize) -> Result<SocketAddr, Error> {
    let addr = reserve(listen)?;
    let config = config(addr, max_payload);
    std::thread::Builder::new()
        .name("mqtt-broker".to_owned())
        .spawn(move || {
            if let Err(e) = Broker::new(config).start() {
                tracing::error!(error = %e, "embedded MQTT broker stopped");
            }
        })
        .map_err(|e| Error::Start(e.to_string()))?;
    wait_until_accepting(addr).await?;
    tracing::info!(%addr, "embedded MQTT broker listening");
    Ok(addr)
}

/// Checks that `listen` can be bound (and picks a port for `:0`), then releases it for rumqttd.
fn reserve(listen: SocketAddr) -> Result<SocketAddr, Error> {
    let probe = TcpListener::bind(listen).map_err(|error| Error::Bind {
        addr: listen,
        error,
    })?;
    probe.local_addr().map_err(|error| Error::Bind {
        addr: listen,
        error,
    })
}

async fn wait_until_accepting(addr: SocketAddr) -> Result<(), Error> {
    let connect_to = match addr.ip() {
        ip if ip.is_unspecified() => SocketAddr::from(([127, 0, 0, 1], addr.port())),
        _ => addr,
    };
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(connect_to).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(Error::Start(format!(
        "nothing accepted connections on {addr} within 5s"
    )))
}

/// Retained per device filter: two segments of this many bytes (about 25 replies each).
const REPLY_SEGMENT_BYTES: usize = 16 * 1024;
/// Retained for the service's requests filter: four segments of this many bytes (about 430
/// requests each; a request on a connection of its own pins 10 KiB, so at most about 17 MiB).
const REQUEST_SEGMENT_BYTES: usize = 64 * 1024;

fn config(addr: SocketAddr, max_payload: usize) -> rumqttd::Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: 60_000,
        // Larger than the service's own limit, so that the service sees (and logs) oversized
        // requests instead of the broker silently dropping the client.
        max_payload_size: max_payload.saturating_mul(4).max(256 * 1024),
        max_inflight_count: 500,
        auth: None,
        external_auth: None,
        dynamic_filters: true,
    };
    let server = ServerSettings {
        name: "stsgate-v4".to_owned(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    rumqttd::Config {
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 200,
            // rumqttd keeps a log of past messages per subscription filter, bounded in payload
            // bytes, and each message kept pins the 10 KiB read buffer of the connection it came
            // on: per-device filters (a dock's `…/requests_reply`) get a small log, the service's
            // requests filter a larger one (the backlog the service may fall behind by, about
            // 1,300 requests, without losing any). With rumqttd's 4 × 4 MiB default the soak
            // grew without visible bound.
            max_segment_size: REPLY_SEGMENT_BYTES,
            max_segment_count: 2,
            custom_segment: Some(HashMap::from([(
                crate::protocol::mqtt::REQUESTS_FILTER.to_owned(),
                rumqttd::SegmentConfig {
                    max_segment_size: REQUEST_SEGMENT_BYTES,
                    max_segment_count: 4,
                },
            )])),
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("v4".to_owned(), server)])),
        ..rumqttd::Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_address_is_refused_with_a_hint() {
        let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = taken.local_addr().expect("addr");
        let err = start(addr, 65536).await.expect_err("refused").to_string();
        assert!(
            err.contains("STSGATE_MQTT__URL") && err.contains(&addr.to_string()),
            "{err}"
        );
    }

    #[tokio::test]
    async fn port_zero_gets_a_real_port() {
        let addr = start("127.0.0.1:0".parse().expect("addr"), 65536)
            .await
            .expect("started");
        assert_ne!(addr.port(), 0);
        assert!(tokio::net::TcpStream::connect(addr).await.is_ok());
    }
}
