//! The RiskShield client: per-attempt timeouts, retries (see [`retry`](super::retry)), the circuit breaker,
//! and a strict check of the answer (see [`answer`](super::answer)), over connections from the calling worker's
//! own [`Pool`].
//!
//! The client itself is shared by every worker thread (the breaker, the key and readiness are process-wide);
//! each worker asks it once for a [`Pool`] and passes that pool with every call.
//!
//! The whole call is bounded by the inbound request's deadline: no attempt and no backoff runs past it.
//!
//! Every request written to RiskShield is an attempt of this loop: the pool writes a request at most once per
//! exchange (it never repeats one on another connection), so this loop is the one place a request is sent
//! again, each time after its backoff, logged with its attempt number and counted in the attempt metric, at
//! most RISKSHIELD_MAX_ATTEMPTS times plus the one retry after a 401/403 re-read of the key.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::HeaderValue;
use http::uri::PathAndQuery;
use tokio::time::Instant;

use super::answer::{MAX_RESPONSE_BYTES, classify};
use super::breaker::CircuitBreaker;
use super::pool::Pool;
use super::retry::{self, MAX_RETRY_DELAY, RetryPolicy};
use crate::api_key::KeySource;
use crate::config::RiskShieldUrl;
use crate::domain::{ApiKey, Applicant, Score, X_CORRELATION_ID};
use crate::error::UpstreamError;
use crate::outbound::Connector;
use crate::telemetry::jsonline::push_escaped;
use crate::telemetry::logging::millis;
use crate::telemetry::metrics::Metrics;
use crate::trace::TraceContext;

/// Readiness connects to the upstream at most this often.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// The User-Agent sent upstream.
pub const USER_AGENT: &str = concat!("applicant-validator/", env!("CARGO_PKG_VERSION"));

/// What the client is told by the composition root; it never reads the configuration itself.
#[derive(Debug, Clone)]
pub struct Settings {
    /// RISKSHIELD_API_URL, parsed once by the configuration.
    pub url: RiskShieldUrl,
    /// Bounds the readiness probe's TCP connect as well as the client's.
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Consecutive failed calls that open the breaker.
    pub breaker_threshold: u32,
    pub breaker_open_duration: Duration,
}

/// The process-wide RiskShield client.
#[derive(Debug)]
pub struct RiskShieldClient {
    connector: Connector,
    url: RiskShieldUrl,
    /// The request's head up to its per-call headers: the request line, Host, Content-Type, Accept and
    /// User-Agent (see [`RiskShieldClient::request`]).
    head: Vec<u8>,
    keys: KeySource,
    breaker: CircuitBreaker,
    policy: RetryPolicy,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
    /// When the upstream host was last probed with a TCP connect, and whether it accepted.
    reachability: Mutex<Option<(Instant, bool)>>,
    /// Held while a readiness probe runs, so concurrent /ready calls share one probe instead of each
    /// opening a connection (single-flight).
    probing: tokio::sync::Mutex<()>,
}

/// The fixed part of every score request's head. Every piece is a valid request target or header value
/// (checked by the `http` types), so no line break can get in.
fn head_of(target: &PathAndQuery, host: &HeaderValue) -> Vec<u8> {
    [
        b"POST ".as_slice(),
        target.as_str().as_bytes(),
        b" HTTP/1.1\r\nhost: ",
        host.as_bytes(),
        b"\r\ncontent-type: application/json\r\naccept: application/json\r\nuser-agent: ",
        USER_AGENT.as_bytes(),
        b"\r\n",
    ]
    .concat()
}

