//! The HTTP server: accept loop, per-connection limits, the request envelope, and bounded graceful shutdown.
//!
//! [`serve`] is the seam tests use: they bind `127.0.0.1:0`, pass a future that resolves when the test wants
//! the server to stop, and talk HTTP to the real thing. `main` passes the SIGTERM/SIGINT future instead.

pub mod routes;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};
use tower_layer::Layer;

use crate::config::{Config, CorsOrigins, KeySourceConfig};
use crate::keysource::KeySource;
use crate::metrics::Metrics;
use crate::outbound;
use crate::ratelimit::ClientLimiter;
use crate::scoring::Scorer;
use crate::upstream::RiskShieldClient;
use crate::vault::VaultKeySource;

/// The response body type of every answer.
pub type Body = Full<Bytes>;

/// The correlation header, on every response and every upstream call.
pub static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Outbound(#[from] outbound::OutboundError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot read the listener's address: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything a request handler needs, shared by all connections.
#[derive(Debug)]
pub struct AppState {
    pub config: Config,
    pub scorer: Scorer,
    pub metrics: Arc<Metrics>,
    /// Per-client limiter for validations; `None` when RATE_LIMIT_PER_MINUTE is 0.
    pub limiter: Option<Arc<ClientLimiter>>,
    /// Set once shutdown begins: /health answers 503 and connections close after their current request.
    pub draining: AtomicBool,
    pub(crate) openapi: Bytes,
}

impl AppState {
    /// Builds the shared state: the outbound client, the key source (starting the vault's background reads)
    /// and the scorer.
    pub fn build(config: Config) -> Result<Arc<Self>, ServeError> {
        let metrics = Arc::new(Metrics::new());
        let scorer = match &config.key_source {
            None => Scorer::Demo,
            Some(source) => {
                let http = outbound::build_client(&config.extra_ca_certs, config.connect_timeout)?;
                let keys = match source {
                    KeySourceConfig::Env(key) => KeySource::Static(key.clone()),
                    KeySourceConfig::Vault {
                        url,
                        secret_name,
                        ttl,
                    } => KeySource::Vault(
                        VaultKeySource::start(url, secret_name, *ttl, &http, metrics.clone())
                            .map_err(ServeError::Setup)?,
                    ),
                };
                let client = RiskShieldClient::new(&config, http, keys, metrics.clone())
                    .map_err(ServeError::Setup)?;
                Scorer::RiskShield(Arc::new(client))
            }
        };
        let limiter =
            ClientLimiter::new(config.rate_limit_per_minute, config.rate_limit_burst).map(Arc::new);
        Ok(Arc::new(Self {
            openapi: routes::openapi_document(),
            limiter,
            config,
            scorer,
            metrics,
            draining: AtomicBool::new(false),
        }))
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
    pub route: routes::Route,
    pub peer: SocketAddr,
    pub started: Instant,
}

/// Runs the service on `listener` until `shutdown` resolves, then drains for at most SHUTDOWN_GRACE.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let state = AppState::build(config)?;
    run(state, listener, shutdown).await
}

/// The accept loop over already-built state.
pub async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let local = listener.local_addr()?;
    if let Some(limiter) = &state.limiter {
        limiter.spawn_sweeper();
    }
    let cors = cors_layer(&state.config.cors_origins);
    let limit = Arc::new(Semaphore::new(state.config.max_connections));
    let (drain_tx, drain_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .keep_alive(true);
    tracing::info!(
        address = %local,
        environment = %state.config.environment,
        mode = if state.config.demo_mode { "demo" } else { "riskshield" },
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );

    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        // Waiting for a free slot before accepting leaves excess clients in the kernel's backlog.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept: back off briefly, never crash.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = Envelope {
            state: state.clone(),
            inner: cors.layer(Router {
                state: state.clone(),
            }),
            peer,
        };
        let connection = http1.serve_connection(TokioIo::new(stream), service);
        let mut drain = drain_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = drain.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }

    state.draining.store(true, Ordering::Relaxed);
    drop(listener);
    let _ = drain_tx.send(());
    let in_flight = connections.len();
    let grace = state.config.shutdown_grace;
    tracing::info!(
        connections = in_flight,
        grace_ms = grace.as_millis() as u64,
        "shutting down, draining"
    );
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained, exiting"),
        Err(_) => {
            let remaining = connections.len();
            connections.abort_all();
            tracing::warn!(
                remaining,
                "shutdown grace period over; closed remaining connections"
            );
        }
    }
    Ok(())
}

fn cors_layer(origins: &CorsOrigins) -> CorsLayer {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::CONTENT_TYPE, X_CORRELATION_ID.clone()])
        .expose_headers([X_CORRELATION_ID.clone()])
        .max_age(Duration::from_secs(600))
}

/// The router as a tower service, so tower-http's CORS can wrap it.
#[derive(Clone)]
struct Router {
    state: Arc<AppState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<Request<Incoming>> for Router {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        Box::pin(async move { Ok(routes::route(&state, request).await) })
    }
}

/// What every request passes through: correlation id, CORS, logging and metrics around the router.
#[derive(Clone)]
struct Envelope {
    state: Arc<AppState>,
    inner: Cors<Router>,
    peer: SocketAddr,
}

impl hyper::service::Service<Request<Incoming>> for Envelope {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let state = self.state.clone();
        let mut inner = self.inner.clone();
        let started = Instant::now();
        let correlation_id = correlation_id(request.headers());
        let method = request.method().clone();
        let route = routes::Route::of(request.uri().path());
        // A Uri clone shares its bytes; the path is only cut for the log line if a line is written.
        let uri = request.uri().clone();
        request.extensions_mut().insert(RequestContext {
            correlation_id: correlation_id.clone(),
            route,
            peer: self.peer,
            started,
        });
        Box::pin(async move {
            let _in_flight = state.metrics.in_flight();
            let mut response = match tower_service::Service::call(&mut inner, request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            };
            let headers = response.headers_mut();
            headers.insert(X_CORRELATION_ID.clone(), correlation_id.clone());
            if state.is_draining() {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            let elapsed = started.elapsed();
            let status = response.status();
            state.metrics.request(route, &method, status, elapsed);
            tracing::info!(
                method = %method,
                path = loggable_path(uri.path()),
                status = status.as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                correlation_id = correlation_id.to_str().unwrap_or_default(),
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

/// The path as logged: at most 200 bytes, cut on a character boundary, so a huge URL cannot bloat the logs.
fn loggable_path(path: &str) -> &str {
    let mut end = path.len().min(200);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
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

    #[test]
    fn long_paths_are_cut_for_logs() {
        assert_eq!(loggable_path("/a"), "/a");
        assert_eq!(loggable_path(&"é".repeat(300)).len(), 200);
    }
}
