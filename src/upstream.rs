//! The RiskShield client: one pooled connection pool for the process, per-attempt timeouts, retries with
//! exponential backoff and full jitter (honouring Retry-After), a circuit breaker, and a strict check of the
//! answer.
//!
//! The whole call is bounded by the inbound request's deadline: no attempt and no backoff runs past it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use tokio::time::Instant;

use crate::breaker::CircuitBreaker;
use crate::config::{ApiKey, Config};
use crate::error::UpstreamError;
use crate::keysource::KeySource;
use crate::metrics::Metrics;
use crate::outbound::HttpClient;
use crate::scoring::{RiskLevel, Score};
use crate::validation::Applicant;

/// No single backoff or Retry-After wait is longer than this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Answers larger than this are not a score.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Readiness connects to the upstream at most this often.
const READINESS_INTERVAL: Duration = Duration::from_secs(5);

/// The User-Agent sent upstream.
pub const USER_AGENT: &str = concat!("applicant-validator/", env!("CARGO_PKG_VERSION"));

/// Retry and timeout settings, split out so tests can build a client directly.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    pub base_delay: Duration,
}

impl RetryPolicy {
    /// Full jitter: a uniformly random wait between zero and `base * 2^(retry-1)`, capped.
    fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20))
            .min(MAX_RETRY_DELAY);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// The answer RiskShield documents; other fields are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScoreBody {
    risk_score: u8,
    risk_level: RiskLevel,
}

/// The process-wide RiskShield client.
#[derive(Debug)]
pub struct RiskShieldClient {
    http: HttpClient,
    score_uri: Uri,
    keys: KeySource,
    breaker: CircuitBreaker,
    policy: RetryPolicy,
    connect_timeout: Duration,
    metrics: Arc<Metrics>,
    /// When the upstream host was last probed with a TCP connect, and whether it accepted.
    reachability: Mutex<Option<(Instant, bool)>>,
}

impl RiskShieldClient {
    /// Builds the client from the configuration; `http` is the shared outbound client.
    pub fn new(
        config: &Config,
        http: HttpClient,
        keys: KeySource,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let score_uri: Uri = format!("{}/score", config.riskshield_api_url)
            .parse()
            .map_err(|e| format!("RISKSHIELD_API_URL: {e}"))?;
        Ok(Self {
            http,
            score_uri,
            keys,
            breaker: CircuitBreaker::new(
                config.circuit_failure_threshold,
                config.circuit_open_duration,
            ),
            policy: RetryPolicy {
                attempt_timeout: config.attempt_timeout,
                max_attempts: config.max_attempts.max(1),
                base_delay: config.retry_base_delay,
            },
            connect_timeout: config.connect_timeout,
            metrics,
            reachability: Mutex::new(None),
        })
    }

    /// The breaker, for readiness and metrics.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The key source, for readiness.
    pub fn keys(&self) -> &KeySource {
        &self.keys
    }

