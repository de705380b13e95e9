//! A fake agent behind a real API server, and canned members and events, for the API's
//! and the CLI's tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::json::{EventJson, MemberJson};
use crate::agent::handle::{AgentHandle, Command, EventBus, JoinError};
use crate::core::{ForceLeaveError, TagsError};
use crate::hooks::HookTestError;
use crate::model::{
    AsOf, Event, EventKind, Fitness, Incarnation, MemberInfo, MemberView, NodeName, SelfView,
    StateCounts,
};

/// Limits for test servers: the defaults of `[api]`.
pub(crate) const TEST_LIMITS: super::Limits = super::Limits {
    max_connections: 256,
    header_timeout: Duration::from_secs(5),
};

/// The fake agent's `gossip.max_tags_bytes`: small, so a test can exceed it.
const FAKE_MAX_TAGS_BYTES: usize = 32;

/// When the canned members entered their states; the fake agent answers 1.5 s later.
fn since() -> Instant {
    static SINCE: OnceLock<Instant> = OnceLock::new();
    *SINCE.get_or_init(Instant::now)
}

/// When the fake agent sees its canned members: 1.5 s after they entered their states.
fn seen() -> Instant {
    since() + Duration::from_millis(1500)
}

/// A member with tags given as `k=v` strings, as the agent holds it.
pub(crate) fn view(name: &str, state: &str, incarnation: u64, tags: &[&str]) -> MemberView {
    let tags = tags
        .iter()
        .map(|t| {
            let (k, v) = t.split_once('=').expect("test tags are k=v");
            (k.to_string(), v.to_string())
        })
        .collect();
    let addr = format!("10.0.0.{}:7946", name.len());
    MemberView {
        info: Arc::new(MemberInfo::new(
            NodeName::new(name),
            addr.parse().expect("a test address"),
            tags,
        )),
        incarnation: Incarnation(incarnation),
        state: state.parse().expect("a test state is a state word"),
        since: since(),
    }
}

/// The same member as the API shows it (in its state for 1.5 s).
pub(crate) fn member(name: &str, state: &str, incarnation: u64, tags: &[&str]) -> MemberJson {
    MemberJson::new(&view(name, state, incarnation, tags), seen())
}

/// The canned cluster, deliberately not in name order.
fn cluster_views() -> Vec<MemberView> {
    vec![
        view("delta", "left", 2, &[]),
        view("bravo", "suspect", 3, &["role=db", "dc=a"]),
        view("alpha", "alive", 1, &["role=web", "dc=a"]),
        view("charlie", "failed", 7, &["role=web", "dc=b"]),
    ]
}

/// The canned cluster as the API shows it.
pub(crate) fn cluster() -> Vec<MemberJson> {
    cluster_views()
        .iter()
        .map(|m| MemberJson::new(m, seen()))
        .collect()
}

/// An event about a canned member, as the agent publishes it.
pub(crate) fn event(id: u64, kind: &str, name: &str, previous: Option<&str>, state: &str) -> Event {
    Event {
        id,
        kind: EventKind::from_name(kind).expect("a test event kind"),
        timestamp: 1_700_000_000.25,
        at: seen(),
        member: view(name, state, id, &["role=web"]),
        previous: previous.map(|p| p.parse().expect("a test state is a state word")),
        observed_by: NodeName::new("alpha"),
    }
}

/// The same event as the API streams it.
pub(crate) fn event_json(event: &Event) -> EventJson {
    EventJson::from(event)
}

/// What the fake agent answers and what it was asked to do.
#[derive(Debug)]
pub(crate) struct FakeState {
    /// The `Health` answer.
    pub health: Fitness,
    /// Actions taken, e.g. `join a:1,b:2`, `leave`, `force-leave charlie`, `tags k=v`.
    pub actions: Vec<String>,
}

impl Default for FakeState {
    fn default() -> Self {
        FakeState {
            health: Fitness::Fit,
            actions: Vec::new(),
        }
    }
}

/// A task answering agent commands with the canned cluster.
pub(crate) fn fake_agent() -> (mpsc::Sender<Command>, Arc<Mutex<FakeState>>) {
    let state = Arc::new(Mutex::new(FakeState::default()));
    let (commands, inbox) = mpsc::channel(16);
    tokio::spawn(answer(inbox, state.clone()));
    (commands, state)
}

/// A running API server with a fake agent behind it.
pub(crate) struct FakeApi {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// The bus the server streams from; publish here to emit events.
    pub events: EventBus,
    /// The fake agent's state.
    pub state: Arc<Mutex<FakeState>>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

impl FakeApi {
    /// Starts a server on 127.0.0.1 (any port) with a fake agent behind it.
    pub(crate) async fn start(token: Option<&str>) -> FakeApi {
        Self::start_local(token, true).await
    }

