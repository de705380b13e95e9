//! Rule-by-rule tests of one core, driven by hand with packets and time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::swim::{MAX_INCARNATION_STEP, MAX_REFUTATIONS_PER_SEC};
use super::*;
use crate::wire::{self, ClusterId, Message, Packet, Ping, PingReq, Update, WireAddr};

const CLUSTER: ClusterId = ClusterId(1);

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 7946))
}

fn info(i: u8) -> Arc<MemberInfo> {
    Arc::new(MemberInfo::new(
        NodeName::new(&format!("n{i}")),
        addr(i),
        Tags::new(),
    ))
}

/// Member `n0` knowing `n1..=peers` alive at incarnation 0.
fn core(peers: u8, now: Instant) -> Swim {
    core_with(peers, Config::default(), now)
}

/// [`core`] with settings of its own.
fn core_with(peers: u8, config: Config, now: Instant) -> Swim {
    core_where(peers, config, now, |_| State::Alive)
}

/// [`core_with`], member `nI` in state `state(I)`.
fn core_where(peers: u8, config: Config, now: Instant, state: impl Fn(u8) -> State) -> Swim {
    let identity = Identity {
        name: NodeName::new("n0"),
        addr: addr(0),
        cluster: CLUSTER,
        tags: Tags::new(),
        incarnation: Incarnation(0),
    };
    let mut swim = Swim::new(identity, config, 42, now);
    swim.restore(
        now,
        (1..=peers).map(|i| KnownMember::new(info(i), Incarnation(0), state(i))),
    );
    drain(&mut swim);
    swim
}

/// A state function for [`core_where`]: `nI` failed, every other member alive.
fn failed_is(failed: u8) -> impl Fn(u8) -> State {
    move |i| {
        if i == failed {
            State::Failed
        } else {
            State::Alive
        }
    }
}

fn drain(swim: &mut Swim) -> Vec<(Transmit, Packet)> {
    let mut out = Vec::new();
    while let Some(t) = swim.poll_transmit() {
        let packet = wire::decode(CLUSTER, &t.payload, wire::MAX_STREAM_LEN)
            .expect("core emits valid packets");
        out.push((t, packet));
    }
    out
}

fn events(swim: &mut Swim) -> Vec<Event> {
    std::iter::from_fn(|| swim.poll_event()).collect()
}

fn packet(from: u8, message: Message, updates: Vec<Update>) -> Packet {
    Packet {
        from: NodeName::new(&format!("n{from}")),
        message,
        updates,
        notes: Vec::new(),
    }
}

/// `update` with the proof its maker's keyring (the model's) would give it: the member's
/// own for its `alive` or `left`, the accuser's for an accusation.
fn signed(mut update: Update) -> Update {
    let statement = wire::statement(CLUSTER, &update);
    let maker = match update.state {
        State::Suspect | State::Failed => &update.from,
        State::Alive | State::Left => &update.name,
    };
    update.proof = Some(wire::Blob::from(ModelKeyring::proof(maker, &statement)));
    update
}

fn claim(about: &str, incarnation: u64, state: State, from: &str) -> Update {
    Update {
        name: NodeName::new(about),
        incarnation: Incarnation(incarnation),
        state,
        from: NodeName::new(from),
        ..Update::default()
    }
}

/// Runs the core's timers up to `until`, collecting what it sent.
fn run_until(swim: &mut Swim, until: Instant) -> Vec<(Transmit, Packet)> {
    let mut sent = Vec::new();
    while let Some(at) = swim.poll_timeout().filter(|&at| at <= until) {
        swim.handle_timeout(at);
        sent.extend(drain(swim));
    }
    sent
}

#[test]
fn ping_is_answered_with_an_ack_to_the_sender() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let ping = Message::Ping(Ping {
        seq: 9,
        target: NodeName::new("n0"),
    });
    swim.handle_packet(now, addr(2), packet(2, ping, vec![]));
    let sent = drain(&mut swim);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.to, addr(2));
    assert_eq!(sent[0].1.message, Message::Ack(wire::Ack { seq: 9 }));
}

#[test]
fn ping_for_another_member_is_not_answered() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let ping = Message::Ping(Ping {
        seq: 9,
        target: NodeName::new("someone-else"),
    });
    swim.handle_packet(now, addr(2), packet(2, ping, vec![]));
    assert!(drain(&mut swim).is_empty());
    assert_eq!(swim.stats().stray_packets, 1);
}

#[test]
fn unanswered_probe_goes_indirect_then_suspects_the_target() {
    let now = Instant::now();
    let mut swim = core(5, now);
    let sent = run_until(&mut swim, now + Duration::from_secs(1));
    let (target, seq) = sent
        .iter()
        .find_map(|(_, p)| match &p.message {
            Message::Ping(ping) => Some((ping.target.clone(), ping.seq)),
            _ => None,
        })
        .expect("a probe within one interval");
    let sent = run_until(&mut swim, now + Duration::from_millis(1600));
    let reqs: Vec<&PingReq> = sent
        .iter()
        .filter_map(|(_, p)| match &p.message {
            Message::PingReq(r) if r.seq == seq => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(
        reqs.len(),
        3,
        "indirect_checks ping-reqs after the probe timeout"
    );
    assert!(reqs.iter().all(|r| r.target == target));
    run_until(&mut swim, now + Duration::from_millis(2600));
    // Probes follow the wall clock's slots: the next one may have failed by now too.
    let suspected: Vec<_> = events(&mut swim)
        .into_iter()
        .filter(|e| e.kind == EventKind::Suspect && e.member.info.name == target)
        .collect();
    assert_eq!(suspected.len(), 1);
}

#[test]
fn relay_forwards_the_ack_or_answers_nack() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let req = |seq| {
        Message::PingReq(PingReq {
            seq,
            target: NodeName::new("n3"),
            addr: WireAddr(addr(3)),
        })
    };
    swim.handle_packet(now, addr(1), packet(1, req(77), vec![]));
    let sent = drain(&mut swim);
    let relay_seq = match &sent[0].1.message {
        Message::Ping(p) if sent[0].0.to == addr(3) => p.seq,
        other => panic!("expected a ping to n3, got {other:?}"),
    };
    swim.handle_packet(
        now,
        addr(3),
        packet(3, Message::Ack(wire::Ack { seq: relay_seq }), vec![]),
    );
    let sent = drain(&mut swim);
    assert_eq!(
        (sent[0].0.to, &sent[0].1.message),
        (addr(1), &Message::Ack(wire::Ack { seq: 77 }))
    );
    // A second request the target never answers: a nack after the probe timeout.
    swim.handle_packet(now, addr(1), packet(1, req(78), vec![]));
    drain(&mut swim);
    let sent = run_until(&mut swim, now + Duration::from_millis(600));
    assert!(
        sent.iter()
            .any(|(t, p)| t.to == addr(1) && p.message == Message::Nack(wire::Nack { seq: 78 }))
    );
}

#[test]
fn suspicion_of_ourselves_is_refuted_with_a_higher_incarnation() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim("n0", 0, State::Suspect, "n1")],
        ),
    );
    assert_eq!(swim.incarnation(), Incarnation(1));
    assert_eq!(swim.stats().refutations, 1);
    // The accuser is told directly, with our new incarnation first in the packet.
    let sent = drain(&mut swim);
    let told = sent
        .iter()
        .find(|(t, _)| t.to == addr(1))
        .expect("refutation sent to the accuser");
    assert_eq!(told.1.updates[0].name.as_str(), "n0");
    assert_eq!(
        (told.1.updates[0].state, told.1.updates[0].incarnation),
        (State::Alive, Incarnation(1))
    );
}

#[test]
fn stale_suspicion_of_ourselves_is_not_refuted_again() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim("n0", 0, State::Suspect, "n1")],
        ),
    );
    swim.handle_packet(
        now,
        addr(2),
        packet(
            2,
            Message::Gossip,
            vec![claim("n0", 0, State::Suspect, "n1")],
        ),
    );
    assert_eq!(swim.incarnation(), Incarnation(1));
}

#[test]
fn alive_claim_overrides_suspicion_only_with_a_higher_incarnation() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim("n2", 0, State::Suspect, "n1")],
        ),
    );
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Suspect));
    let alive = |inc| Update {
        name: NodeName::new("n2"),
        incarnation: Incarnation(inc),
        addr: Some(WireAddr(addr(2))),
        tags: Some(Tags::new()),
        ..Update::default()
    };
    swim.handle_packet(now, addr(3), packet(3, Message::Gossip, vec![alive(0)]));
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Suspect));
    swim.handle_packet(now, addr(2), packet(2, Message::Gossip, vec![alive(1)]));
    assert_eq!(
        swim.member("n2").map(|m| (m.state, m.incarnation)),
        Some((State::Alive, Incarnation(1)))
    );
}

#[test]
fn suspicion_times_out_to_failed() {
    let now = Instant::now();
    let mut swim = core(10, now);
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim("n2", 0, State::Suspect, "n1")],
        ),
    );
    let (min, max) = swim.config().suspicion_bounds(11);
    run_until(&mut swim, now + min);
    assert_eq!(
        swim.member("n2").map(|m| m.state),
        Some(State::Suspect),
        "no confirmations: not yet"
    );
    run_until(&mut swim, now + max + Duration::from_millis(1));
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Failed));
}

