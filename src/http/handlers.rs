//! Routing and handlers. Each step of a request either answers or passes on: route and method, then (for
//! validations) the caller's bearer token when AUTH_MODE=entra, rate limit, media type, body size, JSON and
//! field validation, and finally scoring.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde::Serialize;
use serde_json::json;

use super::docs::VERSION;
use super::response::{bytes_response, error_response, json_response};
use super::state::{AppState, Body, RequestContext};
use crate::auth::CallerApp;
use crate::domain::{Applicant, Score};
use crate::error::AppError;
use crate::ratelimit;
use crate::routes::Route;
use crate::scoring::WorkerScorer;
use crate::telemetry::{jsonline, logging, metrics};
use crate::validation;

/// A request body as the handlers read it: hyper's [`Incoming`](hyper::body::Incoming) in the server.
pub trait RequestBody: hyper::body::Body<Data = Bytes> + Unpin {}
impl<B: hyper::body::Body<Data = Bytes> + Unpin> RequestBody for B {}

/// Answers one request. Generic over the request body only so that unit tests can route a request with a body
/// of their own; the server has one body type, so there is one copy of this code.
pub async fn route<B: RequestBody>(
    state: &AppState,
    worker_scorer: &WorkerScorer,
    ctx: &RequestContext,
    request: Request<B>,
) -> Response<Body> {
    let route = ctx.route;
    if route == Route::Metrics && !state.config.metrics_enabled {
        return error_response(&AppError::NotFound, &ctx.correlation_id);
    }
    let Some(expected) = route.method() else {
        return error_response(&AppError::NotFound, &ctx.correlation_id);
    };
    // HEAD is answered like GET (hyper sends no body for it).
    let method_ok = request.method() == expected
        || (expected == Method::GET && request.method() == Method::HEAD);
    if !method_ok {
        let allow = if expected == Method::GET {
            "GET, HEAD"
        } else {
            "POST"
        };
        return error_response(&AppError::MethodNotAllowed { allow }, &ctx.correlation_id);
    }
    match route {
        Route::Root => json_response(
            StatusCode::OK,
            &json!({"service": "Applicant Validator API", "version": VERSION, "docs": "/docs"}),
        ),
        Route::Health | Route::ApiHealth => health(state),
        Route::Ready | Route::HealthReady | Route::ApiReady => ready(state).await,
        Route::Validate | Route::ApiValidate => validate(state, worker_scorer, ctx, request).await,
        Route::OpenApi => bytes_response("application/json", state.openapi.clone()),
        Route::Docs => docs(state),
        Route::Metrics => metrics(state, request.headers()),
        Route::Unmatched => error_response(&AppError::NotFound, &ctx.correlation_id),
    }
}

fn docs(state: &AppState) -> Response<Body> {
    let mut response = bytes_response("text/html; charset=utf-8", state.docs.html.clone());
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, state.docs.csp.clone());
    response
}

/// The /health answer, serialised straight from this struct: a `json!` map cost an allocation per key and
/// value on a path that load balancers and Docker call all the time. The keys keep the order the answer
/// always had (alphabetical).
#[derive(Serialize)]
struct Health<'a> {
    environment: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<&'static str>,
    status: &'static str,
    version: &'static str,
}

fn health(state: &AppState) -> Response<Body> {
    let (status, word) = if state.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else {
        (StatusCode::OK, "healthy")
    };
    let body = Health {
        environment: &state.config.environment,
        mode: state.config.demo_mode.then_some("demo"),
        status: word,
        version: VERSION,
    };
    json_response(status, &body)
}

async fn ready(state: &AppState) -> Response<Body> {
    let mut checks = serde_json::Map::new();
    for (name, ok) in state.scorer.readiness().await {
        checks.insert(name.into(), json!(ok));
    }
    if let Some(auth) = &state.auth {
        checks.insert("auth_keys".into(), json!(auth.ready()));
    }
    let ready = !state.is_shutdown_requested()
        && !state.is_draining()
        && checks.values().all(|v| v == &json!(true));
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(status, &json!({"ready": ready, "checks": checks}))
}

