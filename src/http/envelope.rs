//! What every request passes through around the router: correlation id, trace context, CORS, the request
//! log line and the request metrics.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::cors::Cors;
use super::handlers;
use super::state::{AppState, Body, RequestContext, X_CORRELATION_ID};
use crate::auth::CallerApp;
use crate::routes::Route;
use crate::scoring::WorkerScorer;
use crate::telemetry::logging::{loggable_path, millis};
use crate::trace::TraceContext;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What every request passes through: correlation id, CORS, logging and metrics around the router.
#[derive(Clone)]
pub struct Envelope {
    pub state: Arc<AppState>,
    /// The worker's own way to scores (its upstream connections).
    pub worker_scorer: Arc<WorkerScorer>,
    pub cors: Arc<Cors>,
    pub peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Envelope {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        let worker_scorer = self.worker_scorer.clone();
        let cors = self.cors.clone();
        let started = Instant::now();
        let correlation_id = correlation_id(request.headers());
        let method = request.method().clone();
        let route = Route::of(request.uri().path());
        // A Uri clone shares its bytes; the path is only cut for the log line if a line is written.
        let uri = request.uri().clone();
        let origin = request.headers().get(header::ORIGIN).cloned();
        let preflight = Cors::is_preflight(&method);
        // Handed to the handlers as it is: through the request's extensions it cost a map and a box per
        // request.
        let ctx = RequestContext {
            correlation_id: correlation_id.clone(),
            trace: TraceContext::from_headers(request.headers()),
            route,
            peer: self.peer,
            started,
        };
        Box::pin(async move {
            let _in_flight = state.metrics.in_flight();
            let mut response = if preflight {
                cors.preflight(origin.as_ref())
            } else {
                let mut response = handlers::route(&state, &worker_scorer, &ctx, request).await;
                cors.apply(origin.as_ref(), response.headers_mut());
                response
            };
            let headers = response.headers_mut();
            headers.insert(X_CORRELATION_ID.clone(), correlation_id.clone());
            if state.is_draining() {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let elapsed = started.elapsed();
            let status = response.status();
            let client_app = response.extensions().get::<CallerApp>().map(|app| &*app.0);
            state.metrics.request(route, &method, status, elapsed);
            tracing::info!(
                method = %method,
                path = &*loggable_path(uri.path()),
                status = status.as_u16(),
                duration_ms = millis(elapsed),
                correlation_id = correlation_id.to_str().unwrap_or_default(),
                trace_id = ctx.trace.trace_id(),
                client_app,
                "request"
            );
            Ok(response)
        })
    }
}

/// The request's own X-Correlation-ID if it is 1–128 visible ASCII characters, otherwise a new UUIDv4.
pub fn correlation_id(headers: &http::HeaderMap) -> HeaderValue {
    let valid = |v: &&HeaderValue| {
        let bytes = v.as_bytes();
        (1..=128).contains(&bytes.len()) && bytes.iter().all(|b| (0x21..=0x7e).contains(b))
    };
    match headers.get(&X_CORRELATION_ID).filter(valid) {
        Some(value) => value.clone(),
        None => {
            // A version-4 UUID from the thread's fast PRNG: a correlation id must be unique, not secret, and
            // asking the kernel for randomness on every request costs a system call.
            let id = uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid();
            let mut buf = uuid::Uuid::encode_buffer();
            let id = id.hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids() {
        let mut headers = http::HeaderMap::new();
        headers.insert(&X_CORRELATION_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(correlation_id(&headers), "abc-123");
        headers.insert(&X_CORRELATION_ID, HeaderValue::from_static("has space"));
        let generated = correlation_id(&headers);
        assert!(uuid::Uuid::parse_str(generated.to_str().expect("ascii")).is_ok());
        headers.insert(
            &X_CORRELATION_ID,
            HeaderValue::from_str(&"x".repeat(129)).expect("ascii"),
        );
        assert_ne!(correlation_id(&headers).len(), 129);
        headers.insert(
            &X_CORRELATION_ID,
            HeaderValue::from_str(&"x".repeat(128)).expect("ascii"),
        );
        assert_eq!(correlation_id(&headers).len(), 128);
        assert_eq!(correlation_id(&http::HeaderMap::new()).len(), 36);
    }
}
