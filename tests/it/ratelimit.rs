//! Per-client rate limiting of validations against the real server: by peer address and by trusted
//! X-Forwarded-For, the headers on every validate answer, and no limit when none is configured.

use std::net::IpAddr;

use http::{Method, StatusCode};
use testkit::Reply;

use crate::metrics::{GOOD_ID, REQUESTS, Server, localhost, sample};

/// A header that must be present, as text.
fn header<'a>(answer: &'a Reply, name: &str) -> &'a str {
    answer
        .header(name)
        .unwrap_or_else(|| panic!("no {name} header: {:?}", answer.headers))
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