impl RiskShieldClient {
    /// Builds the client; `connector` opens every worker's upstream connections.
    pub fn new(
        settings: Settings,
        connector: Connector,
        keys: KeySource,
        metrics: Arc<Metrics>,
    ) -> Self {
        let mut policy = settings.retry;
        policy.max_attempts = policy.max_attempts.max(1);
        Self {
            connector,
            head: head_of(settings.url.target(), settings.url.host_header()),
            url: settings.url,
            keys,
            breaker: CircuitBreaker::new(
                settings.breaker_threshold,
                settings.breaker_open_duration,
            ),
            policy,
            connect_timeout: settings.connect_timeout,
            metrics,
            reachability: Mutex::new(None),
            probing: tokio::sync::Mutex::new(()),
        }
    }

    /// A new, empty connection pool for one worker thread.
    pub fn pool(&self) -> Pool {
        Pool::new(self.connector.clone(), self.url.score().clone())
    }

    /// The breaker, for readiness and metrics.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The key source, for readiness.
    pub fn keys(&self) -> &KeySource {
        &self.keys
    }

    /// Scores an applicant over `pool` (the calling worker's): breaker, then attempts with retries, never
    /// past `deadline`. `correlation_id` is sent upstream as it came in (the envelope checked it), and so is
    /// `trace` (the envelope's).
    pub async fn score(
        &self,
        pool: &Pool,
        applicant: &Applicant,
        correlation_id: &HeaderValue,
        trace: &TraceContext,
        deadline: Instant,
    ) -> Result<Score, UpstreamError> {
        let key = self
            .keys
            .current()
            .ok_or(UpstreamError::CredentialsUnavailable)?;
        let permit = self
            .breaker
            .try_acquire()
            .map_err(|retry_after| UpstreamError::CircuitOpen { retry_after })?;
        let body = score_body(applicant);
        // The whole call, vault re-reads included, ends by the request's deadline (every wait inside is
        // bounded by it), and its result comes back here, where the breaker permit is held: a call cut off
        // by REQUEST_TIMEOUT counts as the failure it is (504).
        let result = self
            .call_with_retries(pool, key, &body, correlation_id, trace, deadline)
            .await;
        permit.record(
            result
                .as_ref()
                .is_err_and(UpstreamError::is_breaker_failure),
        );
        result
    }

