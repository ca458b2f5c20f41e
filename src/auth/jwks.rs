//! The issuer's signing keys: fetched through the service's own outbound client (bundled roots plus
//! EXTRA_CA_CERTS), cached, and refreshed in the background.
//!
//! A background task fetches from startup on, so the server listens at once; until a fetch succeeds
//! validations answer 503 AUTH_UNAVAILABLE. It re-fetches every [`REFRESH_INTERVAL`]; a failed fetch keeps the
//! last good keys and is retried with backoff (1 s doubling, capped at 30 s). A token whose `kid` is not
//! cached triggers one fetch at once ([`SigningKeys::refresh_for_unknown_kid`]): such fetches are
//! single-flight (callers that arrive meanwhile share it) and at most one per [`UNKNOWN_KID_INTERVAL`], so
//! tokens with invented key ids cannot make the service hammer the issuer. Once started, such a fetch runs
//! to its end on its own task, whatever becomes of the request that caused it, and the interval counts from
//! that end: a client that sends an invented `kid` and hangs up cannot cut every refresh short and so keep
//! a rotated key from being learned.
//!
//! A fetch reads `{AUTH_ISSUER}/.well-known/openid-configuration`, then the `jwks_uri` it names, and keeps
//! every RSA signing key with a `kid`. Each fetch is logged with its outcome and the number of keys, never a
//! key's material.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use jsonwebtoken::DecodingKey;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::is_loopback_host;
use crate::outbound::{HttpClient, error_text, retry_delay};
use crate::telemetry::logging::millis;

/// How often the keys are re-fetched while all is well (Entra rotates its keys with weeks of overlap).
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// Fewest seconds between two fetches triggered by an unknown `kid`.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(30);

/// Upper bound for one fetch (discovery and JWKS together).
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest discovery document or JWKS read (Entra's JWKS is about 10 KB).
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;

/// What the cache knows about a key id.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// No fetch has succeeded yet.
    NotLoaded,
    /// The key set holds no key with this id.
    Unknown,
    Found(DecodingKey),
}