/// Refreshes the gauges that mirror other components' state, then encodes every series in the format the
/// Accept header asks for (the classic text format unless OpenMetrics is preferred).
fn metrics(state: &AppState, headers: &HeaderMap) -> Response<Body> {
    let metrics = &state.metrics;
    state.scorer.record_gauges(metrics);
    if let Some(limiter) = &state.limiter {
        metrics.set_rate_limit_clients(limiter.clients());
    }
    metrics.set_log_lines_dropped(logging::lines_dropped());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = metrics::Format::negotiate(accept);
    let mut response = bytes_response(
        format.content_type(),
        Bytes::from(metrics.encode_as(format)),
    );
    // Caches must key the answer on Accept, since the same URL answers in two formats.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    response
}

/// POST validate, the whole pipeline in order: the caller (AUTH_MODE=entra), the client's allowance, the
/// body decoded and checked, the score. Each step answers or passes on.
///
/// The caller comes first so the rate limiter can key on the calling application; a refused caller is answered
/// at once and never counts against any allowance. The allowance comes before anything else a validation does,
/// so a throttled client costs one map lookup; every answer after it, refusals and errors included, reports the
/// client's allowance. The caller's app id goes into the response's extensions for the request log line.
async fn validate<B: RequestBody>(
    state: &AppState,
    worker_scorer: &WorkerScorer,
    ctx: &RequestContext,
    request: Request<B>,
) -> Response<Body> {
    let app_id = match authenticate(state, request.headers()).await {
        Ok(app_id) => app_id,
        Err(refusal) => {
            let response = error_response(&refusal.error.into(), &ctx.correlation_id);
            return with_caller(response, refusal.app_id);
        }
    };
    let allowance = allowance(state, ctx, request.headers(), app_id.clone());
    let result = match allowance.and_then(|d| d.retry_after) {
        Some(retry_after) => Err(AppError::RateLimited { retry_after }),
        None => match decode(state, ctx, request).await {
            Ok(applicant) => score(state, worker_scorer, ctx, &applicant).await,
            Err(e) => Err(e),
        },
    };
    let mut response = result.unwrap_or_else(|e| error_response(&e, &ctx.correlation_id));
    if let Some(allowance) = allowance {
        allowance.write_headers(response.headers_mut());
    }
    with_caller(response, app_id)
}

/// The calling application's id when AUTH_MODE=entra (`None` with auth off).
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Arc<str>>, crate::auth::Refusal> {
    match &state.auth {
        None => Ok(None),
        Some(auth) => Ok(Some(auth.authenticate(headers).await?.app_id)),
    }
}

/// The client's allowance, when a rate limit is set. The client is the calling application when callers
/// authenticate, else its address.
fn allowance(
    state: &AppState,
    ctx: &RequestContext,
    headers: &HeaderMap,
    app_id: Option<Arc<str>>,
) -> Option<ratelimit::Decision> {
    let limiter = state.limiter.as_ref()?;
    Some(match app_id {
        Some(app_id) => limiter.check(&ratelimit::ClientKey::App(app_id)),
        None => {
            let client =
                ratelimit::client_addr(ctx.peer.ip(), headers, state.config.trusted_proxy_hops);
            limiter.check(&ratelimit::ClientKey::Addr(client))
        }
    })
}

/// Records the caller's application id for the request log line.
fn with_caller(mut response: Response<Body>, app_id: Option<Arc<str>>) -> Response<Body> {
    if let Some(app_id) = app_id {
        response.extensions_mut().insert(CallerApp(app_id));
    }
    response
}

/// The validation answer, `{"riskScore":…,"riskLevel":"…","correlationId":"…"}`, written directly: serde_json
/// ran its string serialiser, with its escape table, for each of the five strings, keys included: 575
/// instructions per validation more than this (callgrind, docs/benchmarks.md). The correlation id goes through
/// the log lines' JSON escaping; a test checks the bytes against serde_json's for any score, level and id.
fn validated_body(score: &Score, correlation_id: &HeaderValue) -> Bytes {
    // Visible ASCII (the envelope's check), so always text.
    let id = correlation_id.to_str().unwrap_or_default();
    let mut body = String::with_capacity(64 + 2 * id.len());
    body.push_str("{\"riskScore\":");
    body.push_str(itoa::Buffer::new().format(score.risk_score));
    body.push_str(",\"riskLevel\":\"");
    body.push_str(score.risk_level.as_str());
    body.push_str("\",\"correlationId\":\"");
    jsonline::push_escaped(&mut body, id);
    body.push_str("\"}");
    Bytes::from(body)
}

