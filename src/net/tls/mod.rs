//! Mutual TLS for the QUIC transport: the cluster CA, node certificates, and the rustls and
//! quinn configurations that bind a member's name to its certificate.
//!
//! Trust is the cluster CA alone: any certificate it signed belongs to a member, and that
//! member's name is the certificate's first DNS SubjectAltName (its CN as a fallback). A
//! client therefore ignores the name it dialed (seeds are dialed by address, name unknown);
//! the transport compares [`peer_name`] with the sender named in each message instead.
//!
//! Names are never matched by webpki's DNS rules, so every valid [`NodeName`] works,
//! underscores and all-digit labels included: the chain is verified without a name check.

mod issue;
mod keyring;
mod verify;

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::VerifierBuilderError;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;

use crate::wire::NodeName;
use issue::*;
pub use issue::{init_ca, issue, issue_days, revoke};
#[cfg(test)]
use keyring::concat;
pub use keyring::{ClusterKeyring, concat as credential_of_chain};
use verify::*;

/// ALPN protocol id of every swimd QUIC connection.
pub const ALPN: &[u8] = b"swim/1";

/// CA certificate file name inside a `swimd tls` directory.
pub const CA_CERT_FILE: &str = "ca.pem";

/// CA private key file name inside a `swimd tls` directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";

