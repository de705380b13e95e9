//! The QUIC transport: one UDP socket and one quinn endpoint acting as client and server,
//! one pooled connection per peer used both ways. SWIM datagrams travel as QUIC DATAGRAM
//! frames; push-pull messages on unidirectional streams.
//!
//! Sending never waits: a datagram for a peer without a connection waits in a small
//! per-peer queue while the handshake runs, and is dropped if the handshake fails or does
//! not finish within the handshake timeout (for SWIM, a failed probe). Addresses that
//! never answer are backed off. Connection state is never a membership verdict.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::icmp::{ErrQueueSocket, IcmpStats};
use super::tls::{self, TlsIdentity};
use crate::core::Channel;
use crate::wire::{self, NodeName};

/// Datagrams queued for one peer while its handshake runs.
const QUEUE_PER_PEER: usize = 32;

/// Transport settings.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// How long a handshake may take before the peer counts as unreachable.
    pub handshake_timeout: Duration,
    /// Initial RTT estimate: LAN-sized so a lost handshake packet costs milliseconds.
    pub initial_rtt: Duration,
    /// Idle connections are closed after this.
    pub idle_timeout: Duration,
    /// Most pooled connections; the least recently used is closed beyond it.
    pub max_connections: usize,
    /// Path MTU, pinned (no discovery: it costs ~11 KB per connection).
    pub mtu: u16,
    /// First and longest wait before dialling an address that did not answer again.
    pub backoff: (Duration, Duration),
    /// Most handshakes peers may have in flight with us at once; beyond a quarter of it,
    /// an unvalidated address gets a stateless Retry first, beyond it a refusal.
    pub max_incoming_handshakes: usize,
    /// Bytes of stream messages (push-pulls) received and not yet handled, all peers
    /// together; a stream that would go past it is dropped.
    pub stream_budget: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            handshake_timeout: Duration::from_millis(500),
            initial_rtt: Duration::from_millis(10),
            // Overlay neighbours talk every second; this keeps the connections of occasional
            // partners (push-pull, link checks) too: a new handshake costs ~4.8 KB.
            idle_timeout: Duration::from_secs(180),
            max_connections: 1024,
            mtu: 1200,
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
            max_incoming_handshakes: 64,
            // Two of the largest push-pulls (16 MiB, about 200,000 members); a full view
            // of 1,000 members takes ~60 KB.
            stream_budget: 2 * wire::MAX_STREAM_LEN,
        }
    }
}

