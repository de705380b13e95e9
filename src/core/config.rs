//! Every protocol knob, with defaults and validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Protocol timings and limits. Defaults start from memberlist's LAN profile and move only
/// where the simulator measured a reason (see the field docs and docs/configuration.md, "Settings").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Time between two probes of this member (stretched by the local health multiplier).
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long a direct ping waits for its ack before indirect probes start.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// How many members are asked to probe indirectly (ping-req) after a direct probe fails.
    pub indirect_checks: usize,
    /// Members that watch each member (ours, after Rapid): every member probes its successor
    /// on this many pseudo-random rings, and probes, confirmations, relays, gossip and syncs
    /// stay among these neighbours, so connections are few and stay open whatever the
    /// cluster size. 0: probe every member in random order (memberlist).
    pub observers: usize,
    /// With `observers = 0`: every other probe goes to this member's successor on a hash
    /// ring, so every member is probed at least once per two probe intervals.
    pub ring_probes: bool,
    /// Minimum suspicion timeout as a multiple of `probe_interval × max(1, log10(n))`.
    pub suspicion_mult: f64,
    /// Floor of the minimum suspicion timeout, whatever the cluster size.
    #[serde(with = "humantime_serde")]
    pub suspicion_min_timeout: Duration,
    /// Maximum suspicion timeout (with no confirmations) as a multiple of the minimum.
    pub suspicion_max_timeout_mult: u32,
    /// Independent confirmations after which the suspicion timeout reaches its minimum.
    pub suspicion_confirmations: u32,
    /// Expected number of members that probe a newly suspected member at once, chosen by
    /// hash so the cost per suspicion is O(1); 0 turns fast confirmation off.
    pub fast_confirm_probes: u32,
    /// Upper bound of the local health multiplier (Lifeguard awareness).
    pub awareness_max_multiplier: u32,
    /// Time between gossip rounds (only while updates are queued).
    #[serde(with = "humantime_serde")]
    pub gossip_interval: Duration,
    /// Members each gossip round sends to.
    pub gossip_nodes: usize,
    /// How long failed members still receive gossip (helps a wrongly failed member refute).
    #[serde(with = "humantime_serde")]
    pub gossip_to_the_dead: Duration,
    /// Each update is sent `retransmit_mult × ceil(log10(n + 1))` times.
    pub retransmit_mult: u32,
    /// Members a leaving member tells directly, besides gossiping its `left` (0: gossip only).
    pub leave_notify: usize,
    /// Time between periodic push-pull exchanges with a random member (0 disables them).
    #[serde(with = "humantime_serde")]
    pub push_pull_interval: Duration,
    /// Most members one push-pull answer describes (the differing digest buckets, in turn;
    /// joins get everything).
    pub push_pull_max_members: usize,
    /// Datagram payload budget in bytes, header included (QUIC allows 1162 at a 1200 MTU).
    pub datagram_budget: usize,
    /// Time between attempts to reach a random failed member, so partitions heal by themselves.
    #[serde(with = "humantime_serde")]
    pub reconnect_interval: Duration,
    /// Time between join attempts through the seeds while no other member is known alive.
    #[serde(with = "humantime_serde")]
    pub seed_retry_interval: Duration,
    /// How long a failed member is kept (and retried) before it is reaped.
    #[serde(with = "humantime_serde")]
    pub reap_failed_after: Duration,
    /// How long a member that left is kept before it is reaped.
    #[serde(with = "humantime_serde")]
    pub reap_left_after: Duration,
    /// Largest encoded size of this member's tags, in bytes.
    pub max_tags_bytes: usize,
    /// Take a statement about another member (`alive`, `left`) passed on without its
    /// maker's proof, as v0.1.0 agents pass them on: for a rolling upgrade only. A
    /// member once seen signing is never taken unsigned again.
    pub accept_unsigned: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            observers: 4,
            ring_probes: true,
            suspicion_mult: 1.25,
            suspicion_min_timeout: Duration::from_millis(2500),
            suspicion_max_timeout_mult: 6,
            suspicion_confirmations: 2,
            fast_confirm_probes: 3,
            awareness_max_multiplier: 8,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            gossip_to_the_dead: Duration::from_secs(30),
            retransmit_mult: 4,
            leave_notify: 32,
            push_pull_interval: Duration::from_secs(30),
            push_pull_max_members: 256,
            datagram_budget: 1100,
            reconnect_interval: Duration::from_secs(2),
            seed_retry_interval: Duration::from_secs(5),
            reap_failed_after: Duration::from_secs(24 * 3600),
            reap_left_after: Duration::from_secs(24 * 3600),
            max_tags_bytes: 512,
            accept_unsigned: false,
        }
    }
}

/// A named set of defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// swimd's defaults.
    Default,
    /// HashiCorp memberlist's LAN timings, without swimd's ring probes and fast confirmation:
    /// a baseline in the same simulator.
    Memberlist,
}

impl std::str::FromStr for Profile {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Profile::Default),
            "memberlist" => Ok(Profile::Memberlist),
            other => Err(format!(
                "unknown profile {other:?}: expected default or memberlist"
            )),
        }
    }
}

impl Profile {
    /// The profile's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Default => "default",
            Profile::Memberlist => "memberlist",
        }
    }

    /// The profile's configuration.
    pub fn config(self) -> Config {
        match self {
            Profile::Default => Config::default(),
            Profile::Memberlist => Config {
                observers: 0,
                ring_probes: false,
                suspicion_mult: 4.0,
                suspicion_min_timeout: Duration::ZERO,
                suspicion_confirmations: 2,
                fast_confirm_probes: 0,
                leave_notify: 0,
                push_pull_max_members: usize::MAX,
                ..Config::default()
            },
        }
    }
}