/// Why a CA, certificate or TLS configuration could not be made or loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or directory could not be read, written or inspected.
    #[error("{}: {error}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("{setting}: cannot read {}: {error}", .path.display())]
    Read {
        /// The setting (or role) the file was given as, e.g. `tls.cert`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: io::Error,
    },
    /// Creating a file would have replaced an existing one.
    #[error(
        "{} already exists; refusing to overwrite it (move it away or use another --dir)",
        .0.display()
    )]
    Exists(PathBuf),
    /// A file holds no usable PEM block of the expected kind.
    #[error("{setting}: {}: no readable {what} ({error}); expected a PEM file made by `swimd tls`", .path.display())]
    Pem {
        /// The setting (or role) the file was given as, e.g. `tls.cert`.
        setting: &'static str,
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// The PEM parser's complaint.
        error: pem::Error,
    },
    /// A private key file other users could read or replace.
    #[error(
        "{setting}: {} is {access} by other users (mode {mode:04o}); run chmod 600 {}",
        .path.display(), .path.display()
    )]
    KeyPermissions {
        /// The setting (or role) the file was given as, e.g. `tls.key`.
        setting: &'static str,
        /// The key file.
        path: PathBuf,
        /// `readable` or `writable`.
        access: &'static str,
        /// The file's permission bits.
        mode: u32,
    },
    /// A private key that does not belong to the certificate it was paired with.
    #[error("{setting}: {} does not match the certificate {} ({error}); use the key issued with it", .key.display(), .cert.display())]
    KeyMismatch {
        /// The setting (or role) the key was given as.
        setting: &'static str,
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// rustls' complaint.
        error: Box<rustls::Error>,
    },
    /// A node name `swimd tls issue` cannot use.
    #[error("invalid node name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A cluster name `swimd tls init` cannot use.
    #[error(
        "invalid cluster name {0:?}: use 1 to {MAX_CA_CLUSTER_LEN} bytes without control characters"
    )]
    InvalidCluster(String),
    /// A certificate that does not verify against the cluster CA.
    #[error(
        "tls.cert: {} does not verify against the cluster CA {} ({error}); issue it from that CA with `swimd tls issue`",
        .cert.display(), .ca.display()
    )]
    NotSignedByCa {
        /// The node certificate file.
        cert: PathBuf,
        /// The CA certificate file.
        ca: PathBuf,
        /// rustls' complaint.
        error: Box<rustls::Error>,
    },
    /// A certificate that names no valid node.
    #[error(
        "tls.cert: {} carries no valid node name (SubjectAltName DNS or CN); issue it with `swimd tls issue NAME`",
        .0.display()
    )]
    NoName(PathBuf),
    /// A certificate issued for another node.
    #[error(
        "tls.cert: {} is for node {found:?}, but this node is named {expected:?}; issue one with `swimd tls issue {expected}`",
        .cert.display()
    )]
    NameMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The name in the certificate.
        found: NodeName,
        /// This node's name.
        expected: NodeName,
    },
    /// `swimd tls issue` found no CA in its directory.
    #[error(
        "no cluster CA in {}: {CA_CERT_FILE} is missing; create one with `swimd tls init --dir {}` or pass the CA's --dir",
        .0.display(), .0.display()
    )]
    NoCa(PathBuf),
    /// A CA certificate swimd cannot issue from.
    #[error("{}: {reason}; make the CA with `swimd tls init`", .path.display())]
    UnusableCa {
        /// The CA certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate a key or certificate: {0}")]
    Generate(rcgen::Error),
    /// rustls refused the configuration.
    #[error("cannot build the TLS configuration: {0}")]
    Config(rustls::Error),
    /// rustls refused the client certificate verifier.
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(VerifierBuilderError),
    /// quinn refused the rustls configuration.
    #[error("cannot use the TLS configuration for QUIC: {0}")]
    Quic(NoInitialCipherSuite),
    /// A revocation list that does not parse, or that no CA in `tls.ca` signed.
    #[error("tls.crl: {}: {reason}; write it with `swimd tls revoke NAME --dir CA_DIR`", .path.display())]
    BadCrl {
        /// The CRL file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A certificate `swimd tls revoke` could not read.
    #[error("{}: {reason}", .path.display())]
    Unreadable {
        /// The certificate file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

// By hand rather than `#[from]`: each message already shows its cause, and a `#[from]` cause
// is also the `source`, which `{:#}` (anyhow) would print a second time.
impl From<rcgen::Error> for TlsError {
    fn from(error: rcgen::Error) -> Self {
        TlsError::Generate(error)
    }
}

impl From<rustls::Error> for TlsError {
    fn from(error: rustls::Error) -> Self {
        TlsError::Config(error)
    }
}

impl From<VerifierBuilderError> for TlsError {
    fn from(error: VerifierBuilderError) -> Self {
        TlsError::Verifier(error)
    }
}

impl From<NoInitialCipherSuite> for TlsError {
    fn from(error: NoInitialCipherSuite) -> Self {
        TlsError::Quic(error)
    }
}

/// A node's certificate, key and cluster CA, checked to belong together and to the node.
pub struct TlsIdentity {
    name: NodeName,
    roots: Arc<RootCertStore>,
    /// Revocation lists from `tls.crl`, each checked against a CA in `tls.ca`.
    crls: Vec<CertificateRevocationListDer<'static>>,
    /// When our certificate and the CA certificate that expires first stop being valid.
    expiry: Expiry,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("TlsIdentity")
            .field("name", &self.name)
            .field("roots", &self.roots.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// Unix seconds after which a certificate is no longer valid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Our own certificate.
    pub cert: i64,
    /// The CA certificate in `tls.ca` that expires first.
    pub ca: i64,
}

/// Loads and checks the identity of node `name`: files as set by `tls.ca`, `tls.cert`, `tls.key`.
pub fn load(ca: &Path, cert: &Path, key: &Path, name: &NodeName) -> Result<TlsIdentity, TlsError> {
    load_with_crl(ca, cert, key, None, name)
}

/// [`load`], with the revocation lists in `crl` (`tls.crl`): each must be signed by a CA in
/// `ca`, and our own certificate must not be on one.
pub fn load_with_crl(
    ca: &Path,
    cert: &Path,
    key: &Path,
    crl: Option<&Path>,
    name: &NodeName,
) -> Result<TlsIdentity, TlsError> {
    let provider = provider();
    let mut roots = RootCertStore::empty();
    // Every certificate in the CA file is trusted, so a new CA can be rolled in beside the old.
    let ca_certs = read_certs(ca, "tls.ca")?;
    for ca_cert in &ca_certs {
        roots
            .add(ca_cert.clone())
            .map_err(|e| TlsError::UnusableCa {
                path: ca.to_owned(),
                reason: format!("not a usable CA certificate ({e})"),
            })?;
    }
    let crls = match crl {
        Some(path) => read_crls(path, &ca_certs)?,
        None => Vec::new(),
    };
    let chain = read_certs(cert, "tls.cert")?;
    refuse_loose_permissions(key, "tls.key")?;
    let key_der = read_key(key, "tls.key")?;
    let not_after = |der: &CertificateDer<'_>| {
        x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c.validity().not_after.timestamp())
            .unwrap_or(0)
    };
    let expiry = Expiry {
        cert: chain.first().map_or(0, not_after),
        ca: ca_certs.iter().map(not_after).min().unwrap_or(0),
    };
    let identity = TlsIdentity {
        name: name.clone(),
        roots: Arc::new(roots),
        crls,
        expiry,
        chain,
        key: key_der,
        provider,
    };

    // The same verifiers the handshakes use, so a certificate that loads also works both ways.
    let leaf = &identity.chain[0];
    let intermediates = &identity.chain[1..];
    let now = UnixTime::now();
    let not_signed = |error| TlsError::NotSignedByCa {
        cert: cert.to_owned(),
        ca: ca.to_owned(),
        error: Box::new(error),
    };
    identity
        .server_verifier()?
        .verify_chain(leaf, intermediates, now)
        .map_err(not_signed)?;
    identity
        .client_verifier()?
        .verify_client_cert(leaf, intermediates, now)
        .map_err(not_signed)?;
    let found = name_of(leaf).ok_or_else(|| TlsError::NoName(cert.to_owned()))?;
    if found != *name {
        return Err(TlsError::NameMismatch {
            cert: cert.to_owned(),
            found,
            expected: name.clone(),
        });
    }
    keys_match(leaf, &identity.key, &identity.provider).map_err(|error| TlsError::KeyMismatch {
        setting: "tls.key",
        key: key.to_owned(),
        cert: cert.to_owned(),
        error: Box::new(error),
    })?;
    Ok(identity)
}

impl TlsIdentity {
    /// The node name the certificate carries.
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// When our certificate and the CA expire.
    pub fn expiry(&self) -> Expiry {
        self.expiry
    }

    /// Does a peer's certificate chain still verify, with these CAs and revocation lists,
    /// now? (Connections made under an earlier configuration are checked again on reload.)
    pub fn peer_still_valid(&self, chain: &[CertificateDer<'static>]) -> bool {
        let Some((leaf, intermediates)) = chain.split_first() else {
            return false;
        };
        self.client_verifier()
            .and_then(|v| {
                v.verify_client_cert(leaf, intermediates, UnixTime::now())
                    .map_err(TlsError::Config)
            })
            .is_ok()
    }

    /// TLS 1.3 server side: requires a client certificate from the cluster CA.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(self.client_verifier()?)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS 1.3 client side: presents our certificate, accepts any server the cluster CA signed.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self.server_verifier()?))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// A client that trusts the cluster's CA but shows no certificate: an outsider, for tests.
    #[cfg(test)]
    pub(crate) fn quinn_anonymous_client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(self.server_verifier()?))
            .with_no_client_auth();
        config.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = QuicClientConfig::try_from(config)?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }

    /// [`TlsIdentity::server_config`] for a quinn endpoint (transport settings left default).
    pub fn quinn_server_config(&self) -> Result<quinn::ServerConfig, TlsError> {
        let crypto = QuicServerConfig::try_from(self.server_config()?)?;
        Ok(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
    }

    /// [`TlsIdentity::client_config`] for a quinn endpoint (transport settings left default).
    pub fn quinn_client_config(&self) -> Result<quinn::ClientConfig, TlsError> {
        let crypto = QuicClientConfig::try_from(self.client_config()?)?;
        Ok(quinn::ClientConfig::new(Arc::new(crypto)))
    }

    fn server_verifier(&self) -> Result<ClusterServerVerifier, TlsError> {
        Ok(ClusterServerVerifier {
            chain: self.client_verifier()?,
            algorithms: self.provider.signature_verification_algorithms,
        })
    }

    fn client_verifier(&self) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
        cluster_verifier(self.roots.clone(), &self.crls, &self.provider)
    }
}

/// The node name in the certificate of the peer on `conn`, once the handshake has verified it.
pub fn peer_name(conn: &quinn::Connection) -> Option<NodeName> {
    name_of(peer_chain(conn)?.first()?)
}

/// The certificate chain the peer on `conn` presented, once the handshake has verified it.
pub fn peer_chain(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|chain| *chain)
}

