//! swimd: a membership and failure-detection daemon (SWIM + Lifeguard over QUIC).
//!
//! Data flows one way: `wire` decodes bytes into messages, `core` (sans-IO) turns messages
//! and time into transmits and events, and the drivers (`sim`, later `agent`) move them.

#![warn(missing_docs)]

pub mod agent;
pub mod api;
pub mod checks;
pub mod cli;
pub mod config;
pub mod core;
pub mod haproxy;
pub mod hooks;
pub mod metrics;
pub mod model;
pub mod net;
pub mod process;
pub mod serve;
pub mod sim;
pub mod wire;

/// The version and source revision, as `swimd --version` prints them.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SWIMD_REVISION"), ")");