#[test]
fn confirmations_shorten_the_suspicion_to_its_minimum() {
    let now = Instant::now();
    let mut swim = core(10, now);
    // n1's own accusation, then n3's and n4's passed on by n1 with their proofs.
    for accuser in ["n1", "n3", "n4"] {
        swim.handle_packet(
            now,
            addr(1),
            packet(
                1,
                Message::Gossip,
                vec![signed(claim("n2", 0, State::Suspect, accuser))],
            ),
        );
    }
    let (min, _) = swim.config().suspicion_bounds(11);
    run_until(&mut swim, now + min + Duration::from_millis(1));
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Failed));
}

#[test]
fn a_confirmation_counts_only_from_an_accuser_that_proved_its_name() {
    let now = Instant::now();
    let mut swim = core(10, now);
    // n1 accuses n2 and names n3 and n4 as confirming it: unsigned, or signed by n1.
    let forged_by_n1 = |accuser: &str| {
        let update = claim("n2", 0, State::Suspect, accuser);
        let statement = wire::statement(CLUSTER, &update);
        let proof = ModelKeyring::proof(&NodeName::new("n1"), &statement);
        Update {
            proof: Some(wire::Blob::from(proof)),
            ..update
        }
    };
    let updates = vec![
        claim("n2", 0, State::Suspect, "n1"),
        claim("n2", 0, State::Suspect, "n3"),
        forged_by_n1("n4"),
    ];
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, updates));
    let (min, _) = swim.config().suspicion_bounds(11);
    run_until(&mut swim, now + min + Duration::from_millis(1));
    assert_eq!(
        swim.member("n2").map(|m| m.state),
        Some(State::Suspect),
        "one accuser, not three: the timeout is not shortened"
    );
    // Our own verdict goes out with our proof.
    let sent = run_until(&mut swim, now + Duration::from_secs(30));
    let ours = states_signed(&sent, |u| {
        u.name.as_str() == "n2" && u.from.as_str() == "n0"
    });
    assert!(ours.contains(&State::Failed));
}

/// The states of the updates `sent` that `which` selects, each checked to carry its
/// maker's proof.
fn states_signed(sent: &[(Transmit, Packet)], which: impl Fn(&Update) -> bool) -> Vec<State> {
    let selected = sent
        .iter()
        .flat_map(|(_, p)| p.updates.iter())
        .filter(|u| which(u));
    selected
        .map(|update| {
            assert_eq!(*update, signed(update.clone()), "{:?} signed", update.state);
            update.state
        })
        .collect()
}

#[test]
fn failed_verdict_about_an_alive_member_starts_our_own_check() {
    let now = Instant::now();
    let mut swim = core(10, now);
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim("n2", 0, State::Failed, "n1")],
        ),
    );
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Suspect));
    let sent = drain(&mut swim);
    let check = sent
        .iter()
        .find(|(t, p)| t.to == addr(2) && matches!(p.message, Message::Ping(_)))
        .expect("we probe it ourselves");
    // The ping carries the suspicion, so a live member can refute at once.
    assert_eq!(check.1.updates[0].state, State::Suspect);
}

#[test]
fn accusations_from_a_member_we_suspect_are_ignored() {
    let now = Instant::now();
    let mut swim = core(10, now);
    swim.handle_packet(
        now,
        addr(3),
        packet(
            3,
            Message::Gossip,
            vec![claim("n1", 0, State::Suspect, "n3")],
        ),
    );
    assert_eq!(swim.member("n1").map(|m| m.state), Some(State::Suspect));
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim("n2", 0, State::Suspect, "n1")],
        ),
    );
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Alive));
}

#[test]
fn left_is_not_failed_and_is_announced_with_a_new_incarnation() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![signed(claim("n2", 1, State::Left, ""))],
        ),
    );
    let evs = events(&mut swim);
    assert_eq!(evs.len(), 1);
    assert_eq!(
        (evs[0].kind, evs[0].previous),
        (EventKind::Left, Some(State::Alive))
    );
    swim.leave(now);
    assert_eq!(swim.incarnation(), Incarnation(1));
    let sent = run_until(&mut swim, now + Duration::from_secs(2));
    assert!(sent.iter().any(|(_, p)| {
        p.updates
            .iter()
            .any(|u| u.name.as_str() == "n0" && u.state == State::Left)
    }));
    assert!(swim.leave_done());
}

#[test]
fn a_leave_is_told_directly_to_up_to_leave_notify_members_and_still_gossiped() {
    let now = Instant::now();
    let tells = |leave_notify: usize| {
        let config = Config {
            leave_notify,
            ..Config::default()
        };
        let mut swim = core_with(5, config, now);
        swim.leave(now);
        let told: Vec<SocketAddr> = drain(&mut swim)
            .into_iter()
            .filter(|(_, p)| {
                p.updates
                    .iter()
                    .filter(|u| u.name.as_str() == "n0" && u.state == State::Left)
                    .count()
                    == 1
            })
            .map(|(t, _)| t.to)
            .collect();
        // Direct packets use up none of gossip's transmissions of the leave.
        assert!(!swim.leave_done());
        run_until(&mut swim, now + Duration::from_secs(2));
        assert!(swim.leave_done());
        told
    };
    let mut all = tells(32);
    all.sort();
    assert_eq!(all, (1..=5).map(addr).collect::<Vec<_>>());
    assert_eq!(tells(2).len(), 2);
    assert!(tells(0).is_empty());
}

#[test]
fn tags_are_size_limited_and_published_with_a_new_incarnation() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let big: Tags = [("k".to_string(), "v".repeat(600))].into();
    assert!(swim.set_tags(now, big).is_err());
    assert_eq!(swim.incarnation(), Incarnation(0));
    let small: Tags = [("role".to_string(), "web".to_string())].into();
    swim.set_tags(now, small.clone()).expect("small tags fit");
    assert_eq!(swim.incarnation(), Incarnation(1));
    assert_eq!(swim.member("n0").map(|m| m.info.tags.clone()), Some(small));
}

/// `(kind, health)` of the events about `name`.
fn health_events(swim: &mut Swim, name: &str) -> Vec<(EventKind, Health)> {
    events(swim)
        .into_iter()
        .filter(|e| e.member.info.name.as_str() == name)
        .map(|e| (e.kind, e.member.info.health()))
        .collect()
}

#[test]
fn maintenance_is_our_own_claim_published_with_a_new_incarnation_and_outranks_checks() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.set_maintenance(now, Some("disk swap".into()));
    assert_eq!(swim.incarnation(), Incarnation(1));
    assert_eq!(
        health_events(&mut swim, "n0"),
        [
            (EventKind::Updated, Health::Maintenance),
            (EventKind::Maintenance, Health::Maintenance)
        ]
    );
    let sent = run_until(&mut swim, now + Duration::from_secs(1));
    assert!(sent.iter().any(|(_, p)| p.updates.iter().any(|u| {
        u.name.as_str() == "n0"
            && u.state == State::Alive
            && u.maintenance.as_deref() == Some("disk swap")
    })));
    // Checks failing during maintenance change nothing the load balancer sees.
    swim.set_health(now, vec!["web".into()]);
    assert_eq!(
        health_events(&mut swim, "n0"),
        [(EventKind::Updated, Health::Maintenance)]
    );
    // Out of maintenance with a failing check: critical, not ready.
    swim.set_maintenance(now, None);
    assert_eq!(
        health_events(&mut swim, "n0"),
        [
            (EventKind::Updated, Health::Critical),
            (EventKind::Critical, Health::Critical)
        ]
    );
    swim.set_maintenance(now, Some(String::new()));
    swim.set_health(now, Vec::new());
    events(&mut swim);
    swim.set_maintenance(now, None);
    assert_eq!(
        health_events(&mut swim, "n0"),
        [
            (EventKind::Updated, Health::Passing),
            (EventKind::Ready, Health::Passing)
        ]
    );
    // Setting what is already set raises nothing.
    let before = swim.incarnation();
    swim.set_maintenance(now, None);
    assert_eq!(swim.incarnation(), before);
}

#[test]
fn a_member_in_maintenance_stays_in_it_through_failure_and_recovery_until_it_says_ready() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let alive = |incarnation, maintenance: Option<&str>| Update {
        name: NodeName::new("n1"),
        incarnation: Incarnation(incarnation),
        state: State::Alive,
        addr: Some(WireAddr(addr(1))),
        tags: Some(Tags::new()),
        failing: Some(Vec::new()),
        maintenance: maintenance.map(str::to_string),
        ..Update::default()
    };
    let later = now + Duration::from_secs(60);
    let hear = |swim: &mut Swim, update| {
        let at = swim.poll_timeout().map_or(now, |t| t.max(now)).min(later);
        swim.handle_packet(at, addr(1), packet(1, Message::Gossip, vec![update]));
    };
    hear(&mut swim, alive(1, Some("kernel")));
    assert_eq!(
        health_events(&mut swim, "n1"),
        [
            (EventKind::Updated, Health::Maintenance),
            (EventKind::Maintenance, Health::Maintenance)
        ]
    );
    // Accused, then failed when its suspicion runs out: the reason stays with it.
    hear(&mut swim, claim("n1", 1, State::Suspect, "n2"));
    run_until(&mut swim, later);
    let seen = health_events(&mut swim, "n1");
    assert_eq!(
        seen.last(),
        Some(&(EventKind::Failed, Health::Maintenance)),
        "{seen:?}"
    );
    // Restarted, still in maintenance (it kept it in its state directory).
    hear(&mut swim, alive(2, Some("kernel")));
    assert_eq!(
        health_events(&mut swim, "n1"),
        [(EventKind::Recovered, Health::Maintenance)]
    );
    let reason = swim.member("n1").and_then(|m| m.info.maintenance.clone());
    assert_eq!(reason.as_deref(), Some("kernel"));
    hear(&mut swim, alive(3, None));
    assert_eq!(
        health_events(&mut swim, "n1"),
        [
            (EventKind::Updated, Health::Passing),
            (EventKind::Ready, Health::Passing)
        ]
    );
    // A maintenance reason rides only on the member's alive claims.
    hear(
        &mut swim,
        Update {
            maintenance: Some("forged".into()),
            ..claim("n1", 4, State::Suspect, "n2")
        },
    );
    assert_eq!(
        swim.member("n1").and_then(|m| m.info.maintenance.clone()),
        None
    );
}

