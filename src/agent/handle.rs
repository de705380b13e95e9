//! How the API (and anything else) talks to the agent task: commands with replies, and a
//! broadcast of membership events. The JSON shapes here are the API's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot};

pub use crate::model::StateCounts;
use crate::model::{EventKind, Health, MemberView, Software, State, Tags};

/// A member as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberJson {
    /// Unique name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// `alive`, `suspect`, `failed` or `left`.
    #[serde(with = "crate::model::state_word")]
    pub state: State,
    /// The member's incarnation.
    pub incarnation: u64,
    /// Its tags.
    pub tags: Tags,
    /// Seconds since it entered its state (as this agent saw it).
    pub state_age_s: f64,
    /// Its service health: `passing`, `critical` (its checks fail) or `maintenance`.
    #[serde(default)]
    pub health: Health,
    /// The checks failing on it (empty when passing).
    #[serde(default)]
    pub failing_checks: Vec<String>,
    /// In maintenance: the reason given (possibly empty); `null` otherwise.
    #[serde(default)]
    pub maintenance: Option<String>,
    /// What it runs, as it advertised; `null` for v0.1.0 agents.
    #[serde(default)]
    pub software: Option<SoftwareJson>,
}

/// A member's release and the packet format versions it writes and reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftwareJson {
    /// Its release and build, e.g. `0.2.0 (1a2b3c4d5e6f)`.
    pub release: String,
    /// The format version it writes.
    pub writes: u8,
    /// The oldest format version it reads.
    pub reads_from: u8,
    /// The newest format version it reads.
    pub reads_to: u8,
}

impl From<&Software> for SoftwareJson {
    fn from(s: &Software) -> Self {
        SoftwareJson {
            release: s.release.clone(),
            writes: s.writes,
            reads_from: s.reads_from,
            reads_to: s.reads_to,
        }
    }
}

impl From<SoftwareJson> for Software {
    fn from(s: SoftwareJson) -> Self {
        Software {
            release: s.release,
            writes: s.writes,
            reads_from: s.reads_from,
            reads_to: s.reads_to,
        }
    }
}

/// Is this a maintenance reason we may publish: at most 256 bytes, no control characters
/// (it ends up in logs, tables and hook environments)?
pub fn check_maintenance_reason(reason: &str) -> Result<(), String> {
    if reason.len() > crate::wire::MAX_MAINTENANCE_REASON {
        Err(format!(
            "the maintenance reason is {} bytes; at most {} are allowed",
            reason.len(),
            crate::wire::MAX_MAINTENANCE_REASON
        ))
    } else if reason.chars().any(char::is_control) {
        Err("the maintenance reason must not contain control characters".to_string())
    } else {
        Ok(())
    }
}

impl MemberJson {
    /// Converts a core snapshot; `age` is how long ago it entered its state.
    pub fn from_view(m: &MemberView, now: std::time::Instant) -> Self {
        MemberJson {
            name: m.info.name.to_string(),
            addr: m.info.addr.to_string(),
            state: m.state,
            incarnation: m.incarnation.0,
            tags: m.info.tags.clone(),
            state_age_s: (now.saturating_duration_since(m.since).as_millis() as f64) / 1000.0,
            health: m.info.health(),
            failing_checks: m.info.failing.clone(),
            maintenance: m.info.maintenance.clone(),
            software: m.info.software.as_ref().map(SoftwareJson::from),
        }
    }
}

/// `GET /v1/self`: this agent's own entry plus its local view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SelfJson {
    /// Our member entry.
    pub member: MemberJson,
    /// The cluster name.
    pub cluster: String,
    /// True once another member is known alive (or a seed answered).
    pub joined: bool,
    /// Lifeguard local health score (0 = healthy).
    pub health_score: u32,
    /// Members by state, ourselves included.
    pub counts: StateCounts,
    /// `swimd --version`.
    pub version: String,
    /// What the gossip transport has sent and received so far.
    #[serde(default)]
    pub transport: TransportJson,
}

/// Transport totals: UDP (everything QUIC sent, handshakes and ACKs included) and SWIM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportJson {
    /// UDP datagrams sent.
    pub udp_tx_datagrams: u64,
    /// UDP payload bytes sent (add 28 per datagram for IPv4 and UDP headers).
    pub udp_tx_bytes: u64,
    /// UDP datagrams received.
    pub udp_rx_datagrams: u64,
    /// UDP payload bytes received.
    pub udp_rx_bytes: u64,
    /// SWIM messages sent (datagrams and streams).
    pub swim_messages_sent: u64,
    /// SWIM payload bytes sent.
    pub swim_bytes_sent: u64,
    /// Open QUIC connections.
    pub connections: usize,
    /// QUIC handshakes completed, either side.
    #[serde(default)]
    pub handshakes: u64,
}

