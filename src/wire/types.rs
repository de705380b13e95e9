//! Identifier and state types shared by the wire format and the protocol core.

use std::borrow::Borrow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A member's name: unique in the cluster, cheap to clone.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeName(Arc<str>);

impl NodeName {
    /// Wraps a name; validity (length, characters) is checked by [`NodeName::validate`].
    pub fn new(name: &str) -> Self {
        NodeName(Arc::from(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks the rules every peer enforces: 1..=64 bytes of `[A-Za-z0-9._-]`.
    pub fn validate(name: &str) -> Result<(), &'static str> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err("a node name must be 1 to 64 bytes long");
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        {
            return Err("a node name may only contain letters, digits, '.', '-' and '_'");
        }
        Ok(())
    }
}

/// Longest node name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 64;

impl Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl From<&str> for NodeName {
    fn from(s: &str) -> Self {
        NodeName::new(s)
    }
}

/// A member's own counter; only the member itself raises it, to refute or to publish changes.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// The next incarnation (saturating; `u64` is out of reach: the core bounds how far
    /// anyone but the member itself may raise it, see `MAX_RELAYED_JUMP`).
    pub fn next(self) -> Incarnation {
        Incarnation(self.0.saturating_add(1))
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A member's state as seen by one agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Answering probes (or not yet found otherwise).
    #[default]
    Alive,
    /// A probe failed; the member has a suspicion timeout to refute.
    Suspect,
    /// The suspicion timed out without refutation.
    Failed,
    /// The member left gracefully.
    Left,
}

impl State {
    /// Every state, in the order metrics and tables list them.
    pub const ALL: [State; 4] = [State::Alive, State::Suspect, State::Failed, State::Left];

    /// The vocabulary word: `alive`, `suspect`, `failed` or `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Alive => "alive",
            State::Suspect => "suspect",
            State::Failed => "failed",
            State::Left => "left",
        }
    }

    fn code(self) -> u8 {
        match self {
            State::Alive => 0,
            State::Suspect => 1,
            State::Failed => 2,
            State::Left => 3,
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for State {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "alive" => Ok(State::Alive),
            "suspect" => Ok(State::Suspect),
            "failed" => Ok(State::Failed),
            "left" => Ok(State::Left),
            other => Err(format!(
                "unknown state {other:?}: expected alive, suspect, failed or left"
            )),
        }
    }
}

impl Serialize for State {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match u8::deserialize(d)? {
            0 => Ok(State::Alive),
            1 => Ok(State::Suspect),
            2 => Ok(State::Failed),
            3 => Ok(State::Left),
            other => Err(de::Error::custom(format_args!(
                "unknown member state {other}"
            ))),
        }
    }
}

/// A socket address on the wire: 4 or 16 address bytes then the port, as one msgpack `bin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WireAddr(pub SocketAddr);

impl Default for WireAddr {
    fn default() -> Self {
        WireAddr(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }
}

impl Serialize for WireAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 18];
        let len = match self.0.ip() {
            IpAddr::V4(ip) => {
                buf[..4].copy_from_slice(&ip.octets());
                4
            }
            IpAddr::V6(ip) => {
                buf[..16].copy_from_slice(&ip.octets());
                16
            }
        };
        buf[len..len + 2].copy_from_slice(&self.0.port().to_be_bytes());
        s.serialize_bytes(&buf[..len + 2])
    }
}

impl<'de> Deserialize<'de> for WireAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AddrVisitor;
        impl Visitor<'_> for AddrVisitor {
            type Value = WireAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("6 or 18 address bytes")
            }
            fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<WireAddr, E> {
                let (ip, port): (IpAddr, &[u8]) = match b.len() {
                    6 => {
                        let (ip, port) = b.split_at(4);
                        let octets: [u8; 4] = ip.try_into().map_err(E::custom)?;
                        (Ipv4Addr::from(octets).into(), port)
                    }
                    18 => {
                        let (ip, port) = b.split_at(16);
                        let octets: [u8; 16] = ip.try_into().map_err(E::custom)?;
                        (Ipv6Addr::from(octets).into(), port)
                    }
                    n => return Err(E::invalid_length(n, &self)),
                };
                let port: [u8; 2] = port.try_into().map_err(E::custom)?;
                Ok(WireAddr(SocketAddr::new(ip, u16::from_be_bytes(port))))
            }
        }
        d.deserialize_bytes(AddrVisitor)
    }
}
