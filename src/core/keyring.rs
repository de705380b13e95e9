//! Proof of authorship: a member signs its statements about itself (`alive` with its
//! details, `left`), so that a copy passed on by anybody else can be checked. The core only
//! sees this trait; the agent's keyring signs with the member's TLS key and checks against
//! certificates from the cluster CA, the simulator's models the bytes and nothing else.

use std::collections::HashSet;

use super::members::hash64;
use crate::wire::NodeName;

/// What a proof shows about a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proven {
    /// Made by the member, checked against the credential held for it.
    Yes,
    /// Not made by it under the credential held (forged, or signed with a newer key).
    No,
    /// No credential is held for the member: ask whoever passed the statement on.
    Unknown,
}

/// Signs our statements and checks other members' (see the module's text).
pub trait Keyring: Send {
    /// Our signature over `statement` (`None`: we cannot sign).
    fn sign(&self, statement: &[u8]) -> Option<Vec<u8>>;
    /// Whether `proof` shows that `name` made `statement`.
    fn verify(&self, name: &NodeName, statement: &[u8], proof: &[u8]) -> Proven;
    /// Takes `chain` as `name`'s credential if it checks out (issued by the cluster CA to
    /// that name, not revoked); false otherwise. Replaces an older one.
    fn learn(&mut self, name: &NodeName, chain: &[u8]) -> bool;
    /// Whether a credential is held for `name`.
    fn knows(&self, name: &NodeName) -> bool;
    /// Whether `chain` is the credential held for `name`.
    fn holds(&self, name: &NodeName, chain: &[u8]) -> bool;
    /// The credential held for `name` (ours included), to pass on.
    fn credential(&self, name: &NodeName) -> Option<Vec<u8>>;
    /// Drops what is held for `name` (the member was reaped).
    fn forget(&mut self, name: &NodeName);
}

/// Bytes of a model signature (an ECDSA P-256 signature takes 70–72 in DER, Ed25519 64).
const MODEL_PROOF_LEN: usize = 72;
/// Bytes of a model credential (a certificate from `swimd tls issue` takes about 480).
const MODEL_CREDENTIAL_LEN: usize = 480;

/// The simulator's and the tests' keyring: proofs and credentials of realistic sizes
/// derived from the member's name, so that nothing but a member's own keyring (or a
/// forger that copies this function, as a hostile test does on purpose) makes one.
#[derive(Debug, Clone)]
pub struct ModelKeyring {
    me: NodeName,
    /// Credentials held; `None`: every member's (no fetching modelled).
    known: Option<HashSet<NodeName>>,
}

impl ModelKeyring {
    /// A keyring that holds every member's credential from the start.
    pub fn knowing_all(me: NodeName) -> Self {
        ModelKeyring { me, known: None }
    }

    /// A keyring that holds only our own credential, and learns the others'.
    pub fn knowing_none(me: NodeName) -> Self {
        let known = HashSet::from([me.clone()]);
        ModelKeyring {
            me,
            known: Some(known),
        }
    }

    /// `name`'s model signature over `statement`.
    pub fn proof(name: &NodeName, statement: &[u8]) -> Vec<u8> {
        let key = hash64(name.as_str().as_bytes(), 0x0070_726f_6f66);
        let mut out = Vec::with_capacity(MODEL_PROOF_LEN);
        for i in 0..MODEL_PROOF_LEN.div_ceil(8) as u64 {
            out.extend_from_slice(&hash64(statement, key ^ i).to_be_bytes());
        }
        out.truncate(MODEL_PROOF_LEN);
        out
    }

    /// `name`'s model credential.
    pub fn credential_of(name: &NodeName) -> Vec<u8> {
        let mut out = b"model credential of ".to_vec();
        out.extend_from_slice(name.as_str().as_bytes());
        out.resize(MODEL_CREDENTIAL_LEN, 0);
        out
    }
}

impl Keyring for ModelKeyring {
    fn sign(&self, statement: &[u8]) -> Option<Vec<u8>> {
        Some(Self::proof(&self.me, statement))
    }

    fn verify(&self, name: &NodeName, statement: &[u8], proof: &[u8]) -> Proven {
        if !self.knows(name) {
            Proven::Unknown
        } else if Self::proof(name, statement) == proof {
            Proven::Yes
        } else {
            Proven::No
        }
    }

    fn learn(&mut self, name: &NodeName, chain: &[u8]) -> bool {
        if chain != Self::credential_of(name).as_slice() {
            return false;
        }
        if let Some(known) = &mut self.known {
            known.insert(name.clone());
        }
        true
    }

    fn knows(&self, name: &NodeName) -> bool {
        self.known.as_ref().is_none_or(|k| k.contains(name))
    }

    fn holds(&self, name: &NodeName, chain: &[u8]) -> bool {
        match &self.known {
            // Holding every member's: nothing to compare (10^8 times at 10,000 members).
            None => true,
            Some(known) => known.contains(name) && chain == Self::credential_of(name).as_slice(),
        }
    }

    fn credential(&self, name: &NodeName) -> Option<Vec<u8>> {
        self.knows(name).then(|| Self::credential_of(name))
    }

    fn forget(&mut self, name: &NodeName) {
        if let Some(known) = &mut self.known
            && *name != self.me
        {
            known.remove(name);
        }
    }
}
