//! Real agents, each in its own network namespace, under the faults a network deals out:
//! loss, pauses, partitions, one-way failures, a flapping link, a rolling restart. Needs root,
//! iproute2 and nftables (skipped loudly without them; failed under `CI=true`).
//!
//! Each scenario runs 10 hosts; the scenarios run one at a time (a shared lock), since the
//! machine has two cores. Under `CI=true` the long fault windows (10% loss, the flipping
//! link, the watch after the lossy host fails) run for half as long.

pub mod lab;
pub mod support;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use swimd::model::State;

use lab::{Direction, Event, Lab, unix_now};
use support::http;

const HOSTS: usize = 10;

/// One scenario at a time: ten agents each keep two cores busy enough.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A long fault duration: as the issue states it, or half of it under CI.
fn long(full: Duration) -> Duration {
    if under_ci() { full / 2 } else { full }
}

/// A lab of `HOSTS` running agents that all list each other alive, events followed.
fn converged_lab(tag: &str, net: u8) -> Option<Lab> {
    let mut lab = Lab::new(tag, net, HOSTS)?;
    lab.configure_swimd();
    lab.watch_events();
    let start = Instant::now();
    lab.start_swimd_all();
    let took = lab.wait_converged(Duration::from_secs(30));
    assert!(
        took.is_some(),
        "{HOSTS} agents did not converge within 30 s; host-0 log:\n{}",
        lab.log(0)
    );
    eprintln!(
        "{tag}: {HOSTS} agents converged {:.2} s after start",
        start.elapsed().as_secs_f64()
    );
    Some(lab)
}

/// Events of `kind` since `since` (agent clock).
fn events_of(lab: &Lab, kind: &str, since: f64) -> Vec<Event> {
    lab.events()
        .into_iter()
        .filter(|e| e.kind == kind && e.timestamp >= since)
        .collect()
}