    /// Scores an applicant: breaker, then attempts with retries, never past `deadline`.
    pub async fn score(
        &self,
        applicant: &Applicant,
        correlation_id: &str,
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
        let body = Bytes::from(serde_json::to_vec(applicant).map_err(|_| {
            UpstreamError::InvalidResponse {
                reason: "request could not be encoded",
            }
        })?);
        let result = self
            .call_with_retries(key, body, correlation_id, deadline)
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
        mut key: ApiKey,
        body: Bytes,
        correlation_id: &str,
        deadline: Instant,
    ) -> Result<Score, UpstreamError> {
        let mut attempt = 0u32;
        let mut retries = 0u32;
        let mut reauthenticated = false;
        loop {
            attempt += 1;
            let started = Instant::now();
            let result = self
                .attempt(&key, body.clone(), correlation_id, deadline)
                .await;
            let elapsed = started.elapsed();
            let outcome = match &result {
                Ok(_) => "success",
                Err(e) => e.outcome(),
            };
            self.metrics.upstream_attempt(outcome, elapsed);
            tracing::info!(
                correlation_id,
                attempt,
                outcome,
                status = status_of(&result),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
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
                match self
                    .keys
                    .refresh_after_rejection(&key, correlation_id)
                    .await
                {
                    Some(fresh) if Instant::now() < deadline => {
                        key = fresh;
                        continue;
                    }
                    _ => return Err(error),
                }
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
            if Instant::now() + wait >= deadline {
                // Waiting would overrun the request's deadline: answer now with what we know.
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// One HTTP exchange, bounded by the attempt timeout and the request deadline.
    async fn attempt(
        &self,
        key: &ApiKey,
        body: Bytes,
        correlation_id: &str,
        deadline: Instant,
    ) -> Result<Score, UpstreamError> {
        let attempt_deadline = (Instant::now() + self.policy.attempt_timeout).min(deadline);
        let request = self.request(key, body, correlation_id)?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                tracing::debug!(correlation_id, error = %e, "upstream connection failed");
                UpstreamError::Unavailable {
                    status: None,
                    retry_after: None,
                }
            })?;
            let (parts, body) = response.into_parts();
            // Read (bounded) every answer, errors included, so the connection can go back to the pool.
            let bytes = Limited::new(body, MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes());
            classify(parts.status, &parts.headers, bytes)
        };
        tokio::time::timeout_at(attempt_deadline, exchange)
            .await
            .unwrap_or(Err(UpstreamError::Timeout))
    }

    fn request(
        &self,
        key: &ApiKey,
        body: Bytes,
        correlation_id: &str,
    ) -> Result<Request<Full<Bytes>>, UpstreamError> {
        let invalid = |_| UpstreamError::CredentialsUnavailable;
        let mut api_key = HeaderValue::from_str(key.expose()).map_err(invalid)?;
        api_key.set_sensitive(true);
        Request::builder()
            .method(Method::POST)
            .uri(self.score_uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .header("x-api-key", api_key)
            .header("x-correlation-id", correlation_id)
            .body(Full::new(body))
            .map_err(|_| UpstreamError::InvalidResponse {
                reason: "request could not be built",
            })
    }

    /// The `riskshield_api` readiness check: false while the breaker is open, or when the upstream host
    /// refused a TCP connection at the last probe (probed at most every 5 s; /score is never called).
    pub async fn ready(&self) -> bool {
        if self.breaker.is_open() {
            return false;
        }
        let cached = *self.reachability.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, ok)) = cached
            && at.elapsed() < READINESS_INTERVAL
        {
            return ok;
        }
        let ok = self.probe_tcp().await;
        *self.reachability.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok));
        ok
    }

    async fn probe_tcp(&self) -> bool {
        let Some(host) = self.score_uri.host() else {
            return false;
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = self
            .score_uri
            .port_u16()
            .unwrap_or(match self.score_uri.scheme_str() {
                Some("http") => 80,
                _ => 443,
            });
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

fn status_of(result: &Result<Score, UpstreamError>) -> Option<u16> {
    match result {
        Err(UpstreamError::Unavailable { status, .. }) => *status,
        Err(UpstreamError::Rejected { status } | UpstreamError::Unauthorized { status }) => {
            Some(*status)
        }
        _ => None,
    }
}

/// Turns an answer into a score or an error per the contract's table.
fn classify(
    status: StatusCode,
    headers: &http::HeaderMap,
    body: Result<Bytes, Box<dyn std::error::Error + Send + Sync>>,
) -> Result<Score, UpstreamError> {
    let code = status.as_u16();
    match code {
        200..=299 => {
            let body = body.map_err(|_| UpstreamError::InvalidResponse {
                reason: "body too large or unreadable",
            })?;
            let not_a_score = UpstreamError::InvalidResponse {
                reason: "body is not a valid score",
            };
            // serde would also accept a JSON array for a struct; the vendor's answer is an object.
            if body.trim_ascii_start().first() != Some(&b'{') {
                return Err(not_a_score);
            }
            let parsed: ScoreBody = serde_json::from_slice(&body).map_err(|_| not_a_score)?;
            if parsed.risk_score > 100 {
                return Err(UpstreamError::InvalidResponse {
                    reason: "riskScore out of range",
                });
            }
            Ok(Score {
                risk_score: parsed.risk_score,
                risk_level: parsed.risk_level,
            })
        }
        401 | 403 => Err(UpstreamError::Unauthorized { status: code }),
        408 | 429 | 500..=599 => Err(UpstreamError::Unavailable {
            status: Some(code),
            retry_after: headers
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, SystemTime::now())),
        }),
        _ => Err(UpstreamError::Rejected { status: code }),
    }
}

/// Reads Retry-After as delta-seconds or an HTTP date (relative to `now`). A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_body(s: &str) -> Result<Bytes, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Bytes::from(s.to_owned()))
    }

    #[test]
    fn valid_answers() {
        let h = http::HeaderMap::new();
        let score = classify(
            StatusCode::OK,
            &h,
            ok_body(r#"{"riskScore":42,"riskLevel":"MEDIUM","x":1}"#),
        );
        assert_eq!(
            score,
            Ok(Score {
                risk_score: 42,
                risk_level: RiskLevel::Medium
            })
        );
        assert!(
            classify(
                StatusCode::CREATED,
                &h,
                ok_body(r#"{"riskScore":0,"riskLevel":"LOW"}"#)
            )
            .is_ok()
        );
    }

    #[test]
    fn invalid_answers() {
        let h = http::HeaderMap::new();
        for body in [
            "garbage",
            r#"{"riskScore":150,"riskLevel":"HIGH"}"#,
            r#"{"riskScore":-1,"riskLevel":"HIGH"}"#,
            r#"{"riskScore":50.0,"riskLevel":"HIGH"}"#,
            r#"{"riskScore":"50","riskLevel":"HIGH"}"#,
            r#"{"riskScore":50,"riskLevel":"high"}"#,
            r#"{"riskScore":50,"riskLevel":"SEVERE"}"#,
            r#"{"riskScore":50}"#,
            r#"[50,"HIGH"]"#,
        ] {
            assert!(
                matches!(
                    classify(StatusCode::OK, &h, ok_body(body)),
                    Err(UpstreamError::InvalidResponse { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn statuses() {
        let h = http::HeaderMap::new();
        let st = |c: u16| classify(StatusCode::from_u16(c).expect("status"), &h, ok_body(""));
        assert_eq!(st(400), Err(UpstreamError::Rejected { status: 400 }));
        assert_eq!(st(404), Err(UpstreamError::Rejected { status: 404 }));
        assert_eq!(st(422), Err(UpstreamError::Rejected { status: 422 }));
        assert_eq!(st(302), Err(UpstreamError::Rejected { status: 302 }));
        assert_eq!(st(401), Err(UpstreamError::Unauthorized { status: 401 }));
        assert_eq!(st(403), Err(UpstreamError::Unauthorized { status: 403 }));
        for code in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                st(code),
                Err(UpstreamError::Unavailable {
                    status: Some(code),
                    retry_after: None
                })
            );
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_secs(1),
            max_attempts: 10,
            base_delay: Duration::from_secs(1),
        };
        for retry in 1..=30 {
            let ceiling =
                (Duration::from_secs(1) * 2u32.pow((retry - 1).min(20))).min(MAX_RETRY_DELAY);
            for _ in 0..20 {
                assert!(policy.backoff(retry) <= ceiling);
            }
        }
    }
}
