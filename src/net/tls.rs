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

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{VerifierBuilderError, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use x509_parser::prelude::FromDer;

use crate::wire::NodeName;

/// ALPN protocol id of every swimd QUIC connection.
pub const ALPN: &[u8] = b"swim/1";

/// CA certificate file name inside a `swimd tls` directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// CA private key file name inside a `swimd tls` directory.
pub const CA_KEY_FILE: &str = "ca-key.pem";

const CA_VALIDITY: Duration = Duration::from_secs(3652 * 86_400);
const NODE_VALIDITY: Duration = Duration::from_secs(1826 * 86_400);
/// Certificates start an hour early so nodes whose clocks lag the issuing machine accept them.
const BACKDATE: Duration = Duration::from_secs(3600);
/// Longest cluster name `swimd tls init` accepts: the CA's common name, `swimd CA <cluster>`,
/// must fit RFC 5280's 64 characters (the configuration allows longer names, `config::MAX_CLUSTER_LEN`).
const MAX_CA_CLUSTER_LEN: usize = 64 - "swimd CA ".len();

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

/// Creates `dir` (mode 0700 if new) and writes a new cluster CA there; the files written.
pub fn init_ca(dir: &Path, cluster: &str) -> Result<Vec<PathBuf>, TlsError> {
    if cluster.is_empty()
        || cluster.len() > MAX_CA_CLUSTER_LEN
        || cluster.chars().any(char::is_control)
    {
        return Err(TlsError::InvalidCluster(cluster.to_owned()));
    }
    let files = [dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE)];
    refuse_existing(&files)?;
    // The CA key is the cluster's master secret: keep its directory private too.
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_error(dir))?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let cert = ca_params(DnValue::from(format!("swimd CA {cluster}"))).self_signed(&key)?;
    let [cert_path, key_path] = files;
    write_new(&[
        (&cert_path, &cert.pem(), 0o644),
        (&key_path, &key.serialize_pem(), 0o600),
    ])?;
    Ok(vec![cert_path, key_path])
}

/// The CA in `dir`, ready to sign: its certificate, and an issuer rebuilt from it.
struct Ca {
    path: PathBuf,
    cert: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn open(dir: &Path) -> Result<Ca, TlsError> {
        let ca_path = dir.join(CA_CERT_FILE);
        let ca_key_path = dir.join(CA_KEY_FILE);
        if fs::symlink_metadata(&ca_path).is_err() {
            return Err(TlsError::NoCa(dir.to_owned()));
        }
        let ca_cert = read_certs(&ca_path, "CA certificate")?.swap_remove(0);
        check_key_permissions(&ca_key_path, "CA key")?;
        let ca_key_der = read_key(&ca_key_path, "CA key")?;
        let provider = provider();
        keys_match(&ca_cert, &ca_key_der, &provider).map_err(|error| TlsError::KeyMismatch {
            setting: "CA key",
            key: ca_key_path.clone(),
            cert: ca_path.clone(),
            error: Box::new(error),
        })?;
        let ca_key = KeyPair::try_from(&ca_key_der)?;
        // The issuer is rebuilt from the CA's common name (as `init_ca` made it); what it
        // signs is checked against the CA certificate itself before it is written.
        let ca_name = common_name(&ca_cert)
            .and_then(|(tag, value)| dn_value(tag, &value))
            .ok_or_else(|| TlsError::UnusableCa {
                path: ca_path.clone(),
                reason: "its subject has no readable common name".into(),
            })?;
        Ok(Ca {
            path: ca_path,
            cert: ca_cert,
            issuer: Issuer::new(ca_params(ca_name), ca_key),
        })
    }

    fn unusable(&self, reason: String) -> TlsError {
        TlsError::UnusableCa {
            path: self.path.clone(),
            reason,
        }
    }
}

/// Issues a certificate for node `name` (reachable at `ips`) from the CA in `dir`, valid for
/// five years; the files written.
pub fn issue(dir: &Path, name: &str, ips: &[IpAddr]) -> Result<Vec<PathBuf>, TlsError> {
    issue_days(dir, name, ips, None)
}

