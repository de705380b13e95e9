//! How the API (and anything else) talks to the agent task: commands with typed replies,
//! and a broadcast of membership events. The API renders them (`api::json`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::{ForceLeaveError, TagsError};
use crate::hooks::{HookStatus, HookTestError, outbox::OutboxError};
use crate::model::{AsOf, Event, Fitness, MemberView, SelfView, Tags};
use crate::wire::MAX_MAINTENANCE_REASON;

/// A maintenance reason we will not publish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    /// Longer than a reason may be on the wire.
    #[error("the maintenance reason is {0} bytes; at most {max} are allowed", max = MAX_MAINTENANCE_REASON)]
    TooLong(usize),
    /// It ends up in logs, tables and hook environments.
    #[error("the maintenance reason must not contain control characters")]
    ControlCharacters,
}

/// Is this a maintenance reason we may publish: at most 256 bytes, no control characters?
pub fn validate_maintenance_reason(reason: &str) -> Result<(), ReasonError> {
    if reason.len() > MAX_MAINTENANCE_REASON {
        Err(ReasonError::TooLong(reason.len()))
    } else if reason.chars().any(char::is_control) {
        Err(ReasonError::ControlCharacters)
    } else {
        Ok(())
    }
}

/// Why a join contacted nobody.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// No address resolved.
    #[error("none of {0:?} could be resolved")]
    Unresolved(Vec<String>),
    /// The agent stopped before it could contact them.
    #[error("the agent is stopping")]
    Stopping,
}

/// A request to the agent task.
#[derive(Debug)]
pub enum Command {
    /// Every member, ourselves included.
    Members(oneshot::Sender<AsOf<Vec<MemberView>>>),
    /// One member by name.
    Member(String, oneshot::Sender<AsOf<Option<MemberView>>>),
    /// Our own view.
    SelfInfo(oneshot::Sender<SelfView>),
    /// Are we joined and healthy?
    Health(oneshot::Sender<Fitness>),
    /// Contact these addresses (`host:port`) to join; replies how many were resolved.
    Join(Vec<String>, oneshot::Sender<Result<usize, JoinError>>),
    /// Leave gracefully, then exit; replies once the leave has been announced.
    Leave(oneshot::Sender<()>),
    /// Mark a failed member as left everywhere.
    ForceLeave(String, oneshot::Sender<Result<(), ForceLeaveError>>),
    /// Publish new tags.
    SetTags(Tags, oneshot::Sender<Result<(), TagsError>>),
    /// Enter maintenance with this reason (`Some`) or leave it (`None`).
    SetMaintenance(Option<String>, oneshot::Sender<Result<(), ReasonError>>),
    /// The metrics registry, brought up to date: the asker renders it (on its own thread).
    Metrics(oneshot::Sender<prometheus::Registry>),
    /// The configured hooks and their delivery state.
    Hooks(oneshot::Sender<Vec<HookStatus>>),
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
        reply: oneshot::Sender<Result<String, HookTestError>>,
    },
    /// Moves dead letters (of one hook, or all) back to the outbox.
    HookReplay(Option<String>, oneshot::Sender<Result<usize, OutboxError>>),
}

/// Events kept for `Last-Event-ID` resumption.
const REPLAY: usize = 1024;

/// The agent's event bus: live subscribers plus a replay buffer. Events are shared, not
/// copied: the channel and the buffer each keep `REPLAY` of them.
#[derive(Clone)]
pub struct EventBus {
    sender: broadcast::Sender<Arc<Event>>,
    recent: Arc<Mutex<VecDeque<Arc<Event>>>>,
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
    pub fn publish(&self, event: Event) {
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
    ) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
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

/// Seconds since the Unix epoch, with milliseconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}
