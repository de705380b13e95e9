//! Real agents under abuse from outsiders: floods that must not cost the cluster its view.

pub mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, TempDir};
use support::http;
use support::procfs::usage;

/// Cumulative `swimd_probe_rtt_seconds` bucket counts of node `i` (by upper bound).
fn rtt_buckets(c: &Cluster, i: usize) -> Vec<(f64, f64)> {
    let text = http::request(&c.nodes[i].metrics(), "GET", "/metrics", None)
        .expect("metrics")
        .body;
    text.lines()
        .filter_map(|l| l.strip_prefix("swimd_probe_rtt_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, value) = rest.split_once("\"} ")?;
            Some((le.parse().unwrap_or(f64::INFINITY), value.parse().ok()?))
        })
        .collect()
}

/// The share of the probes between two bucket readings that took at most `bound` seconds.
fn share_within(before: &[(f64, f64)], after: &[(f64, f64)], bound: f64) -> (f64, f64) {
    let count = |b: &[(f64, f64)], le: f64| {
        b.iter()
            .find(|(l, _)| *l == le || (*l - le).abs() < 1e-9)
            .map_or(0.0, |(_, v)| *v)
    };
    let total = count(after, f64::INFINITY) - count(before, f64::INFINITY);
    let within = count(after, bound) - count(before, bound);
    (within, total)
}

/// 20,000 QUIC connection attempts in 10 s from many source ports, by an outsider whose
/// certificate is from another CA, at one agent of five: nobody is suspected, the agent's
/// memory grows by at most 16 MiB (its level 30 s after the flood is printed, not bounded:
/// it does not all come back yet), and its probes keep their round trips.
#[test]
fn a_handshake_flood_from_outsiders_costs_the_cluster_nothing() {
    let c = Cluster::converged("flood", 42, 5);
    let target = 1;
    let pid = c.nodes[target].pid().expect("running");
    let addr: SocketAddr = c.nodes[target].gossip();
    std::thread::sleep(Duration::from_secs(2));
    let (rss_before, _) = usage(pid);
    let rtt_before = rtt_buckets(&c, target);

    // Mallory: a certificate from her own CA.
    let other = TempDir::new("flood-mallory");
    swimd::net::tls::init_ca(&other.0, "mallory").expect("ca");
    swimd::net::tls::issue(&other.0, "mallory", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]).expect("cert");
    let mallory = swimd::net::tls::load(
        &other.0.join("ca.pem"),
        &other.0.join("mallory.pem"),
        &other.0.join("mallory-key.pem"),
        &swimd::wire::NodeName::new("mallory"),
    )
    .expect("identity");
    let client = mallory.quinn_client_config().expect("client config");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let watch = std::thread::scope(|scope| {
        // Meanwhile: every agent's view, every 100 ms, during the flood and 20 s after.
        let watcher = scope.spawn(|| {
            let until = Instant::now() + Duration::from_secs(40);
            let mut seen = Vec::new();
            let mut peak = 0;
            while Instant::now() < until {
                peak = peak.max(usage(pid).0);
                seen.extend(c.not_alive(0..c.nodes.len()));
                std::thread::sleep(Duration::from_millis(100));
            }
            (seen, peak)
        });
        let sent = runtime.block_on(async {
            let started = Instant::now();
            let mut sent = 0usize;
            let mut attempts = Vec::new();
            // 100 source ports, 200 attempts each, paced over 10 s.
            for round in 0..100 {
                let mut endpoint =
                    quinn::Endpoint::client("127.0.0.1:0".parse().expect("addr")).expect("bind");
                endpoint.set_default_client_config(client.clone());
                for _ in 0..200 {
                    if let Ok(connecting) = endpoint.connect(addr, "node-2") {
                        sent += 1;
                        attempts.push(tokio::spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(5), connecting).await;
                        }));
                    }
                }
                let due = started + Duration::from_millis(100 * (round + 1));
                tokio::time::sleep_until(due.into()).await;
            }
            for attempt in attempts {
                let _ = attempt.await;
            }
            sent
        });
        (sent, watcher.join().expect("watcher"))
    });
    let (sent, (suspicions, rss_peak)) = watch;
    assert_eq!(sent, 20_000);
    // 40 s after the flood began, 30 s after it ended.
    let (rss_after, _) = usage(pid);
    let rtt_after = rtt_buckets(&c, target);
    let (within, total) = share_within(&rtt_before, &rtt_after, 0.05);
    let shed = c
        .metric(
            target,
            "swimd_quic_handshake_failures_total{reason=\"shed\"}",
        )
        .unwrap_or(0.0);
    let retried = c.metric(target, "swimd_quic_retries_total").unwrap_or(0.0);
    eprintln!(
        "flood: {sent} attempts; RSS {rss_before} KiB, peak {rss_peak}, 30 s after \
         {rss_after}; probes within 50 ms: {within} of {total}; retried {retried}, shed {shed}"
    );
    assert!(suspicions.is_empty(), "{suspicions:#?}");
    assert!(
        rss_peak <= rss_before + 16 * 1024,
        "RSS grew from {rss_before} to {rss_peak} KiB"
    );
    assert!(total >= 10.0, "too few probes to judge: {total}");
    assert!(
        within >= 0.99 * total,
        "only {within} of {total} probes within 50 ms"
    );
}