/// The body: media type, size, JSON and field checks, within the request's deadline.
async fn decode<B: RequestBody>(
    state: &AppState,
    ctx: &RequestContext,
    request: Request<B>,
) -> Result<Applicant, AppError> {
    let config = &state.config;
    if !is_json(request.headers().get(header::CONTENT_TYPE)) {
        return Err(AppError::UnsupportedMediaType);
    }
    let limit = config.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(AppError::PayloadTooLarge { limit });
    }
    let read = async {
        let body = read_body(request.into_body(), limit).await?;
        validation::validate(&body, config.id_number_strict).map_err(AppError::Validation)
    };
    tokio::time::timeout_at(ctx.started + config.request_timeout, read)
        .await
        .unwrap_or(Err(AppError::RequestTimeout))
}

/// The score and the answer. Not cut off here: the scorer ends by the deadline on its own (504
/// TIMEOUT_ERROR), so the breaker hears about a call that REQUEST_TIMEOUT ended. Dropping its future would
/// lose that.
async fn score(
    state: &AppState,
    worker_scorer: &WorkerScorer,
    ctx: &RequestContext,
    applicant: &Applicant,
) -> Result<Response<Body>, AppError> {
    let deadline = ctx.started + state.config.request_timeout;
    let score = worker_scorer
        .score(applicant, &ctx.correlation_id, &ctx.trace, deadline)
        .await?;
    Ok(bytes_response(
        "application/json",
        validated_body(&score, &ctx.correlation_id),
    ))
}

/// The request body, at most `limit` bytes (413 beyond, 400 when it breaks off).
///
/// A body with a Content-Length arrives as one frame, and the body says it has ended as soon as that many
/// bytes came: it is taken as it is, with no copy and no further poll. `http_body_util`'s `Limited` and
/// `collect` built a buffer list and polled once more for the end: 423 instructions per validation more
/// (callgrind, docs/benchmarks.md). Chunked bodies and bodies in several frames are joined.
async fn read_body<B: RequestBody>(mut body: B, limit: usize) -> Result<Bytes, AppError> {
    // The body while it is one frame; from a second frame on, the frames joined.
    let mut first: Option<Bytes> = None;
    let mut joined = BytesMut::new();
    while !body.is_end_stream() {
        let Some(frame) = body.frame().await else {
            break;
        };
        let Ok(data) = frame.map_err(|_| AppError::BadRequest)?.into_data() else {
            // Trailers carry nothing a validation reads.
            continue;
        };
        let held = first.as_ref().map_or(0, Bytes::len) + joined.len();
        if data.len() > limit.saturating_sub(held) {
            return Err(AppError::PayloadTooLarge { limit });
        }
        if first.is_none() && joined.is_empty() {
            first = Some(data);
            continue;
        }
        if let Some(earlier) = first.take() {
            joined.extend_from_slice(&earlier);
        }
        joined.extend_from_slice(&data);
    }
    Ok(first.unwrap_or_else(|| joined.freeze()))
}

