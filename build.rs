//! Records the source revision for `swimd --version`.

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
}