/// [`issue`], valid for `days` (`None`: five years).
pub fn issue_days(
    dir: &Path,
    name: &str,
    ips: &[IpAddr],
    days: Option<u32>,
) -> Result<Vec<PathBuf>, TlsError> {
    NodeName::validate(name).map_err(|reason| TlsError::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    if name == "ca" || name == "crl" {
        return Err(TlsError::InvalidName {
            name: name.to_owned(),
            reason: "its files would be the CA's own (ca.pem, ca-key.pem, crl.pem)",
        });
    }
    let files = [
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}-key.pem")),
    ];
    refuse_existing(&files)?;
    let ca = Ca::open(dir)?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    let lifetime = days.map_or(NODE_VALIDITY, |d| {
        Duration::from_secs(u64::from(d) * 86_400)
    });
    set_validity(&mut params, lifetime);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.subject_alt_names = std::iter::once(SanType::DnsName(name.try_into()?))
        .chain(ips.iter().copied().map(SanType::IpAddress))
        .collect();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    // A random serial, so that a revocation list can name this certificate alone.
    params.serial_number = Some(rcgen::SerialNumber::from_slice(&random_serial()?));
    let cert = params.signed_by(&key, &ca.issuer)?;

    let mut roots = RootCertStore::empty();
    roots
        .add(ca.cert.clone())
        .map_err(|e| ca.unusable(e.to_string()))?;
    cluster_verifier(Arc::new(roots), &[], &provider())?
        .verify_client_cert(cert.der(), &[], UnixTime::now())
        .map_err(|e| {
            ca.unusable(format!(
                "a certificate issued from it does not verify ({e})"
            ))
        })?;

    let [cert_path, key_path] = files;
    write_new(&[
        (&cert_path, &cert.pem(), 0o644),
        (&key_path, &key.serialize_pem(), 0o600),
    ])?;
    Ok(vec![cert_path, key_path])
}

/// Revokes node `name`'s certificate (`DIR/NAME.pem`) with the CA in `dir`: writes
/// `DIR/crl.pem`, keeping what it already revoked, with a higher CRL number. The file to copy
/// to every node's `tls.crl`.
pub fn revoke(dir: &Path, name: &str) -> Result<PathBuf, TlsError> {
    NodeName::validate(name).map_err(|reason| TlsError::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    let ca = Ca::open(dir)?;
    let cert_path = dir.join(format!("{name}.pem"));
    let cert = read_certs(&cert_path, "certificate to revoke")?.swap_remove(0);
    let unreadable = |path: &Path, reason: String| TlsError::Unreadable {
        path: path.to_owned(),
        reason,
    };
    let (_, parsed) = x509_parser::parse_x509_certificate(&cert)
        .map_err(|e| unreadable(&cert_path, format!("not a certificate ({e})")))?;
    let ca_parsed = x509_parser::parse_x509_certificate(&ca.cert)
        .map_err(|e| ca.unusable(format!("not a certificate ({e})")))?
        .1;
    if parsed.issuer() != ca_parsed.subject()
        || parsed
            .verify_signature(Some(ca_parsed.public_key()))
            .is_err()
    {
        return Err(unreadable(
            &cert_path,
            format!("issued by {}, not by this CA", parsed.issuer()),
        ));
    }
    let at = |secs: i64| {
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    let now = at(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)));
    let serial = parsed.raw_serial().to_vec();
    let crl_path = dir.join("crl.pem");
    let mut revoked = Vec::new();
    let mut number = 1u64;
    if fs::symlink_metadata(&crl_path).is_ok() {
        for der in read_crls(&crl_path, std::slice::from_ref(&ca.cert))? {
            let (_, old) = x509_parser::revocation_list::CertificateRevocationList::from_der(&der)
                .map_err(|e| unreadable(&crl_path, format!("does not parse ({e})")))?;
            let old_number = old
                .crl_number()
                .and_then(|n| u64::try_from(n.clone()).ok())
                .unwrap_or(0);
            number = number.max(old_number.saturating_add(1));
            for entry in old.iter_revoked_certificates() {
                if entry.raw_serial() != serial.as_slice() {
                    revoked.push(rcgen::RevokedCertParams {
                        serial_number: rcgen::SerialNumber::from_slice(entry.raw_serial()),
                        revocation_time: at(entry.revocation_date.timestamp()),
                        reason_code: None,
                        invalidity_date: None,
                    });
                }
            }
        }
    }
    revoked.push(rcgen::RevokedCertParams {
        serial_number: rcgen::SerialNumber::from_slice(&serial),
        revocation_time: now,
        reason_code: None,
        invalidity_date: None,
    });
    let params = rcgen::CertificateRevocationListParams {
        this_update: now,
        // Nodes do not enforce it (a stale list still revokes); a year leaves room.
        next_update: now + time::Duration::days(365),
        crl_number: rcgen::SerialNumber::from(number),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca.issuer)?;
    // Checked as nodes will check it: it parses, and the CA signed it.
    let pem = crl.pem()?;
    let tmp = dir.join(".crl.pem.tmp");
    let _ = fs::remove_file(&tmp);
    write_new(&[(&tmp, &pem, 0o644)])?;
    read_crls(&tmp, std::slice::from_ref(&ca.cert))?;
    fs::rename(&tmp, &crl_path).map_err(io_error(&crl_path))?;
    Ok(crl_path)
}

