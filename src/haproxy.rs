//! HAProxy's agent-check protocol: HAProxy connects, names the member (`agent-send
//! "NAME\n"`), and reads one line back, so HAProxy follows swimd's view with no hook.
//! `up ready` for alive and suspect members (suspicion alone must not move traffic),
//! `down` for one whose service checks fail (critical) or that we do not know, `drain` for
//! a member that left, `maint` for a failed one.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::agent::handle::{AgentHandle, Command};

/// How long HAProxy gets to name the member.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request line accepted.
const MAX_LINE: usize = 256;

/// Serves agent checks until the listener fails.
pub async fn serve(listener: TcpListener, handle: AgentHandle) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &handle).await {
                        debug!(peer = %peer, error = %e, "agent check not answered");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "cannot accept an agent check");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The answer for a member in `state` with `health` (`None`: unknown).
pub fn reply(state: Option<&str>, health: &str) -> &'static str {
    match state {
        Some("alive" | "suspect") if health == "critical" => "down\n",
        Some("alive" | "suspect") => "up ready\n",
        Some("left") => "drain\n",
        Some("failed") => "maint\n",
        _ => "down\n",
    }
}

async fn answer(mut stream: TcpStream, handle: &AgentHandle) -> std::io::Result<()> {
    let mut line = Vec::with_capacity(64);
    let mut buf = [0u8; 64];
    let read = async {
        while !line.contains(&b'\n') && line.len() < MAX_LINE {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            line.extend_from_slice(buf.get(..n).unwrap_or_default());
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no member name sent"))??;
    let name = String::from_utf8_lossy(&line);
    let name = name.split('\n').next().unwrap_or_default().trim();
    let state = if name.is_empty() {
        None
    } else {
        handle
            .ask(|reply| Command::Member(name.to_string(), reply))
            .await
            .flatten()
            .map(|m| (m.state, m.health))
    };
    let answer = match &state {
        Some((state, health)) => reply(Some(state), health),
        None => reply(None, ""),
    };
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_haproxy_words() {
        assert_eq!(reply(Some("alive"), "passing"), "up ready\n");
        assert_eq!(reply(Some("suspect"), "passing"), "up ready\n");
        assert_eq!(reply(Some("alive"), "critical"), "down\n");
        assert_eq!(reply(Some("left"), "passing"), "drain\n");
        assert_eq!(reply(Some("failed"), "critical"), "maint\n");
        assert_eq!(reply(None, ""), "down\n");
    }
}
