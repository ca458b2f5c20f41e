//! What the integration tests share on top of `testkit`: the service in this process on 127.0.0.1:0, the
//! built binary run as a child process, the vault fixture wiring the Azure fakes into the binary's
//! environment, and the applicant every test sends.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use applicant_validator::Config;
use http::header::HeaderValue;
use http::{Method, StatusCode};
use serde_json::Value;
use testkit::azure::{FakeIdentity, FakeVault, IDENTITY_HEADER, TokenMode, VaultMode};
use testkit::client::{self, Reply};
use testkit::process::{PATIENCE, Process};
use testkit::riskshield::{FakeRiskShield, Plan, Step};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The service's route table, compared with what /openapi.json documents.
pub use applicant_validator::routes::Route;

/// The built service binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_applicant-validator");

/// The secret name the vault tests configure.
pub const SECRET_NAME: &str = "RISKSHIELD-API-KEY";

/// A configuration from `vars` (unset variables take their defaults), HOST pinned to loopback.
pub fn config(vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.entry("HOST".into())
        .or_insert_with(|| "127.0.0.1".into());
    match Config::from_lookup(|name| map.get(name).cloned()) {
        Ok(c) => c,
        Err(e) => panic!("test configuration is invalid: {e}"),
    }
}

/// A valid applicant: the ID number is the contract's example, the names must never reach a log.
pub fn applicant() -> Value {
    serde_json::json!({"firstName": "Thandi", "lastName": "Nkosi", "idNumber": "9001011234088"})
}

/// The service under test, running in this process on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            applicant_validator::serve(config, listener, shutdown)
                .await
                .expect("server runs");
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// The built binary running `serve` on 127.0.0.1 with JSON logs and only the environment the test gives it.
pub struct App {
    pub process: Process,
    pub addr: SocketAddr,
}

impl App {
    /// Starts the binary and waits until it logs the address it listens on (PORT=0).
    pub async fn start(env: &[(&str, &str)]) -> Self {
        let mut vars = vec![
            ("HOST", "127.0.0.1"),
            ("PORT", "0"),
            ("LOG_FORMAT", "json"),
            ("LOG_LEVEL", "INFO"),
            ("ENVIRONMENT", "test"),
        ];
        vars.extend_from_slice(env);
        let process = Process::spawn(BIN, &["serve"], &vars);
        let listening = process
            .wait_for_log("the listening line", |line| line["message"] == "listening")
            .await;
        let addr = listening["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .expect("the listening line has the address");
        Self { process, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> Reply {
        client::get(&self.url(path)).await
    }

    /// One valid validation request.
    pub async fn validate(&self) -> Reply {
        self.validate_as("vault-test").await
    }

    /// One valid validation request with the given X-Correlation-ID.
    pub async fn validate_as(&self, correlation_id: &str) -> Reply {
        client::send(
            Method::POST,
            &self.url("/api/v1/validate"),
            &[
                ("content-type", "application/json"),
                ("x-correlation-id", correlation_id),
            ],
            applicant().to_string(),
        )
        .await
    }

    /// Polls /ready until it answers `want`, failing the test after [`PATIENCE`]; returns the last body.
    /// Readiness has no event to wait on, so this is the one poll: a short pause between probes, no timing
    /// assumption.
    pub async fn wait_ready(&self, want: StatusCode) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let reply = self.get("/ready").await;
            if reply.status == want {
                return reply.json();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/ready stayed {} {}; logs:\n{}",
                reply.status,
                reply.text(),
                self.process.lines().join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// No log line may carry any of `secrets` (keys, tokens, personal data).
    pub fn assert_no_secrets_logged(&self, secrets: &[&str]) {
        for line in self.process.lines() {
            for secret in secrets {
                assert!(!line.contains(secret), "a log line leaks a secret: {line}");
            }
        }
    }
}

/// The fakes a vault test needs, and the environment pointing the binary at them.
pub struct Fixture {
    pub identity: FakeIdentity,
    pub vault: FakeVault,
    pub upstream: FakeRiskShield,
}

impl Fixture {
    /// Starts every fake; the vault serves `mode` unless `vault_up` is false (its port is chosen then, and
    /// nothing listens there until [`FakeVault::bring_up`]). The upstream accepts only `upstream_key`.
    pub async fn start(mode: VaultMode, upstream_key: &str, vault_up: bool) -> Self {
        let identity = FakeIdentity::start(TokenMode::Issue).await;
        let vault = if vault_up {
            FakeVault::start(mode).await
        } else {
            FakeVault::unreachable(mode).await
        };
        let key = HeaderValue::from_str(upstream_key).expect("a header-safe test key");
        let upstream =
            FakeRiskShield::with_plan(Plan::new(Step::ok(42, "MEDIUM")).api_key(key)).await;
        Self {
            identity,
            vault,
            upstream,
        }
    }

    /// The binary's environment: vault, identity endpoint, CA file, upstream, and `ttl`.
    pub fn env(&self, ttl: &str) -> Vec<(&'static str, String)> {
        vec![
            ("KEY_VAULT_URL", self.vault.url()),
            ("RISKSHIELD_API_KEY_SECRET_NAME", SECRET_NAME.to_string()),
            ("EXTRA_CA_CERTS", self.vault.ca_file().display().to_string()),
            ("RISKSHIELD_API_URL", self.upstream.url()),
            ("IDENTITY_ENDPOINT", self.identity.endpoint()),
            ("IDENTITY_HEADER", IDENTITY_HEADER.to_string()),
            ("SECRET_CACHE_TTL", ttl.to_string()),
        ]
    }

    /// Starts the binary with [`Fixture::env`], leaving out the variables named in `without`.
    pub async fn app(&self, ttl: &str, without: &[&str]) -> App {
        let env = self.env(ttl);
        let vars: Vec<(&str, &str)> = env
            .iter()
            .filter(|(name, _)| !without.contains(name))
            .map(|(name, value)| (*name, value.as_str()))
            .collect();
        App::start(&vars).await
    }
}

/// True for the log line of a vault read with `outcome`.
pub fn vault_read(line: &Value, outcome: &str) -> bool {
    line["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("key vault read"))
        && line["outcome"] == outcome
}
