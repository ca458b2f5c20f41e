//! Local stand-ins for Azure, all real servers on 127.0.0.1: an App Service style managed-identity token
//! endpoint (plain HTTP), and an HTTPS Key Vault speaking the 401-challenge flow, served with a test PKI made
//! at run time. The real Azure SDK inside the service talks to them unchanged.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::lock;
pub use crate::pki::TestPki;
use crate::server::{ClosedPort, Server, closed_port, serve_http};

/// The access token the fake identity endpoint issues and the fake vault accepts.
pub const ACCESS_TOKEN: &str = "fake-access-token-3f9c";

/// The value the fake identity endpoint requires in X-IDENTITY-HEADER.
pub const IDENTITY_HEADER: &str = "fake-identity-header-value";

/// When the fake vault's secret was last changed (Unix seconds), as its `attributes.updated` reports.
pub const SECRET_UPDATED: u64 = 1_767_225_600;

/// The resource the service must ask a token for.
const VAULT_RESOURCE: &str = "https://vault.azure.net";

type Handler = Arc<dyn Fn(&Parts) -> Response<Full<Bytes>> + Send + Sync>;

/// Serves `handler` on `listener`, over TLS when `tls` is given. Request bodies are read and ignored: neither
/// Azure fake needs one.
fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, handler: Handler) -> Server {
    Server::spawn(listener, move |stream| {
        let handler = Arc::clone(&handler);
        let tls = tls.clone();
        async move {
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let handler = Arc::clone(&handler);
                async move {
                    let (parts, body) = request.into_parts();
                    let _ = body.collect().await;
                    Ok::<_, std::convert::Infallible>(handler(&parts))
                }
            });
            match tls {
                Some(tls) => {
                    if let Ok(stream) = tls.accept(stream).await {
                        serve_http(stream, service).await;
                    }
                }
                None => serve_http(stream, service).await,
            }
        }
    })
    .expect("the fake's address")
}

