//! Which hook deliveries happen, decided in the agent task from its membership view:
//! filters, hold-down and flap damping, the failed-fraction cap, and for cluster hooks the
//! owner (rendezvous hashing), takeover and the minority rule. Pure: time comes in.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::payload::HookEvent;
use super::spec::{Hook, Scope};
use crate::model::Health;
use crate::wire::{State, Tags};

/// A member as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brief {
    /// Name.
    pub name: String,
    /// State.
    pub state: State,
    /// Tags.
    pub tags: Tags,
}

/// The agent's view when a decision is made (ourselves included in `members`).
#[derive(Debug, Clone, Copy)]
pub struct View<'a> {
    /// Our name.
    pub me: &'a str,
    /// Every known member.
    pub members: &'a [Brief],
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Put it in the outbox; for a cluster hook, `confirm` is the note to gossip once done.
    Deliver {
        /// Hook name.
        hook: String,
        /// The event.
        event: HookEvent,
        /// The confirmation note (cluster scope).
        confirm: Option<String>,
    },
    /// Not delivered, on purpose.
    Suppressed {
        /// Hook name.
        hook: String,
        /// Why: see [`SUPPRESS_REASONS`].
        reason: &'static str,
        /// The event.
        event: HookEvent,
    },
}

/// Reasons an event is not delivered (the metric's label values).
pub const SUPPRESS_REASONS: [&str; 6] = [
    "already_out",
    "max_failed_fraction",
    "flap_damped",
    "minority",
    "still_critical",
    "in_maintenance",
];

/// How long a standby waits for a cluster delivery's confirmation before forgetting it.
const STANDBY_TTL: Duration = Duration::from_secs(3600);
/// Most standbys kept; the oldest go first.
const MAX_STANDBY: usize = 10_000;

#[derive(Default)]
struct Tracker {
    /// Failed out of this hook's target (a failure was delivered, no recovery yet).
    out: bool,
    failures: VecDeque<Instant>,
}

struct Held {
    hook: String,
    event: HookEvent,
    release: Instant,
    /// A cluster delivery waiting out `settle` (not a held recovery).
    settling: bool,
}

struct Standby {
    hook: String,
    event: HookEvent,
    key: String,
    /// Owners ranked before us: we deliver once none of them is alive.
    before: Vec<String>,
    since: Instant,
}

/// The policy state: per (hook, member) trackers, held recoveries, cluster standbys.
#[derive(Default)]
pub struct Policy {
    hooks: Arc<Vec<Hook>>,
    trackers: HashMap<(String, String), Tracker>,
    held: Vec<Held>,
    standby: VecDeque<Standby>,
}

/// Events that take a member out: it is gone, or its service is.
fn is_failure(kind: &str) -> bool {
    matches!(kind, "member.failed" | "member.critical")
}

/// Events that may put it back.
fn is_recovery(kind: &str) -> bool {
    matches!(
        kind,
        "member.recovered" | "member.joined" | "member.passing" | "member.ready"
    )
}

/// Was the member in planned maintenance when this happened? Then the operator took it out,
/// and only `maint off` (`member.ready`) puts it back.
fn in_maintenance(event: &HookEvent) -> bool {
    event.data.member.health == Health::Maintenance
}

impl Policy {
    /// A policy for these hooks.
    pub fn new(hooks: Arc<Vec<Hook>>) -> Policy {
        Policy {
            hooks,
            ..Policy::default()
        }
    }

    /// Takes new hooks (a reload); state of hooks that remain is kept.
    pub fn set_hooks(&mut self, hooks: Arc<Vec<Hook>>) {
        let names: Vec<&str> = hooks.iter().map(|h| h.spec.name.as_str()).collect();
        self.trackers
            .retain(|(h, _), _| names.contains(&h.as_str()));
        self.held.retain(|h| names.contains(&h.hook.as_str()));
        self.standby.retain(|s| names.contains(&s.hook.as_str()));
        self.hooks = hooks;
    }

