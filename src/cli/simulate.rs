//! `swimd simulate`: one scenario, one JSON object on stdout; over a range of seeds, the
//! distribution of every figure.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::core::Profile;
use crate::sim::Simulator;
use crate::sim::scenario::{self, Options, ScenarioKind};
use crate::sim::sweep;

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Cluster size.
    #[arg(long, default_value_t = 50)]
    members: usize,
    /// crash | crash-host | leave | loss | pause | partition-heal | churn | steady | insider
    #[arg(long, default_value = "crash")]
    scenario: ScenarioKind,
    /// RNG seed: the same seed gives the same run.
    #[arg(long, default_value_t = 1, conflicts_with = "seeds")]
    seed: u64,
    /// Run every seed of a range, e.g. `1..200` (both ends included), and print the
    /// distribution of each figure over them and the seeds where something went wrong.
    #[arg(long, value_name = "A..B")]
    seeds: Option<String>,
    /// Threads for `--seeds` (default: the machine's cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print on stderr every step of one member's story (who accused it, whose probe
    /// failed, which verdict counted, its refutations), e.g. `--explain node-8`.
    #[arg(long, value_name = "MEMBER", conflicts_with = "seeds")]
    explain: Option<String>,
    /// Simulated time, e.g. 120s or 10m.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Packet loss on every link (0.0–1.0); `loss` defaults to 0.1.
    #[arg(long)]
    loss: Option<f64>,
    /// Pause length for the `pause` scenario.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pause: Duration,
    /// Time between injected events (crash, leave, pause, churn steps).
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    every: Duration,
    /// `steady`: the cold start spreads the members' starts over this long.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    start_over: Duration,
    /// Members that crash together at each `crash` event (a rack going down).
    #[arg(long, default_value_t = 1)]
    burst: usize,
    /// How long `partition-heal` keeps the halves apart.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// default | memberlist (memberlist's LAN timings, no ring probes or fast confirmation).
    #[arg(long, default_value = "default")]
    profile: Profile,
    /// Count load (bytes, handshakes, CPU) from this time on, e.g. `200s` for the steady
    /// state after connections settled, `0s` for everything from the cold start on
    /// (`steady` and `loss` only; default: after 5 s and the cold start).
    #[arg(long, value_parser = humantime::parse_duration)]
    measure_from: Option<Duration>,
    /// Override a `[gossip]` setting, e.g. `--set probe_interval=800ms`; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub(super) fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.members < 3 {
        bail!("--members must be at least 3");
    }
    let loss = args.loss.unwrap_or(if args.scenario == ScenarioKind::Loss {
        0.1
    } else {
        0.0
    });
    if !(0.0..1.0).contains(&loss) {
        bail!("--loss must be in [0, 1), got {loss}");
    }
    if args.every.is_zero() {
        bail!("--every must be above zero");
    }
    if args.burst == 0 {
        bail!("--burst must be at least 1");
    }
    let mut config = args.profile.config();
    for pair in &args.set {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--set {pair:?}: expected KEY=VALUE"))?;
        config
            .set(key.trim(), value.trim())
            .map_err(anyhow::Error::msg)
            .context("--set")?;
    }
    config.validate()?;
    let explain = match &args.explain {
        Some(name) => Some(member_index(name, args.members)?),
        None => None,
    };
    let options = Options {
        scenario: args.scenario,
        members: args.members,
        seed: args.seed,
        duration: args.duration,
        loss,
        pause: args.pause,
        every: args.every,
        hold: args.hold,
        profile: args.profile,
        config,
        progress: args.seeds.is_none(),
        explain,
        start_over: args.start_over,
        burst: args.burst,
        measure_from: args.measure_from.unwrap_or(Duration::from_secs(5)),
    };
    if let Some(seeds) = &args.seeds {
        let seeds = sweep::parse_seeds(seeds)?;
        let threads = args
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        let total = seeds.clone().count();
        let summary = sweep::run(&options, seeds, threads, |done, report| {
            let trouble = report.false_positives + report.flaps + report.undetected;
            let mark = if trouble > 0 { "  <- failed" } else { "" };
            eprintln!(
                "simulate: seed {} ({done}/{total}): {} false failures, {} flaps, {} undetected{mark}",
                report.seed, report.false_positives, report.flaps, report.undetected
            );
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(ExitCode::SUCCESS);
    }
    let (report, sim, _) = scenario::run_detailed(options);
    if let Some(subject) = explain {
        print_story(&sim, subject);
    }
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}

/// The simulator names its members `node-0`, `node-1`, ...
fn member_index(name: &str, members: usize) -> anyhow::Result<usize> {
    name.strip_prefix("node-")
        .and_then(|i| i.parse::<usize>().ok())
        .filter(|&i| i < members)
        .with_context(|| {
            format!(
                "--explain {name:?}: expected a simulated member, node-0 to node-{}",
                members - 1
            )
        })
}

/// The member's story on stderr: every trace step and every state change, in time order.
fn print_story(sim: &Simulator, subject: usize) {
    let name = |i: usize| {
        sim.name(i)
            .map_or_else(|| format!("#{i}"), |n| n.to_string())
    };
    let mut lines: Vec<(std::time::Duration, String)> = sim
        .story()
        .iter()
        .map(|(at, observer, entry)| (*at, format!("{:>10}  {}", name(*observer), entry.step)))
        .collect();
    lines.extend(
        sim.observations()
            .iter()
            .filter(|o| o.subject == subject)
            .map(|o| {
                let text = format!(
                    "{:>10}  -> {} (incarnation {})",
                    name(o.observer),
                    o.kind.as_str(),
                    o.incarnation.0
                );
                (o.at, text)
            }),
    );
    lines.sort_by_key(|(at, _)| *at);
    eprintln!("simulate: the story of {}", name(subject));
    for (at, text) in lines {
        eprintln!("{:>10.3} s  {text}", at.as_secs_f64());
    }
}
