//! The HTTP contract in demo mode: endpoints, aliases, validation, errors, correlation ids and CORS, against
//! the real server on 127.0.0.1.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use testkit::client::{get, post_json, raw, send};

use crate::support::{Route, TestServer, applicant, config};

async fn demo() -> TestServer {
    TestServer::start(config(&[])).await
}

#[tokio::test]
async fn root_describes_the_service() {
    let s = demo().await;
    let r = get(&s.url("/")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json(),
        json!({"service": "Applicant Validator API", "version": env!("CARGO_PKG_VERSION"), "docs": "/docs"})
    );
    s.stop().await;
}

#[tokio::test]
async fn health_and_its_alias_show_demo_mode() {
    let s = demo().await;
    for path in ["/health", "/api/v1/health"] {
        let r = get(&s.url(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(
            r.json(),
            json!({"status": "healthy", "version": env!("CARGO_PKG_VERSION"), "environment": "dev", "mode": "demo"})
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn health_names_the_environment_and_hides_mode_outside_demo() {
    let s = TestServer::start(config(&[
        ("ENVIRONMENT", "staging"),
        ("RISKSHIELD_API_KEY", "k"),
    ]))
    .await;
    let r = get(&s.url("/health")).await;
    assert_eq!(r.json()["environment"], "staging");
    assert!(r.json().get("mode").is_none());
    s.stop().await;
}

#[tokio::test]
async fn readiness_in_demo_mode_has_no_checks() {
    let s = demo().await;
    for path in ["/ready", "/health/ready", "/api/v1/ready"] {
        let r = get(&s.url(path)).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.json(), json!({"ready": true, "checks": {}}));
    }
    s.stop().await;
}

#[tokio::test]
async fn demo_scores_on_both_paths() {
    let s = demo().await;
    for (id, score, level) in [
        ("9001011234088", 37, "MEDIUM"),
        ("0000000000000", 0, "LOW"),
        ("9999999999999", 16, "LOW"),
        ("8999999999999", 116 % 101, "LOW"),
        ("5555555555555", 65, "HIGH"),
        ("9999999000000", 63, "HIGH"),
        ("9999999990000", 81, "CRITICAL"),
    ] {
        for path in ["/api/v1/validate", "/validate"] {
            let r = post_json(
                &s.url(path),
                &json!({"firstName": "A", "lastName": "B", "idNumber": id}),
            )
            .await;
            assert_eq!(r.status, StatusCode::OK, "{path} {id}");
            let body = r.json();
            assert_eq!(body["riskScore"], score, "{id}");
            assert_eq!(body["riskLevel"], level, "{id}");
            assert_eq!(body["correlationId"].as_str(), r.header("x-correlation-id"));
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn unicode_names_are_accepted() {
    let s = demo().await;
    for (first, last) in [
        ("José", "Müller-Lüdenscheidt"),
        ("李", "小龍"),
        ("Ngũgĩ", "wa Thiong’o"),
        ("Zoë", "O'Brien"),
        ("J. R.", "d’Arcy"),
    ] {
        let r = post_json(
            &s.url("/api/v1/validate"),
            &json!({"firstName": first, "lastName": last, "idNumber": "9001011234088"}),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{first} {last}: {:?}", r.body);
    }
    s.stop().await;
}

async fn details(s: &TestServer, body: Value) -> Vec<(String, String)> {
    let r = post_json(&s.url("/api/v1/validate"), &body).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let json = r.json();
    assert_eq!(json["error"], "VALIDATION_ERROR");
    assert_eq!(json["correlationId"].as_str(), r.header("x-correlation-id"));
    json["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            (
                d["field"].as_str().unwrap_or("").to_owned(),
                d["code"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[tokio::test]
async fn validation_errors_name_each_field() {
    let s = demo().await;
    assert_eq!(
        details(&s, json!({})).await,
        pairs(&[
            ("firstName", "missing"),
            ("lastName", "missing"),
            ("idNumber", "missing")
        ])
    );
    assert_eq!(
        details(
            &s,
            json!({"firstName": null, "lastName": [], "idNumber": 9001011234088u64})
        )
        .await,
        pairs(&[
            ("firstName", "invalid_type"),
            ("lastName", "invalid_type"),
            ("idNumber", "invalid_type")
        ])
    );
    assert_eq!(
        details(
            &s,
            json!({"firstName": "  ", "lastName": "x".repeat(101), "idNumber": "123"})
        )
        .await,
        pairs(&[
            ("firstName", "too_short"),
            ("lastName", "too_long"),
            ("idNumber", "invalid_format")
        ])
    );
    assert_eq!(
        details(
            &s,
            json!({"firstName": "R2D2", "lastName": "Smith", "idNumber": "900101123408X"})
        )
        .await,
        pairs(&[
            ("firstName", "invalid_characters"),
            ("idNumber", "invalid_format")
        ])
    );
    s.stop().await;
}

#[tokio::test]
async fn bodies_that_are_not_json_objects() {
    let s = demo().await;
    for body in [
        &b"not json"[..],
        b"[]",
        b"42",
        b"null",
        b"",
        b"{\"firstName\":",
        b"\xff\xfe\x00",
    ] {
        let r = send(
            Method::POST,
            &s.url("/validate"),
            &[("content-type", "application/json")],
            Bytes::from_static(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}");
        assert_eq!(r.code(), "VALIDATION_ERROR");
        assert_eq!(
            r.json()["details"],
            json!([{"field": "body", "message": "the body must be a JSON object", "code": "invalid_json"}])
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn strict_id_numbers() {
    let s = TestServer::start(config(&[("ID_NUMBER_STRICT", "true")])).await;
    let id = |id: &str| json!({"firstName": "A", "lastName": "B", "idNumber": id});
    assert_eq!(
        details(&s, id("9001011234088")).await,
        pairs(&[("idNumber", "invalid_checksum")])
    );
    assert_eq!(
        details(&s, id("9002301234083")).await,
        pairs(&[("idNumber", "invalid_date")])
    );
    assert_eq!(
        post_json(&s.url("/validate"), &id("8001015009087"))
            .await
            .status,
        StatusCode::OK
    );
    s.stop().await;
}

#[tokio::test]
async fn content_type_must_be_application_json() {
    let s = demo().await;
    let body = serde_json::to_vec(&applicant()).expect("json");
    for ct in [
        None,
        Some("text/plain"),
        Some("application/problem+json"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let headers: Vec<(&str, &str)> = ct.map(|c| ("content-type", c)).into_iter().collect();
        let r = send(
            Method::POST,
            &s.url("/api/v1/validate"),
            &headers,
            body.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(r.code(), "UNSUPPORTED_MEDIA_TYPE");
    }
    let r = send(
        Method::POST,
        &s.url("/api/v1/validate"),
        &[("content-type", "application/json; charset=utf-8")],
        body,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

/// A chunked request with `chunks` as its chunks.
fn chunked(chunks: &[&str]) -> String {
    let mut request = String::from(
        "POST /validate HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    request
}

#[tokio::test]
async fn a_body_in_several_chunks_is_read_whole_and_limited_as_a_whole() {
    let s = TestServer::start(config(&[("MAX_BODY_BYTES", "100")])).await;
    let whole = chunked(&[
        r#"{"firstName":"A","#,
        r#""lastName":"B","idNumber":"#,
        r#""9001011234088"}"#,
    ]);
    let answer = raw(s.addr, whole.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""riskScore":"#), "{answer}");
    // Each chunk is under the limit, together they are over it.
    let pad = " ".repeat(40);
    let over = chunked(&[
        r#"{"firstName":"A","#,
        &pad,
        &pad,
        r#""lastName":"B","idNumber":"9001011234088"}"#,
    ]);
    let answer = raw(s.addr, over.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let s = TestServer::start(config(&[("MAX_BODY_BYTES", "100")])).await;
    let big = json!({"firstName": "A", "lastName": "B", "idNumber": "9001011234088", "pad": "x".repeat(200)});
    let r = post_json(&s.url("/api/v1/validate"), &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.code(), "PAYLOAD_TOO_LARGE");
    // Chunked, with no Content-Length: the limit applies while reading.
    let chunk = "x".repeat(150);
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let answer = raw(s.addr, request.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"));
    // Exactly at the limit is fine.
    let exact = r#"{"firstName":"A","lastName":"B","idNumber":"9001011234088"}"#;
    let padded = format!("{exact}{}", " ".repeat(100 - exact.len()));
    let r = send(
        Method::POST,
        &s.url("/validate"),
        &[("content-type", "application/json")],
        padded,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    s.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let s = demo().await;
    for path in [
        "/nope",
        "/api/v1/validate/",
        "/API/V1/VALIDATE",
        "/%00",
        "/docs/../etc/passwd",
    ] {
        let r = get(&s.url(path)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.code(), "NOT_FOUND");
        assert!(r.header("x-correlation-id").is_some());
    }
    let r = get(&s.url("/api/v1/validate")).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.code(), "METHOD_NOT_ALLOWED");
    assert_eq!(r.header("allow"), Some("POST"));
    let r = send(Method::DELETE, &s.url("/health"), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert!(r.header("x-correlation-id").is_some());
    let r = send(Method::HEAD, &s.url("/health"), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.body.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn correlation_ids_are_echoed_generated_or_replaced() {
    let s = demo().await;
    let url = s.url("/api/v1/validate");
    let body = serde_json::to_vec(&applicant()).expect("json");
    let ct = ("content-type", "application/json");
    let r = send(
        Method::POST,
        &url,
        &[ct, ("x-correlation-id", "req-42")],
        body.clone(),
    )
    .await;
    assert_eq!(r.header("x-correlation-id"), Some("req-42"));
    assert_eq!(r.json()["correlationId"], "req-42");
    for bad in ["", "has space", &"x".repeat(129)] {
        let r = send(
            Method::POST,
            &url,
            &[ct, ("x-correlation-id", bad)],
            body.clone(),
        )
        .await;
        let id = r.header("x-correlation-id").expect("id").to_owned();
        assert!(uuid_like(&id), "{bad:?} replaced by {id}");
        assert_eq!(r.json()["correlationId"], id.as_str());
    }
    let long = "y".repeat(128);
    let r = send(
        Method::POST,
        &url,
        &[ct, ("x-correlation-id", &long)],
        body.clone(),
    )
    .await;
    assert_eq!(r.header("x-correlation-id"), Some(long.as_str()));
    // On errors too.
    let r = send(
        Method::GET,
        &s.url("/missing"),
        &[("x-correlation-id", "e-1")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.header("x-correlation-id"), Some("e-1"));
    assert_eq!(r.json()["correlationId"], "e-1");
    let r = get(&s.url("/health")).await;
    assert!(uuid_like(r.header("x-correlation-id").expect("generated")));
    s.stop().await;
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4 && id.as_bytes()[14] == b'4'
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let s = TestServer::start(config(&[(
        "CORS_ORIGINS",
        "https://app.example, https://admin.example",
    )]))
    .await;
    let body = serde_json::to_vec(&applicant()).expect("json");
    let allowed = send(
        Method::POST,
        &s.url("/api/v1/validate"),
        &[
            ("content-type", "application/json"),
            ("origin", "https://app.example"),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    let exposed = allowed
        .header("access-control-expose-headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for name in [
        "x-correlation-id",
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(exposed.contains(name), "{name} not exposed: {exposed}");
    }
    let refused = send(
        Method::POST,
        &s.url("/api/v1/validate"),
        &[
            ("content-type", "application/json"),
            ("origin", "https://evil.example"),
        ],
        body,
    )
    .await;
    assert_eq!(refused.header("access-control-allow-origin"), None);
    let preflight = send(
        Method::OPTIONS,
        &s.url("/api/v1/validate"),
        &[
            ("origin", "https://admin.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        Bytes::new(),
    )
    .await;
    assert!(preflight.status.is_success());
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        Some("https://admin.example")
    );
    assert!(
        preflight
            .header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST"))
    );
    assert!(preflight.header("x-correlation-id").is_some());
    let refused_preflight = send(
        Method::OPTIONS,
        &s.url("/api/v1/validate"),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        refused_preflight.header("access-control-allow-origin"),
        None
    );
    s.stop().await;
}

#[tokio::test]
async fn cors_wildcard_by_default() {
    let s = demo().await;
    let r = send(
        Method::GET,
        &s.url("/health"),
        &[("origin", "https://any.example")],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    s.stop().await;
}

#[tokio::test]
async fn openapi_lists_exactly_the_routes_served() {
    let s = demo().await;
    let doc = get(&s.url("/openapi.json")).await.json();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            documented.push((method.to_uppercase(), path.clone()));
        }
    }
    documented.sort();
    let mut served: Vec<(String, String)> = Route::ALL
        .iter()
        .map(|(_, path, method)| (method.to_string(), path.to_string()))
        .collect();
    served.sort();
    assert_eq!(documented, served);
    // And every documented operation really answers (not 404/405) on the running server.
    for (method, path) in &documented {
        let method: Method = method.parse().expect("method");
        let r = send(
            method,
            &s.url(path),
            &[("content-type", "application/json")],
            serde_json::to_vec(&applicant()).expect("json"),
        )
        .await;
        assert!(
            r.status != StatusCode::NOT_FOUND && r.status != StatusCode::METHOD_NOT_ALLOWED,
            "{path}: {}",
            r.status
        );
    }
    s.stop().await;
}

/// The docs page is self-contained HTML with a "Try it" form: its fields, hidden until its script runs (with a
/// note for readers without JavaScript), no token field while authentication is off, and a policy that lets
/// only the page's own script and style run and its requests go only to this service.
/// (scripts/browser-check.sh runs it in a real browser.)
#[tokio::test]
async fn docs_page_is_self_contained_with_a_try_it_form_under_a_strict_policy() {
    let s = demo().await;
    let r = get(&s.url("/docs")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    let html = String::from_utf8_lossy(&r.body);
    assert!(html.contains("/api/v1/validate"));
    assert!(
        !html.contains("<script src"),
        "only the page's own inline script"
    );
    assert!(html.contains(r#"<form id="try-form" method="post" autocomplete="off" hidden>"#));
    for field in ["firstName", "lastName", "idNumber", "correlationId"] {
        assert!(html.contains(&format!(r#"name="{field}""#)), "{field}");
    }
    assert!(
        !html.contains(r#"name="token""#),
        "no token field with AUTH_MODE=off"
    );
    assert!(html.contains("Caller authentication is off on this service"));
    assert!(html.contains("<noscript>"));
    assert_eq!(html.matches("<script>").count(), 1);
    assert!(html.contains(r#"fetch("/api/v1/validate""#));
    for header in [
        "X-Correlation-ID",
        "Retry-After",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
    ] {
        assert!(
            html.contains(&format!(r#""{header}""#)),
            "{header} is shown"
        );
    }
    // What the user typed and what the service answered only ever go into text nodes and the request.
    for sink in [
        "innerHTML",
        "outerHTML",
        "document.write",
        "localStorage",
        "sessionStorage",
    ] {
        assert!(!html.contains(sink), "{sink}");
    }
    assert!(!html.contains("<!--if auth-->") && !html.contains("<!--else-->"));

    let csp = r.header("content-security-policy").expect("a CSP on /docs");
    assert!(
        csp.starts_with("default-src 'none'; script-src 'sha256-"),
        "{csp}"
    );
    for directive in [
        "style-src 'sha256-",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{directive} in {csp}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    // Rendered once at startup: every request gets the same page and policy.
    let again = get(&s.url("/docs")).await;
    assert_eq!(again.body, r.body);
    assert_eq!(again.header("content-security-policy"), Some(csp));
    s.stop().await;
}

#[tokio::test]
async fn odd_requests_get_their_exact_answer_never_a_5xx() {
    let s = demo().await;
    // Each case with the one answer it must get: the request line, the body and the header value are each
    // malformed in a different layer, and each layer has a defined answer.
    let cases: [(&[u8], u16); 5] = [
        // Not a URI: hyper's parser refuses the request line.
        (b"GET /\xff\xfe HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n", 400),
        // A body that is not JSON is a validation error of the field `body`.
        (b"POST /validate HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 4\r\nConnection: close\r\n\r\n\xff\xff\xff\xff", 422),
        // A correlation id that is not visible ASCII is replaced, and the request is served.
        (b"GET /health HTTP/1.1\r\nHost: t\r\nX-Correlation-ID: \xc3\xa9t\xc3\xa9\r\nConnection: close\r\n\r\n", 200),
        // A Content-Length beyond u64 is a malformed head.
        (b"POST /validate HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 99999999999999999999\r\nConnection: close\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
    ];
    for (case, expected) in cases {
        let answer = raw(s.addr, case).await;
        let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        assert!(
            (200..500).contains(&status),
            "{:?} -> {answer}",
            String::from_utf8_lossy(case)
        );
        assert_eq!(
            status,
            expected,
            "{:?} -> {answer}",
            String::from_utf8_lossy(case)
        );
        let head = answer.to_ascii_lowercase();
        match expected {
            422 => {
                assert!(answer.contains(r#""error":"VALIDATION_ERROR""#), "{answer}");
                assert!(answer.contains(r#""code":"invalid_json""#), "{answer}");
            }
            200 => {
                let id = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-correlation-id: "))
                    .map(str::trim)
                    .unwrap_or_default();
                assert_eq!(id.len(), 36, "a new UUID, not the client's value: {answer}");
                assert!(answer.contains(r#""status":"healthy""#), "{answer}");
            }
            _ => {}
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_many_requests_on_one_connection() {
    let s = demo().await;
    let request = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n";
    let last = b"GET /health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let mut all = Vec::new();
    for _ in 0..4 {
        all.extend_from_slice(request);
    }
    all.extend_from_slice(last);
    let answer = raw(s.addr, &all).await;
    assert_eq!(answer.matches("HTTP/1.1 200 OK").count(), 5, "{answer}");
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start(config(&[("HEADER_READ_TIMEOUT", "200ms")])).await;
    let mut stream = tokio::net::TcpStream::connect(s.addr)
        .await
        .expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    // The server gives up on the half-sent head and closes the connection; the outer bound only keeps a broken
    // server from hanging the test.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut buf),
    )
    .await;
    assert!(read.is_ok(), "the connection was not closed");
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    s.stop().await;
}
