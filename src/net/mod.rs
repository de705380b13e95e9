//! QUIC transport: endpoint, connection pool and mutual TLS; the outbound HTTP client.

pub mod http;
pub mod icmp;
pub mod tls;
pub mod transport;
