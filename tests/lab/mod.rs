//! A network-namespace fault lab: N hosts, each a network namespace on a bridge with its own
//! address, running a real daemon (`swimd agent`, or any program), and the faults a network
//! deals out: partitions (two-way and one-way), random loss per direction, pauses, kills and
//! restarts; per-host bytes from the veth counters; each swimd host's event stream.
//!
//! Use it from a system test with `pub mod support; pub mod lab;` (it uses `support`). It needs
//! root, `ip` (iproute2) and `nft` (nftables): `Lab::new` returns `None` (skipping loudly) when
//! they are missing, and panics under `CI=true`.
//!
//! Layout of a lab with tag `T` and net `K`: bridge `swlTbr` holding 10.77.K.1/24 in the root
//! namespace (so the test reaches every host's API directly), hosts `swlT-I` at 10.77.K.(10+I)
//! with `eth0` joined to the bridge by veth `swlTvI`. The kernel's neighbour table is shared by
//! all namespaces and capped (gc_thresh3, 1024 by default): 50 hosts would need ~2,450 learned
//! entries and overflow it, so every interface gets a fixed MAC and every namespace permanent
//! neighbour entries, which the cap does not count. IPv6 is off on the lab's links so the veth
//! counters carry only the hosts' own traffic. Faults are nftables rules in each host's
//! namespace; traffic to and from the test's own address (the API) is never faulted.
//!
//! Everything is torn down on drop (also when a test panics), and `new` first removes what a
//! killed run with the same tag left behind: its namespaces (and the processes in them), its
//! links.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use swimd::api::json::EventJson;
use swimd::model::State;

use crate::support::cluster::{TempDir, config_text};
use crate::support::http;
use crate::support::tools::{
    require_tool, require_tool_with, signal, swimd, swimd_bin, wait_timeout,
};

/// The gossip port every swimd host binds (its API is on 7947 of the same address).
pub const GOSSIP_PORT: u16 = 7946;

/// Which way packets travel, seen from a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

/// One member event as a host's agent reported it on `GET /v1/events`.
#[derive(Clone, Debug)]
pub struct Event {
    /// The index of the host whose agent reported it.
    pub observer: usize,
    /// `member.joined`, `member.suspect`, `member.failed`, `member.recovered`, `member.left`…
    pub kind: String,
    /// The member the event is about.
    pub member: String,
    /// Its state before, if the agent knew it.
    pub previous_state: Option<State>,
    /// The agent's own clock (seconds since the Unix epoch).
    pub timestamp: f64,
    /// When the lab read it.
    pub received: Instant,
}

/// The nftables faults of one host.
#[derive(Clone, Debug, Default)]
struct Faults {
    drop_from: BTreeSet<Ipv4Addr>,
    loss_in: u8,
    loss_out: u8,
}

pub struct Host {
    pub index: usize,
    pub name: String,
    /// The network namespace.
    pub ns: String,
    pub ip: Ipv4Addr,
    /// The root-namespace end of the host's veth (its counters are the host's traffic).
    pub veth: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    /// Bumped at every start, so the event watcher knows a new process began.
    generation: Arc<AtomicU64>,
    /// The event follower's place: (generation, last event id read).
    cursor: Arc<Mutex<(u64, u64)>>,
    faults: Faults,
}

impl Host {
    pub fn gossip(&self) -> SocketAddr {
        SocketAddr::from((self.ip, GOSSIP_PORT))
    }

    pub fn api(&self) -> String {
        format!("{}:7947", self.ip)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Lab {
    tag: String,
    net: u8,
    pub dir: TempDir,
    pub bridge: String,
    pub hosts: Vec<Host>,
    events: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
    watchers: Vec<JoinHandle<()>>,
}

/// Whether the lab can run here: root, `ip` and `nft`. Outside CI a missing prerequisite
/// skips loudly; with `CI=true` it fails.
pub fn available() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the namespace lab needs root, and CI=true requires it");
        }
        eprintln!("SKIPPED: the namespace lab needs root");
        return false;
    }
    require_tool_with("ip", "-V", "iproute2") && require_tool("nft", "nftables")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A command's output, or nothing if it fails (for cleaning up, which must not panic).
fn output_of(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Runs a cleanup command, its output discarded; whether it succeeded.
fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `ip [-n ns] -batch -` with the given commands.
fn ip_batch(ns: Option<&str>, commands: &str) {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["-n", ns]);
    }
    cmd.args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn ip -batch");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(commands.as_bytes())
        .expect("write ip batch");
    let out = child.wait_with_output().expect("ip -batch");
    assert!(
        out.status.success(),
        "ip -batch ({ns:?}) failed: {}\n{commands}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac(net: u8, host: u16) -> String {
    format!("02:77:{net:02x}:00:{:02x}:{:02x}", host >> 8, host & 0xff)
}

