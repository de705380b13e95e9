//! Hooks: signed webhooks and local commands fired by membership events.
//!
//! The agent task decides *what* is delivered ([`policy`]); the runner here, on a thread of
//! its own, does the delivering: it writes each accepted delivery to the durable [`outbox`] first, then runs
//! attempts concurrently across hooks and members but in order per (hook, member), with
//! timeouts, exponential backoff with jitter, `Retry-After`, and dead letters.

pub mod deliver;
mod metrics;
pub mod outbox;
pub mod payload;
pub mod policy;
pub mod spec;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::net::http::LazyClient;
use deliver::Outcome;
pub use metrics::HookMetrics;
use outbox::{Delivery, Outbox, OutboxError};
use payload::HookEvent;
use spec::Hook;

/// Attempts running at once for one hook.
const MAX_IN_FLIGHT_PER_HOOK: usize = 16;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Why a test delivery (`swimd hooks test`) did not go through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookTestError {
    /// No hook has this name.
    #[error("no hook named {0}")]
    NoSuchHook(String),
    /// The sample's member is not known.
    #[error("no member named {0}")]
    NoSuchMember(String),
    /// The attempt failed.
    #[error("{hook}: {error}")]
    Failed {
        /// The hook.
        hook: String,
        /// What the attempt reported.
        error: String,
    },
}

/// A request to the runner.
#[derive(Debug)]
pub enum Request {
    /// Accept a delivery (into the outbox first).
    Deliver {
        /// Hook name.
        hook: String,
        /// The event.
        event: HookEvent,
        /// Cluster hooks: the note to gossip once handled.
        confirm: Option<String>,
    },
    /// New hooks (SIGHUP).
    Reload(Arc<Vec<Hook>>),
    /// `GET /v1/hooks`.
    List(oneshot::Sender<Vec<HookStatus>>),
    /// `POST /v1/hooks/{name}/test`: one attempt with a sample event, not via the outbox.
    Test(
        String,
        HookEvent,
        oneshot::Sender<Result<String, HookTestError>>,
    ),
    /// `POST /v1/hooks/replay`: dead letters (of one hook, or all) back to pending.
    Replay(Option<String>, oneshot::Sender<Result<usize, OutboxError>>),
}

/// A hook as `swimd hooks list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookStatus {
    /// Name.
    pub name: String,
    /// `webhook` or `exec`.
    pub kind: String,
    /// `local` or `cluster`.
    pub scope: String,
    /// Events it takes.
    pub events: Vec<String>,
    /// False after a 410 Gone (until the next reload).
    pub enabled: bool,
    /// Deliveries waiting in the outbox.
    pub pending: usize,
    /// Dead letters.
    pub dead: usize,
    /// Unix seconds of the last success, if any.
    pub last_success: Option<f64>,
    /// The last error, if the last attempt failed.
    pub last_error: Option<String>,
}

/// The runner's handle, held by the agent.
#[derive(Clone)]
pub struct Hooks {
    requests: mpsc::UnboundedSender<Request>,
}

impl Hooks {
    /// Opens the outbox in `state_dir` and starts the runner. Handled cluster deliveries
    /// come back on the returned channel as note keys, for the agent to gossip.
    pub fn start(
        hooks: Arc<Vec<Hook>>,
        state_dir: &Path,
        self_name: String,
        metrics: HookMetrics,
    ) -> Result<(Hooks, mpsc::UnboundedReceiver<String>), OutboxError> {
        crate::net::tls::install_crypto_provider();
        let outbox = Outbox::open(state_dir)?;
        let (requests, rx) = mpsc::unbounded_channel();
        let (confirm_tx, confirmations) = mpsc::unbounded_channel();
        let mut runner = Runner {
            hooks: Arc::new(Vec::new()),
            outbox,
            pending: BTreeMap::new(),
            in_flight: HashSet::new(),
            disabled: HashSet::new(),
            last_success: BTreeMap::new(),
            last_error: BTreeMap::new(),
            client: LazyClient::new(|| {
                reqwest::Client::builder().redirect(reqwest::redirect::Policy::none())
            }),
            self_name,
            metrics,
            confirmations: confirm_tx,
        };
        // Pending deliveries first: the reload then buries those of hooks no longer configured.
        match runner.outbox.pending() {
            Ok(pending) => {
                if !pending.is_empty() {
                    info!(
                        deliveries = pending.len(),
                        "hook deliveries pending from before the restart"
                    );
                }
                runner.pending = pending.into_iter().map(|d| (d.seq, d)).collect();
            }
            Err(e) => error!("{e}"),
        }
        runner.reload(hooks);
        // A thread and runtime of their own: the outbox's fsyncs and the child processes of
        // a burst of events must never hold up the SWIM loop on the agent's thread.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OutboxError::new(state_dir, format!("hook runtime: {e}")))?;
        std::thread::Builder::new()
            .name("swimd-hooks".into())
            .spawn(move || runtime.block_on(runner.run(rx)))
            .map_err(|e| OutboxError::new(state_dir, format!("hook thread: {e}")))?;
        Ok((Hooks { requests }, confirmations))
    }

