//! The upstream call against a scripted fake RiskShield: every row of the contract's table, with the exact
//! number of attempts the fake received.

use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, RETRY_AFTER};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::Reply;
use testkit::client::{exchange, get, post_json, send};
use testkit::pki::TestPki;
use testkit::riskshield::{FakeRiskShield, Plan, Step};
use testkit::server::closed_port;

use crate::metrics::sample;
use crate::support::{App, TestServer, applicant, config};

/// A server pointed at `fake` with fast retries; `extra` overrides.
async fn server(url: &str, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![
        ("RISKSHIELD_API_KEY", "test-key-123"),
        ("RISKSHIELD_API_URL", url),
        ("RISKSHIELD_RETRY_BASE_DELAY", "10ms"),
        ("RISKSHIELD_TIMEOUT", "2s"),
    ];
    vars.extend_from_slice(extra);
    TestServer::start(config(&vars)).await
}

async fn validate(s: &TestServer) -> Reply {
    post_json(&s.url("/api/v1/validate"), &applicant()).await
}

#[tokio::test]
async fn a_valid_answer_is_passed_through_with_the_contract_headers_and_body() {
    let fake = FakeRiskShield::start(Step::ok(73, "HIGH")).await;
    let s = server(&fake.url(), &[]).await;
    let r = send(
        Method::POST,
        &s.url("/api/v1/validate"),
        &[("content-type", "application/json"), ("x-correlation-id", "corr-7")],
        serde_json::to_vec(&json!({"firstName": "  Thandi ", "lastName": " Nkosi", "idNumber": "9001011234088", "ignored": true}))
            .expect("json"),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"riskScore": 73, "riskLevel": "HIGH", "correlationId": "corr-7"})
    );
    let seen = fake.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, Method::POST);
    assert_eq!(req.path, "/v1/score");
    assert_eq!(req.headers["x-api-key"], "test-key-123");
    assert_eq!(req.headers["x-correlation-id"], "corr-7");
    assert_eq!(req.headers["content-type"], "application/json");
    assert_eq!(
        req.headers["user-agent"],
        concat!("applicant-validator/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        req.body,
        json!({"firstName": "Thandi", "lastName": "Nkosi", "idNumber": "9001011234088"})
    );
    s.stop().await;
}

#[tokio::test]
async fn a_generated_correlation_id_is_sent_upstream() {
    let fake = FakeRiskShield::start(Step::ok(1, "LOW")).await;
    let s = server(&fake.url(), &[]).await;
    let r = validate(&s).await;
    let id = r.header("x-correlation-id").expect("id");
    assert_eq!(fake.requests()[0].headers["x-correlation-id"], id);
    assert_eq!(r.json()["correlationId"], id);
    s.stop().await;
}

#[tokio::test]
async fn server_errors_are_retried_up_to_max_attempts() {
    let fake = FakeRiskShield::start(Step::status(500)).await;
    let s = server(&fake.url(), &[("RISKSHIELD_MAX_ATTEMPTS", "3")]).await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(fake.count(), 3);
    s.stop().await;
}

