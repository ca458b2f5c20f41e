//! Operability against the real server: exact /metrics counts after known traffic (with a fake RiskShield
//! for upstream outcomes and the breaker), label cardinality under a scan of random paths, and per-client
//! rate limiting of validations (by peer address and by trusted X-Forwarded-For).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use http::{Method, StatusCode};
use testkit::Reply;
use testkit::azure::VaultMode;
use testkit::client::{send, send_from};
use testkit::riskshield::{FakeRiskShield, Step};

use crate::support::{Fixture, TestServer, config};

const GOOD_ID: &str = "8001015009087";

/// The server under test, with helpers to send from chosen source addresses.
struct Server {
    inner: TestServer,
}

impl Server {
    async fn start(vars: &[(&str, &str)]) -> Server {
        Server {
            inner: TestServer::start(config(vars)).await,
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
    ) -> Reply {
        send_from(
            Some(source),
            method,
            &self.inner.url(path),
            headers,
            body.to_owned(),
        )
        .await
    }

    async fn send(&self, method: Method, path: &str) -> Reply {
        self.send_from(localhost(), method, path, &[], "").await
    }

    async fn validate_from(
        &self,
        source: IpAddr,
        path: &str,
        id: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        let body = format!(r#"{{"firstName":"Jane","lastName":"Doe","idNumber":"{id}"}}"#);
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send_from(source, Method::POST, path, &all, &body)
            .await
    }

    async fn validate(&self, path: &str, id: &str) -> Reply {
        self.validate_from(localhost(), path, id, &[]).await
    }

    async fn metrics(&self) -> String {
        let accept = [("accept", "application/openmetrics-text")];
        metrics_text(
            self.send_from(localhost(), Method::GET, "/metrics", &accept, "")
                .await,
        )
    }
}

/// The text of a /metrics answer, after checking it is one.
fn metrics_text(answer: Reply) -> String {
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/openmetrics-text")),
        "{:?}",
        answer.headers
    );
    String::from_utf8(answer.body.to_vec()).expect("utf-8")
}

/// A header that must be present, as text.
fn header<'a>(answer: &'a Reply, name: &str) -> &'a str {
    answer
        .header(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", answer.headers))
}

