//! The shipped systemd unit, checked by systemd's own tools.

pub mod support;

use std::process::Command;

use support::cluster::TempDir;
use support::tools::{SWIMD, require_tool};

/// The unit with its binary path pointed at the binary under test.
fn unit_under_test(dir: &TempDir) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/swimd.service"
    ))
    .unwrap();
    let path = dir.0.join("swimd.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/swimd", SWIMD)).unwrap();
    path
}

#[test]
fn unit_verifies_cleanly() {
    if !require_tool("systemd-analyze", "systemd") {
        return;
    }
    let tool = "systemd-analyze";
    let dir = TempDir::new("unit-verify");
    let unit = unit_under_test(&dir);
    let out = Command::new(tool)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && printed.trim().is_empty(),
        "systemd-analyze verify printed:\n{printed}"
    );
}

#[test]
fn unit_exposure_is_at_most_2() {
    if !require_tool("systemd-analyze", "systemd") {
        return;
    }
    let tool = "systemd-analyze";
    let dir = TempDir::new("unit-security");
    let unit = unit_under_test(&dir);
    let out = Command::new(tool)
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for swimd.service:").nth(1))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level} > 2.0:\n{text}");
}
