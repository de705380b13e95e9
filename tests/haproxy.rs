//! HAProxy failover end to end, with a real HAProxy (Debian `haproxy`) as a child process.
//!
//! Three agents: node-1 is the LB host (HAProxy and its swimd agent), node-2 and node-3 are
//! web hosts, each with its agent and a tiny HTTP backend (a thread here) on its
//! 127.0.NET.N:8080. A client thread sends a request through HAProxy every 20 ms. Web host
//! node-2 is killed (its agent SIGKILLed and its backend closed at the same instant), then
//! restarted. Two modes, one test each:
//!
//! - agent-check: HAProxy asks the LB host's agent (`[haproxy_agent] listen`) about each
//!   server (`agent-send "node-N\n"`). The servers have NO regular `check`: the only thing
//!   that can take a server out of rotation is swimd's answer, so the test measures swimd.
//! - runtime: no checks at all; the LB host's agent runs `conf/hooks/haproxy-runtime.sh`,
//!   which sets the server's state over HAProxy's admin socket.
//!
//! HAProxy runs with `retries 0` and no `option redispatch`: every request HAProxy sends to
//! the dead backend fails, so the failures the client sees are exactly the exposure while
//! swimd detects the failure (redispatch would hide refused connections and this test could
//! not tell whether HAProxy still routes to the dead server). docs/haproxy.md has the
//! production settings and the figures; run with `--nocapture` to see them
//! (`HAPROXY-FIGURES` lines).

pub mod support;

use std::time::{Duration, Instant};

use swimd::model::{Health, State};

use support::haproxy::{
    Backend, EVERY, Mode, Sample, Setup, backend_addr, hold_down, kill_web_host, setup, setup_with,
};
use support::http;
use support::tools::{signal, swimd};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// What one failover and recovery measured (durations from the kill / the restart).
struct Figures {
    detection: Duration,
    marked_down: Duration,
    last_failure: Option<Duration>,
    failed_during: usize,
    sent_during: usize,
    failed_after: usize,
    sent_after: usize,
    alive_again: Duration,
    routable_again: Duration,
    served_again: Duration,
    failed_after_restart: usize,
}