#[test]
fn our_alive_claims_name_our_release_and_wire_versions_and_receivers_keep_them() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.set_tags(now, Tags::new()).expect("tags");
    let sent = run_until(&mut swim, now + Duration::from_secs(1));
    let ours = sent
        .iter()
        .flat_map(|(_, p)| &p.updates)
        .find(|u| u.name.as_str() == "n0" && u.state == State::Alive)
        .expect("our alive claim is gossiped");
    assert_eq!(ours.software, Some(wire::Software::current()));
    // The same claim from n1 (a newer release), heard by a core that knows n1 at 0.
    let mut other = core(3, now);
    let mut claim = ours.clone();
    claim.name = NodeName::new("n1");
    claim.addr = Some(WireAddr(addr(1)));
    claim.incarnation = Incarnation(1);
    claim.software = Some(wire::Software {
        release: "9.9.9".into(),
        writes: 1,
        reads_from: 1,
        reads_to: 3,
    });
    other.handle_packet(now, addr(1), packet(1, Message::Gossip, vec![claim]));
    let seen = other.member("n1").and_then(|m| m.info.software.clone());
    assert_eq!(
        seen.map(|s| (s.release, s.reads_to)),
        Some(("9.9.9".into(), 3))
    );
}

#[test]
fn a_claim_an_older_agent_relayed_stripped_is_completed_by_the_member_or_a_newer_relay() {
    let now = Instant::now();
    let whole = |maintenance: Option<&str>, software: Option<wire::Software>| Update {
        name: NodeName::new("n1"),
        incarnation: Incarnation(1),
        state: State::Alive,
        addr: Some(WireAddr(addr(1))),
        tags: Some(Tags::new()),
        failing: Some(Vec::new()),
        maintenance: maintenance.map(str::to_string),
        software,
        ..Update::default()
    };
    let stripped = whole(None, None);
    let full = signed(whole(Some("upgrade"), Some(wire::Software::current())));
    // Older agents pass statements on unsigned: taken in a rolling upgrade only.
    let upgrading = || Config {
        accept_unsigned: true,
        ..Config::default()
    };
    for (relay, from) in [(2u8, "the member itself"), (3, "a newer relay")] {
        let mut swim = core_with(3, upgrading(), now);
        // n2 (an older agent) relays it first, without the fields it cannot read.
        swim.handle_packet(
            now,
            addr(2),
            packet(2, Message::Gossip, vec![stripped.clone()]),
        );
        let held = swim.member("n1").map(|m| m.info.health());
        assert_eq!(held, Some(Health::Passing));
        let sender = if relay == 2 { 1 } else { relay };
        swim.handle_packet(
            now,
            addr(sender),
            packet(sender, Message::Gossip, vec![full.clone()]),
        );
        let m = swim.member("n1").expect("n1");
        assert_eq!(
            (m.info.health(), m.info.software.is_some(), m.incarnation),
            (Health::Maintenance, true, Incarnation(1)),
            "completed by {from}"
        );
        // The same whole claim again changes nothing and is not gossiped again.
        events(&mut swim);
        swim.handle_packet(
            now,
            addr(sender),
            packet(sender, Message::Gossip, vec![full.clone()]),
        );
        assert!(events(&mut swim).is_empty());
    }
    // A relay cannot take details away from what the member itself said, nor alter them.
    let mut swim = core_with(3, upgrading(), now);
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, vec![full.clone()]));
    swim.handle_packet(now, addr(2), packet(2, Message::Gossip, vec![stripped]));
    let other = whole(Some("forged"), Some(wire::Software::current()));
    swim.handle_packet(now, addr(3), packet(3, Message::Gossip, vec![other]));
    let m = swim.member("n1").expect("n1");
    assert_eq!(m.info.maintenance.as_deref(), Some("upgrade"));
}

#[test]
fn an_older_agent_relaying_our_claim_without_maintenance_is_not_refuted() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.set_maintenance(now, Some("rack move".into()));
    let current = swim.incarnation();
    let me = swim.member("n0").expect("ourselves");
    let claim = |maintenance: Option<&str>| Update {
        name: NodeName::new("n0"),
        incarnation: current,
        state: State::Alive,
        addr: Some(WireAddr(me.info.addr)),
        tags: Some(me.info.tags.clone()),
        failing: Some(Vec::new()),
        maintenance: maintenance.map(str::to_string),
        ..Update::default()
    };
    // What a pre-maintenance agent re-encodes: everything but the field it does not know.
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, vec![claim(None)]));
    assert_eq!(
        swim.incarnation(),
        current,
        "no refutation storm in a mixed cluster"
    );
    let forged = claim(Some("not mine"));
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, vec![forged]));
    assert!(swim.incarnation() > current, "a different reason is outbid");
}

#[test]
fn force_leave_only_applies_to_failed_members() {
    let now = Instant::now();
    let mut swim = core(3, now);
    assert_eq!(
        swim.force_leave(now, "n1"),
        Err(ForceLeaveError::NotFailed {
            name: "n1".into(),
            state: State::Alive
        }),
        "alive members cannot be forced out"
    );
    assert_eq!(
        swim.force_leave(now, "n0"),
        Err(ForceLeaveError::NotFailed {
            name: "n0".into(),
            state: State::Alive
        }),
        "nor can we"
    );
    assert_eq!(
        swim.force_leave(now, "nobody"),
        Err(ForceLeaveError::Unknown("nobody".into()))
    );
    swim.handle_packet(
        now,
        addr(3),
        packet(
            3,
            Message::Gossip,
            vec![claim("n1", 0, State::Suspect, "n3")],
        ),
    );
    swim.handle_packet(
        now,
        addr(3),
        packet(
            3,
            Message::Gossip,
            vec![claim("n1", 0, State::Failed, "n3")],
        ),
    );
    run_until(&mut swim, now + Duration::from_secs(30));
    assert_eq!(swim.member("n1").map(|m| m.state), Some(State::Failed));
    assert_eq!(
        swim.force_leave(now + Duration::from_secs(30), "n1"),
        Ok(())
    );
    assert_eq!(swim.member("n1").map(|m| m.state), Some(State::Left));
}

#[test]
fn piggybacked_updates_respect_the_datagram_budget() {
    let now = Instant::now();
    let mut swim = core(200, now);
    // 200 joins to disseminate: far more than one datagram holds.
    for i in 0..200u32 {
        let joiner = Update {
            name: NodeName::new(&format!("joiner-{i:03}")),
            addr: Some(WireAddr(addr(250))),
            tags: Some(Tags::new()),
            ..Update::default()
        };
        swim.handle_packet(now, addr(1), packet(1, Message::Gossip, vec![joiner]));
    }
    let sent = run_until(&mut swim, now + Duration::from_secs(3));
    let datagrams: Vec<_> = sent
        .iter()
        .filter(|(t, _)| t.channel == Channel::Datagram)
        .collect();
    assert!(!datagrams.is_empty());
    for (t, p) in datagrams {
        assert!(
            t.payload.len() <= swim.config().datagram_budget,
            "{} bytes",
            t.payload.len()
        );
        assert!(p.updates.len() < 200);
    }
}

#[test]
fn each_update_is_sent_a_bounded_number_of_times() {
    let now = Instant::now();
    let mut swim = core(30, now);
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![signed(claim("n2", 1, State::Left, ""))],
        ),
    );
    let sent = run_until(&mut swim, now + Duration::from_secs(20));
    let copies = sent
        .iter()
        .filter(|(_, p)| p.updates.iter().any(|u| u.name.as_str() == "n2"))
        .count();
    assert_eq!(copies as u32, swim.config().retransmit_limit(30));
}