/// One line per event, times in seconds after the first of them.
fn describe(events: &[Event], lab: &Lab) -> String {
    let first = events
        .iter()
        .map(|e| e.timestamp)
        .fold(f64::INFINITY, f64::min);
    events
        .iter()
        .map(|e| {
            format!(
                "+{:.2} s: {} saw {} {} (was {})",
                e.timestamp - first,
                lab.name(e.observer),
                e.member,
                e.kind,
                e.previous_state.map_or("", State::as_str)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// How many events of each kind, for the test's output.
fn histogram(events: &[Event]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e.kind.clone()).or_insert(0) += 1;
    }
    counts
}

/// `member.failed` events about anyone but `faulty`, reported by anyone but `faulty`: a
/// healthy host declared failed by a healthy one.
fn healthy_failures(lab: &Lab, faulty: usize, since: f64) -> Vec<Event> {
    events_of(lab, "member.failed", since)
        .into_iter()
        .filter(|e| e.observer != faulty && e.member != lab.name(faulty))
        .collect()
}

/// Waits until every host lists every member alive; while it waits, prints every 5 s
/// which host still lists whom as what (a slow heal says who is behind).
fn wait_healed(lab: &Lab, limit: Duration) -> Option<Duration> {
    let mut last_report = Instant::now();
    lab.wait_until(limit, |lab| {
        let mut behind = Vec::new();
        for o in lab.all() {
            match lab.view(o) {
                None => behind.push(format!("{}: no answer", lab.name(o))),
                Some(view) => {
                    let not_alive: Vec<String> = view
                        .iter()
                        .filter(|(_, state)| **state != State::Alive)
                        .map(|(name, state)| format!("{name}={state}"))
                        .collect();
                    if !not_alive.is_empty() || view.len() < lab.len() {
                        behind.push(format!("{}: {}", lab.name(o), not_alive.join(" ")));
                    }
                }
            }
        }
        if !behind.is_empty() && last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("  not yet healed: {}", behind.join("; "));
            last_report = Instant::now();
        }
        behind.is_empty()
    })
}

#[test]
fn ten_percent_loss_everywhere_declares_no_member_failed() {
    let _serial = serial();
    let Some(mut lab) = converged_lab("loss", 1) else {
        return;
    };
    let window = long(Duration::from_secs(120));
    let since = unix_now();
    // 10% of every host's outgoing packets: every link loses 10% each way.
    for i in lab.all() {
        lab.loss(i, Direction::Outbound, 10);
    }
    std::thread::sleep(window);
    lab.heal();
    let during: Vec<Event> = lab
        .events()
        .into_iter()
        .filter(|e| e.timestamp >= since)
        .collect();
    eprintln!(
        "loss: {} s at 10%: events {:?}",
        window.as_secs(),
        histogram(&during)
    );
    let failed = events_of(&lab, "member.failed", since);
    assert!(
        failed.is_empty(),
        "members declared failed under 10% loss:\n{}",
        describe(&failed, &lab)
    );
    assert!(
        lab.wait_converged(Duration::from_secs(10)).is_some(),
        "not every host lists every member alive after the loss"
    );
}

#[test]
fn host_paused_for_three_seconds_is_not_declared_failed() {
    let _serial = serial();
    let Some(lab) = converged_lab("paus", 2) else {
        return;
    };
    let paused = 4;
    let since = unix_now();
    lab.pause(paused);
    std::thread::sleep(Duration::from_secs(3));
    lab.resume(paused);
    // Long enough for any suspicion raised during the pause to run out (at most
    // suspicion_max_timeout_mult × the minimum, 6 × 2.5 s) and be gossiped.
    std::thread::sleep(Duration::from_secs(20));
    let about = lab.events_about(lab.name(paused));
    eprintln!(
        "pause: events about the paused host {:?}",
        histogram(&about)
    );
    let failed = events_of(&lab, "member.failed", since);
    assert!(
        failed.is_empty(),
        "declared failed after a 3 s pause:\n{}",
        describe(&failed, &lab)
    );
    assert!(lab.wait_converged(Duration::from_secs(5)).is_some());
}

/// How long a host cut off from all others may take to be listed alive by all, and to list
/// them all alive, once its links return (the partition's bound; measured ~1-1.5 s, printed;
/// it took 23-32 s before hosts checked their own links instead of waiting for their
/// health score to decay).
const ISOLATED_HEAL_LIMIT: Duration = Duration::from_secs(10);

/// How long the partition scenario keeps the halves apart (the simulator's default hold).
const PARTITION_HOLD: Duration = Duration::from_secs(30);

#[test]
fn halves_of_a_partition_fail_each_other_and_heal_without_restart() {
    let _serial = serial();
    let Some(mut lab) = converged_lab("part", 3) else {
        return;
    };
    let a: Vec<usize> = (0..HOSTS / 2).collect();
    let b: Vec<usize> = (HOSTS / 2..HOSTS).collect();
    let pids: Vec<Option<u32>> = lab.all().iter().map(|&i| lab.pid(i)).collect();
    let cut = Instant::now();
    lab.partition(&a, &b);
    let detected = lab.wait_until(PARTITION_HOLD, |lab| {
        lab.sees(&a, &b, State::Failed) && lab.sees(&b, &a, State::Failed)
    });
    let Some(detected) = detected else {
        panic!(
            "the halves did not mark each other failed within {PARTITION_HOLD:?}; views: {:?}",
            lab.all().iter().map(|&i| lab.view(i)).collect::<Vec<_>>()
        );
    };
    eprintln!(
        "partition: both halves see the other failed after {:.2} s",
        detected.as_secs_f64()
    );
    // Hold the partition as long as `swimd simulate --scenario partition-heal` does.
    std::thread::sleep(PARTITION_HOLD.saturating_sub(cut.elapsed()));
    assert!(
        lab.sees(&a, &b, State::Failed) && lab.sees(&b, &a, State::Failed),
        "a half saw the other again while still partitioned"
    );
    lab.heal();
    let healed = wait_healed(&lab, Duration::from_secs(30));
    let Some(healed) = healed else {
        panic!("not every host lists every member alive 30 s after healing");
    };
    eprintln!(
        "partition: every host lists all alive {:.2} s after healing",
        healed.as_secs_f64()
    );
    for i in lab.all() {
        assert!(lab.alive(i), "{} exited", lab.name(i));
        assert_eq!(lab.pid(i), pids[i], "{} was restarted", lab.name(i));
    }
    // The bound: the halves find each other through `reconnect_interval` (2 s) probes of
    // failed members, then gossip; 10 s allows a few rounds of it.
    assert!(
        healed <= Duration::from_secs(10),
        "healing took {healed:?}, more than 10 s"
    );
}

#[test]
fn host_that_cannot_receive_ends_failed_everywhere_and_no_other_host_flaps() {
    let _serial = serial();
    let Some(mut lab) = converged_lab("deaf", 4) else {
        return;
    };
    let deaf = 7;
    let others: Vec<usize> = lab.all().into_iter().filter(|&i| i != deaf).collect();
    let since = unix_now();
    lab.loss(deaf, Direction::Inbound, 100);
    let detected = lab.wait_until(Duration::from_secs(40), |lab| {
        lab.sees(&others, &[deaf], State::Failed)
    });
    assert!(
        detected.is_some(),
        "the host that cannot receive is not failed everywhere after 40 s"
    );
    eprintln!(
        "deaf: failed everywhere after {:.2} s",
        detected.unwrap_or_default().as_secs_f64()
    );
    // Stay deaf a while: it must stay failed, and no one else may be failed.
    std::thread::sleep(Duration::from_secs(20));
    assert!(
        lab.sees(&others, &[deaf], State::Failed),
        "the deaf host came back while still deaf"
    );
    let about_deaf: Vec<Event> = lab
        .events_about(lab.name(deaf))
        .into_iter()
        .filter(|e| e.observer != deaf && e.timestamp >= since)
        .collect();
    eprintln!("deaf: events about it {:?}", histogram(&about_deaf));
    let recovered: Vec<Event> = about_deaf
        .iter()
        .filter(|e| e.kind == "member.recovered" || e.kind == "member.joined")
        .cloned()
        .collect();
    assert!(
        recovered.is_empty(),
        "the deaf host flapped back:\n{}",
        describe(&recovered, &lab)
    );
    let wrong = healthy_failures(&lab, deaf, since);
    assert!(
        wrong.is_empty(),
        "healthy hosts declared failed by healthy hosts:\n{}",
        describe(&wrong, &lab)
    );
    let health = |lab: &Lab| {
        http::self_view(&lab.hosts[deaf].api()).map_or_else(|e| e, |me| me.health_score.to_string())
    };
    eprintln!(
        "deaf: its own health score before healing: {}",
        health(&lab)
    );
    lab.heal();
    let healed = wait_healed(&lab, ISOLATED_HEAL_LIMIT);
    eprintln!(
        "deaf: after healing, all alive after {healed:?}; its health score then: {}",
        health(&lab)
    );
    assert!(
        healed.is_some(),
        "the cluster did not heal within {ISOLATED_HEAL_LIMIT:?}"
    );
}

#[test]
fn host_with_80_percent_outbound_loss_ends_failed_without_flapping() {
    let _serial = serial();
    let Some(mut lab) = converged_lab("lsy", 5) else {
        return;
    };
    let lossy = 2;
    let others: Vec<usize> = lab.all().into_iter().filter(|&i| i != lossy).collect();
    let since = unix_now();
    lab.loss(lossy, Direction::Outbound, 80);
    let detected = lab.wait_until(Duration::from_secs(60), |lab| {
        lab.sees(&others, &[lossy], State::Failed)
    });
    assert!(
        detected.is_some(),
        "the lossy host is not failed everywhere after 60 s; events about it:\n{}",
        describe(&lab.events_about(lab.name(lossy)), &lab)
    );
    eprintln!(
        "lossy: failed everywhere after {:.2} s",
        detected.unwrap_or_default().as_secs_f64()
    );
    std::thread::sleep(long(Duration::from_secs(60)));
    let about: Vec<Event> = lab
        .events_about(lab.name(lossy))
        .into_iter()
        .filter(|e| e.observer != lossy && e.timestamp >= since)
        .collect();
    eprintln!("lossy: events about it {:?}", histogram(&about));
    // Not flapped: each healthy observer fails it once and never brings it back.
    for &o in &others {
        let seen: Vec<&Event> = about.iter().filter(|e| e.observer == o).collect();
        let failures = seen.iter().filter(|e| e.kind == "member.failed").count();
        let returns = seen
            .iter()
            .filter(|e| e.kind == "member.recovered" || e.kind == "member.joined")
            .count();
        assert!(
            failures == 1 && returns == 0,
            "{} saw the lossy host fail {failures} times and return {returns} times:\n{}",
            lab.name(o),
            describe(&seen.iter().map(|e| (*e).clone()).collect::<Vec<_>>(), &lab)
        );
    }
    assert!(lab.sees(&others, &[lossy], State::Failed));
    // No healthy host is declared failed, by anyone: the lossy host holds back verdicts
    // that rest on its own probes while it is accused and its link check fails.
    let wrong: Vec<Event> = events_of(&lab, "member.failed", since)
        .into_iter()
        .filter(|e| e.member != lab.name(lossy))
        .collect();
    assert!(
        wrong.is_empty(),
        "healthy hosts declared failed:\n{}",
        describe(&wrong, &lab)
    );
}

#[test]
fn link_flipping_every_20_s_changes_state_a_bounded_number_of_times() {
    let _serial = serial();
    let Some(mut lab) = converged_lab("flip", 6) else {
        return;
    };
    let flipping = 9;
    let rest: Vec<usize> = lab.all().into_iter().filter(|&i| i != flipping).collect();
    let since = unix_now();
    // 20 s off, 20 s on: three cycles in two minutes (two under CI).
    let off_periods = long(Duration::from_secs(120)).as_secs().div_ceil(40) as usize;
    for cycle in 0..off_periods {
        lab.partition(&[flipping], &rest);
        std::thread::sleep(Duration::from_secs(20));
        lab.heal();
        if cycle + 1 < off_periods {
            std::thread::sleep(Duration::from_secs(20));
        }
    }
    let healed = wait_healed(&lab, ISOLATED_HEAL_LIMIT);
    let about: Vec<Event> = lab
        .events_about(lab.name(flipping))
        .into_iter()
        .filter(|e| e.observer != flipping && e.timestamp >= since)
        .collect();
    eprintln!(
        "flip: {off_periods} off periods of 20 s: events about the host {:?}; all alive {healed:?} after the last heal",
        histogram(&about)
    );
    // The bound: per observer, at most suspect → failed → back alive per off period.
    let bound = 3 * off_periods;
    for &o in &rest {
        let changes = about.iter().filter(|e| e.observer == o).count();
        assert!(
            changes <= bound,
            "{} saw {changes} state changes of the flipping host (bound {bound}):\n{}",
            lab.name(o),
            describe(&about, &lab)
        );
    }
    let wrong = healthy_failures(&lab, flipping, since);
    assert!(
        wrong.is_empty(),
        "healthy hosts declared failed:\n{}",
        describe(&wrong, &lab)
    );
    assert!(
        healed.is_some(),
        "not all alive {ISOLATED_HEAL_LIMIT:?} after the last heal"
    );
}

#[test]
fn rolling_restart_shows_only_left_and_joined() {
    let _serial = serial();
    let Some(mut lab) = converged_lab("roll", 7) else {
        return;
    };
    let since = unix_now();
    for i in lab.all() {
        let others: Vec<usize> = lab.all().into_iter().filter(|&o| o != i).collect();
        let code = lab.terminate(i);
        assert_eq!(
            code,
            Some(0),
            "{} did not exit cleanly on SIGTERM",
            lab.name(i)
        );
        assert!(
            lab.wait_until(Duration::from_secs(10), |lab| lab.sees(
                &others,
                &[i],
                State::Left
            ))
            .is_some(),
            "{} is not `left` everywhere 10 s after SIGTERM",
            lab.name(i)
        );
        lab.start_swimd(i);
        assert!(
            lab.wait_converged(Duration::from_secs(30)).is_some(),
            "{} did not rejoin within 30 s",
            lab.name(i)
        );
    }
    let events: Vec<Event> = lab
        .events()
        .into_iter()
        .filter(|e| e.timestamp >= since)
        .collect();
    eprintln!("roll: events {:?}", histogram(&events));
    let unexpected: Vec<Event> = events
        .into_iter()
        .filter(|e| e.kind != "member.left" && e.kind != "member.joined")
        .collect();
    assert!(
        unexpected.is_empty(),
        "a rolling restart showed more than left/joined:\n{}",
        describe(&unexpected, &lab)
    );
}