/// `GET /v1/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthJson {
    /// `ok` or `unhealthy`.
    pub status: String,
    /// Why not ok (empty when ok).
    pub reason: String,
}

/// One membership event as the API and hooks see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventJson {
    /// Sequence number on this agent (the SSE id).
    pub id: u64,
    /// `member.joined`, `member.failed`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Unix time in seconds (with milliseconds).
    pub timestamp: f64,
    /// The member after the change.
    pub member: MemberJson,
    /// Its state before the change, if it was known.
    #[serde(with = "crate::model::option_state_word")]
    pub previous_state: Option<State>,
    /// The agent that observed it.
    pub observed_by: String,
}

/// A request to the agent task.
#[derive(Debug)]
pub enum Command {
    /// Every member, ourselves included.
    Members(oneshot::Sender<Vec<MemberJson>>),
    /// One member by name.
    Member(String, oneshot::Sender<Option<MemberJson>>),
    /// Our own view.
    SelfInfo(oneshot::Sender<SelfJson>),
    /// Are we joined and healthy?
    Health(oneshot::Sender<HealthJson>),
    /// Contact these addresses (`host:port`) to join; replies how many were resolved.
    Join(Vec<String>, oneshot::Sender<Result<usize, String>>),
    /// Leave gracefully, then exit; replies once the leave has been announced.
    Leave(oneshot::Sender<()>),
    /// Mark a failed member as left everywhere.
    ForceLeave(String, oneshot::Sender<Result<(), String>>),
    /// Publish new tags.
    SetTags(Tags, oneshot::Sender<Result<(), String>>),
    /// Enter maintenance with this reason (`Some`) or leave it (`None`).
    SetMaintenance(Option<String>, oneshot::Sender<Result<(), String>>),
    /// The metrics registry, brought up to date: the asker renders it (on its own thread).
    Metrics(oneshot::Sender<prometheus::Registry>),
    /// The configured hooks and their delivery state.
    Hooks(oneshot::Sender<Vec<crate::hooks::HookStatus>>),
    /// One attempt of a hook with a sample event (`event` defaults to the hook's first,
    /// `member` to this agent).
    HookTest {
        /// The hook.
        name: String,
        /// The event type to send.
        event: Option<String>,
        /// The member the sample is about.
        member: Option<String>,
        /// What happened.
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Moves dead letters (of one hook, or all) back to the outbox.
    HookReplay(Option<String>, oneshot::Sender<Result<usize, String>>),
}

/// Events kept for `Last-Event-ID` resumption.
const REPLAY: usize = 1024;

/// The agent's event bus: live subscribers plus a replay buffer. Events are shared, not
/// copied: the channel and the buffer each keep `REPLAY` of them.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<EventJson>>,
    recent: Arc<Mutex<VecDeque<Arc<EventJson>>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus {
            sender: broadcast::channel(REPLAY).0,
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(REPLAY))),
        }
    }
}

impl EventBus {
    /// Publishes an event to subscribers and the replay buffer.
    pub fn publish(&self, event: EventJson) {
        let event = Arc::new(event);
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if recent.len() == REPLAY {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let _ = self.sender.send(event);
    }

    /// Subscribes; also returns the buffered events after `last_id` (for resumption).
    pub fn subscribe(
        &self,
        last_id: Option<u64>,
    ) -> (Vec<Arc<EventJson>>, broadcast::Receiver<Arc<EventJson>>) {
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = self.sender.subscribe();
        let replay = match last_id {
            Some(id) => recent.iter().filter(|e| e.id > id).cloned().collect(),
            None => Vec::new(),
        };
        (replay, receiver)
    }

    /// How many subscribers are listening (event streams, hooks, metrics).
    pub fn subscribers(&self) -> usize {
        self.sender.receiver_count()
    }
}

/// What the API holds: a way to ask the agent, and its events.
#[derive(Clone)]
pub struct AgentHandle {
    /// Commands to the agent task.
    pub commands: mpsc::Sender<Command>,
    /// Membership events.
    pub events: EventBus,
}

impl AgentHandle {
    /// Sends a command and waits for its reply; `None` if the agent has stopped.
    pub async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// Builds the API's view of a core event.
pub fn event_json(
    id: u64,
    kind: EventKind,
    member: &MemberView,
    previous: Option<State>,
    observer: &str,
) -> EventJson {
    let now = std::time::Instant::now();
    EventJson {
        id,
        kind: kind.as_str().to_string(),
        timestamp: unix_now(),
        member: MemberJson::from_view(member, now),
        previous_state: previous,
        observed_by: observer.to_string(),
    }
}

/// Seconds since the Unix epoch, with milliseconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}
