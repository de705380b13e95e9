//! Hooks with real agents: signed webhooks to a receiver in this process, outages, a
//! SIGKILLed agent with deliveries pending, exec hooks, and cluster hooks delivered exactly
//! once and never from a minority.

pub mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use swimd::hooks::payload::{HookEvent, decode_secret, verify};
use swimd::model::State;

use support::cluster::Cluster;
use support::tools::{signal, swimd};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// One request the receiver took.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    kind: String,
    member: String,
    observed_by: String,
    signed: bool,
}

/// A webhook receiver: checks every signature, records every delivery, answers 200.
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Receiver {
    fn start(addr: SocketAddr) -> Receiver {
        let listener = TcpListener::bind(addr).expect("bind the receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let key = decode_secret(SECRET).expect("secret");
        let thread = {
            let got = Arc::clone(&got);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            if let Some(r) = serve(stream, &key) {
                                got.lock().unwrap().push(r);
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Receiver {
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    fn wait_for(&self, limit: Duration, done: impl Fn(&[Received]) -> bool) -> bool {
        support::cluster::within(limit, || done(&self.received())).is_some()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one HTTP/1.1 request, answers 200, and returns what it carried.
fn serve(mut stream: TcpStream, key: &[u8]) -> Option<Received> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(secs(5))).ok()?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let (head, body) = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let length: usize = header(&head, "content-length")?.parse().ok()?;
            let mut body = data[end + 4..].to_vec();
            while body.len() < length {
                let n = stream.read(&mut buf).ok()?;
                if n == 0 {
                    return None;
                }
                body.extend_from_slice(&buf[..n]);
            }
            break (head, body);
        }
    };
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let id = header(&head, "webhook-id")?;
    let timestamp: u64 = header(&head, "webhook-timestamp")?.parse().ok()?;
    let signed = header(&head, "webhook-signature")
        .is_some_and(|sig| verify(key, &id, timestamp, &body, &sig));
    let event: HookEvent = serde_json::from_slice(&body).ok()?;
    assert_eq!(event.data.id, id, "webhook-id is the event id");
    Some(Received {
        id,
        kind: event.kind,
        member: event.data.member.name,
        observed_by: event.data.observed_by,
        signed,
    })
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

fn webhook(name: &str, url: &str, scope: &str, events: &str) -> String {
    format!(
        "\n[[hooks]]\nname = \"{name}\"\nkind = \"webhook\"\nevents = {events}\nurl = \"{url}\"\n\
         secret = \"{SECRET}\"\nscope = \"{scope}\"\nhold_down = \"0s\"\nmax_failed_fraction = 1.0\n\
         backoff_base = \"200ms\"\nbackoff_max = \"1s\"\nmax_attempts = 1000\ntimeout = \"2s\"\n"
    )
}

fn wait_metric(c: &Cluster, i: usize, series: &str, at_least: f64, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if c.metric(i, series).is_some_and(|v| v >= at_least) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn ids_once(got: &[Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in got {
        *counts.entry(r.id.clone()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn webhook_outage_then_every_event_once_and_signed_and_exec_hooks_run() {
    let mut c = Cluster::new("hooks-outage", 60, 3);
    let receiver_addr: SocketAddr = "127.0.60.100:8080".parse().unwrap();
    let url = format!("http://{receiver_addr}/hook");
    c.append_config(
        0,
        &webhook(
            "lb",
            &url,
            "local",
            "[\"member.failed\", \"member.recovered\"]",
        ),
    );
    let exec_out = c.dir.0.join("exec.out");
    c.append_config(
        1,
        &format!(
            "\n[[hooks]]\nname = \"log\"\nkind = \"exec\"\nevents = [\"member.failed\"]\n\
             max_failed_fraction = 1.0\ncommand = [\"/bin/sh\", \"-c\", \
             \"echo \\\"$SWIMD_EVENT $SWIMD_MEMBER_NAME $SWIMD_SELF_NAME $(cat)\\\" >> {}\"]\n",
            exec_out.display()
        ),
    );
    c.start_all();
    assert!(c.wait_converged(secs(15)).is_some(), "cluster converges");
    let outage = Instant::now();
    c.kill(2);
    assert!(
        c.wait_state(&[0, 1], "node-3", State::Failed, secs(15))
            .is_some()
    );
    assert!(
        wait_metric(
            &c,
            0,
            "swimd_hook_deliveries_total{hook=\"lb\",outcome=\"retry\"}",
            2.0,
            secs(10)
        ),
        "deliveries are retried while the receiver is down"
    );
    c.start(2);
    assert!(
        c.wait_state(&[0], "node-3", State::Alive, secs(15))
            .is_some()
    );
    assert!(
        wait_metric(&c, 0, "swimd_hook_outbox_depth{hook=\"lb\"}", 2.0, secs(5)),
        "both events wait in the outbox"
    );
    // The receiver stays down for 30 s, then comes back.
    std::thread::sleep(secs(30).saturating_sub(outage.elapsed()));
    let receiver = Receiver::start(receiver_addr);
    assert!(
        receiver.wait_for(secs(10), |got| got.len() >= 2),
        "both events arrive once the receiver is back: {:?}",
        receiver.received()
    );
    // Let any stray retry arrive before counting.
    std::thread::sleep(secs(2));
    let got = receiver.received();
    assert!(
        got.iter().all(|r| r.signed),
        "every signature verifies: {got:?}"
    );
    assert!(
        ids_once(&got).values().all(|&n| n == 1),
        "each webhook-id once: {got:?}"
    );
    let kinds: Vec<(&str, &str)> = got
        .iter()
        .map(|r| (r.kind.as_str(), r.member.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![("member.failed", "node-3"), ("member.recovered", "node-3")],
        "in order, per member"
    );
    assert_eq!(
        c.metric(0, "swimd_hook_outbox_depth{hook=\"lb\"}"),
        Some(0.0)
    );
    assert!(
        c.metric(0, "swimd_hook_last_success_timestamp_seconds{hook=\"lb\"}")
            .unwrap_or(0.0)
            > 1e9
    );
    // The exec hook on node-2 ran with the event in its environment and on stdin.
    let exec = std::fs::read_to_string(&exec_out).unwrap_or_default();
    assert!(
        exec.starts_with("member.failed node-3 node-2 {\"type\":\"member.failed\""),
        "exec hook output: {exec:?}"
    );
    // `swimd hooks list` shows the hook.
    let list = swimd(&["hooks", "list", "--api", &c.nodes[0].api()]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success() && text.contains("lb") && text.contains("webhook"),
        "{text}"
    );
}

#[test]
fn deliveries_pending_at_a_sigkill_are_made_after_the_restart() {
    let mut c = Cluster::new("hooks-sigkill", 61, 3);
    let receiver_addr: SocketAddr = "127.0.61.100:8080".parse().unwrap();
    c.append_config(
        0,
        &webhook(
            "lb",
            &format!("http://{receiver_addr}/"),
            "local",
            "[\"member.failed\"]",
        ),
    );
    c.start_all();
    assert!(c.wait_converged(secs(15)).is_some());
    c.kill(2);
    assert!(
        c.wait_state(&[0], "node-3", State::Failed, secs(15))
            .is_some()
    );
    assert!(wait_metric(
        &c,
        0,
        "swimd_hook_outbox_depth{hook=\"lb\"}",
        1.0,
        secs(5)
    ));
    let incarnation = c
        .view(1)
        .and_then(|v| v.get("node-3").map(|m| m.incarnation))
        .unwrap_or(0);
    c.kill(0);
    let receiver = Receiver::start(receiver_addr);
    c.start(0);
    assert!(
        receiver.wait_for(secs(15), |got| !got.is_empty()),
        "the pending delivery is made after the restart"
    );
    let got = receiver.received();
    assert_eq!(got[0].kind, "member.failed");
    assert_eq!(got[0].member, "node-3");
    assert_eq!(
        got[0].id,
        swimd::hooks::payload::event_id("test", "node-3", incarnation, "member.failed")
    );
    assert!(got[0].signed);
}

#[test]
fn a_cluster_hook_is_delivered_exactly_once() {
    let mut c = Cluster::new("hooks-cluster", 62, 4);
    let receiver_addr: SocketAddr = "127.0.62.100:8080".parse().unwrap();
    let receiver = Receiver::start(receiver_addr);
    for i in 0..4 {
        c.append_config(
            i,
            &webhook(
                "lb",
                &format!("http://{receiver_addr}/"),
                "cluster",
                "[\"member.failed\"]",
            ),
        );
    }
    c.start_all();
    assert!(c.wait_converged(secs(15)).is_some());
    c.kill(3);
    assert!(
        c.wait_state(&[0, 1, 2], "node-4", State::Failed, secs(15))
            .is_some()
    );
    assert!(receiver.wait_for(secs(10), |got| !got.is_empty()));
    // Every survivor has seen the failure; give a duplicate every chance to show up.
    std::thread::sleep(secs(3));
    let got = receiver.received();
    assert_eq!(got.len(), 1, "exactly one delivery: {got:?}");
    assert_eq!(
        (got[0].kind.as_str(), got[0].member.as_str()),
        ("member.failed", "node-4")
    );
    assert_ne!(got[0].observed_by, "node-4");
}

#[test]
fn an_agent_alone_delivers_no_cluster_hook() {
    let mut c = Cluster::new("hooks-minority", 63, 3);
    let receiver_addr: SocketAddr = "127.0.63.100:8080".parse().unwrap();
    let receiver = Receiver::start(receiver_addr);
    for i in 0..3 {
        c.append_config(
            i,
            &webhook(
                "lb",
                &format!("http://{receiver_addr}/"),
                "cluster",
                "[\"member.failed\"]",
            ),
        );
    }
    c.start_all();
    assert!(c.wait_converged(secs(15)).is_some());
    // Node 1 loses both peers at once (paused, as a partition would look from its side).
    let paused: Vec<u32> = [1, 2].iter().filter_map(|&i| c.nodes[i].pid()).collect();
    for &pid in &paused {
        signal(pid, libc::SIGSTOP);
    }
    let seen = c
        .wait_state(&[0], "node-2", State::Failed, secs(20))
        .is_some()
        && c.wait_state(&[0], "node-3", State::Failed, secs(20))
            .is_some();
    let suppressed = wait_metric(
        &c,
        0,
        "swimd_hook_suppressed_total{hook=\"lb\",reason=\"minority\"}",
        1.0,
        secs(5),
    );
    std::thread::sleep(secs(2));
    let got = receiver.received();
    for &pid in &paused {
        signal(pid, libc::SIGCONT);
    }
    assert!(seen, "node-1 sees both peers failed");
    assert!(suppressed, "the delivery is suppressed as a minority");
    assert!(got.is_empty(), "no delivery from a minority: {got:?}");
}
