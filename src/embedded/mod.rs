//! In-process infrastructure for the zero-setup default: the MQTT broker and the S3-compatible
//! store.

pub mod broker;
pub mod store;