/// How many of `trials` fresh members, each knowing `members` others, probe a member at
/// once on hearing it is suspect.
fn fast_probers(members: u32, trials: u32) -> u32 {
    let now = Instant::now();
    let mut probing = 0;
    for t in 0..trials {
        let identity = Identity {
            name: NodeName::new(&format!("m{t}")),
            addr: addr(0),
            cluster: CLUSTER,
            tags: Tags::new(),
            incarnation: Incarnation(0),
        };
        let mut swim = Swim::new(identity, Config::default(), 1, now);
        let others = (0..members).map(|i| {
            let info = MemberInfo::new(NodeName::new(&format!("x{i}")), addr(1), Tags::new());
            KnownMember::new(Arc::new(info), Incarnation(0), State::Alive)
        });
        swim.restore(now, others);
        drain(&mut swim);
        swim.handle_packet(
            now,
            addr(1),
            packet(
                1,
                Message::Gossip,
                vec![claim("x7", 0, State::Suspect, "x1")],
            ),
        );
        let pinged = drain(&mut swim).iter().any(
            |(_, p)| matches!(&p.message, Message::Ping(ping) if ping.target.as_str() == "x7"),
        );
        probing += u32::from(pinged);
    }
    probing
}

#[test]
fn fast_confirmation_selects_about_a_constant_number_of_members() {
    // 1,000 members: each is selected with probability 3/999, so ~0.9 of 300.
    assert!(fast_probers(1000, 300) <= 5);
    // 10 members: probability 3/9, so ~100 of 300.
    let small = fast_probers(10, 300);
    assert!((60..=140).contains(&small), "{small} of 300");
}

#[test]
fn config_rejects_inconsistent_values_with_the_key_and_fix() {
    let config = Config {
        probe_timeout: Duration::from_secs(2),
        ..Config::default()
    };
    let err = config.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "gossip.probe_timeout: (2s) must be above zero and shorter than gossip.probe_interval (1s)"
    );
    let config = Config {
        datagram_budget: 100,
        ..Config::default()
    };
    assert!(
        config
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("gossip.datagram_budget")
    );
    assert!(Config::default().validate().is_ok());
    assert!(Profile::Memberlist.config().validate().is_ok());
}

#[test]
fn config_set_parses_durations_numbers_and_booleans() {
    let mut config = Config::default();
    config.set("probe_interval", "800ms").unwrap();
    config.set("indirect_checks", "5").unwrap();
    config.set("ring_probes", "false").unwrap();
    config.set("suspicion_mult", "2.5").unwrap();
    assert_eq!(config.probe_interval, Duration::from_millis(800));
    assert_eq!(config.indirect_checks, 5);
    assert!(!config.ring_probes);
    assert_eq!(config.suspicion_mult, 2.5);
    assert!(config.set("no_such_key", "1").is_err());
    assert!(config.set("probe_interval", "soon").is_err());
}

#[test]
fn suspicion_bounds_and_retransmit_limit_scale_with_log_n() {
    let config = Config::default();
    assert_eq!(
        config.suspicion_bounds(50).0,
        Duration::from_millis(2500),
        "the floor"
    );
    assert_eq!(config.suspicion_bounds(10_000).0, Duration::from_secs(5));
    assert_eq!(config.suspicion_bounds(10_000).1, Duration::from_secs(30));
    assert_eq!(config.retransmit_limit(50), 8);
    assert_eq!(config.retransmit_limit(10_000), 20);
    let memberlist = Profile::Memberlist.config();
    assert_eq!(memberlist.suspicion_bounds(100).0, Duration::from_secs(8));
}

#[test]
fn restoring_a_name_twice_keeps_one_entry() {
    let now = Instant::now();
    let mut swim = core(2, now);
    swim.restore(
        now,
        [
            KnownMember::new(info(7), Incarnation(3), State::Alive),
            KnownMember::new(info(7), Incarnation(9), State::Failed),
        ],
    );
    let sevens: Vec<_> = swim
        .members()
        .filter(|m| m.info.name.as_str() == "n7")
        .collect();
    assert_eq!(sevens.len(), 1);
    assert_eq!(
        (sevens[0].incarnation, sevens[0].state),
        (Incarnation(3), State::Alive)
    );
    assert_eq!(swim.count(State::Alive), 4);
    assert_eq!(swim.count(State::Failed), 0);
}

#[test]
fn a_suspicion_relayed_by_push_pull_names_its_accuser_and_is_no_confirmation() {
    let now = Instant::now();
    let mut swim = core(10, now);
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim("n2", 0, State::Suspect, "n1")],
        ),
    );
    let mut first = drain(&mut swim);
    // Two peers pass the suspicion on in push-pulls without naming the accuser (as agents
    // before this rule did): neither becomes a second accuser.
    for peer in [3, 4] {
        let sync = Message::PushPull(wire::PushPull {
            members: vec![claim("n2", 0, State::Suspect, "")],
            ..wire::PushPull::default()
        });
        swim.handle_packet(now, addr(peer), packet(peer, sync, vec![]));
    }
    // Our own push-pull names the first accuser.
    let sent = drain(&mut swim);
    first.extend(sent.iter().cloned());
    let described = sent
        .iter()
        .filter_map(|(_, p)| match &p.message {
            Message::PushPull(pp) => pp.members.iter().find(|u| u.name.as_str() == "n2"),
            _ => None,
        })
        .next()
        .expect("a push-pull answer describing n2");
    assert_eq!(described.from.as_str(), "n1");
    let (min, max) = swim.config().suspicion_bounds(11);
    // n2 answers every ping (so our own probes confirm nothing) but never refutes.
    let until = now + min.max(max / 2);
    let mut pending = first;
    let mut at = now;
    loop {
        for (t, p) in pending {
            if let (true, Message::Ping(ping)) = (t.to == addr(2), &p.message) {
                let ack = Message::Ack(wire::Ack { seq: ping.seq });
                swim.handle_packet(at, addr(2), packet(2, ack, vec![]));
            }
        }
        let Some(next) = swim.poll_timeout().filter(|&t| t <= until) else {
            break;
        };
        at = next;
        swim.handle_timeout(at);
        pending = drain(&mut swim);
    }
    assert_eq!(
        swim.member("n2").map(|m| m.state),
        Some(State::Suspect),
        "one accusation relayed three ways is still one"
    );
}

/// Cores named `c{i}` that know `n1..=peers` and suspect `n2` on `n1`'s word; how many of
/// them probed `n2` themselves in a way that could confirm the suspicion, by `until`.
fn confirming_probers(cores: u32, peers: u8, until: Duration) -> usize {
    let now = Instant::now();
    let mut probers = 0;
    for i in 0..cores {
        let identity = Identity {
            name: NodeName::new(&format!("c{i}")),
            addr: SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 7946)),
            cluster: CLUSTER,
            tags: Tags::new(),
            incarnation: Incarnation(0),
        };
        let mut swim = Swim::new(identity, Config::default(), u64::from(i), now);
        swim.restore(
            now,
            (1..=peers).map(|p| KnownMember::new(info(p), Incarnation(0), State::Alive)),
        );
        swim.set_trace(true);
        swim.handle_packet(
            now,
            addr(1),
            packet(
                1,
                Message::Gossip,
                vec![claim("n2", 0, State::Suspect, "n1")],
            ),
        );
        // Nothing answers: every probe of n2 fails.
        run_until(&mut swim, now + until);
        let probed = std::iter::from_fn(|| swim.poll_trace())
            .any(|e| e.subject.as_str() == "n2" && matches!(e.step, Step::ProbeFailed { .. }));
        probers += usize::from(probed);
    }
    probers
}

#[test]
fn only_a_few_suspecting_members_probe_a_suspect_to_confirm_it() {
    // 300 members of a 101-member cluster hear one accusation. Fast confirmation and each
    // halfway check pick about `fast_confirm_probes` (3) of the 99 others by hash; the
    // rest only verify (a ping whose loss accuses nobody). Were all 300 to probe, the ~3%
    // of probes that fail by chance at 15% loss would confirm a healthy member.
    let (min, _) = Config::default().suspicion_bounds(101);
    let until = min / 2 + Config::default().probe_interval + Duration::from_millis(10);
    let probers = confirming_probers(300, 100, until);
    // Expected ~18 (two rounds, 3/99 each); all 300 before the rule.
    assert!(
        (4..=40).contains(&probers),
        "{probers} of 300 suspecting members probed to confirm"
    );
}

/// Acks the first `acks` pings among `sent` (as their targets would).
fn ack_pings(swim: &mut Swim, at: Instant, sent: &[(Transmit, Packet)], acks: usize) {
    let pings = sent.iter().filter_map(|(t, p)| match &p.message {
        Message::Ping(ping) => Some((t.to, ping.seq)),
        _ => None,
    });
    for (to, seq) in pings.take(acks) {
        let from = to.ip().to_string();
        let octet: u8 = from
            .rsplit('.')
            .next()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0);
        let ack = Message::Ack(wire::Ack { seq });
        swim.handle_packet(at, to, packet(octet, ack, vec![]));
    }
}

