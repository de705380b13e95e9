//! Real `swimd agent` processes on loopback: certificates, configs, processes (killed on
//! drop), and waits on what the agents see, read through their API as typed members.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swimd::api::json::MemberJson;
use swimd::model::State;

use super::http;
use super::tools::{signal, swimd_bin, wait_timeout};

/// A folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh `swimd-test-NAME-PID` in the system's temporary folder.
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("swimd-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One agent of a [`Cluster`]: its files, addresses and process.
pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    /// The gossip address.
    pub fn gossip(&self) -> SocketAddr {
        SocketAddr::from((self.ip, 7946))
    }

    /// The API listener, `ip:port`.
    pub fn api(&self) -> String {
        format!("{}:7947", self.ip)
    }

    /// The read-only listener (`/metrics`, `/v1/health`).
    pub fn metrics(&self) -> String {
        format!("{}:9946", self.ip)
    }

    /// The agent's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

/// N agents on 127.0.`net`.1..=N (each test uses its own `net` so tests run in parallel).
pub struct Cluster {
    pub dir: TempDir,
    pub nodes: Vec<Node>,
    pub cluster_name: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

impl Cluster {
    /// Certificates and configs for `n` agents; nothing started. Seeds: the first agent.
    pub fn new(test: &str, net: u8, n: u8) -> Cluster {
        let dir = TempDir::new(test);
        let tls = dir.0.join("tls");
        swimd::net::tls::init_ca(&tls, "test").expect("ca");
        let mut nodes = Vec::new();
        for i in 1..=n {
            let name = format!("node-{i}");
            let ip = Ipv4Addr::new(127, 0, net, i);
            swimd::net::tls::issue(&tls, &name, &[IpAddr::V4(ip)]).expect("cert");
            let config = dir.0.join(format!("{name}.toml"));
            let log = dir.0.join(format!("{name}.log"));
            nodes.push(Node {
                name,
                ip,
                config,
                log,
                child: None,
            });
        }
        let seed = nodes[0].gossip();
        for node in &nodes {
            std::fs::write(
                &node.config,
                config_text(&node.name, node.ip, "test", &[seed]),
            )
            .expect("config");
        }
        Cluster {
            dir,
            nodes,
            cluster_name: "test".into(),
        }
    }

    /// `n` agents started and converged within 10 s.
    pub fn converged(test: &str, net: u8, n: u8) -> Cluster {
        let mut c = Cluster::new(test, net, n);
        c.start_all();
        assert!(
            c.wait_converged(Duration::from_secs(10)).is_some(),
            "no convergence:\n{}",
            c.log(0)
        );
        c
    }

    /// Appends TOML (e.g. `[[hooks]]`, `[[checks]]`) to node `i`'s config before it starts.
    pub fn append_config(&self, i: usize, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.nodes[i].config)
            .expect("config");
        f.write_all(text.as_bytes()).expect("append config");
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    pub fn start(&mut self, i: usize) {
        self.start_with_env(i, &[]);
    }

    pub fn start_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("log");
        let child = Command::new(swimd_bin())
            .args(["agent", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn swimd agent");
        node.child = Some(child);
    }

    /// SIGKILL; waits for the exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().expect("kill");
            child.wait().expect("wait");
        }
    }

    /// SIGTERM; waits for the exit and returns its status code.
    pub fn terminate(&mut self, i: usize) -> Option<i32> {
        let mut child = self.nodes[i].child.take()?;
        signal(child.id(), libc::SIGTERM);
        let status = wait_timeout(&mut child, Duration::from_secs(10));
        status.and_then(|s| s.code())
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log).unwrap_or_default()
    }

    /// Members as node `i` sees them, by name (`None` when it does not answer).
    pub fn view(&self, i: usize) -> Option<BTreeMap<String, MemberJson>> {
        let members = http::members(&self.nodes[i].api()).ok()?;
        Some(members.into_iter().map(|m| (m.name.clone(), m)).collect())
    }

    /// `subject`'s state as node `i` sees it (`None` when it does not know it or answer).
    pub fn state(&self, i: usize, subject: &str) -> Option<State> {
        self.view(i)?.get(subject).map(|m| m.state)
    }

    /// Waits until every listed observer sees `subject` in `state`; returns the time taken.
    pub fn wait_state(
        &self,
        observers: &[usize],
        subject: &str,
        state: State,
        limit: Duration,
    ) -> Option<Duration> {
        within(limit, || {
            observers
                .iter()
                .all(|&o| self.state(o, subject) == Some(state))
        })
    }

    /// Every member that one of `observers` sees in a state other than alive, as
    /// "node-K saw X STATE".
    pub fn not_alive(&self, observers: impl IntoIterator<Item = usize>) -> Vec<String> {
        let mut seen = Vec::new();
        for o in observers {
            for (name, member) in self.view(o).unwrap_or_default() {
                if member.state != State::Alive {
                    seen.push(format!("node-{} saw {name} {}", o + 1, member.state));
                }
            }
        }
        seen
    }

    /// Waits until every running node lists all running members alive.
    pub fn wait_converged(&self, limit: Duration) -> Option<Duration> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        within(limit, || {
            running.iter().all(|&o| {
                self.view(o).is_some_and(|v| {
                    running.iter().all(|&s| {
                        v.get(&self.nodes[s].name)
                            .is_some_and(|m| m.state == State::Alive)
                    })
                })
            })
        })
    }

    /// A metric's value on node `i`: the first series whose line starts with `series`.
    pub fn metric(&self, i: usize, series: &str) -> Option<f64> {
        let answer = http::request(&self.nodes[i].metrics(), "GET", "/metrics", None).ok()?;
        answer
            .body
            .lines()
            .find(|l| l.starts_with(series))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }
}

/// Waits until `done` holds, polling every 20 ms up to `limit`; returns how long it took.
pub fn within(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// An agent's config: node `name` gossiping on `ip`:7946 (API on 7947, metrics on 9946),
/// certificates in `tls/`, state in `state/NAME`, joining through `seeds`.
pub fn config_text(name: &str, ip: Ipv4Addr, cluster: &str, seeds: &[SocketAddr]) -> String {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[node]\nname = \"{name}\"\ncluster = \"{cluster}\"\n\n[gossip]\nbind = \"{ip}:7946\"\nseeds = [{}]\n\n\
         [tls]\nca = \"tls/ca.pem\"\ncert = \"tls/{name}.pem\"\nkey = \"tls/{name}-key.pem\"\n\n\
         [api]\nlisten = \"{ip}:7947\"\n\n[metrics]\nlisten = \"{ip}:9946\"\n\n\
         [state]\ndir = \"state/{name}\"\n",
        seeds.join(", ")
    )
}
