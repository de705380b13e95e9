//! A bounded child process: no shell, its own process group, stdin fed, stderr captured,
//! and the whole group killed past a time limit. Hooks and checks both run commands so.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long a command's stderr is read after it exited.
const STDERR_AFTER_EXIT: Duration = Duration::from_millis(100);

/// How a bounded command ended.
#[derive(Debug)]
pub enum CommandEnd {
    /// It exited (the code; `None` if a signal ended it) and wrote this to stderr.
    Exited(Option<i32>, String),
    /// It ran past the limit: its whole process group was killed.
    TimedOut,
    /// It could not be started or waited for.
    Error(String),
}

/// Runs `argv` (no shell) in its own process group with `env` and `input` on stdin; past
/// `limit` the whole group is killed, so nothing it started outlives it.
pub async fn run_bounded(
    argv: &[String],
    env: Vec<(String, String)>,
    input: &[u8],
    limit: Duration,
) -> CommandEnd {
    let Some((program, args)) = argv.split_first() else {
        return CommandEnd::Error("no command".into());
    };
    let mut child = match tokio::process::Command::new(program)
        .args(args)
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return CommandEnd::Error(format!("cannot run {program}: {e}")),
    };
    let pid = child.id();
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let run = async {
        if let Some(stdin) = stdin.as_mut() {
            // A command that does not read its input is fine.
            let _ = stdin.write_all(input).await;
        }
        drop(stdin);
        let mut err = Vec::new();
        let status = {
            let read = async {
                if let Some(stderr) = stderr.as_mut() {
                    let _ = stderr.take(64 * 1024).read_to_end(&mut err).await;
                }
            };
            tokio::pin!(read);
            tokio::select! {
                status = child.wait() => {
                    // Something the command started may hold stderr open for ever: once
                    // the command itself has exited, take what came and stop waiting.
                    let _ = tokio::time::timeout(STDERR_AFTER_EXIT, &mut read).await;
                    status
                }
                () = &mut read => child.wait().await,
            }
        };
        (status, err)
    };
    match tokio::time::timeout(limit, run).await {
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                // SAFETY: killpg only sends a signal; the group is the one we created.
                unsafe {
                    libc::killpg(pid, libc::SIGKILL);
                }
            }
            CommandEnd::TimedOut
        }
        Ok((Err(e), _)) => CommandEnd::Error(format!("cannot wait for {program}: {e}")),
        Ok((Ok(status), err)) => CommandEnd::Exited(
            status.code(),
            truncate(String::from_utf8_lossy(&err).trim().to_string()),
        ),
    }
}

/// Longest error text kept (stderr, an HTTP answer): it goes to logs, metrics and the outbox.
const MAX_ERROR: usize = 300;

/// Cuts `text` to `MAX_ERROR` bytes at a character boundary, marking the cut with '…'.
pub fn truncate(mut text: String) -> String {
    if text.len() > MAX_ERROR {
        let mut cut = MAX_ERROR;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}
