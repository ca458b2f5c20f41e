//! The network probes: DNS, TCP and a TLS handshake against one host, each answering in an operator's words.
//!
//! The handshake uses the service's own connector type and rustls configuration ([`outbound::tls_config`]:
//! bundled roots plus EXTRA_CA_CERTS, ring) with its verifier wrapped only to remember the certificate it was
//! shown, so a refused certificate can still be named (a TLS-inspecting proxy's CA is the usual culprit).
//!
//! `Probe` runs the three for one host as the report's `target.dns`, `target.tcp` and `target.tls` rows; each
//! step runs only when the one before it worked, so the first failed row is the one to fix.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tower_service::Service;

use super::cert::{self, CertSummary};
use super::report::{Check, Status, now, shown_url, skip, span, timed};
use crate::outbound;
use crate::outbound::error_text;

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

/// Runs a TLS handshake with the host of `uri` through the service's own connector type (hyper-rustls over
/// hyper-util's resolver and TCP connector, the TLS configuration of [`outbound::tls_config`]), then closes the
/// connection without sending a request.
pub async fn handshake(
    uri: Uri,
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> Result<Handshake, HandshakeError> {
    let fail = |reason: String, certificate: Option<CertSummary>| HandshakeError {
        reason,
        certificate,
    };
    let mut config = outbound::tls_config(extra_roots).map_err(|e| fail(e.to_string(), None))?;
    // The service's own provider: the check accepts exactly the certificates the service would.
    let provider = Arc::new(outbound::crypto_provider());
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
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    let mut connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    let result = connector.call(uri).await;
    let certificate = seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .and_then(|der: CertificateDer<'static>| cert::summarize(&der));
    match result {
        Ok(MaybeHttpsStream::Https(tls)) => {
            let protocol = tls
                .inner()
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
        Ok(MaybeHttpsStream::Http(_)) => Err(fail("the connection is not TLS".into(), None)),
        Err(e) => Err(fail(handshake_reason(e.as_ref()), certificate)),
    }
}

/// The handshake error in words: the error chain, plus what an operator can do about the usual ones.
fn handshake_reason(error: &(dyn std::error::Error + 'static)) -> String {
    let mut rustls_error = None;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            rustls_error = Some(found);
            break;
        }
        // An io::Error's source() skips the error it wraps, so step into that one instead.
        cause = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
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
    format!("handshake failed: {}{advice}", error_text(error))
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

/// The DNS, TCP and TLS checks of one host, with the settings the service's connector uses and the
/// `--timeout` that bounds each step.
pub(super) struct Probe<'a> {
    pub(super) extra_roots: &'a [CertificateDer<'static>],
    pub(super) connect_timeout: Duration,
    pub(super) timeout: Duration,
}

impl Probe<'_> {
    /// `target.dns`, `target.tcp` and `target.tls` for the host of `url`. Each step runs only when the one
    /// before it worked.
    pub(super) async fn host(&self, checks: &mut Vec<Check>, target: &str, url: &str) {
        let Some((uri, host)) = url
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned).map(|h| (u, h)))
        else {
            checks.push(Check {
                name: format!("{target}.dns"),
                status: Status::Fail,
                duration_ms: 0,
                detail: format!("{} has no host", shown_url(url)),
            });
            skip_host_rest(checks, target, "no host to connect to");
            return;
        };
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });

        let mut addrs: Vec<SocketAddr> = Vec::new();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            addrs.push(SocketAddr::new(ip, port));
            checks.push(skip(
                &format!("{target}.dns"),
                &format!("{host} is an IP address: nothing to resolve"),
            ));
        } else {
            let work = Box::pin(async {
                addrs = resolve(bare, port).await.map_err(|e| {
                    format!("{e}: check the host name, and the DNS this container uses (a private endpoint needs its private DNS zone linked)")
                })?;
                let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                Ok(format!("{host} → {}", list.join(", ")))
            });
            checks.push(timed(format!("{target}.dns"), self.timeout, work).await);
            if addrs.is_empty() {
                skip_host_rest(checks, target, "skipped: the host does not resolve");
                return;
            }
        }

        let work = Box::pin(async {
            let stream = connect(&addrs).await.map_err(|e| {
                format!("cannot connect to {host}:{port} ({e}): a firewall, network policy or egress rule may block it")
            })?;
            Ok(stream.peer_addr().map_or_else(
                |_| format!("connected to {host}:{port}"),
                |a| format!("connected to {a}"),
            ))
        });
        let check = timed(format!("{target}.tcp"), self.timeout, work).await;
        let connected = check.status == Status::Ok;
        checks.push(check);
        if !connected {
            checks.push(skip(&format!("{target}.tls"), "skipped: no TCP connection"));
        } else if !tls {
            checks.push(skip(
                &format!("{target}.tls"),
                "plain http: no TLS to check",
            ));
        } else {
            checks.push(self.tls(target, uri).await);
        }
    }

    /// `target.tls`: the handshake, the certificate's names and expiry.
    async fn tls(&self, target: &str, uri: Uri) -> Check {
        let work = Box::pin(async {
            let done = handshake(uri, self.extra_roots, self.connect_timeout)
                .await
                .map_err(|e| match e.certificate {
                    Some(c) => format!(
                        "{}; certificate: subject {}, issuer {}, expires {}",
                        e.reason,
                        c.subject,
                        c.issuer,
                        cert::rfc3339(c.not_after)
                    ),
                    None => e.reason,
                })?;
            let Some(c) = done.certificate else {
                return Ok(format!(
                    "{}; the certificate was trusted but its fields could not be read",
                    done.protocol
                ));
            };
            let detail = format!(
                "{}; subject {}; issuer {}; expires {} ({})",
                done.protocol,
                c.subject,
                c.issuer,
                cert::rfc3339(c.not_after),
                span(c.not_after - now())
            );
            if days_left(&c, now()) < EXPIRY_WARNING_DAYS {
                return Err(format!(
                    "the certificate expires within {} days: {detail}; renew it (or have its owner renew it) before then",
                    EXPIRY_WARNING_DAYS
                ));
            }
            Ok(detail)
        });
        timed(format!("{target}.tls"), self.timeout, work).await
    }
}

/// The `tcp` and `tls` rows of `target`, skipped for `reason` (its `dns` row said why).
fn skip_host_rest(checks: &mut Vec<Check>, target: &str, reason: &str) {
    for step in ["tcp", "tls"] {
        checks.push(skip(&format!("{target}.{step}"), reason));
    }
}

/// All three rows of `target`, skipped for `reason`: the host is not checked at all.
pub(super) fn skip_host(checks: &mut Vec<Check>, target: &str, reason: &str) {
    for step in ["dns", "tcp", "tls"] {
        checks.push(skip(&format!("{target}.{step}"), reason));
    }
}
