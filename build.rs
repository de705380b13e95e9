//! Records the source revision for `swimd --version`; packs the binary's relocations and
//! orders its functions by use.

fn git(args: &[&str]) -> Option<String> {
    std::process::Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    let revision = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SWIMD_REVISION={revision}");
    // Ask git where HEAD and the branch refs live: in a worktree `.git` is a file, and a
    // path that does not exist would make cargo rerun this script on every build.
    // Only this checkout's branch ref: watching all of refs/heads (shared by worktrees)
    // would rebuild every checkout on any branch's commit.
    let branch =
        git(&["symbolic-ref", "-q", "HEAD"]).and_then(|r| git(&["rev-parse", "--git-path", &r]));
    for path in [
        git(&["rev-parse", "--git-path", "HEAD"]),
        branch,
        git(&["rev-parse", "--git-path", "packed-refs"]),
    ]
    .into_iter()
    .flatten()
    .filter(|p| std::path::Path::new(p).exists())
    {
        println!("cargo:rerun-if-changed={path}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    // Packed relative relocations (DT_RELR; GNU ld >= 2.38, glibc >= 2.36 as in Debian 12):
    // the PIE's relocation table shrinks from ~450 KB to ~6 KB. The loader reads all of it
    // at every start, so it stayed resident: 0.6 MiB of each agent's memory.
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    symbol_order();
}

/// Places the functions a running agent executes first and together (tools/symbol-order.sh
/// lists them): its code pages are then contiguous, 1.3-1.6 MiB less of each agent resident.
fn symbol_order() {
    println!("cargo:rerun-if-changed=tools/symbol-order.txt");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    // rustc >= 1.90 links x86_64 Linux with its bundled lld, which knows the option; an
    // older rustc or a linker chosen by the user (GNU ld has no such option) gets the
    // default layout.
    let rustc = std::process::Command::new(var("RUSTC")).arg("-vV").output();
    let minor = rustc.ok().and_then(|o| {
        let text = String::from_utf8(o.stdout).ok()?;
        let release = text.lines().find_map(|l| l.strip_prefix("release: 1."))?;
        release.split('.').next()?.parse::<u32>().ok()
    });
    let custom_linker = !var("RUSTC_LINKER").is_empty()
        || var("CARGO_ENCODED_RUSTFLAGS")
            .split('\x1f')
            .any(|f| f.contains("linker"));
    let bundled_lld = minor.is_some_and(|m| m >= 90)
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    let file = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("tools/symbol-order.txt");
    if bundled_lld && !custom_linker && file.exists() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            file.display()
        );
        // Names from another toolchain or dependency version are skipped, not errors.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
