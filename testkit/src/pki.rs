//! A test PKI made at run time: a CA written to a PEM file (what EXTRA_CA_CERTS points at) and a TLS acceptor
//! for a leaf certificate it signed. The HTTPS fakes (Key Vault, an https RiskShield) serve with it, so the
//! service's real rustls client verifies a real chain and no key material is checked in.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_rustls::TlsAcceptor;

/// A test CA (written to a PEM file, for EXTRA_CA_CERTS) and a TLS acceptor with a leaf certificate for
/// localhost and 127.0.0.1 signed by it. Made fresh per test, so no key material is checked in.
pub struct TestPki {
    ca_file: PathBuf,
    acceptor: TlsAcceptor,
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

impl TestPki {
    /// Generates the CA and the leaf, and writes the CA file to the temp directory.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// Like [`TestPki::new`], with a leaf that became valid yesterday and expires `days` from now: a server
    /// certificate about to expire.
    pub fn with_leaf_valid_for(days: u64) -> Self {
        Self::build(Some(days))
    }

    fn build(leaf_days: Option<u64>) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "applicant-validator test CA");
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA cert");

        let mut leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .expect("leaf params");
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        if let Some(days) = leaf_days {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("the clock is past 1970");
            let epoch = rcgen::date_time_ymd(1970, 1, 1);
            leaf_params.not_before = epoch + (now - Duration::from_secs(86_400));
            leaf_params.not_after = epoch + (now + Duration::from_secs(days * 86_400));
        }
        let leaf_key = rcgen::KeyPair::generate().expect("leaf key");
        let leaf = leaf_params.signed_by(&leaf_key, &ca).expect("leaf cert");

        let ca_file = std::env::temp_dir().join(format!(
            "applicant-validator-vault-ca-{}-{}.pem",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&ca_file, ca.pem()).expect("write CA file");

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .expect("server config");
        Self {
            ca_file,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }

    /// The CA certificate as a PEM file.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The acceptor serving the leaf certificate (for localhost and 127.0.0.1).
    pub fn acceptor(&self) -> TlsAcceptor {
        self.acceptor.clone()
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
