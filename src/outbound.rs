//! The one outbound HTTP/TLS stack: one connector (hyper-util's TCP connector under rustls with the ring
//! provider, trusting the bundled webpki roots plus EXTRA_CA_CERTS), and hyper-util's pooled client on it.
//!
//! The RiskShield pool and the Azure SDK transport share this connector and the same trust roots, so there is
//! one crypto provider in the binary, EXTRA_CA_CERTS applies to every outbound call, and the binary never
//! reads /etc/ssl (the container image has none). Neither consults proxy variables.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

/// How outbound connections are made: TCP (with the connect timeout), then TLS when the URL is https.
pub type Connector = HttpsConnector<HttpConnector>;

/// The pooled keep-alive client type used for outbound requests off the request path.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// Why the outbound client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("EXTRA_CA_CERTS: certificate {index} is not a usable trust anchor: {source}")]
    BadRoot { index: usize, source: rustls::Error },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// The bundled public roots plus `extra`.
pub fn root_store(extra: &[CertificateDer<'static>]) -> Result<RootCertStore, OutboundError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (index, cert) in extra.iter().enumerate() {
        roots
            .add(cert.clone())
            .map_err(|source| OutboundError::BadRoot { index, source })?;
    }
    Ok(roots)
}

/// The TLS algorithms the service offers and accepts, on ring: rustls's defaults minus ChaCha20-Poly1305,
/// Ed25519 and X25519.
///
/// Every endpoint the service calls (RiskShield, Key Vault, Entra ID) negotiates AES-GCM, which x86_64 runs in
/// hardware, and public CAs issue no Ed25519 certificates. Key exchange is P-256 (which TLS 1.3 makes every
/// server implement) or P-384; X25519 would add its own curve code and tables for handshakes that pooled
/// connections make rarely. TLS 1.3 and 1.2 and ECDSA/RSA signatures stay as rustls ships them. The service
/// never presents a client certificate, so the provider loads no private keys. Together this drops about 260 KB
/// from the static binary (docs/container.md, size table).
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        ],
        kx_groups: vec![kx_group::SECP256R1, kx_group::SECP384R1],
        signature_verification_algorithms: SIGNATURE_ALGORITHMS,
        secure_random: &RingRandom,
        key_provider: &NoClientKeys,
    }
}

/// rustls's ring signature table without Ed25519 (see [`crypto_provider`]).
static SIGNATURE_ALGORITHMS: rustls::crypto::WebPkiSupportedAlgorithms = {
    use rustls::SignatureScheme as S;
    use webpki::ring as alg;
    rustls::crypto::WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (
                S::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                S::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (
                S::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                S::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                S::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (S::RSA_PKCS1_SHA512, &[alg::RSA_PKCS1_2048_8192_SHA512]),
            (S::RSA_PKCS1_SHA384, &[alg::RSA_PKCS1_2048_8192_SHA384]),
            (S::RSA_PKCS1_SHA256, &[alg::RSA_PKCS1_2048_8192_SHA256]),
        ],
    }
};

/// The operating system's random numbers, through ring (as rustls's own ring provider does).
#[derive(Debug)]
struct RingRandom;

impl rustls::crypto::SecureRandom for RingRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), rustls::crypto::GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| rustls::crypto::GetRandomFailed)
    }
}

/// The service authenticates to no TLS server with a certificate of its own.
#[derive(Debug)]
struct NoClientKeys;

impl rustls::crypto::KeyProvider for NoClientKeys {
    fn load_private_key(
        &self,
        _key_der: rustls_pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "the service presents no client certificate".into(),
        ))
    }
}

/// A rustls client configuration on [`crypto_provider`], so no provider needs to be installed globally.
pub fn tls_config(
    extra: &[CertificateDer<'static>],
) -> Result<rustls::ClientConfig, OutboundError> {
    let provider = Arc::new(crypto_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(extra)?)
        .with_no_client_auth();
    Ok(config)
}

/// The connector every outbound connection is made with: TCP connect timeout, TCP_NODELAY, TCP keep-alive,
/// http and https (rustls on the bundled roots plus `extra_roots`).
///
/// Plain http is allowed at this layer because configuration already decided which http URLs are acceptable
/// (loopback, or explicitly allowed non-prod hosts).
pub fn build_connector(
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> Result<Connector, OutboundError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(extra_roots)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

/// Builds the pooled client on [`build_connector`], for callers off the request path (the Key Vault
/// transport); RiskShield calls go through the RiskShield client's own per-worker pools.
pub fn build_client(
    extra_roots: &[CertificateDer<'static>],
    connect_timeout: Duration,
) -> Result<HttpClient, OutboundError> {
    let https = build_connector(extra_roots, connect_timeout)?;
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(https))
}

/// First wait after a failed background read (Key Vault secret, signing keys); it doubles per failure.
const FIRST_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Longest wait between retries of a failed background read.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The wait after `failures` consecutive failed background reads: 1 s, 2 s, 4 s, ... capped at
/// min(30 s, `ttl`), so a read that is due anyway is never postponed past its period.
pub fn retry_delay(failures: u32, ttl: Duration) -> Duration {
    let doubling = FIRST_RETRY_DELAY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubling.min(MAX_RETRY_DELAY).min(ttl)
}

/// Error text longer than this is cut: SDK and client errors can embed whole response bodies.
const MAX_ERROR_TEXT: usize = 400;

/// The error and its causes on one line, cut to a loggable length: hyper-util's own message ("client
/// error (Connect)") hides the reason, which is in the causes.
pub fn error_text(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_and_is_capped() {
        let ttl = Duration::from_secs(300);
        let delays: Vec<u64> = (1..=7).map(|n| retry_delay(n, ttl).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(
            retry_delay(5, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
        assert_eq!(retry_delay(u32::MAX, ttl), Duration::from_secs(30));
    }

    #[test]
    fn error_text_is_one_bounded_line() {
        let long = std::io::Error::other(format!("a\nb {}", "x".repeat(1000)));
        let text = error_text(&long);
        assert!(!text.contains('\n'));
        assert_eq!(text.chars().count(), MAX_ERROR_TEXT + 1);
    }

    #[test]
    fn bundled_roots_are_present() {
        let roots = root_store(&[]).expect("bundled roots load");
        assert!(roots.len() > 100, "only {} roots", roots.len());
    }

    #[test]
    fn a_garbage_extra_root_is_refused() {
        let junk = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(
            root_store(&[junk]),
            Err(OutboundError::BadRoot { index: 0, .. })
        ));
    }
}
