//! What the integration tests share, one concern a module: agents on loopback (`cluster`),
//! their HTTP API decoded into the crate's own answer types (`http`), process figures from
//! /proc (`procfs`), the swimd binary and system tools (`tools`), and HAProxy in front of
//! web hosts (`haproxy`).
//!
//! A test file declares it `pub mod support;`: the helpers it does not use are then public
//! items of the test crate, which rustc does not report as dead code.

pub mod cluster;
pub mod haproxy;
pub mod http;
pub mod procfs;
pub mod tools;
