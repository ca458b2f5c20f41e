//! What every request handler can reach: the shared [`AppState`] and the per-request [`RequestContext`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use tokio::time::Instant;

use super::docs::{DocsPage, openapi_document};
use crate::auth::Authenticator;
use crate::config::Config;
use crate::ratelimit::ClientLimiter;
use crate::routes::Route;
use crate::scoring::Scorer;
use crate::telemetry::metrics::Metrics;
use crate::trace::TraceContext;

/// The response body type of every answer.
pub type Body = Full<Bytes>;

pub use crate::domain::X_CORRELATION_ID;

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
    /// Set at the first SIGTERM/SIGINT, before SHUTDOWN_DELAY: /ready answers 503 while everything else is
    /// still served normally, so load balancers stop routing here before the listener closes.
    shutdown_requested: AtomicBool,
    /// Client connections currently open, over all workers (for the drain's log line).
    open_connections: Arc<AtomicUsize>,
    pub(crate) openapi: Bytes,
    /// The docs page for this configuration (its form asks for a token only with AUTH_MODE=entra).
    pub(crate) docs: DocsPage,
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct OpenConnection(Arc<AtomicUsize>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
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
            docs: DocsPage::render(config.auth.is_some()),
            limiter,
            auth: None,
            config,
            scorer,
            metrics,
            draining: AtomicBool::new(false),
            shutdown_requested: AtomicBool::new(false),
            open_connections: Arc::new(AtomicUsize::new(0)),
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

    /// Records the first shutdown signal: from now on /ready answers 503.
    pub fn request_shutdown(&self) {
        self.shutdown_requested.store(true, Ordering::Relaxed);
    }

    /// True once a shutdown signal arrived (during SHUTDOWN_DELAY and after).
    pub fn is_shutdown_requested(&self) -> bool {
        self.shutdown_requested.load(Ordering::Relaxed)
    }

    /// Counts a new client connection for as long as the returned guard lives.
    pub fn connection_opened(&self) -> OpenConnection {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.open_connections.clone())
    }

    /// Client connections currently open.
    pub fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}

/// Per-request facts the envelope computes once and hands to the handlers.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub correlation_id: HeaderValue,
    /// The request's W3C trace, sent to the vendor and logged as `trace_id`; independent of the correlation
    /// id.
    pub trace: TraceContext,
    /// The route the path matched, found once for the router, the metrics and the log line.
    pub route: Route,
    pub peer: SocketAddr,
    pub started: Instant,
}
