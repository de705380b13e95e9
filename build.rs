//! Records the source revision for `swimd --version`; packs the binary's relocations.

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
}
