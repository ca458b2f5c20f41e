//! Operability against the real server: exact /metrics counts after known traffic (with a fake RiskShield
//! for upstream outcomes and the breaker), label cardinality under a scan of random paths, and per-client
//! rate limiting of validations (by peer address and by trusted X-Forwarded-For).

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};

// The Key Vault fakes of tests/vault.rs; this file uses only some of them.
#[allow(dead_code)]
mod vault_support;

const GOOD_ID: &str = "8001015009087";
/// The fake RiskShield answers 500 for ID numbers starting with 9.
const FAILING_ID: &str = "9001011234088";

mod common;

/// The server under test (tests/common), with helpers to send from chosen source addresses.
struct Server {
    addr: SocketAddr,
    inner: common::TestServer,
}

impl Server {
    async fn start(vars: &[(&str, &str)]) -> Server {
        let inner = common::TestServer::start(common::config(vars)).await;
        Server {
            addr: inner.addr,
            inner,
        }
    }

    async fn stop(self) {
        self.inner.stop().await;
    }

    /// One request on a fresh connection from `source` (a loopback address such as 127.0.0.2).
    async fn send_from(
        &self,
        source: IpAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        send_to(self.addr, source, method, path, headers, body).await
    }

    async fn send(&self, method: Method, path: &str) -> Answer {
        self.send_from(localhost(), method, path, &[], "").await
    }

    async fn validate_from(
        &self,
        source: IpAddr,
        path: &str,
        id: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        let body = format!(r#"{{"firstName":"Jane","lastName":"Doe","idNumber":"{id}"}}"#);
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send_from(source, Method::POST, path, &all, &body)
            .await
    }

    async fn validate(&self, path: &str, id: &str) -> Answer {
        self.validate_from(localhost(), path, id, &[]).await
    }

    async fn metrics(&self) -> String {
        let accept = [("accept", "application/openmetrics-text")];
        let answer = self
            .send_from(localhost(), Method::GET, "/metrics", &accept, "")
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer
                .header("content-type")
                .starts_with("application/openmetrics-text"),
            "{:?}",
            answer.headers
        );
        String::from_utf8(answer.body.to_vec()).expect("utf-8")
    }
}

/// One request to `addr` on a fresh connection from `source`.
async fn send_to(
    addr: SocketAddr,
    source: IpAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::new(source, 0))
        .expect("bind source");
    let stream = socket.connect(addr).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header"))
            .unwrap_or("")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}

/// A fake RiskShield on 127.0.0.1:0: 200 with a MEDIUM score, or 500 for ID numbers starting with 9.
async fn fake_riskshield() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
    let addr = listener.local_addr().expect("addr");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = request.into_body().collect().await.map(|b| b.to_bytes());
                        let failing = body.is_ok_and(|b| {
                            String::from_utf8_lossy(&b).contains(r#""idNumber":"9"#)
                        });
                        let (status, text) = if failing {
                            (StatusCode::INTERNAL_SERVER_ERROR, "{}")
                        } else {
                            (StatusCode::OK, r#"{"riskScore":42,"riskLevel":"MEDIUM"}"#)
                        };
                        let mut response =
                            Response::new(Full::new(Bytes::from_static(text.as_bytes())));
                        *response.status_mut() = status;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, calls)
}

/// `name{labels} value` lines of one metric family (exact name, no suffix matching), keyed by labels.
fn samples(text: &str, name: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let labels = match series.split_once('{') {
                Some((n, labels)) if n == name => labels.trim_end_matches('}').to_owned(),
                None if series == name => String::new(),
                _ => return None,
            };
            Some((labels, value.parse().expect("numeric sample")))
        })
        .collect()
}

fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    samples(text, name).get(labels).copied()
}

/// Every series identity (name and labels, without the value) in an exposition.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

const REQUESTS: &str = "applicant_validator_http_requests_total";