fn json_response(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

fn query(parts: &Parts) -> HashMap<String, String> {
    parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect()
}

/// What the fake identity endpoint answers.
#[derive(Clone, Debug)]
pub enum TokenMode {
    Issue,
    Fail(u16),
}

/// The managed-identity token endpoint (App Service / Container Apps protocol): checks the identity header
/// and the resource, then issues [`ACCESS_TOKEN`] for an hour or fails as told.
pub struct FakeIdentity {
    server: Server,
    mode: Arc<Mutex<TokenMode>>,
    requests: Arc<AtomicUsize>,
}

impl FakeIdentity {
    pub async fn start(mode: TokenMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the identity endpoint");
        let mode = Arc::new(Mutex::new(mode));
        let requests = Arc::new(AtomicUsize::new(0));
        let (m, r) = (Arc::clone(&mode), Arc::clone(&requests));
        let handler: Handler = Arc::new(move |parts| {
            r.fetch_add(1, Ordering::SeqCst);
            let header_ok = parts
                .headers
                .get("x-identity-header")
                .is_some_and(|v| v == IDENTITY_HEADER);
            if !header_ok
                || query(parts).get("resource").map(String::as_str) != Some(VAULT_RESOURCE)
            {
                return json_response(400, json!({"error": "bad request"}));
            }
            match lock(&m).clone() {
                TokenMode::Fail(status) => json_response(
                    status,
                    json!({"error": "identity endpoint is broken for this test"}),
                ),
                TokenMode::Issue => {
                    let expires_on = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|now| now.as_secs())
                        .unwrap_or_default()
                        + 3600;
                    json_response(
                        200,
                        json!({
                            "access_token": ACCESS_TOKEN,
                            "expires_on": expires_on.to_string(),
                            "token_type": "Bearer",
                            "resource": VAULT_RESOURCE,
                        }),
                    )
                }
            }
        });
        Self {
            server: serve(listener, None, handler),
            mode,
            requests,
        }
    }

    /// The value for IDENTITY_ENDPOINT.
    pub fn endpoint(&self) -> String {
        format!("http://{}/msi/token", self.server.addr())
    }

    /// Changes what later token requests get.
    pub fn set(&self, mode: TokenMode) {
        *lock(&self.mode) = mode;
    }

    /// Token requests so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// What the fake vault answers to an authorized read.
#[derive(Clone, Debug)]
pub enum VaultMode {
    Secret(String),
    Status(u16),
}

struct VaultState {
    mode: Mutex<VaultMode>,
    authorized_reads: AtomicUsize,
    challenges: AtomicUsize,
}

/// An HTTPS Key Vault on a fixed 127.0.0.1 port, addressed as `localhost` (the one host for which the service
/// skips the challenge-resource check). Unauthenticated requests get the 401 challenge; reads with
/// [`ACCESS_TOKEN`] get the secret or the scripted error. It can start unreachable (the port held by a socket
/// that refuses connections) and come up later on the same port, with its counters kept.
pub struct FakeVault {
    pki: TestPki,
    state: Arc<VaultState>,
    port: u16,
    /// The port, held without listening until the vault comes up, so no other socket can take it meanwhile.
    reserved: Option<ClosedPort>,
    server: Option<Server>,
}

impl FakeVault {
    /// The host name in [`FakeVault::url`], as the service logs it.
    pub const HOST: &'static str = "localhost";

    /// A vault serving `mode`.
    pub async fn start(mode: VaultMode) -> Self {
        let mut vault = Self::unreachable(mode).await;
        vault.bring_up().await;
        vault
    }

    /// A vault serving `mode` with the certificate of `pki` (e.g. one about to expire).
    pub async fn start_with_pki(mode: VaultMode, pki: TestPki) -> Self {
        let mut vault = Self::unreachable_with_pki(mode, pki).await;
        vault.bring_up().await;
        vault
    }

    /// A vault whose port is chosen but where nothing listens until [`FakeVault::bring_up`].
    pub async fn unreachable(mode: VaultMode) -> Self {
        Self::unreachable_with_pki(mode, TestPki::new()).await
    }

    async fn unreachable_with_pki(mode: VaultMode, pki: TestPki) -> Self {
        let reserved = closed_port();
        let port = reserved.addr().port();
        Self {
            pki,
            state: Arc::new(VaultState {
                mode: Mutex::new(mode),
                authorized_reads: AtomicUsize::new(0),
                challenges: AtomicUsize::new(0),
            }),
            port,
            reserved: Some(reserved),
            server: None,
        }
    }

    /// Starts serving on the vault's port: the socket that held it starts listening, so the port was never
    /// free for another test to take.
    ///
    /// # Panics
    /// If the vault is already up.
    pub async fn bring_up(&mut self) {
        let listener = self
            .reserved
            .take()
            .expect("bring_up on a vault that is already up")
            .listen();
        let state = Arc::clone(&self.state);
        let handler: Handler = Arc::new(move |parts| state.answer(parts));
        self.server = Some(serve(listener, Some(self.pki.acceptor()), handler));
    }

    /// The value for KEY_VAULT_URL.
    pub fn url(&self) -> String {
        format!("https://{}:{}/", Self::HOST, self.port)
    }

    /// The CA file the vault's certificate chains to, for EXTRA_CA_CERTS.
    pub fn ca_file(&self) -> &Path {
        self.pki.ca_file()
    }

    /// The PKI the vault is served with, so another fake can share its CA file.
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// Changes what later authorized reads get.
    pub fn set(&self, mode: VaultMode) {
        *lock(&self.state.mode) = mode;
    }

    /// Authorized reads so far.
    pub fn reads(&self) -> usize {
        self.state.authorized_reads.load(Ordering::SeqCst)
    }

    /// 401 challenges answered so far (requests without a valid token).
    pub fn challenges(&self) -> usize {
        self.state.challenges.load(Ordering::SeqCst)
    }
}

impl VaultState {
    fn answer(&self, parts: &Parts) -> Response<Full<Bytes>> {
        let path = parts.uri.path().trim_end_matches('/');
        let Some(name) = path.strip_prefix("/secrets/") else {
            return json_response(404, json!({"error": {"code": "NotFound"}}));
        };
        if !query(parts).contains_key("api-version") {
            return json_response(400, json!({"error": {"code": "MissingApiVersion"}}));
        }
        let authorized = parts
            .headers
            .get("authorization")
            .is_some_and(|v| v == format!("Bearer {ACCESS_TOKEN}").as_str());
        if !authorized {
            self.challenges.fetch_add(1, Ordering::SeqCst);
            return Response::builder()
                .status(401)
                .header(
                    "www-authenticate",
                    r#"Bearer authorization="https://login.microsoftonline.com/00000000-0000-0000-0000-000000000000", resource="https://vault.azure.net""#,
                )
                .body(Full::new(Bytes::from_static(
                    br#"{"error":{"code":"Unauthorized","message":"AKV10000: Request is missing a Bearer or PoP token."}}"#,
                )))
                .expect("a valid response");
        }
        self.authorized_reads.fetch_add(1, Ordering::SeqCst);
        match lock(&self.mode).clone() {
            VaultMode::Secret(value) => json_response(
                200,
                json!({
                    "value": value,
                    "id": format!("https://localhost/secrets/{name}/0123456789abcdef"),
                    "attributes": {"enabled": true, "updated": SECRET_UPDATED},
                }),
            ),
            VaultMode::Status(404) => json_response(
                404,
                json!({"error": {"code": "SecretNotFound", "message": format!("A secret with (name/id) {name} was not found in this key vault.")}}),
            ),
            VaultMode::Status(403) => json_response(
                403,
                json!({"error": {"code": "Forbidden", "message": "The user, group or application does not have secrets get permission on key vault.", "innererror": {"code": "ForbiddenByRbac"}}}),
            ),
            VaultMode::Status(status) => json_response(
                status,
                json!({"error": {"code": "InternalError", "message": "fake vault failure"}}),
            ),
        }
    }
}
