//! The gossip socket, with Linux's socket error queue read: quinn ignores ICMP errors
//! (`shared/QUIC-NOTES.md`), but "port unreachable" for a packet we sent to a peer says its
//! process is gone while its host is up, the crash fast path's evidence (docs/protocol.md).
//!
//! ICMP is unauthenticated, so an error counts only when it quotes the first bytes of a
//! datagram we sent to that address in the last few seconds (each datagram once) and comes
//! from that address: the quoted bytes hold the connection id and encrypted payload, which
//! only a host on the path could know. Everything else is counted and dropped.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;
use tokio::sync::mpsc;
use tracing::warn;

/// Bytes of each sent datagram kept to match errors against (header, connection id and
/// the start of the encrypted payload).
const PREFIX: usize = 32;
/// Fewest quoted bytes an error must carry: the header byte and an 8-byte connection id,
/// and some payload.
const MIN_QUOTE: usize = 16;
/// Datagrams remembered per destination, and destinations remembered.
const PER_DESTINATION: usize = 16;
const DESTINATIONS: usize = 4096;
/// A datagram older than this is forgotten (errors come back within a round trip).
const REMEMBER: Duration = Duration::from_secs(5);
/// Errors reported to the agent and not yet taken; more are dropped.
const REPORTS: usize = 256;

/// ICMP errors read from the socket, by what became of them.
#[derive(Debug, Default)]
pub struct IcmpStats {
    /// "Port unreachable" quoting a datagram of ours, from its destination: reported.
    pub reported: AtomicU64,
    /// Errors that quote nothing we sent (or too little), come from elsewhere, or are not
    /// "port unreachable": dropped.
    pub ignored: AtomicU64,
}

#[derive(Debug)]
struct Sent {
    at: Instant,
    len: usize,
    prefix: [u8; PREFIX],
}

/// The UDP socket quinn runs on, with its error queue read.
pub(crate) struct ErrQueueSocket {
    io: tokio::net::UdpSocket,
    state: UdpSocketState,
    sent: Mutex<HashMap<SocketAddr, VecDeque<Sent>>>,
    reports: mpsc::Sender<SocketAddr>,
    stats: Arc<IcmpStats>,
    last_send_warning: Mutex<Option<Instant>>,
}

impl fmt::Debug for ErrQueueSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrQueueSocket")
            .field("local", &self.io.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl ErrQueueSocket {
    /// Wraps `socket` (asks the kernel to queue ICMP errors for it) and starts the task that
    /// reads them; verified "port unreachable" destinations arrive on the receiver.
    pub(crate) fn wrap(
        socket: std::net::UdpSocket,
        stats: Arc<IcmpStats>,
    ) -> io::Result<(Arc<Self>, mpsc::Receiver<SocketAddr>)> {
        let v6 = socket.local_addr()?.is_ipv6();
        // IPv4 errors on an IPv6 socket come for v4-mapped peers; failing to ask is fine.
        let _ = set_option(&socket, libc::SOL_IP, libc::IP_RECVERR);
        if v6 {
            set_option(&socket, libc::SOL_IPV6, libc::IPV6_RECVERR)?;
        } else {
            set_option(&socket, libc::SOL_IP, libc::IP_RECVERR)?;
        }
        let state = UdpSocketState::new((&socket).into())?;
        socket.set_nonblocking(true)?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let (tx, rx) = mpsc::channel(REPORTS);
        let socket = Arc::new(ErrQueueSocket {
            io,
            state,
            sent: Mutex::new(HashMap::new()),
            reports: tx,
            stats,
            last_send_warning: Mutex::new(None),
        });
        tokio::spawn(read_errors(Arc::downgrade(&socket)));
        Ok((socket, rx))
    }

    fn remember(&self, transmit: &Transmit<'_>) {
        let now = Instant::now();
        let to = canonical(transmit.destination);
        let mut sent = lock(&self.sent);
        if sent.len() >= DESTINATIONS && !sent.contains_key(&to) {
            sent.retain(|_, q| q.back().is_some_and(|s| now - s.at < REMEMBER));
            if sent.len() >= DESTINATIONS {
                return; // everything recent: this destination goes unwatched a moment
            }
        }
        let queue = sent.entry(to).or_default();
        let size = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for datagram in transmit.contents.chunks(size) {
            if queue.len() == PER_DESTINATION {
                queue.pop_front();
            }
            let mut prefix = [0; PREFIX];
            let len = datagram.len().min(PREFIX);
            prefix[..len].copy_from_slice(&datagram[..len]);
            queue.push_back(Sent {
                at: now,
                len,
                prefix,
            });
        }
    }

    /// True (once) when `quoted` begins like a recent datagram of ours to `to`.
    fn claim(&self, to: SocketAddr, quoted: &[u8]) -> bool {
        if quoted.len() < MIN_QUOTE {
            return false;
        }
        let now = Instant::now();
        let mut sent = lock(&self.sent);
        let Some(queue) = sent.get_mut(&to) else {
            return false;
        };
        let found = queue.iter().position(|s| {
            let n = s.len.min(quoted.len());
            now - s.at < REMEMBER && n >= MIN_QUOTE && s.prefix[..n] == quoted[..n]
        });
        match found {
            Some(i) => {
                queue.remove(i);
                true
            }
            None => false,
        }
    }

    /// Reads one error from the queue (`WouldBlock` once it is empty) and reports it if it
    /// is ours.
    fn read_error(&self) -> io::Result<()> {
        let mut quoted = [0u8; PREFIX];
        let error = recv_error(self.io.as_raw_fd(), &mut quoted)?;
        let Some((to, offender, refused, n)) = error else {
            self.stats.ignored.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        };
        let from_there = offender.is_none_or(|ip| canonical_ip(ip) == to.ip());
        if refused && from_there && self.claim(to, &quoted[..n.min(PREFIX)]) {
            self.stats.reported.fetch_add(1, Ordering::Relaxed);
            let _ = self.reports.try_send(to);
        } else {
            self.stats.ignored.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn warn_send_error(&self, error: &io::Error, to: SocketAddr) {
        let mut last = lock(&self.last_send_warning);
        if last.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
            *last = Some(Instant::now());
            warn!(%to, %error, "sending a datagram failed (further failures for a minute not logged)");
        }
    }
}

/// Drains the error queue whenever the kernel flags it, until the socket is gone.
async fn read_errors(socket: std::sync::Weak<ErrQueueSocket>) {
    loop {
        let Some(s) = socket.upgrade() else {
            return;
        };
        if s.io.ready(Interest::ERROR).await.is_err() {
            return;
        }
        loop {
            match s.io.try_io(Interest::ERROR, || s.read_error()) {
                Ok(()) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    warn!(error = %e, "reading the socket's error queue failed");
                    break;
                }
            }
        }
    }
}

/// A kernel error for an unconnected UDP socket is also left pending on the socket, and the
/// next send or receive returns it, whatever its peer: such an error is not this call's.
fn is_pending_icmp_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNREFUSED | libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EHOSTDOWN)
    )
}