/// Why a fetch failed, in words an operator can act on.
#[derive(Debug, Clone, thiserror::Error)]
enum FetchError {
    #[error("{what} is unreachable: {detail}")]
    Unreachable { what: &'static str, detail: String },
    #[error("{what} answered HTTP {status}")]
    Status { what: &'static str, status: u16 },
    #[error("{what} is not a valid document: {detail}")]
    Invalid { what: &'static str, detail: String },
    #[error("no answer within {} s", FETCH_TIMEOUT.as_secs())]
    Timeout,
}

impl FetchError {
    fn outcome(&self) -> &'static str {
        match self {
            FetchError::Unreachable { .. } => "unreachable",
            FetchError::Status { .. } => "http_error",
            FetchError::Invalid { .. } => "invalid",
            FetchError::Timeout => "timeout",
        }
    }
}

/// The signing keys of one issuer, cached and refreshed. Dropping it stops the background task.
pub struct SigningKeys {
    discovery: Uri,
    http: HttpClient,
    keys: RwLock<Option<Arc<HashMap<String, DecodingKey>>>>,
    /// Held while a fetch runs, so fetches never overlap.
    fetching: tokio::sync::Mutex<()>,
    /// The unknown-`kid` fetch in flight, and when the last one ended.
    unknown_kid: Mutex<UnknownKid>,
    /// Itself, so an unknown-`kid` fetch can run on a task of its own.
    this: Weak<SigningKeys>,
    /// The runtime the background task runs on, where unknown-`kid` fetches run too: not the runtime of
    /// the worker whose request asked for one.
    runtime: tokio::runtime::Handle,
    _stop: watch::Sender<()>,
}

/// The single-flight state of the unknown-`kid` fetch.
#[derive(Debug, Default)]
struct UnknownKid {
    /// Changes (its sender is dropped) when the fetch in flight has ended.
    running: Option<watch::Receiver<()>>,
    ended: Option<Instant>,
}

/// Owned by an unknown-`kid` fetch's task: when the task ends, however it ends, the fetch is recorded as
/// ended and then (the sender dropped after `drop` ran) its waiters are woken.
struct FetchEnd {
    keys: Arc<SigningKeys>,
    _ended: watch::Sender<()>,
}

impl Drop for FetchEnd {
    fn drop(&mut self) {
        let mut state = self.keys.unknown_kid_state();
        state.running = None;
        state.ended = Some(Instant::now());
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("discovery", &self.discovery)
            .field("keys", &self.count())
            .finish_non_exhaustive()
    }
}

/// Whether a fetch that `ended` (if one did) ended less than [`UNKNOWN_KID_INTERVAL`] before `now`, so that an
/// unknown `kid` does not start another.
fn within_interval(ended: Option<Instant>, now: Instant) -> bool {
    ended.is_some_and(|at| now.saturating_duration_since(at) < UNKNOWN_KID_INTERVAL)
}

/// Why the signing-key reader could not start: AUTH_ISSUER does not make a discovery URL (configuration:
/// exit 64).
#[derive(Debug, thiserror::Error)]
#[error("AUTH_ISSUER: cannot build the discovery URL {0}")]
pub struct StartError(String);

impl SigningKeys {
    /// Starts fetching from `discovery` (the issuer's OpenID configuration URL) in the background. Must be
    /// called inside the tokio runtime.
    pub fn start(discovery: &str, http: HttpClient) -> Result<Arc<Self>, StartError> {
        let discovery: Uri = discovery
            .parse()
            .map_err(|_| StartError(discovery.to_owned()))?;
        let (stop, stopped) = watch::channel(());
        let keys = Arc::new_cyclic(|this| Self {
            discovery,
            http,
            keys: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            unknown_kid: Mutex::default(),
            this: this.clone(),
            runtime: tokio::runtime::Handle::current(),
            _stop: stop,
        });
        // Startup runs inside the runtime (`app::build`), so this cannot fail.
        tokio::spawn(refresh_loop(Arc::downgrade(&keys), stopped));
        Ok(keys)
    }

    /// One fetch, without a cache or a background task (for `diagnose`): how many signing keys the issuer
    /// publishes, or why they could not be fetched, in the words the service logs.
    pub async fn fetch_once(discovery: &str, http: HttpClient) -> Result<usize, String> {
        let discovery: Uri = discovery
            .parse()
            .map_err(|_| format!("cannot build the discovery URL {discovery}"))?;
        let (stop, _stopped) = watch::channel(());
        let once = Self {
            discovery,
            http,
            keys: RwLock::new(None),
            fetching: tokio::sync::Mutex::new(()),
            unknown_kid: Mutex::default(),
            this: Weak::new(),
            runtime: tokio::runtime::Handle::current(),
            _stop: stop,
        };
        tokio::time::timeout(FETCH_TIMEOUT, once.fetch())
            .await
            .unwrap_or(Err(FetchError::Timeout))
            .map(|keys| keys.len())
            .map_err(|e| e.to_string())
    }

    /// The key for `kid`, from the cache. Never waits.
    pub fn lookup(&self, kid: &str) -> Lookup {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        match keys.as_ref() {
            None => Lookup::NotLoaded,
            Some(set) => set.get(kid).cloned().map_or(Lookup::Unknown, Lookup::Found),
        }
    }

    /// True if the key set holds a key under `kid` and `test` accepts it. The key is looked at where it is:
    /// [`SigningKeys::lookup`] copies it, and a copy is zeroed when dropped, which a cached token's check on
    /// every validation need not pay for.
    pub fn holds(&self, kid: &str, test: impl FnOnce(&DecodingKey) -> bool) -> bool {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.as_ref().and_then(|set| set.get(kid)).is_some_and(test)
    }

    /// True once a fetch has succeeded (the `auth_keys` readiness check).
    pub fn ready(&self) -> bool {
        self.count().is_some()
    }

    fn count(&self) -> Option<usize> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.as_ref().map(|set| set.len())
    }

    /// Re-fetches the keys because a token named `kid`, which the cache does not hold: the issuer may have
    /// rotated. The fetch runs on a task of its own, so it completes even if this caller goes away; a caller
    /// arriving while it runs waits for the same fetch and then finds the key or not. No second fetch starts
    /// within [`UNKNOWN_KID_INTERVAL`] of the end of the last one.
    pub async fn refresh_for_unknown_kid(&self, kid: &str) {
        let (mut ended, start) = {
            let mut state = self.unknown_kid_state();
            if matches!(self.lookup(kid), Lookup::Found(_)) {
                return;
            }
            if let Some(running) = &state.running {
                (running.clone(), None)
            } else {
                let recent = within_interval(state.ended, Instant::now());
                let Some(keys) = self.this.upgrade().filter(|_| !recent) else {
                    return;
                };
                let (sender, running) = watch::channel(());
                state.running = Some(running.clone());
                let end = FetchEnd {
                    keys,
                    _ended: sender,
                };
                (running, Some(end))
            }
        };
        // Spawned with the state unlocked: a task that cannot run is dropped at once, and its end locks it.
        if let Some(end) = start {
            self.runtime.spawn(async move {
                let _serial = end.keys.fetching.lock().await;
                end.keys.fetch_and_store("unknown_kid").await;
            });
        }
        // Resolves when the fetch's task has ended and dropped the sender (an error then, by design).
        let _ = ended.changed().await;
    }

    fn unknown_kid_state(&self) -> std::sync::MutexGuard<'_, UnknownKid> {
        // Every change is one assignment: a poisoned lock still holds a consistent state.
        self.unknown_kid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One fetch, logged; on success the cache holds the new key set. The caller serialises fetches.
    async fn fetch_and_store(&self, reason: &'static str) -> bool {
        let started = Instant::now();
        let result = tokio::time::timeout(FETCH_TIMEOUT, self.fetch())
            .await
            .unwrap_or(Err(FetchError::Timeout));
        let duration_ms = millis(started.elapsed());
        let issuer = self.discovery.host().unwrap_or_default();
        match result {
            Ok(set) => {
                tracing::info!(
                    issuer,
                    reason,
                    outcome = "success",
                    keys = set.len(),
                    duration_ms,
                    "auth signing keys fetched"
                );
                *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(set));
                true
            }
            Err(e) => {
                let kept = self.count();
                let message = "auth signing keys fetch failed";
                match kept {
                    Some(keys) => tracing::warn!(
                        issuer,
                        reason,
                        outcome = e.outcome(),
                        error = %e,
                        kept_keys = keys,
                        duration_ms,
                        "{message}; the last keys stay in use"
                    ),
                    None => tracing::error!(
                        issuer,
                        reason,
                        outcome = e.outcome(),
                        error = %e,
                        duration_ms,
                        "{message}; validations answer 503 until it works"
                    ),
                }
                false
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, DecodingKey>, FetchError> {
        #[derive(Deserialize)]
        struct Discovery {
            jwks_uri: String,
        }
        let what = "the OpenID configuration";
        let body = self.get(&self.discovery, what).await?;
        let discovery: Discovery = serde_json::from_slice(&body).map_err(|e| invalid(what, e))?;
        let jwks_uri = jwks_uri(&discovery.jwks_uri)?;
        let what = "the JWKS";
        let body = self.get(&jwks_uri, what).await?;
        parse_jwks(&body)
    }

    async fn get(&self, uri: &Uri, what: &'static str) -> Result<Bytes, FetchError> {
        let request = Request::get(uri.clone())
            .header(
                header::USER_AGENT,
                concat!("applicant-validator/", env!("CARGO_PKG_VERSION")),
            )
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|e| invalid(what, e))?;
        let unreachable = |e: &dyn std::fmt::Display| FetchError::Unreachable {
            what,
            detail: e.to_string(),
        };
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(&error_text(&e)))?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                what,
                status: response.status().as_u16(),
            });
        }
        Limited::new(response.into_body(), MAX_DOCUMENT_BYTES)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| unreachable(&e))
    }
}

