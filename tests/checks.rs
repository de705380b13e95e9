//! Service health checks with real agents: a stopped HTTP backend makes its member
//! `critical` everywhere, fires a hook once, and comes back `passing`; a flapping check does
//! not flap the member; a hung exec check is killed and counted.

pub mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use swimd::api::json::HealthJson;
use swimd::model::{Health, State};

use support::cluster::{Cluster, within};
use support::http;
use support::tools::swimd;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// An HTTP backend answering 200 until stopped (the listener closes: connection refused).
struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Backend {
    fn start(addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(secs(1)));
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf);
                        let _ = s.write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Backend {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// (health, failing checks) of `subject` as node `i` sees it.
fn health(c: &Cluster, i: usize, subject: &str) -> Option<(Health, Vec<String>)> {
    let m = http::member(&c.nodes[i].api(), subject).ok()?;
    Some((m.health, m.failing_checks))
}

/// Waits until every listed observer sees `subject` with health `want`.
fn wait_health(
    c: &Cluster,
    observers: &[usize],
    subject: &str,
    want: Health,
    limit: Duration,
) -> Option<Duration> {
    within(limit, || {
        observers
            .iter()
            .all(|&o| health(c, o, subject).is_some_and(|(h, _)| h == want))
    })
}

#[test]
fn a_stopped_backend_makes_its_member_critical_everywhere_fires_a_hook_once_and_recovers() {
    let mut c = Cluster::new("checks-http", 64, 3);
    let backend_addr: SocketAddr = "127.0.64.1:8080".parse().unwrap();
    // The example, as it stands.
    c.append_config(
        0,
        "\n[[checks]]\nname = \"web\"\nkind = \"http\"\nurl = \"http://127.0.64.1:8080/\"\n\
         interval = \"500ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\n",
    );
    let hook_out = c.dir.0.join("hook.out");
    c.append_config(1,
        &format!(
            "\n[[hooks]]\nname = \"lb\"\nkind = \"exec\"\nevents = [\"member.critical\", \"member.passing\"]\n\
             hold_down = \"0s\"\nmax_failed_fraction = 1.0\n\
             command = [\"/bin/sh\", \"-c\", \"echo $SWIMD_EVENT $SWIMD_MEMBER_NAME >> {}\"]\n",
            hook_out.display()
        ),
    );
    let backend = Backend::start(backend_addr);
    c.start_all();
    assert!(c.wait_converged(secs(15)).is_some());
    assert_eq!(health(&c, 2, "node-1").map(|h| h.0), Some(Health::Passing));

    drop(backend);
    let stopped = Instant::now();
    assert!(wait_health(&c, &[0, 1, 2], "node-1", Health::Critical, secs(10)).is_some());
    let took = stopped.elapsed();
    // interval × fall, plus one run's timeout, plus a gossip round (and polling slack).
    assert!(
        took <= Duration::from_millis(500 * 2 + 300 + 200 + 500),
        "critical after {took:?}"
    );
    assert_eq!(
        health(&c, 2, "node-1").map(|h| h.1),
        Some(vec!["web".to_string()])
    );
    let answer = http::request(&c.nodes[0].api(), "GET", "/v1/health", None).unwrap();
    assert_eq!(answer.status, 503);
    let unhealthy: HealthJson = answer.json().unwrap();
    assert!(
        unhealthy.reason.contains("checks failing: web"),
        "{unhealthy:?}"
    );
    assert_eq!(c.metric(0, "swimd_check_status{check=\"web\"}"), Some(0.0));
    assert!(c.metric(2, "swimd_members_health{health=\"critical\"}") == Some(1.0));
    let members = swimd(&["members", "--api", &c.nodes[2].api()]);
    let table = String::from_utf8_lossy(&members.stdout);
    assert!(table.contains("critical (web)"), "{table}");
    // Still alive: health never fails a member.
    assert_eq!(c.state(2, "node-1"), Some(State::Alive));

    let _backend = Backend::start(backend_addr);
    assert!(wait_health(&c, &[0, 1, 2], "node-1", Health::Passing, secs(10)).is_some());
    // Wait for the passing delivery, then a moment more for any duplicate to show.
    let start = Instant::now();
    while start.elapsed() < secs(5)
        && !std::fs::read_to_string(&hook_out).is_ok_and(|t| t.contains("member.passing"))
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let fired = std::fs::read_to_string(&hook_out).unwrap_or_default();
    assert_eq!(
        fired, "member.critical node-1\nmember.passing node-1\n",
        "the hook fired once for each change"
    );
}

#[test]
fn a_flapping_check_does_not_flap_the_member_and_a_hung_check_is_killed() {
    let mut c = Cluster::new("checks-flap", 65, 2);
    let toggle = c.dir.0.join("toggle");
    // Passes and fails in turn: with rise = fall = 2 it never changes state.
    c.append_config(0,
        &format!(
            "\n[[checks]]\nname = \"flappy\"\nkind = \"exec\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\n\
             command = [\"/bin/sh\", \"-c\", \"if [ -e {t} ]; then rm {t}; exit 1; else touch {t}; fi\"]\n\
             [[checks]]\nname = \"hung\"\nkind = \"exec\"\ninterval = \"500ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 1\n\
             command = [\"/bin/sleep\", \"30\"]\n",
            t = toggle.display()
        ),
    );
    c.start_all();
    assert!(c.wait_converged(secs(15)).is_some());
    let start = Instant::now();
    let mut flappy_seen_failing = false;
    while start.elapsed() < secs(5) {
        if let Some((_, failing)) = health(&c, 1, "node-1") {
            flappy_seen_failing |= failing.iter().any(|f| f == "flappy");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !flappy_seen_failing,
        "a flapping check never made the member critical"
    );
    assert!(
        c.metric(
            0,
            "swimd_check_runs_total{check=\"flappy\",result=\"fail\"}"
        )
        .unwrap_or(0.0)
            >= 5.0,
        "it did fail half the time"
    );
    assert_eq!(
        health(&c, 1, "node-1"),
        Some((Health::Critical, vec!["hung".to_string()])),
        "the hung check is critical"
    );
    assert!(
        c.metric(
            0,
            "swimd_check_runs_total{check=\"hung\",result=\"timeout\"}"
        )
        .unwrap_or(0.0)
            >= 3.0
    );
    // Killed at its timeout: no `sleep 30` of ours is left running.
    let pid = c.nodes[0].pid().unwrap();
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    let sleeping = children
        .split_whitespace()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|cmd| cmd.starts_with("/bin/sleep"))
        })
        .count();
    assert!(
        sleeping <= 1,
        "at most the run in progress: {sleeping} sleeps"
    );
}
