//! `swimd simulate`: one scenario, one JSON object on stdout.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::core::Profile;
use crate::sim::scenario::{self, Options, ScenarioKind};

#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Cluster size.
    #[arg(long, default_value_t = 50)]
    members: usize,
    /// crash | leave | loss | pause | partition-heal | churn | steady
    #[arg(long, default_value = "crash")]
    scenario: ScenarioKind,
    /// RNG seed: the same seed gives the same run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
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
    /// How long `partition-heal` keeps the halves apart.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    hold: Duration,
    /// default | memberlist (memberlist's LAN timings, no ring probes or fast confirmation).
    #[arg(long, default_value = "default")]
    profile: Profile,
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
    let report = scenario::run(Options {
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
        progress: true,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(ExitCode::SUCCESS)
}