/// 16 random bytes, the top bit clear (a serial number is a positive integer).
fn random_serial() -> Result<[u8; 16], TlsError> {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| TlsError::Generate(rcgen::Error::RingUnspecified))?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    Ok(serial)
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
    check_key_permissions(key, "tls.key")?;
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
    let chain = conn
        .peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()?;
    name_of(chain.first()?)
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

/// Accepts a server certificate that chains to the cluster CA whatever name it was dialed
/// by: seeds are dialed by address, and the peer's name is bound afterwards by [`peer_name`].
#[derive(Debug)]
struct ClusterServerVerifier {
    /// A member's certificate serves both ends of its connections: the client check
    /// (chain, validity, revocation, clientAuth) applies to it as a server too.
    chain: Arc<dyn ClientCertVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClusterServerVerifier {
    /// Checks that `end_entity` chains to the cluster CA, is not revoked, and may act as a
    /// member; names are not checked.
    fn verify_chain(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.chain
            .verify_client_cert(end_entity, intermediates, now)
            .map(|_| ())
    }
}

/// The check every member certificate passes: it chains to a CA in `roots`, is valid now,
/// and is on none of `crls` (a CA without a list revokes nothing; only the member's own
/// certificate is looked up, as swimd's CAs issue no intermediates).
fn cluster_verifier(
    roots: Arc<RootCertStore>,
    crls: &[CertificateRevocationListDer<'static>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    Ok(
        WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .with_crls(crls.iter().cloned())
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()?,
    )
}

/// The revocation lists in a PEM file, each signed by one of `cas`.
fn read_crls(
    path: &Path,
    cas: &[CertificateDer<'static>],
) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let bad = |reason: String| TlsError::BadCrl {
        path: path.to_owned(),
        reason,
    };
    let bytes = fs::read(path).map_err(read_error(path, "tls.crl"))?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("no readable revocation list ({e})")))?;
    if crls.is_empty() {
        return Err(bad("no revocation list in it".into()));
    }
    let cas: Vec<_> = cas
        .iter()
        .filter_map(|der| {
            x509_parser::parse_x509_certificate(der)
                .ok()
                .map(|(_, c)| c)
        })
        .collect();
    for (i, der) in crls.iter().enumerate() {
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der)
            .map_err(|e| bad(format!("revocation list {} does not parse ({e})", i + 1)))?;
        let signed = cas.iter().any(|ca| {
            ca.subject() == crl.issuer() && crl.verify_signature(ca.public_key()).is_ok()
        });
        if !signed {
            return Err(bad(format!(
                "revocation list {} (issuer {}) is not signed by a CA in tls.ca",
                i + 1,
                crl.issuer()
            )));
        }
    }
    Ok(crls)
}