    async fn call_with_retries(
        &self,
        pool: &Pool,
        mut key: ApiKey,
        body: &[u8],
        correlation: &HeaderValue,
        trace: &TraceContext,
        deadline: Instant,
    ) -> Result<Score, UpstreamError> {
        // Visible ASCII by construction (the envelope's check), so never empty here.
        let correlation_id = correlation.to_str().unwrap_or_default();
        // The same bytes go out on every attempt, until a re-read key replaces the key in them.
        let mut request = self.request(&key, body, correlation, trace)?;
        let mut attempt = 0u32;
        let mut retries = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = self
                .attempt(pool, &request, correlation_id, started, deadline)
                .await;
            let elapsed = started.elapsed();
            let outcome = match &result {
                Ok(_) => "success",
                Err(e) => e.outcome(),
            };
            self.metrics.upstream_attempt(outcome, elapsed);
            tracing::info!(
                correlation_id,
                trace_id = trace.trace_id(),
                attempt,
                outcome,
                status = status_of(&result),
                duration_ms = millis(elapsed),
                "upstream attempt"
            );
            let error = match result {
                Ok(score) => return Ok(score),
                Err(e) => e,
            };
            if let UpstreamError::Unauthorized { .. } = error {
                if reauthenticated {
                    return Err(error);
                }
                reauthenticated = true;
                let refreshed = tokio::time::timeout_at(
                    deadline,
                    self.keys.refresh_after_rejection(&key, correlation_id),
                )
                .await
                .map_err(|_| UpstreamError::Timeout)?;
                let Some(fresh) = refreshed else {
                    return Err(error);
                };
                if retry::too_late(Instant::now(), Duration::ZERO, deadline) {
                    return Err(error);
                }
                key = fresh;
                request = self.request(&key, body, correlation, trace)?;
                continue;
            }
            if !error.is_retryable() || retries + 1 >= self.policy.max_attempts {
                return Err(error);
            }
            retries += 1;
            let wait = match &error {
                UpstreamError::Unavailable {
                    retry_after: Some(after),
                    ..
                } => (*after).min(MAX_RETRY_DELAY),
                _ => self.policy.backoff(retries),
            };
            if retry::too_late(Instant::now(), wait, deadline) {
                // Waiting would overrun the request's deadline: answer now with what we know.
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP exchange begun at `started`, bounded by the attempt timeout and the request deadline: the
    /// wait for a pooled connection when the worker's are all in use, the request written once, its answer.
    async fn attempt(
        &self,
        pool: &Pool,
        request: &[u8],
        correlation_id: &str,
        started: Instant,
        deadline: Instant,
    ) -> Result<Score, UpstreamError> {
        let attempt_deadline = (started + self.policy.attempt_timeout).min(deadline);
        let exchange = async {
            // Every answer, errors included, is read (bounded) so the connection can go back to the pool.
            let answer = pool
                .exchange(request, MAX_RESPONSE_BYTES, started)
                .await
                .map_err(|e| {
                    tracing::debug!(correlation_id, error = %e, "upstream connection failed");
                    UpstreamError::Unavailable {
                        status: None,
                        retry_after: None,
                    }
                })?;
            classify(
                answer.status,
                answer.retry_after.as_deref(),
                answer.body.as_deref().ok(),
            )
        };
        tokio::time::timeout_at(attempt_deadline, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }

    /// The whole score request, head and body, as it is written to the connection: the fixed head, then the
    /// API key (its header value was checked when the key was read), the correlation id and the trace
    /// context (both checked by the envelope), the length and the body.
    fn request(
        &self,
        key: &ApiKey,
        body: &[u8],
        correlation: &HeaderValue,
        trace: &TraceContext,
    ) -> Result<Vec<u8>, UpstreamError> {
        let api_key = key.header().ok_or(UpstreamError::CredentialsUnavailable)?;
        let mut length = itoa::Buffer::new();
        // The tracestate line, or nothing.
        let (state_line, state): (&[u8], &[u8]) = match trace.tracestate() {
            Some(state) => (b"\r\ntracestate: ", state.as_bytes()),
            None => (b"", b""),
        };
        Ok([
            self.head.as_slice(),
            b"x-api-key: ",
            api_key.as_bytes(),
            b"\r\n",
            X_CORRELATION_ID.as_str().as_bytes(),
            b": ",
            correlation.as_bytes(),
            b"\r\ntraceparent: ",
            trace.traceparent(),
            state_line,
            state,
            b"\r\ncontent-length: ",
            length.format(body.len()).as_bytes(),
            b"\r\n\r\n",
            body,
        ]
        .concat())
    }

    /// The `riskshield_api` readiness check: false while the breaker is open, or when the upstream host
    /// refused a TCP connection at the last probe (probed at most every 5 s; /score is never called).
    pub async fn ready(&self) -> bool {
        if self.breaker.is_open() {
            return false;
        }
        if let Some(ok) = self.recent_reachability() {
            return ok;
        }
        let _probing = self.probing.lock().await;
        // Whoever held the lock before may just have probed: share its answer.
        if let Some(ok) = self.recent_reachability() {
            return ok;
        }
        let ok = self.probe_tcp().await;
        *self.reachability.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
        ok
    }

    fn recent_reachability(&self) -> Option<bool> {
        let cached = *self.reachability.lock().unwrap_or_else(|p| p.into_inner());
        cached
            .filter(|(at, _)| still_fresh(*at, Instant::now()))
            .map(|(_, ok)| ok)
    }

    async fn probe_tcp(&self) -> bool {
        let (host, port) = (self.url.host(), self.url.port());
        let probe = async {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host, port)).await.ok()?.collect();
            for addr in addrs {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return Some(());
                }
            }
            None
        };
        let limit = self.connect_timeout.min(Duration::from_secs(2));
        matches!(tokio::time::timeout(limit, probe).await, Ok(Some(())))
    }
}

