//! The member model every room above the core shares: states, healths, counts and the
//! member snapshot, typed. Rendering (JSON for the API, payloads for hooks, labels for
//! metrics) happens at each edge from these types; nothing here compares words.

use std::time::Instant;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use crate::core::{EventKind, Health, MemberInfo, MemberView};
pub use crate::wire::{Incarnation, NodeName, Software, State, Tags};

/// Members per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateCounts {
    /// Alive members.
    pub alive: usize,
    /// Suspect members.
    pub suspect: usize,
    /// Failed members.
    pub failed: usize,
    /// Members that left.
    pub left: usize,
}

impl StateCounts {
    /// The count of members in `state`.
    pub fn of(&self, state: State) -> usize {
        match state {
            State::Alive => self.alive,
            State::Suspect => self.suspect,
            State::Failed => self.failed,
            State::Left => self.left,
        }
    }
}

/// One membership event as this agent saw it: what the event bus carries to the API's
/// event stream (hooks get theirs from the same core event).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Sequence number on this agent (the SSE id).
    pub id: u64,
    /// What happened.
    pub kind: EventKind,
    /// Unix time in seconds (with milliseconds) when this agent saw it.
    pub timestamp: f64,
    /// When this agent saw it (its clock: the member's state age is measured to here).
    pub at: Instant,
    /// The member after the change.
    pub member: MemberView,
    /// Its state before the change, if it was known.
    pub previous: Option<State>,
    /// The agent that saw it.
    pub observed_by: NodeName,
}

/// What the agent saw at one instant: members' state ages are measured to `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf<T> {
    /// When (the agent's clock).
    pub at: Instant,
    /// What it saw.
    pub value: T,
}

/// This agent's own entry and its local view (`GET /v1/self`).
#[derive(Debug, Clone, PartialEq)]
pub struct SelfView {
    /// When the agent answered (our state age is measured to it).
    pub at: Instant,
    /// Our member entry.
    pub member: MemberView,
    /// The cluster name.
    pub cluster: String,
    /// True once another member is known alive (or a seed answered).
    pub joined: bool,
    /// Lifeguard local health score (0 = healthy).
    pub health_score: u32,
    /// Members by state, ourselves included.
    pub counts: StateCounts,
    /// `swimd --version`.
    pub version: String,
    /// What the gossip transport has sent and received so far.
    pub transport: TransportTotals,
}

/// Transport totals: UDP (everything QUIC sent, handshakes and ACKs included) and SWIM.
/// Serde writes them as `GET /v1/self`'s `transport` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportTotals {
    /// UDP datagrams sent.
    pub udp_tx_datagrams: u64,
    /// UDP payload bytes sent (add 28 per datagram for IPv4 and UDP headers).
    pub udp_tx_bytes: u64,
    /// UDP datagrams received.
    pub udp_rx_datagrams: u64,
    /// UDP payload bytes received.
    pub udp_rx_bytes: u64,
    /// SWIM messages sent (datagrams and streams).
    pub swim_messages_sent: u64,
    /// SWIM payload bytes sent.
    pub swim_bytes_sent: u64,
    /// Open QUIC connections.
    pub connections: usize,
    /// QUIC handshakes completed, either side.
    #[serde(default)]
    pub handshakes: u64,
}

/// Whether this agent can be relied on (`GET /v1/health`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fitness {
    /// Joined, healthy, checks passing.
    Fit,
    /// Not to be relied on, and why (leaving, not joined, degraded, checks failing).
    Unfit(String),
}

/// A hook or check setting that cannot be used: the key at fault and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct SpecError {
    /// The key within its `[[hooks]]` or `[[checks]]` entry.
    pub key: &'static str,
    /// What is wrong and how to fix it.
    pub problem: String,
}

impl SpecError {
    /// `key` is at fault because of `problem`.
    pub fn new(key: &'static str, problem: String) -> SpecError {
        SpecError { key, problem }
    }
}

/// A hook or check name: 1 to `max` characters of a-z, A-Z, 0-9, '-', '_', '.' (names
/// become metric labels, outbox keys and gossiped check names).
pub fn validate_name(name: &str, max: usize) -> Result<(), SpecError> {
    if name.is_empty()
        || name.len() > max
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(SpecError::new(
            "name",
            format!("{name:?} must be 1 to {max} characters of a-z, A-Z, 0-9, '-', '_', '.'"),
        ));
    }
    Ok(())
}

