//! Seeds from DNS: agents whose only seed is `srv:NAME` find the cluster through a real DNS
//! server (a small one in this test, on 127.0.36.53:53) answering SRV and A queries, and keep
//! retrying while it answers NXDOMAIN. Each agent runs in its own mount namespace
//! (`unshare --mount`) with a `resolv.conf` naming that server bind-mounted over
//! `/etc/resolv.conf`, so nothing on the machine changes. Needs root (skipped loudly
//! without it; failed under `CI=true`).

pub mod support;

use std::net::{Ipv4Addr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::cluster::{Cluster, within};
use support::http;
use support::tools::{require_tool_with, swimd, swimd_bin};

const DNS_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 36, 53);
const SRV_NAME: &str = "_swimd._udp.swimd.test";
const TYPE_A: u16 = 1;
const TYPE_SRV: u16 = 33;

fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").map_or(true, |v| v != "true"),
        "CI=true: the DNS seed test needs root (unshare --mount, port 53)"
    );
    eprintln!("SKIPPED: the DNS seed test needs root (unshare --mount, port 53)");
    false
}

/// What the server answers: the SRV targets (name, port) and the A records.
struct Zone {
    srv: Vec<(String, u16)>,
    a: Vec<(String, Ipv4Addr)>,
}

/// A DNS server on UDP that knows one zone; answers NXDOMAIN until `serving` is set.
struct DnsServer {
    serving: Arc<AtomicBool>,
    srv_queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl DnsServer {
    fn start(zone: Zone) -> DnsServer {
        let socket = UdpSocket::bind((DNS_IP, 53)).expect("bind 127.0.36.53:53");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let serving = Arc::new(AtomicBool::new(false));
        let srv_queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, q, st) = (serving.clone(), srv_queries.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((len, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let Some(query) = Query::parse(&buf[..len]) else {
                    continue;
                };
                if query.qtype == TYPE_SRV {
                    q.fetch_add(1, Ordering::Relaxed);
                }
                let reply = answer(&buf[..len], &query, &zone, s.load(Ordering::Relaxed));
                let _ = socket.send_to(&reply, from);
            }
        });
        DnsServer {
            serving,
            srv_queries,
            stop,
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Query {
    name: String,
    qtype: u16,
    /// End of the question section.
    end: usize,
}

impl Query {
    fn parse(msg: &[u8]) -> Option<Query> {
        let mut at = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*msg.get(at)?);
            at += 1;
            if len == 0 {
                break;
            }
            labels.push(String::from_utf8_lossy(msg.get(at..at + len)?).to_lowercase());
            at += len;
        }
        let qtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        Some(Query {
            name: labels.join("."),
            qtype,
            end: at + 4,
        })
    }
}

fn encode_name(name: &str, out: &mut Vec<u8>) {
    for label in name.split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

fn answer(msg: &[u8], query: &Query, zone: &Zone, serving: bool) -> Vec<u8> {
    let mut records: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut known = false;
    if serving && query.name == SRV_NAME {
        known = true;
        if query.qtype == TYPE_SRV {
            for (target, port) in &zone.srv {
                let mut rdata = vec![0, 10, 0, 10];
                rdata.extend_from_slice(&port.to_be_bytes());
                encode_name(target, &mut rdata);
                records.push((TYPE_SRV, rdata));
            }
        }
    }
    for (name, ip) in &zone.a {
        if *name == query.name {
            known = true;
            if query.qtype == TYPE_A {
                records.push((TYPE_A, ip.octets().to_vec()));
            }
        }
    }
    let rcode = if known { 0 } else { 3 };
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&msg[..2]);
    // QR, AA, RD copied, RA.
    out.push(0x84 | (msg[2] & 1));
    out.push(0x80 | rcode);
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&msg[12..query.end]);
    for (rtype, rdata) in records {
        out.extend_from_slice(&[0xc0, 0x0c]);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 5]);
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    out
}