#[test]
fn an_accused_member_whose_probes_failed_refutes_once_most_of_a_link_check_answers() {
    let now = Instant::now();
    let mut swim = core(40, now);
    // Our first probe gets no answer and no nack: our own links are in doubt.
    let probe_failed = now + Duration::from_secs(3);
    run_until(&mut swim, probe_failed);
    assert!(swim.health_score() > 0);
    let accused = Incarnation(0);
    swim.handle_packet(
        probe_failed,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim("n0", 0, State::Suspect, "n1")],
        ),
    );
    let first = drain(&mut swim);
    let (sent, at) = link_check_pings(&mut swim, probe_failed, first);
    assert_eq!(
        swim.incarnation(),
        accused,
        "no refutation before the check"
    );
    // 14 answers (44%, what 80% outbound loss gives now and then): not enough.
    ack_pings(&mut swim, at, &sent, 14);
    assert_eq!(swim.incarnation(), accused);
    // The next check (after a short backoff) gets 15: our links work, refute.
    let retry = at + Duration::from_secs(2);
    let mut next = Vec::new();
    while let Some(at) = swim.poll_timeout().filter(|&at| at <= retry) {
        swim.handle_timeout(at);
        let batch = drain(&mut swim);
        if batch
            .iter()
            .any(|(_, p)| matches!(p.message, Message::Ping(_)))
        {
            let (all, at) = link_check_pings(&mut swim, at, batch);
            next = all;
            ack_pings(&mut swim, at, &next, 15);
            break;
        }
    }
    assert!(!next.is_empty(), "a second link check within 2 s");
    assert!(swim.incarnation() > accused, "15 of 32 answers refute");
}

/// The pings of a link check that started at `at` with `sent` (the first round): its rounds,
/// 5 ms apart, each pinging every target once, so that no two pings to one member leave
/// in one packet. Returns them and the time of the last round.
fn link_check_pings(
    swim: &mut Swim,
    at: Instant,
    mut sent: Vec<(Transmit, Packet)>,
) -> (Vec<(Transmit, Packet)>, Instant) {
    let mut last = at;
    let pings = |batch: &[(Transmit, Packet)]| -> Vec<SocketAddr> {
        batch
            .iter()
            .filter(|(_, p)| matches!(p.message, Message::Ping(_)))
            .map(|(t, _)| t.to)
            .collect()
    };
    while let Some(next) = swim
        .poll_timeout()
        .filter(|&t| t <= at + Duration::from_millis(200))
    {
        swim.handle_timeout(next);
        let batch = drain(swim);
        let mut to = pings(&batch);
        let n = to.len();
        to.sort();
        to.dedup();
        assert_eq!(to.len(), n, "two pings to one member in one round: {to:?}");
        if n > 0 {
            last = next;
        }
        sent.extend(batch);
    }
    assert!(
        pings(&sent).len() >= 32,
        "a link check pings 32 times within 200 ms, not {}",
        pings(&sent).len()
    );
    (sent, last)
}

#[test]
fn on_the_overlay_a_member_probes_only_the_members_it_watches() {
    let now = Instant::now();
    let mut swim = core(40, now);
    // Everyone answers, so the overlay stays as it is.
    let mut sent = Vec::new();
    while let Some(at) = swim
        .poll_timeout()
        .filter(|&at| at <= now + Duration::from_secs(30))
    {
        swim.handle_timeout(at);
        let out = drain(&mut swim);
        for (t, p) in &out {
            if let Message::Ping(ping) = &p.message {
                let octet =
                    t.to.ip()
                        .to_string()
                        .rsplit('.')
                        .next()
                        .and_then(|o| o.parse().ok());
                let ack = Message::Ack(wire::Ack { seq: ping.seq });
                swim.handle_packet(at, t.to, packet(octet.unwrap_or(0), ack, vec![]));
            }
        }
        sent.extend(out);
    }
    let mut probed: Vec<SocketAddr> = sent
        .iter()
        .filter(|(_, p)| matches!(p.message, Message::Ping(_)))
        .map(|(t, _)| t.to)
        .collect();
    probed.sort();
    probed.dedup();
    let observers = Config::default().observers;
    assert!(
        (1..=observers).contains(&probed.len()),
        "{} members probed in 30 s: {probed:?}",
        probed.len()
    );
}

#[test]
fn a_stale_accusation_is_answered_with_the_refutation() {
    let now = Instant::now();
    let mut swim = core(10, now);
    let refuted = Update {
        name: NodeName::new("n2"),
        incarnation: Incarnation(3),
        state: State::Alive,
        addr: Some(WireAddr(addr(2))),
        tags: Some(Tags::new()),
        ..Update::default()
    };
    swim.handle_packet(now, addr(2), packet(2, Message::Gossip, vec![refuted]));
    drain(&mut swim);
    // n5 missed the refutation and still gossips the suspicion it refuted.
    swim.handle_packet(
        now,
        addr(5),
        packet(
            5,
            Message::Gossip,
            vec![claim("n2", 2, State::Suspect, "n1")],
        ),
    );
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Alive));
    let sent = drain(&mut swim);
    let answer = sent
        .iter()
        .find(|(t, _)| t.to == addr(5))
        .expect("an answer to the member that missed the refutation");
    assert_eq!(answer.1.updates[0].name.as_str(), "n2");
    assert_eq!(answer.1.updates[0].incarnation, Incarnation(3));
    assert_eq!(answer.1.updates[0].state, State::Alive);
}

#[test]
fn a_member_not_watching_a_suspect_asks_a_neighbour_instead_of_dialling_it() {
    let now = Instant::now();
    // Find a suspect n0 does not watch.
    let swim = core(40, now);
    let watched: Vec<String> = swim
        .watched()
        .into_iter()
        .map(|m| m.info.name.to_string())
        .collect();
    let suspect = (1..=40u8)
        .find(|i| !watched.contains(&format!("n{i}")))
        .expect("n0 watches at most 4 of 40");
    let mut swim = core(40, now);
    let name = format!("n{suspect}");
    swim.handle_packet(
        now,
        addr(1),
        packet(
            1,
            Message::Gossip,
            vec![claim(&name, 0, State::Suspect, "n1")],
        ),
    );
    let (min, _) = swim.config().suspicion_bounds(41);
    let sent = run_until(&mut swim, now + min);
    assert!(
        !sent.iter().any(|(t, _)| t.to == addr(suspect)),
        "no packet to the suspect"
    );
    let neighbours: Vec<SocketAddr> = swim.neighbours().into_iter().map(|m| m.info.addr).collect();
    assert!(
        sent.iter().any(|(t, p)| neighbours.contains(&t.to)
            && p.updates.first().is_some_and(|u| u.name.as_str() == name)),
        "a neighbour was asked about {name}"
    );
}

#[test]
fn a_recovery_learnt_in_a_push_pull_is_passed_on() {
    let now = Instant::now();
    let mut swim = core_where(10, Config::default(), now, failed_is(2));
    // After a partition heals, a peer's push-pull says n2 refuted its failure.
    let back = signed(Update {
        name: NodeName::new("n2"),
        incarnation: Incarnation(1),
        state: State::Alive,
        addr: Some(WireAddr(addr(2))),
        tags: Some(Tags::new()),
        ..Update::default()
    });
    let sync = Message::PushPull(wire::PushPull {
        members: vec![back],
        ..wire::PushPull::default()
    });
    swim.handle_packet(now, addr(3), packet(3, sync, vec![]));
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Alive));
    let sent = run_until(&mut swim, now + Duration::from_secs(1));
    let gossiped = sent.iter().any(|(_, p)| {
        matches!(p.message, Message::Gossip)
            && p.updates
                .iter()
                .any(|u| u.name.as_str() == "n2" && u.state == State::Alive)
    });
    assert!(gossiped, "members on our side hear of the recovery too");
}

/// Push-pulls `swim` starts within `within` (after handling what is already queued).
fn push_pulls_within(swim: &mut Swim, from: Instant, within: Duration) -> usize {
    run_until(swim, from + within)
        .iter()
        .filter(|(_, p)| matches!(&p.message, Message::PushPull(pp) if !pp.reply))
        .count()
}

#[test]
fn a_sync_that_teaches_something_is_followed_by_another_until_one_teaches_nothing() {
    let now = Instant::now();
    let mut swim = core(10, now);
    let answer = |members: Vec<Update>| {
        Message::PushPull(wire::PushPull {
            reply: true,
            members,
            ..wire::PushPull::default()
        })
    };
    // An answer that agrees with us: nothing follows (the periodic sync is 30 s away).
    swim.handle_packet(now, addr(1), packet(1, answer(vec![]), vec![]));
    drain(&mut swim);
    assert_eq!(push_pulls_within(&mut swim, now, Duration::from_secs(2)), 0);
    // An answer with a member we did not know: another sync follows within a second.
    let t = now + Duration::from_secs(2);
    let stranger = signed(Update {
        name: NodeName::new("n42"),
        incarnation: Incarnation(0),
        state: State::Alive,
        addr: Some(WireAddr(addr(42))),
        tags: Some(Tags::new()),
        ..Update::default()
    });
    swim.handle_packet(t, addr(1), packet(1, answer(vec![stranger]), vec![]));
    drain(&mut swim);
    assert_eq!(push_pulls_within(&mut swim, t, Duration::from_secs(1)), 1);
}

// ----- insiders: a certified member's word about others ----------------------------------

/// The first ping `swim` sends within `until`, as (target, seq).
fn first_ping(swim: &mut Swim, until: Instant) -> (NodeName, u32) {
    run_until(swim, until)
        .iter()
        .find_map(|(_, p)| match &p.message {
            Message::Ping(ping) => Some((ping.target.clone(), ping.seq)),
            _ => None,
        })
        .expect("a probe within one interval")
}

fn name_index(name: &NodeName) -> u8 {
    name.as_str()[1..].parse().expect("test names are n<i>")
}

