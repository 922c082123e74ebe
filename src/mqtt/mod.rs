//! The MQTT front: one client session to the broker (embedded or external), subscribed to every
//! gateway's requests topic; each `storage_config_get` is answered on the gateway's
//! `requests_reply` topic.

mod client;
mod dispatch;
mod reply;
mod session;
mod settings;
pub mod tls;

pub use dispatch::{Answer, handle};
pub use session::run;
pub use settings::{AddrError, BrokerAddr, Protocol, Settings};