/// 2,000 idle connections and 200 slowloris clients on an agent's API and metrics ports,
/// renewed as the agent closes them: `/v1/health` and `/metrics` still answer within 1 s,
/// and no member is suspected.
#[test]
fn idle_and_slow_http_clients_cannot_lock_out_health_checks_and_scrapes() {
    use std::io::Write;
    let c = Cluster::converged("slowloris", 43, 3);
    let target = 1;
    let ports: [SocketAddr; 2] = [
        c.nodes[target].api().parse().expect("api"),
        c.nodes[target].metrics().parse().expect("metrics"),
    ];
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (answers, views) = std::thread::scope(|scope| {
        let attacker = scope.spawn(|| {
            // Per port: 1,000 idle connections and 100 that dribble a header line each
            // second, reopened in rounds; the oldest are let go to stay at that count.
            let mut held: Vec<(std::net::TcpStream, bool)> = Vec::new();
            let mut opened = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for port in ports {
                    for i in 0..220 {
                        let Ok(mut s) = std::net::TcpStream::connect(port) else {
                            continue;
                        };
                        let slow = i % 11 == 0;
                        if slow {
                            let _ = s.write_all(b"GET /v1/health HTTP/1.1\r\n");
                        }
                        held.push((s, slow));
                        opened += 1;
                    }
                }
                for (s, slow) in held.iter_mut().filter(|(_, slow)| *slow) {
                    let _ = s.write_all(b"X-Slow: 1\r\n");
                    let _ = slow;
                }
                let excess = held.len().saturating_sub(2 * 1_100);
                held.drain(..excess);
                std::thread::sleep(Duration::from_millis(250));
            }
            opened
        });
        // Let the attack fill both listeners first.
        std::thread::sleep(Duration::from_secs(3));
        let mut answers = Vec::new();
        let mut views = Vec::new();
        for _ in 0..10 {
            for (path, addr) in [("/v1/health", ports[0]), ("/metrics", ports[1])] {
                let started = Instant::now();
                let result = http::request(&addr.to_string(), "GET", path, None);
                answers.push((path, result.map(|answer| answer.status), started.elapsed()));
            }
            views.extend(c.not_alive(0..c.nodes.len()));
            std::thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let opened = attacker.join().expect("attacker");
        eprintln!("slowloris: {opened} connections opened");
        (answers, views)
    });
    let rejected = |listener: &str, reason: &str| {
        c.metric(
            target,
            &format!(
                "swimd_http_connections_rejected_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    eprintln!(
        "answers: {answers:?}; rejected api {} + {}, metrics {} + {} (limit + header timeout)",
        rejected("api", "limit"),
        rejected("api", "header_timeout"),
        rejected("metrics", "limit"),
        rejected("metrics", "header_timeout"),
    );
    for (path, status, took) in &answers {
        assert_eq!(status.as_ref().ok(), Some(&200), "{path}: {status:?}");
        assert!(*took <= Duration::from_secs(1), "{path} took {took:?}");
    }
    assert!(views.is_empty(), "{views:#?}");
    assert!(rejected("api", "limit") > 0.0 && rejected("metrics", "limit") > 0.0);
}
