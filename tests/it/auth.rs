//! Caller authentication end to end (AUTH_MODE=entra): the real binary against a fake OpenID issuer over
//! HTTPS (test CA made at run time), with tokens signed here by the RSA keys in `tests/fixtures/`.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use testkit::client::{self, Reply, exchange};
use testkit::openid::{FakeIssuer, TestSigner, now, sign_hs256, unsigned};
use testkit::process::{PATIENCE, run};

use crate::support::{App, BIN, TestServer, applicant, config};

const AUDIENCE: &str = "api://applicant-validator";
const ROLE: &str = "Applicants.Validate";
const APP_ONE: &str = "0f9a3c1e-1111-4c3b-9d7e-000000000001";
const APP_TWO: &str = "0f9a3c1e-2222-4c3b-9d7e-000000000002";

fn signer_one() -> TestSigner {
    TestSigner::from_pem("key-1", include_str!("../fixtures/jwt-signing-key-1.pem"))
}

fn signer_two() -> TestSigner {
    TestSigner::from_pem("key-2", include_str!("../fixtures/jwt-signing-key-2.pem"))
}

/// The claims of a valid Entra v2 app token for `app`, with the required role.
fn claims(issuer: &FakeIssuer, app: &str) -> Value {
    let now = now();
    json!({
        "iss": issuer.issuer(),
        "aud": AUDIENCE,
        "iat": now - 10,
        "nbf": now - 10,
        "exp": now + 3600,
        "azp": app,
        "sub": "caller-object-id",
        "roles": [ROLE],
        "ver": "2.0",
    })
}

