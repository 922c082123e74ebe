//! What stsgate's integration tests and `stsgate-bench` share, in one dev-only crate: neither
//! includes the other's files. Nothing here is part of the service.

pub mod banner;
pub mod mosquitto;