/// application/json, with or without parameters such as charset; `+json` types and a missing header do not
/// count.
fn is_json(value: Option<&HeaderValue>) -> bool {
    let Some(value) = value.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Route;
    use crate::scoring::Scorer;
    use crate::trace::TraceContext;
    use http_body_util::Full;

    const APPLICANT: &str =
        r#"{"firstName":"Thandi","lastName":"Nkosi","idNumber":"9001011234088"}"#;

    /// A demo-mode service with /metrics on (or off), built as the binary builds it from its environment.
    fn demo_state(metrics_enabled: bool) -> AppState {
        let config = crate::Config::from_lookup(|name| match name {
            "DEMO_MODE" => Some("true".to_owned()),
            "METRICS_ENABLED" => Some(metrics_enabled.to_string()),
            _ => None,
        })
        .expect("a demo configuration");
        AppState::new(
            config,
            Scorer::Demo,
            Arc::new(metrics::Metrics::new()),
            None,
        )
    }

    /// The answer to one request, with an applicant as its body, and that answer's body.
    async fn answer(state: &AppState, method: Method, path: &str) -> (Response<Body>, String) {
        let ctx = RequestContext {
            correlation_id: HeaderValue::from_static("route-test"),
            trace: TraceContext::new_trace(),
            route: Route::of(path),
            peer: ([127, 0, 0, 1], 40000).into(),
            started: tokio::time::Instant::now(),
        };
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from_static(APPLICANT.as_bytes())))
            .expect("a request");
        let response = route(state, &WorkerScorer::Demo, &ctx, request).await;
        let body = response
            .body()
            .clone()
            .collect()
            .await
            .expect("a full body");
        let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
        (response, text)
    }

    /// What only the route's own handler writes.
    fn mark_of(route: Route) -> &'static str {
        match route {
            Route::Root => "Applicant Validator API",
            Route::Health | Route::ApiHealth => "\"status\":\"healthy\"",
            Route::Ready | Route::HealthReady | Route::ApiReady => "\"ready\":true",
            Route::Validate | Route::ApiValidate => "\"riskScore\":",
            Route::OpenApi => "\"openapi\":",
            Route::Docs => "<html",
            Route::Metrics => "# TYPE",
            Route::Unmatched => "NOT_FOUND",
        }
    }

    #[tokio::test]
    async fn each_route_reaches_its_own_handler_with_its_method() {
        let state = demo_state(true);
        for (route, path, method) in Route::ALL {
            let (response, body) = answer(&state, method.clone(), path).await;
            assert_eq!(response.status(), StatusCode::OK, "{method} {path}: {body}");
            assert!(body.contains(mark_of(route)), "{method} {path}: {body}");
        }
    }

    #[tokio::test]
    async fn head_is_answered_like_get_and_only_on_get_routes() {
        let state = demo_state(true);
        for (route, path, method) in Route::ALL {
            let (response, body) = answer(&state, Method::HEAD, path).await;
            if method == Method::GET {
                assert_eq!(response.status(), StatusCode::OK, "HEAD {path}");
                assert!(body.contains(mark_of(route)), "HEAD {path}: {body}");
            } else {
                assert_eq!(
                    response.status(),
                    StatusCode::METHOD_NOT_ALLOWED,
                    "HEAD {path}"
                );
                assert_eq!(response.headers()[header::ALLOW], "POST", "HEAD {path}");
            }
        }
    }

    #[tokio::test]
    async fn another_method_gets_405_naming_the_allowed_ones() {
        let state = demo_state(true);
        for (_, path, method) in Route::ALL {
            let (other, allow) = if method == Method::GET {
                (Method::POST, "GET, HEAD")
            } else {
                (Method::GET, "POST")
            };
            let (response, body) = answer(&state, other.clone(), path).await;
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{other} {path}"
            );
            assert_eq!(response.headers()[header::ALLOW], allow, "{other} {path}");
            assert!(
                body.contains("METHOD_NOT_ALLOWED"),
                "{other} {path}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn unknown_paths_and_metrics_turned_off_get_404() {
        let on = demo_state(true);
        let off = demo_state(false);
        for (state, method, path) in [
            (&on, Method::GET, "/nope"),
            (&on, Method::POST, "/api/v1/validate/"),
            (&off, Method::GET, "/metrics"),
        ] {
            let (response, body) = answer(state, method.clone(), path).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
            assert!(
                body.contains(mark_of(Route::Unmatched)),
                "{method} {path}: {body}"
            );
        }
        let (response, _) = answer(&off, Method::GET, "/health").await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "only /metrics is turned off"
        );
    }

    proptest::proptest! {
        #[test]
        fn the_validation_answer_is_what_serde_would_write(
            risk_score in 0u8..=100,
            level in 0usize..4,
            id in "[!-~]{1,128}",
        ) {
            use crate::domain::RiskLevel;
            #[derive(Serialize)]
            #[serde(rename_all = "camelCase")]
            struct Validated<'a> {
                risk_score: u8,
                risk_level: RiskLevel,
                correlation_id: &'a str,
            }
            let risk_level = [RiskLevel::Low, RiskLevel::Medium, RiskLevel::High, RiskLevel::Critical][level];
            let header = HeaderValue::from_str(&id).expect("visible ASCII");
            let written = validated_body(&Score { risk_score, risk_level }, &header);
            let expected = serde_json::to_vec(&Validated { risk_score, risk_level, correlation_id: &id })
                .expect("serialises");
            proptest::prop_assert_eq!(&written[..], &expected[..]);
        }
    }

    #[test]
    fn media_types() {
        let v = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(is_json(v("application/json").as_ref()));
        assert!(is_json(v("Application/JSON; charset=utf-8").as_ref()));
        assert!(!is_json(v("application/problem+json").as_ref()));
        assert!(!is_json(v("text/plain").as_ref()));
        assert!(!is_json(None));
    }
}