/// `claims` with `changes` merged in (a null removes the claim).
fn with(mut claims: Value, changes: Value) -> Value {
    for (name, value) in changes.as_object().expect("an object") {
        if value.is_null() {
            claims
                .as_object_mut()
                .expect("an object")
                .remove(name.as_str());
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

/// The binary with AUTH_MODE=entra against `issuer`, in demo mode (no RiskShield needed), plus `extra`.
async fn start_app(issuer: &FakeIssuer, extra: &[(&str, &str)]) -> App {
    let iss = issuer.issuer();
    let ca = issuer.ca_file().display().to_string();
    let mut env = vec![
        ("AUTH_MODE", "entra"),
        ("AUTH_ISSUER", iss.as_str()),
        ("AUTH_AUDIENCE", AUDIENCE),
        ("EXTRA_CA_CERTS", ca.as_str()),
    ];
    env.extend_from_slice(extra);
    App::start(&env).await
}

/// One validation with `authorization` as the Authorization header (none when `None`).
async fn validate(app: &App, authorization: Option<&str>) -> Reply {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(value) = authorization {
        headers.push(("authorization", value));
    }
    client::send(
        Method::POST,
        &app.url("/api/v1/validate"),
        &headers,
        applicant().to_string(),
    )
    .await
}

async fn validate_with(app: &App, token: &str) -> Reply {
    validate(app, Some(&format!("Bearer {token}"))).await
}

#[tokio::test]
async fn valid_tokens_pass_and_every_refusal_is_a_401_with_a_challenge() {
    let one = signer_one();
    let issuer = FakeIssuer::start(vec![one.jwk()]).await;
    let app = start_app(&issuer, &[("AUTH_REQUIRED_ROLE", ROLE)]).await;
    let ready = app.wait_ready(StatusCode::OK).await;
    assert_eq!(ready["checks"]["auth_keys"], true, "{ready}");

    let good = claims(&issuer, APP_ONE);
    let token = one.sign(&one.header(), &good);
    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.json()["riskScore"].is_number());
    let line = app
        .process
        .wait_for_log("the request line naming the caller", |l| {
            l["message"] == "request" && l["client_app"] == APP_ONE
        })
        .await;
    assert_eq!(line["status"], 200);

    // A v1 token names its caller in `appid`; an `exp` just past is inside the 60 s leeway.
    let v1 = with(
        good.clone(),
        json!({"azp": null, "appid": APP_TWO, "exp": now() - 30, "ver": "1.0"}),
    );
    let v1_token = one.sign(&one.header(), &v1);
    let reply = validate_with(&app, &v1_token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    let two = signer_two();
    let mut tokens = vec![token.clone(), v1_token];
    let refused: Vec<(&str, String)> = vec![
        ("garbage", "Bearer not-a-token".into()),
        ("three garbage parts", "Bearer a.b.c".into()),
        (
            "bad signature",
            format!("Bearer {}", two.sign(&one.header(), &good)),
        ),
        (
            "alg none",
            format!(
                "Bearer {}",
                unsigned(&json!({"alg": "none", "kid": "key-1"}), &good)
            ),
        ),
        (
            "HS256 keyed with the public key",
            format!(
                "Bearer {}",
                sign_hs256(
                    one.public_pem().as_bytes(),
                    &json!({"alg": "HS256", "typ": "JWT", "kid": "key-1"}),
                    &good
                )
            ),
        ),
        (
            "RS256 header without a kid",
            format!("Bearer {}", one.sign(&json!({"alg": "RS256"}), &good)),
        ),
        (
            "wrong issuer",
            format!(
                "Bearer {}",
                one.sign(
                    &one.header(),
                    &with(
                        good.clone(),
                        json!({"iss": "https://login.microsoftonline.com/other/v2.0"})
                    )
                )
            ),
        ),
        (
            "wrong audience",
            format!(
                "Bearer {}",
                one.sign(
                    &one.header(),
                    &with(good.clone(), json!({"aud": "api://another-api"}))
                )
            ),
        ),
        (
            "no audience",
            format!(
                "Bearer {}",
                one.sign(&one.header(), &with(good.clone(), json!({"aud": null})))
            ),
        ),
        (
            "expired",
            format!(
                "Bearer {}",
                one.sign(
                    &one.header(),
                    &with(
                        good.clone(),
                        json!({"exp": now() - 120, "nbf": now() - 3600})
                    )
                )
            ),
        ),
        (
            "exp as a string",
            format!(
                "Bearer {}",
                one.sign(
                    &one.header(),
                    &with(good.clone(), json!({"exp": "99999999999"}))
                )
            ),
        ),
        (
            "not yet valid",
            format!(
                "Bearer {}",
                one.sign(
                    &one.header(),
                    &with(good.clone(), json!({"nbf": now() + 600}))
                )
            ),
        ),
        (
            "nbf as a string",
            format!(
                "Bearer {}",
                one.sign(
                    &one.header(),
                    &with(good.clone(), json!({"nbf": "99999999999"}))
                )
            ),
        ),
        (
            "no calling application",
            format!(
                "Bearer {}",
                one.sign(&one.header(), &with(good.clone(), json!({"azp": null})))
            ),
        ),
        (
            "an application id over 128 bytes",
            format!(
                "Bearer {}",
                one.sign(
                    &one.header(),
                    &with(good.clone(), json!({"azp": "a".repeat(129)}))
                )
            ),
        ),
        (
            "an application id with a space",
            format!(
                "Bearer {}",
                one.sign(
                    &one.header(),
                    &with(good.clone(), json!({"azp": "app one"}))
                )
            ),
        ),
    ];
    for (case, header) in &refused {
        let reply = validate(&app, Some(header)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            reply.text()
        );
        assert_eq!(reply.code(), "UNAUTHORIZED", "{case}");
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#),
            "{case}"
        );
        tokens.push(header.trim_start_matches("Bearer ").to_owned());
    }
    for (case, header) in [
        ("no header", None),
        ("another scheme", Some("Basic dXNlcjpwYXNzd29yZA==")),
        ("an empty bearer", Some("Bearer ")),
    ] {
        let reply = validate(&app, header).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(reply.code(), "UNAUTHORIZED", "{case}");
        assert_eq!(reply.header("www-authenticate"), Some("Bearer"), "{case}");
    }

    // A valid token without the app role: 403, and the log still names the caller.
    let no_role = one.sign(
        &one.header(),
        &with(
            good.clone(),
            json!({"roles": ["Other.Role"], "azp": APP_TWO}),
        ),
    );
    let reply = validate_with(&app, &no_role).await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{}", reply.text());
    assert_eq!(reply.code(), "FORBIDDEN");
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="insufficient_scope""#)
    );
    app.process
        .wait_for_log("the 403 line naming the caller", |l| {
            l["message"] == "request" && l["status"] == 403 && l["client_app"] == APP_TWO
        })
        .await;
    tokens.push(no_role);

    // Everything but validate stays open.
    for path in [
        "/",
        "/health",
        "/api/v1/health",
        "/ready",
        "/openapi.json",
        "/docs",
        "/metrics",
    ] {
        let reply = app.get(path).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
    }
    let openapi = app.get("/openapi.json").await.json();
    let scheme = &openapi["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(
        (&scheme["type"], &scheme["scheme"]),
        (&json!("http"), &json!("bearer"))
    );
    for path in ["/api/v1/validate", "/validate"] {
        let operation = &openapi["paths"][path]["post"];
        assert_eq!(
            operation["security"][0],
            json!({"bearerAuth": []}),
            "{path}"
        );
        for status in ["401", "403", "503"] {
            assert!(
                operation["responses"][status].is_object(),
                "{path} {status}"
            );
        }
    }
    assert!(app.get("/docs").await.text().contains("AUTH_MODE=entra"));

    let metrics = app.get("/metrics").await.text();
    for series in [
        r#"applicant_validator_auth_checks_total{outcome="success"} 2"#,
        r#"applicant_validator_auth_checks_total{outcome="missing"} 3"#,
        r#"applicant_validator_auth_checks_total{outcome="signature"} 1"#,
        r#"applicant_validator_auth_checks_total{outcome="algorithm"} 1"#,
        r#"applicant_validator_auth_checks_total{outcome="issuer"} 1"#,
        r#"applicant_validator_auth_checks_total{outcome="audience"} 1"#,
        r#"applicant_validator_auth_checks_total{outcome="expired"} 1"#,
        r#"applicant_validator_auth_checks_total{outcome="not_yet_valid"} 1"#,
        r#"applicant_validator_auth_checks_total{outcome="no_client"} 3"#,
        r#"applicant_validator_auth_checks_total{outcome="forbidden"} 1"#,
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }

    // No token, nor any signature part of one, reaches the logs.
    let signatures: Vec<String> = tokens
        .iter()
        .filter_map(|t| t.rsplit('.').next().filter(|s| s.len() > 16))
        .map(str::to_owned)
        .collect();
    let mut secrets: Vec<&str> = tokens.iter().map(String::as_str).collect();
    secrets.extend(signatures.iter().map(String::as_str));
    app.assert_no_secrets_logged(&secrets);
}

#[tokio::test]
async fn a_new_signing_key_is_accepted_after_one_refresh() {
    let (one, two) = (signer_one(), signer_two());
    let issuer = FakeIssuer::start(vec![one.jwk()]).await;
    let app = start_app(&issuer, &[]).await;
    app.wait_ready(StatusCode::OK).await;
    assert_eq!(issuer.jwks_requests(), 1);

    // The issuer rotates: the new key is published, and a token signed with it arrives.
    issuer.publish(vec![one.jwk(), two.jwk()]);
    let token = two.sign(&two.header(), &claims(&issuer, APP_ONE));
    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(issuer.jwks_requests(), 2, "exactly one refresh");
    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(issuer.jwks_requests(), 2, "the new key is cached");

    // Invented key ids right after a refresh cause no further fetches, however many arrive at once.
    let invented = TestSigner::from_pem("key-9", include_str!("../fixtures/jwt-signing-key-1.pem"));
    let invented = invented.sign(&invented.header(), &claims(&issuer, APP_ONE));
    let replies = tokio::join!(
        validate_with(&app, &invented),
        validate_with(&app, &invented),
        validate_with(&app, &invented),
        validate_with(&app, &invented),
        validate_with(&app, &invented),
    );
    let replies = [replies.0, replies.1, replies.2, replies.3, replies.4];
    for reply in replies {
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            reply.header("www-authenticate"),
            Some(r#"Bearer error="invalid_token""#)
        );
    }
    assert_eq!(issuer.jwks_requests(), 2);
    let metrics = app.get("/metrics").await.text();
    assert!(
        metrics.contains(r#"applicant_validator_auth_checks_total{outcome="unknown_key"} 5"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_unreachable_issuer_at_start_answers_503_then_recovers() {
    let one = signer_one();
    let mut issuer = FakeIssuer::unreachable(vec![one.jwk()]).await;
    let app = start_app(&issuer, &[]).await;
    let line = app
        .process
        .wait_for_log("the failed key fetch", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("auth signing keys fetch failed"))
        })
        .await;
    assert_eq!(line["outcome"], "unreachable", "{line}");
    assert_eq!(line["level"], "ERROR");

    let reply = app.get("/ready").await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["checks"]["auth_keys"], false);
    let token = one.sign(&one.header(), &claims(&issuer, APP_ONE));
    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.code(), "AUTH_UNAVAILABLE");
    assert!(reply.header("retry-after").is_some());
    // Even without keys, a request without a token is told to bring one.
    assert_eq!(validate(&app, None).await.status, StatusCode::UNAUTHORIZED);

    issuer.bring_up().await;
    let ready = app.wait_ready(StatusCode::OK).await;
    assert_eq!(ready["checks"]["auth_keys"], true);
    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(issuer.discovery_requests() >= 1);

    // The issuer goes away and a token with a new key id forces a refresh, which fails: that token is
    // refused, and the keys already known keep serving.
    issuer.take_down();
    let two = signer_two();
    let reply = validate_with(&app, &two.sign(&two.header(), &claims(&issuer, APP_ONE))).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    let line = app
        .process
        .wait_for_log("the failed refresh", |l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("the last keys stay in use"))
        })
        .await;
    assert_eq!(line["reason"], "unknown_kid");
    assert_eq!(line["level"], "WARN");
    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(app.get("/ready").await.status, StatusCode::OK);
}