/// Serde for a [`State`] as its word (`"alive"`, …): the wire codes it as a number, people
/// and JSON read the word. Use with `#[serde(with = "crate::model::state_word")]`.
pub mod state_word {
    use super::*;

    /// Writes the word.
    pub fn serialize<S: Serializer>(state: &State, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(state.as_str())
    }

    /// Reads the word; any other is an error naming the four.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<State, D::Error> {
        let word = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        word.parse().map_err(serde::de::Error::custom)
    }
}

/// [`state_word`] for an optional state (`null` when absent).
pub mod option_state_word {
    use super::*;

    /// Writes the word or `null`.
    pub fn serialize<S: Serializer>(state: &Option<State>, s: S) -> Result<S::Ok, S::Error> {
        match state {
            Some(state) => s.serialize_some(state.as_str()),
            None => s.serialize_none(),
        }
    }

    /// Reads the word or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<State>, D::Error> {
        let word = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        word.map(|w| w.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Serde for an optional [`Software`] as an object with named fields (`release`,
/// `writes`, `reads_from`, `reads_to`): the wire writes it as an array, JSON by name.
pub mod software_fields {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Fields {
        release: String,
        writes: u8,
        reads_from: u8,
        reads_to: u8,
    }

    /// Writes the object or `null`.
    pub fn serialize<S: Serializer>(software: &Option<Software>, s: S) -> Result<S::Ok, S::Error> {
        software
            .as_ref()
            .map(|w| Fields {
                release: w.release.clone(),
                writes: w.writes,
                reads_from: w.reads_from,
                reads_to: w.reads_to,
            })
            .serialize(s)
    }

    /// Reads the object or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Software>, D::Error> {
        Ok(Option::<Fields>::deserialize(d)?.map(|f| Software {
            release: f.release,
            writes: f.writes,
            reads_from: f.reads_from,
            reads_to: f.reads_to,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Sample {
        #[serde(with = "state_word")]
        state: State,
        #[serde(with = "option_state_word")]
        previous: Option<State>,
        health: Health,
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Runs {
        #[serde(with = "software_fields", default)]
        software: Option<Software>,
    }

    #[test]
    fn software_reads_and_writes_by_field_name() {
        let runs = Runs {
            software: Some(Software::current()),
        };
        let json = serde_json::to_value(&runs).expect("json");
        assert_eq!(json["software"]["release"], crate::VERSION);
        assert_eq!(json["software"]["writes"], crate::wire::VERSION);
        assert_eq!(json["software"]["reads_from"], crate::wire::VERSION);
        assert_eq!(json["software"]["reads_to"], crate::wire::VERSION);
        assert_eq!(serde_json::from_value::<Runs>(json).ok(), Some(runs));
        let absent: Runs = serde_json::from_str("{}").expect("absent");
        assert_eq!(absent.software, None);
        let null: Runs = serde_json::from_str(r#"{"software":null}"#).expect("null");
        assert_eq!(null.software, None);
    }

    #[test]
    fn states_and_healths_read_and_write_as_their_words() {
        for state in State::ALL {
            for health in Health::ALL {
                let sample = Sample {
                    state,
                    previous: Some(state),
                    health,
                };
                let json = serde_json::to_string(&sample).expect("json");
                assert_eq!(
                    json,
                    format!(
                        r#"{{"state":"{state}","previous":"{state}","health":"{}"}}"#,
                        health.as_str()
                    )
                );
                assert_eq!(serde_json::from_str::<Sample>(&json).ok(), Some(sample));
            }
        }
        let none: Sample =
            serde_json::from_str(r#"{"state":"left","previous":null,"health":"critical"}"#)
                .expect("null previous");
        assert_eq!(none.previous, None);
        assert!(
            serde_json::from_str::<Sample>(
                r#"{"state":"dead","previous":null,"health":"passing"}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<Sample>(r#"{"state":"alive","previous":null,"health":"fine"}"#)
                .is_err()
        );
    }
}
