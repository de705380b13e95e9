//! HAProxy's agent-check protocol: HAProxy connects, names the member (`agent-send
//! "NAME\n"`), and reads one line back, so HAProxy follows swimd's view with no hook.
//! `up ready` for alive and suspect members (suspicion alone must not move traffic),
//! `down` for one whose service checks fail (critical) or that we do not know, `drain` for
//! a member that left or is in planned maintenance (its connections finish, no new ones
//! come), `maint` for a failed one. Like a failover hook, it never takes out
//! more than `max_failed_fraction` of the members at once: a load balancer whose agent is
//! cut off from the others must not empty its own pool (the members out longest stay out).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::agent::handle::{AgentHandle, Command};
use crate::model::{Health, MemberView, State};

/// How long HAProxy gets to name the member.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest request line accepted.
const MAX_LINE: usize = 256;

/// Serves agent checks until the listener fails.
pub async fn serve(listener: TcpListener, handle: AgentHandle, max_failed_fraction: f64) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let handle = handle.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, &handle, max_failed_fraction).await {
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
pub fn reply(member: Option<(State, Health)>) -> &'static str {
    match member {
        Some((State::Alive | State::Suspect, Health::Maintenance)) => "drain\n",
        Some((State::Alive | State::Suspect, Health::Critical)) => "down\n",
        Some((State::Alive | State::Suspect, Health::Passing)) => "up ready\n",
        Some((State::Left, _)) => "drain\n",
        Some((State::Failed, _)) => "maint\n",
        None => "down\n",
    }
}

/// Is the member out of service in our view (failed, or its checks fail) and not gone for
/// good (a member that left is drained, never counted against the cap)?
fn is_out(m: &MemberView) -> bool {
    m.state != State::Left && (m.state == State::Failed || m.info.health() == Health::Critical)
}

/// Is `member` one of those kept out under the cap? Members out (failed or critical) are
/// ranked by how long they have been out; only the first `fraction` of all known members
/// (left ones aside) stay out.
pub fn held_out(members: &[MemberView], member: &str, fraction: f64) -> bool {
    let known = members.iter().filter(|m| m.state != State::Left).count();
    let allowed = (fraction * known as f64).floor() as usize;
    let mut out: Vec<&MemberView> = members.iter().filter(|m| is_out(m)).collect();
    out.sort_by(|a, b| {
        a.since
            .cmp(&b.since)
            .then_with(|| a.info.name.cmp(&b.info.name))
    });
    out.iter()
        .take(allowed)
        .any(|m| m.info.name.as_str() == member)
}

async fn answer(
    mut stream: TcpStream,
    handle: &AgentHandle,
    max_failed_fraction: f64,
) -> std::io::Result<()> {
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
    let members = if name.is_empty() {
        Vec::new()
    } else {
        handle
            .ask(Command::Members)
            .await
            .map(|seen| seen.value)
            .unwrap_or_default()
    };
    let answer = match members.iter().find(|m| m.info.name.as_str() == name) {
        None => reply(None),
        Some(m) => {
            if is_out(m) && !held_out(&members, name, max_failed_fraction) {
                warn!(member = %name, "agent check answers up: max_failed_fraction reached");
                "up ready\n"
            } else {
                reply(Some((m.state, m.info.health())))
            }
        }
    };
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_map_to_haproxy_words() {
        use Health::*;
        use State::*;
        assert_eq!(reply(Some((Alive, Passing))), "up ready\n");
        assert_eq!(reply(Some((Suspect, Passing))), "up ready\n");
        assert_eq!(reply(Some((Alive, Critical))), "down\n");
        assert_eq!(reply(Some((Alive, Maintenance))), "drain\n");
        assert_eq!(reply(Some((Suspect, Maintenance))), "drain\n");
        assert_eq!(reply(Some((Failed, Maintenance))), "maint\n");
        assert_eq!(reply(Some((Left, Passing))), "drain\n");
        assert_eq!(reply(Some((Failed, Critical))), "maint\n");
        assert_eq!(reply(None), "down\n");
    }

    #[test]
    fn at_most_the_fraction_is_held_out_longest_out_first() {
        let now = std::time::Instant::now() + std::time::Duration::from_secs(1000);
        let m = |name: &str, state: State, age: u64| MemberView {
            info: std::sync::Arc::new(crate::model::MemberInfo::new(
                crate::model::NodeName::new(name),
                "10.0.0.1:7946".parse().expect("addr"),
                Default::default(),
            )),
            incarnation: crate::model::Incarnation(0),
            state,
            since: now - std::time::Duration::from_secs(age),
        };
        let members = [
            m("lb", State::Alive, 100),
            m("web-1", State::Failed, 5),
            m("web-2", State::Failed, 9),
            m("gone", State::Left, 50),
        ];
        assert!(held_out(&members, "web-2", 0.5), "out longest: stays out");
        assert!(!held_out(&members, "web-1", 0.5), "beyond the cap: kept in");
        assert!(held_out(&members, "web-1", 1.0));
    }
}