fn failover(mode: Mode, test: &str, net: u8) {
    let total = Instant::now();
    let Some(Setup {
        mut c,
        mut backends,
        haproxy,
        traffic,
    }) = setup(mode, test, net)
    else {
        return;
    };

    // Kill web host node-2: its agent (SIGKILL) and its backend at the same instant.
    let killed = Instant::now();
    kill_web_host(&mut c, &mut backends);
    let mut detected = None;
    let mut marked = None;
    while detected.is_none() || marked.is_none() {
        assert!(
            killed.elapsed() < secs(20),
            "failure detected ({detected:?}) and server marked down ({marked:?}) within 20 s: {:?}",
            haproxy.states()
        );
        if detected.is_none() && c.state(0, "node-2") == Some(State::Failed) {
            detected = Some(killed.elapsed());
        }
        if marked.is_none() && haproxy.routable("node-2") == Some(false) {
            marked = Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let (detection, marked_down) = (detected.unwrap_or_default(), marked.unwrap_or_default());
    let marked_at = killed + marked_down;
    // Two more seconds of traffic with node-2 out.
    assert!(traffic.wait_count(marked_at, 2000 / EVERY.as_millis() as usize, secs(10)));
    let samples = traffic.samples();
    let during: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.sent >= killed && s.sent < marked_at)
        .collect();
    let after: Vec<&Sample> = samples.iter().filter(|s| s.sent >= marked_at).collect();
    let last_failure = samples
        .iter()
        .filter(|s| s.sent >= killed && s.server.is_none())
        .map(|s| s.sent - killed)
        .max();
    let failed_after: Vec<Duration> = after
        .iter()
        .filter(|s| s.server.as_deref() != Some("node-3"))
        .map(|s| s.sent - killed)
        .collect();

    // Restart node-2: backend and agent.
    let restarted = Instant::now();
    backends[0] = Backend::start(backend_addr(net, 2), "node-2");
    c.start(1);
    let alive_again = c
        .wait_state(&[0], "node-2", State::Alive, secs(20))
        .expect("the LB agent sees node-2 alive again");
    let start = Instant::now();
    while !haproxy.in_rotation("node-2") {
        assert!(
            start.elapsed() < hold_down(mode) + secs(15),
            "node-2 back in rotation: {:?}\n{}",
            haproxy.states(),
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let routable_again = restarted.elapsed();
    let served_again = traffic
        .wait_served("node-2", restarted, secs(5))
        .expect("requests reach node-2 again")
        - restarted;
    assert!(traffic.wait_count(restarted + served_again, 25, secs(5)));
    let failed_after_restart = traffic
        .samples()
        .iter()
        .filter(|s| s.sent >= restarted && s.server.is_none())
        .count();
    drop(traffic);

    let fig = Figures {
        detection,
        marked_down,
        last_failure,
        failed_during: during.iter().filter(|s| s.server.is_none()).count(),
        sent_during: during.len(),
        failed_after: failed_after.len(),
        sent_after: after.len(),
        alive_again,
        routable_again,
        served_again,
        failed_after_restart,
    };
    eprintln!(
        "HAPROXY-FIGURES mode={mode:?} detection_ms={} marked_down_ms={} last_failed_request_ms={} \
         failed_during={}/{} failed_after_marked={}/{} restart_alive_ms={} restart_routable_ms={} \
         restart_served_ms={} failed_after_restart={} test_s={:.1}",
        ms(fig.detection),
        ms(fig.marked_down),
        fig.last_failure.map_or("-".into(), |d| ms(d).to_string()),
        fig.failed_during,
        fig.sent_during,
        fig.failed_after,
        fig.sent_after,
        ms(fig.alive_again),
        ms(fig.routable_again),
        ms(fig.served_again),
        fig.failed_after_restart,
        total.elapsed().as_secs_f64()
    );
    assert!(
        fig.marked_down <= fig.detection + secs(1),
        "HAProxy stopped routing to node-2 {} ms after the kill; swimd detected it at {} ms",
        ms(fig.marked_down),
        ms(fig.detection)
    );
    assert!(
        failed_after.is_empty(),
        "no request fails or reaches node-2 after HAProxy marked it down ({} ms): failures at {:?} ms",
        ms(fig.marked_down),
        failed_after.iter().map(|d| ms(*d)).collect::<Vec<_>>()
    );
    assert!(
        fig.served_again <= hold_down(mode) + secs(10),
        "node-2 serves again {} ms after the restart",
        ms(fig.served_again)
    );
    assert!(
        fig.routable_again >= fig.alive_again + hold_down(mode),
        "the hook held node-2 out for hold_down after it was alive again"
    );
    assert_eq!(
        fig.failed_after_restart, 0,
        "no request fails once node-2 is restarted"
    );
}

#[test]
fn agent_check_mode_fails_over_and_back() {
    failover(Mode::AgentCheck, "haproxy-agent", 70);
}

#[test]
fn runtime_hook_mode_fails_over_and_back() {
    failover(Mode::Runtime, "haproxy-runtime", 71);
}

/// The LB host's agent loses both web hosts' agents (SIGSTOPped: to the LB agent it looks
/// like a partition) while both backends keep serving. swimd must not empty the pool: the
/// runtime hook's `max_failed_fraction` (default 0.5) fails out one of the two servers and
/// holds the other; then both agents come back and both servers return.
fn isolated_lb_agent(mode: Mode, test: &str, net: u8) {
    let total = Instant::now();
    let Some(Setup {
        c,
        backends: _backends,
        haproxy,
        traffic,
    }) = setup(mode, test, net)
    else {
        return;
    };
    let paused: Vec<u32> = [1, 2].iter().filter_map(|&i| c.nodes[i].pid()).collect();
    let stopped = Instant::now();
    for &pid in &paused {
        signal(pid, libc::SIGSTOP);
    }
    // No peer confirms the suspicion, so this takes the longest suspicion timeout.
    let both = c
        .wait_state(&[0], "node-2", State::Failed, secs(30))
        .is_some()
        && c.wait_state(&[0], "node-3", State::Failed, secs(30))
            .is_some();
    let detected = stopped.elapsed();
    // What HAProxy does next is a non-event to wait for: give it three agent intervals (or
    // the hook's deliveries) to act.
    let settled = Instant::now();
    assert!(traffic.wait_count(settled, 1500 / EVERY.as_millis() as usize, secs(5)));
    let states = haproxy.states();
    let served: usize = traffic
        .samples()
        .iter()
        .filter(|s| s.sent >= settled + Duration::from_millis(1000) && s.server.is_some())
        .count();
    let sent = traffic
        .samples()
        .iter()
        .filter(|s| s.sent >= settled + Duration::from_millis(1000))
        .count();
    for &pid in &paused {
        signal(pid, libc::SIGCONT);
    }
    eprintln!(
        "HAPROXY-ISOLATED mode={mode:?} both_failed={both} after_ms={} haproxy={states:?} \
         served={served}/{sent} test_s={:.1}",
        ms(detected),
        total.elapsed().as_secs_f64()
    );
    assert!(both, "the LB agent sees both web hosts failed");
    assert!(
        states.values().any(|&s| s == (2, 0)),
        "a partition of the LB agent must not empty the pool: {states:?}"
    );
    assert_eq!(
        served, sent,
        "every request is served by the server kept in rotation"
    );
    let start = Instant::now();
    while !(haproxy.in_rotation("node-2") && haproxy.in_rotation("node-3")) {
        assert!(
            start.elapsed() < secs(20),
            "both servers back in rotation after SIGCONT: {:?}",
            haproxy.states()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn runtime_hook_mode_keeps_the_pool_when_the_lb_agent_is_isolated() {
    isolated_lb_agent(Mode::Runtime, "haproxy-runtime-iso", 73);
}

/// The agent check keeps one server in: its own `max_failed_fraction` (default 0.5).
#[test]
fn agent_check_mode_keeps_the_pool_when_the_lb_agent_is_isolated() {
    isolated_lb_agent(Mode::AgentCheck, "haproxy-agent-iso", 72);
}

/// A web host whose backend stops while its agent keeps running: its check makes it
/// `critical`, and HAProxy routes around it (agent check answers `down`; the runtime hook
/// sets `maint` on `member.critical`); the backend back → `passing` → back in rotation.
fn critical_service(mode: Mode, test: &str, net: u8) {
    let Some(Setup {
        c,
        mut backends,
        haproxy,
        traffic,
    }) = setup_with(mode, test, net, true)
    else {
        return;
    };
    let stopped = Instant::now();
    backends[0].stop();
    let lb_api = c.nodes[0].api();
    let critical = || http::member(&lb_api, "node-2").is_ok_and(|m| m.health == Health::Critical);
    while !critical() {
        assert!(
            stopped.elapsed() < secs(10),
            "node-2 never critical on the LB agent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let seen_critical = stopped.elapsed();
    while haproxy.in_rotation("node-2") {
        assert!(
            stopped.elapsed() < seen_critical + secs(2),
            "HAProxy still routes to a critical member: {:?}",
            haproxy.states()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = Instant::now();
    let out_after = stopped.elapsed();
    assert!(traffic.wait_count(out, 50, secs(5)));
    let failed_after: usize = traffic
        .samples()
        .iter()
        .filter(|s| s.sent >= out + Duration::from_millis(100) && s.server.is_none())
        .count();
    eprintln!(
        "HAPROXY-CRITICAL mode={mode:?} critical_ms={} out_of_rotation_ms={} failed_after={failed_after}",
        ms(seen_critical),
        ms(out_after)
    );
    assert_eq!(
        failed_after, 0,
        "no failed request once HAProxy routes around it"
    );
    assert_eq!(
        c.state(0, "node-2"),
        Some(State::Alive),
        "a critical member stays alive"
    );
    backends[0] = Backend::start(backend_addr(net, 2), "node-2");
    let back = Instant::now();
    assert!(
        traffic.wait_served("node-2", back, secs(10)).is_some(),
        "back in rotation once passing: {:?}",
        haproxy.states()
    );
}

#[test]
fn agent_check_mode_routes_around_a_critical_member() {
    critical_service(Mode::AgentCheck, "haproxy-agent-crit", 74);
}

#[test]
fn runtime_hook_mode_routes_around_a_critical_member() {
    critical_service(Mode::Runtime, "haproxy-runtime-crit", 75);
}

/// `swimd maint on|off` on web host node-2, with a SIGKILL and a restart in between.
fn maintenance(mode: Mode, test: &str, net: u8) {
    let Some(Setup {
        mut c,
        mut backends,
        haproxy,
        traffic,
    }) = setup(mode, test, net)
    else {
        return;
    };
    let node2_api = c.nodes[1].api();
    let maint = |args: &[&str]| {
        let out = swimd(&[&["maint"], args, &["--api", &node2_api]].concat());
        assert!(
            out.status.success(),
            "swimd maint {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let on = Instant::now();
    maint(&["on", "--reason", "kernel upgrade"]);
    // Drained: the last request node-2 answers is sent within a second; nothing fails.
    assert!(traffic.wait_count(on, 2500 / EVERY.as_millis() as usize, secs(10)));
    let samples = traffic.samples();
    let last_served = samples
        .iter()
        .filter(|s| s.sent >= on && s.server.as_deref() == Some("node-2"))
        .map(|s| s.sent - on)
        .max();
    let failed = samples
        .iter()
        .filter(|s| s.sent >= on && s.server.is_none())
        .count();
    eprintln!(
        "HAPROXY-MAINTENANCE mode={mode:?} last_request_to_node2_ms={} failed={failed}",
        last_served.map_or("-".into(), |d| ms(d).to_string())
    );
    assert!(
        last_served.is_none_or(|d| d <= secs(1)),
        "node-2 drained within 1 s of `maint on`: it still answered a request sent {} ms after",
        last_served.map_or(0, ms)
    );
    assert_eq!(failed, 0, "draining fails no request");

    // Killed during the planned work: the LB agent sees it failed, in maintenance, and
    // nothing fails over.
    let killed = Instant::now();
    kill_web_host(&mut c, &mut backends);
    c.wait_state(&[0], "node-2", State::Failed, secs(20))
        .expect("the LB agent sees node-2 failed");
    let lb_api = c.nodes[0].api();
    let seen = http::member(&lb_api, "node-2").expect("node-2 on the LB agent");
    assert_eq!(seen.health, Health::Maintenance, "{seen:?}");
    assert_eq!(
        seen.maintenance.as_deref(),
        Some("kernel upgrade"),
        "{seen:?}"
    );
    assert!(traffic.wait_count(Instant::now(), 50, secs(5)));
    if mode == Mode::Runtime {
        let suppressed = c.metric(
            0,
            "swimd_hook_suppressed_total{hook=\"haproxy\",reason=\"in_maintenance\"}",
        );
        assert!(
            suppressed.is_some_and(|n| n >= 1.0),
            "member.failed suppressed as in_maintenance: {suppressed:?}"
        );
        let admin = haproxy.states().get("node-2").map(|s| s.1);
        assert!(
            admin.is_some_and(|a| a & 1 == 0),
            "no failover delivery: the server is not in maint (admin state {admin:?})"
        );
    }
    let failed = traffic
        .samples()
        .iter()
        .filter(|s| s.sent >= killed && s.server.is_none())
        .count();
    assert_eq!(failed, 0, "a drained member's crash fails no request");

    // Restarted: alive again, still in maintenance (kept in its state directory), still out.
    backends[0] = Backend::start(backend_addr(net, 2), "node-2");
    c.start(1);
    c.wait_state(&[0], "node-2", State::Alive, secs(20))
        .expect("the LB agent sees node-2 alive again");
    let back = Instant::now();
    let seen = http::member(&lb_api, "node-2").expect("node-2 on the LB agent");
    assert_eq!(
        seen.health,
        Health::Maintenance,
        "restarted, still in maintenance: {seen:?}"
    );
    assert!(traffic.wait_count(back, 2000 / EVERY.as_millis() as usize, secs(10)));
    assert!(
        !traffic
            .samples()
            .iter()
            .any(|s| s.sent >= back && s.server.as_deref() == Some("node-2")),
        "a restarted member in maintenance stays out of rotation"
    );

    // `maint off`: back.
    let off = Instant::now();
    maint(&["off"]);
    let served = traffic
        .wait_served("node-2", off, secs(10))
        .map(|t| t - off);
    eprintln!(
        "HAPROXY-MAINTENANCE mode={mode:?} back_after_maint_off_ms={}",
        served.map_or("-".into(), |d| ms(d).to_string())
    );
    assert!(
        served.is_some(),
        "node-2 back in rotation after `maint off`"
    );
}

#[test]
fn agent_check_mode_drains_a_member_in_maintenance_and_keeps_it_out_until_maint_off() {
    maintenance(Mode::AgentCheck, "haproxy-agent-maint", 76);
}

#[test]
fn runtime_hook_mode_drains_a_member_in_maintenance_and_keeps_it_out_until_maint_off() {
    maintenance(Mode::Runtime, "haproxy-runtime-maint", 77);
}
