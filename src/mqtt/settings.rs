//! Where and how the service's MQTT session connects: the broker address, the protocol version
//! and the settings derived from `[mqtt]`, shared by the client face and the session loop.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::QoS;

use crate::config::MqttConfig;
use crate::protocol::mqtt::REQUESTS_FILTER;
use crate::random;
use crate::secret::Secret;

/// The MQTT protocol version spoken to the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// MQTT 3.1.1.
    V311,
    /// MQTT 5.
    V5,
}

/// Where the broker is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// TLS (`mqtts://`).
    pub tls: bool,
}

/// Why a broker URL was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// Neither `mqtt://` nor `mqtts://`.
    #[error("`{0}` does not start with mqtt:// or mqtts://")]
    Scheme(String),
    /// The port is not a number from 0 to 65535.
    #[error("`{0}` is not a port")]
    Port(String),
    /// Nothing between the scheme and the port.
    #[error("`{0}` has no host")]
    NoHost(String),
}

/// Session settings derived from `[mqtt]`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The broker.
    pub broker: BrokerAddr,
    /// Client id.
    pub client_id: String,
    /// Username and password.
    pub credentials: Option<(String, Secret)>,
    /// The subscription filter (with `$share/{group}/` when sharing).
    pub filter: String,
    /// QoS of replies.
    pub reply_qos: QoS,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Largest payload handled.
    pub max_payload: usize,
    /// Keep the broker session across reconnects (when the client id is configured).
    pub persistent: bool,
    /// The TLS client configuration, for `mqtts://`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// MQTT 3.1.1 or 5.
    pub protocol: Protocol,
}

// === impl BrokerAddr ===

impl BrokerAddr {
    /// Parses `mqtt://host[:port]` (port 1883 by default) or `mqtts://host[:port]` (TLS, port
    /// 8883 by default).
    pub fn parse(url: &str) -> Result<Self, AddrError> {
        let (rest, tls) = match (url.strip_prefix("mqtt://"), url.strip_prefix("mqtts://")) {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err(AddrError::Scheme(url.to_owned())),
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => (
                host,
                port.parse().map_err(|_| AddrError::Port(port.to_owned()))?,
            ),
            _ => (rest, if tls { 8883 } else { 1883 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(AddrError::NoHost(url.to_owned()));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

impl std::fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

// === impl Settings ===

impl Settings {
    /// Settings for `broker` from `[mqtt]`; `password` is the resolved secret, if any; `tls` the
    /// client configuration when the broker is `mqtts://`.
    pub fn new(
        config: &MqttConfig,
        broker: BrokerAddr,
        password: Option<Secret>,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let client_id = config.client_id.clone().unwrap_or_else(|| {
            format!(
                "stsgate-{}",
                random::string(random::BASE32, 10)
                    .unwrap_or_else(|_| "0".to_owned())
                    .to_lowercase()
            )
        });
        let filter = match &config.share_group {
            Some(group) => format!("$share/{group}/{REQUESTS_FILTER}"),
            None => REQUESTS_FILTER.to_owned(),
        };
        let reply_qos = match config.reply_qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        let credentials = config
            .username
            .clone()
            .map(|u| (u, password.unwrap_or_default()));
        Self {
            broker,
            client_id,
            credentials,
            filter,
            reply_qos,
            keep_alive: config.keep_alive,
            max_payload: config.max_payload,
            persistent: config.client_id.is_some(),
            tls,
            protocol: if config.protocol == crate::config::MqttProtocol::V5 {
                Protocol::V5
            } else {
                Protocol::V311
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let p = |s| BrokerAddr::parse(s);
        assert_eq!(
            p("mqtt://127.0.0.1:1884"),
            Ok(BrokerAddr {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false,
            })
        );
        assert_eq!(
            p("mqtt://broker.local"),
            Ok(BrokerAddr {
                host: "broker.local".into(),
                port: 1883,
                tls: false,
            })
        );
        assert_eq!(
            p("mqtt://[::1]:1999"),
            Ok(BrokerAddr {
                host: "::1".into(),
                port: 1999,
                tls: false,
            })
        );
        assert_eq!(
            p("mqtts://broker.example.com"),
            Ok(BrokerAddr {
                host: "broker.example.com".into(),
                port: 8883,
                tls: true,
            })
        );
        assert_eq!(
            p("mqtts://broker.example.com").unwrap().to_string(),
            "mqtts://broker.example.com:8883"
        );
        assert!(p("mqtt://host:port").is_err());
        assert!(p("mqtt://").is_err());
        assert!(p("tcp://x:1").is_err());
    }
}