#[test]
fn forged_incarnations_are_taken_at_what_their_sender_may_claim() {
    let now = Instant::now();
    // Unsigned copies as in a rolling upgrade (the only time they are taken), so that the
    // bounds show; `statements_about_others_count_only_with_their_proof` has the rest.
    let config = Config {
        accept_unsigned: true,
        ..Config::default()
    };
    let mut swim = core_with(4, config, now);
    // n1 claims n2 failed and n3 left at the top incarnation, and n4 alive far ahead.
    let forged = vec![
        claim("n2", u64::MAX, State::Failed, "n1"),
        claim("n3", u64::MAX, State::Left, "n1"),
        Update {
            addr: Some(WireAddr(addr(99))),
            tags: Some(Tags::new()),
            ..claim("n4", u64::MAX, State::Alive, "")
        },
    ];
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, forged));
    assert_eq!(swim.stats().incarnations_bounded, 3);
    let held = |swim: &Swim, n: &str| {
        let m = swim.member(n).expect("known");
        (m.state, m.incarnation)
    };
    // An accusation refers at most to the incarnation we hold (a relayed leave to one
    // above): a verdict is only a suspicion for us, and each member can outbid it.
    assert_eq!(held(&swim, "n2"), (State::Suspect, Incarnation(0)));
    assert_eq!(held(&swim, "n3"), (State::Left, Incarnation(1)));
    assert_eq!(
        held(&swim, "n4"),
        (State::Alive, Incarnation(MAX_INCARNATION_STEP))
    );
    for (i, inc) in [(2, 1), (3, 2), (4, MAX_INCARNATION_STEP + 1)] {
        let own = Update {
            addr: Some(WireAddr(addr(i))),
            tags: Some(Tags::new()),
            ..claim(&format!("n{i}"), inc, State::Alive, "")
        };
        swim.handle_packet(now, addr(i), packet(i, Message::Gossip, vec![own]));
    }
    for n in ["n2", "n3", "n4"] {
        assert_eq!(held(&swim, n).0, State::Alive, "{n} outbid the forgery");
    }
    assert_eq!(swim.member("n4").map(|m| m.info.addr), Some(addr(4)));
    // Even a member at the very top is never stuck: our bound is relative to what we hold.
    let top = Update {
        addr: Some(WireAddr(addr(4))),
        tags: Some(Tags::new()),
        ..claim("n4", u64::MAX, State::Alive, "")
    };
    swim.handle_packet(now, addr(4), packet(4, Message::Gossip, vec![top]));
    assert_eq!(
        held(&swim, "n4"),
        (State::Alive, Incarnation(2 * MAX_INCARNATION_STEP + 1))
    );
}

fn alive_at(i: u8, incarnation: u64, at: SocketAddr) -> Update {
    Update {
        addr: Some(WireAddr(at)),
        tags: Some(Tags::new()),
        ..claim(&format!("n{i}"), incarnation, State::Alive, "")
    }
}

#[test]
fn statements_about_others_count_only_with_their_proof() {
    let now = Instant::now();
    let mut swim = core(4, now);
    let held = |swim: &Swim, n: &str| {
        let m = swim.member(n).expect("known");
        (m.state, m.incarnation, m.info.addr)
    };
    // n1 passes on n2 left, n3 alive elsewhere, and a member nobody certified: unsigned,
    // or signed by n1 itself.
    let forged_by_n1 = |u: Update| {
        let statement = wire::statement(CLUSTER, &u);
        let proof = ModelKeyring::proof(&NodeName::new("n1"), &statement);
        Update {
            proof: Some(wire::Blob::from(proof)),
            ..u
        }
    };
    let ghost = Update {
        addr: Some(WireAddr(addr(66))),
        tags: Some(Tags::new()),
        ..claim("ghost", 0, State::Alive, "")
    };
    let forged = vec![
        claim("n2", 1, State::Left, ""),
        alive_at(3, 1, addr(99)),
        ghost.clone(),
        forged_by_n1(claim("n2", 1, State::Left, "")),
        forged_by_n1(alive_at(3, 1, addr(99))),
        forged_by_n1(ghost),
    ];
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, forged));
    assert_eq!(held(&swim, "n2"), (State::Alive, Incarnation(0), addr(2)));
    assert_eq!(held(&swim, "n3"), (State::Alive, Incarnation(0), addr(3)));
    assert!(swim.member("ghost").is_none());
    assert_eq!(swim.stats().statements_unsigned, 3);
    assert!(events(&mut swim).is_empty(), "no hook hears of any of it");
    // The forged proofs are held while we ask n1 for the credentials it checked them with;
    // whatever it answers, they do not check out.
    let sent = run_until(&mut swim, now);
    let asked: Vec<&wire::PushPull> = sent
        .iter()
        .filter(|(t, _)| t.to == addr(1))
        .filter_map(|(_, p)| match &p.message {
            Message::PushPull(pp) if !pp.want.is_empty() => Some(pp),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 1, "one request, every name in it");
    assert_eq!(asked[0].want.len(), 3);
    let credentials = ["n2", "n3", "ghost", "n1"]
        .map(|n| wire::Credential {
            name: NodeName::new(n),
            chain: wire::Blob::from(ModelKeyring::credential_of(&NodeName::new(n))),
        })
        .to_vec();
    let answer = Message::PushPull(wire::PushPull {
        reply: true,
        credentials,
        ..wire::PushPull::default()
    });
    swim.handle_packet(now, addr(1), packet(1, answer, vec![]));
    assert_eq!(held(&swim, "n2"), (State::Alive, Incarnation(0), addr(2)));
    assert_eq!(held(&swim, "n3"), (State::Alive, Incarnation(0), addr(3)));
    assert!(swim.member("ghost").is_none());
    assert_eq!(swim.stats().statements_unproven, 3);
    // The members' own proofs, passed on by anybody, are taken, and passed on with them.
    let left = Update {
        addr: Some(WireAddr(addr(2))),
        ..claim("n2", 1, State::Left, "")
    };
    let genuine = vec![signed(left), signed(alive_at(3, 1, addr(33)))];
    swim.handle_packet(now, addr(4), packet(4, Message::Gossip, genuine.clone()));
    assert_eq!(held(&swim, "n2"), (State::Left, Incarnation(1), addr(2)));
    assert_eq!(held(&swim, "n3"), (State::Alive, Incarnation(1), addr(33)));
    let sent = run_until(&mut swim, now + Duration::from_secs(1));
    for statement in &genuine {
        let passed_on = sent.iter().any(|(_, p)| {
            p.updates.iter().any(|u| {
                u.name == statement.name
                    && u.proof == statement.proof
                    && wire::statement(CLUSTER, u) == wire::statement(CLUSTER, statement)
            })
        });
        assert!(passed_on, "{} passed on with its proof", statement.name);
    }
}

#[test]
fn a_members_signed_word_is_taken_whole_and_our_answer_to_a_forged_one_stays_low() {
    let now = Instant::now();
    let mut swim = core(3, now);
    // n2's own statement, passed on by n1, far above what we hold: its word, not bounded.
    let far = 10 * MAX_INCARNATION_STEP;
    let own = signed(alive_at(2, far, addr(2)));
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, vec![own]));
    assert_eq!(
        swim.member("n2").map(|m| m.incarnation),
        Some(Incarnation(far))
    );
    assert_eq!(swim.stats().incarnations_bounded, 0);
    // A forged claim about us at the top: we answer one step above our own, never signing
    // an incarnation we could not outbid again.
    let forged = Update {
        tags: Some(Tags::from([("forged".to_string(), "1".to_string())])),
        ..alive_at(0, u64::MAX, addr(0))
    };
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, vec![forged]));
    assert_eq!(swim.incarnation(), Incarnation(MAX_INCARNATION_STEP + 1));
}