/// The address of host `i` in net `net`.
fn host_ip(net: u8, i: usize) -> Ipv4Addr {
    assert!(i < 240, "a lab holds at most 240 hosts");
    Ipv4Addr::new(10, 77, net, 10 + i as u8)
}

fn disable_ipv6(iface: &str) {
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{iface}/disable_ipv6"), "1");
}

/// Removes what a killed run with this tag left: processes in its namespaces, the
/// namespaces, its links. Matches names exactly, so other tags are untouched.
fn clean_leftovers(tag: &str) {
    let ns_prefix = format!("swl{tag}-");
    let listing = output_of(Command::new("ip").args(["netns", "list"]));
    for name in listing.lines().filter_map(|l| l.split_whitespace().next()) {
        let ours = name
            .strip_prefix(&ns_prefix)
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
        if !ours {
            continue;
        }
        eprintln!("lab: removing leftover namespace {name}");
        kill_namespace_processes(name);
        let _ = quiet("ip", &["netns", "del", name]);
    }
    let veth_prefix = format!("swl{tag}v");
    let bridge = format!("swl{tag}br");
    let links = output_of(Command::new("ip").args(["-o", "link", "show"]));
    for line in links.lines() {
        let Some(name) = line.split(':').nth(1).map(|n| n.trim()) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        let ours = name == bridge
            || name
                .strip_prefix(&veth_prefix)
                .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
        if ours {
            eprintln!("lab: removing leftover link {name}");
            let _ = quiet("ip", &["link", "del", name]);
        }
    }
}

