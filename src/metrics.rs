//! Prometheus metrics (placeholder until the operability work lands: the recording calls are in place).

use std::time::Duration;

use http::{Method, StatusCode};

use crate::http::routes::Route;

/// Process-wide metrics.
#[derive(Debug, Default)]
pub struct Metrics {}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight;

impl Metrics {
    /// Metrics recording; `enabled` only decides whether /metrics is served.
    pub fn new(_enabled: bool) -> Self {
        Self {}
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        InFlight
    }

    /// Records a finished request.
    pub fn request(
        &self,
        _route: Route,
        _method: &Method,
        _status: StatusCode,
        _elapsed: Duration,
    ) {
    }

    /// Records one upstream attempt.
    pub fn upstream_attempt(&self, _outcome: &'static str, _elapsed: Duration) {}

    /// Records the breaker's state after a call.
    pub fn set_breaker_state(&self, _code: i64) {}

    /// Records one Key Vault read: `outcome` is a fixed label such as "success" or "not_found".
    pub fn vault_read(&self, _outcome: &'static str, _elapsed: Duration) {}

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        String::new()
    }
}