/// Bytes from a peer, with the name its certificate proves.
#[derive(Debug)]
pub struct Inbound {
    /// The peer's address (its gossip socket).
    pub from: SocketAddr,
    /// The name in the peer's certificate.
    pub peer: NodeName,
    /// The peer's certificate chain, as a credential (see `tls::ClusterKeyring`).
    pub credential: Arc<[u8]>,
    /// The bytes.
    pub payload: Bytes,
    /// How they came.
    pub channel: Channel,
    /// A stream message's share of the receive budget, given back when this is dropped
    /// (once the agent has handled it).
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Why the transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The socket could not be bound.
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// Started outside a tokio runtime (a programming error of the caller).
    #[error("the gossip transport needs a tokio runtime to run on")]
    NoRuntime,
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Counters for metrics and bandwidth figures.
#[derive(Debug, Default)]
pub struct TransportStats {
    /// SWIM datagrams handed to QUIC.
    pub datagrams_sent: AtomicU64,
    /// Their payload bytes.
    pub datagram_bytes_sent: AtomicU64,
    /// Push-pull messages sent on streams.
    pub streams_sent: AtomicU64,
    /// Their payload bytes.
    pub stream_bytes_sent: AtomicU64,
    /// SWIM datagrams received.
    pub datagrams_received: AtomicU64,
    /// Their payload bytes.
    pub datagram_bytes_received: AtomicU64,
    /// Stream messages received.
    pub streams_received: AtomicU64,
    /// Their payload bytes.
    pub stream_bytes_received: AtomicU64,
    /// Handshakes completed that we dialled.
    pub handshakes_client: AtomicU64,
    /// Handshakes completed that a peer dialled.
    pub handshakes_server: AtomicU64,
    /// Handshakes that timed out.
    pub handshake_timeouts: AtomicU64,
    /// Handshakes refused (TLS: unknown CA, bad certificate, wrong ALPN).
    pub handshake_refused: AtomicU64,
    /// Handshakes that failed otherwise.
    pub handshake_other: AtomicU64,
    /// Incoming handshakes refused because `max_incoming_handshakes` were in flight.
    pub handshakes_shed: AtomicU64,
    /// Incoming handshakes answered with a stateless Retry (address validation under load).
    pub handshakes_retried: AtomicU64,
    /// Messages dropped: peer backed off, queue full, too large, or stream failure.
    pub send_drops: AtomicU64,
    /// Received messages dropped because the agent's queue was full.
    pub receive_drops: AtomicU64,
    /// Messages not sent because the peer at the address is not the member they were for.
    pub peer_mismatches: AtomicU64,
    /// ICMP errors read from the socket's error queue.
    pub icmp: Arc<IcmpStats>,
    /// UDP datagrams and bytes (QUIC included) of connections already closed.
    closed_udp: Mutex<(u64, u64, u64, u64)>,
}

impl TransportStats {
    /// Counts one SWIM message of `len` bytes received on `channel`.
    fn received(&self, channel: Channel, len: usize) {
        let (count, bytes) = match channel {
            Channel::Datagram => (&self.datagrams_received, &self.datagram_bytes_received),
            Channel::Stream => (&self.streams_received, &self.stream_bytes_received),
        };
        count.fetch_add(1, Ordering::Relaxed);
        bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
}

/// UDP-level totals: everything QUIC sent and received, handshakes and ACKs included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireTotals {
    /// UDP datagrams sent.
    pub tx_datagrams: u64,
    /// UDP payload bytes sent.
    pub tx_bytes: u64,
    /// UDP datagrams received.
    pub rx_datagrams: u64,
    /// UDP payload bytes received.
    pub rx_bytes: u64,
}

/// A message waiting for its handshake: channel, bytes, and the member it is meant for.
type Queued = (Channel, Bytes, Option<NodeName>);

/// True if a message meant for `meant` may leave on a connection to `peer`: a message for
/// a named member goes only to a peer whose certificate carries that name (an address can
/// be reused, or named by a lying peer); seeds are addresses only.
fn for_peer(meant: Option<&NodeName>, peer: &NodeName) -> bool {
    meant.is_none_or(|m| m == peer)
}

enum PoolEntry {
    Connected {
        conn: quinn::Connection,
        /// The name in the peer's certificate.
        peer: NodeName,
        since: Instant,
        last_used: Instant,
    },
    Dialing {
        queue: VecDeque<Queued>,
    },
    Backoff {
        until: Instant,
        wait: Duration,
    },
}

struct Pool {
    peers: HashMap<SocketAddr, PoolEntry>,
}

struct Shared {
    endpoint: quinn::Endpoint,
    client: Mutex<quinn::ClientConfig>,
    transport_config: Arc<quinn::TransportConfig>,
    config: TransportConfig,
    local: SocketAddr,
    pool: Mutex<Pool>,
    inbound: mpsc::Sender<Inbound>,
    stats: TransportStats,
    stream_budget: Arc<tokio::sync::Semaphore>,
    unreachable: Mutex<Option<mpsc::Receiver<SocketAddr>>>,
}

/// A handle to the transport; clones share it.
#[derive(Clone)]
pub struct Transport {
    shared: Arc<Shared>,
}

impl Transport {
    /// Binds `bind` and starts accepting connections; received messages go to the returned
    /// channel. `reset_key` (32 bytes, kept in the state directory) lets a restarted agent
    /// reset its peers' stale connections at once.
    pub fn start(
        bind: SocketAddr,
        advertise: SocketAddr,
        identity: &TlsIdentity,
        reset_key: &[u8; 32],
        config: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        let transport_config = Arc::new(quinn_transport_config(&config));
        let (server, client) =
            quinn_configs(identity, &transport_config, config.max_incoming_handshakes)?;

        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, reset_key);
        let mut endpoint_config = quinn::EndpointConfig::new(Arc::new(key));
        endpoint_config.max_udp_payload_size(config.mtu).ok();
        let socket = std::net::UdpSocket::bind(bind)
            .map_err(|source| TransportError::Bind { addr: bind, source })?;
        let runtime = quinn::default_runtime().ok_or(TransportError::NoRuntime)?;
        let stats = TransportStats::default();
        let (socket, unreachable) = ErrQueueSocket::wrap(socket, stats.icmp.clone())
            .map_err(|source| TransportError::Bind { addr: bind, source })?;
        let endpoint = quinn::Endpoint::new_with_abstract_socket(
            endpoint_config,
            Some(server),
            socket,
            runtime,
        )
        .map_err(|source| TransportError::Bind { addr: bind, source })?;
        let (tx, rx) = mpsc::channel(4096);
        let stream_budget = Arc::new(tokio::sync::Semaphore::new(config.stream_budget));
        let shared = Arc::new(Shared {
            endpoint,
            client: Mutex::new(client),
            transport_config,
            config,
            local: advertise,
            pool: Mutex::new(Pool {
                peers: HashMap::new(),
            }),
            inbound: tx,
            stats,
            stream_budget,
            unreachable: Mutex::new(Some(unreachable)),
        });
        tokio::spawn(accept_loop(shared.clone()));
        tokio::spawn(idle_sweeper(Arc::downgrade(&shared)));
        Ok((Transport { shared }, rx))
    }

