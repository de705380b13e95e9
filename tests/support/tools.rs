//! The swimd binary and the system tools a test runs: subcommands, signals, waiting for a
//! child, and skipping loudly (or failing under `CI=true`) when a tool is missing.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output};
use std::time::{Duration, Instant};

/// The swimd binary cargo built for this profile.
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

/// Runs the swimd binary with arguments.
pub fn swimd(args: &[&str]) -> Output {
    Command::new(swimd_bin())
        .args(args)
        .output()
        .expect("run swimd")
}

/// Runs the swimd binary with arguments in `dir`, with extra environment variables.
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

/// Sends `sig` to `pid` (one of our own children).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Waits up to `limit` for `child` to exit; kills it if it has not.
pub fn wait_timeout(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
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
