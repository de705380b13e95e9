//! Making the cluster's certificates for `swimd tls`: the CA, node certificates, and the
//! revocation list. Files are created private and never overwritten.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
    SanType,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use x509_parser::prelude::FromDer;

use crate::wire::NodeName;

use super::*;

pub(super) const CA_VALIDITY: Duration = Duration::from_secs(3652 * 86_400);

pub(super) const NODE_VALIDITY: Duration = Duration::from_secs(1826 * 86_400);

/// Certificates start an hour early so nodes whose clocks lag the issuing machine accept them.
pub(super) const BACKDATE: Duration = Duration::from_secs(3600);

/// Longest cluster name `swimd tls init` accepts: the CA's common name, `swimd CA <cluster>`,
/// must fit RFC 5280's 64 characters (the configuration allows longer names, `config::MAX_CLUSTER_LEN`).
pub(super) const MAX_CA_CLUSTER_LEN: usize = 64 - "swimd CA ".len();

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
    write_pair(files, &cert.pem(), &key.serialize_pem())
}

/// The CA in `dir`, ready to sign: its certificate, and an issuer rebuilt from it.
pub(super) struct Ca {
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
        refuse_loose_permissions(&ca_key_path, "CA key")?;
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

    write_pair(files, &cert.pem(), &key.serialize_pem())
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
pub(super) fn random_serial() -> Result<[u8; 16], TlsError> {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| TlsError::Generate(rcgen::Error::RingUnspecified))?;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    Ok(serial)
}

/// CA parameters; `issue` rebuilds the issuer from them, so `init_ca` must use them too.
pub(super) fn ca_params(common_name: DnValue) -> CertificateParams {
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
pub(super) fn set_validity(params: &mut CertificateParams, lifetime: Duration) {
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
pub(super) fn refuse_existing(paths: &[PathBuf]) -> Result<(), TlsError> {
    match paths.iter().find(|path| fs::symlink_metadata(path).is_ok()) {
        Some(path) => Err(TlsError::Exists(path.clone())),
        None => Ok(()),
    }
}

/// Writes new files (path, contents, mode) all or none: a failure removes those already written.
/// Writes a certificate (public) and its key (private) to new files; returns their paths.
fn write_pair(
    [cert_path, key_path]: [PathBuf; 2],
    cert: &str,
    key: &str,
) -> Result<Vec<PathBuf>, TlsError> {
    write_new(&[(&cert_path, cert, 0o644), (&key_path, key, 0o600)])?;
    Ok(vec![cert_path, key_path])
}

pub(super) fn write_new(files: &[(&Path, &str, u32)]) -> Result<(), TlsError> {
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
pub(super) fn write_new_file(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
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

/// A DER string value as rcgen's DN value, for the string types a CA's CN comes in.
pub(super) fn dn_value(
    tag: x509_parser::der_parser::asn1_rs::Tag,
    value: &[u8],
) -> Option<DnValue> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let text = std::str::from_utf8(value).ok()?;
    match tag {
        Tag::Utf8String => Some(DnValue::Utf8String(text.to_owned())),
        Tag::PrintableString => Some(DnValue::PrintableString(text.try_into().ok()?)),
        _ => None,
    }
}
