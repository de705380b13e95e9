//! The shipped systemd unit, checked by systemd's own tools.

mod common;

use std::process::Command;

use common::*;

/// systemd-analyze, or None (skipping loudly) when it is missing outside CI.
fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some("systemd-analyze");
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("systemd-analyze is missing (Debian package systemd), and CI=true requires it");
    }
    eprintln!("SKIPPED: systemd-analyze is not installed; the systemd unit was not checked");
    None
}

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
    let Some(tool) = systemd_analyze() else {
        return;
    };
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
    let Some(tool) = systemd_analyze() else {
        return;
    };
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
