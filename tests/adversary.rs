//! Real agents against an insider: a peer holding a valid certificate from the cluster CA
//! that crafts its own packets (SECURITY.md says what it can and cannot do).

pub mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use swimd::core::{Channel, Keyring};
use swimd::net::tls;
use swimd::net::transport::{Transport, TransportConfig};
use swimd::wire::{
    self, Ack, ClusterId, Incarnation, Message, NodeName, Note, PingReq, State, Tags, Update,
    WireAddr,
};

use support::cluster::{Cluster, within};
use support::http;
use support::procfs::usage;

/// The insider: "mallory", certified by the cluster's CA, on 127.0.`net`.99.
struct Mallory {
    transport: Transport,
    name: NodeName,
    cluster: ClusterId,
    runtime: tokio::runtime::Runtime,
    /// Signs with mallory's own key: all an insider can sign with.
    keyring: tls::ClusterKeyring,
}

impl Mallory {
    fn new(c: &Cluster, net: u8) -> Mallory {
        let tls_dir = c.dir.0.join("tls");
        let ip = Ipv4Addr::new(127, 0, net, 99);
        tls::issue(&tls_dir, "mallory", &[IpAddr::V4(ip)]).expect("cert");
        let name = NodeName::new("mallory");
        let identity = tls::load(
            &tls_dir.join("ca.pem"),
            &tls_dir.join("mallory.pem"),
            &tls_dir.join("mallory-key.pem"),
            &name,
        )
        .expect("identity");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let addr = SocketAddr::from((ip, 7946));
        let (transport, _inbound) = {
            let _guard = runtime.enter();
            Transport::start(addr, addr, &identity, &[9; 32], TransportConfig::default())
                .expect("transport")
        };
        Mallory {
            transport,
            name,
            cluster: ClusterId::of(&c.cluster_name),
            runtime,
            keyring: tls::ClusterKeyring::new(&identity).expect("keyring"),
        }
    }

    /// Our packet: `message` with `updates`, under our own name.
    fn packet(&self, message: &Message, updates: &[Update]) -> Vec<u8> {
        let encoded: Vec<Vec<u8>> = updates.iter().map(wire::encode_update).collect();
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        let mut payload = Vec::new();
        wire::encode_packet(self.cluster, &self.name, message, &refs, &mut payload);
        payload
    }

    /// Sends any bytes to `to`.
    fn send_bytes(&self, to: SocketAddr, channel: Channel, payload: Vec<u8>) {
        let _guard = self.runtime.enter();
        self.transport.send(to, None, channel, payload);
    }

    /// Sends `message` with `updates` to `to` as one datagram.
    fn send(&self, to: SocketAddr, message: &Message, updates: &[Update]) {
        self.send_bytes(to, Channel::Datagram, self.packet(message, updates));
    }

    /// Sends a gossip packet carrying `notes` to `to`.
    fn send_notes(&self, to: SocketAddr, notes: &[Note]) {
        let mut payload = self.packet(&Message::Gossip, &[]);
        let encoded: Vec<Vec<u8>> = notes.iter().map(wire::encode_note).collect();
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        wire::append_notes(&mut payload, &refs);
        self.send_bytes(to, Channel::Datagram, payload);
    }

    /// Sends `message` to `to` on a stream (as a push-pull travels).
    fn send_stream(&self, to: SocketAddr, message: &Message) {
        self.send_bytes(to, Channel::Stream, self.packet(message, &[]));
    }
}

fn claim(about: &str, incarnation: u64, state: State) -> Update {
    Update {
        name: NodeName::new(about),
        incarnation: Incarnation(incarnation),
        state,
        from: NodeName::new("mallory"),
        ..Update::default()
    }
}

/// Every honest observer's view of `subject`: (state, address, tags), or `None` when the
/// observer does not answer or does not know it.
fn seen(c: &Cluster, observers: &[usize], subject: &str) -> Vec<Option<(State, String, Tags)>> {
    observers
        .iter()
        .map(|&o| {
            http::members(&c.nodes[o].api())
                .unwrap_or_default()
                .into_iter()
                .find(|m| m.name == subject)
                .map(|m| (m.state, m.addr, m.tags))
        })
        .collect()
}