#[test]
fn agents_find_the_cluster_through_an_srv_seed_and_retry_until_dns_answers() {
    if !root_or_skip() || !require_tool_with("unshare", "--version", "util-linux") {
        return;
    }
    let mut cluster = Cluster::new("dns", 36, 3);
    // node-1 starts the cluster (its own address as its seed); the others know only the
    // SRV name, whose targets are node-1 and node-2.
    let zone = Zone {
        srv: vec![
            ("node-1.swimd.test".into(), 7946),
            ("node-2.swimd.test".into(), 7946),
        ],
        a: vec![
            ("node-1.swimd.test".into(), cluster.nodes[0].ip),
            ("node-2.swimd.test".into(), cluster.nodes[1].ip),
        ],
    };
    let dns = DnsServer::start(zone);
    let resolv = cluster.dir.0.join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {DNS_IP}\noptions timeout:1 attempts:1\n"),
    )
    .expect("resolv.conf");
    for node in &cluster.nodes[1..] {
        let text = std::fs::read_to_string(&node.config).expect("config");
        let seeds = format!("seeds = [\"{}:7946\"]", cluster.nodes[0].ip);
        assert!(text.contains(&seeds));
        std::fs::write(
            &node.config,
            text.replace(&seeds, &format!("seeds = [\"srv:{SRV_NAME}\"]")),
        )
        .expect("config");
    }
    cluster.start(0);
    for i in 1..3 {
        start_with_resolv(&mut cluster, i, &resolv);
    }
    // NXDOMAIN first: the agents say so and keep asking.
    let asked = within(Duration::from_secs(10), || {
        dns.srv_queries.load(Ordering::Relaxed) >= 2
            && (1..3).all(|i| cluster.log(i).contains("cannot resolve seed"))
    });
    assert!(
        asked.is_some(),
        "the agents did not query the SRV seed and report the failure:\n{}\n{}",
        cluster.log(1),
        cluster.log(2)
    );
    for i in 1..3 {
        if let Some(view) = cluster.view(i) {
            assert_eq!(view.len(), 1, "node-{} joined without DNS: {view:?}", i + 1);
        }
    }
    let before = dns.srv_queries.load(Ordering::Relaxed);
    dns.serving.store(true, Ordering::Relaxed);
    // Retries back off from 500 ms, doubling: the third or fourth one finds the records.
    let took = cluster.wait_converged(Duration::from_secs(20));
    assert!(
        took.is_some(),
        "the agents did not join through the SRV seed once DNS answered:\n{}\n{}",
        cluster.log(1),
        cluster.log(2)
    );
    assert!(dns.srv_queries.load(Ordering::Relaxed) > before);
    eprintln!(
        "dns: {} SRV queries; converged {:?} after DNS began answering",
        dns.srv_queries.load(Ordering::Relaxed),
        took
    );
}

/// Starts agent `i` in a mount namespace of its own whose `/etc/resolv.conf` is `resolv`.
fn start_with_resolv(cluster: &mut Cluster, i: usize, resolv: &std::path::Path) {
    let node = &mut cluster.nodes[i];
    let log = std::fs::File::create(&node.log).expect("log");
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
        .arg(resolv)
        .arg(swimd_bin())
        .args(["agent", "--config"])
        .arg(&node.config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn unshare");
    node.child = Some(child);
}

/// A resolver that never answers holds nothing up: while `swimd join` waits on it (5 s at
/// most, off the agent's loop), the agent keeps answering probes and its API, and nobody
/// suspects it.
#[test]
fn a_resolver_that_never_answers_holds_up_neither_probes_nor_the_api() {
    if !root_or_skip() || !require_tool_with("unshare", "--version", "util-linux") {
        return;
    }
    let mut cluster = Cluster::new("dns-silent", 37, 3);
    // Reads nothing, answers nothing: every query waits for the resolver's timeout.
    let _silent = UdpSocket::bind((Ipv4Addr::new(127, 0, 37, 53), 53)).expect("bind :53");
    let resolv = cluster.dir.0.join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.37.53\noptions timeout:5 attempts:3\n",
    )
    .expect("resolv.conf");
    cluster.start(0);
    cluster.start(1);
    start_with_resolv(&mut cluster, 2, &resolv);
    assert!(
        cluster.wait_converged(Duration::from_secs(10)).is_some(),
        "no convergence:\n{}",
        cluster.log(2)
    );
    let api = cluster.nodes[2].api();
    let join = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let out = swimd(&[
            "join",
            "--api",
            &api,
            "a.silent.test:7946",
            "b.silent.test:7946",
        ]);
        (started.elapsed(), out)
    });
    // Meanwhile: the agent's API answers at once, and every member sees every member alive.
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    let mut not_alive = Vec::new();
    while !join.is_finished() && started.elapsed() < Duration::from_secs(15) {
        let asked = std::time::Instant::now();
        let health = http::request(&cluster.nodes[2].api(), "GET", "/v1/health", None);
        slowest = slowest.max(asked.elapsed());
        assert!(health.is_ok(), "health: {health:?}");
        not_alive.extend(cluster.not_alive(0..3));
        std::thread::sleep(Duration::from_millis(100));
    }
    let (took, out) = join.join().expect("join thread");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "join gave up after {took:?} ({stderr:?}); slowest health answer meanwhile {slowest:?}"
    );
    assert!(!out.status.success(), "the join cannot succeed: {stderr}");
    assert!(took <= Duration::from_secs(8), "join waited {took:?}");
    assert!(
        took >= Duration::from_secs(4),
        "the resolver was not waited on: {took:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "the API waited {slowest:?}"
    );
    assert!(
        not_alive.is_empty(),
        "suspicions while DNS hung: {not_alive:?}"
    );
}
