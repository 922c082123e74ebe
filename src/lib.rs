//! stsgate hands out short-lived, least-privilege object-storage credentials to DJI Cloud API
//! devices so that they can upload media straight into a bucket.
//!
//! ```text
//!  dock ──MQTT── thing/product/{sn}/requests ──▶ mqtt ─┐
//!                                                      ├─▶ Gateway ─▶ Cache ─▶ Issuer ─▶ STS
//!  Pilot 2 ─HTTP─ POST /storage/api/v1/workspaces/{id}/sts ─▶ http ─┘   (single-flight,
//!                                                                        refresh-ahead)
//! ```
//!
//! Both fronts parse and authenticate ([`auth`], [`registry`]), the [`gateway`] resolves the
//! scope, the [`cache`] asks the [`issuer`] once per scope however many requests wait, and both
//! fronts serialize the same [`protocol::StorageConfig`].

pub mod app;
pub mod auth;
pub mod cache;
pub mod check;
pub mod config;
pub mod control;
pub mod domain;
pub mod embedded;
pub mod files;
pub mod gateway;
pub mod http;
pub mod issuer;
pub mod mqtt;
pub mod net;
pub mod protocol;
pub mod random;
pub mod registry;
pub mod secret;
pub mod source;
pub mod telemetry;