    /// Sends a request; false if the runner has stopped.
    pub fn send(&self, request: Request) -> bool {
        self.requests.send(request).is_ok()
    }
}

type Attempt = std::pin::Pin<Box<dyn Future<Output = (u64, Outcome, Duration)> + Send>>;

struct Runner {
    hooks: Arc<Vec<Hook>>,
    outbox: Outbox,
    pending: BTreeMap<u64, Delivery>,
    /// (hook, member) lanes with an attempt running.
    in_flight: HashSet<(String, String)>,
    disabled: HashSet<String>,
    last_success: BTreeMap<String, f64>,
    last_error: BTreeMap<String, String>,
    client: LazyClient,
    self_name: String,
    metrics: HookMetrics,
    confirmations: mpsc::UnboundedSender<String>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Runner {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut attempts: FuturesUnordered<Attempt> = FuturesUnordered::new();
        loop {
            self.dispatch(&mut attempts);
            let wake = self.next_due();
            tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => self.request(request).await,
                    None => return,
                },
                Some((seq, outcome, took)) = attempts.next(), if !attempts.is_empty() => {
                    self.finish(seq, outcome, took);
                }
                _ = tokio::time::sleep(wake) => {}
            }
        }
    }

    async fn request(&mut self, request: Request) {
        match request {
            Request::Deliver { hook, .. } if self.pending.len() >= outbox::MAX_PENDING => {
                // A receiver down for days must not fill the disk: the newest are refused.
                error!(hook = %hook, "delivery lost: {} deliveries already pending", outbox::MAX_PENDING);
                self.metrics.outcome(&hook, "lost");
            }
            Request::Deliver {
                hook,
                event,
                confirm,
            } => match self.outbox.push(&hook, event, confirm, now_ms()) {
                Ok(delivery) => {
                    self.pending.insert(delivery.seq, delivery);
                    self.update_depth();
                }
                Err(e) => {
                    // Nothing else can keep it: say so loudly and count it.
                    error!(hook = %hook, "delivery lost: {e}");
                    self.metrics.outcome(&hook, "lost");
                }
            },
            Request::Reload(hooks) => self.reload(hooks),
            Request::List(reply) => {
                let dead = self.outbox.dead().unwrap_or_default();
                let list = self
                    .hooks
                    .iter()
                    .map(|h| {
                        let name = &h.spec.name;
                        HookStatus {
                            name: name.clone(),
                            kind: format!("{:?}", h.spec.kind).to_lowercase(),
                            scope: format!("{:?}", h.spec.scope).to_lowercase(),
                            events: h.spec.events.clone(),
                            enabled: !self.disabled.contains(name),
                            pending: self.pending.values().filter(|d| &d.hook == name).count(),
                            dead: dead.iter().filter(|d| &d.hook == name).count(),
                            last_success: self.last_success.get(name).copied(),
                            last_error: self.last_error.get(name).cloned(),
                        }
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Request::Test(name, event, reply) => {
                let Some(hook) = self.hooks.iter().find(|h| h.spec.name == name).cloned() else {
                    let _ = reply.send(Err(HookTestError::NoSuchHook(name)));
                    return;
                };
                let client = self.client.clone();
                let me = self.self_name.clone();
                // Off the runner task: a slow receiver must not hold up the outbox.
                tokio::spawn(async move {
                    let result = match deliver::attempt(&hook, &event, &client, &me).await {
                        Outcome::Success => Ok(format!("{name}: delivered {}", event.data.id)),
                        Outcome::Retry { error, .. } | Outcome::Failed(error) => {
                            Err(HookTestError::Failed { hook: name, error })
                        }
                        Outcome::Gone => Err(HookTestError::Failed {
                            hook: name,
                            error: "the receiver answered 410 Gone".to_string(),
                        }),
                    };
                    let _ = reply.send(result);
                });
            }
            Request::Replay(hook, reply) => {
                let result = self
                    .outbox
                    .replay(hook.as_deref(), now_ms())
                    .map(|replayed| {
                        let n = replayed.len();
                        for d in replayed {
                            self.pending.insert(d.seq, d);
                        }
                        self.update_depth();
                        n
                    });
                let _ = reply.send(result);
            }
        }
    }

    fn reload(&mut self, hooks: Arc<Vec<Hook>>) {
        for hook in hooks.iter() {
            self.metrics.init(&hook.spec.name);
        }
        for old in self.hooks.iter() {
            if !hooks.iter().any(|h| h.spec.name == old.spec.name) {
                // A removed hook's series would otherwise keep alerts firing forever.
                self.metrics.remove(&old.spec.name);
            }
        }
        // A reload re-enables hooks a 410 had disabled: the operator has looked at them.
        self.disabled.clear();
        self.hooks = hooks;
        let unknown: Vec<Delivery> = self
            .pending
            .values()
            .filter(|d| !self.hooks.iter().any(|h| h.spec.name == d.hook))
            .cloned()
            .collect();
        for mut d in unknown {
            warn!(hook = %d.hook, id = %d.event.data.id, "hook no longer configured: delivery moved to the dead letters");
            d.last_error = "hook no longer configured".into();
            self.bury(d);
        }
        self.update_depth();
    }

    /// Starts every attempt that is due and whose lane is free.
    fn dispatch(&mut self, attempts: &mut FuturesUnordered<Attempt>) {
        let now = now_ms();
        let mut lanes_seen: HashSet<(String, String)> = HashSet::new();
        let mut starts = Vec::new();
        for d in self.pending.values() {
            let lane = (d.hook.clone(), d.event.data.member.name.clone());
            // Only the oldest delivery of a lane may run: order per (hook, member).
            if !lanes_seen.insert(lane.clone()) || self.in_flight.contains(&lane) {
                continue;
            }
            if d.next_at_ms > now || self.disabled.contains(&d.hook) {
                continue;
            }
            let running = self.in_flight.iter().filter(|(h, _)| *h == d.hook).count()
                + starts
                    .iter()
                    .filter(|(_, l): &&(u64, (String, String))| l.0 == d.hook)
                    .count();
            if running >= MAX_IN_FLIGHT_PER_HOOK {
                continue;
            }
            starts.push((d.seq, lane));
        }
        for (seq, lane) in starts {
            let Some(d) = self.pending.get(&seq) else {
                continue;
            };
            let Some(hook) = self.hooks.iter().find(|h| h.spec.name == d.hook).cloned() else {
                continue;
            };
            self.in_flight.insert(lane);
            let event = d.event.clone();
            let client = self.client.clone();
            let me = self.self_name.clone();
            attempts.push(Box::pin(async move {
                let started = Instant::now();
                let outcome = deliver::attempt(&hook, &event, &client, &me).await;
                (seq, outcome, started.elapsed())
            }));
        }
    }

    /// How long until the next delivery is due (at most a minute: reloads and replays wake
    /// the loop anyway).
    fn next_due(&self) -> Duration {
        let now = now_ms();
        self.pending
            .values()
            .filter(|d| {
                !self.disabled.contains(&d.hook) && self.hooks.iter().any(|h| h.spec.name == d.hook)
            })
            .map(|d| d.next_at_ms.saturating_sub(now))
            .min()
            .map_or(Duration::from_secs(60), |ms| {
                Duration::from_millis(ms.max(1)).min(Duration::from_secs(60))
            })
    }

    fn finish(&mut self, seq: u64, outcome: Outcome, took: Duration) {
        let Some(mut d) = self.pending.get(&seq).cloned() else {
            return;
        };
        self.in_flight
            .remove(&(d.hook.clone(), d.event.data.member.name.clone()));
        self.metrics.duration(&d.hook, took);
        d.attempts += 1;
        let hook = self.hooks.iter().find(|h| h.spec.name == d.hook).cloned();
        match outcome {
            Outcome::Success => {
                info!(hook = %d.hook, event = %d.event.kind, member = %d.event.data.member.name, id = %d.event.data.id, attempts = d.attempts, "hook delivered");
                self.metrics.outcome(&d.hook, "success");
                let now = now_ms() as f64 / 1000.0;
                self.metrics.last_success(&d.hook, now);
                self.last_success.insert(d.hook.clone(), now);
                self.last_error.remove(&d.hook);
                if let Err(e) = self.outbox.remove(seq) {
                    error!("{e}");
                }
                self.pending.remove(&seq);
                self.confirm(&d);
            }
            Outcome::Gone => {
                error!(hook = %d.hook, "receiver answered 410 Gone: hook disabled until the next reload");
                self.metrics.outcome(&d.hook, "gone");
                self.metrics.enabled(&d.hook, false);
                self.disabled.insert(d.hook.clone());
                d.last_error = "410 Gone".into();
                self.last_error.insert(d.hook.clone(), d.last_error.clone());
                self.confirm(&d);
                self.bury(d);
            }
            Outcome::Failed(error) => {
                error!(hook = %d.hook, id = %d.event.data.id, error = %error, "hook delivery failed for good: moved to the dead letters");
                self.metrics.outcome(&d.hook, "failed");
                d.last_error = error;
                self.last_error.insert(d.hook.clone(), d.last_error.clone());
                self.confirm(&d);
                self.bury(d);
            }
            Outcome::Retry { error, after } => {
                let max_attempts = hook.as_ref().map_or(1, |h| h.spec.max_attempts);
                self.last_error.insert(d.hook.clone(), error.clone());
                d.last_error = error;
                if d.attempts >= max_attempts {
                    error!(hook = %d.hook, id = %d.event.data.id, attempts = d.attempts, error = %d.last_error, "hook delivery gave up: moved to the dead letters");
                    self.metrics.outcome(&d.hook, "failed");
                    self.confirm(&d);
                    self.bury(d);
                } else {
                    let delay = hook.as_ref().map_or(Duration::from_secs(1), |h| {
                        backoff(h, d.attempts, after, jitter(seq, d.attempts))
                    });
                    warn!(hook = %d.hook, id = %d.event.data.id, attempt = d.attempts, retry_in = %humantime::format_duration(delay), error = %d.last_error, "hook delivery will be retried");
                    self.metrics.outcome(&d.hook, "retry");
                    d.next_at_ms = now_ms() + delay.as_millis() as u64;
                    if let Err(e) = self.outbox.update(&d) {
                        error!("{e}");
                    }
                    self.pending.insert(seq, d);
                }
            }
        }
        self.update_depth();
    }

    /// A cluster delivery is handled (done or given up): the others may forget it.
    fn confirm(&self, d: &Delivery) {
        if let Some(key) = &d.confirm {
            let _ = self.confirmations.send(key.clone());
        }
    }

    fn bury(&mut self, d: Delivery) {
        self.metrics.dead_letter(&d.hook);
        if let Err(e) = self.outbox.bury(&d) {
            error!("{e}");
        }
        self.pending.remove(&d.seq);
    }

    fn update_depth(&self) {
        for hook in self.hooks.iter() {
            let name = &hook.spec.name;
            let depth = self.pending.values().filter(|d| &d.hook == name).count();
            self.metrics.depth(name, depth);
            self.metrics.enabled(name, !self.disabled.contains(name));
        }
    }
}

/// A number in [0, 1) that differs per delivery and attempt (jitter without shared RNG).
fn jitter(seq: u64, attempt: u32) -> f64 {
    let mut x = seq
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(attempt).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        ^ now_ms();
    x ^= x >> 31;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponential backoff with jitter: base × 2^(attempts−1), capped, then between half and
/// all of it; a receiver's `Retry-After` wins when it asks for longer.
fn backoff(hook: &Hook, attempts: u32, after: Option<Duration>, jitter: f64) -> Duration {
    let base = hook.spec.backoff_base;
    let exp = base
        .checked_mul(1u32 << attempts.saturating_sub(1).min(20))
        .unwrap_or(hook.spec.backoff_max)
        .min(hook.spec.backoff_max);
    let jittered = exp.mul_f64(0.5 + jitter / 2.0);
    match after {
        Some(after) => after.min(MAX_RETRY_AFTER).max(jittered),
        None => jittered,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(member: &str) -> HookEvent {
        let member = payload::PayloadMember::sample(member, 0);
        HookEvent::new("member.failed", 0.0, "c", member, None, "me")
    }

    /// A receiver down for days must not fill the disk: past `MAX_PENDING` pending
    /// deliveries, a new one is refused (counted `lost`) and never reaches the outbox.
    #[tokio::test]
    async fn deliveries_past_the_pending_cap_are_lost_and_counted_not_stored() {
        let dir = std::env::temp_dir().join(format!("swimd-hooks-cap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let registry = prometheus::Registry::new();
        let (confirm_tx, _confirmations) = mpsc::unbounded_channel();
        let mut runner = Runner {
            hooks: Arc::new(Vec::new()),
            outbox: Outbox::open(&dir).unwrap(),
            pending: BTreeMap::new(),
            in_flight: HashSet::new(),
            disabled: HashSet::new(),
            last_success: BTreeMap::new(),
            last_error: BTreeMap::new(),
            client: LazyClient::new(reqwest::Client::builder),
            self_name: "me".into(),
            metrics: HookMetrics::new(&registry),
            confirmations: confirm_tx,
        };
        // Held as if the receiver had been down for days.
        runner.pending = (0..outbox::MAX_PENDING as u64)
            .map(|seq| {
                let delivery = outbox::Delivery {
                    seq,
                    hook: "lb".into(),
                    event: event(&format!("m{seq}")),
                    confirm: None,
                    attempts: 1,
                    next_at_ms: u64::MAX,
                    last_error: String::new(),
                };
                (seq, delivery)
            })
            .collect();
        for member in ["late-1", "late-2"] {
            let deliver = Request::Deliver {
                hook: "lb".into(),
                event: event(member),
                confirm: None,
            };
            runner.request(deliver).await;
        }
        assert_eq!(runner.pending.len(), outbox::MAX_PENDING);
        assert!(
            runner.outbox.pending().unwrap().is_empty(),
            "nothing stored"
        );
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("swimd_hook_deliveries_total{hook=\"lb\",outcome=\"lost\"} 2"),
            "{text}"
        );
        // One fewer pending: the next one is taken again.
        runner.pending.pop_first();
        let deliver = Request::Deliver {
            hook: "lb".into(),
            event: event("late-3"),
            confirm: None,
        };
        runner.request(deliver).await;
        assert_eq!(runner.outbox.pending().unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn backoff_doubles_is_capped_and_honours_retry_after() {
        let hook = toml::from_str::<spec::HookSpec>(
            "name = \"x\"\nkind = \"exec\"\nevents = [\"member.failed\"]\ncommand = [\"/bin/true\"]\nbackoff_base = \"1s\"\nbackoff_max = \"8s\"",
        )
        .unwrap()
        .validate()
        .unwrap();
        let full = |n| backoff(&hook, n, None, 1.0);
        assert_eq!(
            (1..=6).map(full).collect::<Vec<_>>(),
            [1, 2, 4, 8, 8, 8].map(Duration::from_secs)
        );
        assert_eq!(
            backoff(&hook, 3, None, 0.0),
            Duration::from_secs(2),
            "jitter: half at least"
        );
        assert_eq!(
            backoff(&hook, 1, Some(Duration::from_secs(30)), 0.5),
            Duration::from_secs(30)
        );
        let j = jitter(1, 1);
        assert!((0.0..1.0).contains(&j));
    }
}
