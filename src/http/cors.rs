//! CORS: which browser origins may call the API and read what it answers.
//!
//! The rules are tower-http's `CorsLayer` as the service configured it (allowed origins from CORS_ORIGINS, GET
//! and POST, the request headers a browser client sends, the response headers the contract tells it to read,
//! a ten-minute preflight cache, and `Vary` on the three preflight request headers), with every header value
//! made once at startup. tower-http's layer cloned itself for every request and built and merged a header
//! map for every answer: about 2,500 instructions per validation, 5 % of the service's own work on the
//! request path (callgrind, docs/benchmarks.md). Here an answer gets at most three precomputed values.

use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, header};

use super::state::{Body, X_CORRELATION_ID};
use crate::config::CorsOrigins;
use crate::ratelimit::{X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET};

/// The CORS answer of one process, made from CORS_ORIGINS once.
#[derive(Debug)]
pub struct Cors {
    origins: CorsOrigins,
    vary: HeaderValue,
    allow_methods: HeaderValue,
    allow_headers: HeaderValue,
    expose_headers: HeaderValue,
    max_age: HeaderValue,
}

/// `a,b,c`, as the values of a list header.
fn list(names: &[&HeaderName]) -> HeaderValue {
    let joined = names
        .iter()
        .map(|name| name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    // Header names are valid header values.
    HeaderValue::from_str(&joined).unwrap_or_else(|_| HeaderValue::from_static(""))
}

impl Cors {
    pub fn new(origins: &CorsOrigins) -> Self {
        Self {
            origins: origins.clone(),
            vary: list(&[
                &header::ORIGIN,
                &header::ACCESS_CONTROL_REQUEST_METHOD,
                &header::ACCESS_CONTROL_REQUEST_HEADERS,
            ]),
            allow_methods: HeaderValue::from_static("GET,POST"),
            // Authorization: a browser client sends its bearer token when AUTH_MODE=entra. traceparent and
            // tracestate: browser telemetry (Application Insights' CORS correlation) adds them to calls.
            allow_headers: list(&[
                &header::CONTENT_TYPE,
                &header::AUTHORIZATION,
                &X_CORRELATION_ID,
                &HeaderName::from_static("traceparent"),
                &HeaderName::from_static("tracestate"),
            ]),
            // A browser client must be able to read what the contract tells it: its correlation id, when to
            // retry, and its rate-limit allowance.
            expose_headers: list(&[
                &X_CORRELATION_ID,
                &header::RETRY_AFTER,
                &X_RATELIMIT_LIMIT,
                &X_RATELIMIT_REMAINING,
                &X_RATELIMIT_RESET,
            ]),
            max_age: HeaderValue::from_static("600"),
        }
    }

    /// Whether `method` makes the request a preflight, answered by [`Cors::preflight`] without routing.
    pub fn is_preflight(method: &Method) -> bool {
        method == Method::OPTIONS
    }

    /// `Access-Control-Allow-Origin` for a request from `origin`: `*` for any origin, else the origin itself
    /// when it is listed.
    fn allow_origin(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            CorsOrigins::Any => Some(HeaderValue::from_static("*")),
            CorsOrigins::List(list) => origin.filter(|o| list.contains(o)).cloned(),
        }
    }

    /// What preflights and other answers share: `Vary` (appended to any the handler set: the metrics
    /// endpoint varies on Accept) and the allowed origin.
    fn common(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        headers.append(header::VARY, self.vary.clone());
        if let Some(allow) = self.allow_origin(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow);
        }
    }

    /// The answer to a preflight (any OPTIONS request): 200, no body, what may be sent and for how long.
    pub fn preflight(&self, origin: Option<&HeaderValue>) -> Response<Body> {
        let mut response = Response::new(Body::default());
        let headers = response.headers_mut();
        self.common(origin, headers);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.allow_methods.clone(),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            self.allow_headers.clone(),
        );
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        response
    }

    /// Adds the CORS headers to the answer of a request from `origin`. A request without an Origin header is
    /// not a cross-origin request (browsers send Origin on every one), so its answer carries only `Vary`:
    /// the allow and expose headers would be bytes no client reads, written on every validation.
    pub fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        if origin.is_none() {
            headers.append(header::VARY, self.vary.clone());
            return;
        }
        self.common(origin, headers);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            self.expose_headers.clone(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed() -> Cors {
        Cors::new(&CorsOrigins::List(vec![HeaderValue::from_static(
            "https://app.example",
        )]))
    }

    #[test]
    fn answers_carry_vary_origin_and_the_exposed_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("accept"));
        let origin = HeaderValue::from_static("https://app.example");
        listed().apply(Some(&origin), &mut headers);
        let vary: Vec<_> = headers.get_all(header::VARY).iter().collect();
        assert_eq!(
            vary,
            [
                "accept",
                "origin,access-control-request-method,access-control-request-headers"
            ]
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert_eq!(
            headers[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "x-correlation-id,retry-after,x-ratelimit-limit,x-ratelimit-remaining,x-ratelimit-reset"
        );
    }

    #[test]
    fn an_unlisted_or_missing_origin_is_not_allowed_and_any_means_star() {
        for origin in [Some(HeaderValue::from_static("https://evil.example")), None] {
            let mut headers = HeaderMap::new();
            listed().apply(origin.as_ref(), &mut headers);
            assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
            assert!(
                listed()
                    .preflight(origin.as_ref())
                    .headers()
                    .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                    .is_none()
            );
        }
        let any = Cors::new(&CorsOrigins::Any);
        let mut headers = HeaderMap::new();
        any.apply(
            Some(&HeaderValue::from_static("https://a.example")),
            &mut headers,
        );
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(headers.contains_key(header::ACCESS_CONTROL_EXPOSE_HEADERS));
        let preflight = any.preflight(None);
        assert_eq!(
            preflight.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "*"
        );
    }

    #[test]
    fn a_request_without_origin_gets_only_vary() {
        for cors in [Cors::new(&CorsOrigins::Any), listed()] {
            let mut headers = HeaderMap::new();
            cors.apply(None, &mut headers);
            assert_eq!(
                headers.keys().collect::<Vec<_>>(),
                [header::VARY],
                "{:?}",
                cors.origins
            );
        }
    }

    #[test]
    fn a_preflight_names_methods_headers_and_cache_time_but_exposes_nothing() {
        let origin = HeaderValue::from_static("https://app.example");
        let response = listed().preflight(Some(&origin));
        let headers = response.headers();
        assert_eq!(response.status(), http::StatusCode::OK);
        assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_METHODS], "GET,POST");
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "content-type,authorization,x-correlation-id,traceparent,tracestate"
        );
        assert_eq!(headers[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert_eq!(
            headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example"
        );
        assert!(headers.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).is_none());
    }
}
