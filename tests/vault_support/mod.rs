//! Local fakes for the Key Vault tests, all real servers on 127.0.0.1: an App Service style managed-identity
//! token endpoint (plain HTTP), an HTTPS Key Vault speaking the 401-challenge flow with a test CA made at run
//! time, and a RiskShield upstream. Plus a handle on the real binary run as a child process, because the Azure
//! SDK reads IDENTITY_ENDPOINT and friends from the process environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

/// How long any wait for the binary may take before the test fails (a bound, not a timing assertion).
pub const PATIENCE: Duration = Duration::from_secs(40);

/// The access token the fake identity endpoint issues and the fake vault accepts.
pub const ACCESS_TOKEN: &str = "fake-access-token-3f9c";

/// The value the fake identity endpoint requires in X-IDENTITY-HEADER.
pub const IDENTITY_HEADER: &str = "fake-identity-header-value";

/// The secret name the tests configure.
pub const SECRET_NAME: &str = "RISKSHIELD-API-KEY";

type Handler = Arc<dyn Fn(http::request::Parts) -> Response<Full<Bytes>> + Send + Sync>;

/// A running fake server; dropping it closes the listener and every connection.
pub struct Server {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `handler` on `listener`, over TLS when `tls` is given.
pub fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, handler: Handler) -> Server {
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        // Owned here so aborting the accept loop also drops every open connection.
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            let tls = tls.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let handler = handler.clone();
                    async move {
                        let (parts, body) = request.into_parts();
                        let _ = body.collect().await;
                        Ok::<_, std::convert::Infallible>(handler(parts))
                    }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    Server { addr, task }
}

fn json_response(status: u16, body: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

fn query(parts: &http::request::Parts) -> HashMap<String, String> {
    parts
        .uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect()
}

/// A test CA and a leaf certificate for localhost and 127.0.0.1 signed by it.
pub struct TestPki {
    pub ca_file: PathBuf,
    pub acceptor: TlsAcceptor,
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.ca_file);
    }
}

