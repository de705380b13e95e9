//! The Debian package (Cargo.toml `[package.metadata.deb]`, debian/): built with cargo-deb,
//! unpacked into a scratch root, and checked file by file, with systemd's tools, with the
//! binary it installs, and with lintian.

pub mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use support::cluster::TempDir;
use support::tools::{require_tool, swimd_bin};

const SOURCE: &str = env!("CARGO_MANIFEST_DIR");

/// The unit a from-source install uses, and the package's copy of it.
const SHIPPED_UNIT: &str = "systemd/swimd.service";
const PACKAGED_UNIT: &str = "debian/swimd.service";

/// Installed path, the file in the source tree it must equal, and its mode in the package
/// (the binary and the hooks are added below). /etc/swimd and its config become root:swimd
/// 0750/0640 in postinst, once the group exists.
const FILES: &[(&str, &str, u32)] = &[
    ("usr/lib/systemd/system/swimd.service", PACKAGED_UNIT, 0o644),
    (
        "usr/lib/sysusers.d/swimd.conf",
        "systemd/swimd.sysusers",
        0o644,
    ),
    ("etc/swimd/swimd.toml", "conf/swimd.toml", 0o644),
    (
        "usr/share/swimd/grafana/swimd.json",
        "dashboards/swimd.json",
        0o644,
    ),
    (
        "usr/share/swimd/grafana/provisioning.yaml",
        "dashboards/provisioning.yaml",
        0o644,
    ),
    (
        "usr/share/swimd/prometheus/alerts.yml",
        "dashboards/alerts.yml",
        0o644,
    ),
    ("usr/share/doc/swimd/copyright", "debian/copyright", 0o644),
    ("usr/share/doc/swimd/README.md", "README.md", 0o644),
    (
        "usr/share/lintian/overrides/swimd",
        "debian/lintian-overrides",
        0o644,
    ),
];

#[test]
fn packaged_unit_is_the_shipped_unit_with_usr_bin_swimd() {
    let read = |path: &str| std::fs::read_to_string(Path::new(SOURCE).join(path)).unwrap();
    let (shipped, packaged) = (read(SHIPPED_UNIT), read(PACKAGED_UNIT));
    assert!(
        shipped.contains("/usr/local/bin/swimd") && !packaged.contains("/usr/local/"),
        "{SHIPPED_UNIT} should run /usr/local/bin/swimd and {PACKAGED_UNIT} /usr/bin/swimd"
    );
    assert!(
        shipped.replace("/usr/local/bin/swimd", "/usr/bin/swimd") == packaged,
        "{PACKAGED_UNIT} must be {SHIPPED_UNIT} with /usr/bin/swimd; regenerate it with\n  \
         sed 's|/usr/local/bin/swimd|/usr/bin/swimd|g' {SHIPPED_UNIT} > {PACKAGED_UNIT}"
    );
}

/// docs/operations.md's `cargo deb` builds the dist binary and packages it; this packages the binary
/// under test (`swimd_bin()`: this profile's, or `SWIMD_BIN=target/dist/swimd`) with the same
/// metadata and flags, so it costs no build (fat LTO takes minutes).
#[test]
fn package_installs_the_agent_its_unit_and_config_and_passes_lintian() {
    let tools = [
        (
            "cargo-deb",
            "none: `cargo install --locked cargo-deb`, as .ci/run does",
        ),
        ("dpkg-deb", "dpkg"),
        ("systemd-analyze", "systemd"),
        ("systemd-sysusers", "systemd"),
        ("lintian", "lintian"),
    ];
    if !tools
        .iter()
        .all(|(tool, package)| require_tool(tool, package))
    {
        return;
    }
    let dir = TempDir::new("package");
    let deb = build_package(&dir);
    let root = dir.0.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));

    installs_every_file_with_its_mode(&root);
    installed_unit_verifies(&root, &dir);
    installed_binary_is_this_version_and_accepts_the_installed_config(&root);
    config_is_a_conffile(&deb);
    maintainer_scripts_create_the_user_and_restrict_etc_swimd(&deb, &root);
    lintian_finds_no_error_or_warning(&deb);
}

/// `cargo deb --no-build` in a scratch target dir holding the binary as `release/swimd`: run in
/// the project's, cargo-deb would delete the dist package a developer built there (it clears
/// every target/debian/swimd_*.deb) and wait for the dir's lock while other builds run.
fn build_package(dir: &TempDir) -> PathBuf {
    let target = dir.0.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(swimd_bin(), target.join("release/swimd")).unwrap();
    let deb = dir.0.join("swimd.deb");
    let start = Instant::now();
    run(Command::new(env!("CARGO"))
        .args(["deb", "--profile", "release", "--no-build", "--locked"])
        .args(["--no-strip", "--output"])
        .arg(&deb)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(SOURCE));
    eprintln!("cargo deb: {:.1} s", start.elapsed().as_secs_f64());
    deb
}