/// A configuration value that cannot work, with the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gossip.{key}: {problem}")]
pub struct ConfigError {
    /// The offending key (as it appears under `[gossip]`).
    pub key: &'static str,
    /// What is wrong and what to do.
    pub problem: String,
}

impl Config {
    /// Rejects inconsistent values with a message naming the key and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |key, problem: String| Err(ConfigError { key, problem });
        let ms = |d: Duration| humantime::format_duration(d).to_string();
        if self.probe_interval < Duration::from_millis(10) {
            return err(
                "probe_interval",
                format!("({}) must be at least 10ms", ms(self.probe_interval)),
            );
        }
        if self.probe_timeout.is_zero() || self.probe_timeout >= self.probe_interval {
            return err(
                "probe_timeout",
                format!(
                    "({}) must be above zero and shorter than gossip.probe_interval ({})",
                    ms(self.probe_timeout),
                    ms(self.probe_interval)
                ),
            );
        }
        if self.observers > super::overlay::MAX_RINGS {
            return err(
                "observers",
                format!(
                    "({}) must be at most {}",
                    self.observers,
                    super::overlay::MAX_RINGS
                ),
            );
        }
        if self.indirect_checks > 16 {
            return err(
                "indirect_checks",
                format!("({}) must be at most 16", self.indirect_checks),
            );
        }
        if !(self.suspicion_mult.is_finite() && self.suspicion_mult > 0.0) {
            return err(
                "suspicion_mult",
                format!("({}) must be a positive number", self.suspicion_mult),
            );
        }
        if self.suspicion_max_timeout_mult < 1 {
            return err("suspicion_max_timeout_mult", "must be at least 1".into());
        }
        if self.awareness_max_multiplier < 1 || self.awareness_max_multiplier > 64 {
            return err(
                "awareness_max_multiplier",
                format!(
                    "({}) must be between 1 and 64",
                    self.awareness_max_multiplier
                ),
            );
        }
        if self.gossip_interval < Duration::from_millis(1) {
            return err("gossip_interval", "must be at least 1ms".into());
        }
        if self.gossip_nodes == 0 || self.gossip_nodes > 64 {
            return err(
                "gossip_nodes",
                format!("({}) must be between 1 and 64", self.gossip_nodes),
            );
        }
        if self.retransmit_mult == 0 {
            return err("retransmit_mult", "must be at least 1".into());
        }
        if self.leave_notify > 1024 {
            return err(
                "leave_notify",
                format!("({}) must be at most 1024", self.leave_notify),
            );
        }
        if self.push_pull_max_members < 2 {
            return err("push_pull_max_members", "must be at least 2".into());
        }
        if !(256..=super::super::wire::MAX_DATAGRAM_LEN).contains(&self.datagram_budget) {
            return err(
                "datagram_budget",
                format!(
                    "({}) must be between 256 and 65507 bytes; QUIC at a 1200-byte MTU allows 1162",
                    self.datagram_budget
                ),
            );
        }
        if self.reconnect_interval.is_zero() {
            return err("reconnect_interval", "must be above zero".into());
        }
        if self.seed_retry_interval.is_zero() {
            return err("seed_retry_interval", "must be above zero".into());
        }
        if self.reap_failed_after < self.suspicion_min_timeout {
            return err(
                "reap_failed_after",
                "must be longer than gossip.suspicion_min_timeout".into(),
            );
        }
        if self.max_tags_bytes > super::super::wire::MAX_PEER_TAGS_LEN {
            return err(
                "max_tags_bytes",
                format!(
                    "({}) must be at most 4096 (peers reject larger tags)",
                    self.max_tags_bytes
                ),
            );
        }
        Ok(())
    }

    /// Minimum and maximum suspicion timeouts for a cluster of `n` members.
    pub fn suspicion_bounds(&self, n: usize) -> (Duration, Duration) {
        let scale = (n.max(1) as f64).log10().max(1.0);
        let min = self
            .probe_interval
            .mul_f64(self.suspicion_mult * scale)
            .max(self.suspicion_min_timeout);
        (min, min * self.suspicion_max_timeout_mult)
    }

    /// How many times each update is sent in a cluster of `n` members.
    pub fn retransmit_limit(&self, n: usize) -> u32 {
        let scale = ((n + 1) as f64).log10().ceil().max(1.0) as u32;
        self.retransmit_mult * scale
    }

    /// Applies one `key=value` override (durations like `500ms`), as `swimd simulate --set`.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let mut table = toml_like_table(self)?;
        let parsed = parse_scalar(value);
        if !table.contains_key(key) {
            return Err(format!("unknown gossip setting {key:?}"));
        }
        table.insert(key.to_string(), parsed);
        *self = serde_json::from_value(serde_json::Value::Object(table))
            .map_err(|e| format!("{key}={value}: {e}"))?;
        Ok(())
    }
}

fn toml_like_table(config: &Config) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match serde_json::to_value(config).map_err(|e| e.to_string())? {
        serde_json::Value::Object(map) => Ok(map),
        _ => Err("config is not a table".into()),
    }
}

fn parse_scalar(value: &str) -> serde_json::Value {
    if let Ok(b) = value.parse::<bool>() {
        return b.into();
    }
    if let Ok(i) = value.parse::<u64>() {
        return i.into();
    }
    if let Ok(f) = value.parse::<f64>() {
        return f.into();
    }
    value.into()
}
