//! HAProxy in front of web hosts, for tests/haproxy.rs: three agents (node-1 the LB host
//! with HAProxy, node-2 and node-3 web hosts each with a tiny HTTP backend), HAProxy as a
//! child process configured for one of swimd's two integrations ([`Mode`]), and a client
//! that sends a request through it every [`EVERY`] and keeps what each one got.

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

use super::cluster::Cluster;
use super::tools::{require_tool_with, signal, swimd};

pub const HTTP_PORT: u16 = 8080;
pub const AGENT_PORT: u16 = 7948;
/// The client's request interval.
pub const EVERY: Duration = Duration::from_millis(20);

/// A web host's HTTP backend: answers 200 with its name, one connection at a time.
pub struct Backend {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    pub fn start(addr: SocketAddr, name: &str) -> Backend {
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
    pub fn stop(&mut self) {
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
pub struct Haproxy {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Haproxy {
    pub fn start(dir: &Path, config: &str) -> Haproxy {
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

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One runtime API command; HAProxy answers and closes.
    pub fn admin(&self, command: &str) -> std::io::Result<String> {
        let mut s = UnixStream::connect(&self.socket)?;
        s.set_read_timeout(Some(secs(2)))?;
        s.write_all(format!("{command}\n").as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Server name → (srv_op_state, srv_admin_state) from `show servers state web`.
    pub fn states(&self) -> BTreeMap<String, (u32, u32)> {
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
    pub fn routable(&self, server: &str) -> Option<bool> {
        self.states().get(server).map(|&s| s == (2, 0))
    }

    pub fn in_rotation(&self, server: &str) -> bool {
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
pub struct Sample {
    pub sent: Instant,
    /// The backend that answered 200, or None (an error status or no answer).
    pub server: Option<String>,
}

/// Sends a request through HAProxy every [`EVERY`], keep-alive off, 1 s timeout.
pub struct Traffic {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(frontend: SocketAddr) -> Traffic {
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

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Waits until a request sent at or after `since` is answered by `server`.
    pub fn wait_served(&self, server: &str, since: Instant, limit: Duration) -> Option<Instant> {
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
    pub fn wait_count(&self, since: Instant, n: usize, limit: Duration) -> bool {
        super::cluster::within(limit, || {
            self.samples().iter().filter(|s| s.sent >= since).count() >= n
        })
        .is_some()
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
pub enum Mode {
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
pub fn hold_down(mode: Mode) -> Duration {
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

/// A running setup: the agents (node-1 the LB host), the two backends, HAProxy with both
/// servers in rotation, and traffic flowing to both.
pub struct Setup {
    pub c: Cluster,
    pub backends: [Backend; 2],
    pub haproxy: Haproxy,
    pub traffic: Traffic,
}

pub fn backend_addr(net: u8, n: u8) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::new(127, 0, net, n), HTTP_PORT))
}

/// None when a tool is missing outside CI (the test is skipped).
pub fn setup(mode: Mode, test: &str, net: u8) -> Option<Setup> {
    setup_with(mode, test, net, false)
}

/// [`setup`]; with `checks`, each web host's agent checks its own backend (tcp, 500 ms,
/// rise = fall = 2), so a backend that stops makes its member `critical`.
pub fn setup_with(mode: Mode, test: &str, net: u8, checks: bool) -> Option<Setup> {
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
    c.append_config(0, &extra);

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
pub fn kill_web_host(c: &mut Cluster, backends: &mut [Backend; 2]) {
    if let Some(pid) = c.nodes[1].pid() {
        signal(pid, libc::SIGKILL);
    }
    backends[0].stop();
    c.kill(1);
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}