/// Whether an observer's view of a member (as [`seen`] gives it) has it alive.
fn alive(view: &Option<(State, String, Tags)>) -> bool {
    view.as_ref()
        .is_some_and(|(state, _, _)| *state == State::Alive)
}

/// The attack of issue 17: `node-2 left` and `node-3 failed` at the top incarnation, and
/// `node-4 alive` far ahead at another address with other tags, five times to every agent.
/// The `left` and the alive claim are not node-2's and node-4's own (unsigned): refused
/// by everyone, no hook hears of them. The verdict is an accusation node-3 refutes: each
/// victim is alive everywhere again within 2 s of the last forgery, none refutes in a storm.
#[test]
fn forged_verdicts_and_incarnations_cannot_evict_or_silence_a_member() {
    let mut c = Cluster::new("adversary-forged", 70, 5);
    // node-1's failover hook: what it would have taken out of the load balancer.
    let delivered = c.dir.0.join("delivered");
    c.append_config(
        0,
        &format!(
            "\n[[hooks]]\nname = \"lb\"\nkind = \"exec\"\nevents = [\"member.failed\", \"member.left\"]\n\
             command = [\"/bin/sh\", \"-c\", \"echo \\\"$SWIMD_EVENT $SWIMD_MEMBER_NAME\\\" >> {}\"]\n",
            delivered.display()
        ),
    );
    c.start_all();
    assert!(
        c.wait_converged(Duration::from_secs(10)).is_some(),
        "no convergence:\n{}",
        c.log(0)
    );
    let mallory = Mallory::new(&c, 70);
    let honest: Vec<usize> = (0..5).collect();
    let mut node4 = claim("node-4", u64::from(u32::MAX), State::Alive);
    node4.addr = Some(WireAddr(SocketAddr::from(([127, 0, 70, 99], 7946))));
    node4.tags = Some(Tags::from([("role".to_string(), "forged".to_string())]));
    let forged = [
        claim("node-2", u64::from(u32::MAX), State::Left),
        claim("node-3", u64::from(u32::MAX), State::Failed),
        node4,
    ];
    for _ in 0..5 {
        for node in &c.nodes {
            mallory.send(node.gossip(), &Message::Gossip, &forged);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let real4 = c.nodes[3].gossip().to_string();
    let at_home = |c: &Cluster| {
        seen(c, &honest, "node-4").iter().all(|view| {
            view.as_ref().is_some_and(|(_, addr, tags)| {
                *addr == real4
                    && !tags
                        .iter()
                        .any(|(k, v)| k.contains("forged") || v.contains("forged"))
            })
        })
    };
    assert!(
        at_home(&c),
        "a forged address or tags were taken: {:?}",
        seen(&c, &honest, "node-4")
    );
    let healed = within(Duration::from_secs(2), || {
        ["node-2", "node-3", "node-4"]
            .iter()
            .all(|subject| seen(&c, &honest, subject).iter().all(alive))
    });
    assert!(
        healed.is_some(),
        "not every victim alive at its own address within 2 s: node-2 {:?}, node-3 {:?}, node-4 {:?}\nnode-2's log:\n{}",
        seen(&c, &honest, "node-2"),
        seen(&c, &honest, "node-3"),
        seen(&c, &honest, "node-4"),
        c.log(1)
    );
    eprintln!("victims alive everywhere {healed:?} after the last forgery");
    // And it stays so, without a storm of refutations.
    std::thread::sleep(Duration::from_secs(5));
    for (i, subject) in [(1, "node-2"), (2, "node-3"), (3, "node-4")] {
        assert!(
            seen(&c, &honest, subject).iter().all(alive),
            "{subject}: {:?}",
            seen(&c, &honest, subject)
        );
        let refutations = c.metric(i, "swimd_refutations_total").unwrap_or(f64::MAX);
        assert!(refutations <= 10.0, "{subject} refuted {refutations} times");
    }
    let bounded: f64 = (0..5)
        .filter_map(|i| {
            c.metric(
                i,
                "swimd_dropped_messages_total{reason=\"incarnation_out_of_bounds\"}",
            )
        })
        .sum();
    assert!(bounded >= 15.0, "the forgeries are counted: {bounded}");
    let unsigned: f64 = (0..5)
        .filter_map(|i| {
            c.metric(
                i,
                "swimd_dropped_messages_total{reason=\"unsigned_statement\"}",
            )
        })
        .sum();
    assert!(
        unsigned >= 40.0,
        "the unsigned claims are counted: {unsigned}"
    );
    // No failover hook ran, neither for the verdict nor for the `left`.
    let hooks = std::fs::read_to_string(&delivered).unwrap_or_default();
    assert!(
        hooks.is_empty(),
        "a forgery reached the failover hook: {hooks}"
    );

    // With a restart: the victim is down when the forgeries arrive and comes back with
    // the incarnation its state directory kept.
    c.kill(4);
    let node5 = [
        claim("node-5", u64::from(u32::MAX), State::Left),
        claim("node-5", u64::from(u32::MAX), State::Failed),
    ];
    for node in &c.nodes[..4] {
        mallory.send(node.gossip(), &Message::Gossip, &node5);
    }
    let landed = within(Duration::from_secs(2), || {
        seen(&c, &[0, 1, 2, 3], "node-5")
            .iter()
            .all(|view| !alive(view))
    });
    assert!(
        landed.is_some(),
        "the forgeries about the stopped node-5 landed: {:?}",
        seen(&c, &[0, 1, 2, 3], "node-5")
    );
    c.start(4);
    let up = within(Duration::from_secs(10), || c.view(4).is_some());
    assert!(up.is_some(), "node-5 restarted:\n{}", c.log(4));
    let back = within(Duration::from_secs(2), || {
        seen(&c, &honest, "node-5").iter().all(alive)
    });
    assert!(
        back.is_some(),
        "node-5 not alive everywhere within 2 s of its restart: {:?}",
        seen(&c, &honest, "node-5")
    );
    eprintln!("restarted node-5 alive everywhere {back:?} after it answered");
}

/// A member that crashed stays failed however many acks an insider sends on its behalf,
/// and a ping-req never makes an agent dial an address it does not know for that member.
#[test]
fn fake_acks_and_ping_reqs_to_arbitrary_addresses_achieve_nothing() {
    let mut c = Cluster::converged("adversary-acks", 71, 5);
    let mallory = Mallory::new(&c, 71);
    // An address nobody in the cluster knows: a QUIC Initial arriving here means an agent
    // dialled where a ping-req told it to.
    let sink = UdpSocket::bind("127.0.71.77:7946").expect("sink");
    sink.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    for node in &c.nodes {
        for (seq, target) in [(1, "node-2"), (2, "nobody")] {
            let req = Message::PingReq(PingReq {
                seq,
                target: NodeName::new(target),
                addr: WireAddr(sink.local_addr().expect("addr")),
            });
            mallory.send(node.gossip(), &req, &[]);
        }
    }
    // Connected before the flood below (messages queued during a handshake are bounded).
    let refused = |c: &Cluster| -> f64 {
        (0..4)
            .filter_map(|s| {
                c.metric(
                    s,
                    "swimd_dropped_messages_total{reason=\"ping_req_unknown_target\"}",
                )
            })
            .sum()
    };
    assert!(
        within(Duration::from_secs(5), || refused(&c) >= 4.0).is_some(),
        "ping-reqs for an unknown member are refused and counted: {}",
        refused(&c)
    );
    c.kill(4);
    let killed = Instant::now();
    // Acks for every sequence number an agent would have used with sequential numbering,
    // five times a second, to every survivor.
    let survivors: Vec<usize> = (0..4).collect();
    let mut failed_after = None;
    while killed.elapsed() < Duration::from_secs(20) {
        for &s in &survivors {
            for seq in 0..300 {
                mallory.send(c.nodes[s].gossip(), &Message::Ack(Ack { seq }), &[]);
            }
        }
        let all_failed = survivors
            .iter()
            .all(|&s| c.state(s, "node-5") == Some(State::Failed));
        if all_failed {
            failed_after = Some(killed.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        failed_after.is_some(),
        "fake acks kept the crashed node-5 from being failed: {:?}",
        survivors.iter().map(|&s| c.view(s)).collect::<Vec<_>>()
    );
    eprintln!("node-5 failed everywhere {failed_after:?} after the crash, despite fake acks");
    let mut buf = [0u8; 2048];
    assert!(
        sink.recv_from(&mut buf).is_err(),
        "an agent dialled the address a ping-req named"
    );
}

/// Back-to-back push-pulls from an insider to one agent: two of 14 MiB naming 900,000
/// invented members (refused whole: no array may hold more than 65,536 elements), then
/// four of 65,536 invented members each, unsigned (nobody holds a certificate for them).
/// The agent keeps answering probes (nobody fails it), takes none of them, and its
/// resident memory stays within 32 MiB of where it was.
#[test]
fn huge_push_pulls_from_an_insider_fail_nobody_and_memory_stays_bounded() {
    let c = Cluster::converged("adversary-pushpull", 72, 5);
    let mallory = Mallory::new(&c, 72);
    let pid = c.nodes[0].pid().expect("running");
    let (rss_before, _) = usage(pid);
    let invented = |round: usize, count: usize| {
        Message::PushPull(wire::PushPull {
            members: (0..count)
                .map(|i| Update {
                    name: NodeName::new(&format!("g{round}-{i:x}")),
                    ..Update::default()
                })
                .collect(),
            ..wire::PushPull::default()
        })
    };
    let mut peak = rss_before;
    let started = Instant::now();
    for round in 0..6 {
        let count = if round < 2 {
            1_200_000
        } else {
            wire::MAX_ELEMENTS
        };
        mallory.send_stream(c.nodes[0].gossip(), &invented(round, count));
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            peak = peak.max(usage(pid).0);
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (rss_after, _) = usage(pid);
    // The agent gives freed heap back every 10 s: what stays is what it holds.
    std::thread::sleep(Duration::from_secs(12));
    let (rss_settled, _) = usage(pid);
    let metric = |reason: &str| {
        c.metric(
            0,
            &format!("swimd_dropped_messages_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    // Refused whole by the transport's stream limits or, past them, by the decoder.
    let undecodable = metric("decode_error") + metric("receive_queue") + metric("oversize");
    let refused = metric("unsigned_statement");
    let held = c.view(0).map_or(0, |v| v.len());
    eprintln!(
        "6 push-pulls in {:?}: RSS {rss_before} -> peak {peak} -> {rss_after} KiB, \
         {rss_settled} KiB 12 s later; \
         {undecodable} undecodable, {refused} unsigned statements refused, {held} held",
        started.elapsed()
    );
    let failed: Vec<String> = c
        .not_alive(1..5)
        .into_iter()
        .filter(|s| s.contains(" saw node-") && s.ends_with(" failed"))
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(
        undecodable >= 2.0,
        "the 14 MiB push-pulls are refused whole"
    );
    assert_eq!(held, 5, "no invented member is taken");
    assert!(refused >= 4.0 * 65_536.0, "{refused} refused");
    assert!(
        peak - rss_before < 32 << 10,
        "RSS grew {} KiB",
        peak - rss_before
    );
}

/// 100 MB of datagrams from an insider at one agent, as fast as QUIC lets them go: half
/// garbage, half gossip packets of updates it already holds. The agent keeps answering
/// probes (nobody suspects anybody) and its memory stays bounded.
#[test]
fn a_datagram_flood_from_an_insider_costs_the_cluster_nothing() {
    let c = Cluster::converged("adversary-flood", 73, 5);
    let mallory = Mallory::new(&c, 73);
    let pid = c.nodes[0].pid().expect("running");
    let (rss_before, cpu_before) = usage(pid);
    let to = c.nodes[0].gossip();
    let known: Vec<Update> = (2..=5)
        .map(|i| Update {
            name: NodeName::new(&format!("node-{i}")),
            state: State::Alive,
            ..Update::default()
        })
        .collect();
    let started = Instant::now();
    let mut sent = 0usize;
    let mut not_alive = Vec::new();
    let mut peak = rss_before;
    let mut round = 0u32;
    while sent < 100_000_000 && started.elapsed() < Duration::from_secs(60) {
        for _ in 0..500 {
            if round.is_multiple_of(2) {
                let garbage = vec![(round % 251) as u8; 1100];
                mallory.send_bytes(to, Channel::Datagram, garbage);
                sent += 1100;
            } else {
                // News it already holds: each member alive at incarnation 0.
                mallory.send(to, &Message::Gossip, &known);
                sent += 120;
            }
            round += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
        if round.is_multiple_of(20_000) {
            peak = peak.max(usage(pid).0);
            not_alive.extend(c.not_alive(1..5));
        }
    }
    let took = started.elapsed();
    // What is still queued is handled before the counters are read.
    std::thread::sleep(Duration::from_secs(3));
    let (rss_after, cpu_after) = usage(pid);
    let received = http::self_view(&c.nodes[0].api()).map_or(0, |s| s.transport.udp_rx_bytes);
    let dropped = |reason: &str| {
        c.metric(
            0,
            &format!("swimd_dropped_messages_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    eprintln!(
        "{} MB offered in {took:?}; node-1 received {} MB of UDP, {} undecodable, {} dropped \
         at its queue; RSS {rss_before} -> peak {peak} -> {rss_after} KiB; CPU {:.1} s",
        sent / 1_000_000,
        received / 1_000_000,
        dropped("decode_error"),
        dropped("receive_queue"),
        cpu_after - cpu_before
    );
    not_alive.extend(c.not_alive(0..5));
    assert!(not_alive.is_empty(), "{not_alive:?}");
    assert!(
        peak.max(rss_after) - rss_before < 64 << 10,
        "RSS grew {} KiB",
        peak.max(rss_after) - rss_before
    );
}

/// Names an insider cannot prove: it accuses node-3 in node-1's, node-2's and node-4's
/// names (so that the suspicion looks confirmed three times over) and publishes
/// cluster-hook confirmation notes in node-1's name, unsigned and signed with its own key.
/// No agent counts a made-up accuser (node-3 refutes, nobody fails it, and the suspicions
/// end with no confirmation), and no agent takes a note.
#[test]
fn made_up_accusers_and_notes_in_others_names_count_for_nothing() {
    let c = Cluster::converged("adversary-names", 74, 5);
    let mallory = Mallory::new(&c, 74);
    let total =
        |c: &Cluster, series: &str| -> f64 { (0..5).filter_map(|i| c.metric(i, series)).sum() };
    let confirmations = "swimd_suspicion_confirmations_sum";
    let before = total(&c, confirmations);
    let accusations: Vec<Update> = ["node-1", "node-2", "node-4"]
        .iter()
        .map(|accuser| Update {
            name: NodeName::new("node-3"),
            state: State::Suspect,
            from: NodeName::new(accuser),
            ..Update::default()
        })
        .collect();
    let unsigned = Note {
        key: "lb/predicted-1".into(),
        from: NodeName::new("node-1"),
        proof: None,
    };
    let mut self_signed = Note {
        key: "lb/predicted-2".into(),
        ..unsigned.clone()
    };
    let statement = wire::note_statement(mallory.cluster, &self_signed);
    self_signed.proof = mallory.keyring.sign(&statement).map(wire::Blob::from);
    for node in c.nodes.iter().filter(|n| n.name != "node-3") {
        mallory.send(node.gossip(), &Message::Gossip, &accusations);
        mallory.send_notes(node.gossip(), &[unsigned.clone(), self_signed.clone()]);
    }
    // node-3 hears of the suspicion from the others and refutes it.
    std::thread::sleep(Duration::from_millis(500));
    let healed = within(Duration::from_secs(3), || c.not_alive(0..5).is_empty());
    assert!(healed.is_some(), "{:?}", c.not_alive(0..5));
    // An agent that heard node-3's refutation before the forgery never suspects it.
    let refuted = within(Duration::from_secs(3), || {
        total(&c, "swimd_suspicion_confirmations_count") >= 1.0
    });
    eprintln!("node-3 alive everywhere again {healed:?} after the forgeries");
    assert!(refuted.is_some(), "a suspicion of node-3 ended");
    assert_eq!(
        total(&c, confirmations),
        before,
        "a made-up accuser was counted as a confirmation"
    );
    let notes = total(&c, "swimd_dropped_messages_total{reason=\"unproven_note\"}");
    assert!(notes >= 8.0, "the notes are refused and counted: {notes}");
    let failed = total(&c, "swimd_member_state_transitions_total{to=\"failed\"}");
    assert_eq!(failed, 0.0, "nobody was failed");
}