#[tokio::test]
async fn metrics_count_requests_upstream_outcomes_and_the_breaker_exactly() {
    let (upstream, calls) = fake_riskshield().await;
    let url = format!("http://{upstream}");
    let server = Server::start(&[
        ("RISKSHIELD_API_KEY", "k"),
        ("RISKSHIELD_API_URL", &url),
        ("RISKSHIELD_MAX_ATTEMPTS", "1"),
        ("CIRCUIT_FAILURE_THRESHOLD", "1"),
    ])
    .await;

    assert_eq!(
        server.send(Method::GET, "/health").await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.send(Method::GET, "/health").await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.validate("/api/v1/validate", GOOD_ID).await.status,
        StatusCode::OK
    );
    assert_eq!(
        server.validate("/validate", GOOD_ID).await.status,
        StatusCode::OK
    );
    let invalid = server
        .send_from(
            localhost(),
            Method::POST,
            "/api/v1/validate",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        server.send(Method::GET, "/api/v1/validate").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        server.send(Method::GET, "/nope").await.status,
        StatusCode::NOT_FOUND
    );
    let failed = server.validate("/api/v1/validate", FAILING_ID).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed.json()["error"], "UPSTREAM_UNAVAILABLE");
    // One failed call opens the breaker (threshold 1): the next call is refused without an attempt.
    let refused = server.validate("/api/v1/validate", GOOD_ID).await;
    assert_eq!(refused.json()["error"], "CIRCUIT_OPEN");
    assert_eq!(calls.load(Ordering::SeqCst), 3);

    let text = server.metrics().await;
    let expected: BTreeMap<String, f64> = [
        (r#"route="/health",method="GET",status="200""#, 2.0),
        (
            r#"route="/api/v1/validate",method="POST",status="200""#,
            1.0,
        ),
        (r#"route="/validate",method="POST",status="200""#, 1.0),
        (
            r#"route="/api/v1/validate",method="POST",status="422""#,
            1.0,
        ),
        (r#"route="/api/v1/validate",method="GET",status="405""#, 1.0),
        (r#"route="unmatched",method="GET",status="404""#, 1.0),
        (
            r#"route="/api/v1/validate",method="POST",status="503""#,
            2.0,
        ),
    ]
    .into_iter()
    .map(|(labels, n)| (labels.to_owned(), n))
    .collect();
    assert_eq!(samples(&text, REQUESTS), expected, "\n{text}");

    let duration_count = "applicant_validator_http_request_duration_seconds_count";
    assert_eq!(
        sample(&text, duration_count, r#"route="/api/v1/validate""#),
        Some(5.0)
    );
    assert_eq!(
        sample(&text, duration_count, r#"route="/health""#),
        Some(2.0)
    );

    let attempts: BTreeMap<String, f64> = [
        (r#"outcome="success""#.to_owned(), 2.0),
        (r#"outcome="unavailable""#.to_owned(), 1.0),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        samples(&text, "applicant_validator_riskshield_attempts_total"),
        attempts
    );
    assert_eq!(
        sample(
            &text,
            "applicant_validator_riskshield_attempt_duration_seconds_count",
            r#"outcome="success""#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&text, "applicant_validator_circuit_breaker_state", ""),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "applicant_validator_circuit_breaker_transitions_total",
            ""
        ),
        Some(1.0)
    );
    // The scrape itself is the one request in flight.
    assert_eq!(
        sample(&text, "applicant_validator_http_requests_in_flight", ""),
        Some(1.0)
    );
    let version = format!(r#"version="{}""#, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        sample(&text, "applicant_validator_build_info", &version),
        Some(1.0)
    );
    assert!(text.ends_with("# EOF\n"));

    // The scrape is counted once it has been answered.
    let again = server.metrics().await;
    assert_eq!(
        sample(
            &again,
            REQUESTS,
            r#"route="/metrics",method="GET",status="200""#
        ),
        Some(1.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn a_scan_of_random_paths_adds_no_series() {
    let server = Server::start(&[]).await;
    let brew = Method::from_bytes(b"BREW").expect("method token");
    let methods = [Method::GET, Method::POST, brew];
    // Warm up every combination the scan will produce, including the /metrics series itself.
    for method in &methods {
        assert_eq!(
            server.send(method.clone(), "/warm-up").await.status,
            StatusCode::NOT_FOUND
        );
    }
    let _ = server.metrics().await;
    let before = server.metrics().await;

    for i in 0..1000 {
        let path = format!(
            "/{}/{}?q={}",
            fastrand::u64(..),
            fastrand::alphanumeric(),
            fastrand::u32(..)
        );
        let answer = server.send(methods[i % methods.len()].clone(), &path).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
    }

    let after = server.metrics().await;
    assert_eq!(
        series(&before),
        series(&after),
        "the scan added series:\n{after}"
    );
    let unmatched = |text: &str| -> f64 {
        samples(text, REQUESTS)
            .iter()
            .filter(|(labels, _)| labels.starts_with(r#"route="unmatched""#))
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(unmatched(&after) - unmatched(&before), 1000.0);
    assert_eq!(
        sample(
            &after,
            REQUESTS,
            r#"route="unmatched",method="OTHER",status="404""#
        ),
        Some(1.0 + 333.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let server = Server::start(&[("METRICS_ENABLED", "false")]).await;
    assert_eq!(
        server.send(Method::GET, "/metrics").await.status,
        StatusCode::NOT_FOUND
    );
    server.stop().await;
}

#[tokio::test]
async fn the_sixth_validation_from_one_client_is_limited_and_others_are_not() {
    let server = Server::start(&[("RATE_LIMIT_PER_MINUTE", "5")]).await;
    let first = localhost();
    let second = IpAddr::from([127, 0, 0, 2]);

    for remaining in (0..5).rev() {
        let answer = server
            .validate_from(first, "/api/v1/validate", GOOD_ID, &[])
            .await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("x-ratelimit-limit"), "5");
        assert_eq!(
            answer.header("x-ratelimit-remaining"),
            remaining.to_string()
        );
        let reset: u64 = answer
            .header("x-ratelimit-reset")
            .parse()
            .expect("reset seconds");
        assert!((1..=60).contains(&reset), "{reset}");
    }
    // The alias shares the client's allowance, and X-Forwarded-For is ignored unless trusted.
    let limited = server
        .validate_from(
            first,
            "/validate",
            GOOD_ID,
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["error"], "RATE_LIMIT_ERROR");
    assert_eq!(
        limited.json()["correlationId"],
        limited.header("x-correlation-id")
    );
    let retry_after: u64 = limited
        .header("retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    assert_eq!(limited.header("x-ratelimit-limit"), "5");
    assert_eq!(limited.header("x-ratelimit-remaining"), "0");
    let reset: u64 = limited
        .header("x-ratelimit-reset")
        .parse()
        .expect("reset seconds");
    assert!(reset >= retry_after, "{reset} < {retry_after}");

    // Another client (another source address) has its own allowance.
    let other = server
        .validate_from(second, "/api/v1/validate", GOOD_ID, &[])
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.header("x-ratelimit-remaining"), "4");

    // Errors from validate carry the headers too, and count against the allowance.
    let invalid = server
        .send_from(
            second,
            Method::POST,
            "/api/v1/validate",
            &[("content-type", "application/json")],
            "{}",
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(invalid.header("x-ratelimit-remaining"), "3");

    // Health, readiness, docs and metrics are never limited and carry no rate-limit headers.
    for _ in 0..10 {
        for path in [
            "/health",
            "/api/v1/health",
            "/ready",
            "/docs",
            "/openapi.json",
            "/metrics",
        ] {
            let answer = server.send_from(first, Method::GET, path, &[], "").await;
            assert_eq!(answer.status, StatusCode::OK, "{path}");
            assert_eq!(answer.header("x-ratelimit-limit"), "", "{path}");
        }
    }
    let text = server.metrics().await;
    assert_eq!(
        sample(
            &text,
            REQUESTS,
            r#"route="/validate",method="POST",status="429""#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "applicant_validator_rate_limit_tracked_clients", ""),
        Some(2.0)
    );
    server.stop().await;
}

#[tokio::test]
async fn trusted_forwarded_for_addresses_are_limited_separately() {
    let server = Server::start(&[
        ("RATE_LIMIT_PER_MINUTE", "5"),
        ("TRUST_FORWARDED_FOR", "true"),
    ])
    .await;
    let me = localhost();
    let a = [("x-forwarded-for", "203.0.113.1")];
    let b = [("x-forwarded-for", "203.0.113.2, 10.0.0.1")];
    for _ in 0..5 {
        let answer = server
            .validate_from(me, "/api/v1/validate", GOOD_ID, &a)
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = server
        .validate_from(me, "/api/v1/validate", GOOD_ID, &a)
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!limited.header("retry-after").is_empty());

    let other = server
        .validate_from(me, "/api/v1/validate", GOOD_ID, &b)
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.header("x-ratelimit-remaining"), "4");

    // A malformed header falls back to the peer address, which has its own fresh allowance.
    let malformed = [("x-forwarded-for", "not-an-address")];
    let answer = server
        .validate_from(me, "/api/v1/validate", GOOD_ID, &malformed)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("x-ratelimit-remaining"), "4");
    server.stop().await;
}

#[tokio::test]
async fn without_a_limit_validations_carry_no_rate_limit_headers() {
    let server = Server::start(&[]).await;
    for _ in 0..20 {
        let answer = server.validate("/api/v1/validate", GOOD_ID).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("x-ratelimit-limit"), "");
    }
    server.stop().await;
}

#[tokio::test]
async fn vault_reads_and_the_key_age_are_exposed() {
    let key = "rs-key-ops-5c1f";
    let fx = vault_support::Fixture::start(vault_support::VaultMode::Secret(key.into()), key, true)
        .await;
    let app = vault_support::App::start(&fx.env("5m")).await;
    app.wait_ready(StatusCode::OK).await;
    let (status, body) = app.validate().await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let answer = send_to(app.addr, localhost(), Method::GET, "/metrics", &[], "").await;
    assert_eq!(answer.status, StatusCode::OK);
    let text = String::from_utf8(answer.body.to_vec()).expect("utf-8");
    let reads: BTreeMap<String, f64> = [(r#"outcome="success""#.to_owned(), 1.0)]
        .into_iter()
        .collect();
    assert_eq!(
        samples(&text, "applicant_validator_vault_reads_total"),
        reads,
        "\n{text}"
    );
    assert_eq!(
        sample(
            &text,
            "applicant_validator_vault_read_duration_seconds_count",
            ""
        ),
        Some(1.0)
    );
    let age = sample(&text, "applicant_validator_vault_key_age_seconds", "").expect("key age");
    assert!((0.0..300.0).contains(&age), "{age}");
    assert_eq!(
        sample(&text, "applicant_validator_circuit_breaker_state", ""),
        Some(0.0)
    );
    assert_eq!(fx.vault.reads(), 1);
    assert!(!text.contains(key), "the key must never appear in metrics");
}
