//! Wire types only, no I/O: the MQTT `storage_config_get` request/reply envelope, the HTTP
//! envelope, and the `StorageConfig` object both fronts return (see `spec/` for the contract).
//!
//! Decoding is lenient where devices in the field vary (`timestamp` as a number, a numeric string,
//! or missing; extra fields ignored); encoding is strict and matches the spec examples field for
//! field.

mod code;
pub mod http;
pub mod mqtt;
mod storage_config;
mod timestamp;

pub use code::ResultCode;
pub use storage_config::{Credentials, Provider, Rendered, RenderedOnce, StorageConfig};
pub use timestamp::{Timestamp, now_millis};