/// The node name a certificate carries: its first DNS SubjectAltName, else its CN.
///
/// A certificate whose first DNS name is not a valid [`NodeName`] names no node: falling
/// back to the CN then would let two certificate fields disagree about who the peer is.
pub fn name_of(cert: &CertificateDer<'_>) -> Option<NodeName> {
    let name = match first_dns_name(cert) {
        Some(dns) => dns,
        None => String::from_utf8(common_name(cert)?.1).ok()?,
    };
    NodeName::validate(&name).ok()?;
    Some(NodeName::new(&name))
}

/// Explicit rather than process-wide, so no other crate's choice of provider can change ours.
pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |error| TlsError::Io {
        path: path.to_owned(),
        error,
    }
}

pub(super) fn read_error<'a>(
    path: &'a Path,
    setting: &'static str,
) -> impl FnOnce(io::Error) -> TlsError + 'a {
    move |error| TlsError::Read {
        setting,
        path: path.to_owned(),
        error,
    }
}

/// Every certificate in a PEM file; at least one.
pub(super) fn read_certs(
    path: &Path,
    setting: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |error| TlsError::Pem {
        setting,
        path: path.to_owned(),
        what: "certificate",
        error,
    };
    let bytes = fs::read(path).map_err(read_error(path, setting))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(pem_error(pem::Error::NoItemsFound));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, SEC1 or PKCS#1) in a PEM file.
pub(super) fn read_key(
    path: &Path,
    setting: &'static str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(read_error(path, setting))?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsError::Pem {
        setting,
        path: path.to_owned(),
        what: "private key",
        error,
    })
}