#[test]
fn a_statement_whose_credential_we_lack_is_taken_once_the_relay_sends_it() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.set_keyring(Box::new(ModelKeyring::knowing_none(NodeName::new("n0"))));
    drain(&mut swim);
    let joiner = signed(alive_at(7, 0, addr(7)));
    swim.handle_packet(
        now,
        addr(1),
        packet(1, Message::Gossip, vec![joiner.clone()]),
    );
    assert!(
        swim.member("n7").is_none(),
        "not before its credential is seen"
    );
    let sent = run_until(&mut swim, now);
    let want: Vec<NodeName> = sent
        .iter()
        .filter_map(|(_, p)| match &p.message {
            Message::PushPull(pp) => Some(pp.want.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(want, vec![NodeName::new("n7")]);
    // The same statement again, from another relay, asks nobody again within a second.
    swim.handle_packet(now, addr(2), packet(2, Message::Gossip, vec![joiner]));
    assert!(run_until(&mut swim, now).is_empty());
    // A credential that is not n7's teaches nothing; n7's own lets the statement in.
    let answer = |chain: Vec<u8>| {
        Message::PushPull(wire::PushPull {
            reply: true,
            credentials: vec![wire::Credential {
                name: NodeName::new("n7"),
                chain: wire::Blob::from(chain),
            }],
            ..wire::PushPull::default()
        })
    };
    let wrong = ModelKeyring::credential_of(&NodeName::new("n1"));
    swim.handle_packet(now, addr(1), packet(1, answer(wrong), vec![]));
    assert!(swim.member("n7").is_none());
    assert_eq!(swim.stats().credentials_refused, 1);
    let right = ModelKeyring::credential_of(&NodeName::new("n7"));
    swim.handle_packet(now, addr(1), packet(1, answer(right), vec![]));
    assert_eq!(swim.member("n7").map(|m| m.state), Some(State::Alive));
    assert_eq!(kinds_about(&mut swim, "n7"), vec![EventKind::Joined]);
}

#[test]
fn a_joiner_gets_every_credential_and_a_peer_those_it_asks_for() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let request = |join: bool, want: Vec<NodeName>| {
        Message::PushPull(wire::PushPull {
            join,
            want,
            ..wire::PushPull::default()
        })
    };
    let credentials = |swim: &mut Swim| -> Vec<String> {
        let mut names: Vec<String> = drain(swim)
            .iter()
            .filter_map(|(_, p)| match &p.message {
                Message::PushPull(pp) => Some(pp.credentials.clone()),
                _ => None,
            })
            .flatten()
            .map(|c| c.name.as_str().to_string())
            .collect();
        names.sort();
        names
    };
    swim.handle_packet(now, addr(9), packet(9, request(true, vec![]), vec![]));
    assert_eq!(credentials(&mut swim), ["n0", "n1", "n2", "n3"]);
    swim.handle_packet(
        now,
        addr(1),
        packet(1, request(false, vec![NodeName::new("n2")]), vec![]),
    );
    assert_eq!(credentials(&mut swim), ["n2"]);
}

#[test]
fn our_own_statements_carry_our_proof() {
    let now = Instant::now();
    let mut swim = core(3, now);
    swim.set_tags(now, Tags::from([("role".to_string(), "db".to_string())]))
        .expect("small tags");
    let mut sent = run_until(&mut swim, now + Duration::from_secs(1));
    swim.leave(now + Duration::from_secs(1));
    sent.extend(run_until(&mut swim, now + Duration::from_secs(3)));
    let own = states_signed(&sent, |u| u.name.as_str() == "n0");
    assert!(own.contains(&State::Alive) && own.contains(&State::Left));
}

#[test]
fn unsigned_statements_are_taken_in_a_rolling_upgrade_until_the_member_signs() {
    let now = Instant::now();
    let config = Config {
        accept_unsigned: true,
        ..Config::default()
    };
    let mut swim = core_with(4, config, now);
    // From an older agent, about an older agent: taken as before.
    swim.handle_packet(
        now,
        addr(1),
        packet(1, Message::Gossip, vec![alive_at(2, 1, addr(22))]),
    );
    assert_eq!(swim.member("n2").map(|m| m.info.addr), Some(addr(22)));
    // Once n3 was seen signing, unsigned copies about it are refused.
    let own = signed(alive_at(3, 1, addr(3)));
    swim.handle_packet(now, addr(4), packet(4, Message::Gossip, vec![own]));
    swim.handle_packet(
        now,
        addr(1),
        packet(1, Message::Gossip, vec![alive_at(3, 2, addr(99))]),
    );
    assert_eq!(swim.member("n3").map(|m| m.info.addr), Some(addr(3)));
    assert_eq!(swim.stats().statements_unsigned, 1);
}

#[test]
fn a_left_for_a_member_we_hold_failed_needs_no_proof() {
    let now = Instant::now();
    let mut swim = core_where(3, Config::default(), now, failed_is(2));
    // `swimd force-leave n2` on another member: it cannot sign for n2, and fails nobody.
    swim.handle_packet(
        now,
        addr(1),
        packet(1, Message::Gossip, vec![claim("n2", 1, State::Left, "")]),
    );
    assert_eq!(swim.member("n2").map(|m| m.state), Some(State::Left));
    swim.handle_packet(
        now,
        addr(1),
        packet(1, Message::Gossip, vec![claim("n3", 1, State::Left, "")]),
    );
    assert_eq!(swim.member("n3").map(|m| m.state), Some(State::Alive));
}

#[test]
fn no_input_makes_a_member_refute_more_than_a_few_times_a_second() {
    let now = Instant::now();
    let mut swim = core(3, now);
    // n1 claims new tags of ours, one incarnation higher each time, 50 times in 100 ms.
    for i in 0..50u64 {
        let tags = Tags::from([("x".to_string(), i.to_string())]);
        let forged = Update {
            addr: Some(WireAddr(addr(0))),
            tags: Some(tags),
            ..claim("n0", i + 1, State::Alive, "")
        };
        let at = now + Duration::from_millis(2 * i);
        swim.handle_packet(at, addr(1), packet(1, Message::Gossip, vec![forged]));
    }
    assert_eq!(
        swim.stats().refutations,
        MAX_REFUTATIONS_PER_SEC as u64,
        "rate-limited"
    );
    assert_eq!(swim.stats().refutations_deferred, 50 - 4);
    // One refutation a second later answers every claim held back.
    run_until(&mut swim, now + Duration::from_millis(1100));
    assert_eq!(swim.stats().refutations, MAX_REFUTATIONS_PER_SEC as u64 + 1);
    assert_eq!(swim.incarnation(), Incarnation(51));
}

#[test]
fn an_ack_counts_only_from_the_member_probed_or_a_relay_asked() {
    let now = Instant::now();
    let mut swim = core(5, now);
    let (target, seq) = first_ping(&mut swim, now + Duration::from_secs(1));
    let other = (1..=5)
        .find(|&i| format!("n{i}") != target.as_str())
        .unwrap_or(1);
    // Another member answers in the target's place: not evidence that the target lives.
    swim.handle_packet(
        now,
        addr(other),
        packet(other, Message::Ack(wire::Ack { seq }), vec![]),
    );
    assert_eq!(swim.stats().acks_misattributed, 1);
    assert_eq!(swim.stats().probes_direct_ok, 0);
    let sent = run_until(&mut swim, now + Duration::from_millis(1600));
    let helpers: Vec<u8> = sent
        .iter()
        .filter(|(_, p)| matches!(&p.message, Message::PingReq(r) if r.seq == seq))
        .filter_map(|(t, _)| t.to_name.as_ref().map(name_index))
        .collect();
    let asked = helpers[0];
    let not_asked = (1..=5)
        .find(|&i| format!("n{i}") != target.as_str() && !helpers.contains(&i))
        .expect("5 members, 3 helpers and a target leave one");
    swim.handle_packet(
        now,
        addr(not_asked),
        packet(not_asked, Message::Ack(wire::Ack { seq }), vec![]),
    );
    assert_eq!(swim.stats().acks_misattributed, 2);
    // A relay we asked passes the target's ack on: the probe succeeds.
    swim.handle_packet(
        now,
        addr(asked),
        packet(asked, Message::Ack(wire::Ack { seq }), vec![]),
    );
    assert_eq!(swim.stats().probes_indirect_ok, 1);
    run_until(&mut swim, now + Duration::from_millis(2600));
    assert!(
        !events(&mut swim)
            .iter()
            .any(|e| e.kind == EventKind::Suspect && e.member.info.name == target),
        "answered through a relay"
    );
}

#[test]
fn sequence_numbers_cannot_be_predicted() {
    let now = Instant::now();
    let mut swim = core(5, now);
    let seqs: Vec<u32> = run_until(&mut swim, now + Duration::from_secs(10))
        .iter()
        .filter_map(|(_, p)| match &p.message {
            Message::Ping(ping) => Some(ping.seq),
            _ => None,
        })
        .collect();
    assert!(seqs.len() >= 8, "{seqs:?}");
    let sequential = seqs
        .windows(2)
        .filter(|w| w[1] == w[0].wrapping_add(1))
        .count();
    assert_eq!(sequential, 0, "{seqs:?}");
}

#[test]
fn a_relay_pings_only_a_known_member_at_its_known_address() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let req = |seq, target: &str, at: u8| {
        Message::PingReq(PingReq {
            seq,
            target: NodeName::new(target),
            addr: WireAddr(addr(at)),
        })
    };
    // A known target at a made-up address: pinged where we know it listens.
    swim.handle_packet(now, addr(1), packet(1, req(7, "n3", 99), vec![]));
    let sent = drain(&mut swim);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0.to, addr(3));
    let relay_seq = match &sent[0].1.message {
        Message::Ping(p) => p.seq,
        other => panic!("expected a ping, got {other:?}"),
    };
    // Only the target's own ack is passed on.
    swim.handle_packet(
        now,
        addr(2),
        packet(2, Message::Ack(wire::Ack { seq: relay_seq }), vec![]),
    );
    assert!(drain(&mut swim).is_empty());
    assert_eq!(swim.stats().acks_misattributed, 1);
    // An unknown target (or ourselves) is not dialled: the requester gets a nack.
    for target in ["n9", "n0"] {
        swim.handle_packet(now, addr(1), packet(1, req(8, target, 9), vec![]));
        let sent = drain(&mut swim);
        assert_eq!(sent.len(), 1, "{target}");
        assert_eq!(
            (sent[0].0.to, &sent[0].1.message),
            (addr(1), &Message::Nack(wire::Nack { seq: 8 }))
        );
    }
    assert_eq!(swim.stats().ping_reqs_refused, 2);
}

