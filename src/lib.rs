//! applicant-validator: validates loan applicants and scores them with the RiskShield risk API.
//!
//! # Layers
//! Imports only point down this list; no module imports one above it, and none imports in a circle.
//!
//! 1. [`domain`] (Applicant, Score, RiskLevel, ApiKey, demo scoring), [`routes`] (the route table) and
//!    [`trace`] (W3C Trace Context: the request's `traceparent` and `tracestate`): they import nothing of the
//!    crate.
//! 2. [`config`]: settings parsed and validated once, every problem reported at once. [`validation`]: request
//!    bodies to an [`domain::Applicant`] or per-field details. [`error`]: typed errors and the one mapping to
//!    HTTP answers.
//! 3. [`telemetry`]: JSON log lines and Prometheus metrics. [`outbound`]: the one hyper + rustls client stack
//!    with bundled roots. [`ratelimit`]: per-client limiting of validations.
//! 4. [`api_key`]: where the API key comes from (a fixed key, or Azure Key Vault with Managed Identity on the
//!    outbound stack). [`auth`]: callers' bearer tokens checked against the issuer's keys (AUTH_MODE=entra).
//! 5. [`riskshield`]: the RiskShield client (timeouts, retries, breaker, its connections and answer checks).
//! 6. [`scoring`]: the demo scorer or RiskShield, behind one [`scoring::Scorer`].
//! 7. [`http`]: the server, the request envelope and the handlers, over an [`http::AppState`].
//! 8. [`app`]: the composition root, the only module that knows all of the above and wires them.
//! 9. [`cli`] (the command line) and [`healthcheck`] (the `healthcheck` subcommand), used by `main`.
//!    [`diagnose`] (the `diagnose` subcommand) sits beside [`app`]: it runs the service's own configuration,
//!    outbound TLS, identity and vault code once each, so it may import anything below.

//!
//! # What the library exports
//! Only what its users outside the crate need, on purpose: `main` uses [`app`], [`cli`], [`config`],
//! [`diagnose`], [`healthcheck`] and [`telemetry`]; the integration tests start the service with [`serve`] and a
//! [`Config`], and name [`routes::Route`]; the `ops_cost` example measures [`ratelimit`] and the metrics. Every
//! other module is `pub(crate)`.
//!
//! Nothing here needs `unsafe`.

#![forbid(unsafe_code)]

pub(crate) mod api_key;
pub mod app;
pub(crate) mod auth;
pub mod cli;
pub mod config;
pub mod diagnose;
pub(crate) mod domain;
pub(crate) mod error;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub mod healthcheck;
pub(crate) mod http;
pub(crate) mod outbound;
pub mod ratelimit;
pub(crate) mod riskshield;
pub mod routes;
pub(crate) mod scoring;
pub mod telemetry;
pub(crate) mod trace;
pub(crate) mod validation;

pub use app::serve;
pub use config::Config;
