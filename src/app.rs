//! The composition root: the one module that knows every part of the running service and wires them.
//!
//! configuration → outbound client → key source → upstream client → scorer → HTTP state → server. Every
//! other module receives what it needs from here (or from its caller) and never builds its neighbours.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::api_key::KeySource;
use crate::api_key::cache::VaultKeySource;
use crate::api_key::vault::AccessError;
use crate::auth::Authenticator;
use crate::auth::jwks::StartError;
use crate::config::{Config, KeySourceConfig};
use crate::http::{AppState, server};
use crate::outbound;
use crate::ratelimit::ClientLimiter;
use crate::riskshield::retry::RetryPolicy;
use crate::riskshield::{RiskShieldClient, Settings};
use crate::scoring::Scorer;
use crate::telemetry::metrics::Metrics;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    // Outbound, Vault and Auth come from the configuration (roots, vault URL, identity variables, issuer):
    // exit 64, like the checks in `config`. The rest are the machine's: exit 1.
    #[error(transparent)]
    Outbound(#[from] outbound::OutboundError),
    #[error(transparent)]
    Vault(#[from] AccessError),
    #[error(transparent)]
    Auth(#[from] StartError),
    #[error("cannot read the listener's address: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the worker threads: {0}")]
    Workers(std::io::Error),
}

impl ServeError {
    /// Whether the configuration is at fault (exit 64) rather than the machine (exit 1).
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            ServeError::Outbound(_) | ServeError::Vault(_) | ServeError::Auth(_)
        )
    }
}

/// A request to stop, as the operating system delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Terminate,
    Interrupt,
}

impl StopSignal {
    /// The name logged.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
        }
    }

    /// 128 + the signal's number, what a shell reports for a process the signal ended: 143 for SIGTERM,
    /// 130 for SIGINT.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Terminate => 143,
            StopSignal::Interrupt => 130,
        }
    }
}

/// How [`run_threaded`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Drained (or cut off after SHUTDOWN_GRACE) after a stop signal: exit 0.
    Gracefully,
    /// A second stop signal ended the process at once: exit with the signal's code.
    Forced(StopSignal),
}

/// Runs the service on `listener` until `shutdown` resolves, then drains for at most SHUTDOWN_GRACE.
///
/// This is the seam the integration tests use: they bind `127.0.0.1:0`, pass a future that resolves when the
/// test wants the server to stop, and talk HTTP to the real thing. It runs the binary's own shutdown sequence
/// ([`supervise`]) on one worker thread, with `shutdown` as the first stop signal.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let state = build(config)?;
    let listeners = vec![listener.into_std()?];
    let (signal, signals) = mpsc::channel(1);
    let forward = async move {
        shutdown.await;
        let _ = signal.send(StopSignal::Terminate).await;
    };
    let (stopped, ()) = tokio::join!(supervise(&state, listeners, signals), forward);
    stopped.map(|_| ())
}

/// Runs the service thread-per-core: builds the shared state (its background work, such as vault reads, runs
/// on the caller's runtime), binds WORKERS listeners on HOST:PORT, and serves until [`supervise`] has seen
/// `signals` through.
pub async fn run_threaded(
    config: Config,
    signals: mpsc::Receiver<StopSignal>,
) -> Result<Stopped, ServeError> {
    let addr = SocketAddr::new(config.host, config.port);
    let workers = config.workers;
    // Everything that can fail at startup fails before the port is bound.
    let state = build(config)?;
    let listeners =
        server::bind(addr, workers).map_err(|source| ServeError::Bind { addr, source })?;
    supervise(&state, listeners, signals).await
}

/// The one shutdown sequence: starts a worker per listener, then waits for the first stop signal.
///
/// The first signal makes /ready answer 503 while everything is still served for SHUTDOWN_DELAY; then the
/// listeners close and connections drain for at most SHUTDOWN_GRACE. A second signal at any point ends the
/// run at once with [`Stopped::Forced`]; the caller exits without waiting for anything.
async fn supervise(
    state: &Arc<AppState>,
    listeners: Vec<std::net::TcpListener>,
    mut signals: mpsc::Receiver<StopSignal>,
) -> Result<Stopped, ServeError> {
    let delay = state.config.shutdown_delay;
    let (stop_tx, stop_rx) = watch::channel(false);
    let workers = server::spawn_workers(state, listeners, &stop_rx).map_err(ServeError::Workers)?;

    let Some(first) = signals.recv().await else {
        // No signal can arrive any more (handlers could not be installed): serve until killed.
        std::future::pending::<()>().await;
        return Ok(Stopped::Gracefully);
    };
    state.request_shutdown();
    tracing::info!(
        signal = first.name(),
        delay_ms = delay.as_millis() as u64,
        "shutdown requested"
    );
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            Some(second) = signals.recv() => return Ok(forced(second)),
        }
    }
    server::begin_drain(state);
    let _ = stop_tx.send(true);
    let drained = async {
        let mut remaining = 0;
        for done in workers {
            remaining += match done.await {
                Ok(Ok(cut_off)) => cut_off,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "a worker failed");
                    0
                }
                Err(_) => {
                    tracing::error!("a worker thread ended without reporting");
                    0
                }
            };
        }
        remaining
    };
    tokio::select! {
        remaining = drained => {
            server::log_drained(remaining);
            Ok(Stopped::Gracefully)
        }
        Some(second) = signals.recv() => Ok(forced(second)),
    }
}

fn forced(signal: StopSignal) -> Stopped {
    tracing::warn!(
        signal = signal.name(),
        "second stop signal, exiting at once"
    );
    Stopped::Forced(signal)
}

/// Builds the shared state: the outbound client, the key source (starting the vault's background reads),
/// the upstream client, the scorer and the rate limiter. Must run inside the tokio runtime.
pub(crate) fn build(config: Config) -> Result<Arc<AppState>, ServeError> {
    let metrics = Arc::new(Metrics::new());
    let scorer = match &config.key_source {
        None => Scorer::Demo,
        Some(source) => {
            let connector =
                outbound::build_connector(&config.extra_ca_certs, config.connect_timeout)?;
            let keys = key_source(source, &config, &metrics)?;
            let client = RiskShieldClient::new(
                upstream_settings(&config)?,
                connector,
                keys,
                metrics.clone(),
            );
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
    let authenticator = Authenticator::start(auth, http, metrics.clone())?;
    Ok(Some(Arc::new(authenticator)))
}

/// The key source; only a vault needs the pooled outbound client (its reads are off the request path).
fn key_source(
    source: &KeySourceConfig,
    config: &Config,
    metrics: &Arc<Metrics>,
) -> Result<KeySource, ServeError> {
    Ok(match source {
        KeySourceConfig::Env(key) => KeySource::Static(key.clone()),
        KeySourceConfig::Vault {
            url,
            secret_name,
            ttl,
        } => {
            let http = outbound::build_client(&config.extra_ca_certs, config.connect_timeout)?;
            KeySource::Vault(VaultKeySource::start(
                url,
                secret_name,
                *ttl,
                &http,
                metrics.clone(),
            )?)
        }
    })
}

fn upstream_settings(config: &Config) -> Result<Settings, ServeError> {
    Ok(Settings {
        url: config.riskshield_api_url.clone(),
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
