//! Real agents on loopback: convergence, detection and leave at 20 agents, resource use and
//! bandwidth at 50, each beside what `swimd simulate` predicts. Not part of `cargo test`:
//! run `cargo bench --bench loopback` (about three minutes). `SWIMD_BENCH=scale` runs the
//! calibration of the simulator's transport model instead: `SWIMD_BENCH_N` agents (250)
//! from a cold start to steady state (about five minutes).

#[path = "../tests/support/mod.rs"]
pub mod support;

use std::time::{Duration, Instant};

use swimd::model::State;

use support::cluster::Cluster;
use support::http;
use support::procfs::usage;
use support::tools::{signal, swimd};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn udp_tx(c: &Cluster, i: usize) -> (u64, u64) {
    http::self_view(&c.nodes[i].api()).map_or((0, 0), |s| {
        (s.transport.udp_tx_datagrams, s.transport.udp_tx_bytes)
    })
}

fn simulate(args: &[&str]) -> serde_json::Value {
    let out = swimd(&[&["simulate"], args].concat());
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // SWIMD_BENCH=20 or =50 runs only that part.
    let only = std::env::var("SWIMD_BENCH").unwrap_or_default();
    if only == "scale" {
        let n = std::env::var("SWIMD_BENCH_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(250);
        scale(n);
        return;
    }
    if only != "50" {
        twenty();
    }
    if only != "20" {
        fifty();
    }
}

fn twenty() {
    let mut c = Cluster::new("bench20", 90, 20);
    let start = Instant::now();
    c.start_all();
    let converge = c
        .wait_converged(Duration::from_secs(30))
        .map(|_| start.elapsed());
    println!(
        "20 agents started together, one seed: all see 20 alive after {:.3} s",
        converge.map_or(f64::NAN, |d| d.as_secs_f64())
    );

    let mut detections = Vec::new();
    for round in 0..5 {
        let victim = 3 + round * 3;
        let observers: Vec<usize> = (0..20).filter(|&i| i != victim).collect();
        std::thread::sleep(Duration::from_secs(2));
        c.kill(victim);
        let name = c.nodes[victim].name.clone();
        if let Some(took) = c.wait_state(&observers, &name, State::Failed, Duration::from_secs(30))
        {
            detections.push(took.as_secs_f64());
        }
        c.start(victim);
        c.wait_converged(Duration::from_secs(20));
    }
    let sim = simulate(&[
        "--members",
        "20",
        "--scenario",
        "crash",
        "--duration",
        "300s",
        "--seed",
        "1",
    ]);
    println!(
        "SIGKILL of one of 20, until every survivor lists it failed: median {:.2} s over {} kills {:?}; simulate predicts p50 {} s",
        median(detections.clone()),
        detections.len(),
        detections
            .iter()
            .map(|d| (d * 100.0).round() / 100.0)
            .collect::<Vec<_>>(),
        sim["detection_all_s"]["p50"]
    );

    let leaver = 19;
    let observers: Vec<usize> = (0..19).collect();
    let name = c.nodes[leaver].name.clone();
    let t0 = Instant::now();
    if let Some(pid) = c.nodes[leaver].pid() {
        signal(pid, libc::SIGTERM);
    }
    let left = c
        .wait_state(&observers, &name, State::Left, Duration::from_secs(10))
        .map(|_| t0.elapsed());
    println!(
        "graceful leave seen by all of 20: {:.3} s",
        left.map_or(f64::NAN, |d| d.as_secs_f64())
    );
}

fn fifty() {
    let n = 50;
    let mut c = Cluster::new("bench50", 91, n as u8);
    c.start_all();
    let converged = c.wait_converged(Duration::from_secs(60));
    println!(
        "50 agents: converged after {:.2} s",
        converged.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    // Every pair has probed each other (and set up its QUIC connection) after a couple of
    // round-robin rounds: warm up past that to measure the steady state.
    let warmup: u64 = std::env::var("SWIMD_BENCH_WARMUP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    std::thread::sleep(Duration::from_secs(warmup));
    let window = Duration::from_secs(60);
    let before: Vec<(u64, f64)> = (0..n)
        .map(|i| usage(c.nodes[i].pid().unwrap_or(0)))
        .collect();
    let tx_before: Vec<(u64, u64)> = (0..n).map(|i| udp_tx(&c, i)).collect();
    std::thread::sleep(window);
    let after: Vec<(u64, f64)> = (0..n)
        .map(|i| usage(c.nodes[i].pid().unwrap_or(0)))
        .collect();
    let tx_after: Vec<(u64, u64)> = (0..n).map(|i| udp_tx(&c, i)).collect();
    let rss: Vec<f64> = after.iter().map(|(kb, _)| *kb as f64 / 1024.0).collect();
    let cpu_per_min: Vec<f64> = before
        .iter()
        .zip(&after)
        .map(|(b, a)| (a.1 - b.1) * 60.0 / window.as_secs_f64())
        .collect();
    let bytes_per_s: Vec<f64> = tx_before
        .iter()
        .zip(&tx_after)
        .map(|(b, a)| ((a.1 - b.1) + 28 * (a.0 - b.0)) as f64 / window.as_secs_f64())
        .collect();
    let datagrams_per_s: Vec<f64> = tx_before
        .iter()
        .zip(&tx_after)
        .map(|(b, a)| (a.0 - b.0) as f64 / window.as_secs_f64())
        .collect();
    let sim = simulate(&[
        "--members",
        "50",
        "--scenario",
        "steady",
        "--duration",
        "120s",
        "--seed",
        "1",
    ]);
    println!(
        "50 agents at steady state, per agent (median): resident {:.1} MiB (max {:.1}), CPU {:.3} s/min, sent {:.1} UDP datagrams/s and {:.0} B/s (UDP payload + 28 B); simulate predicts {} msgs/s and {} B/s with overhead",
        median(rss.clone()),
        rss.iter().cloned().fold(0.0, f64::max),
        median(cpu_per_min),
        median(datagrams_per_s),
        median(bytes_per_s),
        sim["per_member"]["msgs_sent_per_s"],
        sim["per_member"]["bytes_sent_with_overhead_per_s"]
    );
}

/// Per agent, cumulative: (CPU seconds, UDP datagrams sent, UDP bytes sent incl. 28 B
/// headers, handshakes completed, open connections, SWIM payload bytes sent).
type Counters = (f64, u64, u64, u64, u64, u64);

fn counters(c: &Cluster, i: usize) -> Counters {
    let cpu = usage(c.nodes[i].pid().unwrap_or(0)).1;
    let transport = http::self_view(&c.nodes[i].api())
        .map(|s| s.transport)
        .unwrap_or_default();
    let datagrams = transport.udp_tx_datagrams;
    (
        cpu,
        datagrams,
        transport.udp_tx_bytes + 28 * datagrams,
        transport.handshakes,
        transport.connections as u64,
        transport.swim_bytes_sent,
    )
}

/// Median per agent of each rate between two sets of counters `secs` apart: (B/s,
/// datagrams/s, handshakes/s, CPU-s/min, connections at the end, SWIM payload B/s).
fn rates(before: &[Counters], after: &[Counters], secs: f64) -> [f64; 6] {
    let per = |f: &dyn Fn(&Counters, &Counters) -> f64| {
        median(before.iter().zip(after).map(|(b, a)| f(b, a)).collect())
    };
    [
        per(&|b, a| (a.2 - b.2) as f64 / secs),
        per(&|b, a| (a.1 - b.1) as f64 / secs),
        per(&|b, a| (a.3 - b.3) as f64 / secs),
        per(&|b, a| (a.0 - b.0) * 60.0 / secs),
        per(&|_, a| a.4 as f64),
        per(&|b, a| (a.5 - b.5) as f64 / secs),
    ]
}

/// The calibration of `swimd simulate`'s transport model: `n` real agents started together
/// with one seed, their traffic, handshakes and CPU in the first minute and at steady
/// state, beside what the simulator predicts for the same windows.
fn scale(n: u8) {
    let mut c = Cluster::new("benchscale", 92, n);
    let start = Instant::now();
    c.start_all();
    let started = start.elapsed();
    let converged = c.wait_converged(Duration::from_secs(180));
    println!(
        "{n} agents started over {:.1} s, one seed: all see {n} alive after {:.2} s",
        started.as_secs_f64(),
        converged.map_or(f64::NAN, |d| d.as_secs_f64())
    );
    let zero = vec![(0.0, 0, 0, 0, 0, 0); usize::from(n)];
    let cold_window = Duration::from_secs(60);
    std::thread::sleep(cold_window.saturating_sub(start.elapsed()));
    let cold: Vec<_> = (0..usize::from(n)).map(|i| counters(&c, i)).collect();
    let cold_secs = start.elapsed().as_secs_f64();
    let warmup = Duration::from_secs(200);
    std::thread::sleep(warmup.saturating_sub(start.elapsed()));
    let steady_from: Vec<_> = (0..usize::from(n)).map(|i| counters(&c, i)).collect();
    let window = Duration::from_secs(60);
    std::thread::sleep(window);
    let steady_to: Vec<_> = (0..usize::from(n)).map(|i| counters(&c, i)).collect();
    let rss: Vec<f64> = (0..usize::from(n))
        .map(|i| usage(c.nodes[i].pid().unwrap_or(0)).0 as f64 / 1024.0)
        .collect();
    let failed: f64 = (0..usize::from(n))
        .filter_map(|i| c.metric(i, "swimd_member_state_transitions_total{state=\"failed\"}"))
        .sum();
    let members = n.to_string();
    // The simulated agents start over the same time as the real ones did.
    let spread = format!("{}ms", started.as_millis().max(1));
    let sim_cold = simulate(&[
        "--members",
        &members,
        "--scenario",
        "steady",
        "--duration",
        "60s",
        "--measure-from",
        "0s",
        "--start-over",
        &spread,
        "--seed",
        "1",
    ]);
    let sim_steady = simulate(&[
        "--members",
        &members,
        "--scenario",
        "steady",
        "--duration",
        "260s",
        "--measure-from",
        "200s",
        "--seed",
        "1",
    ]);
    let show = |label: &str, real: [f64; 6], sim: &serde_json::Value| {
        let p = &sim["per_member"];
        println!(
            "{label}, per agent (median) real | simulated: {:.0} | {} B/s (SWIM payload {:.0} | {}), {:.2} | {} datagrams/s, {:.3} | {} handshakes/s, {:.3} | {} CPU-s/min, {:.0} | {} connections",
            real[0],
            p["bytes_sent_with_overhead_per_s"],
            real[5],
            p["bytes_sent_per_s"],
            real[1],
            p["msgs_sent_per_s"],
            real[2],
            p["handshakes_per_s"],
            real[3],
            p["cpu_s_per_min"],
            real[4],
            p["connections"],
        );
    };
    show(
        &format!("cold start, first {cold_secs:.0} s"),
        rates(&zero, &cold, cold_secs),
        &sim_cold,
    );
    show(
        "steady state, 200-260 s",
        rates(&steady_from, &steady_to, window.as_secs_f64()),
        &sim_steady,
    );
    println!(
        "resident {:.1} MiB median (max {:.1}); failed verdicts over the whole run, all agents: {failed} (simulated cold start: {} false failures, converged after {} s)",
        median(rss.clone()),
        rss.iter().cloned().fold(0.0, f64::max),
        sim_cold["false_positives"],
        sim_cold["convergence_s"],
    );
}