#[test]
fn invented_members_cannot_grow_the_table_without_bound() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let invented: Vec<Update> = (0..70_000u32)
        .map(|i| Update {
            addr: Some(WireAddr(SocketAddr::from((
                [10, 9, (i >> 8) as u8, i as u8],
                7946,
            )))),
            tags: Some(Tags::new()),
            ..claim(&format!("ghost-{i}"), 0, State::Alive, "")
        })
        .map(signed) // as if the insider held certificates for them all
        .collect();
    let push_pull = Message::PushPull(wire::PushPull {
        members: invented,
        ..wire::PushPull::default()
    });
    let started = std::time::Instant::now();
    swim.handle_packet(now, addr(1), packet(1, push_pull, vec![]));
    eprintln!("70,000 invented members handled in {:?}", started.elapsed());
    assert_eq!(swim.members().count(), super::swim::MAX_MEMBERS);
    assert_eq!(
        swim.stats().members_refused,
        70_000 - (super::swim::MAX_MEMBERS as u64 - 4)
    );
}

// ----- the crash fast path ----------------------------------------------------------------

fn kinds_about(swim: &mut Swim, name: &str) -> Vec<EventKind> {
    events(swim)
        .into_iter()
        .filter(|e| e.member.info.name.as_str() == name)
        .map(|e| e.kind)
        .collect()
}

fn closed_claim(about: &str, state: State, from: &str, witnesses: &[&str]) -> Update {
    Update {
        closed: witnesses.iter().map(|w| NodeName::new(w)).collect(),
        ..claim(about, 0, state, from)
    }
}

#[test]
fn one_port_unreachable_is_not_evidence_but_makes_us_ask_again() {
    let now = Instant::now();
    let mut swim = core(5, now);
    swim.handle_unreachable(now, addr(1));
    // A second error at the same instant cannot answer a ping sent now.
    swim.handle_unreachable(now, addr(1));
    assert!(kinds_about(&mut swim, "n1").is_empty());
    let sent = drain(&mut swim);
    assert!(
        sent.iter()
            .any(|(t, p)| t.to == addr(1) && matches!(p.message, Message::Ping(_))),
        "the member is pinged again at once"
    );
    // An error for an address nobody alive has is ignored.
    swim.handle_unreachable(now, addr(77));
    assert_eq!(swim.stats().ports_unreachable, 3);
}

#[test]
fn a_repeated_error_makes_us_a_witness_not_a_judge() {
    let now = Instant::now();
    let mut swim = core(5, now);
    swim.handle_unreachable(now, addr(1));
    drain(&mut swim);
    swim.handle_unreachable(now + Duration::from_millis(1), addr(1));
    assert_eq!(kinds_about(&mut swim, "n1"), vec![EventKind::Suspect]);
    let sent = drain(&mut swim);
    let told: Vec<&Update> = sent
        .iter()
        .flat_map(|(_, p)| &p.updates)
        .filter(|u| u.name.as_str() == "n1")
        .collect();
    assert!(
        told.iter()
            .any(|u| u.state == State::Suspect && u.closed == vec![NodeName::new("n0")]),
        "our accusation names us as a witness: {told:?}"
    );
    // Our own word is one witness: no verdict before the suspicion runs its course.
    run_until(&mut swim, now + Duration::from_millis(500));
    assert!(!kinds_about(&mut swim, "n1").contains(&EventKind::Failed));
}

#[test]
fn hearing_from_the_member_clears_the_errors() {
    let now = Instant::now();
    let mut swim = core(5, now);
    swim.handle_unreachable(now, addr(1));
    swim.handle_packet(now, addr(1), packet(1, Message::Gossip, vec![]));
    swim.handle_unreachable(now + Duration::from_millis(1), addr(1));
    assert!(kinds_about(&mut swim, "n1").is_empty());
    // Errors further apart than a probe interval do not add up either.
    swim.handle_unreachable(now + Duration::from_secs(3), addr(1));
    assert!(kinds_about(&mut swim, "n1").is_empty());
}

#[test]
fn errors_about_a_failed_member_are_ignored() {
    let now = Instant::now();
    let mut swim = core_where(5, Config::default(), now, failed_is(1));
    for ms in 0..4 {
        swim.handle_unreachable(now + Duration::from_millis(ms), addr(1));
    }
    assert!(kinds_about(&mut swim, "n1").is_empty());
    assert!(
        drain(&mut swim).is_empty(),
        "no ping to a member failed already"
    );
}

#[test]
fn two_witnesses_fail_a_member_at_once_and_the_verdict_carries_them() {
    let now = Instant::now();
    let config = Config {
        observers: 0,
        ..Config::default()
    };
    let mut swim = core_with(5, config, now);
    let claims = vec![closed_claim("n1", State::Suspect, "n2", &["n2", "n3"])];
    swim.handle_packet(now, addr(2), packet(2, Message::Gossip, claims));
    assert_eq!(
        kinds_about(&mut swim, "n1"),
        vec![EventKind::Suspect, EventKind::Failed]
    );
    assert_eq!(swim.stats().closed_port_verdicts, 1);
    // Told to the neighbours at once (no timer ran), with its witnesses.
    let told: Vec<SocketAddr> = drain(&mut swim)
        .into_iter()
        .filter(|(_, p)| {
            p.updates
                .iter()
                .any(|u| u.name.as_str() == "n1" && u.state == State::Failed && u.closed.len() == 2)
        })
        .map(|(t, _)| t.to)
        .collect();
    assert!(told.len() >= 3, "{told:?}");
    assert!(!told.contains(&addr(1)), "not to the member failed");
}

#[test]
fn witnesses_that_cannot_count_do_not_fail_anyone() {
    let now = Instant::now();
    let config = Config {
        observers: 0,
        ..Config::default()
    };
    let mut swim = core_with(5, config, now);
    // The suspect itself, a member we suspect, a stranger, and one name twice.
    let claims = vec![
        claim("n4", 0, State::Suspect, "n2"),
        closed_claim("n1", State::Failed, "n2", &["n1", "n4", "n9", "n2", "n2"]),
    ];
    swim.handle_packet(now, addr(2), packet(2, Message::Gossip, claims));
    let seen = kinds_about(&mut swim, "n1");
    assert!(!seen.contains(&EventKind::Failed), "{seen:?}");
    assert_eq!(swim.stats().closed_port_verdicts, 0);
}

#[test]
fn in_the_overlay_only_the_suspects_observers_count_as_witnesses() {
    let now = Instant::now();
    let mut swim = core(12, now);
    // Which pairs of witnesses fail n1 at once: those of its observers, in our view.
    let names: Vec<String> = (0..=12)
        .filter(|&i| i != 1)
        .map(|i| format!("n{i}"))
        .collect();
    let mut observers: Vec<&String> = Vec::new();
    for (i, a) in names.iter().enumerate() {
        for b in names.iter().skip(i + 1) {
            let mut probe = core(12, now);
            let claims = vec![closed_claim("n1", State::Suspect, a, &[a, b])];
            probe.handle_packet(now, addr(2), packet(2, Message::Gossip, claims));
            if probe.stats().closed_port_verdicts == 1 {
                for n in [a, b] {
                    if !observers.contains(&n) {
                        observers.push(n);
                    }
                }
            }
        }
    }
    assert!(
        observers.len() >= 2 && observers.len() <= 4,
        "two to four members watch n1 on 4 rings: {observers:?}"
    );
    let outsiders: Vec<&String> = names
        .iter()
        .filter(|n| !observers.contains(n) && n.as_str() != "n0")
        .collect();
    let (a, b) = (outsiders[0], outsiders[1]);
    let claims = vec![closed_claim("n1", State::Suspect, a, &[a, b])];
    swim.handle_packet(now, addr(2), packet(2, Message::Gossip, claims));
    assert_eq!(kinds_about(&mut swim, "n1"), vec![EventKind::Suspect]);
    assert_eq!(swim.stats().closed_port_verdicts, 0);
}

#[test]
fn a_note_is_taken_only_with_the_proof_of_the_member_it_names() {
    let now = Instant::now();
    let mut swim = core(3, now);
    let note = |key: &str, from: &str, signer: &str| {
        let mut note = wire::Note {
            key: key.into(),
            from: NodeName::new(from),
            proof: None,
        };
        let statement = wire::note_statement(CLUSTER, &note);
        note.proof = Some(wire::Blob::from(ModelKeyring::proof(
            &NodeName::new(signer),
            &statement,
        )));
        note
    };
    // n1 passes on a confirmation in n2's name: unsigned, signed by itself, by n2.
    let notes = vec![
        wire::Note {
            key: "lb/1".into(),
            from: NodeName::new("n2"),
            proof: None,
        },
        note("lb/2", "n2", "n1"),
        note("lb/3", "n2", "n2"),
    ];
    let packet = Packet {
        notes,
        ..packet(1, Message::Gossip, vec![])
    };
    swim.handle_packet(now, addr(1), packet);
    assert_eq!(
        std::iter::from_fn(|| swim.poll_note()).collect::<Vec<_>>(),
        vec![("lb/3".to_string(), NodeName::new("n2"))]
    );
    assert_eq!(swim.stats().notes_unproven, 2);
    // Ours go out signed.
    swim.publish_note(now, "lb/4".into()).expect("new");
    let sent = run_until(&mut swim, now + Duration::from_secs(1));
    let ours = sent
        .iter()
        .flat_map(|(_, p)| p.notes.iter())
        .find(|n| n.key == "lb/4")
        .expect("gossiped");
    assert_eq!(*ours, note("lb/4", "n0", "n0"));
}
