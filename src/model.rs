//! The member model every room above the core shares: states, healths, counts and the
//! member snapshot, typed. Rendering (JSON for the API, payloads for hooks, labels for
//! metrics) happens at each edge from these types; nothing here compares words.

use serde::{Deserialize, Deserializer, Serializer};

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

/// A hook or check name: 1 to `max` characters of a-z, A-Z, 0-9, '-', '_', '.' (names
/// become metric labels, outbox keys and gossiped check names).
pub fn check_name(name: &str, max: usize) -> Result<(), (&'static str, String)> {
    if name.is_empty()
        || name.len() > max
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err((
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