    /// Decides what an event leads to.
    pub fn on_event(&mut self, now: Instant, event: &HookEvent, view: View) -> Vec<Action> {
        let mut actions = Vec::new();
        let hooks = Arc::clone(&self.hooks);
        let member = event.data.member.name.as_str();
        if event.kind == "member.reaped" {
            self.trackers.retain(|(_, m), _| m != member);
        }
        for hook in hooks.iter() {
            if !hook.wants(&event.kind, member, &event.data.member.tags) {
                continue;
            }
            let name = hook.spec.name.clone();
            if hook.fails_over() {
                // A new state of this member replaces any recovery still being held.
                let before = self.held.len();
                self.held.retain(|h| {
                    h.settling || !(h.hook == name && h.event.data.member.name == member)
                });
                if self.held.len() < before {
                    // The recovery never happened as far as the target knows.
                    actions.push(Action::Suppressed {
                        hook: name.clone(),
                        reason: "flap_damped",
                        event: event.clone(),
                    });
                }
                if in_maintenance(event) && (is_failure(&event.kind) || is_recovery(&event.kind)) {
                    actions.push(Action::Suppressed {
                        hook: name,
                        reason: "in_maintenance",
                        event: event.clone(),
                    });
                    continue;
                }
                if is_failure(&event.kind) {
                    let out_now = self.out_count(hook, view);
                    let tracker = self
                        .trackers
                        .entry((name.clone(), member.to_string()))
                        .or_default();
                    tracker.failures.push_back(now);
                    while tracker
                        .failures
                        .front()
                        .is_some_and(|&t| now.saturating_duration_since(t) > hook.spec.flap_window)
                    {
                        tracker.failures.pop_front();
                    }
                    if tracker.out {
                        actions.push(Action::Suppressed {
                            hook: name,
                            reason: "already_out",
                            event: event.clone(),
                        });
                        continue;
                    }
                    let matching = view
                        .members
                        .iter()
                        .filter(|m| m.state != State::Left && hook.matches_member(&m.name, &m.tags))
                        .count()
                        .max(1);
                    if (out_now + 1) as f64 > hook.spec.max_failed_fraction * matching as f64 {
                        actions.push(Action::Suppressed {
                            hook: name,
                            reason: "max_failed_fraction",
                            event: event.clone(),
                        });
                        continue;
                    }
                    tracker.out = true;
                } else if is_recovery(&event.kind) {
                    let key = (name.clone(), member.to_string());
                    // Back from a failure but its service still down: it stays out.
                    if event.data.member.health == Health::Critical
                        && self.trackers.get(&key).is_some_and(|t| t.out)
                    {
                        actions.push(Action::Suppressed {
                            hook: name,
                            reason: "still_critical",
                            event: event.clone(),
                        });
                        continue;
                    }
                    if let Some(tracker) = self.trackers.get_mut(&key)
                        && tracker.out
                    {
                        let flapping = tracker
                            .failures
                            .iter()
                            .filter(|&&t| now.saturating_duration_since(t) <= hook.spec.flap_window)
                            .count()
                            >= hook.spec.flap_threshold as usize;
                        let hold = if flapping {
                            hook.spec.flap_hold_down
                        } else {
                            hook.spec.hold_down
                        };
                        if !hold.is_zero() {
                            self.held.push(Held {
                                hook: name,
                                event: event.clone(),
                                release: now + hold,
                                settling: false,
                            });
                            continue;
                        }
                        tracker.out = false;
                    }
                }
            }
            actions.extend(self.route(now, hook, event.clone(), view, false));
        }
        actions
    }

    /// A confirmation note arrived from `from` (its proof checked by the core): its standby
    /// is done if `from` is one of the members ranked before us, who would have delivered.
    pub fn on_note(&mut self, key: &str, from: &str) {
        self.standby
            .retain(|s| s.key != key || !s.before.iter().any(|owner| owner == from));
    }

