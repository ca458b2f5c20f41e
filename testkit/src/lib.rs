//! Test support for applicant-validator: real servers on 127.0.0.1 standing in for the outside world, one HTTP
//! client helper, and a runner for child processes.
//!
//! It is a separate dev-only crate so that the integration tests and the `fake_riskshield` example share one
//! fake RiskShield instead of each carrying its own, and so that helpers a given test binary does not use
//! raise no dead-code warnings. It never depends on the service crate: everything here speaks HTTP or runs a
//! process, like the service's real neighbours do.
//!
//! - [`riskshield`]: the scriptable fake RiskShield (script of answers, delays, held answers, key checking,
//!   request and connection counters), also the engine of the `fake_riskshield` example binary.
//! - [`azure`]: the managed-identity token endpoint and an HTTPS Key Vault with the 401-challenge flow.
//! - [`pki`]: the test PKI the HTTPS fakes are served with, made at run time.
//! - [`openid`]: an HTTPS OpenID Connect issuer (discovery and JWKS) standing in for Entra ID, and a signer
//!   for test tokens.
//! - [`client`]: one way to send a request and one [`Reply`] type, and a check that a server has read what
//!   was sent to it.
//! - [`process`]: runs a binary with a cleared environment and captures its stdout log lines.
//! - [`server`]: the accept loop every fake shares, and a port where nothing listens.

pub mod azure;
pub mod client;
pub mod openid;
pub mod pki;
pub mod process;
pub mod riskshield;
pub mod server;

pub use client::Reply;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex` even if a panicking test thread poisoned it: the fakes' state stays meaningful after a
/// failed assertion elsewhere, and a second panic would only hide the first.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