impl ServerCertVerifier for ClusterServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _dialed_as: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verify_chain(end_entity, intermediates, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Explicit rather than process-wide, so no other crate's choice of provider can change ours.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// CA parameters; `issue` rebuilds the issuer from them, so `init_ca` must use them too.
fn ca_params(common_name: DnValue) -> CertificateParams {
    let mut params = CertificateParams::default();
    set_validity(&mut params, CA_VALIDITY);
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    // Path length 0: the CA signs node certificates only, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// Sets `params` valid from now (back-dated by [`BACKDATE`]) for `lifetime`.
fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
    // A clock before 1970 is not worth an error: the certificate then merely starts early.
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    // rcgen does not re-export its date type; this builds one without naming it.
    let now = rcgen::date_time_ymd(1970, 1, 1) + since_epoch;
    params.not_before = now - BACKDATE;
    params.not_after = now + lifetime;
}

/// Refuses to go on if any of `paths` exists (even as a dangling symlink).
fn refuse_existing(paths: &[PathBuf]) -> Result<(), TlsError> {
    match paths.iter().find(|path| fs::symlink_metadata(path).is_ok()) {
        Some(path) => Err(TlsError::Exists(path.clone())),
        None => Ok(()),
    }
}

/// Writes new files (path, contents, mode) all or none: a failure removes those already written.
fn write_new(files: &[(&Path, &str, u32)]) -> Result<(), TlsError> {
    for (done, &(path, contents, mode)) in files.iter().enumerate() {
        if let Err(e) = write_new_file(path, contents, mode) {
            for &(written, ..) in &files[..done] {
                let _ = fs::remove_file(written);
            }
            return Err(e);
        }
    }
    Ok(())
}

/// Creates `path` with `mode` from the start (a key is never briefly world-readable) and
/// never replaces an existing file, even one that appeared since [`refuse_existing`].
fn write_new_file(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => TlsError::Exists(path.to_owned()),
            _ => TlsError::Io {
                path: path.to_owned(),
                error,
            },
        })?;
    if let Err(error) = file
        .write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
    {
        let _ = fs::remove_file(path);
        return Err(io_error(path)(error));
    }
    Ok(())
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> TlsError + '_ {
    move |error| TlsError::Io {
        path: path.to_owned(),
        error,
    }
}

fn read_error<'a>(
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
fn read_certs(
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
fn read_key(path: &Path, setting: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
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
fn check_key_permissions(path: &Path, setting: &'static str) -> Result<(), TlsError> {
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
fn keys_match(
    cert: &CertificateDer<'static>,
    key: &PrivateKeyDer<'static>,
    provider: &CryptoProvider,
) -> Result<(), rustls::Error> {
    CertifiedKey::from_der(vec![cert.clone()], key.clone_key(), provider).map(drop)
}

/// A DER string value as rcgen's DN value, for the string types a CA's CN comes in.
fn dn_value(tag: x509_parser::der_parser::asn1_rs::Tag, value: &[u8]) -> Option<DnValue> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let text = std::str::from_utf8(value).ok()?;
    match tag {
        Tag::Utf8String => Some(DnValue::Utf8String(text.to_owned())),
        Tag::PrintableString => Some(DnValue::PrintableString(text.try_into().ok()?)),
        _ => None,
    }
}

/// A certificate's first subject commonName: its string type (as a DER tag) and bytes.
fn common_name(cert: &[u8]) -> Option<(x509_parser::der_parser::asn1_rs::Tag, Vec<u8>)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    let value = cn.attr_value();
    Some((value.tag(), value.data.to_vec()))
}

/// The first DNS name of a certificate's subjectAltName, if it has one.
fn first_dns_name(cert: &[u8]) -> Option<String> {
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
        load(
            &dir.join(CA_CERT_FILE),
            &cert_path(dir, name),
            &key_path(dir, name),
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
        let tmp = TempDir::new("world-readable");
        cluster(&tmp.0, &["node-1"]);
        let key = key_path(&tmp.0, "node-1");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
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
        let tmp = TempDir::new("group");
        cluster(&tmp.0, &["node-1"]);
        let key = key_path(&tmp.0, "node-1");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o660)).unwrap();
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
        let err = load(
            &tmp.0.join(CA_CERT_FILE),
            &cert_path(&tmp.0, "node-1"),
            &key_path(&tmp.0, "node-1"),
            &NodeName::new("node-2"),
        )
        .unwrap_err();
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
        let err = load(
            &ours.0.join(CA_CERT_FILE),
            &cert_path(&theirs.0, "node-1"),
            &key_path(&theirs.0, "node-1"),
            &NodeName::new("node-1"),
        )
        .unwrap_err();
        assert!(matches!(err, TlsError::NotSignedByCa { .. }), "{err}");
        assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    }

    #[test]
    fn load_rejects_key_of_another_certificate() {
        let tmp = TempDir::new("other-key");
        cluster(&tmp.0, &["node-1", "node-2"]);
        let err = load(
            &tmp.0.join(CA_CERT_FILE),
            &cert_path(&tmp.0, "node-1"),
            &key_path(&tmp.0, "node-2"),
            &NodeName::new("node-1"),
        )
        .unwrap_err();
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
}