    /// The addresses whose "port unreachable" quoted a datagram of ours (see `net::icmp`),
    /// once: the crash fast path's evidence for the core.
    pub fn take_unreachable(&self) -> Option<mpsc::Receiver<SocketAddr>> {
        self.shared
            .unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Closes our connection to `addr`, if any: a verified "port unreachable" says the
    /// process behind it is gone. Kept, the dead connection took a restarted process's new
    /// one's place for a while and our messages went nowhere. (Closing on every `failed`
    /// verdict instead cost a healed partition its warm connections: 13 s to heal.)
    pub fn disconnect(&self, addr: SocketAddr) {
        let removed = {
            let mut pool = lock(&self.shared.pool);
            match pool.peers.get(&addr) {
                Some(PoolEntry::Connected { .. }) => pool.peers.remove(&addr),
                _ => None,
            }
        };
        if let Some(PoolEntry::Connected { conn, .. }) = removed {
            conn.close(0u32.into(), b"port unreachable");
        }
    }

    /// Closes every connection whose peer's certificate no longer verifies under `identity`
    /// (its CA was removed, it was revoked, or it expired); the names of those closed. New
    /// handshakes with such a peer fail from then on.
    pub fn revalidate(&self, identity: &TlsIdentity) -> Vec<String> {
        let stale: Vec<(SocketAddr, quinn::Connection)> = {
            let mut pool = lock(&self.shared.pool);
            let addrs: Vec<SocketAddr> = pool
                .peers
                .iter()
                .filter_map(|(addr, slot)| match slot {
                    PoolEntry::Connected { conn, .. } => {
                        let chain = conn
                            .peer_identity()
                            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok());
                        let valid = chain.is_some_and(|c| identity.peer_still_valid(&c));
                        (!valid).then_some(*addr)
                    }
                    _ => None,
                })
                .collect();
            addrs
                .into_iter()
                .filter_map(|addr| match pool.peers.remove(&addr) {
                    Some(PoolEntry::Connected { conn, .. }) => Some((addr, conn)),
                    _ => None,
                })
                .collect()
        };
        stale
            .into_iter()
            .map(|(addr, conn)| {
                conn.close(0u32.into(), b"certificate no longer trusted");
                tls::peer_name(&conn).map_or_else(|| addr.to_string(), |n| n.to_string())
            })
            .collect()
    }

    /// Uses new certificates for connections made from now on (SIGHUP).
    pub fn reload_tls(&self, identity: &TlsIdentity) -> Result<(), tls::TlsError> {
        let (server, client) = quinn_configs(
            identity,
            &self.shared.transport_config,
            self.shared.config.max_incoming_handshakes,
        )?;
        self.shared.endpoint.set_server_config(Some(server));
        *self.shared.client.lock().unwrap_or_else(|e| e.into_inner()) = client;
        Ok(())
    }

    /// The socket's local address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.shared.endpoint.local_addr()
    }

    /// Counters.
    pub fn stats(&self) -> &TransportStats {
        &self.shared.stats
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        connected(&lock(&self.shared.pool))
    }

    /// UDP totals over every connection, open or closed.
    pub fn wire_totals(&self) -> WireTotals {
        let closed = *lock_closed(&self.shared.stats.closed_udp);
        let mut totals = WireTotals {
            tx_datagrams: closed.0,
            tx_bytes: closed.1,
            rx_datagrams: closed.2,
            rx_bytes: closed.3,
        };
        for slot in lock(&self.shared.pool).peers.values() {
            if let PoolEntry::Connected { conn, .. } = slot {
                let s = conn.stats();
                totals.tx_datagrams += s.udp_tx.datagrams;
                totals.tx_bytes += s.udp_tx.bytes;
                totals.rx_datagrams += s.udp_rx.datagrams;
                totals.rx_bytes += s.udp_rx.bytes;
            }
        }
        totals
    }

    /// Sends without waiting: on the pooled connection, or after a handshake it starts.
    /// With `to_name`, only if the peer's certificate names that member.
    pub fn send(
        &self,
        to: SocketAddr,
        to_name: Option<&NodeName>,
        channel: Channel,
        payload: Vec<u8>,
    ) {
        let payload = Bytes::from(payload);
        let now = Instant::now();
        let shared = &self.shared;
        let mut pool = lock(&shared.pool);
        let full = pool.peers.len() >= shared.config.max_connections.saturating_mul(2);
        match pool.peers.get_mut(&to) {
            Some(PoolEntry::Connected {
                conn,
                peer,
                last_used,
                ..
            }) => {
                if !for_peer(to_name, peer) {
                    shared.stats.peer_mismatches.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                *last_used = now;
                let conn = conn.clone();
                drop(pool);
                transmit(shared, &conn, channel, payload);
            }
            Some(PoolEntry::Dialing { queue }) => {
                if queue.len() >= QUEUE_PER_PEER {
                    queue.pop_front();
                    shared.stats.send_drops.fetch_add(1, Ordering::Relaxed);
                }
                queue.push_back((channel, payload, to_name.cloned()));
            }
            Some(PoolEntry::Backoff { until, .. }) if *until > now => {
                shared.stats.send_drops.fetch_add(1, Ordering::Relaxed);
            }
            // Dialling and backed-off addresses are bounded too (the sweeper forgets old
            // backoffs): as many as there may be connections.
            None if full => {
                shared.stats.send_drops.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                let wait = match pool.peers.get(&to) {
                    Some(PoolEntry::Backoff { wait, .. }) => *wait,
                    _ => Duration::ZERO,
                };
                pool.peers.insert(
                    to,
                    PoolEntry::Dialing {
                        queue: VecDeque::from([(channel, payload, to_name.cloned())]),
                    },
                );
                drop(pool);
                tokio::spawn(dial(self.shared.clone(), to, wait));
            }
        }
    }

    /// Closes every connection (a graceful leave has been sent) and waits briefly for the
    /// close frames to go out.
    pub async fn shutdown(&self) {
        self.shared.endpoint.close(0u32.into(), b"bye");
        let _ = tokio::time::timeout(Duration::from_millis(200), self.shared.endpoint.wait_idle())
            .await;
    }
}

