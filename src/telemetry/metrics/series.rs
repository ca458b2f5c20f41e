//! Where the recorded values live: the fixed label tables, the arithmetic that turns a request's route,
//! method and status into one array index, the lock-free histogram, and [`Series`], the preallocated
//! arrays that [`super::Metrics`] writes on every request and the collector reads at scrape time.
//!
//! Every label value here is a `&'static str` from a table, and every index is bounded by a table's
//! length, so no input can add a series or allocate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};

use crate::routes::Route;

/// Every route, in label order (the route table's own order).
pub(super) const ROUTES: [Route; 12] = Route::EVERY;

/// The standard methods plus one catch-all, so an invented method cannot create a series.
pub(super) const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

pub(super) fn method_index(method: &Method) -> usize {
    let standard = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    // Comparing standard `Method`s compares an enum tag: no string work for the methods clients use.
    standard
        .iter()
        .position(|m| m == method)
        .unwrap_or(METHODS.len() - 1)
}

/// The status codes this service answers with, each its own label; anything else counts under its class.
const STATUS_CODES: [(u16, &str); 18] = [
    (200, "200"),
    (204, "204"),
    (304, "304"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (408, "408"),
    (413, "413"),
    (415, "415"),
    (422, "422"),
    (429, "429"),
    (500, "500"),
    (501, "501"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
pub(super) const STATUSES: usize = STATUS_CODES.len() + STATUS_CLASSES.len();

pub(super) fn status_index(status: StatusCode) -> usize {
    let code = status.as_u16();
    match STATUS_CODES.iter().position(|(c, _)| *c == code) {
        Some(i) => i,
        // StatusCode guarantees 100..=999; codes above 599 are folded into "5xx".
        None => STATUS_CODES.len() + usize::from((code / 100).clamp(1, 5) - 1),
    }
}

pub(super) fn status_label(index: usize) -> &'static str {
    match STATUS_CODES.get(index) {
        Some((_, label)) => label,
        None => STATUS_CLASSES[(index - STATUS_CODES.len()).min(STATUS_CLASSES.len() - 1)],
    }
}

/// The slot of one route × method × status combination in [`Series::requests`]; the recording side and
/// the collector both go through here, so they cannot disagree about the layout.
pub(super) fn request_index(route: usize, method: usize, status: usize) -> usize {
    (route * METHODS.len() + method) * STATUSES + status
}

/// Upstream attempt outcomes, as [`crate::error::UpstreamError::outcome`] names them, plus a catch-all.
pub(super) const OUTCOMES: [&str; 8] = [
    "success",
    "timeout",
    "connection_error",
    "unavailable",
    "rejected",
    "invalid_response",
    "unauthorized",
    "other",
];

pub(super) fn outcome_index(outcome: &str) -> usize {
    OUTCOMES
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(OUTCOMES.len() - 1)
}

/// Bearer-token check outcomes (AUTH_MODE=entra), as [`crate::error::AuthError::outcome`] names them, plus
/// "success" and a catch-all.
pub(super) const AUTH_OUTCOMES: [&str; 14] = [
    "success",
    "missing",
    "malformed",
    "algorithm",
    "unknown_key",
    "signature",
    "issuer",
    "audience",
    "expired",
    "not_yet_valid",
    "no_client",
    "forbidden",
    "unavailable",
    "other",
];

pub(super) fn auth_outcome_index(outcome: &str) -> usize {
    AUTH_OUTCOMES
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(AUTH_OUTCOMES.len() - 1)
}

/// Histogram bucket upper bounds in seconds, covering a fast demo answer up to REQUEST_TIMEOUT's default.
const BUCKETS: [f64; 13] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A histogram made of atomic counters: one relaxed add for the bucket and one for the sum per
/// observation, no lock. Buckets are stored non-cumulatively and summed at scrape time; the count is the
/// sum of the buckets, so `_count` always equals the `+Inf` bucket even while observations race a scrape.
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Per-bucket counts; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    /// Sum of observations in nanoseconds (integer so it can be added atomically; overflows after 584 years).
    sum_nanos: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records one duration.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| secs <= *bound)
            .unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Sum, count and non-cumulative buckets, in the shape prometheus-client's encoder takes.
    pub(super) fn snapshot(&self) -> (f64, u64, [(f64, u64); BUCKETS.len() + 1]) {
        let buckets: [(f64, u64); BUCKETS.len() + 1] = std::array::from_fn(|i| {
            // f64::MAX is how prometheus-client's encoder recognises the +Inf bucket.
            let bound = BUCKETS.get(i).copied().unwrap_or(f64::MAX);
            (bound, self.buckets[i].load(Ordering::Relaxed))
        });
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = Duration::from_nanos(self.sum_nanos.load(Ordering::Relaxed)).as_secs_f64();
        (sum, count, buckets)
    }
}

