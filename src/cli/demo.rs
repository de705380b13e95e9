//! `swimd demo`: five real agents on 127.0.77.x, a crash detected, a cluster-wide signed
//! webhook fired once for it, a restart, a leave. Everything it creates lives in one
//! temporary folder, removed at the end (and on Ctrl-C).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;

use crate::api::json::{EventJson, MemberJson};
use crate::net::tls;

#[derive(Debug, clap::Args)]
pub(super) struct DemoArgs {
    /// Number of agents (2–20).
    #[arg(long, default_value_t = 5)]
    agents: u8,
    /// Keep the temporary folder (configs, certificates, logs) afterwards.
    #[arg(long)]
    keep: bool,
}

struct Node {
    name: String,
    ip: Ipv4Addr,
    config: PathBuf,
    log: PathBuf,
}

impl Node {
    fn api(&self) -> String {
        format!("http://{}:7947", self.ip)
    }
}

/// The children and the folder, cleaned up whatever happens.
struct Cluster {
    dir: PathBuf,
    keep: bool,
    children: Arc<Mutex<BTreeMap<String, Child>>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_all(&self.children);
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn stop_all(children: &Mutex<BTreeMap<String, Child>>) {
    let mut children = children.lock().unwrap_or_else(|e| e.into_inner());
    for child in children.values_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    children.clear();
}

pub(super) fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !(2..=20).contains(&args.agents) {
        bail!("--agents must be between 2 and 20");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(demo(args))
}

async fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the swimd binary")?;
    let dir = std::env::temp_dir().join(format!("swimd-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cluster = Cluster {
        dir: dir.clone(),
        keep: args.keep,
        children: Arc::new(Mutex::new(BTreeMap::new())),
    };
    // Ctrl-C: kill the children and remove the folder, then exit.
    {
        let children = cluster.children.clone();
        let dir = dir.clone();
        let keep = args.keep;
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\ninterrupted: stopping the agents");
                stop_all(&children);
                if !keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                std::process::exit(130);
            }
        });
    }

    println!(
        "swimd demo: {} agents on 127.0.77.x, files in {}",
        args.agents,
        dir.display()
    );
    let tls_dir = dir.join("tls");
    tls::init_ca(&tls_dir, "demo")?;
    let nodes: Vec<Node> = (1..=args.agents)
        .map(|i| Node {
            name: format!("node-{i}"),
            ip: Ipv4Addr::new(127, 0, 77, i),
            config: dir.join(format!("node-{i}.toml")),
            log: dir.join(format!("node-{i}.log")),
        })
        .collect();
    for node in &nodes {
        tls::issue(&tls_dir, &node.name, &[IpAddr::V4(node.ip)])?;
        std::fs::write(&node.config, config_text(node, &nodes[0]))?;
    }
    let killed_at = Arc::new(Mutex::new(None::<Instant>));
    let hooks_seen = start_receiver(killed_at.clone()).await?;
    println!(
        "a webhook receiver on {RECEIVER} checks the signature of every delivery; every agent has \
         a cluster-scope hook on member.failed and member.recovered (exactly one agent delivers)"
    );
    let started = Instant::now();
    for node in &nodes {
        start(&exe, node, &cluster)?;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    let everyone: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
    let all: Vec<&Node> = nodes.iter().collect();
    wait_for(&client, &all, Duration::from_secs(20), |members| {
        everyone
            .iter()
            .all(|n| state_of(members, n) == Some("alive"))
    })
    .await
    .context("the agents did not converge")?;
    println!(
        "converged: every agent lists all {} alive after {:.2} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );

    let victim_index = nodes.len() / 2;
    let victim = &nodes[victim_index];
    let survivors: Vec<&Node> = nodes.iter().filter(|n| n.name != victim.name).collect();
    let seen: Arc<Mutex<BTreeMap<String, Duration>>> = Arc::new(Mutex::new(BTreeMap::new()));
    for survivor in &survivors {
        tokio::spawn(watch_failures(
            survivor.api(),
            survivor.name.clone(),
            victim.name.clone(),
            seen.clone(),
            killed_at.clone(),
        ));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let mut children = cluster.children.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(child) = children.get_mut(&victim.name) {
            child.kill().context("cannot kill the victim")?;
            let _ = child.wait();
        }
        children.remove(&victim.name);
        *killed_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    println!("SIGKILLed {}", victim.name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap_or_else(|e| e.into_inner()).len() < survivors.len()
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (observer, after) in seen.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!(
            "  {observer} marked {} failed after {:.2} s",
            victim.name,
            after.as_secs_f64()
        );
    }

    wait_hook(&hooks_seen, "member.failed", &victim.name).await;

    start(&exe, victim, &cluster)?;
    let back = Instant::now();
    wait_for(&client, &survivors, Duration::from_secs(20), |members| {
        members.iter().any(|m| {
            m.name == victim.name && m.state == crate::model::State::Alive && m.incarnation > 0
        })
    })
    .await
    .context("the restarted agent did not rejoin")?;
    println!(
        "restarted {}: alive again everywhere after {:.2} s (higher incarnation)",
        victim.name,
        back.elapsed().as_secs_f64()
    );

    wait_hook(&hooks_seen, "member.recovered", &victim.name).await;

    println!("stopping every agent gracefully (SIGTERM: leave, then exit)");
    let mut children =
        std::mem::take(&mut *cluster.children.lock().unwrap_or_else(|e| e.into_inner()));
    for child in children.values() {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    }
    for (name, child) in children.iter_mut() {
        let status = child.wait()?;
        println!("  {name} exited ({status})");
    }
    drop(cluster);
    println!("done");
    Ok(ExitCode::SUCCESS)
}

fn config_text(node: &Node, seed: &Node) -> String {
    format!(
        "[node]\nname = \"{name}\"\ncluster = \"demo\"\n\n[gossip]\nbind = \"{ip}:7946\"\nseeds = [\"{seed}:7946\"]\n\n\
         [tls]\nca = \"tls/ca.pem\"\ncert = \"tls/{name}.pem\"\nkey = \"tls/{name}-key.pem\"\n\n\
         [api]\nlisten = \"{ip}:7947\"\n\n[metrics]\nlisten = \"{ip}:9946\"\n\n\
         [state]\ndir = \"state/{name}\"\n\n[log]\nlevel = \"info\"\n\n\
         [[hooks]]\nname = \"demo-lb\"\nkind = \"webhook\"\nscope = \"cluster\"\n\
         events = [\"member.failed\", \"member.recovered\"]\nurl = \"http://{RECEIVER}/hook\"\n\
         secret = \"{DEMO_SECRET}\"\nhold_down = \"2s\"\n",
        name = node.name,
        ip = node.ip,
        seed = seed.ip,
    )
}

/// Where the demo's webhook receiver listens.
const RECEIVER: &str = "127.0.77.100:8080";
/// The demo hook's signing secret (Standard Webhooks test key; not for production).
const DEMO_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Deliveries the receiver took: (event type, member).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// Starts the webhook receiver: verifies each signature and prints each delivery.
async fn start_receiver(killed_at: Arc<Mutex<Option<Instant>>>) -> anyhow::Result<Seen> {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let key = crate::hooks::payload::decode_secret(DEMO_SECRET).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(RECEIVER)
        .await
        .with_context(|| format!("cannot listen on {RECEIVER} for the demo webhook"))?;
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let record = record.clone();
            let key = key.clone();
            let killed_at = killed_at.clone();
            async move {
                let header = |n: &str| {
                    headers
                        .get(n)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                let id = header("webhook-id");
                let timestamp: u64 = header("webhook-timestamp").parse().unwrap_or(0);
                let signed = crate::hooks::payload::verify(
                    &key,
                    &id,
                    timestamp,
                    &body,
                    &header("webhook-signature"),
                );
                let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let kind = event["type"].as_str().unwrap_or("?").to_string();
                let member = event["data"]["member"]["name"].as_str().unwrap_or("?").to_string();
                let since = killed_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .map_or(0.0, |at| at.elapsed().as_secs_f64());
                println!(
                    "  webhook {kind} {member} received {since:.2} s after the SIGKILL, delivered by {} \
                     (id {id}, signature {})",
                    event["data"]["observed_by"].as_str().unwrap_or("?"),
                    if signed { "valid" } else { "INVALID" },
                );
                record.lock().unwrap_or_else(|e| e.into_inner()).push((kind, member));
                if signed { StatusCode::OK } else { StatusCode::UNAUTHORIZED }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(seen)
}

/// Waits (bounded) for the receiver to get `kind` about `member`.
async fn wait_hook(seen: &Seen, kind: &str, member: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(k, m)| k == kind && m == member)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("  (no {kind} webhook for {member} within 15 s: see the agents' logs)");
}

fn start(exe: &Path, node: &Node, cluster: &Cluster) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log)?;
    let mut command = Command::new(exe);
    command
        .arg("agent")
        .arg("--config")
        .arg(&node.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // If the demo dies without cleaning up (SIGKILL, a panic), its agents leave and exit
    // too. The signal follows the thread that forks: this runs on the main thread, which
    // lives as long as the demo.
    // SAFETY: prctl is async-signal-safe and touches only the child's own settings.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {}", node.name))?;
    cluster
        .children
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(node.name.clone(), child);
    Ok(())
}

fn state_of<'a>(members: &'a [MemberJson], name: &str) -> Option<&'a str> {
    members
        .iter()
        .find(|m| m.name == name)
        .map(|m| m.state.as_str())
}