/// With AUTH_MODE=entra the docs page's "Try it" form asks for the bearer token the service will want.
#[tokio::test]
async fn the_docs_form_asks_for_a_bearer_token_with_auth_on() {
    let one = signer_one();
    let issuer = FakeIssuer::start(vec![one.jwk()]).await;
    let app = start_app(&issuer, &[]).await;
    let reply = app.get("/docs").await;
    assert_eq!(reply.status, StatusCode::OK);
    let html = reply.text();
    assert!(html.contains(r#"<input id="try-token" name="token" autocapitalize="off""#));
    assert!(!html.contains("Caller authentication is off"));
    assert!(!html.contains("<!--if auth-->") && !html.contains("<!--else-->"));
    assert!(
        reply
            .header("content-security-policy")
            .is_some_and(|csp| csp.contains("script-src 'sha256-"))
    );
}

#[tokio::test]
async fn the_rate_limit_counts_per_calling_application() {
    let one = signer_one();
    let issuer = FakeIssuer::start(vec![one.jwk()]).await;
    let app = start_app(&issuer, &[("RATE_LIMIT_PER_MINUTE", "1")]).await;
    app.wait_ready(StatusCode::OK).await;
    let first = one.sign(&one.header(), &claims(&issuer, APP_ONE));
    let second = one.sign(&one.header(), &claims(&issuer, APP_TWO));

    let reply = validate_with(&app, &first).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("x-ratelimit-remaining"), Some("0"));
    let reply = validate_with(&app, &first).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS);
    // Same address, another application: its own allowance.
    let reply = validate_with(&app, &second).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    // Refused callers are not counted against anyone.
    let reply = validate(&app, None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("x-ratelimit-remaining").is_none());
}

