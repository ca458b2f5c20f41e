//! What every request handler can reach: the shared [`AppState`] and the per-request [`RequestContext`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use http_body_util::Full;
use tokio::time::Instant;

use super::docs::openapi_document;
use crate::auth::Authenticator;
use crate::config::Config;
use crate::ratelimit::ClientLimiter;
use crate::routes::Route;
use crate::scoring::Scorer;
use crate::telemetry::metrics::Metrics;

/// The response body type of every answer.
pub type Body = Full<Bytes>;

/// The correlation header, on every response and every upstream call.
pub static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub scorer: Scorer,
    pub metrics: Arc<Metrics>,
    /// Per-client limiter for validations; `None` when RATE_LIMIT_PER_MINUTE is 0.
    pub limiter: Option<Arc<ClientLimiter>>,
    /// Checks callers' bearer tokens on validations; `None` with AUTH_MODE=off.
    pub auth: Option<Arc<Authenticator>>,
    /// Set once shutdown begins: /health answers 503 and connections close after their current request.
    pub draining: AtomicBool,
    pub(crate) openapi: Bytes,
}

impl AppState {
    /// The state around already-built parts; the composition root ([`crate::app`]) builds them.
    pub fn new(
        config: Config,
        scorer: Scorer,
        metrics: Arc<Metrics>,
        limiter: Option<Arc<ClientLimiter>>,
    ) -> Self {
        Self {
            openapi: openapi_document(),
            limiter,
            auth: None,
            config,
            scorer,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// The state with caller authentication on (AUTH_MODE=entra).
    pub fn with_auth(mut self, auth: Option<Arc<Authenticator>>) -> Self {
        self.auth = auth;
        self
    }

    /// True once shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Per-request facts the envelope computes once and handlers read from the request's extensions.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub correlation_id: HeaderValue,
    /// The route the path matched, found once for the router, the metrics and the log line.
    pub route: Route,
    pub peer: SocketAddr,
    pub started: Instant,
}