fn invalid(what: &'static str, error: impl std::fmt::Display) -> FetchError {
    FetchError::Invalid {
        what,
        detail: error.to_string(),
    }
}

/// The JWKS location must be https, or plain http on a loopback host (a local test issuer).
fn jwks_uri(value: &str) -> Result<Uri, FetchError> {
    let what = "the OpenID configuration";
    let uri: Uri = value
        .parse()
        .map_err(|_| invalid(what, "jwks_uri is not a URL"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("https"), Some(_)) => Ok(uri),
        (Some("http"), Some(host)) if is_loopback_host(host) => Ok(uri),
        _ => Err(invalid(what, "jwks_uri must be an https URL")),
    }
}

/// Every RSA signature key with a `kid` in a JWKS document; other keys (EC, encryption keys, keys for other
/// algorithms) are skipped. A set without one usable key is an error, so the last good keys stay in use.
fn parse_jwks(body: &[u8]) -> Result<HashMap<String, DecodingKey>, FetchError> {
    #[derive(Deserialize)]
    struct Jwks {
        keys: Vec<serde_json::Value>,
    }
    let what = "the JWKS";
    let jwks: Jwks = serde_json::from_slice(body).map_err(|e| invalid(what, e))?;
    let mut keys = HashMap::new();
    for jwk in &jwks.keys {
        let text = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str);
        let usable = text("kty") == Some("RSA")
            && text("use").is_none_or(|u| u == "sig")
            && text("alg").is_none_or(|a| a == "RS256");
        if !usable {
            continue;
        }
        let (Some(kid), Some(n), Some(e)) = (text("kid"), text("n"), text("e")) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_rsa_components(n, e) {
            keys.insert(kid.to_owned(), key);
        }
    }
    if keys.is_empty() {
        return Err(invalid(what, "it holds no RSA signing key with a kid"));
    }
    Ok(keys)
}