fn localhost() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
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
    // Two good answers, then a 500 for the third call (the one meant to fail), then good again.
    let fake = FakeRiskShield::scripted(
        vec![
            Step::ok(42, "MEDIUM"),
            Step::ok(42, "MEDIUM"),
            Step::status(500),
        ],
        Step::ok(42, "MEDIUM"),
    )
    .await;
    let url = fake.url();
    let server = Server::start(&[
        ("RISKSHIELD_API_KEY", "k"),
        ("RISKSHIELD_API_URL", &url),
        ("RISKSHIELD_MAX_ATTEMPTS", "1"),
        ("CIRCUIT_FAILURE_THRESHOLD", "1"),
    ])
    .await;

    // Known traffic: method, path, JSON body (sent with Content-Type application/json when not empty), and
    // the status each request must get.
    let good = format!(r#"{{"firstName":"Jane","lastName":"Doe","idNumber":"{GOOD_ID}"}}"#);
    let traffic = [
        (Method::GET, "/health", "", StatusCode::OK),
        (Method::GET, "/health", "", StatusCode::OK),
        (Method::POST, "/api/v1/validate", &good, StatusCode::OK),
        (Method::POST, "/validate", &good, StatusCode::OK),
        (
            Method::POST,
            "/api/v1/validate",
            "{}",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            Method::GET,
            "/api/v1/validate",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::GET, "/nope", "", StatusCode::NOT_FOUND),
    ];
    for (method, path, body, want) in traffic {
        let headers: &[(&str, &str)] = if body.is_empty() {
            &[]
        } else {
            &[("content-type", "application/json")]
        };
        let answer = server
            .send_from(localhost(), method.clone(), path, headers, body)
            .await;
        assert_eq!(answer.status, want, "{method} {path}");
    }
    let failed = server.validate("/api/v1/validate", GOOD_ID).await;
    assert_eq!(failed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(failed.json()["error"], "UPSTREAM_UNAVAILABLE");
    // One failed call opens the breaker (threshold 1): the next call is refused without an attempt.
    let refused = server.validate("/api/v1/validate", GOOD_ID).await;
    assert_eq!(refused.json()["error"], "CIRCUIT_OPEN");
    assert_eq!(fake.count(), 3);

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
    // Logging keeps up in a test, so nothing was dropped; the series is there for alerts all the same.
    assert_eq!(
        sample(&text, "applicant_validator_log_lines_dropped_total", ""),
        Some(0.0)
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
        assert_eq!(header(&answer, "x-ratelimit-limit"), "5");
        assert_eq!(
            header(&answer, "x-ratelimit-remaining"),
            remaining.to_string()
        );
        let reset: u64 = header(&answer, "x-ratelimit-reset")
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
        header(&limited, "x-correlation-id")
    );
    let retry_after: u64 = header(&limited, "retry-after")
        .parse()
        .expect("Retry-After seconds");
    assert!((1..=12).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&limited, "x-ratelimit-limit"), "5");
    assert_eq!(header(&limited, "x-ratelimit-remaining"), "0");
    let reset: u64 = header(&limited, "x-ratelimit-reset")
        .parse()
        .expect("reset seconds");
    assert!(reset >= retry_after, "{reset} < {retry_after}");

    // Another client (another source address) has its own allowance.
    let other = server
        .validate_from(second, "/api/v1/validate", GOOD_ID, &[])
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(header(&other, "x-ratelimit-remaining"), "4");

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
    assert_eq!(header(&invalid, "x-ratelimit-remaining"), "3");

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
            assert_eq!(answer.header("x-ratelimit-limit"), None, "{path}");
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
async fn behind_a_trusted_proxy_clients_are_keyed_by_the_address_it_appended() {
    let server =
        Server::start(&[("RATE_LIMIT_PER_MINUTE", "5"), ("TRUSTED_PROXY_HOPS", "1")]).await;
    let me = localhost();
    // The proxy appends the address it saw on the right; everything left of it is the client's own text,
    // so rotating it must not buy a fresh bucket.
    for n in 0..5 {
        let forged = format!("198.51.100.{n}, 203.0.113.1");
        let answer = server
            .validate_from(
                me,
                "/api/v1/validate",
                GOOD_ID,
                &[("x-forwarded-for", &forged)],
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let limited = server
        .validate_from(
            me,
            "/api/v1/validate",
            GOOD_ID,
            &[("x-forwarded-for", "192.0.2.99, 203.0.113.1")],
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!header(&limited, "retry-after").is_empty());

    let other = server
        .validate_from(
            me,
            "/api/v1/validate",
            GOOD_ID,
            &[("x-forwarded-for", "203.0.113.1, 203.0.113.2")],
        )
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(header(&other, "x-ratelimit-remaining"), "4");

    // A malformed entry falls back to the peer address, which has its own fresh allowance.
    let malformed = [("x-forwarded-for", "not-an-address")];
    let answer = server
        .validate_from(me, "/api/v1/validate", GOOD_ID, &malformed)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(header(&answer, "x-ratelimit-remaining"), "4");
    server.stop().await;
}

#[tokio::test]
async fn without_a_limit_validations_carry_no_rate_limit_headers() {
    let server = Server::start(&[]).await;
    for _ in 0..20 {
        let answer = server.validate("/api/v1/validate", GOOD_ID).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("x-ratelimit-limit"), None);
    }
    server.stop().await;
}

#[tokio::test]
async fn vault_reads_and_the_key_age_are_exposed() {
    let key = "rs-key-ops-5c1f";
    let fx = Fixture::start(VaultMode::Secret(key.into()), key, true).await;
    let app = fx.app("5m", &[]).await;
    app.wait_ready(StatusCode::OK).await;
    let reply = app.validate().await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let text = metrics_text(
        send(
            Method::GET,
            &app.url("/metrics"),
            &[("accept", "application/openmetrics-text")],
            "",
        )
        .await,
    );
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