/// Whether a reachability probe made `at` still answers /ready at `now`: for [`READINESS_INTERVAL`].
fn still_fresh(at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(at) < READINESS_INTERVAL
}

/// The vendor's status code for an attempt's log line, when it answered with one.
fn status_of(result: &Result<Score, UpstreamError>) -> Option<u16> {
    match result {
        Err(UpstreamError::Unavailable { status, .. }) => *status,
        Err(UpstreamError::Rejected { status } | UpstreamError::Unauthorized { status }) => {
            Some(*status)
        }
        _ => None,
    }
}

/// The score request's body, `{"firstName":…,"lastName":…,"idNumber":…}`, written directly with the log lines'
/// JSON escaping: serde_json's serialiser ran its escape table over every byte of the six strings, keys
/// included (docs/benchmarks.md has the instructions this saved). A test checks the bytes against serde_json's
/// for any applicant.
fn score_body(applicant: &Applicant) -> Vec<u8> {
    let Applicant {
        first_name,
        last_name,
        id_number,
    } = applicant;
    let mut body = String::with_capacity(48 + first_name.len() + last_name.len() + id_number.len());
    body.push_str("{\"firstName\":\"");
    push_escaped(&mut body, first_name);
    body.push_str("\",\"lastName\":\"");
    push_escaped(&mut body, last_name);
    body.push_str("\",\"idNumber\":\"");
    push_escaped(&mut body, id_number);
    body.push_str("\"}");
    body.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RiskLevel;
    use proptest::prelude::*;

    proptest! {
        /// The hand-written body against serde_json's: the same bytes, except that serde_json writes two control
        /// characters no validated name or ID number holds (backspace and form feed) as `\b` and `\f`, and
        /// the log escaping as `\u0008` and `\u000c`; the same JSON value for any text at all.
        #[test]
        fn the_score_body_is_serde_jsons(
            first_name in any::<String>(),
            last_name in "[\\PC\u{8}\u{c}\n\"\\\\]{0,12}",
            id_number in "[0-9]{0,13}",
        ) {
            let applicant = Applicant { first_name, last_name, id_number };
            let body = score_body(&applicant);
            let expected = serde_json::to_vec(&applicant).expect("serialisable");
            let parsed: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
            prop_assert_eq!(parsed, serde_json::to_value(&applicant).expect("serialisable"));
            let text = [&applicant.first_name, &applicant.last_name, &applicant.id_number];
            if !text.iter().any(|t| t.contains(['\u{8}', '\u{c}'])) {
                prop_assert_eq!(body, expected);
            }
        }
    }

    #[test]
    fn a_probe_answers_for_five_seconds() {
        let at = Instant::now();
        assert!(still_fresh(at, at));
        assert!(still_fresh(
            at,
            at + READINESS_INTERVAL - Duration::from_nanos(1)
        ));
        assert!(!still_fresh(at, at + READINESS_INTERVAL));
        assert_eq!(READINESS_INTERVAL, Duration::from_secs(5));
    }

    #[test]
    fn an_attempt_is_logged_with_the_status_the_vendor_answered() {
        let unavailable = |status| UpstreamError::Unavailable {
            status,
            retry_after: None,
        };
        for (result, status) in [
            (Err(unavailable(Some(503))), Some(503)),
            (Err(unavailable(None)), None),
            (Err(UpstreamError::Rejected { status: 422 }), Some(422)),
            (Err(UpstreamError::Unauthorized { status: 403 }), Some(403)),
            (Err(UpstreamError::Timeout), None),
            (
                Ok(Score {
                    risk_score: 30,
                    risk_level: RiskLevel::Medium,
                }),
                None,
            ),
        ] {
            assert_eq!(status_of(&result), status, "{result:?}");
        }
    }
}
