//! The agent's [`Keyring`]: statements signed with the member's TLS key, checked against
//! certificates from the cluster CA (learnt in handshakes or passed on in push-pulls).
//!
//! A proof is the TLS signature scheme (2 bytes, big-endian) followed by the signature, so
//! that members with ECDSA, Ed25519 or RSA certificates can check each other.

use std::collections::HashMap;
use std::sync::Arc;

use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls::SignatureScheme;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::Signer;

use super::{TlsError, TlsIdentity, name_of};
use crate::core::{Keyring, Proven};
use crate::wire::{MAX_CREDENTIAL_LEN, NodeName};

/// Credentials held at most: every member an agent can hold (`core`'s bound) has one.
const MAX_HELD: usize = 65_536;
/// Certificates in a credential at most (leaf and intermediates).
const MAX_CHAIN: usize = 4;

/// Schemes we sign with, by preference: the key decides which one applies.
const SCHEMES: [SignatureScheme; 4] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

/// A credential checked: its bytes (to pass on) and its leaf's public key.
struct Held {
    chain: Arc<[u8]>,
    key: Vec<u8>,
}

/// Signs with our TLS key; checks with certificates the cluster CA issued.
pub struct ClusterKeyring {
    signer: Box<dyn Signer>,
    verifier: Arc<dyn ClientCertVerifier>,
    name: NodeName,
    held: HashMap<NodeName, Held>,
}

impl ClusterKeyring {
    /// The keyring of `identity`'s member: its key signs, its CA and revocation lists check.
    pub fn new(identity: &TlsIdentity) -> Result<ClusterKeyring, TlsError> {
        let key = identity
            .provider
            .key_provider
            .load_private_key(identity.key.clone_key())
            .map_err(TlsError::Config)?;
        let signer = key.choose_scheme(&SCHEMES).ok_or_else(|| {
            TlsError::Config(rustls::Error::General(format!(
                "tls.key: no signature scheme for statements fits a {:?} key",
                key.algorithm()
            )))
        })?;
        let mut keyring = ClusterKeyring {
            signer,
            verifier: identity.client_verifier()?,
            name: identity.name.clone(),
            held: HashMap::new(),
        };
        let own = concat(&identity.chain);
        if !keyring.learn(&identity.name.clone(), &own) {
            return Err(TlsError::Config(rustls::Error::General(
                "tls.cert: our own certificate does not check out as a credential".into(),
            )));
        }
        Ok(keyring)
    }

    /// Checks a chain (DER certificates back to back) against the CA, the revocation lists
    /// and `name`; returns its leaf's public key.
    fn check(&self, name: &NodeName, chain: &[u8]) -> Option<Vec<u8>> {
        if chain.len() > MAX_CREDENTIAL_LEN {
            return None;
        }
        let certs = split(chain)?;
        let (leaf, intermediates) = certs.split_first()?;
        self.verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .ok()?;
        if name_of(leaf)? != *name {
            return None;
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(leaf).ok()?;
        Some(parsed.public_key().subject_public_key.data.to_vec())
    }
}

impl Keyring for ClusterKeyring {
    fn sign(&self, statement: &[u8]) -> Option<Vec<u8>> {
        let signature = self.signer.sign(statement).ok()?;
        let mut proof = u16::from(self.signer.scheme()).to_be_bytes().to_vec();
        proof.extend_from_slice(&signature);
        Some(proof)
    }

    fn verify(&self, name: &NodeName, statement: &[u8], proof: &[u8]) -> Proven {
        let Some(held) = self.held.get(name) else {
            return Proven::Unknown;
        };
        let Some((scheme, signature)) = proof.split_first_chunk::<2>() else {
            return Proven::No;
        };
        let Some(algorithm) = algorithm(SignatureScheme::from(u16::from_be_bytes(*scheme))) else {
            return Proven::No;
        };
        match UnparsedPublicKey::new(algorithm, &held.key).verify(statement, signature) {
            Ok(()) => Proven::Yes,
            Err(_) => Proven::No,
        }
    }

    fn learn(&mut self, name: &NodeName, chain: &[u8]) -> bool {
        if self.held.len() >= MAX_HELD && !self.held.contains_key(name) {
            return false;
        }
        let Some(key) = self.check(name, chain) else {
            return false;
        };
        let chain = Arc::from(chain);
        self.held.insert(name.clone(), Held { chain, key });
        true
    }

    fn knows(&self, name: &NodeName) -> bool {
        self.held.contains_key(name)
    }

    fn holds(&self, name: &NodeName, chain: &[u8]) -> bool {
        self.held
            .get(name)
            .is_some_and(|held| *held.chain == *chain)
    }

    fn credential(&self, name: &NodeName) -> Option<Vec<u8>> {
        self.held.get(name).map(|held| held.chain.to_vec())
    }

    fn forget(&mut self, name: &NodeName) {
        if *name != self.name {
            self.held.remove(name);
        }
    }
}

/// The verification algorithm of a scheme we accept.
fn algorithm(scheme: SignatureScheme) -> Option<&'static dyn VerificationAlgorithm> {
    Some(match scheme {
        SignatureScheme::ED25519 => &signature::ED25519,
        SignatureScheme::ECDSA_NISTP256_SHA256 => &signature::ECDSA_P256_SHA256_ASN1,
        SignatureScheme::ECDSA_NISTP384_SHA384 => &signature::ECDSA_P384_SHA384_ASN1,
        SignatureScheme::RSA_PSS_SHA256 => &signature::RSA_PSS_2048_8192_SHA256,
        _ => return None,
    })
}

/// A chain as one credential: its DER certificates back to back.
pub fn concat(chain: &[CertificateDer<'_>]) -> Vec<u8> {
    chain
        .iter()
        .flat_map(|c| c.as_ref().iter().copied())
        .collect()
}

/// The certificates of a credential; `None` if it is not DER certificates back to back.
fn split(mut bytes: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let mut certs = Vec::new();
    while !bytes.is_empty() {
        if certs.len() == MAX_CHAIN {
            return None;
        }
        let (rest, _) = x509_parser::parse_x509_certificate(bytes).ok()?;
        let len = bytes.len() - rest.len();
        certs.push(CertificateDer::from(bytes.get(..len)?.to_vec()));
        bytes = rest;
    }
    Some(certs)
}
