//! `swimd demo`, the README's first command: it runs to the end, shows a failure detected
//! and a webhook delivered, and leaves nothing behind, even when it is killed.

pub mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::procfs::stat_fields;
use support::tools::{signal, swimd_bin};

/// Both tests use the demo's fixed addresses (127.0.77.x).
static DEMO: Mutex<()> = Mutex::new(());

/// The demo's temporary folder, from its first line.
fn folder_of(first_line: &str) -> PathBuf {
    let path = first_line
        .split("files in ")
        .nth(1)
        .unwrap_or_else(|| panic!("no folder in {first_line:?}"));
    PathBuf::from(path.trim())
}

/// PIDs of the processes whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| f.get(1).and_then(|p| p.parse().ok()) == Some(parent))
        })
        .collect()
}

/// Running, and not a zombie waiting to be reaped.
fn alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| f.first().is_some_and(|state| state != "Z"))
}

#[test]
fn demo_detects_a_failure_fires_the_hook_and_cleans_up() {
    let _demo = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(swimd_bin())
        .args(["demo", "--agents", "3"])
        .output()
        .expect("run swimd demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "converged: every agent lists all 3 alive",
        "marked node-",
        "webhook member.failed",
        "signature valid",
        "alive again everywhere",
        "webhook member.recovered",
        "done",
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{stdout}");
    }
    let folder = folder_of(stdout.lines().next().unwrap_or_default());
    assert!(!folder.exists(), "{} is left behind", folder.display());
}

#[test]
fn killed_demo_takes_its_agents_with_it() {
    let _demo = DEMO.lock().unwrap_or_else(|e| e.into_inner());
    let mut demo = Command::new(swimd_bin())
        .args(["demo", "--agents", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start swimd demo");
    let mut lines = BufReader::new(demo.stdout.take().expect("stdout")).lines();
    let mut first = String::new();
    // Wait until the agents run (and are about to be probed), as the output says.
    for line in lines.by_ref() {
        let line = line.expect("demo output");
        if first.is_empty() {
            first = line.clone();
        }
        if line.starts_with("converged") {
            break;
        }
    }
    let agents = children_of(demo.id());
    assert!(agents.len() >= 3, "agents of the demo: {agents:?}");
    // SIGKILL: the demo gets no chance to clean up; its agents must go by themselves.
    demo.kill().expect("kill the demo");
    let _ = demo.wait();
    let started = Instant::now();
    while agents.iter().any(|&pid| alive(pid)) && started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = agents.iter().copied().filter(|&pid| alive(pid)).collect();
    for &pid in &left {
        signal(pid, libc::SIGKILL);
    }
    let _ = std::fs::remove_dir_all(folder_of(&first));
    assert!(
        left.is_empty(),
        "agents still running after the demo was killed: {left:?}"
    );
}