impl TestPki {
    pub fn new() -> Self {
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
}

/// What the fake identity endpoint answers.
#[derive(Clone, Debug)]
pub enum TokenMode {
    Issue,
    Fail(u16),
}

/// The managed-identity token endpoint (App Service / Container Apps protocol).
pub struct FakeIdentity {
    pub server: Server,
    pub mode: Arc<Mutex<TokenMode>>,
    pub requests: Arc<AtomicUsize>,
}

impl FakeIdentity {
    pub async fn start(mode: TokenMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mode = Arc::new(Mutex::new(mode));
        let requests = Arc::new(AtomicUsize::new(0));
        let (m, r) = (mode.clone(), requests.clone());
        let handler: Handler = Arc::new(move |parts| {
            r.fetch_add(1, Ordering::SeqCst);
            let q = query(&parts);
            let header_ok = parts
                .headers
                .get("x-identity-header")
                .is_some_and(|v| v == IDENTITY_HEADER);
            if !header_ok
                || q.get("resource").map(String::as_str) != Some("https://vault.azure.net")
            {
                return json_response(400, json!({"error": "bad request"}));
            }
            match m.lock().expect("lock").clone() {
                TokenMode::Fail(status) => json_response(
                    status,
                    json!({"error": "identity endpoint is broken for this test"}),
                ),
                TokenMode::Issue => {
                    let expires_on = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .expect("clock")
                        .as_secs()
                        + 3600;
                    json_response(
                        200,
                        json!({
                            "access_token": ACCESS_TOKEN,
                            "expires_on": expires_on.to_string(),
                            "token_type": "Bearer",
                            "resource": "https://vault.azure.net",
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

    pub fn endpoint(&self) -> String {
        format!("http://{}/msi/token", self.server.addr)
    }
}

/// What the fake vault answers to an authorized read.
#[derive(Clone, Debug)]
pub enum VaultMode {
    Secret(String),
    Status(u16),
}

/// Shared state of a fake vault, kept across restarts of its server.
#[derive(Clone)]
pub struct VaultState {
    pub mode: Arc<Mutex<VaultMode>>,
    pub authorized_reads: Arc<AtomicUsize>,
    pub challenges: Arc<AtomicUsize>,
}

impl VaultState {
    pub fn new(mode: VaultMode) -> Self {
        Self {
            mode: Arc::new(Mutex::new(mode)),
            authorized_reads: Arc::new(AtomicUsize::new(0)),
            challenges: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn set(&self, mode: VaultMode) {
        *self.mode.lock().expect("lock") = mode;
    }

    pub fn reads(&self) -> usize {
        self.authorized_reads.load(Ordering::SeqCst)
    }

    /// Serves the vault protocol on `listener` (HTTPS with `pki`'s leaf certificate).
    pub fn serve(&self, listener: TcpListener, pki: &TestPki) -> Server {
        let state = self.clone();
        let handler: Handler = Arc::new(move |parts| state.answer(&parts));
        serve(listener, Some(pki.acceptor.clone()), handler)
    }

    fn answer(&self, parts: &http::request::Parts) -> Response<Full<Bytes>> {
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
                .expect("valid response");
        }
        self.authorized_reads.fetch_add(1, Ordering::SeqCst);
        match self.mode.lock().expect("lock").clone() {
            VaultMode::Secret(value) => json_response(
                200,
                json!({
                    "value": value,
                    "id": format!("https://localhost/secrets/{name}/0123456789abcdef"),
                    "attributes": {"enabled": true},
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

/// The RiskShield upstream: accepts one key, records every key it receives.
pub struct FakeRiskShield {
    pub server: Server,
    pub accepted: Arc<Mutex<String>>,
    pub received: Arc<Mutex<Vec<String>>>,
}

impl FakeRiskShield {
    pub async fn start(accepted: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let accepted = Arc::new(Mutex::new(accepted.to_owned()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (a, r) = (accepted.clone(), received.clone());
        let handler: Handler = Arc::new(move |parts| {
            let key = parts
                .headers
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            r.lock().expect("lock").push(key.clone());
            if parts.uri.path() == "/score" && key == *a.lock().expect("lock") {
                json_response(200, json!({"riskScore": 42, "riskLevel": "MEDIUM"}))
            } else {
                json_response(401, json!({"error": "invalid API key"}))
            }
        });
        Self {
            server: serve(listener, None, handler),
            accepted,
            received,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn accept_only(&self, key: &str) {
        *self.accepted.lock().expect("lock") = key.to_owned();
    }

    pub fn received(&self) -> Vec<String> {
        self.received.lock().expect("lock").clone()
    }
}

/// The real binary, run with `serve` and only the environment the test gives it.
pub struct App {
    child: tokio::process::Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl App {
    /// Starts the binary and waits until it logs the address it listens on (PORT=0).
    pub async fn start(env: &[(&str, String)]) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_applicant-validator"));
        command
            .arg("serve")
            .env_clear()
            .env("HOST", "127.0.0.1")
            .env("PORT", "0")
            .env("LOG_FORMAT", "json")
            .env("LOG_LEVEL", "INFO")
            .env("ENVIRONMENT", "test")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().expect("lock").push(line);
            }
        });
        let mut app = Self {
            child,
            addr: "127.0.0.1:0".parse().expect("addr"),
            logs,
            client: Client::builder(TokioExecutor::new()).build_http(),
        };
        let listening = app
            .wait_for_log("the listening line", |line| line["message"] == "listening")
            .await;
        app.addr = listening["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("listening line has the address");
        app
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().expect("lock").clone()
    }

    /// Every log line so far, parsed (non-JSON lines are skipped).
    pub fn log_records(&self) -> Vec<Value> {
        self.logs()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls the logs until a line matches, failing the test after [`PATIENCE`].
    pub async fn wait_for_log(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(found) = self.log_records().into_iter().find(|l| matches(l)) {
                return found;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the binary exited ({status}) before {what}; logs:\n{}",
                    self.logs().join("\n")
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line for {what}; logs:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> (StatusCode, Value) {
        let response = self
            .client
            .request(request)
            .await
            .expect("the binary answers");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let request = Request::get(format!("http://{}{path}", self.addr))
            .body(Full::default())
            .expect("request");
        self.send(request).await
    }

    /// One valid validation request.
    pub async fn validate(&self) -> (StatusCode, Value) {
        self.validate_as("vault-test").await
    }

    /// One valid validation request with the given X-Correlation-ID.
    pub async fn validate_as(&self, correlation_id: &str) -> (StatusCode, Value) {
        let body = json!({"firstName": "Jane", "lastName": "Doe", "idNumber": "9001011234088"});
        let request = Request::post(format!("http://{}/api/v1/validate", self.addr))
            .header("content-type", "application/json")
            .header("x-correlation-id", correlation_id)
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.send(request).await
    }

    /// Polls /ready until it answers `want`, failing the test after [`PATIENCE`]; returns the last body.
    pub async fn wait_ready(&self, want: StatusCode) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let (status, body) = self.get("/ready").await;
            if status == want {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready stayed {status} {body}; logs:\n{}",
                self.logs().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The fakes a vault test needs, and the environment pointing the binary at them.
pub struct Fixture {
    pub pki: TestPki,
    pub identity: FakeIdentity,
    pub vault: VaultState,
    pub vault_server: Option<Server>,
    pub vault_port: u16,
    pub upstream: FakeRiskShield,
}

impl Fixture {
    /// Starts every fake; the vault serves `mode` unless `vault_up` is false (its port is reserved then).
    pub async fn start(mode: VaultMode, upstream_key: &str, vault_up: bool) -> Self {
        let pki = TestPki::new();
        let identity = FakeIdentity::start(TokenMode::Issue).await;
        let vault = VaultState::new(mode);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let vault_port = listener.local_addr().expect("addr").port();
        let vault_server = if vault_up {
            Some(vault.serve(listener, &pki))
        } else {
            // Nothing listens on the port until the test brings the vault up.
            drop(listener);
            None
        };
        let upstream = FakeRiskShield::start(upstream_key).await;
        Self {
            pki,
            identity,
            vault,
            vault_server,
            vault_port,
            upstream,
        }
    }

    /// Starts the vault on its reserved port.
    pub async fn bring_vault_up(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.vault_port))
            .await
            .expect("rebind the vault's port");
        self.vault_server = Some(self.vault.serve(listener, &self.pki));
    }

    pub fn vault_host(&self) -> &'static str {
        "localhost"
    }

    /// The binary's environment: vault, identity endpoint, CA file, upstream, and `ttl`.
    pub fn env(&self, ttl: &str) -> Vec<(&'static str, String)> {
        vec![
            (
                "KEY_VAULT_URL",
                format!("https://localhost:{}/", self.vault_port),
            ),
            ("RISKSHIELD_API_KEY_SECRET_NAME", SECRET_NAME.to_string()),
            ("EXTRA_CA_CERTS", self.pki.ca_file.display().to_string()),
            ("RISKSHIELD_API_URL", self.upstream.url()),
            ("IDENTITY_ENDPOINT", self.identity.endpoint()),
            ("IDENTITY_HEADER", IDENTITY_HEADER.to_string()),
            ("SECRET_CACHE_TTL", ttl.to_string()),
        ]
    }
}

/// True for the log line of a vault read with `outcome`.
pub fn vault_read(line: &Value, outcome: &str) -> bool {
    line["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("key vault read"))
        && line["outcome"] == outcome
}