/// Refuses a private key other users can read, or anyone but its owner can replace.
///
/// Group read is allowed: it is how a root-owned key is shared with the daemon's group
/// (`root:swimd`, mode 0640), the arrangement PostgreSQL also accepts.
pub(super) fn refuse_loose_permissions(path: &Path, setting: &'static str) -> Result<(), TlsError> {
    let mode = fs::metadata(path)
        .map_err(read_error(path, setting))?
        .permissions()
        .mode()
        & 0o7777;
    let access = if mode & 0o004 != 0 {
        "readable"
    } else if mode & 0o022 != 0 {
        "writable"
    } else {
        return Ok(());
    };
    Err(TlsError::KeyPermissions {
        setting,
        path: path.to_owned(),
        access,
        mode,
    })
}

/// Whether `key` is the private half of `cert`'s public key.
pub(super) fn keys_match(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<(), rustls::Error> {
    CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), provider).map(drop)
}

/// A certificate's first subject commonName: its string type (as a DER tag) and bytes.
pub(super) fn common_name(cert: &[u8]) -> Option<(x509_parser::der_parser::asn1_rs::Tag, Vec<u8>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    let value = cn.attr_value();
    Some((value.tag(), value.data.to_vec()))
}

/// The first DNS name of a certificate's subjectAltName, if it has one.
pub(super) fn first_dns_name(cert: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = parsed.subject_alternative_name().ok().flatten()?;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_string()),
        _ => None,
    })
}