#[tokio::test]
async fn max_attempts_one_means_no_retry() {
    let fake = FakeRiskShield::start(Step::status(502)).await;
    let s = server(&fake.url(), &[("RISKSHIELD_MAX_ATTEMPTS", "1")]).await;
    assert_eq!(validate(&s).await.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(fake.count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_503_then_200_succeeds_on_the_second_attempt() {
    let fake = FakeRiskShield::scripted(vec![Step::status(503)], Step::ok(12, "LOW")).await;
    let s = server(&fake.url(), &[]).await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["riskScore"], 12);
    assert_eq!(fake.count(), 2);
    s.stop().await;
}

#[tokio::test]
async fn request_timeout_408_is_retried() {
    let fake = FakeRiskShield::scripted(vec![Step::status(408)], Step::ok(12, "LOW")).await;
    let s = server(&fake.url(), &[]).await;
    assert_eq!(validate(&s).await.status, StatusCode::OK);
    assert_eq!(fake.count(), 2);
    s.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_before_the_next_attempt() {
    let fake = FakeRiskShield::scripted(
        vec![Step::status(429).with_header(RETRY_AFTER, HeaderValue::from_static("1"))],
        Step::ok(30, "MEDIUM"),
    )
    .await;
    let s = server(&fake.url(), &[("RISKSHIELD_RETRY_BASE_DELAY", "1ms")]).await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::OK);
    // A lower bound only: the second attempt must not come before the Retry-After.
    assert_second_attempt_waited(&fake, Duration::from_secs(1));
    s.stop().await;
}

/// Two attempts reached the fake, the second at least `wait` after the first (by the fake's own clock).
fn assert_second_attempt_waited(fake: &FakeRiskShield, wait: Duration) {
    let seen = fake.requests();
    assert_eq!(seen.len(), 2);
    let waited = seen[1].at - seen[0].at;
    assert!(waited >= wait, "{waited:?}");
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    // The fake writes the date as it answers: two seconds ahead, cut to whole seconds by the date format,
    // so the retry may come no earlier than one second after the first attempt, however slow the start.
    let fake = FakeRiskShield::scripted(
        vec![Step::status(503).with_retry_after_date(Duration::from_secs(2))],
        Step::ok(30, "MEDIUM"),
    )
    .await;
    let s = server(&fake.url(), &[]).await;
    assert_eq!(validate(&s).await.status, StatusCode::OK);
    assert_second_attempt_waited(&fake, Duration::from_secs(1));
    s.stop().await;
}

#[tokio::test]
async fn a_retry_after_above_the_cap_waits_only_the_cap() {
    // An hour asked, 10 s (the cap) waited: within the 20 s deadline, so the retry is made. Uncapped, the wait
    // would overrun the deadline and the first 503 would be the answer.
    let fake = FakeRiskShield::scripted(
        vec![Step::status(503).with_header(RETRY_AFTER, HeaderValue::from_static("3600"))],
        Step::ok(30, "MEDIUM"),
    )
    .await;
    let s = server(
        &fake.url(),
        &[("REQUEST_TIMEOUT", "20s"), ("RISKSHIELD_TIMEOUT", "5s")],
    )
    .await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_second_attempt_waited(&fake, Duration::from_secs(10));
    s.stop().await;
}

#[tokio::test]
async fn the_final_unavailable_answer_carries_the_upstream_retry_after() {
    let fake = FakeRiskShield::start(
        Step::status(503).with_header(RETRY_AFTER, HeaderValue::from_static("1")),
    )
    .await;
    let s = server(&fake.url(), &[("RISKSHIELD_MAX_ATTEMPTS", "2")]).await;
    let r = validate(&s).await;
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(fake.count(), 2);
    s.stop().await;
}

#[tokio::test]
async fn a_retry_that_would_overrun_the_request_deadline_is_not_made() {
    let fake = FakeRiskShield::start(
        Step::status(503).with_header(RETRY_AFTER, HeaderValue::from_static("5")),
    )
    .await;
    let s = server(&fake.url(), &[("REQUEST_TIMEOUT", "2s")]).await;
    let r = validate(&s).await;
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(fake.count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    for status in [400, 404, 409, 422] {
        let fake = FakeRiskShield::start(Step::status(status)).await;
        let s = server(&fake.url(), &[]).await;
        let r = validate(&s).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{status}");
        assert_eq!(r.code(), "UPSTREAM_ERROR");
        assert_eq!(fake.count(), 1, "{status}");
        s.stop().await;
    }
}

#[tokio::test]
async fn invalid_answers_are_502_after_one_attempt() {
    let oversized = format!(
        r#"{{"riskScore":5,"riskLevel":"LOW","pad":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    for body in [
        "garbage".to_string(),
        r#"{"riskScore":150,"riskLevel":"HIGH"}"#.into(),
        r#"{"riskScore":50,"riskLevel":"SEVERE"}"#.into(),
        r#"{"riskScore":50,"riskLevel":"high"}"#.into(),
        r#"{"riskScore":50.0,"riskLevel":"HIGH"}"#.into(),
        r#"{"riskLevel":"HIGH"}"#.into(),
        r#"{"riskScore":50}"#.into(),
        String::new(),
        oversized,
    ] {
        let fake = FakeRiskShield::start(Step::body(body.clone())).await;
        let s = server(&fake.url(), &[]).await;
        let r = validate(&s).await;
        assert_eq!(
            r.status,
            StatusCode::BAD_GATEWAY,
            "{}",
            &body[..body.len().min(60)]
        );
        assert_eq!(r.code(), "UPSTREAM_ERROR");
        assert_eq!(fake.count(), 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn a_slow_upstream_times_out_per_attempt() {
    let fake = FakeRiskShield::start(Step::slow(Duration::from_secs(30))).await;
    let s = server(
        &fake.url(),
        &[
            ("RISKSHIELD_TIMEOUT", "200ms"),
            ("RISKSHIELD_MAX_ATTEMPTS", "2"),
        ],
    )
    .await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.code(), "TIMEOUT_ERROR");
    assert_eq!(fake.count(), 2);
    s.stop().await;
}

#[tokio::test]
async fn the_request_deadline_bounds_everything() {
    let fake = FakeRiskShield::start(Step::slow(Duration::from_secs(30))).await;
    let s = server(
        &fake.url(),
        &[("RISKSHIELD_TIMEOUT", "10s"), ("REQUEST_TIMEOUT", "300ms")],
    )
    .await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.code(), "TIMEOUT_ERROR");
    assert_eq!(fake.count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_retried_then_503() {
    let fake = FakeRiskShield::start(Step::Close).await;
    let s = server(&fake.url(), &[("RISKSHIELD_MAX_ATTEMPTS", "3")]).await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(fake.count(), 3);
    assert_eq!(fake.connections(), 3);
    s.stop().await;
}

/// A vendor that reads each request and closes the connection without a byte of answer, also on a connection
/// kept alive from an earlier answer: one validation sends it exactly RISKSHIELD_MAX_ATTEMPTS requests, and
/// each of them is an attempt, numbered in the log and counted in the metrics. (A request the pool sent
/// once more on a new connection without telling anyone would be a fourth.)
#[tokio::test]
async fn a_vendor_that_reads_and_closes_gets_exactly_max_attempts_requests_each_logged_and_counted()
{
    let fake = FakeRiskShield::scripted(vec![Step::ok(5, "LOW")], Step::Close).await;
    let url = fake.url();
    let app = App::start(&[
        ("RISKSHIELD_API_KEY", "test-key-123"),
        ("RISKSHIELD_API_URL", &url),
        ("RISKSHIELD_RETRY_BASE_DELAY", "10ms"),
        ("RISKSHIELD_MAX_ATTEMPTS", "3"),
        // One worker, so the second validation meets the connection the first left in its pool.
        ("WORKERS", "1"),
    ])
    .await;
    assert_eq!(app.validate_as("first").await.status, StatusCode::OK);
    assert_eq!(fake.connections(), 1);

    let r = app.validate_as("closed-every-time").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(fake.count(), 1 + 3);
    // The first went out on the kept-alive connection, the two retries on new ones.
    assert_eq!(fake.connections(), 3);

    let attempt = |line: &Value| {
        line["message"] == "upstream attempt" && line["correlation_id"] == "closed-every-time"
    };
    app.process
        .wait_for_log("the third attempt", |line| {
            attempt(line) && line["attempt"] == 3
        })
        .await;
    let attempts: Vec<(Value, Value)> = app
        .process
        .json_lines()
        .iter()
        .filter(|line| attempt(line))
        .map(|line| (line["attempt"].clone(), line["outcome"].clone()))
        .collect();
    let closed = json!("connection_error");
    assert_eq!(
        attempts,
        [
            (json!(1), closed.clone()),
            (json!(2), closed.clone()),
            (json!(3), closed)
        ]
    );
    let metrics = app.get("/metrics").await.text();
    let attempts = "applicant_validator_riskshield_attempts_total";
    assert_eq!(
        sample(&metrics, attempts, r#"outcome="connection_error""#),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, attempts, r#"outcome="success""#),
        Some(1.0)
    );
}

/// An interim 1xx answer on a kept-alive connection, and then the connection's end: the vendor has read the
/// request, so it is not sent again; with RISKSHIELD_MAX_ATTEMPTS=1 the validation fails.
#[tokio::test]
async fn nothing_is_sent_again_after_an_interim_answer_and_a_close() {
    let fake = FakeRiskShield::scripted(
        vec![
            Step::ok(5, "LOW"),
            Step::raw("HTTP/1.1 100 Continue\r\n\r\n"),
        ],
        Step::ok(6, "LOW"),
    )
    .await;
    let s = server(
        &fake.url(),
        &[("RISKSHIELD_MAX_ATTEMPTS", "1"), ("WORKERS", "1")],
    )
    .await;
    assert_eq!(validate(&s).await.status, StatusCode::OK);
    let r = validate(&s).await;
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!((fake.count(), fake.connections()), (2, 1));
    s.stop().await;
}

/// Each worker holds at most 64 connections to the vendor (src/riskshield/pool.rs): calls beyond that wait
/// for one to come free instead of opening more, and all of them succeed.
#[tokio::test]
async fn calls_over_the_per_worker_connection_cap_wait_for_a_connection() {
    const CAP: usize = 64;
    const CALLS: usize = CAP + 6;
    // The first CAP requests are held until the test lets them go; any request after them is answered at once.
    let fake = FakeRiskShield::scripted(vec![Step::hold(); CAP], Step::ok(7, "LOW")).await;
    let s = server(
        &fake.url(),
        &[
            ("WORKERS", "1"),
            ("RISKSHIELD_TIMEOUT", "60s"),
            ("REQUEST_TIMEOUT", "60s"),
        ],
    )
    .await;
    let url = s.url("/api/v1/validate");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..CALLS {
        let url = url.clone();
        calls.spawn(async move { post_json(&url, &applicant()).await.status });
    }
    fake.wait_for(CAP).await;
    fake.release();
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.expect("call"), StatusCode::OK);
    }
    assert_eq!(fake.count(), CALLS);
    assert_eq!(fake.connections(), CAP);
    s.stop().await;
}

#[tokio::test]
async fn nothing_listening_is_503() {
    // Held, not released: nothing can start listening there while the test runs.
    let closed = closed_port();
    let addr = closed.addr();
    let s = server(
        &format!("http://{addr}/v1"),
        &[("RISKSHIELD_MAX_ATTEMPTS", "2")],
    )
    .await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    s.stop().await;
}

#[tokio::test]
async fn unauthorized_with_an_env_key_is_502_after_one_attempt() {
    for status in [401, 403] {
        let fake = FakeRiskShield::start(Step::status(status)).await;
        let s = server(&fake.url(), &[]).await;
        let r = validate(&s).await;
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);
        assert_eq!(r.code(), "UPSTREAM_AUTH_ERROR");
        assert_eq!(fake.count(), 1);
        s.stop().await;
    }
}

#[tokio::test]
async fn the_breaker_opens_after_the_threshold_and_stops_calls() {
    let fake = FakeRiskShield::start(Step::status(500)).await;
    let s = server(
        &fake.url(),
        &[
            ("RISKSHIELD_MAX_ATTEMPTS", "1"),
            ("CIRCUIT_FAILURE_THRESHOLD", "3"),
            ("CIRCUIT_OPEN_DURATION", "60s"),
        ],
    )
    .await;
    for _ in 0..3 {
        assert_eq!(validate(&s).await.code(), "UPSTREAM_UNAVAILABLE");
    }
    assert_eq!(fake.count(), 3);
    for _ in 0..5 {
        let r = validate(&s).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.code(), "CIRCUIT_OPEN");
        let retry_after: u64 = r
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .expect("Retry-After");
        assert!((1..=60).contains(&retry_after));
    }
    assert_eq!(fake.count(), 3, "no calls while open");
    // Readiness reports the open breaker.
    let ready = get(&s.url("/ready")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["checks"]["riskshield_api"], false);
    s.stop().await;
}

#[tokio::test]
async fn the_breaker_half_opens_and_closes_after_a_good_probe() {
    let fake = FakeRiskShield::scripted(
        vec![Step::status(500), Step::status(500)],
        Step::ok(9, "LOW"),
    )
    .await;
    let s = server(
        &fake.url(),
        &[
            ("RISKSHIELD_MAX_ATTEMPTS", "1"),
            ("CIRCUIT_FAILURE_THRESHOLD", "2"),
            ("CIRCUIT_OPEN_DURATION", "300ms"),
        ],
    )
    .await;
    validate(&s).await;
    validate(&s).await;
    assert_eq!(validate(&s).await.code(), "CIRCUIT_OPEN");
    // Poll (bounded) until the open period is over; the probe then succeeds and closes the breaker.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = validate(&s).await;
        if r.status == StatusCode::OK {
            break;
        }
        assert_eq!(r.code(), "CIRCUIT_OPEN");
        assert!(
            tokio::time::Instant::now() < give_up,
            "breaker never half-opened"
        );
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.count(), 3);
    assert_eq!(validate(&s).await.status, StatusCode::OK);
    assert_eq!(fake.count(), 4);
    s.stop().await;
}

#[tokio::test]
async fn client_errors_reset_the_breaker_count() {
    let fake = FakeRiskShield::scripted(
        vec![Step::status(500), Step::status(400), Step::status(500)],
        Step::status(500),
    )
    .await;
    let s = server(
        &fake.url(),
        &[
            ("RISKSHIELD_MAX_ATTEMPTS", "1"),
            ("CIRCUIT_FAILURE_THRESHOLD", "2"),
        ],
    )
    .await;
    assert_eq!(validate(&s).await.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(validate(&s).await.code(), "UPSTREAM_ERROR");
    assert_eq!(validate(&s).await.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(validate(&s).await.code(), "UPSTREAM_UNAVAILABLE");
    assert_eq!(validate(&s).await.code(), "CIRCUIT_OPEN");
    assert_eq!(fake.count(), 4);
    s.stop().await;
}

#[tokio::test]
async fn connections_are_reused() {
    let fake = FakeRiskShield::start(Step::ok(5, "LOW")).await;
    let s = server(&fake.url(), &[]).await;
    for _ in 0..200 {
        assert_eq!(validate(&s).await.status, StatusCode::OK);
    }
    assert_eq!(fake.count(), 200);
    assert!(
        fake.connections() <= 2,
        "{} connections",
        fake.connections()
    );
    s.stop().await;
}

#[tokio::test]
async fn readiness_checks_the_upstream_host_without_calling_score() {
    let fake = FakeRiskShield::start(Step::ok(5, "LOW")).await;
    let s = server(&fake.url(), &[]).await;
    let r = get(&s.url("/ready")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"ready": true, "checks": {"riskshield_api": true}})
    );
    assert_eq!(fake.count(), 0, "readiness never calls /score");
    s.stop().await;

    // Held, not released: nothing can start listening there while the test runs.
    let closed = closed_port();
    let addr = closed.addr();
    let s = server(&format!("http://{addr}/v1"), &[]).await;
    let r = get(&s.url("/api/v1/ready")).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json(),
        json!({"ready": false, "checks": {"riskshield_api": false}})
    );
    s.stop().await;
}

#[tokio::test]
async fn a_retried_call_sends_the_same_correlation_id_every_time() {
    let fake = FakeRiskShield::scripted(
        vec![Step::status(500), Step::status(502)],
        Step::ok(1, "LOW"),
    )
    .await;
    let s = server(&fake.url(), &[]).await;
    let r = send(
        Method::POST,
        &s.url("/validate"),
        &[
            ("content-type", "application/json"),
            ("x-correlation-id", "same-id"),
        ],
        Bytes::from(serde_json::to_vec(&applicant()).expect("json")),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let ids: Vec<_> = fake
        .requests()
        .iter()
        .map(|r| r.headers["x-correlation-id"].clone())
        .collect();
    assert_eq!(ids, vec!["same-id"; 3]);
    s.stop().await;
}

#[tokio::test]
async fn shutdown_cuts_off_requests_still_running_when_the_grace_period_ends() {
    let fake = FakeRiskShield::start(Step::hold()).await;
    let s = server(
        &fake.url(),
        &[("SHUTDOWN_GRACE", "200ms"), ("RISKSHIELD_TIMEOUT", "60s")],
    )
    .await;
    let request = http::Request::post(s.url("/api/v1/validate"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(
            serde_json::to_vec(&applicant()).expect("json"),
        )))
        .expect("request");
    let pending = tokio::spawn(exchange(request));
    fake.wait_for(1).await;
    // Returns once the grace period is over, with the held request still unanswered.
    s.stop().await;
    let outcome = pending.await.expect("client task");
    assert!(
        outcome.is_err(),
        "the connection was closed without an answer: {outcome:?}"
    );
    fake.release();
}

/// Two validations that time out against a hanging upstream open the breaker (threshold 2): the third is
/// answered CIRCUIT_OPEN without a call. `timeouts` say which deadline cuts the calls off.
async fn timeouts_open_the_breaker(timeouts: &[(&str, &str)]) {
    let fake = FakeRiskShield::start(Step::hold()).await;
    let mut vars = vec![
        ("RISKSHIELD_MAX_ATTEMPTS", "1"),
        ("CIRCUIT_FAILURE_THRESHOLD", "2"),
        ("CIRCUIT_OPEN_DURATION", "60s"),
    ];
    vars.extend_from_slice(timeouts);
    let s = server(&fake.url(), &vars).await;
    for _ in 0..2 {
        let r = validate(&s).await;
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(r.code(), "TIMEOUT_ERROR");
    }
    assert_eq!(fake.count(), 2);
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text());
    assert_eq!(r.code(), "CIRCUIT_OPEN");
    assert_eq!(fake.count(), 2, "no call while open");
    s.stop().await;
}

/// The contract counts a call cut off by REQUEST_TIMEOUT while waiting on the upstream as a breaker failure.
#[tokio::test]
async fn requests_cut_off_by_the_request_deadline_open_the_breaker() {
    timeouts_open_the_breaker(&[("REQUEST_TIMEOUT", "300ms"), ("RISKSHIELD_TIMEOUT", "60s")]).await;
}

#[tokio::test]
async fn attempts_cut_off_by_the_attempt_timeout_open_the_breaker() {
    timeouts_open_the_breaker(&[("RISKSHIELD_TIMEOUT", "200ms")]).await;
}

#[tokio::test]
async fn an_https_upstream_is_reached_through_extra_ca_certs() {
    let pki = TestPki::new();
    let fake = FakeRiskShield::https(Plan::new(Step::ok(61, "HIGH")), &pki).await;
    assert!(
        fake.url().starts_with("https://localhost:"),
        "{}",
        fake.url()
    );
    let ca = pki.ca_file().display().to_string();
    let s = server(&fake.url(), &[("EXTRA_CA_CERTS", &ca)]).await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["riskScore"], 61);
    assert_eq!(fake.requests()[0].headers["x-api-key"], "test-key-123");
    // The TLS connection is kept and reused (the session tickets a TLS 1.3 server sends after the handshake
    // do not make it look closed).
    for _ in 0..3 {
        assert_eq!(validate(&s).await.status, StatusCode::OK);
    }
    assert_eq!(fake.count(), 4);
    assert_eq!(fake.connections(), 1);
    s.stop().await;

    // Without the CA the certificate is not trusted: the TCP connection is made, no request is sent.
    let connections = fake.connections();
    let s = server(&fake.url(), &[("RISKSHIELD_MAX_ATTEMPTS", "1")]).await;
    let r = validate(&s).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.code(), "UPSTREAM_UNAVAILABLE");
    assert!(fake.connections() > connections);
    assert_eq!(fake.count(), 4, "no request over an untrusted connection");
    s.stop().await;
}
