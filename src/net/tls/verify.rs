//! Verifying peers: the chain to the cluster CA, validity, revocation (CRLs) and the
//! clientAuth purpose, the same check at both ends of a connection.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use x509_parser::prelude::FromDer;

use super::*;

/// Accepts a server certificate that chains to the cluster CA whatever name it was dialed
/// by: seeds are dialed by address, and the peer's name is bound afterwards by [`peer_name`].
#[derive(Debug)]
pub(super) struct ClusterServerVerifier {
    /// A member's certificate serves both ends of its connections: the client check
    /// (chain, validity, revocation, clientAuth) applies to it as a server too.
    pub(super) chain: Arc<dyn ClientCertVerifier>,
    pub(super) algorithms: WebPkiSupportedAlgorithms,
}

impl ClusterServerVerifier {
    /// Checks that `end_entity` chains to the cluster CA, is not revoked, and may act as a
    /// member; names are not checked.
    pub(super) fn verify_chain(
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
pub(super) fn cluster_verifier(
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
pub(super) fn read_crls(
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