/// Makes ring the process's rustls provider (the HTTP client finds it there); idempotent.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU32, Ordering};

    use std::net::IpAddr;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

    use super::*;

    /// A scratch directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(label: &str) -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "swimd-tls-{label}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            // Left over from an earlier run that had the same pid and crashed.
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn cert_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}.pem"))
    }

    fn key_path(dir: &Path, name: &str) -> PathBuf {
        dir.join(format!("{name}-key.pem"))
    }

    fn load_node(dir: &Path, name: &str) -> Result<TlsIdentity, TlsError> {
        load_mixed(dir, (dir, name), name, name)
    }

    /// A CA and node-1 in a fresh folder, node-1's key file given `mode`.
    fn node_1_with_key_mode(test: &str, mode: u32) -> (TempDir, PathBuf) {
        let tmp = TempDir::new(test);
        cluster(&tmp.0, &["node-1"]);
        let key = key_path(&tmp.0, "node-1");
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
        (tmp, key)
    }

    /// Loads as `name` the CA of `ca_dir` with the certificate `cert` (its folder and file
    /// name) and the key made for `key`: the pieces a misconfiguration mixes up.
    fn load_mixed(
        ca_dir: &Path,
        (cert_dir, cert): (&Path, &str),
        key: &str,
        name: &str,
    ) -> Result<TlsIdentity, TlsError> {
        load(
            &ca_dir.join(CA_CERT_FILE),
            &cert_path(cert_dir, cert),
            &key_path(cert_dir, key),
            &NodeName::new(name),
        )
    }

    /// A fresh CA in `dir` with a loaded certificate for each of `names`.
    fn cluster(dir: &Path, names: &[&str]) -> Vec<TlsIdentity> {
        init_ca(dir, "test").unwrap();
        names
            .iter()
            .map(|name| {
                issue(dir, name, &[IpAddr::from([127, 0, 0, 1])]).unwrap();
                load_node(dir, name).unwrap()
            })
            .collect()
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn init_issue_load_round_trip_binds_the_name() {
        let tmp = TempDir::new("round-trip");
        let written = init_ca(&tmp.0, "prod").unwrap();
        assert_eq!(written, [tmp.0.join("ca.pem"), tmp.0.join("ca-key.pem")]);
        let written = issue(&tmp.0, "node-1", &[IpAddr::from([10, 0, 0, 1])]).unwrap();
        assert_eq!(
            written,
            [cert_path(&tmp.0, "node-1"), key_path(&tmp.0, "node-1")]
        );

        let identity = load_node(&tmp.0, "node-1").unwrap();
        assert_eq!(identity.name().as_str(), "node-1");
        assert_eq!(name_of(&identity.chain[0]), Some(NodeName::new("node-1")));
        identity.quinn_server_config().unwrap();
        identity.quinn_client_config().unwrap();
        let ca = CertificateDer::from_pem_file(tmp.0.join("ca.pem")).unwrap();
        assert_eq!(common_name(&ca).unwrap().1, b"swimd CA prod");
    }

    #[test]
    fn key_files_are_created_private() {
        let tmp = TempDir::new("modes");
        cluster(&tmp.0, &["node-1"]);
        assert_eq!(mode_of(&tmp.0.join("ca-key.pem")), 0o600);
        assert_eq!(mode_of(&key_path(&tmp.0, "node-1")), 0o600);
        assert_eq!(mode_of(&tmp.0) & 0o077, 0, "the CA directory is private");
    }

    #[test]
    fn load_rejects_world_readable_key_with_chmod_hint() {
        let (tmp, key) = node_1_with_key_mode("world-readable", 0o644);
        let err = load_node(&tmp.0, "node-1").unwrap_err();
        assert!(matches!(err, TlsError::KeyPermissions { .. }), "{err}");
        let shown = key.display();
        assert_eq!(
            err.to_string(),
            format!(
                "tls.key: {shown} is readable by other users (mode 0644); run chmod 600 {shown}"
            )
        );
    }

    #[test]
    fn load_rejects_group_writable_key_but_allows_group_read() {
        let (tmp, key) = node_1_with_key_mode("group", 0o660);
        let err = load_node(&tmp.0, "node-1").unwrap_err();
        assert!(
            err.to_string()
                .contains("is writable by other users (mode 0660)"),
            "{err}"
        );
        fs::set_permissions(&key, fs::Permissions::from_mode(0o640)).unwrap();
        load_node(&tmp.0, "node-1").unwrap();
    }

    #[test]
    fn load_rejects_certificate_for_another_name() {
        let tmp = TempDir::new("other-name");
        cluster(&tmp.0, &["node-1"]);
        let err = load_mixed(&tmp.0, (&tmp.0, "node-1"), "node-1", "node-2").unwrap_err();
        assert!(matches!(err, TlsError::NameMismatch { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("\"node-1\"") && message.contains("\"node-2\""),
            "{message}"
        );
    }

    #[test]
    fn load_rejects_certificate_from_another_ca() {
        let ours = TempDir::new("our-ca");
        let theirs = TempDir::new("their-ca");
        init_ca(&ours.0, "ours").unwrap();
        cluster(&theirs.0, &["node-1"]);
        let err = load_mixed(&ours.0, (&theirs.0, "node-1"), "node-1", "node-1").unwrap_err();
        assert!(matches!(err, TlsError::NotSignedByCa { .. }), "{err}");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn load_rejects_key_of_another_certificate() {
        let tmp = TempDir::new("other-key");
        cluster(&tmp.0, &["node-1", "node-2"]);
        let err = load_mixed(&tmp.0, (&tmp.0, "node-1"), "node-2", "node-1").unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn init_ca_refuses_to_overwrite() {
        let tmp = TempDir::new("init-twice");
        init_ca(&tmp.0, "test").unwrap();
        let before = fs::read(tmp.0.join("ca-key.pem")).unwrap();
        let err = init_ca(&tmp.0, "test").unwrap_err();
        assert!(
            matches!(&err, TlsError::Exists(path) if path.ends_with("ca.pem")),
            "{err}"
        );
        assert!(err.to_string().contains("refusing to overwrite"), "{err}");
        assert_eq!(fs::read(tmp.0.join("ca-key.pem")).unwrap(), before);
    }

    #[test]
    fn init_ca_refuses_to_overwrite_a_lone_key() {
        let tmp = TempDir::new("lone-key");
        fs::create_dir_all(&tmp.0).unwrap();
        fs::write(tmp.0.join("ca-key.pem"), "precious").unwrap();
        let err = init_ca(&tmp.0, "test").unwrap_err();
        assert!(
            matches!(&err, TlsError::Exists(path) if path.ends_with("ca-key.pem")),
            "{err}"
        );
        assert!(
            !tmp.0.join("ca.pem").exists(),
            "nothing is written when any file exists"
        );
        assert_eq!(fs::read(tmp.0.join("ca-key.pem")).unwrap(), b"precious");
    }

    #[test]
    fn issue_refuses_to_overwrite() {
        let tmp = TempDir::new("issue-twice");
        cluster(&tmp.0, &["node-1"]);
        let before = fs::read(key_path(&tmp.0, "node-1")).unwrap();
        let err = issue(&tmp.0, "node-1", &[]).unwrap_err();
        assert!(
            matches!(&err, TlsError::Exists(path) if path.ends_with("node-1.pem")),
            "{err}"
        );
        assert_eq!(fs::read(key_path(&tmp.0, "node-1")).unwrap(), before);
    }

    #[test]
    fn issue_rejects_names_that_are_not_node_names() {
        let tmp = TempDir::new("bad-names");
        init_ca(&tmp.0, "test").unwrap();
        for name in ["", "has space", "slash/name", "ca", &"x".repeat(65)] {
            let err = issue(&tmp.0, name, &[]).unwrap_err();
            assert!(
                matches!(err, TlsError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn issue_without_a_ca_names_the_missing_file() {
        let tmp = TempDir::new("no-ca");
        fs::create_dir_all(&tmp.0).unwrap();
        let err = issue(&tmp.0, "node-1", &[]).unwrap_err();
        assert!(matches!(err, TlsError::NoCa(_)), "{err}");
        assert!(err.to_string().contains("swimd tls init --dir"), "{err}");
    }

    #[test]
    fn underscores_and_digit_names_are_usable() {
        let tmp = TempDir::new("underscore");
        for identity in cluster(&tmp.0, &["node_1", "_x_", "10.0.0.7"]) {
            assert_eq!(name_of(&identity.chain[0]).as_ref(), Some(identity.name()));
        }
    }

    #[test]
    fn name_of_falls_back_to_the_common_name() {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "cn-only");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(name_of(cert.der()), Some(NodeName::new("cn-only")));
    }

    #[test]
    fn name_of_never_panics_on_truncated_or_corrupt_certificates() {
        let tmp = TempDir::new("corrupt");
        let identity = cluster(&tmp.0, &["node-1"]).remove(0);
        let der = identity.chain[0].as_ref();
        for len in 0..der.len() {
            assert_eq!(name_of(&CertificateDer::from(&der[..len])), None);
        }
        for at in 0..der.len() {
            let mut corrupt = der.to_vec();
            corrupt[at] ^= 0xff;
            let _ = name_of(&CertificateDer::from(corrupt));
        }
    }

    /// Runs one handshake on loopback; each side's connection or error, or `None` for a side
    /// that was still waiting when the other side failed.
    async fn handshake(
        server: &TlsIdentity,
        client: &TlsIdentity,
    ) -> (
        Result<quinn::Connection, quinn::ConnectionError>,
        Result<quinn::Connection, quinn::ConnectionError>,
    ) {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server_endpoint =
            quinn::Endpoint::server(server.quinn_server_config().unwrap(), loopback).unwrap();
        let client_endpoint = quinn::Endpoint::client(loopback).unwrap();
        let server_addr = server_endpoint.local_addr().unwrap();
        // Dialed by a name no certificate carries, as seeds are: the name must not matter.
        let connecting = client_endpoint
            .connect_with(client.quinn_client_config().unwrap(), server_addr, "seed")
            .unwrap();
        let accepting = async { server_endpoint.accept().await.unwrap().await };
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(accepting, connecting)
        })
        .await
        .expect("both sides finish or fail a loopback handshake within 10 s")
    }

    /// Whether a side's handshake ended without a usable connection: it failed, or the peer
    /// closed the connection right after our side thought it done (a TLS 1.3 client finishes
    /// before the server has checked the client's certificate).
    async fn refused(side: Result<quinn::Connection, quinn::ConnectionError>) -> bool {
        match side {
            Err(_) => true,
            Ok(conn) => tokio::time::timeout(Duration::from_secs(10), conn.closed())
                .await
                .is_ok(),
        }
    }

    #[tokio::test]
    async fn a_revoked_member_is_refused_both_ways_and_its_own_agent_will_not_load() {
        let tmp = TempDir::new("revoke");
        let nodes = cluster(&tmp.0, &["node-a", "node-b", "node-c"]);
        let crl = revoke(&tmp.0, "node-b").unwrap();
        let with_crl = |name: &str| {
            load_with_crl(
                &tmp.0.join(CA_CERT_FILE),
                &cert_path(&tmp.0, name),
                &key_path(&tmp.0, name),
                Some(&crl),
                &NodeName::new(name),
            )
        };
        let a = with_crl("node-a").unwrap();
        let err = with_crl("node-b").unwrap_err();
        assert!(err.to_string().contains("Revoked"), "{err}");
        assert!(!a.peer_still_valid(&nodes[1].chain));
        assert!(a.peer_still_valid(&nodes[2].chain));
        // A member holding the list refuses the revoked one as client and as server.
        let (server, client) = handshake(&a, &nodes[1]).await;
        assert!(refused(server).await && refused(client).await);
        let (server, client) = handshake(&nodes[1], &a).await;
        assert!(refused(client).await && refused(server).await);
        let (server, client) = handshake(&a, &nodes[2]).await;
        assert!(server.is_ok() && client.is_ok(), "others are unaffected");
        // A second revocation keeps the first.
        revoke(&tmp.0, "node-c").unwrap();
        let a = with_crl("node-a").unwrap();
        assert!(!a.peer_still_valid(&nodes[1].chain) && !a.peer_still_valid(&nodes[2].chain));
        assert!(a.peer_still_valid(&nodes[0].chain));
    }

    #[test]
    fn a_crl_that_does_not_parse_or_that_another_ca_signed_is_refused_at_load() {
        let ours = TempDir::new("crl-ours");
        let theirs = TempDir::new("crl-theirs");
        cluster(&ours.0, &["node-a"]);
        cluster(&theirs.0, &["node-x"]);
        let foreign = revoke(&theirs.0, "node-x").unwrap();
        let garbage = ours.0.join("garbage.pem");
        fs::write(
            &garbage,
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        let empty = ours.0.join("empty.pem");
        fs::write(&empty, "").unwrap();
        for crl in [&foreign, &garbage, &empty] {
            let err = load_with_crl(
                &ours.0.join(CA_CERT_FILE),
                &cert_path(&ours.0, "node-a"),
                &key_path(&ours.0, "node-a"),
                Some(crl),
                &NodeName::new("node-a"),
            )
            .unwrap_err();
            assert!(
                matches!(err, TlsError::BadCrl { .. }) && err.to_string().starts_with("tls.crl: "),
                "{}: {err}",
                crl.display()
            );
        }
        // Revoking a certificate another CA issued is refused too.
        fs::copy(cert_path(&theirs.0, "node-x"), cert_path(&ours.0, "node-x")).unwrap();
        let err = revoke(&ours.0, "node-x").unwrap_err();
        assert!(err.to_string().contains("not by this CA"), "{err}");
    }

    #[test]
    fn issue_days_sets_the_validity_the_expiry_reports() {
        let tmp = TempDir::new("days");
        init_ca(&tmp.0, "test").unwrap();
        issue_days(&tmp.0, "node-a", &[], Some(30)).unwrap();
        let id = load_node(&tmp.0, "node-a").unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let left = id.expiry().cert - now;
        assert!((29 * 86_400..=30 * 86_400).contains(&left), "{left} s left");
        assert!(id.expiry().ca > id.expiry().cert);
    }

    /// An identity that trusts `trusting`'s CA but presents `presenting`'s certificate, so only
    /// the peer's verifier can refuse it.
    fn impostor(trusting: &TlsIdentity, presenting: &TlsIdentity) -> TlsIdentity {
        TlsIdentity {
            name: presenting.name.clone(),
            roots: trusting.roots.clone(),
            crls: trusting.crls.clone(),
            expiry: presenting.expiry,
            chain: presenting.chain.clone(),
            key: presenting.key.clone_key(),
            provider: presenting.provider.clone(),
        }
    }

    #[tokio::test]
    async fn members_of_one_ca_handshake_and_see_each_others_names() {
        let tmp = TempDir::new("handshake");
        let nodes = cluster(&tmp.0, &["node-a", "node_b"]);
        let (server_side, client_side) = handshake(&nodes[0], &nodes[1]).await;
        let (server_side, client_side) = (server_side.unwrap(), client_side.unwrap());
        assert_eq!(peer_name(&server_side), Some(NodeName::new("node_b")));
        assert_eq!(peer_name(&client_side), Some(NodeName::new("node-a")));
        assert_eq!(
            client_side.handshake_data().and_then(|data| data
                .downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()?
                .protocol),
            Some(ALPN.to_vec())
        );
    }

    #[tokio::test]
    async fn client_with_a_certificate_from_another_ca_is_refused() {
        let ours = TempDir::new("bad-client-ours");
        let theirs = TempDir::new("bad-client-theirs");
        let server = cluster(&ours.0, &["node-a"]).remove(0);
        let stranger = cluster(&theirs.0, &["node-b"]).remove(0);
        let (server_side, client_side) = handshake(&server, &impostor(&server, &stranger)).await;
        let server_error = server_side.as_ref().map(|_| ()).unwrap_err().to_string();
        assert!(
            server_error.contains("invalid peer certificate"),
            "{server_error}"
        );
        assert!(refused(client_side).await);
    }

    #[tokio::test]
    async fn server_with_a_certificate_from_another_ca_is_refused() {
        let ours = TempDir::new("bad-server-ours");
        let theirs = TempDir::new("bad-server-theirs");
        let client = cluster(&ours.0, &["node-a"]).remove(0);
        let stranger = cluster(&theirs.0, &["node-b"]).remove(0);
        let (server_side, client_side) = handshake(&impostor(&client, &stranger), &client).await;
        let client_error = client_side.as_ref().map(|_| ()).unwrap_err().to_string();
        assert!(
            client_error.contains("invalid peer certificate"),
            "{client_error}"
        );
        assert!(refused(server_side).await);
    }

    // ----- statements' proofs (keyring.rs) -----------------------------------------------

    use crate::core::{Keyring, Proven};

    #[test]
    fn a_statement_checks_out_only_as_its_members_with_its_credential() {
        let tmp = TempDir::new("keyring");
        let nodes = cluster(&tmp.0, &["node-1", "node-2"]);
        let one = ClusterKeyring::new(&nodes[0]).unwrap();
        let mut two = ClusterKeyring::new(&nodes[1]).unwrap();
        let (node_1, node_3) = (NodeName::new("node-1"), NodeName::new("node-3"));
        let proof = one.sign(b"node-1 alive at 7").unwrap();
        assert_eq!(
            two.verify(&node_1, b"node-1 alive at 7", &proof),
            Proven::Unknown
        );
        assert!(two.learn(&node_1, &concat(&nodes[0].chain)));
        assert!(two.holds(&node_1, &concat(&nodes[0].chain)));
        assert_eq!(
            two.verify(&node_1, b"node-1 alive at 7", &proof),
            Proven::Yes
        );
        assert_eq!(
            two.verify(&node_1, b"node-1 alive at 8", &proof),
            Proven::No
        );
        // node-2's own signature is no proof of node-1's word, nor is a truncated one.
        let forged = two.sign(b"node-1 alive at 7").unwrap();
        assert_eq!(
            two.verify(&node_1, b"node-1 alive at 7", &forged),
            Proven::No
        );
        assert_eq!(
            two.verify(&node_1, b"node-1 alive at 7", &proof[..1]),
            Proven::No
        );
        assert_eq!(
            two.verify(&node_3, b"node-3 alive", &proof),
            Proven::Unknown
        );
        // What a keyring passes on is what it learnt; forgetting keeps our own.
        assert_eq!(two.credential(&node_1), Some(concat(&nodes[0].chain)));
        two.forget(&node_1);
        two.forget(&NodeName::new("node-2"));
        assert!(!two.knows(&node_1) && two.knows(&NodeName::new("node-2")));
    }

    #[test]
    fn a_credential_not_from_the_cluster_ca_or_for_another_name_or_revoked_is_not_learnt() {
        let (ours, theirs) = (TempDir::new("keyring-ours"), TempDir::new("keyring-theirs"));
        let nodes = cluster(&ours.0, &["node-1", "node-2", "node-3"]);
        let foreign = cluster(&theirs.0, &["node-2"]);
        let crl = revoke(&ours.0, "node-3").unwrap();
        let with_crl = load_with_crl(
            &ours.0.join(CA_CERT_FILE),
            &cert_path(&ours.0, "node-1"),
            &key_path(&ours.0, "node-1"),
            Some(&crl),
            &NodeName::new("node-1"),
        )
        .unwrap();
        let mut keyring = ClusterKeyring::new(&with_crl).unwrap();
        let name = |n: &str| NodeName::new(n);
        assert!(!keyring.learn(&name("node-2"), &concat(&foreign[0].chain)));
        assert!(!keyring.learn(&name("node-1"), &concat(&nodes[1].chain)));
        assert!(
            !keyring.learn(&name("node-3"), &concat(&nodes[2].chain)),
            "revoked"
        );
        let chain = concat(&nodes[1].chain);
        assert!(!keyring.learn(&name("node-2"), &chain[..chain.len() - 1]));
        assert!(!keyring.learn(&name("node-2"), &[&chain[..], b"x"].concat()));
        assert!(!keyring.learn(&name("node-2"), b"not a certificate at all"));
        assert!(keyring.learn(&name("node-2"), &chain));
    }
}