/// "Not known yet" for gauges stored as unsigned integers.
pub(super) const UNSET: u64 = u64::MAX;

/// The recorded values; shared between [`super::Metrics`] (recording) and the registry's collector
/// (encoding).
#[derive(Debug)]
pub(super) struct Series {
    /// Indexed by [`request_index`].
    pub(super) requests: Box<[AtomicU64]>,
    pub(super) request_duration: [AtomicHistogram; ROUTES.len()],
    pub(super) in_flight: AtomicI64,
    pub(super) upstream_attempts: [AtomicU64; OUTCOMES.len()],
    pub(super) upstream_duration: [AtomicHistogram; OUTCOMES.len()],
    /// Breaker series appear once an upstream client exists (never in demo mode).
    pub(super) breaker_known: AtomicBool,
    pub(super) breaker_state: AtomicI64,
    pub(super) breaker_transitions: AtomicU64,
    /// Vault reads are rare (one per SECRET_CACHE_TTL), so a mutex here is off every request's path. The
    /// outcomes are `&'static str` chosen by the vault code, so the label set is fixed at compile time.
    pub(super) vault_reads: Mutex<Vec<(&'static str, u64)>>,
    pub(super) vault_duration: AtomicHistogram,
    pub(super) vault_key_age_millis: AtomicU64,
    pub(super) rate_limit_clients: AtomicU64,
    pub(super) auth_outcomes: [AtomicU64; AUTH_OUTCOMES.len()],
    pub(super) log_lines_dropped: AtomicU64,
}

impl Default for Series {
    fn default() -> Self {
        Self {
            requests: (0..ROUTES.len() * METHODS.len() * STATUSES)
                .map(|_| AtomicU64::new(0))
                .collect(),
            request_duration: Default::default(),
            in_flight: AtomicI64::new(0),
            upstream_attempts: Default::default(),
            upstream_duration: Default::default(),
            breaker_known: AtomicBool::new(false),
            breaker_state: AtomicI64::new(0),
            breaker_transitions: AtomicU64::new(0),
            vault_reads: Mutex::new(Vec::new()),
            vault_duration: AtomicHistogram::default(),
            vault_key_age_millis: AtomicU64::new(UNSET),
            rate_limit_clients: AtomicU64::new(UNSET),
            auth_outcomes: Default::default(),
            log_lines_dropped: AtomicU64::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_and_statuses_fold_into_fixed_labels() {
        assert_eq!(METHODS[method_index(&Method::POST)], "POST");
        let invented = Method::from_bytes(b"BREW").expect("a valid token");
        assert_eq!(METHODS[method_index(&invented)], "OTHER");
        assert_eq!(
            status_label(status_index(StatusCode::TOO_MANY_REQUESTS)),
            "429"
        );
        assert_eq!(status_label(status_index(StatusCode::IM_A_TEAPOT)), "4xx");
        assert_eq!(status_label(status_index(StatusCode::CONTINUE)), "1xx");
        let odd = StatusCode::from_u16(799).expect("in range");
        assert_eq!(status_label(status_index(odd)), "5xx");
        assert_eq!(outcome_index("circuit_open"), OUTCOMES.len() - 1);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_matches() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(60));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 60.0205).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.001, 1));
        assert_eq!(buckets[3], (0.025, 1));
        assert_eq!(buckets[BUCKETS.len()], (f64::MAX, 1));
    }
}
