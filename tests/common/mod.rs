//! A harness for tests with real `swimd agent` processes on loopback: certificates, configs,
//! processes (killed on drop) and a small API client.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const SWIMD: &str = env!("CARGO_BIN_EXE_swimd");

/// The swimd binary to run: `SWIMD_BIN` if set (the benches use it to measure the shipped
/// build, `SWIMD_BIN=target/dist/swimd`), else the one cargo built for this profile.
/// A relative `SWIMD_BIN` is taken from the current folder (the lab starts agents elsewhere).
pub fn swimd_bin() -> String {
    match std::env::var("SWIMD_BIN") {
        Ok(path) => std::fs::canonicalize(&path)
            .map(|p| p.display().to_string())
            .unwrap_or(path),
        Err(_) => SWIMD.to_string(),
    }
}

/// A folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
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

pub struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub config: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Node {
    pub fn gossip(&self) -> SocketAddr {
        SocketAddr::from((self.ip, 7946))
    }

    pub fn api(&self) -> String {
        format!("{}:7947", self.ip)
    }

    /// The read-only listener (`/metrics`, `/v1/health`).
    pub fn metrics(&self) -> String {
        format!("{}:9946", self.ip)
    }

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

    /// Members as node `i` sees them: name → (state, incarnation).
    pub fn view(&self, i: usize) -> Option<BTreeMap<String, (String, u64)>> {
        let body = get(&self.nodes[i].api(), "/v1/members").ok()?;
        let members = body.get("members")?.as_array()?.clone();
        Some(
            members
                .iter()
                .filter_map(|m| {
                    Some((
                        m.get("name")?.as_str()?.to_string(),
                        (
                            m.get("state")?.as_str()?.to_string(),
                            m.get("incarnation")?.as_u64()?,
                        ),
                    ))
                })
                .collect(),
        )
    }

    /// Waits until every listed observer sees `subject` in `state`; returns the time taken.
    pub fn wait_state(
        &self,
        observers: &[usize],
        subject: &str,
        state: &str,
        limit: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        while start.elapsed() < limit {
            let all = observers.iter().all(|&o| {
                self.view(o)
                    .and_then(|v| v.get(subject).map(|(s, _)| s == state))
                    .unwrap_or(false)
            });
            if all {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Every member that one of `observers` sees in a state other than alive, as
    /// "node-K saw X STATE".
    pub fn not_alive(&self, observers: impl IntoIterator<Item = usize>) -> Vec<String> {
        let mut seen = Vec::new();
        for o in observers {
            for (name, (state, _)) in self.view(o).unwrap_or_default() {
                if state != "alive" {
                    seen.push(format!("node-{} saw {name} {state}", o + 1));
                }
            }
        }
        seen
    }

    /// Waits until every running node lists all `n` members alive.
    pub fn wait_converged(&self, limit: Duration) -> Option<Duration> {
        let start = Instant::now();
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].child.is_some())
            .collect();
        while start.elapsed() < limit {
            let all = running.iter().all(|&o| {
                self.view(o).is_some_and(|v| {
                    running.iter().all(|&s| {
                        v.get(&self.nodes[s].name)
                            .is_some_and(|(st, _)| st == "alive")
                    })
                })
            });
            if all {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
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

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().ok()
}

/// A minimal HTTP/1.1 GET returning the JSON body (the tests avoid an async runtime).
pub fn get(api: &str, path: &str) -> Result<Value, String> {
    request(api, "GET", path, None).and_then(|(status, body)| {
        if status == 200 {
            serde_json::from_str(&body).map_err(|e| e.to_string())
        } else {
            Err(format!("HTTP {status}: {body}"))
        }
    })
}

pub fn request(
    api: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let (status, body) = request_text(api, method, path, body)?;
    // Chunked bodies: take the JSON between the first '{' and the last '}'.
    let body = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_string(),
        _ => body,
    };
    Ok((status, body))
}

/// A minimal HTTP/1.1 request returning the status and the body as sent.
pub fn request_text(
    api: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(
        &api.parse().map_err(|e| format!("{e}"))?,
        Duration::from_secs(1),
    )
    .map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    let status: u16 = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Runs the swimd binary with arguments.
pub fn swimd(args: &[&str]) -> Output {
    Command::new(swimd_bin())
        .args(args)
        .output()
        .expect("run swimd")
}

pub fn swimd_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(swimd_bin());
    cmd.args(args).current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run swimd")
}

/// Whether a system tool runs here: outside CI a missing tool skips the test loudly; with
/// `CI=true` it fails it (CI installs the Debian `package`).
pub fn require_tool(tool: &str, package: &str) -> bool {
    require_tool_with(tool, "--version", package)
}

/// `require_tool` for a tool whose version flag is not `--version` (`ip -V`, `haproxy -v`).
pub fn require_tool_with(tool: &str, version_arg: &str, package: &str) -> bool {
    if Command::new(tool)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is missing (Debian package {package}), and CI=true requires it");
    }
    eprintln!("SKIPPED: {tool} is not installed (Debian package {package})");
    false
}

impl Cluster {
    /// Appends TOML (e.g. `[[hooks]]`, `[[checks]]`) to node `i`'s config before it starts.
    pub fn append_config(&self, i: usize, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.nodes[i].config)
            .expect("config");
        f.write_all(text.as_bytes()).expect("append config");
    }

    /// A metric's value on node `i`: the first series whose line starts with `series`.
    pub fn metric(&self, i: usize, series: &str) -> Option<f64> {
        let (_, text) = request_text(&self.nodes[i].metrics(), "GET", "/metrics", None).ok()?;
        text.lines()
            .find(|l| l.starts_with(series))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    }
}

/// The fields of `/proc/PID/stat` after the command name (which may contain spaces and
/// parentheses): state, ppid, … (`None` once the process is gone).
pub fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// (resident KiB, CPU seconds) of a process, from /proc (0s once it is gone).
pub fn usage(pid: u32) -> (u64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fields = stat_fields(pid).unwrap_or_default();
    // utime and stime: fields 14 and 15 of stat(5), 11 and 12 after the command name.
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (rss, ticks / hz)
}