/// Every file equals its source (the binary the one packaged: not stripped again) and has its
/// mode.
fn installs_every_file_with_its_mode(root: &Path) {
    let mut files: Vec<(String, String, u32)> = FILES
        .iter()
        .map(|&(installed, source, mode)| (installed.into(), source.into(), mode))
        .collect();
    files.push(("usr/bin/swimd".into(), swimd_bin(), 0o755));
    for entry in std::fs::read_dir(Path::new(SOURCE).join("conf/hooks")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        files.push((
            format!("usr/share/swimd/hooks/{name}"),
            format!("conf/hooks/{name}"),
            0o755,
        ));
    }
    for (installed, source, expected) in &files {
        let path = root.join(installed);
        let metadata = std::fs::metadata(&path).unwrap_or_else(|e| panic!("/{installed}: {e}"));
        let mode = metadata.permissions().mode() & 0o7777;
        assert!(
            mode == *expected,
            "/{installed} has mode {mode:o}, not {expected:o}"
        );
        assert!(
            std::fs::read(&path).unwrap() == std::fs::read(Path::new(SOURCE).join(source)).unwrap(),
            "/{installed} differs from {source}"
        );
    }
    let changelog = "usr/share/doc/swimd/changelog.Debian.gz";
    assert!(root.join(changelog).is_file(), "no /{changelog}");
}

/// `systemd-analyze verify` on the installed unit, its binary path pointed into the scratch
/// root (verify checks that ExecStart exists), as tests/systemd.rs does for the shipped unit.
fn installed_unit_verifies(root: &Path, dir: &TempDir) {
    let unit = std::fs::read_to_string(root.join("usr/lib/systemd/system/swimd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/swimd agent --config /etc/swimd/swimd.toml"));
    let binary = root.join("usr/bin/swimd");
    let copy = dir.0.join("swimd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/swimd", &binary.display().to_string()),
    )
    .unwrap();
    let out = run(Command::new("systemd-analyze").arg("verify").arg(&copy));
    let printed = text(&out);
    assert!(
        printed.trim().is_empty(),
        "systemd-analyze verify printed:\n{printed}"
    );
}

fn installed_binary_is_this_version_and_accepts_the_installed_config(root: &Path) {
    let binary = root.join("usr/bin/swimd");
    let out = run(Command::new(&binary).arg("--version"));
    let version = String::from_utf8_lossy(&out.stdout);
    let expected = concat!("swimd ", env!("CARGO_PKG_VERSION"), " ");
    assert!(
        version.starts_with(expected),
        "--version printed {version:?}, expected {expected:?}…"
    );
    run(Command::new(&binary)
        .arg("validate")
        .arg(root.join("etc/swimd/swimd.toml")));
}

fn config_is_a_conffile(deb: &Path) {
    let out = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg("conffiles"));
    let conffiles = String::from_utf8_lossy(&out.stdout);
    assert!(
        conffiles
            .lines()
            .any(|l| l.trim() == "/etc/swimd/swimd.toml"),
        "conffiles:\n{conffiles}"
    );
}

/// The postinst creates the swimd user (the sysusers snippet cargo-deb adds), then makes
/// /etc/swimd and its config root:swimd 0750/0640. The sysusers file, given to
/// systemd-sysusers as the postinst gives it, creates the user in the scratch root.
fn maintainer_scripts_create_the_user_and_restrict_etc_swimd(deb: &Path, root: &Path) {
    let script = |name: &str| {
        let out = run(Command::new("dpkg-deb").arg("-I").arg(deb).arg(name));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let postinst = script("postinst");
    let sysusers = "systemd-sysusers ${DPKG_ROOT:+--root=\"$DPKG_ROOT\"} swimd.conf";
    let sysusers_at = postinst.find(sysusers);
    let restrict_at = postinst.find("restrict /etc/swimd 0750");
    assert!(
        sysusers_at.is_some() && restrict_at.is_some() && sysusers_at < restrict_at,
        "postinst should run `{sysusers}`, then restrict /etc/swimd:\n{postinst}"
    );
    assert!(postinst.contains("restrict /etc/swimd/swimd.toml 0640"));
    assert!(postinst.contains("deb-systemd-helper update-state swimd.service"));
    assert!(script("prerm").contains("deb-systemd-invoke stop swimd.service"));
    assert!(script("postrm").contains("deb-systemd-helper purge swimd.service"));
    for name in ["postinst", "prerm", "postrm"] {
        assert!(
            !script(name).contains("#DEBHELPER#"),
            "{name}: #DEBHELPER# left"
        );
    }

    run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg("swimd.conf"));
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("swimd:") && l.contains(":/var/lib/swimd:")),
        "no swimd user in the scratch root's passwd:\n{passwd}"
    );
}

/// Errors and warnings fail; the overrides in debian/lintian-overrides each say why.
fn lintian_finds_no_error_or_warning(deb: &Path) {
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(deb)
        .output()
        .unwrap();
    let printed = text(&out);
    let flagged: Vec<&str> = printed
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        out.status.success() && flagged.is_empty(),
        "lintian:\n{printed}"
    );
}

/// Runs a command that must succeed; panics with what it printed otherwise.
fn run(command: &mut Command) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        text(&out)
    );
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