    /// Releases held recoveries that are due and takes over cluster deliveries whose owners
    /// are gone.
    pub fn poll(&mut self, now: Instant, view: View) -> Vec<Action> {
        let mut actions = Vec::new();
        let hooks = Arc::clone(&self.hooks);
        let (due, held): (Vec<Held>, Vec<Held>) =
            self.held.drain(..).partition(|h| h.release <= now);
        self.held = held;
        for held in due {
            let Some(hook) = hooks.iter().find(|h| h.spec.name == held.hook) else {
                continue;
            };
            if held.settling {
                actions.extend(self.route(now, hook, held.event, view, true));
                continue;
            }
            let member = held.event.data.member.name.clone();
            let alive = view
                .members
                .iter()
                .any(|m| m.name == member && m.state == State::Alive);
            if !alive {
                continue;
            }
            if let Some(tracker) = self.trackers.get_mut(&(held.hook.clone(), member)) {
                tracker.out = false;
            }
            actions.extend(self.route(now, hook, held.event, view, false));
        }
        self.standby
            .retain(|s| now.saturating_duration_since(s.since) < STANDBY_TTL);
        let mut keep = VecDeque::with_capacity(self.standby.len());
        while let Some(standby) = self.standby.pop_front() {
            let owner_alive = standby.before.iter().any(|owner| {
                view.members
                    .iter()
                    .any(|m| &m.name == owner && matches!(m.state, State::Alive | State::Suspect))
            });
            if owner_alive {
                keep.push_back(standby);
            } else if minority(view) {
                actions.push(Action::Suppressed {
                    hook: standby.hook,
                    reason: "minority",
                    event: standby.event,
                });
            } else {
                actions.push(Action::Deliver {
                    hook: standby.hook,
                    event: standby.event,
                    confirm: Some(standby.key),
                });
            }
        }
        self.standby = keep;
        actions
    }

    /// When [`Policy::poll`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.held.iter().map(|h| h.release).min()
    }

    /// Standbys waiting for a confirmation (for tests and the API).
    pub fn standby_len(&self) -> usize {
        self.standby.len()
    }

    fn out_count(&self, hook: &Hook, view: View) -> usize {
        self.trackers
            .iter()
            .filter(|((h, m), t)| {
                t.out
                    && *h == hook.spec.name
                    && view
                        .members
                        .iter()
                        .any(|b| &b.name == m && b.state != State::Left)
            })
            .count()
    }

    /// Local hooks deliver here; cluster hooks here only if we own the event, once it has
    /// settled (a partition shows up as failures one after another: waiting `settle` lets
    /// the minority rule see more than the first of them).
    fn route(
        &mut self,
        now: Instant,
        hook: &Hook,
        event: HookEvent,
        view: View,
        settled: bool,
    ) -> Vec<Action> {
        let name = hook.spec.name.clone();
        if hook.spec.scope == Scope::Local {
            return vec![Action::Deliver {
                hook: name,
                event,
                confirm: None,
            }];
        }
        if !settled && !hook.spec.settle.is_zero() {
            self.held.push(Held {
                hook: name,
                event,
                release: now + hook.spec.settle,
                settling: true,
            });
            return Vec::new();
        }
        if minority(view) {
            return vec![Action::Suppressed {
                hook: name,
                reason: "minority",
                event,
            }];
        }
        let key = format!("{}/{}", name, event.data.id);
        let ranks = rank(&key, &event.data.member.name, &hook.spec.owner_tags, view);
        let Some(position) = ranks.iter().position(|n| n == view.me) else {
            return Vec::new();
        };
        if position == 0 {
            return vec![Action::Deliver {
                hook: name,
                event,
                confirm: Some(key),
            }];
        }
        if self.standby.len() == MAX_STANDBY {
            self.standby.pop_front();
        }
        self.standby.push_back(Standby {
            hook: name,
            event,
            key,
            before: ranks.into_iter().take(position).collect(),
            since: now,
        });
        Vec::new()
    }
}

/// True when we see fewer than half of the members we know (left ones aside) alive.
/// Suspects do not count as reachable: on the minority side of a partition the members
/// not yet declared failed are suspect already.
pub fn minority(view: View) -> bool {
    let known = view
        .members
        .iter()
        .filter(|m| m.state != State::Left)
        .count();
    let reachable = view
        .members
        .iter()
        .filter(|m| m.state == State::Alive)
        .count();
    reachable * 2 < known
}