#[tokio::test]
async fn entra_without_issuer_or_audience_is_a_config_error() {
    let (code, _, stderr) = run(BIN, &["serve"], &[("AUTH_MODE", "entra"), ("PORT", "0")]).await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("AUTH_ISSUER"), "{stderr}");
    assert!(stderr.contains("AUTH_AUDIENCE"), "{stderr}");
    let (code, _, stderr) = run(
        BIN,
        &["serve"],
        &[
            ("AUTH_MODE", "entra"),
            ("AUTH_ISSUER", "http://login.example/tenant/v2.0"),
            ("AUTH_AUDIENCE", AUDIENCE),
            ("PORT", "0"),
        ],
    )
    .await;
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("AUTH_ISSUER"), "{stderr}");
}

fn authorization_strategy(valid: String) -> impl Strategy<Value = Vec<u8>> {
    let token_chars = prop::collection::vec(
        prop_oneof![
            prop::sample::select(b"ABCXYZabcxyz0189-_.=+/ ".to_vec()),
            any::<u8>()
        ],
        0..300,
    );
    let scheme = prop::sample::select(vec!["Bearer ", "bearer ", "BEARER", "Basic ", "", " "]);
    let len = valid.len();
    let mangled = (0..len, any::<u8>()).prop_map(move |(at, byte)| {
        let mut bytes = valid.clone().into_bytes();
        bytes[at] = byte;
        [b"Bearer ".as_slice(), &bytes].concat()
    });
    prop_oneof![
        (scheme, token_chars).prop_map(|(s, t)| [s.as_bytes(), &t].concat()),
        mangled,
    ]
}

#[test]
fn no_authorization_header_gives_a_5xx() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let one = signer_one();
    let (issuer, server, valid) = runtime.block_on(async {
        let issuer = FakeIssuer::start(vec![one.jwk()]).await;
        let iss = issuer.issuer();
        let ca = issuer.ca_file().display().to_string();
        let server = TestServer::start(config(&[
            ("AUTH_MODE", "entra"),
            ("AUTH_ISSUER", &iss),
            ("AUTH_AUDIENCE", AUDIENCE),
            ("EXTRA_CA_CERTS", &ca),
        ]))
        .await;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while client::get(&server.url("/ready")).await.status != StatusCode::OK {
            assert!(tokio::time::Instant::now() < deadline, "never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let valid = one.sign(&one.header(), &claims(&issuer, APP_ONE));
        (issuer, server, valid)
    });
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 200,
        ..ProptestConfig::default()
    });
    let result = runner.run(&authorization_strategy(valid), |value| {
        let Ok(header) = http::HeaderValue::from_bytes(&value) else {
            return Ok(());
        };
        let request = Request::post(server.url("/api/v1/validate"))
            .header("content-type", "application/json")
            .header("authorization", header)
            .body(Full::new(Bytes::from(applicant().to_string())))
            .expect("request");
        let reply = runtime
            .block_on(exchange(request))
            .expect("the server answers");
        prop_assert!(
            reply.status.as_u16() < 500,
            "{:?} -> {}",
            String::from_utf8_lossy(&value),
            reply.status
        );
        if reply.status == StatusCode::UNAUTHORIZED {
            prop_assert!(reply.header("www-authenticate").is_some());
        }
        Ok(())
    });
    runtime.block_on(server.stop());
    drop(issuer);
    if let Err(e) = result {
        panic!("{e}");
    }
}