fn quinn_configs(
    identity: &TlsIdentity,
    transport: &Arc<quinn::TransportConfig>,
    max_incoming_handshakes: usize,
) -> Result<(quinn::ServerConfig, quinn::ClientConfig), tls::TlsError> {
    let mut server = identity.quinn_server_config()?;
    server.transport_config(transport.clone());
    // What quinn buffers for connections not yet accepted (its defaults: 65,536 of them,
    // 100 MiB): a flood of Initials must not grow the agent.
    server
        .max_incoming(max_incoming_handshakes.saturating_mul(2).max(1))
        .incoming_buffer_size(64 << 10)
        .incoming_buffer_size_total(4 << 20);
    let mut client = identity.quinn_client_config()?;
    client.transport_config(transport.clone());
    Ok((server, client))
}

fn quinn_transport_config(config: &TransportConfig) -> quinn::TransportConfig {
    let mut tc = quinn::TransportConfig::default();
    tc.initial_rtt(config.initial_rtt);
    tc.max_idle_timeout(config.idle_timeout.try_into().ok());
    tc.keep_alive_interval(None);
    tc.mtu_discovery_config(None);
    tc.initial_mtu(config.mtu);
    tc.min_mtu(config.mtu);
    tc.datagram_receive_buffer_size(Some(1 << 20));
    tc.datagram_send_buffer_size(1 << 20);
    tc.max_concurrent_bidi_streams(0u32.into());
    // Each stream message is its own short stream, a few at a time per peer. quinn keeps a
    // map entry per stream the peer may open (massif: ~3.2 KB per connection at 64).
    tc.max_concurrent_uni_streams(16u32.into());
    tc
}

fn lock(pool: &Mutex<Pool>) -> MutexGuard<'_, Pool> {
    // A panic while holding the lock cannot leave the map half-updated in a way that
    // matters more than stopping gossip would: keep going with what is there.
    pool.lock().unwrap_or_else(|e| e.into_inner())
}