#[derive(serde::Deserialize)]
struct Members {
    members: Vec<MemberJson>,
}

/// Polls every node's member list until `done` holds for all of them.
async fn wait_for(
    client: &reqwest::Client,
    nodes: &[&Node],
    limit: Duration,
    done: impl Fn(&[MemberJson]) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        let mut all = true;
        for node in nodes {
            let members = match client
                .get(format!("{}/v1/members", node.api()))
                .send()
                .await
            {
                Ok(r) => r
                    .json::<Members>()
                    .await
                    .map(|m| m.members)
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            };
            all &= done(&members);
        }
        if all {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("timed out after {:?}", limit);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Follows one agent's event stream and records when it marks `victim` failed.
async fn watch_failures(
    api: String,
    observer: String,
    victim: String,
    seen: Arc<Mutex<BTreeMap<String, Duration>>>,
    killed_at: Arc<Mutex<Option<Instant>>>,
) {
    let Ok(response) = reqwest::get(format!("{api}/v1/events")).await else {
        return;
    };
    let mut stream = response.bytes_stream();
    let mut buffer = String::new();
    while let Some(Ok(chunk)) = stream.next().await {
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let Some(data) = block.lines().find_map(|l| l.strip_prefix("data:")) else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<EventJson>(data.trim()) else {
                continue;
            };
            if event.kind == "member.failed" && event.member.name == victim {
                let at = *killed_at.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(at) = at {
                    seen.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(observer.clone(), at.elapsed());
                    return;
                }
            }
        }
    }
}
