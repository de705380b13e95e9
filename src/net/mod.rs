//! QUIC transport: endpoint, connection pool and mutual TLS.

pub mod tls;
pub mod transport;