impl AsyncUdpSocket for ErrQueueSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller {
            socket: self,
            waiting: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let result = self.io.try_io(Interest::WRITABLE, || {
            match self.state.try_send((&self.io).into(), transmit) {
                // That call took the pending error; this datagram was not sent yet.
                Err(e) if is_pending_icmp_error(&e) => {
                    self.state.try_send((&self.io).into(), transmit)
                }
                other => other,
            }
        });
        match result {
            Ok(()) => {
                self.remember(transmit);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(e),
            // As quinn does: a datagram is unreliable anyway (EMSGSIZE: an MTU probe).
            Err(e) => {
                if e.raw_os_error() != Some(libc::EMSGSIZE) {
                    self.warn_send_error(&e, transmit.destination);
                }
                Ok(())
            }
        }
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.io.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            // A pending ICMP error fails one receive (quinn would stop the endpoint on it):
            // try again; the error queue task reads the error itself.
            if let Ok(n) = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) {
                return Poll::Ready(Ok(n));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

type Waiting = Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>;

/// Waits for the socket to be writable (one per sending task, as quinn asks).
struct Poller {
    socket: Arc<ErrQueueSocket>,
    waiting: Option<Waiting>,
}

impl fmt::Debug for Poller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Poller").finish_non_exhaustive()
    }
}

impl UdpPoller for Poller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let waiting = this.waiting.get_or_insert_with(|| {
            let socket = this.socket.clone();
            Box::pin(async move { socket.io.writable().await })
        });
        let result = waiting.as_mut().poll(cx);
        if result.is_ready() {
            this.waiting = None;
        }
        result
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_option(
    socket: &std::net::UdpSocket,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, a pointer to a c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One error from the queue: (the original datagram's destination, the ICMP sender, whether
/// it is "port unreachable", bytes quoted), or `None` for one we cannot read.
type QueuedError = Option<(SocketAddr, Option<IpAddr>, bool, usize)>;

fn recv_error(fd: libc::c_int, quoted: &mut [u8]) -> io::Result<QueuedError> {
    // SAFETY: zeroed sockaddr_storage and msghdr are valid values.
    let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut control = [0u64; 64];
    let mut iov = libc::iovec {
        iov_base: quoted.as_mut_ptr().cast(),
        iov_len: quoted.len(),
    };
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: msg points at live buffers of the sizes given.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let quoted_len = usize::try_from(n).unwrap_or(0);
    let Some(to) = sockaddr(&name) else {
        return Ok(None);
    };
    // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        let header = unsafe { &*cmsg };
        let v4 = header.cmsg_level == libc::SOL_IP && header.cmsg_type == libc::IP_RECVERR;
        let v6 = header.cmsg_level == libc::SOL_IPV6 && header.cmsg_type == libc::IPV6_RECVERR;
        if v4 || v6 {
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            // SAFETY: the kernel puts a sock_extended_err here, then the offender's address.
            let err: libc::sock_extended_err = unsafe { std::ptr::read_unaligned(data.cast()) };
            let refused = match err.ee_origin {
                libc::SO_EE_ORIGIN_ICMP => err.ee_type == 3 && err.ee_code == 3,
                libc::SO_EE_ORIGIN_ICMP6 => err.ee_type == 1 && err.ee_code == 4,
                _ => false,
            };
            let offender = unsafe {
                let at = data.add(std::mem::size_of::<libc::sock_extended_err>());
                let storage: libc::sockaddr_storage = {
                    let mut s: libc::sockaddr_storage = std::mem::zeroed();
                    let room = (header.cmsg_len as usize)
                        .saturating_sub(at.offset_from(cmsg.cast::<u8>()) as usize)
                        .min(std::mem::size_of::<libc::sockaddr_storage>());
                    std::ptr::copy_nonoverlapping(
                        at,
                        (&mut s as *mut libc::sockaddr_storage).cast(),
                        room,
                    );
                    s
                };
                sockaddr(&storage).map(|a| a.ip())
            };
            return Ok(Some((to, offender, refused, quoted_len)));
        }
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(None)
}

fn sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this is a sockaddr_in.
            let a: &libc::sockaddr_in =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this is a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(canonical(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            ))))
        }
        _ => None,
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so both socket families compare alike.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(addr.ip()), addr.port())
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