fn lock_closed(m: &Mutex<(u64, u64, u64, u64)>) -> MutexGuard<'_, (u64, u64, u64, u64)> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn transmit(shared: &Arc<Shared>, conn: &quinn::Connection, channel: Channel, payload: Bytes) {
    let stats = &shared.stats;
    match channel {
        Channel::Datagram => {
            let len = payload.len() as u64;
            match conn.send_datagram(payload) {
                Ok(()) => {
                    stats.datagrams_sent.fetch_add(1, Ordering::Relaxed);
                    stats.datagram_bytes_sent.fetch_add(len, Ordering::Relaxed);
                }
                Err(e) => {
                    debug!(peer = %conn.remote_address(), error = %e, "datagram not sent");
                    stats.send_drops.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        Channel::Stream => {
            let conn = conn.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                let len = payload.len() as u64;
                let result = async {
                    let mut stream = conn.open_uni().await?;
                    stream.write_all(&payload).await?;
                    stream.finish()?;
                    Ok::<_, anyhow::Error>(())
                };
                match tokio::time::timeout(Duration::from_secs(10), result).await {
                    Ok(Ok(())) => {
                        shared.stats.streams_sent.fetch_add(1, Ordering::Relaxed);
                        shared
                            .stats
                            .stream_bytes_sent
                            .fetch_add(len, Ordering::Relaxed);
                    }
                    _ => {
                        shared.stats.send_drops.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    }
}

async fn dial(shared: Arc<Shared>, to: SocketAddr, previous_wait: Duration) {
    let client = shared
        .client
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // rustls keys session tickets by server name: one name per peer lets resumption work.
    let outcome = match shared
        .endpoint
        .connect_with(client, to, &to.ip().to_string())
    {
        Ok(connecting) => {
            match tokio::time::timeout(shared.config.handshake_timeout, connecting).await {
                Ok(Ok(conn)) => Ok(conn),
                Ok(Err(e)) => Err(classify(&shared, &e)),
                Err(_) => {
                    shared
                        .stats
                        .handshake_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    Err("timeout")
                }
            }
        }
        Err(e) => {
            debug!(peer = %to, error = %e, "cannot dial");
            shared.stats.handshake_other.fetch_add(1, Ordering::Relaxed);
            Err("connect")
        }
    };
    match outcome {
        Ok(conn) => register(&shared, conn, true),
        Err(reason) => {
            let (first, longest) = shared.config.backoff;
            let wait = (previous_wait * 2).clamp(first, longest);
            let mut pool = lock(&shared.pool);
            // An incoming connection may have arrived meanwhile: keep it.
            if matches!(pool.peers.get(&to), Some(PoolEntry::Dialing { .. }))
                && let Some(PoolEntry::Dialing { queue }) = pool.peers.insert(
                    to,
                    PoolEntry::Backoff {
                        until: Instant::now() + wait,
                        wait,
                    },
                )
            {
                shared
                    .stats
                    .send_drops
                    .fetch_add(queue.len() as u64, Ordering::Relaxed);
            }
            debug!(peer = %to, reason, backoff = ?wait, "handshake failed");
        }
    }
}

fn classify(shared: &Shared, e: &quinn::ConnectionError) -> &'static str {
    match e {
        quinn::ConnectionError::TransportError(_) | quinn::ConnectionError::ConnectionClosed(_) => {
            shared
                .stats
                .handshake_refused
                .fetch_add(1, Ordering::Relaxed);
            "refused"
        }
        quinn::ConnectionError::TimedOut => {
            shared
                .stats
                .handshake_timeouts
                .fetch_add(1, Ordering::Relaxed);
            "timeout"
        }
        _ => {
            shared.stats.handshake_other.fetch_add(1, Ordering::Relaxed);
            "other"
        }
    }
}

async fn accept_loop(shared: Arc<Shared>) {
    let limit = shared.config.max_incoming_handshakes.max(1);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(limit));
    while let Some(incoming) = shared.endpoint.accept().await {
        let busy = limit - in_flight.available_permits();
        // Under load, a source address must prove it receives before we spend a TLS flight
        // and a signature on it (and amplify toward it): a Retry costs us no state.
        if busy >= limit.div_ceil(4) && !incoming.remote_address_validated() {
            shared
                .stats
                .handshakes_retried
                .fetch_add(1, Ordering::Relaxed);
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            shared.stats.handshakes_shed.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(shared.config.handshake_timeout * 4, incoming).await {
                Ok(Ok(conn)) => register(&shared, conn, false),
                Ok(Err(e)) => {
                    classify(&shared, &e);
                    debug!(error = %e, "incoming handshake failed");
                }
                Err(_) => {
                    shared
                        .stats
                        .handshake_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
}

/// Pools a new connection (unless a simultaneous one wins the tie-break), flushes what was
/// queued for the peer and starts reading from it.
fn register(shared: &Arc<Shared>, conn: quinn::Connection, dialled_by_us: bool) {
    let Some(peer) = tls::peer_name(&conn) else {
        warn!(peer = %conn.remote_address(), "peer certificate carries no node name; closing");
        conn.close(1u32.into(), b"no name");
        return;
    };
    let addr = conn.remote_address();
    let completed = if dialled_by_us {
        &shared.stats.handshakes_client
    } else {
        &shared.stats.handshakes_server
    };
    completed.fetch_add(1, Ordering::Relaxed);
    let now = Instant::now();
    let mut pool = lock(&shared.pool);
    let queued = match pool.peers.remove(&addr) {
        Some(PoolEntry::Connected {
            conn: existing,
            peer: existing_peer,
            since,
            last_used,
        }) => {
            // Both sides apply the same rule, so they settle on the same connection.
            // Connections registered within one handshake timeout of each other were dialled
            // simultaneously: the tie-break decides; otherwise the newer one wins (the peer
            // restarted). A longer window kept a restarted peer's new connection out: with
            // the crash fast path a peer can be failed and back within 2 s, and we went on
            // sending into the dead one (the demo failed it again, 4 runs in 5).
            let simultaneous = now.duration_since(since) < shared.config.handshake_timeout;
            let ours_wins = shared.local < addr;
            let keep_existing = simultaneous && (dialled_by_us != ours_wins);
            if keep_existing {
                pool.peers.insert(
                    addr,
                    PoolEntry::Connected {
                        conn: existing,
                        peer: existing_peer,
                        since,
                        last_used,
                    },
                );
                drop(pool);
                // The loser is closed by the peer too; read what it still delivers.
                tokio::spawn(read_loop(shared.clone(), conn, peer));
                return;
            }
            let old = existing;
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                old.close(0u32.into(), b"replaced");
            });
            VecDeque::new()
        }
        Some(PoolEntry::Dialing { queue }) => queue,
        _ => VecDeque::new(),
    };
    pool.peers.insert(
        addr,
        PoolEntry::Connected {
            conn: conn.clone(),
            peer: peer.clone(),
            since: now,
            last_used: now,
        },
    );
    let excess = connected(&pool).saturating_sub(shared.config.max_connections);
    let evict: Vec<quinn::Connection> = if excess > 0 {
        least_recently_used(&mut pool, excess, addr)
    } else {
        Vec::new()
    };
    drop(pool);
    for old in evict {
        old.close(0u32.into(), b"pool full");
    }
    for (channel, payload, meant) in queued {
        if for_peer(meant.as_ref(), &peer) {
            transmit(shared, &conn, channel, payload);
        } else {
            shared.stats.peer_mismatches.fetch_add(1, Ordering::Relaxed);
        }
    }
    tokio::spawn(read_loop(shared.clone(), conn, peer));
}

/// Open connections in the pool (dialling and backed-off addresses are no connections).
fn connected(pool: &Pool) -> usize {
    pool.peers
        .values()
        .filter(|s| matches!(s, PoolEntry::Connected { .. }))
        .count()
}

fn least_recently_used(pool: &mut Pool, count: usize, keep: SocketAddr) -> Vec<quinn::Connection> {
    let mut connected: Vec<(Instant, SocketAddr)> = pool
        .peers
        .iter()
        .filter_map(|(a, s)| match s {
            PoolEntry::Connected { last_used, .. } if *a != keep => Some((*last_used, *a)),
            _ => None,
        })
        .collect();
    connected.sort();
    connected
        .into_iter()
        .take(count)
        .filter_map(|(_, a)| match pool.peers.remove(&a) {
            Some(PoolEntry::Connected { conn, .. }) => Some(conn),
            _ => None,
        })
        .collect()
}

async fn read_loop(shared: Arc<Shared>, conn: quinn::Connection, peer: NodeName) {
    let addr = conn.remote_address();
    let credential: Arc<[u8]> = tls::peer_chain(&conn)
        .map(|chain| tls::credential_of_chain(&chain))
        .unwrap_or_default()
        .into();
    let datagrams = {
        let shared = shared.clone();
        let conn = conn.clone();
        let peer = peer.clone();
        let credential = credential.clone();
        async move {
            while let Ok(payload) = conn.read_datagram().await {
                shared.stats.received(Channel::Datagram, payload.len());
                deliver(
                    &shared,
                    Inbound {
                        from: addr,
                        peer: peer.clone(),
                        credential: credential.clone(),
                        payload,
                        channel: Channel::Datagram,
                        _budget: None,
                    },
                );
            }
        }
    };
    let streams = {
        let shared = shared.clone();
        let conn = conn.clone();
        let peer = peer.clone();
        let credential = credential.clone();
        async move {
            while let Ok(mut stream) = conn.accept_uni().await {
                let shared = shared.clone();
                let peer = peer.clone();
                let credential = credential.clone();
                tokio::spawn(async move {
                    let read = tokio::time::timeout(
                        Duration::from_secs(10),
                        read_stream(&shared, &mut stream),
                    );
                    match read.await {
                        Ok(Some((bytes, budget))) => {
                            shared.stats.received(Channel::Stream, bytes.len());
                            deliver(
                                &shared,
                                Inbound {
                                    from: addr,
                                    peer,
                                    credential,
                                    payload: Bytes::from(bytes),
                                    channel: Channel::Stream,
                                    _budget: budget,
                                },
                            );
                        }
                        _ => {
                            shared.stats.receive_drops.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        }
    };
    tokio::join!(datagrams, streams);
    // Closed: account its traffic and forget it, unless a newer connection took its place.
    let s = conn.stats();
    {
        let mut closed = lock_closed(&shared.stats.closed_udp);
        closed.0 += s.udp_tx.datagrams;
        closed.1 += s.udp_tx.bytes;
        closed.2 += s.udp_rx.datagrams;
        closed.3 += s.udp_rx.bytes;
    }
    let mut pool = lock(&shared.pool);
    if let Some(PoolEntry::Connected { conn: current, .. }) = pool.peers.get(&addr)
        && current.stable_id() == conn.stable_id()
    {
        pool.peers.remove(&addr);
    }
    debug!(peer = %addr, reason = ?conn.close_reason(), "connection closed");
}

/// Reads a stream message within [`wire::MAX_STREAM_LEN`] and the shared receive budget,
/// taking its share as it arrives; `None` (the stream stopped) past either.
async fn read_stream(
    shared: &Shared,
    stream: &mut quinn::RecvStream,
) -> Option<(Vec<u8>, Option<tokio::sync::OwnedSemaphorePermit>)> {
    let mut bytes = Vec::new();
    let mut budget: Option<tokio::sync::OwnedSemaphorePermit> = None;
    while let Some(chunk) = stream.read_chunk(64 << 10, true).await.ok()? {
        let len = chunk.bytes.len();
        let share = u32::try_from(len)
            .ok()
            .and_then(|n| shared.stream_budget.clone().try_acquire_many_owned(n).ok());
        let Some(share) = share.filter(|_| bytes.len() + len <= wire::MAX_STREAM_LEN) else {
            let _ = stream.stop(0u32.into());
            return None;
        };
        match &mut budget {
            Some(held) => held.merge(share),
            None => budget = Some(share),
        }
        bytes.extend_from_slice(&chunk.bytes);
    }
    Some((bytes, budget))
}

fn deliver(shared: &Shared, inbound: Inbound) {
    if shared.inbound.try_send(inbound).is_err() {
        shared.stats.receive_drops.fetch_add(1, Ordering::Relaxed);
    }
}

/// Forgets expired backoffs so the pool does not grow without bound (quinn closes idle
/// connections itself, counting traffic both ways).
async fn idle_sweeper(shared: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        lock(&shared.pool).peers.retain(|_, slot| match slot {
            PoolEntry::Backoff { until, wait } => now < *until + *wait * 4,
            PoolEntry::Connected { .. } | PoolEntry::Dialing { .. } => true,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::path::PathBuf;

    use super::*;

    struct TempDir(PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A fresh CA and a loaded identity for each of `names`.
    fn identities(label: &str, names: &[&str]) -> (TempDir, Vec<TlsIdentity>) {
        let dir =
            std::env::temp_dir().join(format!("swimd-transport-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        tls::init_ca(&dir, "test").unwrap();
        let ids = names
            .iter()
            .map(|name| {
                tls::issue(&dir, name, &[IpAddr::from([127, 0, 0, 1])]).unwrap();
                tls::load(
                    &dir.join("ca.pem"),
                    &dir.join(format!("{name}.pem")),
                    &dir.join(format!("{name}-key.pem")),
                    &NodeName::new(name),
                )
                .unwrap()
            })
            .collect();
        (TempDir(dir), ids)
    }

    fn start(
        identity: &TlsIdentity,
        config: TransportConfig,
    ) -> (Transport, mpsc::Receiver<Inbound>) {
        let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let socket = std::net::UdpSocket::bind(bind).unwrap();
        let addr = socket.local_addr().unwrap();
        drop(socket);
        Transport::start(addr, addr, identity, &[7; 32], config).unwrap()
    }

    async fn received(rx: &mut mpsc::Receiver<Inbound>) -> Inbound {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("nothing received within 5 s")
            .expect("transport gone")
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}: not within 5 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn addresses_that_never_answer_neither_evict_connections_nor_grow_the_pool() {
        let (_dir, ids) = identities("pool", &["node-a", "node-b", "node-c"]);
        let config = TransportConfig {
            handshake_timeout: Duration::from_millis(100),
            max_connections: 2,
            backoff: (Duration::from_secs(30), Duration::from_secs(30)),
            ..TransportConfig::default()
        };
        let (a, _a_rx) = start(&ids[0], config);
        // Sockets that read nothing: dials to them time out and back off.
        let silent: Vec<std::net::UdpSocket> = (0..2)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        a.send(
            silent[0].local_addr().unwrap(),
            None,
            Channel::Datagram,
            vec![1],
        );
        until("the silent address backs off", || {
            a.stats().handshake_timeouts.load(Ordering::Relaxed) == 1
        })
        .await;
        let (b, mut b_rx) = start(&ids[1], TransportConfig::default());
        let (c, mut c_rx) = start(&ids[2], TransportConfig::default());
        for (peer, rx) in [(&b, &mut b_rx), (&c, &mut c_rx)] {
            a.send(peer.local_addr().unwrap(), None, Channel::Datagram, vec![2]);
            assert_eq!(received(rx).await.payload.as_ref(), [2]);
        }
        // Two connections, one backed-off address: nothing over the cap of two connections.
        assert_eq!(a.connections(), 2);
        a.send(b.local_addr().unwrap(), None, Channel::Datagram, vec![3]);
        assert_eq!(received(&mut b_rx).await.payload.as_ref(), [3]);

        // Non-connected slots are bounded by the same cap: a second silent address is
        // dialled, a third new address is not.
        let drops = a.stats().send_drops.load(Ordering::Relaxed);
        a.send(
            silent[1].local_addr().unwrap(),
            None,
            Channel::Datagram,
            vec![4],
        );
        let stranger: SocketAddr = "127.0.0.1:9".parse().unwrap();
        until("the second silent address backs off", || {
            a.stats().handshake_timeouts.load(Ordering::Relaxed) == 2
        })
        .await;
        a.send(stranger, None, Channel::Datagram, vec![5]);
        assert_eq!(lock(&a.shared.pool).peers.len(), 4);
        assert!(!lock(&a.shared.pool).peers.contains_key(&stranger));
        assert!(a.stats().send_drops.load(Ordering::Relaxed) > drops);
        assert_eq!(a.connections(), 2);
    }

    #[tokio::test]
    async fn a_message_for_a_member_leaves_only_on_a_connection_certified_for_it() {
        let (_dir, ids) = identities("named", &["node-a", "node-b"]);
        let (a, _a_rx) = start(&ids[0], TransportConfig::default());
        let (b, mut b_rx) = start(&ids[1], TransportConfig::default());
        let to = b.local_addr().unwrap();
        let (right, wrong) = (NodeName::new("node-b"), NodeName::new("node-c"));
        // Meant for node-c, queued while the handshake with node-b at that address runs.
        a.send(to, Some(&wrong), Channel::Datagram, vec![1]);
        a.send(to, Some(&right), Channel::Datagram, vec![2]);
        assert_eq!(received(&mut b_rx).await.payload.as_ref(), [2]);
        // On the pooled connection too.
        a.send(to, Some(&wrong), Channel::Datagram, vec![3]);
        a.send(to, None, Channel::Datagram, vec![4]);
        assert_eq!(received(&mut b_rx).await.payload.as_ref(), [4]);
        assert_eq!(a.stats().peer_mismatches.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn stream_messages_held_unhandled_are_bounded_in_bytes() {
        let (_dir, ids) = identities("budget", &["node-a", "node-b"]);
        let config = TransportConfig {
            stream_budget: 1 << 20,
            ..TransportConfig::default()
        };
        let (a, mut a_rx) = start(&ids[0], config);
        let (b, _b_rx) = start(&ids[1], TransportConfig::default());
        let to = a.local_addr().unwrap();
        let big = |tag: u8| vec![tag; 600 << 10];
        b.send(to, None, Channel::Stream, big(1));
        let first = received(&mut a_rx).await;
        assert_eq!(first.payload.len(), 600 << 10);
        // The first still unhandled: a second would go past the budget and is dropped.
        b.send(to, None, Channel::Stream, big(2));
        until("the second stream is dropped", || {
            a.stats().receive_drops.load(Ordering::Relaxed) == 1
        })
        .await;
        assert!(a_rx.try_recv().is_err());
        // Handled, its share comes back: the next one fits.
        drop(first);
        b.send(to, None, Channel::Stream, big(3));
        let third = received(&mut a_rx).await;
        assert_eq!(third.payload.first(), Some(&3));
    }

    #[tokio::test]
    async fn a_handshake_flood_is_retried_and_shed_while_members_still_connect() {
        let (_dir, ids) = identities("flood", &["node-a", "node-b"]);
        let config = TransportConfig {
            max_incoming_handshakes: 8,
            ..TransportConfig::default()
        };
        let (a, mut a_rx) = start(&ids[0], config);
        let target = a.local_addr().unwrap();
        // An outsider that trusts the CA but holds no certificate: every handshake costs
        // the agent a TLS flight and a signature, then fails.
        let mut outsider = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        outsider.set_default_client_config(ids[0].quinn_anonymous_client_config().unwrap());
        let attempts: Vec<_> = (0..400)
            .filter_map(|_| outsider.connect(target, "127.0.0.1").ok())
            .collect();
        let flood = tokio::spawn(async move {
            for attempt in attempts {
                let _ = tokio::time::timeout(Duration::from_secs(3), attempt).await;
            }
        });
        // A member connects in the middle of the flood.
        let (b, _b_rx) = start(&ids[1], TransportConfig::default());
        b.send(target, None, Channel::Datagram, vec![9]);
        let got = received(&mut a_rx).await;
        assert_eq!(got.peer.as_str(), "node-b");
        flood.await.unwrap();
        let stats = a.stats();
        let retried = stats.handshakes_retried.load(Ordering::Relaxed);
        let shed = stats.handshakes_shed.load(Ordering::Relaxed);
        let refused = stats.handshake_refused.load(Ordering::Relaxed);
        assert!(
            retried > 0 && shed > 0,
            "retried {retried}, shed {shed}, refused {refused}"
        );
        // Most attempts never cost a signature.
        assert!(
            refused < 400 / 2,
            "retried {retried}, shed {shed}, refused {refused}"
        );
    }
}
