//! applicant-validator: validates loan applicants and scores them with the RiskShield risk API.
//!
//! Module map:
//! - [`config`]: the command line and environment, parsed and validated once, all problems reported at once.
//! - [`http`]: the server (accept loop, limits, graceful shutdown) and [`http::routes`] (handlers).
//! - [`validation`]: request body checks with per-field details.
//! - [`scoring`]: the demo scorer and the [`scoring::Scorer`] the handlers call.
//! - [`upstream`]: the RiskShield client (timeouts, retries, answer checks) and [`breaker`], its circuit breaker.
//! - [`keysource`]: where the API key comes from; [`vault`] reads it from Azure Key Vault.
//! - [`outbound`]: the one hyper + rustls client stack with bundled roots; [`azure_transport`] puts the Azure
//!   SDK on it.
//! - [`error`]: typed errors and the single mapping to HTTP answers.
//! - [`metrics`]: Prometheus metrics; [`ratelimit`]: per-client rate limiting of validations.
//! - [`healthcheck`]: the `healthcheck` subcommand for Docker's HEALTHCHECK.
//! - [`logging`]: JSON log lines.

pub mod azure_transport;
pub mod breaker;
pub mod config;
pub mod error;
pub mod healthcheck;
pub mod http;
pub mod keysource;
pub mod logging;
pub mod metrics;
pub mod outbound;
pub mod ratelimit;
pub mod scoring;
pub mod upstream;
pub mod validation;
pub mod vault;

pub use config::Config;
pub use http::serve;