    /// Starts a server whose agent task is already gone.
    pub(crate) async fn start_without_agent() -> FakeApi {
        Self::start_local(None, false).await
    }

    async fn start_local(token: Option<&str>, with_agent: bool) -> FakeApi {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        Self::start_on(any_port, token, EventBus::default(), with_agent).await
    }

    /// Starts a server at `addr`, streaming from `events`.
    pub(crate) async fn start_on(
        addr: SocketAddr,
        token: Option<&str>,
        events: EventBus,
        with_agent: bool,
    ) -> FakeApi {
        crate::net::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the test API");
        let addr = listener.local_addr().expect("local address");
        let (commands, state) = if with_agent {
            fake_agent()
        } else {
            let (commands, _gone) = mpsc::channel(1);
            (commands, Arc::new(Mutex::new(FakeState::default())))
        };
        let handle = AgentHandle {
            commands,
            events: events.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(super::serve(
            listener,
            handle,
            token.map(str::to_string),
            TEST_LIMITS,
            Arc::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        FakeApi {
            addr,
            events,
            state,
            stop: Some(stop),
            server,
        }
    }

    /// `http://<addr>`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Shuts the server down gracefully and waits until it has stopped.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.server)
            .await
            .expect("server task")
            .expect("server result");
    }
}

async fn answer(mut inbox: mpsc::Receiver<Command>, state: Arc<Mutex<FakeState>>) {
    let members = cluster_views();
    while let Some(command) = inbox.recv().await {
        let mut state = state.lock().expect("fake state");
        match command {
            Command::Members(reply) => {
                let _ = reply.send(AsOf {
                    at: seen(),
                    value: members.clone(),
                });
            }
            Command::Member(name, reply) => {
                let _ = reply.send(AsOf {
                    at: seen(),
                    value: members
                        .iter()
                        .find(|m| m.info.name.as_str() == name)
                        .cloned(),
                });
            }
            Command::SelfInfo(reply) => {
                let _ = reply.send(SelfView {
                    at: seen(),
                    member: members[2].clone(),
                    cluster: "test".to_string(),
                    joined: true,
                    health_score: 0,
                    counts: StateCounts {
                        alive: 1,
                        suspect: 1,
                        failed: 1,
                        left: 1,
                    },
                    version: "test".to_string(),
                    transport: Default::default(),
                });
            }
            Command::Health(reply) => {
                let _ = reply.send(state.health.clone());
            }
            Command::Join(addrs, reply) => {
                state.actions.push(format!("join {}", addrs.join(",")));
                let answer = match addrs.iter().find(|a| !a.contains(':')) {
                    Some(bad) => Err(JoinError::Unresolved(vec![bad.clone()])),
                    None => Ok(addrs.len()),
                };
                let _ = reply.send(answer);
            }
            Command::Leave(reply) => {
                state.actions.push("leave".to_string());
                let _ = reply.send(());
            }
            Command::ForceLeave(name, reply) => {
                state.actions.push(format!("force-leave {name}"));
                let answer = match members.iter().find(|m| m.info.name.as_str() == name) {
                    Some(m) if m.state == crate::model::State::Failed => Ok(()),
                    Some(m) => Err(ForceLeaveError::NotFailed {
                        name: name.clone(),
                        state: m.state,
                    }),
                    None => Err(ForceLeaveError::Unknown(name.clone())),
                };
                let _ = reply.send(answer);
            }
            Command::SetTags(tags, reply) => {
                let len = crate::wire::tags_len(&tags);
                let answer = if len > FAKE_MAX_TAGS_BYTES {
                    Err(TagsError {
                        len,
                        limit: FAKE_MAX_TAGS_BYTES,
                    })
                } else {
                    let listed: Vec<String> =
                        tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    state.actions.push(format!("tags {}", listed.join(",")));
                    Ok(())
                };
                let _ = reply.send(answer);
            }
            Command::SetMaintenance(maintenance, reply) => {
                let answer = match &maintenance {
                    Some(reason) => crate::agent::handle::validate_maintenance_reason(reason)
                        .map(|()| state.actions.push(format!("maint on {reason}"))),
                    None => {
                        state.actions.push("maint off".to_string());
                        Ok(())
                    }
                };
                let _ = reply.send(answer);
            }
            Command::Metrics(reply) => {
                let registry = prometheus::Registry::new();
                let gauge = prometheus::IntGauge::new("swimd_health_score", "score")
                    .expect("a valid gauge");
                registry.register(Box::new(gauge)).expect("registered once");
                let _ = reply.send(registry);
            }
            Command::Hooks(reply) => {
                let _ = reply.send(Vec::new());
            }
            Command::HookTest { name, reply, .. } => {
                let _ = reply.send(Err(HookTestError::NoSuchHook(name)));
            }
            Command::HookReplay(_, reply) => {
                let _ = reply.send(Ok(0));
            }
        }
    }
}
