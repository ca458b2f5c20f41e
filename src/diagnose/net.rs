//! The network probes: DNS, TCP and a TLS handshake against one host, each answering in an operator's words.
//!
//! The handshake uses the service's own rustls configuration ([`outbound::tls_config`]: bundled roots plus
//! EXTRA_CA_CERTS, ring) with its verifier wrapped only to remember the certificate it was shown, so a refused
//! certificate can still be named (a TLS-inspecting proxy's CA is the usual culprit).

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;

use super::cert::{self, CertSummary};
use crate::outbound;

/// A certificate that expires sooner than this fails the check: time enough to renew before an outage.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

/// The addresses the system resolver (the one the service's connector uses) gives for `host`, in its order,
/// without duplicates.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let found = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?;
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    Ok(addrs)
}

/// Connects to the first address that accepts, in order, as the service's connector does.
pub async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, String> {
    let mut failures = Vec::new();
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
    }
    Err(failures.join("; "))
}

/// What a successful handshake found.
#[derive(Debug)]
pub struct Handshake {
    pub protocol: String,
    pub certificate: Option<CertSummary>,
}

/// Why a handshake failed, with the certificate the server showed if it got that far.
#[derive(Debug)]
pub struct HandshakeError {
    pub reason: String,
    pub certificate: Option<CertSummary>,
}

/// Runs a TLS handshake with `host` over `stream` as the outbound client would, then closes the connection
/// without sending a request.
pub async fn handshake(
    host: &str,
    stream: TcpStream,
    extra_roots: &[CertificateDer<'static>],
) -> Result<Handshake, HandshakeError> {
    let fail = |reason: String, certificate: Option<CertSummary>| HandshakeError {
        reason,
        certificate,
    };
    let mut config = outbound::tls_config(extra_roots).map_err(|e| fail(e.to_string(), None))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = outbound::root_store(extra_roots).map_err(|e| fail(e.to_string(), None))?;
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| fail(e.to_string(), None))?;
    let seen = Arc::new(Mutex::new(None));
    config
        .dangerous()
        .set_certificate_verifier(Arc::new(Recording {
            inner,
            seen: seen.clone(),
        }));
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned())
        .map_err(|e| fail(format!("{host} is not a valid TLS server name: {e}"), None))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let result = connector.connect(name, stream).await;
    let certificate = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .and_then(|der: CertificateDer<'static>| cert::summarize(&der));
    match result {
        Ok(tls) => {
            let protocol = tls
                .get_ref()
                .1
                .protocol_version()
                .and_then(|v| v.as_str())
                .unwrap_or("TLS")
                .replace('_', ".");
            Ok(Handshake {
                protocol,
                certificate,
            })
        }
        Err(e) => Err(fail(handshake_reason(&e), certificate)),
    }
}

/// The handshake error in words: rustls' own text, plus what an operator can do about the usual ones.
fn handshake_reason(error: &std::io::Error) -> String {
    let rustls_error = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let advice = match rustls_error {
        Some(rustls::Error::InvalidCertificate(cause)) => match cause {
            rustls::CertificateError::UnknownIssuer
            | rustls::CertificateError::BadSignature
            | rustls::CertificateError::InvalidPurpose => {
                " (the certificate does not chain to a bundled root or one in EXTRA_CA_CERTS; behind a TLS-inspecting proxy, add the proxy's CA to EXTRA_CA_CERTS)"
            }
            rustls::CertificateError::Expired | rustls::CertificateError::ExpiredContext { .. } => {
                " (the server's certificate has expired, or this machine's clock is wrong)"
            }
            rustls::CertificateError::NotValidForName
            | rustls::CertificateError::NotValidForNameContext { .. } => {
                " (the certificate is for another host name: check the URL, or a proxy in the path)"
            }
            _ => "",
        },
        _ => "",
    };
    format!("handshake failed: {error}{advice}")
}

/// Days from `now` until `summary` expires, rounded down (negative once expired).
pub fn days_left(summary: &CertSummary, now: i64) -> i64 {
    (summary.not_after - now).div_euclid(86_400)
}

/// Delegates every decision to the service's verifier and keeps the end-entity certificate it was shown.
struct Recording {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    seen: Arc<Mutex<Option<CertificateDer<'static>>>>,
}

impl fmt::Debug for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording").finish_non_exhaustive()
    }
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
