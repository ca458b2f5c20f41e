//! The composition root: the one module that knows every part of the running service and wires them.
//!
//! configuration → outbound client → key source → upstream client → scorer → HTTP state → server. Every
//! other module receives what it needs from here (or from its caller) and never builds its neighbours.

use std::future::Future;
use std::sync::Arc;

use http::Uri;
use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::config::{Config, KeySourceConfig};
use crate::http::{AppState, server};
use crate::keys::KeySource;
use crate::keys::vault::VaultKeySource;
use crate::outbound::{self, HttpClient};
use crate::ratelimit::ClientLimiter;
use crate::scoring::Scorer;
use crate::telemetry::metrics::Metrics;
use crate::upstream::retry::RetryPolicy;
use crate::upstream::{RiskShieldClient, Settings};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Outbound(#[from] outbound::OutboundError),
    #[error("{0}")]
    Setup(String),
    #[error("cannot read the listener's address: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the service on `listener` until `shutdown` resolves, then drains for at most SHUTDOWN_GRACE.
///
/// This is the seam the integration tests use: they bind `127.0.0.1:0`, pass a future that resolves when the
/// test wants the server to stop, and talk HTTP to the real thing. `main` passes the signal future instead.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let state = build(config)?;
    server::run(state, listener, shutdown).await?;
    Ok(())
}

/// Builds the shared state: the outbound client, the key source (starting the vault's background reads),
/// the upstream client, the scorer and the rate limiter. Must run inside the tokio runtime.
pub fn build(config: Config) -> Result<Arc<AppState>, ServeError> {
    let metrics = Arc::new(Metrics::new());
    let scorer = match &config.key_source {
        None => Scorer::Demo,
        Some(source) => {
            let http = outbound::build_client(&config.extra_ca_certs, config.connect_timeout)?;
            let keys = key_source(source, &http, &metrics)?;
            let client =
                RiskShieldClient::new(upstream_settings(&config)?, http, keys, metrics.clone());
            Scorer::RiskShield(Arc::new(client))
        }
    };
    let limiter =
        ClientLimiter::new(config.rate_limit_per_minute, config.rate_limit_burst).map(Arc::new);
    let auth = authenticator(&config, &metrics)?;
    Ok(Arc::new(
        AppState::new(config, scorer, metrics, limiter).with_auth(auth),
    ))
}

/// Caller authentication when AUTH_MODE=entra: the issuer's keys are fetched on an outbound client of its own
/// (same stack and roots as the others), so its pool never competes with the RiskShield calls.
fn authenticator(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<Option<Arc<Authenticator>>, ServeError> {
    let Some(auth) = &config.auth else {
        return Ok(None);
    };
    let http = outbound::build_client(&config.extra_ca_certs, config.connect_timeout)?;
    let authenticator =
        Authenticator::start(auth, http, metrics.clone()).map_err(ServeError::Setup)?;
    Ok(Some(Arc::new(authenticator)))
}

fn key_source(
    source: &KeySourceConfig,
    http: &HttpClient,
    metrics: &Arc<Metrics>,
) -> Result<KeySource, ServeError> {
    Ok(match source {
        KeySourceConfig::Env(key) => KeySource::Static(key.clone()),
        KeySourceConfig::Vault {
            url,
            secret_name,
            ttl,
        } => KeySource::Vault(
            VaultKeySource::start(url, secret_name, *ttl, http, metrics.clone())
                .map_err(ServeError::Setup)?,
        ),
    })
}

fn upstream_settings(config: &Config) -> Result<Settings, ServeError> {
    let score_uri: Uri = format!("{}/score", config.riskshield_api_url)
        .parse()
        .map_err(|e| ServeError::Setup(format!("RISKSHIELD_API_URL: {e}")))?;
    Ok(Settings {
        score_uri,
        connect_timeout: config.connect_timeout,
        retry: RetryPolicy {
            attempt_timeout: config.attempt_timeout,
            max_attempts: config.max_attempts,
            base_delay: config.retry_base_delay,
        },
        breaker_threshold: config.circuit_failure_threshold,
        breaker_open_duration: config.circuit_open_duration,
    })
}
