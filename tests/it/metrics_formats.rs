//! /metrics content negotiation against the real server: the classic Prometheus text format by default and
//! for `text/plain`, OpenMetrics when the scraper prefers it, and the same series in both.

use bytes::Bytes;
use http::{Method, StatusCode};

use testkit::client::{get, post_json, send};

use crate::support::{TestServer, applicant, config};

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
fn samples(text: &str) -> Vec<&str> {
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty() && !l.contains(r#"route="/metrics""#))
        .collect();
    lines.sort_unstable();
    lines
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
    assert_eq!(samples(&classic), samples(&openmetrics));
    assert!(samples(&classic).len() > 10, "{classic}");

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
