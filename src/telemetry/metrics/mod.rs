//! Prometheus metrics, served at GET /metrics in the classic Prometheus text format (0.0.4) or, when the
//! scraper asks for it, in OpenMetrics 1.0.
//!
//! Recording sits on every request's path, so it is built to cost a handful of relaxed atomic adds and
//! nothing else: every series lives at a fixed index in preallocated arrays (route × method × status for
//! requests, one slot per upstream outcome), label values come from fixed `&'static str` tables, and the
//! histograms are plain atomic bucket counters rather than prometheus-client's `Histogram`, which takes a
//! lock per observation. No lock is shared by requests and nothing is allocated per request.
//!
//! prometheus-client still does the part that must be exactly right, the exposition format: a
//! [`Collector`](prometheus_client::collector::Collector) walks the arrays at scrape time and hands each
//! non-zero series to its encoder. Gauges that describe other components (breaker state and transitions,
//! the vault key's age, the rate limiter's tracked clients) are copied in by the /metrics handler just
//! before encoding, so they are always current.
//!
//! prometheus-client writes only OpenMetrics, while promtool and several hosted collectors read only the
//! classic format, which a Prometheus server also falls back to. [`Format`] follows Prometheus' own
//! negotiation, and the classic form is rewritten from the OpenMetrics text line by line (see
//! `exposition::to_classic`), so both forms always carry the same series with the same values.
//!
//! Label values are never taken from the request: unknown paths count under `route="unmatched"`, methods
//! outside the standard set under `method="OTHER"`, and status codes outside the service's known set under
//! their class (`"2xx"` … `"5xx"`). A scan of random paths or methods therefore cannot add series.
//!
//! Inside: this file records ([`Metrics`] and its setters, the hot path), `series` stores (the label
//! tables, the index arithmetic, the atomic histogram and the series arrays), and `exposition` encodes
//! ([`Format`], the collector, the classic rewrite).

mod exposition;
mod series;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::registry::Registry;

use crate::routes::Route;
pub use exposition::Format;
use exposition::to_classic;
pub use series::AtomicHistogram;
use series::{
    Series, UNSET, auth_outcome_index, method_index, outcome_index, request_index, status_index,
};

/// Process-wide metrics. Cheap to record from any thread; encoded on demand by the /metrics handler.
#[derive(Debug)]
pub struct Metrics {
    series: Arc<Series>,
    registry: Registry,
}

/// Decrements the in-flight gauge when dropped, so a request that ends in any way is no longer counted.
#[derive(Debug)]
pub struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Metrics recording. It is always on, whatever METRICS_ENABLED says (that setting only decides whether
    /// /metrics is served): recording is too cheap to be worth a branch on every call.
    pub fn new() -> Self {
        let series = Arc::new(Series::default());
        let mut registry = Registry::with_prefix("applicant_validator");
        registry.register_collector(Box::new(series.clone()));
        Self { series, registry }
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight<'_> {
        self.series.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(&self.series.in_flight)
    }

    /// Records a finished request.
    pub fn request(&self, route: Route, method: &Method, status: StatusCode, elapsed: Duration) {
        let route = route.index();
        let index = request_index(route, method_index(method), status_index(status));
        if let Some(counter) = self.series.requests.get(index) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.series.request_duration[route].observe(elapsed);
    }

    /// Records one upstream attempt.
    pub fn upstream_attempt(&self, outcome: &'static str, elapsed: Duration) {
        let i = outcome_index(outcome);
        self.series.upstream_attempts[i].fetch_add(1, Ordering::Relaxed);
        self.series.upstream_duration[i].observe(elapsed);
    }

    /// Records the breaker's state (0 closed, 1 open, 2 half-open) after a call and at scrape time.
    pub fn set_breaker_state(&self, code: i64) {
        self.series.breaker_state.store(code, Ordering::Relaxed);
        self.series.breaker_known.store(true, Ordering::Relaxed);
    }

    /// Copies the breaker's own transition count in at scrape time (the breaker is the source of truth).
    pub fn set_breaker_transitions(&self, transitions: u64) {
        self.series
            .breaker_transitions
            .store(transitions, Ordering::Relaxed);
        self.series.breaker_known.store(true, Ordering::Relaxed);
    }

    /// Copies in, at scrape time, how many log lines were dropped because stdout could not keep up (the log
    /// writer counts them; it cannot reach the metrics without an import cycle).
    pub fn set_log_lines_dropped(&self, dropped: u64) {
        self.series
            .log_lines_dropped
            .store(dropped, Ordering::Relaxed);
    }

    /// Records one Key Vault read: `outcome` is a fixed label such as "success" or "not_found".
    pub fn vault_read(&self, outcome: &'static str, elapsed: Duration) {
        self.series.vault_duration.observe(elapsed);
        let mut reads = self
            .series
            .vault_reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match reads.iter_mut().find(|(o, _)| *o == outcome) {
            Some((_, n)) => *n += 1,
            None => reads.push((outcome, 1)),
        }
    }

    /// The age of the cached vault key (`None`: no vault, or nothing read yet), set at scrape time.
    pub fn set_vault_key_age(&self, age: Option<Duration>) {
        let millis = age.map_or(UNSET, |a| u64::try_from(a.as_millis()).unwrap_or(UNSET - 1));
        self.series
            .vault_key_age_millis
            .store(millis, Ordering::Relaxed);
    }

    /// How many clients the rate limiter tracks, set at scrape time when limiting is on.
    pub fn set_rate_limit_clients(&self, clients: usize) {
        let clients = u64::try_from(clients).unwrap_or(UNSET - 1);
        self.series
            .rate_limit_clients
            .store(clients, Ordering::Relaxed);
    }

    /// Records one bearer-token check: `outcome` is "success" or an [`crate::error::AuthError::outcome`].
    pub fn auth_outcome(&self, outcome: &'static str) {
        let i = auth_outcome_index(outcome);
        self.series.auth_outcomes[i].fetch_add(1, Ordering::Relaxed);
    }

    /// The OpenMetrics exposition, as prometheus-client writes it.
    pub fn encode(&self) -> String {
        self.encode_as(Format::OpenMetrics)
    }

    /// The exposition in `format` (serve it with [`Format::content_type`]).
    pub fn encode_as(&self, format: Format) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail; an error could only come from a broken label, which the fixed
        // tables rule out. Serve whatever was written rather than nothing.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        match format {
            Format::OpenMetrics => out,
            Format::Classic => to_classic(&out),
        }
    }
}
