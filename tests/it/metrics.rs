//! /metrics against the real server: exact counts after known traffic (with a fake RiskShield for upstream
//! outcomes and the breaker), label cardinality under a scan of random paths, turning the endpoint off,
//! content negotiation (the classic Prometheus text format by default and for `text/plain`, OpenMetrics when
//! the scraper prefers it, and the same series in both), and the Key Vault series.
//!
//! The server and sample helpers here are shared with the rate-limit tests, which read the limiter's series.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use bytes::Bytes;
use http::{Method, StatusCode};
use testkit::Reply;
use testkit::azure::VaultMode;
use testkit::client::{get, post_json, send, send_from};
use testkit::riskshield::{FakeRiskShield, Step};

use crate::support::{Fixture, TestServer, applicant, config};

pub(crate) const GOOD_ID: &str = "8001015009087";

/// The server under test, with helpers to send from chosen source addresses.
pub(crate) struct Server {
    inner: TestServer,
}

impl Server {
    pub(crate) async fn start(vars: &[(&str, &str)]) -> Server {
        Server {
            inner: TestServer::start(config(vars)).await,
        }
    }

    pub(crate) async fn stop(self) {
        self.inner.stop().await;
    }

    /// One request on a fresh connection from `source` (a loopback address such as 127.0.0.2).
    pub(crate) async fn send_from(
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

    pub(crate) async fn validate_from(
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

    pub(crate) async fn validate(&self, path: &str, id: &str) -> Reply {
        self.validate_from(localhost(), path, id, &[]).await
    }

    pub(crate) async fn metrics(&self) -> String {
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

pub(crate) fn localhost() -> IpAddr {
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

pub(crate) fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
    samples(text, name).get(labels).copied()
}

/// Every series identity (name and labels, without the value) in an exposition.
fn series(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

pub(crate) const REQUESTS: &str = "applicant_validator_http_requests_total";

const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Accept header a Prometheus 2.x/3.x server sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn scrape(server: &TestServer, accept: Option<&str>) -> (String, String) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    let reply = send(Method::GET, &server.url("/metrics"), &headers, Bytes::new()).await;
    assert_eq!(reply.status, StatusCode::OK);
    // The CORS layer adds a Vary of its own; the format's is one more.
    assert!(
        reply.headers.get_all("vary").iter().any(|v| v == "accept"),
        "{:?}",
        reply.headers
    );
    let content_type = reply.header("content-type").expect("a content type");
    let body = String::from_utf8(reply.body.to_vec()).expect("utf-8");
    (content_type.to_owned(), body)
}

/// Sample lines, minus those of the /metrics route itself (each scrape adds to them), sorted.
fn sample_lines(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.contains(r#"route="/metrics""#))
        .collect();
    lines.sort_unstable();
    lines
}

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
async fn metrics_negotiate_classic_text_or_openmetrics() {
    let server = TestServer::start(config(&[
        ("DEMO_MODE", "true"),
        ("RATE_LIMIT_PER_MINUTE", "600"),
    ]))
    .await;
    assert_eq!(get(&server.url("/health")).await.status, StatusCode::OK);
    let validated = post_json(&server.url("/api/v1/validate"), &applicant()).await;
    assert_eq!(validated.status, StatusCode::OK);

    let (content_type, classic) = scrape(&server, None).await;
    assert_eq!(content_type, CLASSIC);
    assert!(!classic.contains("# EOF"), "{classic}");
    assert!(!classic.contains("# UNIT"), "{classic}");
    for line in [
        "# TYPE applicant_validator_http_requests_total counter\n",
        "# TYPE applicant_validator_http_request_duration_seconds histogram\n",
        "# TYPE applicant_validator_rate_limit_tracked_clients gauge\n",
        "# TYPE applicant_validator_build_info gauge\n",
        r#"applicant_validator_http_requests_total{route="/api/v1/validate",method="POST",status="200"} 1"#,
    ] {
        assert!(classic.contains(line), "missing {line:?} in\n{classic}");
    }

    let (content_type, openmetrics) = scrape(&server, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(content_type, OPENMETRICS);
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert!(openmetrics.contains("# TYPE applicant_validator_http_requests counter\n"));
    assert!(openmetrics.contains("# TYPE applicant_validator_build info\n"));
    assert_eq!(sample_lines(&classic), sample_lines(&openmetrics));
    assert!(sample_lines(&classic).len() > 10, "{classic}");

    for (accept, expected) in [
        ("text/plain", CLASSIC),
        ("text/plain; version=0.0.4", CLASSIC),
        ("*/*", CLASSIC),
        ("application/json", CLASSIC),
        ("application/openmetrics-text", OPENMETRICS),
        (
            "application/openmetrics-text;q=0.2, text/plain;q=0.8",
            CLASSIC,
        ),
        (
            "text/plain;q=0.5, application/openmetrics-text;q=0.9",
            OPENMETRICS,
        ),
        ("application/openmetrics-text;q=0", CLASSIC),
    ] {
        let (content_type, body) = scrape(&server, Some(accept)).await;
        assert_eq!(content_type, expected, "Accept: {accept}");
        assert_eq!(
            body.ends_with("# EOF\n"),
            expected == OPENMETRICS,
            "{accept}"
        );
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