// The verified-token cache (src/auth/cache.rs): a token served from it is still refused for everything but
// its signature, which is what the cache skips.

/// How many validations ended with `outcome`, from /metrics.
async fn auth_checks(app: &App, outcome: &str) -> u64 {
    let metrics = app.get("/metrics").await.text();
    let series = format!("applicant_validator_auth_checks_total{{outcome=\"{outcome}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |value| value.trim().parse().expect("a counter value"))
}

#[tokio::test]
async fn a_cached_token_is_refused_once_it_has_expired() {
    let one = signer_one();
    let issuer = FakeIssuer::start(vec![one.jwk()]).await;
    let app = start_app(&issuer, &[]).await;
    app.wait_ready(StatusCode::OK).await;

    // A token 57 s past its `exp`: inside the 60 s leeway for about three seconds more. It is verified and
    // cached, and its second use is served from the cache. On a machine too slow to get it through in time,
    // a fresh one is tried.
    let mut accepted = None;
    for _ in 0..5 {
        let exp = now() - 57;
        let token = one.sign(
            &one.header(),
            &with(claims(&issuer, APP_ONE), json!({ "exp": exp })),
        );
        if validate_with(&app, &token).await.status == StatusCode::OK {
            accepted = Some((token, exp));
            break;
        }
    }
    let (token, exp) = accepted.expect("a token inside the leeway is accepted");
    // The event under test is the clock passing `exp` plus the leeway: wait for it (at most about 3 s).
    while now() <= exp + 60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_eq!(auth_checks(&app, "expired").await, 1);
}

#[tokio::test]
async fn a_cached_token_is_refused_once_its_key_leaves_the_key_set() {
    let (one, two) = (signer_one(), signer_two());
    let issuer = FakeIssuer::start(vec![one.jwk()]).await;
    let app = start_app(&issuer, &[]).await;
    app.wait_ready(StatusCode::OK).await;
    let old = one.sign(&one.header(), &claims(&issuer, APP_ONE));
    for _ in 0..2 {
        let reply = validate_with(&app, &old).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    }

    // The issuer rotates key-1 out; the first token signed with key-2 makes the service fetch the new set.
    issuer.publish(vec![two.jwk()]);
    let new = two.sign(&two.header(), &claims(&issuer, APP_ONE));
    let reply = validate_with(&app, &new).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(issuer.jwks_requests(), 2, "the key set was fetched again");

    // The cached token's key is gone: it is refused like any token signed by an unknown key.
    let reply = validate_with(&app, &old).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(
        reply.header("www-authenticate"),
        Some(r#"Bearer error="invalid_token""#)
    );
    assert_eq!(auth_checks(&app, "unknown_key").await, 1);
    let reply = validate_with(&app, &new).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test]
async fn a_token_with_the_claims_of_a_cached_one_and_another_signature_is_refused() {
    let (one, two) = (signer_one(), signer_two());
    let issuer = FakeIssuer::start(vec![one.jwk(), two.jwk()]).await;
    let app = start_app(&issuer, &[]).await;
    app.wait_ready(StatusCode::OK).await;
    let good = claims(&issuer, APP_ONE);
    let token = one.sign(&one.header(), &good);
    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());

    // The same header (naming key-1) and claims, signed with key-2: everything but the signature matches
    // the cached token.
    let forged = two.sign(&one.header(), &good);
    let signed_part = |t: &str| t.rsplit_once('.').map(|(head, _)| head.to_owned());
    assert_eq!(signed_part(&forged), signed_part(&token));
    assert_ne!(forged, token);
    let reply = validate_with(&app, &forged).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{}", reply.text());
    assert_eq!(auth_checks(&app, "signature").await, 1);

    let reply = validate_with(&app, &token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}