/// Fetches at once, then every [`REFRESH_INTERVAL`], retrying failures with backoff, until the keys are
/// dropped.
async fn refresh_loop(keys: Weak<SigningKeys>, mut stop: watch::Receiver<()>) {
    let mut failures = 0u32;
    let mut reason = "startup";
    loop {
        let Some(strong) = keys.upgrade() else {
            return;
        };
        let ok = {
            let _serial = strong.fetching.lock().await;
            strong.fetch_and_store(reason).await
        };
        drop(strong);
        let wait = if ok {
            failures = 0;
            reason = "interval";
            REFRESH_INTERVAL
        } else {
            failures = failures.saturating_add(1);
            reason = "retry";
            retry_delay(failures, REFRESH_INTERVAL)
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const N: &str = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw";

    #[test]
    fn jwks_keeps_only_rsa_signing_keys_with_a_kid() {
        let body = serde_json::json!({"keys": [
            {"kty": "RSA", "use": "sig", "kid": "a", "n": N, "e": "AQAB"},
            {"kty": "RSA", "kid": "b", "alg": "RS256", "n": N, "e": "AQAB"},
            {"kty": "RSA", "use": "enc", "kid": "c", "n": N, "e": "AQAB"},
            {"kty": "RSA", "kid": "d", "alg": "RS512", "n": N, "e": "AQAB"},
            {"kty": "EC", "kid": "e", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "n": N, "e": "AQAB"},
            {"kty": "RSA", "kid": "f", "n": "!!", "e": "AQAB"}
        ]});
        let keys = parse_jwks(body.to_string().as_bytes()).expect("usable keys");
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["a", "b"]);
        assert!(parse_jwks(br#"{"keys":[]}"#).is_err());
        assert!(parse_jwks(b"<html>").is_err());
    }

    /// Signing keys read from `issuer` through a client that trusts its test CA, once the startup fetch has
    /// ended.
    pub(crate) async fn keys_of(issuer: &testkit::openid::FakeIssuer) -> Arc<SigningKeys> {
        use rustls_pki_types::CertificateDer;
        use rustls_pki_types::pem::PemObject;
        let ca = CertificateDer::pem_file_iter(issuer.ca_file())
            .expect("the test CA file")
            .collect::<Result<Vec<_>, _>>()
            .expect("the test CA");
        let http = crate::outbound::build_client(&ca, Duration::from_secs(5)).expect("client");
        let discovery = format!("{}/.well-known/openid-configuration", issuer.issuer());
        let keys = SigningKeys::start(&discovery, http).expect("start");
        // The startup fetch holds the fetch lock from its task's first poll, which comes before this task's
        // next turn: taking the lock after that waits for the fetch to end.
        tokio::task::yield_now().await;
        drop(keys.fetching.lock().await);
        assert!(keys.ready(), "the startup fetch failed");
        keys
    }

    #[tokio::test]
    async fn an_unknown_kid_refresh_completes_when_its_caller_goes_away() {
        use std::future::Future;
        use testkit::openid::{FakeIssuer, TestSigner};

        let pem = |n: u8| match n {
            1 => include_str!("../../tests/fixtures/jwt-signing-key-1.pem"),
            _ => include_str!("../../tests/fixtures/jwt-signing-key-2.pem"),
        };
        let (one, two) = (
            TestSigner::from_pem("key-1", pem(1)),
            TestSigner::from_pem("key-2", pem(2)),
        );
        let issuer = FakeIssuer::start(vec![one.jwk()]).await;
        let keys = keys_of(&issuer).await;
        assert!(matches!(keys.lookup("key-2"), Lookup::Unknown));

        // The issuer rotates, and a request with an invented key id starts a refresh, then goes away (its
        // client hung up) while the fetch is under way: polled once, then dropped.
        issuer.publish(vec![one.jwk(), two.jwk()]);
        let mut cut_off = Box::pin(keys.refresh_for_unknown_kid("invented"));
        let first = std::future::poll_fn(|cx| std::task::Poll::Ready(cut_off.as_mut().poll(cx)));
        assert!(first.await.is_pending());
        drop(cut_off);

        // A token signed with the rotated key right after that still gets its key: the refresh ran to its
        // end (or is waited for), it was not cut short with the interval counting against the next one.
        keys.refresh_for_unknown_kid("key-2").await;
        assert!(matches!(keys.lookup("key-2"), Lookup::Found(_)));
        assert_eq!(
            issuer.jwks_requests(),
            2,
            "one refresh after the startup fetch"
        );

        // And the interval runs from that refresh's end: another invented key id fetches nothing.
        keys.refresh_for_unknown_kid("invented-too").await;
        assert_eq!(issuer.jwks_requests(), 2);

        // Once the interval has passed (the clock is moved, not waited for), an unknown key id fetches again.
        tokio::time::pause();
        tokio::time::advance(UNKNOWN_KID_INTERVAL).await;
        tokio::time::resume();
        let three = TestSigner::from_pem("key-3", pem(1));
        issuer.publish(vec![one.jwk(), two.jwk(), three.jwk()]);
        keys.refresh_for_unknown_kid("key-3").await;
        assert!(matches!(keys.lookup("key-3"), Lookup::Found(_)));
        assert_eq!(issuer.jwks_requests(), 3);
    }

    /// A key set is read up to 1 MiB (Entra's is about 10 KB); a larger one is refused and the keys already
    /// known are kept.
    #[tokio::test]
    async fn key_sets_of_up_to_1_mib_are_read() {
        use testkit::openid::{FakeIssuer, TestSigner};
        let signer = TestSigner::from_pem(
            "key-1",
            include_str!("../../tests/fixtures/jwt-signing-key-1.pem"),
        );
        let set = |count: usize| -> Vec<serde_json::Value> {
            (0..count)
                .map(|i| {
                    let mut jwk = signer.jwk();
                    jwk["kid"] = format!("key-{i}").into();
                    jwk
                })
                .collect()
        };
        let size =
            |keys: &[serde_json::Value]| serde_json::json!({ "keys": keys }).to_string().len();
        let (small, large) = (set(200), set(3_000));
        assert!((64 * 1024..MAX_DOCUMENT_BYTES).contains(&size(&small)));
        assert!(size(&large) > MAX_DOCUMENT_BYTES);

        let issuer = FakeIssuer::start(small).await;
        let keys = keys_of(&issuer).await;
        assert!(matches!(keys.lookup("key-199"), Lookup::Found(_)));
        assert!(format!("{keys:?}").contains("keys: Some(200)"), "{keys:?}");
        issuer.publish(large);
        keys.refresh_for_unknown_kid("key-2999").await;
        assert_eq!(issuer.jwks_requests(), 2, "the larger set was fetched");
        assert!(matches!(keys.lookup("key-2999"), Lookup::Unknown));
        assert!(matches!(keys.lookup("key-199"), Lookup::Found(_)));
        assert_eq!(MAX_DOCUMENT_BYTES, 1_048_576);
    }

    #[test]
    fn an_unknown_kid_fetches_again_30_s_after_the_last_fetch_ended() {
        let ended = Instant::now();
        let s = Duration::from_secs;
        assert!(!within_interval(None, ended));
        assert!(within_interval(Some(ended), ended));
        assert!(within_interval(
            Some(ended),
            ended + s(30) - Duration::from_nanos(1)
        ));
        assert!(!within_interval(Some(ended), ended + s(30)));
        assert_eq!(UNKNOWN_KID_INTERVAL, s(30));
    }

    #[test]
    fn the_jwks_location_must_be_https_or_loopback() {
        assert!(jwks_uri("https://login.microsoftonline.com/t/discovery/v2.0/keys").is_ok());
        assert!(jwks_uri("http://127.0.0.1:8/keys").is_ok());
        assert!(jwks_uri("http://issuer.example/keys").is_err());
        assert!(jwks_uri("/keys").is_err());
    }
}
