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

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;

const HTTP_PORT: u16 = 8080;
const AGENT_PORT: u16 = 7948;
/// The client's request interval.
const EVERY: Duration = Duration::from_millis(20);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A web host's HTTP backend: answers 200 with its name, one connection at a time.
struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    fn start(addr: SocketAddr, name: &str) -> Backend {
        let listener = TcpListener::bind(addr).expect("bind a backend");
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            let name = name.to_string();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => answer(stream, &name),
                        Err(_) => std::thread::sleep(Duration::from_millis(1)),
                    }
                }
                // The listener closes here: new connections are refused.
            })
        };
        Backend {
            stop,
            thread: Some(thread),
        }
    }

    /// Closes the listener (returns once it is closed).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut stream: TcpStream, name: &str) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(secs(1)));
    let mut data = Vec::new();
    let mut buf = [0u8; 1024];
    while !data.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
        name.len()
    );
}

/// HAProxy as a child process, SIGKILLed by PID on drop.
struct Haproxy {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Haproxy {
    fn start(dir: &Path, config: &str) -> Haproxy {
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(&cfg, config).expect("haproxy.cfg");
        let check = Command::new("haproxy")
            .arg("-c")
            .arg("-f")
            .arg(&cfg)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let log = dir.join("haproxy.log");
        let out = std::fs::File::create(&log).expect("haproxy.log");
        let child = Command::new("haproxy")
            .arg("-f")
            .arg(&cfg)
            .arg("-db")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("spawn haproxy");
        let haproxy = Haproxy {
            child,
            socket: dir.join("admin.sock"),
            log,
        };
        let start = Instant::now();
        while haproxy.admin("show info").is_err() {
            assert!(
                start.elapsed() < secs(10),
                "HAProxy's admin socket never answered: {}",
                haproxy.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        haproxy
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One runtime API command; HAProxy answers and closes.
    fn admin(&self, command: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(secs(2)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Server name → (srv_op_state, srv_admin_state) from `show servers state web`.
    fn states(&self) -> BTreeMap<String, (u32, u32)> {
        let text = self.admin("show servers state web").unwrap_or_default();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.get(3)?.to_string(),
                    (f.get(5)?.parse().ok()?, f.get(6)?.parse().ok()?),
                ))
            })
            .collect()
    }

    /// Is `server` taking new requests: running (op state 2) and no maint or drain flag?
    /// None when HAProxy's answer does not list it (so a failed query is not "down").
    fn routable(&self, server: &str) -> Option<bool> {
        self.states().get(server).map(|&s| s == (2, 0))
    }

    fn in_rotation(&self, server: &str) -> bool {
        self.routable(server) == Some(true)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request through HAProxy.
#[derive(Debug, Clone)]
struct Sample {
    sent: Instant,
    /// The backend that answered 200, or None (an error status or no answer).
    server: Option<String>,
}

/// Sends a request through HAProxy every [`EVERY`], keep-alive off, 1 s timeout.
struct Traffic {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    fn start(frontend: SocketAddr) -> Traffic {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let samples = Arc::clone(&samples);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let server = fetch(frontend);
                    samples.lock().unwrap().push(Sample { sent, server });
                    next += EVERY;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
        };
        Traffic {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Waits until a request sent at or after `since` is answered by `server`.
    fn wait_served(&self, server: &str, since: Instant, limit: Duration) -> Option<Instant> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(s) = self
                .samples()
                .iter()
                .find(|s| s.sent >= since && s.server.as_deref() == Some(server))
            {
                return Some(s.sent);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Waits until `n` requests have been sent at or after `since`.
    fn wait_count(&self, since: Instant, n: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.samples().iter().filter(|s| s.sent >= since).count() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// GET / through HAProxy: Some(body) on a 200, None otherwise.
fn fetch(frontend: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&frontend, secs(1)).ok()?;
    s.set_read_timeout(Some(secs(1))).ok()?;
    s.set_write_timeout(Some(secs(1))).ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    AgentCheck,
    Runtime,
}

fn haproxy_config(mode: Mode, net: u8, socket: &Path) -> String {
    let lb = Ipv4Addr::new(127, 0, net, 1);
    // Measure the exposure: no retry, no redispatch (see the module comment).
    // SWIMD_TEST_HAPROXY_REDISPATCH=1 measures the production setting instead.
    let retries = if std::env::var("SWIMD_TEST_HAPROXY_REDISPATCH").is_ok_and(|v| v == "1") {
        "    retries 2\n    option redispatch 1"
    } else {
        "    retries 0"
    };
    let mut servers = String::new();
    for n in [2, 3] {
        let ip = Ipv4Addr::new(127, 0, net, n);
        servers.push_str(&format!("    server node-{n} {ip}:{HTTP_PORT}"));
        if mode == Mode::AgentCheck {
            // No `check`: only swimd's answer moves the server.
            servers.push_str(&format!(
                " agent-check agent-addr {lb} agent-port {AGENT_PORT} agent-send \"node-{n}\\n\" agent-inter 500ms"
            ));
        }
        servers.push('\n');
    }
    format!(
        "global\n    stats socket {} mode 600 level admin\n\n\
         defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 2s\n\
         {retries}\n\n\
         frontend fe\n    bind {lb}:{HTTP_PORT}\n    default_backend web\n\n\
         backend web\n    balance roundrobin\n{servers}",
        socket.display()
    )
}

/// The runtime hook's hold_down: 0 s unless SWIMD_TEST_HAPROXY_HOLD_DOWN says (seconds).
fn hold_down(mode: Mode) -> Duration {
    match mode {
        Mode::AgentCheck => Duration::ZERO,
        Mode::Runtime => secs(
            std::env::var("SWIMD_TEST_HAPROXY_HOLD_DOWN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        ),
    }
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

/// A running setup: the agents (node-1 the LB host), the two backends, HAProxy with both
/// servers in rotation, and traffic flowing to both.
struct Setup {
    c: Cluster,
    backends: [Backend; 2],
    haproxy: Haproxy,
    traffic: Traffic,
}

fn backend_addr(net: u8, n: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 0, net, n), HTTP_PORT))
}

/// None when a tool is missing outside CI (the test is skipped).
fn setup(mode: Mode, test: &str, net: u8) -> Option<Setup> {
    setup_with(mode, test, net, false)
}

/// [`setup`]; with `checks`, each web host's agent checks its own backend (tcp, 500 ms,
/// rise = fall = 2), so a backend that stops makes its member `critical`.
fn setup_with(mode: Mode, test: &str, net: u8, checks: bool) -> Option<Setup> {
    if !require_tool_with("haproxy", "-v", "haproxy") {
        return None;
    }
    if mode == Mode::Runtime && !require_tool_with("socat", "-V", "socat") {
        return None;
    }
    let mut c = Cluster::new(test, net, 3);
    // node-1 is the LB host (and the seed, so a restarted web host finds the cluster at once);
    // node-2 and node-3 are web hosts.
    for i in [1, 2] {
        let text = std::fs::read_to_string(&c.nodes[i].config).expect("config");
        let mut text = text.replacen(
            "cluster = \"test\"\n",
            "cluster = \"test\"\ntags = { role = \"web\" }\n",
            1,
        );
        if checks {
            text.push_str(&format!(
                "\n[[checks]]\nname = \"web\"\nkind = \"tcp\"\naddress = \"{}\"\n\
                 interval = \"500ms\"\ntimeout = \"300ms\"\nrise = 2\nfall = 2\n",
                backend_addr(net, i as u8 + 1)
            ));
        }
        std::fs::write(&c.nodes[i].config, text).expect("config");
    }
    let socket = c.dir.0.join("admin.sock");
    let lb_ip = c.nodes[0].ip;
    let extra = match mode {
        Mode::AgentCheck => format!("\n[haproxy_agent]\nlisten = \"{lb_ip}:{AGENT_PORT}\"\n"),
        Mode::Runtime => {
            let script =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/hooks/haproxy-runtime.sh");
            // hold_down = 0s: the restarted host goes back at once (the default 10 s would
            // add 10 s to "back in rotation"; SWIMD_TEST_HAPROXY_HOLD_DOWN=10 measures it).
            // max_failed_fraction stays at its default 0.5: one of the two web hosts may be
            // failed out.
            format!(
                "\n[[hooks]]\nname = \"haproxy\"\nkind = \"exec\"\nscope = \"local\"\n\
                 events = [\"member.failed\", \"member.recovered\", \"member.joined\", \"member.left\", \
                 \"member.critical\", \"member.passing\", \"member.maintenance\", \"member.ready\"]\n\
                 tags = {{ role = \"web\" }}\nhold_down = \"{}s\"\ntimeout = \"5s\"\n\
                 command = [\"{}\", \"-b\", \"web\", \"-s\", \"{}\"]\n",
                hold_down(mode).as_secs(),
                script.display(),
                socket.display()
            )
        }
    };
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&c.nodes[0].config)
        .expect("config");
    f.write_all(extra.as_bytes()).expect("append config");
    drop(f);

    let backends = [
        Backend::start(backend_addr(net, 2), "node-2"),
        Backend::start(backend_addr(net, 3), "node-3"),
    ];
    // HAProxy first, so the runtime hook's first deliveries (member.joined) find the socket.
    let haproxy = Haproxy::start(&c.dir.0, &haproxy_config(mode, net, &socket));
    c.start_all();
    assert!(c.wait_converged(secs(15)).is_some(), "cluster converges");
    let start = Instant::now();
    while !(haproxy.in_rotation("node-2") && haproxy.in_rotation("node-3")) {
        assert!(
            start.elapsed() < secs(10),
            "both servers in rotation: {:?}\n{}",
            haproxy.states(),
            haproxy.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    if mode == Mode::Runtime {
        // docs/haproxy.md's check of the hook, run by the agent: `member.joined` about a
        // server in rotation sets it ready again (no change); a member HAProxy does not know
        // is an error (HAProxy answers "No such server.", the script exits 1).
        let api = c.nodes[0].api();
        let ok = swimd(&[
            "hooks",
            "test",
            "haproxy",
            "--event",
            "member.joined",
            "--member",
            "node-2",
            "--api",
            &api,
        ]);
        assert!(
            ok.status.success(),
            "swimd hooks test: {}{}",
            String::from_utf8_lossy(&ok.stdout),
            String::from_utf8_lossy(&ok.stderr)
        );
        let bad = swimd(&[
            "hooks",
            "test",
            "haproxy",
            "--event",
            "member.failed",
            "--api",
            &api,
        ]);
        let text = String::from_utf8_lossy(&bad.stderr).to_string()
            + &String::from_utf8_lossy(&bad.stdout);
        assert!(
            !bad.status.success() && text.contains("No such server"),
            "a member HAProxy does not know fails the hook: {text}"
        );
        assert!(haproxy.in_rotation("node-2") && haproxy.in_rotation("node-3"));
    }
    let traffic = Traffic::start(SocketAddr::from((lb_ip, HTTP_PORT)));
    let warm = Instant::now();
    for name in ["node-2", "node-3"] {
        assert!(
            traffic.wait_served(name, warm, secs(5)).is_some(),
            "{name} serves through HAProxy"
        );
    }
    assert!(traffic.wait_count(warm, 25, secs(5)));
    Some(Setup {
        c,
        backends,
        haproxy,
        traffic,
    })
}

/// Kills web host node-2: its agent (SIGKILL) and its backend at the same instant.
fn kill_web_host(c: &mut Cluster, backends: &mut [Backend; 2]) {
    if let Some(pid) = c.nodes[1].pid() {
        signal(pid, libc::SIGKILL);
    }
    backends[0].stop();
    c.kill(1);
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
        if detected.is_none()
            && c.view(0)
                .is_some_and(|v| v.get("node-2").is_some_and(|(s, _)| s == "failed"))
        {
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
        .wait_state(&[0], "node-2", "alive", secs(20))
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
    let both = c.wait_state(&[0], "node-2", "failed", secs(30)).is_some()
        && c.wait_state(&[0], "node-3", "failed", secs(30)).is_some();
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
    let critical = || {
        get(&lb_api, "/v1/members/node-2")
            .ok()
            .and_then(|m| m["health"].as_str().map(|h| h == "critical"))
            .unwrap_or(false)
    };
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
        c.view(0)
            .and_then(|v| v.get("node-2").map(|s| s.0.clone()))
            .as_deref(),
        Some("alive"),
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
    c.wait_state(&[0], "node-2", "failed", secs(20))
        .expect("the LB agent sees node-2 failed");
    let lb_api = c.nodes[0].api();
    let seen = get(&lb_api, "/v1/members/node-2").expect("node-2 on the LB agent");
    assert_eq!(seen["health"], "maintenance", "{seen}");
    assert_eq!(seen["maintenance"], "kernel upgrade", "{seen}");
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
    c.wait_state(&[0], "node-2", "alive", secs(20))
        .expect("the LB agent sees node-2 alive again");
    let back = Instant::now();
    let seen = get(&lb_api, "/v1/members/node-2").expect("node-2 on the LB agent");
    assert_eq!(
        seen["health"], "maintenance",
        "restarted, still in maintenance: {seen}"
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