/// Alive candidate owners of `key`, best first: highest SHA-256 of (key, name) wins, so
/// every agent with the same view picks the same owner, and a departure only moves the
/// events it owned.
pub fn rank(key: &str, subject: &str, owner_tags: &Tags, view: View) -> Vec<String> {
    let mut scored: Vec<([u8; 8], &str)> = view
        .members
        .iter()
        .filter(|m| {
            m.state == State::Alive
                && m.name != subject
                && owner_tags
                    .iter()
                    .all(|(k, v)| m.tags.get(k).is_some_and(|t| t == v))
        })
        .map(|m| {
            let digest = Sha256::digest(format!("{key}\0{}", m.name).as_bytes());
            let mut score = [0u8; 8];
            score.copy_from_slice(&digest[..8]);
            (score, m.name.as_str())
        })
        .collect();
    scored.sort_by(|a, b| b.cmp(a));
    scored.into_iter().map(|(_, n)| n.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::payload::PayloadMember;
    use crate::hooks::spec::HookSpec;

    fn hook(extra: &str) -> Hook {
        let text = format!(
            "name = \"lb\"\nkind = \"exec\"\nevents = [\"member.failed\", \"member.recovered\"]\ncommand = [\"/bin/true\"]\n{extra}"
        );
        toml::from_str::<HookSpec>(&text)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn event(kind: &str, member: &str, incarnation: u64) -> HookEvent {
        HookEvent::new(
            kind,
            0.0,
            "c",
            PayloadMember::sample(member, incarnation),
            None,
            "me",
        )
    }

    fn members(states: &[(&str, State)]) -> Vec<Brief> {
        states
            .iter()
            .map(|(n, s)| Brief {
                name: n.to_string(),
                state: *s,
                tags: Tags::new(),
            })
            .collect()
    }

    fn delivered(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Deliver { event, .. } => Some(event.kind.as_str()),
                _ => None,
            })
            .collect()
    }

    fn reasons(actions: &[Action]) -> Vec<&'static str> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Suppressed { reason, .. } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_member_in_maintenance_is_never_failed_over_nor_put_back_until_ready() {
        let spec = "events = [\"member.failed\", \"member.recovered\", \"member.joined\", \"member.maintenance\", \"member.ready\"]";
        let text = format!(
            "name = \"lb\"\nkind = \"exec\"\n{spec}\ncommand = [\"/bin/true\"]\nhold_down = \"0s\""
        );
        let hook = toml::from_str::<HookSpec>(&text)
            .unwrap()
            .validate()
            .unwrap();
        let mut p = Policy::new(Arc::new(vec![hook]));
        let t0 = Instant::now();
        let all_alive = members(&[
            ("me", State::Alive),
            ("a", State::Alive),
            ("b", State::Alive),
        ]);
        let a_failed = members(&[
            ("me", State::Alive),
            ("a", State::Failed),
            ("b", State::Alive),
        ]);
        let view = |m| View {
            me: "me",
            members: m,
        };
        let maintained = |kind: &str, incarnation| {
            let mut e = event(kind, "a", incarnation);
            e.data.member.health = crate::model::Health::Maintenance;
            e.data.member.maintenance = Some("disk swap".into());
            e
        };
        // Drained on purpose: delivered (the hook drains it).
        let on = p.on_event(t0, &maintained("member.maintenance", 2), view(&all_alive));
        assert_eq!(delivered(&on), ["member.maintenance"]);
        // Killed while drained: no failover; restarted, still in maintenance: not put back.
        let failed = p.on_event(t0, &maintained("member.failed", 2), view(&a_failed));
        let back = p.on_event(t0, &maintained("member.recovered", 3), view(&all_alive));
        assert!(delivered(&failed).is_empty() && delivered(&back).is_empty());
        assert_eq!(reasons(&failed), ["in_maintenance"]);
        assert_eq!(reasons(&back), ["in_maintenance"]);
        // `maint off`: back in rotation.
        let ready = p.on_event(t0, &event("member.ready", "a", 4), view(&all_alive));
        assert_eq!(delivered(&ready), ["member.ready"]);
        // And a failure after that fails over as any other.
        let failed = p.on_event(t0, &event("member.failed", "a", 4), view(&a_failed));
        assert_eq!(delivered(&failed), ["member.failed"]);
    }

    #[test]
    fn flapping_member_fails_over_once_per_hold_down() {
        let mut p = Policy::new(Arc::new(vec![hook("hold_down = \"10s\"")]));
        let t0 = Instant::now();
        let up = members(&[
            ("me", State::Alive),
            ("a", State::Alive),
            ("b", State::Alive),
            ("c", State::Alive),
        ]);
        let down = members(&[
            ("me", State::Alive),
            ("a", State::Failed),
            ("b", State::Alive),
            ("c", State::Alive),
        ]);
        let view = |m| View {
            me: "me",
            members: m,
        };
        let mut all = Vec::new();
        // Fails and recovers every 2 s for 8 s: one failover, no recovery delivered yet.
        for i in 0..4u64 {
            let t = t0 + Duration::from_secs(i * 2);
            all.extend(p.on_event(t, &event("member.failed", "a", i * 2), view(&down)));
            all.extend(p.on_event(
                t + Duration::from_secs(1),
                &event("member.recovered", "a", i * 2 + 1),
                view(&up),
            ));
            all.extend(p.poll(t + Duration::from_secs(1), view(&up)));
        }
        assert_eq!(delivered(&all), vec!["member.failed"]);
        assert!(reasons(&all).contains(&"already_out"));
        // Stable from t0+7 s: the recovery is held, with flap damping, for flap_hold_down.
        let released = p.poll(t0 + Duration::from_secs(30), view(&up));
        assert!(
            delivered(&released).is_empty(),
            "flapping: held for flap_hold_down"
        );
        let released = p.poll(t0 + Duration::from_secs(7 + 120), view(&up));
        assert_eq!(delivered(&released), vec!["member.recovered"]);
    }

    #[test]
    fn a_single_recovery_waits_for_hold_down_then_goes_out() {
        let mut p = Policy::new(Arc::new(vec![hook("hold_down = \"10s\"")]));
        let t0 = Instant::now();
        let up = members(&[
            ("me", State::Alive),
            ("a", State::Alive),
            ("b", State::Alive),
        ]);
        let v = View {
            me: "me",
            members: &up,
        };
        assert_eq!(
            delivered(&p.on_event(t0, &event("member.failed", "a", 1), v)),
            vec!["member.failed"]
        );
        assert!(
            p.on_event(
                t0 + Duration::from_secs(1),
                &event("member.recovered", "a", 2),
                v
            )
            .is_empty()
        );
        assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(11)));
        assert!(p.poll(t0 + Duration::from_secs(10), v).is_empty());
        assert_eq!(
            delivered(&p.poll(t0 + Duration::from_secs(11), v)),
            vec!["member.recovered"]
        );
    }

    #[test]
    fn never_fails_out_more_than_the_fraction() {
        let mut p = Policy::new(Arc::new(vec![hook("max_failed_fraction = 0.5")]));
        let t0 = Instant::now();
        let m = members(&[
            ("me", State::Alive),
            ("a", State::Failed),
            ("b", State::Failed),
            ("c", State::Failed),
        ]);
        let v = View {
            me: "me",
            members: &m,
        };
        let mut all = Vec::new();
        for name in ["a", "b", "c"] {
            all.extend(p.on_event(t0, &event("member.failed", name, 1), v));
        }
        assert_eq!(delivered(&all).len(), 2, "2 of 4 matching members at most");
        assert_eq!(reasons(&all), vec!["max_failed_fraction"]);
    }

    #[test]
    fn cluster_hook_has_exactly_one_owner_and_a_takeover() {
        let h = hook("scope = \"cluster\"\nsettle = \"0s\"");
        let names = ["n1", "n2", "n3", "n4"];
        let view_states: Vec<(&str, State)> = names
            .iter()
            .map(|&n| {
                (
                    n,
                    if n == "n4" {
                        State::Failed
                    } else {
                        State::Alive
                    },
                )
            })
            .collect();
        let m = members(&view_states);
        let e = event("member.failed", "n4", 1);
        let t0 = Instant::now();
        let mut policies: Vec<Policy> = (0..3)
            .map(|_| Policy::new(Arc::new(vec![h.clone()])))
            .collect();
        let mut owners = Vec::new();
        for (i, p) in policies.iter_mut().enumerate() {
            let acts = p.on_event(
                t0,
                &e,
                View {
                    me: names[i],
                    members: &m,
                },
            );
            if !delivered(&acts).is_empty() {
                owners.push(i);
            }
        }
        assert_eq!(owners.len(), 1, "exactly one owner");
        let owner = owners[0];
        // The owner dies before confirming: the next in rank takes over, once.
        let mut after: Vec<(&str, State)> = view_states.clone();
        after[owner].1 = State::Failed;
        let m2 = members(&after);
        let mut takeovers = 0;
        for (i, p) in policies.iter_mut().enumerate() {
            if i == owner {
                continue;
            }
            takeovers += delivered(&p.poll(
                t0,
                View {
                    me: names[i],
                    members: &m2,
                },
            ))
            .len();
        }
        assert_eq!(takeovers, 1);
        // A confirmation clears standbys.
        let mut p = Policy::new(Arc::new(vec![h]));
        let non_owner = (0..3).find(|&i| i != owner).unwrap();
        p.on_event(
            t0,
            &e,
            View {
                me: names[non_owner],
                members: &m,
            },
        );
        let rank_list = rank(
            &format!("lb/{}", e.data.id),
            "n4",
            &Tags::new(),
            View {
                me: "",
                members: &m,
            },
        );
        if rank_list
            .iter()
            .position(|n| n == names[non_owner])
            .unwrap()
            > 0
        {
            assert_eq!(p.standby_len(), 1);
            // A note in the name of a member ranked after us (or anyone else) is no
            // confirmation; one from the owner is.
            let key = format!("lb/{}", e.data.id);
            let behind = rank_list.last().expect("ranked");
            if behind != names[non_owner] {
                p.on_note(&key, behind);
                assert_eq!(p.standby_len(), 1);
            }
            p.on_note(&key, "a-stranger");
            assert_eq!(p.standby_len(), 1);
            p.on_note(&key, &rank_list[0]);
            assert_eq!(p.standby_len(), 0);
        }
    }

    #[test]
    fn minority_side_delivers_no_cluster_hook() {
        let mut p = Policy::new(Arc::new(vec![hook("scope = \"cluster\"")]));
        let t0 = Instant::now();
        // Cut off from three of four: the first failure is seen while the others are suspect.
        let first = members(&[
            ("me", State::Alive),
            ("a", State::Failed),
            ("b", State::Suspect),
            ("c", State::Suspect),
        ]);
        let view = View {
            me: "me",
            members: &first,
        };
        let acts = p.on_event(t0, &event("member.failed", "a", 1), view);
        assert!(acts.is_empty(), "held for settle");
        let acts = p.poll(t0 + Duration::from_secs(1), view);
        assert_eq!(reasons(&acts), vec!["minority"]);
        assert!(delivered(&acts).is_empty());
    }

    #[test]
    fn a_cluster_delivery_waits_for_settle_then_goes_out_on_the_majority_side() {
        let t0 = Instant::now();
        let m = members(&[
            ("me", State::Alive),
            ("a", State::Failed),
            ("b", State::Alive),
        ]);
        // Two candidates (me, b): whichever owns it, exactly one of them delivers.
        let mut deliveries = 0;
        for me in ["me", "b"] {
            let mut p = Policy::new(Arc::new(vec![hook("scope = \"cluster\"\nsettle = \"1s\"")]));
            let view = View { me, members: &m };
            assert!(
                p.on_event(t0, &event("member.failed", "a", 1), view)
                    .is_empty()
            );
            assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(1)));
            assert!(p.poll(t0, view).is_empty());
            deliveries += delivered(&p.poll(t0 + Duration::from_secs(1), view)).len();
        }
        assert_eq!(deliveries, 1);
    }

    #[test]
    fn local_hooks_ignore_ownership() {
        let mut p = Policy::new(Arc::new(vec![hook("max_failed_fraction = 1.0")]));
        let m = members(&[("me", State::Alive), ("a", State::Failed)]);
        let acts = p.on_event(
            Instant::now(),
            &event("member.failed", "a", 1),
            View {
                me: "me",
                members: &m,
            },
        );
        assert_eq!(delivered(&acts), vec!["member.failed"]);
    }
}
