//! A stand-in for Microsoft Entra ID as a token issuer: an HTTPS OpenID Connect issuer on 127.0.0.1 (served
//! with the run-time test PKI) publishing its discovery document and a JWKS, and [`TestSigner`], which signs
//! tokens the way the issuer would, with an RSA key the tests hold.
//!
//! Like the fake vault, it can start unreachable and come up later on the same port, and it counts the
//! requests it answers, so tests can see exactly how often the service fetched its keys.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use ring::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::lock;
use crate::pki::TestPki;
use crate::server::{ClosedPort, Server, closed_port, serve_http};

/// The tenant path of the issuer, as in `https://login.microsoftonline.com/{tenant}/v2.0`.
const TENANT: &str = "00000000-0000-0000-0000-0000000000aa";

/// Seconds since the Unix epoch, for `iat`, `nbf` and `exp`.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An RSA signing key with its key id, from a PKCS#8 PEM file.
pub struct TestSigner {
    pub kid: String,
    key: RsaKeyPair,
    public_pem: String,
}

impl TestSigner {
    /// The key in `pem` (PKCS#8, 2048 to 4096 bits), published under `kid`.
    pub fn from_pem(kid: &str, pem: &str) -> Self {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).expect("a PKCS#8 PEM key");
        let key = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("an RSA key ring accepts");
        let spki = rcgen::KeyPair::try_from(&der)
            .expect("rcgen reads the key")
            .public_key_pem();
        Self {
            kid: kid.to_owned(),
            key,
            public_pem: spki,
        }
    }

    /// The public key as a JWK, as Entra publishes it.
    pub fn jwk(&self) -> Value {
        let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(self.key.public());
        json!({
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "n": b64(&public.n),
            "e": b64(&public.e),
        })
    }

    /// The public key as PEM: what an attacker would use as an HMAC secret.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// A compact JWS of `header` and `claims`, signed RS256 with this key whatever `header` says.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message.as_bytes(),
                &mut signature,
            )
            .expect("RSA signing");
        format!("{message}.{}", b64(&signature))
    }

    /// The usual header: RS256 with this key's id.
    pub fn header(&self) -> Value {
        json!({"typ": "JWT", "alg": "RS256", "kid": self.kid})
    }
}

/// A compact JWS of `header` and `claims` with an HMAC-SHA256 signature keyed by `secret`.
pub fn sign_hs256(secret: &[u8], header: &Value, claims: &Value) -> String {
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let tag = ring::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", b64(tag.as_ref()))
}

/// A compact JWS of `header` and `claims` with an empty signature (`alg: none`).
pub fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    )
}

struct IssuerState {
    issuer: String,
    jwks_uri: String,
    keys: Mutex<Vec<Value>>,
    discovery_requests: AtomicUsize,
    jwks_requests: AtomicUsize,
}

/// An HTTPS OpenID Connect issuer on a fixed 127.0.0.1 port, addressed as `localhost`.
pub struct FakeIssuer {
    pki: TestPki,
    state: Arc<IssuerState>,
    port: u16,
    /// The port, held refused until the first [`FakeIssuer::bring_up`].
    reserved: Option<ClosedPort>,
    server: Option<Server>,
}

impl FakeIssuer {
    /// An issuer publishing `keys` (JWKs).
    pub async fn start(keys: Vec<Value>) -> Self {
        let mut issuer = Self::unreachable(keys).await;
        issuer.bring_up().await;
        issuer
    }

    /// An issuer whose port is chosen but where nothing listens until [`FakeIssuer::bring_up`].
    pub async fn unreachable(keys: Vec<Value>) -> Self {
        let reserved = closed_port();
        let port = reserved.addr().port();
        let base = format!("https://localhost:{port}/{TENANT}");
        Self {
            pki: TestPki::new(),
            state: Arc::new(IssuerState {
                issuer: format!("{base}/v2.0"),
                jwks_uri: format!("{base}/discovery/v2.0/keys"),
                keys: Mutex::new(keys),
                discovery_requests: AtomicUsize::new(0),
                jwks_requests: AtomicUsize::new(0),
            }),
            port,
            reserved: Some(reserved),
            server: None,
        }
    }

    /// Starts serving on the issuer's port.
    pub async fn bring_up(&mut self) {
        let listener = match self.reserved.take() {
            Some(reserved) => reserved.listen(),
            // Up again after a take-down: the port was released, so bind it anew.
            None => TcpListener::bind(("127.0.0.1", self.port))
                .await
                .expect("bind the issuer's port"),
        };
        let acceptor = self.pki.acceptor();
        let state = Arc::clone(&self.state);
        let server = Server::spawn(listener, move |stream| {
            let acceptor = acceptor.clone();
            let state = Arc::clone(&state);
            async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let answer = state.answer(request.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(answer) }
                });
                if let Ok(stream) = acceptor.accept(stream).await {
                    serve_http(stream, service).await;
                }
            }
        })
        .expect("the issuer's address");
        self.server = Some(server);
    }

    /// Stops serving: connections are closed and new ones refused.
    pub fn take_down(&mut self) {
        self.server = None;
    }

    /// The value for AUTH_ISSUER, and the `iss` of its tokens.
    pub fn issuer(&self) -> String {
        self.state.issuer.clone()
    }

    /// The CA file its certificate chains to, for EXTRA_CA_CERTS.
    pub fn ca_file(&self) -> &std::path::Path {
        self.pki.ca_file()
    }

    /// Replaces the published keys.
    pub fn publish(&self, keys: Vec<Value>) {
        *lock(&self.state.keys) = keys;
    }

    /// Discovery documents served so far.
    pub fn discovery_requests(&self) -> usize {
        self.state.discovery_requests.load(Ordering::SeqCst)
    }

    /// JWKS documents served so far.
    pub fn jwks_requests(&self) -> usize {
        self.state.jwks_requests.load(Ordering::SeqCst)
    }
}

impl IssuerState {
    fn answer(&self, path: &str) -> Response<Full<Bytes>> {
        let discovery_path = format!("/{TENANT}/v2.0/.well-known/openid-configuration");
        let jwks_path = format!("/{TENANT}/discovery/v2.0/keys");
        let (status, body) = if path == discovery_path {
            self.discovery_requests.fetch_add(1, Ordering::SeqCst);
            (
                200,
                json!({
                    "issuer": self.issuer,
                    "jwks_uri": self.jwks_uri,
                    "id_token_signing_alg_values_supported": ["RS256"],
                }),
            )
        } else if path == jwks_path {
            self.jwks_requests.fetch_add(1, Ordering::SeqCst);
            (200, json!({"keys": lock(&self.keys).clone()}))
        } else {
            (404, json!({"error": "not_found"}))
        };
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid response")
    }
}
