//! W3C Trace Context: what the fake vendor receives as `traceparent` and `tracestate` for each kind of inbound
//! header, on every attempt, and the `trace_id` the service's log lines carry for it.

use http::{Method, StatusCode};
use serde_json::Value;
use testkit::Reply;
use testkit::client::send;
use testkit::riskshield::{FakeRiskShield, Received, Step};

use crate::support::{App, TestServer, applicant, config};

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const STATE: &str = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

/// A server pointed at `url` with fast retries.
async fn server(url: &str) -> TestServer {
    TestServer::start(config(&[
        ("RISKSHIELD_API_KEY", "test-key-123"),
        ("RISKSHIELD_API_URL", url),
        ("RISKSHIELD_RETRY_BASE_DELAY", "10ms"),
    ]))
    .await
}

/// One validation with `headers` beside the content type.
async fn validate(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    let reply = send(Method::POST, url, &all, applicant().to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply
}

/// The one `traceparent` line a request to the vendor carried.
fn traceparent(received: &Received) -> &str {
    let lines: Vec<_> = received.headers.get_all("traceparent").iter().collect();
    assert_eq!(lines.len(), 1, "{:?}", received.headers);
    lines[0].to_str().expect("ascii")
}

/// True for a trace this service started: version 00, lowercase hex ids that are not all zeros, flags 00.
fn is_new_trace(value: &str) -> bool {
    let hex = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let parts: Vec<&str> = value.split('-').collect();
    matches!(parts.as_slice(), ["00", trace_id, parent_id, "00"]
        if trace_id.len() == 32 && hex(trace_id) && trace_id.bytes().any(|b| b != b'0')
            && parent_id.len() == 16 && hex(parent_id) && parent_id.bytes().any(|b| b != b'0'))
}

#[tokio::test]
async fn a_valid_traceparent_goes_unchanged_with_its_tracestate_on_every_attempt() {
    let fake = FakeRiskShield::scripted(vec![Step::status(503)], Step::ok(42, "MEDIUM")).await;
    let s = server(&fake.url()).await;
    let reply = validate(
        &s.url("/api/v1/validate"),
        &[
            ("traceparent", VALID),
            ("tracestate", STATE),
            ("x-correlation-id", "corr-trace-1"),
        ],
    )
    .await;
    let seen = fake.requests();
    assert_eq!(seen.len(), 2, "a retry after the 503");
    for request in &seen {
        assert_eq!(traceparent(request), VALID);
        assert_eq!(request.header("tracestate"), Some(STATE));
        // The correlation id is its own header, untouched by the trace.
        assert_eq!(request.header("x-correlation-id"), Some("corr-trace-1"));
    }
    assert_eq!(reply.header("x-correlation-id"), Some("corr-trace-1"));
    s.stop().await;
}

#[tokio::test]
async fn a_later_version_with_more_fields_is_valid_and_goes_unchanged() {
    let fake = FakeRiskShield::start(Step::ok(42, "MEDIUM")).await;
    let s = server(&fake.url()).await;
    let later =
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like";
    validate(
        &s.url("/validate"),
        &[("traceparent", later), ("tracestate", STATE)],
    )
    .await;
    let seen = fake.requests();
    assert_eq!(traceparent(&seen[0]), later);
    assert_eq!(seen[0].header("tracestate"), Some(STATE));
    s.stop().await;
}

#[tokio::test]
async fn an_invalid_traceparent_is_replaced_by_a_new_trace_and_its_tracestate_dropped() {
    let fake = FakeRiskShield::start(Step::ok(42, "MEDIUM")).await;
    let s = server(&fake.url()).await;
    let cases: [(&str, &[&str]); 9] = [
        (
            "all-zero trace-id",
            &["00-00000000000000000000000000000000-00f067aa0ba902b7-01"],
        ),
        (
            "all-zero parent-id",
            &["00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"],
        ),
        (
            "uppercase hex",
            &["00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"],
        ),
        (
            "too short",
            &["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01"],
        ),
        (
            "too long for version 00",
            &["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"],
        ),
        (
            "version ff",
            &["ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"],
        ),
        (
            "a later version without a dash after 55 characters",
            &["cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x"],
        ),
        ("not a traceparent", &["hello"]),
        (
            "two traceparent lines",
            &[
                VALID,
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ],
        ),
    ];
    for (i, (why, parents)) in cases.iter().enumerate() {
        let mut headers: Vec<(&str, &str)> = parents.iter().map(|p| ("traceparent", *p)).collect();
        headers.push(("tracestate", STATE));
        validate(&s.url("/api/v1/validate"), &headers).await;
        let seen = fake.requests();
        let sent = traceparent(&seen[i]);
        assert!(
            is_new_trace(sent) && !parents.contains(&sent),
            "{why}: sent {sent}"
        );
        assert_eq!(seen[i].header("tracestate"), None, "{why}");
    }
    s.stop().await;
}

#[tokio::test]
async fn without_a_traceparent_each_request_starts_its_own_trace() {
    let fake = FakeRiskShield::start(Step::ok(42, "MEDIUM")).await;
    let s = server(&fake.url()).await;
    validate(&s.url("/api/v1/validate"), &[]).await;
    // A tracestate alone belongs to no trace.
    validate(&s.url("/api/v1/validate"), &[("tracestate", STATE)]).await;
    let seen = fake.requests();
    let (first, second) = (traceparent(&seen[0]), traceparent(&seen[1]));
    assert!(is_new_trace(first), "{first}");
    assert!(is_new_trace(second), "{second}");
    assert_ne!(first[3..35], second[3..35], "random trace-ids");
    assert_eq!(seen[1].header("tracestate"), None);
    s.stop().await;
}

#[tokio::test]
async fn a_tracestate_over_512_characters_is_dropped_and_the_traceparent_kept() {
    let fake = FakeRiskShield::start(Step::ok(42, "MEDIUM")).await;
    let s = server(&fake.url()).await;
    let longest = format!("a={}", "x".repeat(510));
    let over = format!("a={}", "x".repeat(511));
    validate(
        &s.url("/api/v1/validate"),
        &[("traceparent", VALID), ("tracestate", &over)],
    )
    .await;
    validate(
        &s.url("/api/v1/validate"),
        &[("traceparent", VALID), ("tracestate", &longest)],
    )
    .await;
    // Two lines are one list: joined with a comma.
    validate(
        &s.url("/api/v1/validate"),
        &[
            ("traceparent", VALID),
            ("tracestate", "rojo=00f067aa0ba902b7"),
            ("tracestate", "congo=t61rcWkgMzE"),
        ],
    )
    .await;
    let seen = fake.requests();
    assert_eq!(traceparent(&seen[0]), VALID);
    assert_eq!(seen[0].header("tracestate"), None);
    assert_eq!(traceparent(&seen[1]), VALID);
    assert_eq!(seen[1].header("tracestate"), Some(longest.as_str()));
    assert_eq!(seen[2].header("tracestate"), Some(STATE));
    s.stop().await;
}

#[tokio::test]
async fn the_log_lines_carry_the_trace_id_the_vendor_received() {
    let fake = FakeRiskShield::scripted(vec![Step::status(503)], Step::ok(42, "MEDIUM")).await;
    let url = fake.url();
    let mut app = App::start(&[
        ("RISKSHIELD_API_KEY", "secret-key-value"),
        ("RISKSHIELD_API_URL", url.as_str()),
        ("RISKSHIELD_RETRY_BASE_DELAY", "10ms"),
    ])
    .await;
    // One validation starts its own trace (with a retry), one comes with a trace, and /health is logged too.
    validate(
        &app.url("/api/v1/validate"),
        &[("x-correlation-id", "trace-new")],
    )
    .await;
    validate(
        &app.url("/api/v1/validate"),
        &[
            ("x-correlation-id", "trace-inbound"),
            ("traceparent", VALID),
        ],
    )
    .await;
    send(
        Method::GET,
        &app.url("/health"),
        &[("x-correlation-id", "trace-health")],
        "",
    )
    .await;
    app.process.signal("TERM");
    app.process.wait().await;
    let lines = app.process.json_lines();
    let seen = fake.requests();
    assert_eq!(seen.len(), 3);
    let trace_ids = |message: &str, correlation_id: &str| -> Vec<Value> {
        lines
            .iter()
            .filter(|l| l["message"] == message && l["correlation_id"] == correlation_id)
            .map(|l| l["trace_id"].clone())
            .collect()
    };
    let new_trace = &traceparent(&seen[0])[3..35];
    assert_eq!(traceparent(&seen[1]), traceparent(&seen[0]));
    assert_eq!(trace_ids("request", "trace-new"), [new_trace]);
    assert_eq!(
        trace_ids("upstream attempt", "trace-new"),
        [new_trace, new_trace]
    );
    let inbound = "4bf92f3577b34da6a3ce929d0e0e4736";
    assert_eq!(&traceparent(&seen[2])[3..35], inbound);
    assert_eq!(trace_ids("request", "trace-inbound"), [inbound]);
    assert_eq!(trace_ids("upstream attempt", "trace-inbound"), [inbound]);
    let health = trace_ids("request", "trace-health");
    assert!(
        health.len() == 1
            && health[0]
                .as_str()
                .is_some_and(|id| id.len() == 32 && id != new_trace && id != inbound),
        "{health:?}"
    );
}

#[tokio::test]
async fn openapi_documents_both_headers_on_the_validations() {
    let s = TestServer::start(config(&[])).await;
    let doc = testkit::client::get(&s.url("/openapi.json")).await.json();
    for path in ["/api/v1/validate", "/validate"] {
        let names: Vec<String> = doc["paths"][path]["post"]["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .map(|p| {
                let name = p["$ref"].as_str().and_then(|r| r.rsplit('/').next());
                let param = &doc["components"]["parameters"][name.expect("a reference")];
                assert_eq!(param["in"], "header", "{param}");
                param["name"].as_str().expect("a name").to_ascii_lowercase()
            })
            .collect();
        for header in ["x-correlation-id", "traceparent", "tracestate"] {
            assert!(names.iter().any(|n| n == header), "{path}: {names:?}");
        }
    }
    s.stop().await;
}