/// SIGKILLs the processes inside a lab namespace (a previous run's agents) and waits for
/// them to go, so the namespace and its links can be freed.
fn kill_namespace_processes(ns: &str) {
    let pids = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let pids: Vec<u32> = pids.lines().filter_map(|p| p.trim().parse().ok()).collect();
    for &pid in &pids {
        signal(pid, libc::SIGKILL);
    }
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5)
        && pids
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
    {
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Lab {
    /// `n` hosts on a fresh bridge, nothing started. `tag` (1 to 4 letters/digits) names the
    /// lab's namespaces and links and must be unique among labs that may run at once, as must
    /// `net` (the third octet of 10.77.net.0/24). `None` when the lab cannot run here.
    pub fn new(tag: &str, net: u8, n: usize) -> Option<Lab> {
        assert!(
            (1..=4).contains(&tag.len()) && tag.bytes().all(|b| b.is_ascii_alphanumeric()),
            "lab tag {tag:?}: 1 to 4 letters or digits"
        );
        if !available() {
            return None;
        }
        clean_leftovers(tag);
        let bridge = format!("swl{tag}br");
        let controller = Ipv4Addr::new(10, 77, net, 1);
        let mut lab = Lab {
            tag: tag.to_string(),
            net,
            dir: TempDir::new(&format!("lab-{tag}")),
            bridge: bridge.clone(),
            hosts: Vec::new(),
            events: Arc::new(Mutex::new(Vec::new())),
            stop: Arc::new(AtomicBool::new(false)),
            watchers: Vec::new(),
        };
        // From here on, Drop removes whatever was made, even if a step below panics.
        run(Command::new("ip").args(["link", "add", &bridge, "type", "bridge"]));
        disable_ipv6(&bridge);
        let mut root = format!(
            "link set {bridge} address {}\naddr add {controller}/24 dev {bridge}\nlink set {bridge} up\n",
            mac(net, 1)
        );
        for i in 0..n {
            let name = format!("host-{i}");
            let ns = format!("swl{tag}-{i}");
            let veth = format!("swl{tag}v{i}");
            let ip = host_ip(net, i);
            lab.hosts.push(Host {
                index: i,
                name: name.clone(),
                ns: ns.clone(),
                ip,
                veth: veth.clone(),
                config: lab.dir.0.join(format!("{name}.toml")),
                log: lab.dir.0.join(format!("{name}.log")),
                child: None,
                generation: Arc::new(AtomicU64::new(0)),
                cursor: Arc::new(Mutex::new((0, 0))),
                faults: Faults::default(),
            });
            run(Command::new("ip").args(["netns", "add", &ns]));
            run(Command::new("ip").args([
                "link",
                "add",
                &veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "address",
                &mac(net, 10 + i as u16),
                "netns",
                &ns,
            ]));
            disable_ipv6(&veth);
            root.push_str(&format!(
                "link set {veth} master {bridge} up\nneigh replace {ip} lladdr {} dev {bridge} nud permanent\n",
                mac(net, 10 + i as u16)
            ));
        }
        ip_batch(None, &root);
        // Every namespace knows every other host's MAC, and the controller's.
        let mut neighbours = format!(
            "neigh replace {controller} lladdr {} dev eth0 nud permanent\n",
            mac(net, 1)
        );
        for i in 0..n {
            neighbours.push_str(&format!(
                "neigh replace {} lladdr {} dev eth0 nud permanent\n",
                host_ip(net, i),
                mac(net, 10 + i as u16)
            ));
        }
        for host in &lab.hosts {
            run(Command::new("ip").args([
                "netns",
                "exec",
                &host.ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]));
            ip_batch(
                Some(&host.ns),
                &format!(
                    "link set lo up\naddr add {}/24 dev eth0\nlink set eth0 up\n{neighbours}",
                    host.ip
                ),
            );
        }
        for i in 0..n {
            lab.apply_faults(i);
        }
        Some(lab)
    }

    /// How many hosts the lab has.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Whether the lab has no hosts.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Every host's index, for host sets.
    pub fn all(&self) -> Vec<usize> {
        (0..self.hosts.len()).collect()
    }

    pub fn name(&self, i: usize) -> &str {
        &self.hosts[i].name
    }

    // ----- processes -----

    /// Starts `program args…` inside host `i`'s namespace, output appended to its log. The
    /// process gets SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG), so a
    /// killed run leaves none: start hosts from the thread that owns the lab.
    pub fn spawn(&mut self, i: usize, program: &str, args: &[&str], env: &[(&str, &str)]) {
        let host = &mut self.hosts[i];
        assert!(host.child.is_none(), "{} is already running", host.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&host.log)
            .expect("log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns, program])
            .args(args)
            .current_dir(&self.dir.0)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // `ip netns exec` execs the program in place: the child's pid is the program's.
        host.child = Some(cmd.spawn().expect("spawn in namespace"));
        host.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Certificates (from `swimd tls init/issue`, SAN = the host's address) and a config for
    /// every host; seeds are the first three hosts.
    pub fn configure_swimd(&mut self) {
        let tls = self.dir.0.join("tls");
        let tls_dir = tls.to_str().expect("utf-8 path");
        let out = swimd(&["tls", "init", "--dir", tls_dir, "--cluster", "lab"]);
        assert!(out.status.success(), "swimd tls init: {out:?}");
        let seeds: Vec<SocketAddr> = self.hosts.iter().take(3).map(Host::gossip).collect();
        for host in &self.hosts {
            let ip = host.ip.to_string();
            let out = swimd(&["tls", "issue", &host.name, "--dir", tls_dir, "--ip", &ip]);
            assert!(out.status.success(), "swimd tls issue: {out:?}");
            std::fs::write(
                &host.config,
                config_text(&host.name, host.ip, "lab", &seeds),
            )
            .expect("config");
        }
    }

    /// Starts `swimd agent` on host `i` (after `configure_swimd`).
    pub fn start_swimd(&mut self, i: usize) {
        let config = self.hosts[i].config.to_str().expect("utf-8").to_string();
        self.spawn(
            i,
            &swimd_bin(),
            &["agent", "--config", &config],
            &[("RUST_LOG", "info")],
        );
    }

    pub fn start_swimd_all(&mut self) {
        for i in 0..self.hosts.len() {
            self.start_swimd(i);
        }
    }

    pub fn pid(&self, i: usize) -> Option<u32> {
        self.hosts[i].pid()
    }

    /// SIGKILL; returns when the process is gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i].child.take() {
            signal(child.id(), libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait (up to 15 s, then SIGKILL); the exit code.
    pub fn terminate(&mut self, i: usize) -> Option<i32> {
        let mut child = self.hosts[i].child.take()?;
        signal(child.id(), libc::SIGTERM);
        wait_timeout(&mut child, Duration::from_secs(15)).and_then(|s| s.code())
    }

    pub fn pause(&self, i: usize) {
        signal(self.pid(i).expect("running"), libc::SIGSTOP);
    }

    pub fn resume(&self, i: usize) {
        signal(self.pid(i).expect("running"), libc::SIGCONT);
    }

    /// Whether host `i`'s process is still running (not exited).
    pub fn alive(&mut self, i: usize) -> bool {
        self.hosts[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.hosts[i].log).unwrap_or_default()
    }

    // ----- faults -----

    /// Packets between the two sets are dropped both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        self.partition_one_way(a, b);
        self.partition_one_way(b, a);
    }

    /// Packets from hosts in `from` no longer reach hosts in `to` (dropped as they arrive);
    /// the other way is untouched.
    pub fn partition_one_way(&mut self, from: &[usize], to: &[usize]) {
        let sources: Vec<Ipv4Addr> = from.iter().map(|&f| self.hosts[f].ip).collect();
        for &t in to {
            self.hosts[t]
                .faults
                .drop_from
                .extend(sources.iter().copied());
            self.apply_faults(t);
        }
    }

    /// Drops `percent` of host `i`'s packets in one direction, at random (nftables `numgen`).
    pub fn loss(&mut self, i: usize, direction: Direction, percent: u8) {
        assert!(percent <= 100);
        match direction {
            Direction::Inbound => self.hosts[i].faults.loss_in = percent,
            Direction::Outbound => self.hosts[i].faults.loss_out = percent,
        }
        self.apply_faults(i);
    }

    /// Removes every fault from every host.
    pub fn heal(&mut self) {
        for i in 0..self.hosts.len() {
            self.hosts[i].faults = Faults::default();
            self.apply_faults(i);
        }
    }

    /// Removes every fault from the listed hosts.
    pub fn heal_hosts(&mut self, hosts: &[usize]) {
        for &i in hosts {
            self.hosts[i].faults = Faults::default();
            self.apply_faults(i);
        }
    }

    /// Replaces host `i`'s nftables table with its current faults, atomically.
    fn apply_faults(&mut self, i: usize) {
        let controller = Ipv4Addr::new(10, 77, self.net, 1);
        let host = &self.hosts[i];
        let f = &host.faults;
        let set = |ips: &BTreeSet<Ipv4Addr>| {
            ips.iter()
                .map(Ipv4Addr::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut input = format!("ip saddr {controller} accept\niifname \"lo\" accept\n");
        let mut output = format!("ip daddr {controller} accept\noifname \"lo\" accept\n");
        if !f.drop_from.is_empty() {
            input.push_str(&format!("ip saddr {{ {} }} drop\n", set(&f.drop_from)));
        }
        input.push_str(&loss_rule(f.loss_in));
        output.push_str(&loss_rule(f.loss_out));
        let ruleset = format!(
            "table inet swlab {{}}\ndelete table inet swlab\ntable inet swlab {{\n\
             chain input {{ type filter hook input priority 0; policy accept;\n{input}}}\n\
             chain output {{ type filter hook output priority 0; policy accept;\n{output}}}\n}}\n"
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &host.ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(ruleset.as_bytes())
            .expect("write nft");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft in {}: {}\n{ruleset}",
            host.ns,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // ----- counters -----

    /// Bytes host `i` has (sent, received) on its link, from the veth counters.
    pub fn bytes(&self, i: usize) -> (u64, u64) {
        let read = |counter: &str| {
            std::fs::read_to_string(format!(
                "/sys/class/net/{}/statistics/{counter}",
                self.hosts[i].veth
            ))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
        };
        // The root end's rx is what the host sent.
        (read("rx_bytes"), read("tx_bytes"))
    }

    // ----- observing swimd -----

    /// Members as host `i`'s agent lists them: name → state.
    pub fn view(&self, i: usize) -> Option<BTreeMap<String, State>> {
        let members = http::members(&self.hosts[i].api()).ok()?;
        Some(members.into_iter().map(|m| (m.name, m.state)).collect())
    }

    /// Polls `condition` every 50 ms until it holds (the time taken) or `limit` passes.
    pub fn wait_until(
        &self,
        limit: Duration,
        mut condition: impl FnMut(&Lab) -> bool,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if condition(self) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether every observer lists every subject in `state`.
    pub fn sees(&self, observers: &[usize], subjects: &[usize], state: State) -> bool {
        observers.iter().all(|&o| {
            self.view(o).is_some_and(|v| {
                subjects
                    .iter()
                    .all(|&s| v.get(&self.hosts[s].name) == Some(&state))
            })
        })
    }

    /// Waits until every running host lists every running host alive.
    pub fn wait_converged(&self, limit: Duration) -> Option<Duration> {
        let running: Vec<usize> = (0..self.hosts.len())
            .filter(|&i| self.hosts[i].running())
            .collect();
        self.wait_until(limit, |lab| lab.sees(&running, &running, State::Alive))
    }

    /// Follows every host's `GET /v1/events` (reconnecting across restarts; each process
    /// from its first event); see `events`.
    pub fn watch_events(&mut self) {
        self.stop = Arc::new(AtomicBool::new(false));
        for host in &self.hosts {
            let follower = Follower {
                api: host.api(),
                observer: host.index,
                generation: host.generation.clone(),
                cursor: host.cursor.clone(),
                sink: self.events.clone(),
                stop: self.stop.clone(),
            };
            self.watchers
                .push(std::thread::spawn(move || follower.run()));
        }
    }

    /// Closes the event streams (so the hosts' links carry only their own traffic, for
    /// byte counts); `watch_events` resumes where they stopped.
    pub fn stop_watching(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for watcher in self.watchers.drain(..) {
            let _ = watcher.join();
        }
    }

    /// Every event read so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every event about member `member` (any observer).
    pub fn events_about(&self, member: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.member == member)
            .collect()
    }
}

/// The nftables rule dropping `percent` of packets at random (numgen's range is 0..=99).
fn loss_rule(percent: u8) -> String {
    match percent {
        0 => String::new(),
        100.. => "drop\n".to_string(),
        p => format!("numgen random mod 100 < {p} drop\n"),
    }
}

/// Seconds since the Unix epoch, as the agents stamp events.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One host's event stream, read over HTTP/1.0 (no chunking) and parsed as server-sent
/// events. A new process (generation) is followed from its first event; a dropped stream of
/// the same process resumes after the last id read.
struct Follower {
    api: String,
    observer: usize,
    generation: Arc<AtomicU64>,
    cursor: Arc<Mutex<(u64, u64)>>,
    sink: Arc<Mutex<Vec<Event>>>,
    stop: Arc<AtomicBool>,
}

impl Follower {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The current process's generation and the last id read from it.
    fn place(&self) -> (u64, u64) {
        let current = self.generation.load(Ordering::SeqCst);
        let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        if cursor.0 != current {
            *cursor = (current, 0);
        }
        *cursor
    }

    fn run(self) {
        let Ok(addr) = self.api.parse::<SocketAddr>() else {
            return;
        };
        while !self.stopped() {
            let (generation, last_id) = self.place();
            let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            else {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
            let request = format!(
                "GET /v1/events HTTP/1.0\r\nHost: {}\r\nAccept: text/event-stream\r\nLast-Event-ID: {last_id}\r\n\r\n",
                self.api
            );
            if stream.write_all(request.as_bytes()).is_ok() {
                self.read(BufReader::new(stream), generation);
            }
        }
    }

    /// Reads one connection until it ends, the process changes or the lab stops.
    fn read(&self, mut reader: BufReader<TcpStream>, generation: u64) {
        let mut line = Vec::new();
        let mut in_body = false;
        let (mut id, mut data) = (None::<u64>, String::new());
        while !self.stopped() && self.generation.load(Ordering::SeqCst) == generation {
            match reader.read_until(b'\n', &mut line) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(_) => return,
            }
            if !line.ends_with(b"\n") {
                continue;
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            line.clear();
            if !in_body {
                in_body = text.is_empty();
                continue;
            }
            if let Some(v) = text.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = text.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if text.is_empty() && !data.is_empty() {
                if let Some(event) = parse_event(self.observer, &data) {
                    self.sink
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(event);
                }
                if let Some(id) = id.take() {
                    let mut cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
                    if cursor.0 == generation {
                        cursor.1 = id;
                    }
                }
                data.clear();
            }
        }
    }
}

fn parse_event(observer: usize, data: &str) -> Option<Event> {
    let event: EventJson = serde_json::from_str(data).ok()?;
    Some(Event {
        observer,
        kind: event.kind,
        member: event.member.name,
        previous_state: event.previous_state,
        timestamp: event.timestamp,
        received: Instant::now(),
    })
}

impl Drop for Lab {
    fn drop(&mut self) {
        for host in &mut self.hosts {
            if let Some(mut child) = host.child.take() {
                signal(child.id(), libc::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.stop_watching();
        for host in &self.hosts {
            // A program may have left children of its own in the namespace (Serf's
            // event handlers): end them too before the namespace goes.
            kill_namespace_processes(&host.ns);
            let _ = quiet("ip", &["netns", "del", &host.ns]);
        }
        // The veths go with their namespaces, a moment later.
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5)
            && self
                .hosts
                .iter()
                .any(|h| Path::new(&format!("/sys/class/net/{}", h.veth)).exists())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = quiet("ip", &["link", "del", &self.bridge]);
        // Namespaces created before a panic but not yet recorded in `hosts`.
        clean_leftovers(&self.tag);
    }
}
