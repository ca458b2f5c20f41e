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
//! [`Collector`] walks the arrays at scrape time and hands each non-zero series to its encoder. Gauges
//! that describe other components (breaker state and transitions, the vault key's age, the rate limiter's
//! tracked clients) are copied in by the /metrics handler just before encoding, so they are always current.
//!
//! prometheus-client writes only OpenMetrics, while promtool and several hosted collectors read only the
//! classic format, which a Prometheus server also falls back to. [`Format`] follows Prometheus' own
//! negotiation, and the classic form is rewritten from the OpenMetrics text line by line (see
//! [`to_classic`]), so both forms always carry the same series with the same values.
//!
//! Label values are never taken from the request: unknown paths count under `route="unmatched"`, methods
//! outside the standard set under `method="OTHER"`, and status codes outside the service's known set under
//! their class (`"2xx"` … `"5xx"`). A scan of random paths or methods therefore cannot add series.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::routes::Route;

/// The two exposition formats /metrics speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4, read by every Prometheus-compatible tool; the default.
    Classic,
    /// OpenMetrics 1.0 text, which a Prometheus server asks for first.
    OpenMetrics,
}

impl Format {
    /// The Content-Type of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// Picks the format for an `Accept` header the way Prometheus' client libraries do: the media range
    /// with the highest q-value that names a format this service speaks wins (the earlier one on a tie);
    /// `application/openmetrics-text` counts with no version or version 1.0.0 or 0.0.1 (the draft
    /// Prometheus servers before 2.43 ask for, which the same parser reads), `text/plain` with no version
    /// or 0.0.4. Wildcards, other types, q=0, a missing or unreadable header: the classic format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best: Option<(f32, Format)> = None;
        for range in accept.unwrap_or_default().split(',') {
            let mut parts = range.split(';');
            let media_type = parts.next().unwrap_or_default().trim();
            let mut q = 1.0_f32;
            let mut version = None;
            for param in parts {
                let Some((name, value)) = param.split_once('=') else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    // An unreadable q-value makes the range unacceptable rather than preferred.
                    "q" => q = value.parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0),
                    "version" => version = Some(value),
                    _ => {}
                }
            }
            let format = if media_type.eq_ignore_ascii_case("application/openmetrics-text")
                && matches!(version, None | Some("1.0.0" | "0.0.1"))
            {
                Format::OpenMetrics
            } else if media_type.eq_ignore_ascii_case("text/plain")
                && matches!(version, None | Some("0.0.4"))
            {
                Format::Classic
            } else {
                continue;
            };
            if q > 0.0 && best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, format));
            }
        }
        best.map_or(Format::Classic, |(_, format)| format)
    }
}

/// Every route, in label order (the route table's own order).
const ROUTES: [Route; 12] = Route::EVERY;

/// The standard methods plus one catch-all, so an invented method cannot create a series.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "OTHER",
];

fn method_index(method: &Method) -> usize {
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
const STATUSES: usize = STATUS_CODES.len() + STATUS_CLASSES.len();

fn status_index(status: StatusCode) -> usize {
    let code = status.as_u16();
    match STATUS_CODES.iter().position(|(c, _)| *c == code) {
        Some(i) => i,
        // StatusCode guarantees 100..=999; codes above 599 are folded into "5xx".
        None => STATUS_CODES.len() + usize::from((code / 100).clamp(1, 5) - 1),
    }
}

fn status_label(index: usize) -> &'static str {
    match STATUS_CODES.get(index) {
        Some((_, label)) => label,
        None => STATUS_CLASSES[(index - STATUS_CODES.len()).min(STATUS_CLASSES.len() - 1)],
    }
}

/// Upstream attempt outcomes, as [`crate::error::UpstreamError::outcome`] names them, plus a catch-all.
const OUTCOMES: [&str; 8] = [
    "success",
    "timeout",
    "connection_error",
    "unavailable",
    "rejected",
    "invalid_response",
    "unauthorized",
    "other",
];

fn outcome_index(outcome: &str) -> usize {
    OUTCOMES
        .iter()
        .position(|o| *o == outcome)
        .unwrap_or(OUTCOMES.len() - 1)
}

/// Bearer-token check outcomes (AUTH_MODE=entra), as [`crate::error::AuthError::outcome`] names them, plus
/// "success" and a catch-all.
const AUTH_OUTCOMES: [&str; 14] = [
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
    fn snapshot(&self) -> (f64, u64, [(f64, u64); BUCKETS.len() + 1]) {
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

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// "Not known yet" for gauges stored as unsigned integers.
const UNSET: u64 = u64::MAX;

/// The recorded values; shared between [`Metrics`] (recording) and the registry's collector (encoding).
#[derive(Debug)]
struct Series {
    /// Indexed by `(route * METHODS + method) * STATUSES + status`.
    requests: Box<[AtomicU64]>,
    request_duration: [AtomicHistogram; ROUTES.len()],
    in_flight: AtomicI64,
    upstream_attempts: [AtomicU64; OUTCOMES.len()],
    upstream_duration: [AtomicHistogram; OUTCOMES.len()],
    /// Breaker series appear once an upstream client exists (never in demo mode).
    breaker_known: AtomicBool,
    breaker_state: AtomicI64,
    breaker_transitions: AtomicU64,
    /// Vault reads are rare (one per SECRET_CACHE_TTL), so a mutex here is off every request's path. The
    /// outcomes are `&'static str` chosen by the vault code, so the label set is fixed at compile time.
    vault_reads: Mutex<Vec<(&'static str, u64)>>,
    vault_duration: AtomicHistogram,
    vault_key_age_millis: AtomicU64,
    rate_limit_clients: AtomicU64,
    auth_outcomes: [AtomicU64; AUTH_OUTCOMES.len()],
    log_lines_dropped: AtomicU64,
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

/// Process-wide metrics. Cheap to record from any thread; encoded on demand by the /metrics handler.
#[derive(Debug)]
pub struct Metrics {
    series: std::sync::Arc<Series>,
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
        let series = std::sync::Arc::new(Series::default());
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
        let index =
            (route * METHODS.len() + method_index(method)) * STATUSES + status_index(status);
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
        let i = AUTH_OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or(AUTH_OUTCOMES.len() - 1);
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

/// Rewrites prometheus-client's OpenMetrics text into the classic text format 0.0.4. The two share the
/// sample lines; they differ in the metadata:
/// - a counter family is named after its samples in the classic form (`# TYPE x_total counter`, where
///   OpenMetrics says `# TYPE x counter`);
/// - the classic form has no `info` type: the family becomes a gauge named like its one sample (`x_info`);
/// - `# UNIT` lines and the closing `# EOF` do not exist in the classic form;
/// - HELP text escapes only backslash and newline there (OpenMetrics also escapes `"`).
///
/// Sample lines pass unchanged: no series here carries a timestamp, an exemplar or a `_created` sample
/// (which the classic form would read differently), and label values come from fixed tables.
fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            // OpenMetrics puts HELP before TYPE; it is written once the family's classic name is known.
            help = rest.split_once(' ').map(|(_, text)| text);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "gauge" | "histogram" | "summary" => ("", kind),
                _ => ("", "untyped"),
            };
            if let Some(text) = help.take() {
                out.push_str(&format!(
                    "# HELP {name}{suffix} {}\n",
                    text.replace("\\\"", "\"")
                ));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
        } else if !line.starts_with('#') && !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

impl Collector for Series {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "http_requests",
            "HTTP requests answered, by route template, method and status.",
            None,
            MetricType::Counter,
        )?;
        for (r, route) in ROUTES.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for s in 0..STATUSES {
                    let index = (r * METHODS.len() + m) * STATUSES + s;
                    let n = self.requests[index].load(Ordering::Relaxed);
                    if n > 0 {
                        let labels = [
                            ("route", route.label()),
                            ("method", *method),
                            ("status", status_label(s)),
                        ];
                        ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                    }
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "http_request_duration",
            "Time from receiving a request's head to its answer, by route template.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (r, route) in ROUTES.iter().enumerate() {
            let histogram = &self.request_duration[r];
            if histogram.count() > 0 {
                histogram.encode(family.encode_family(&[("route", route.label())])?)?;
            }
        }

        let family = encoder.encode_descriptor(
            "http_requests_in_flight",
            "Requests being answered right now.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.in_flight.load(Ordering::Relaxed)).encode(family)?;

        let mut family = encoder.encode_descriptor(
            "riskshield_attempts",
            "Attempts to call RiskShield /score, by outcome (retries count separately).",
            None,
            MetricType::Counter,
        )?;
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let n = self.upstream_attempts[i].load(Ordering::Relaxed);
            if n > 0 {
                ConstCounter::new(n).encode(family.encode_family(&[("outcome", *outcome)])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "riskshield_attempt_duration",
            "Duration of each attempt to call RiskShield /score, by outcome.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let histogram = &self.upstream_duration[i];
            if histogram.count() > 0 {
                histogram.encode(family.encode_family(&[("outcome", *outcome)])?)?;
            }
        }

        if self.breaker_known.load(Ordering::Relaxed) {
            let family = encoder.encode_descriptor(
                "circuit_breaker_state",
                "The RiskShield circuit breaker: 0 closed, 1 open, 2 half-open.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(self.breaker_state.load(Ordering::Relaxed)).encode(family)?;
            let family = encoder.encode_descriptor(
                "circuit_breaker_transitions",
                "State changes of the RiskShield circuit breaker since start.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(self.breaker_transitions.load(Ordering::Relaxed)).encode(family)?;
        }

        let reads = self
            .vault_reads
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        if !reads.is_empty() {
            let mut family = encoder.encode_descriptor(
                "vault_reads",
                "Key Vault secret reads, by outcome.",
                None,
                MetricType::Counter,
            )?;
            for (outcome, n) in &reads {
                ConstCounter::new(*n).encode(family.encode_family(&[("outcome", *outcome)])?)?;
            }
            let family = encoder.encode_descriptor(
                "vault_read_duration",
                "Duration of Key Vault secret reads.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            self.vault_duration.encode(family)?;
        }
        let age = self.vault_key_age_millis.load(Ordering::Relaxed);
        if age != UNSET {
            let family = encoder.encode_descriptor(
                "vault_key_age",
                "Time since the cached RiskShield API key was read from Key Vault.",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(Duration::from_millis(age).as_secs_f64()).encode(family)?;
        }

        let family = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because standard output could not keep up (one warning line reports each episode).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.log_lines_dropped.load(Ordering::Relaxed)).encode(family)?;

        let clients = self.rate_limit_clients.load(Ordering::Relaxed);
        if clients != UNSET {
            let family = encoder.encode_descriptor(
                "rate_limit_tracked_clients",
                "Client keys the rate limiter holds state for (idle ones are evicted).",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::try_from(clients).unwrap_or(i64::MAX)).encode(family)?;
        }

        if self
            .auth_outcomes
            .iter()
            .any(|n| n.load(Ordering::Relaxed) > 0)
        {
            let mut family = encoder.encode_descriptor(
                "auth_checks",
                "Bearer-token checks of validations (AUTH_MODE=entra), by outcome.",
                None,
                MetricType::Counter,
            )?;
            for (i, outcome) in AUTH_OUTCOMES.iter().enumerate() {
                let n = self.auth_outcomes[i].load(Ordering::Relaxed);
                if n > 0 {
                    ConstCounter::new(n).encode(family.encode_family(&[("outcome", *outcome)])?)?;
                }
            }
        }

        let mut family = encoder.encode_descriptor(
            "build",
            "Build information; the value is always 1.",
            None,
            MetricType::Info,
        )?;
        family.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
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

    #[test]
    fn the_exposition_has_exact_series() {
        let metrics = Metrics::new();
        let get = Method::GET;
        metrics.request(
            Route::Health,
            &get,
            StatusCode::OK,
            Duration::from_millis(2),
        );
        metrics.request(
            Route::Health,
            &get,
            StatusCode::OK,
            Duration::from_millis(3),
        );
        metrics.request(
            Route::Unmatched,
            &Method::from_bytes(b"BREW").expect("token"),
            StatusCode::NOT_FOUND,
            Duration::ZERO,
        );
        metrics.upstream_attempt("timeout", Duration::from_secs(10));
        metrics.vault_read("success", Duration::from_millis(40));
        metrics.vault_read("success", Duration::from_millis(40));
        metrics.set_vault_key_age(Some(Duration::from_millis(1500)));
        metrics.auth_outcome("expired");
        metrics.auth_outcome("invented");
        let _guard = metrics.in_flight();
        let text = metrics.encode_as(Format::OpenMetrics);
        for line in [
            r#"applicant_validator_http_requests_total{route="/health",method="GET",status="200"} 2"#,
            r#"applicant_validator_http_requests_total{route="unmatched",method="OTHER",status="404"} 1"#,
            r#"applicant_validator_http_request_duration_seconds_count{route="/health"} 2"#,
            r#"applicant_validator_http_request_duration_seconds_bucket{le="0.005",route="/health"} 2"#,
            "applicant_validator_http_requests_in_flight 1",
            r#"applicant_validator_riskshield_attempts_total{outcome="timeout"} 1"#,
            r#"applicant_validator_vault_reads_total{outcome="success"} 2"#,
            "applicant_validator_vault_key_age_seconds 1.5",
            r#"applicant_validator_auth_checks_total{outcome="expired"} 1"#,
            r#"applicant_validator_auth_checks_total{outcome="other"} 1"#,
            r#"applicant_validator_build_info{version=""#,
            "# EOF",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        // No breaker and no limiter configured: their series are absent rather than a misleading zero.
        assert!(!text.contains("circuit_breaker"));
        assert!(!text.contains("rate_limit"));
    }

    /// Every series there can be, so that each kind of family reaches the classic rewrite.
    fn every_kind_of_series() -> Metrics {
        let metrics = Metrics::new();
        metrics.request(
            Route::Validate,
            &Method::POST,
            StatusCode::OK,
            Duration::from_millis(7),
        );
        metrics.upstream_attempt("success", Duration::from_millis(5));
        metrics.set_breaker_state(1);
        metrics.set_breaker_transitions(3);
        metrics.vault_read("success", Duration::from_millis(40));
        metrics.set_vault_key_age(Some(Duration::from_secs(2)));
        metrics.set_rate_limit_clients(4);
        metrics
    }

    /// The samples of an exposition as (name, labels, value) lines, metadata and `# EOF` left out.
    fn samples(text: &str) -> Vec<&str> {
        let mut lines: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .collect();
        lines.sort_unstable();
        lines
    }

    #[test]
    fn the_classic_form_follows_the_0_0_4_rules() {
        let text = every_kind_of_series().encode_as(Format::Classic);
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        // Each family: HELP then TYPE under the same name, then only samples that belong to it (the name
        // itself, or the histogram's _bucket/_sum/_count), and every family name is new.
        let mut families = std::collections::BTreeSet::new();
        let mut current: Option<(String, String)> = None;
        let mut help: Option<String> = None;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, _) = rest.split_once(' ').expect("HELP name and text");
                help = Some(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name and type");
                assert_eq!(help.take().as_deref(), Some(name), "HELP before TYPE");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "{line}");
                } else {
                    assert!(!name.ends_with("_total"), "{line}");
                }
                assert!(families.insert(name.to_owned()), "{name} twice");
                current = Some((name.to_owned(), kind.to_owned()));
            } else {
                let (family, kind) = current.as_ref().expect("a sample after its TYPE");
                let name = line.split(['{', ' ']).next().expect("a sample name");
                let belongs = name == family
                    || (kind == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name.strip_suffix(s) == Some(family.as_str())));
                assert!(belongs, "{line} outside {family} ({kind})");
                let value = line.rsplit(' ').next().expect("a value");
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
        for family in [
            "applicant_validator_http_requests_total",
            "applicant_validator_http_request_duration_seconds",
            "applicant_validator_http_requests_in_flight",
            "applicant_validator_riskshield_attempts_total",
            "applicant_validator_riskshield_attempt_duration_seconds",
            "applicant_validator_circuit_breaker_state",
            "applicant_validator_circuit_breaker_transitions_total",
            "applicant_validator_vault_reads_total",
            "applicant_validator_vault_read_duration_seconds",
            "applicant_validator_vault_key_age_seconds",
            "applicant_validator_rate_limit_tracked_clients",
            "applicant_validator_build_info",
        ] {
            assert!(families.contains(family), "no {family} in\n{text}");
        }
        assert!(text.contains("# TYPE applicant_validator_build_info gauge\n"));
    }

    #[test]
    fn both_forms_carry_the_same_samples() {
        let metrics = every_kind_of_series();
        let openmetrics = metrics.encode_as(Format::OpenMetrics);
        let classic = metrics.encode_as(Format::Classic);
        assert!(openmetrics.ends_with("# EOF\n"));
        assert_eq!(samples(&openmetrics), samples(&classic));
        assert!(samples(&classic).len() > 40, "{classic}");
    }

    #[test]
    fn classic_help_unescapes_only_quotes() {
        let om = "# HELP a_b Says \\\"hi\\\" \\\\ here.\n# TYPE a_b gauge\na_b 1\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP a_b Says \"hi\" \\\\ here.\n# TYPE a_b gauge\na_b 1\n"
        );
    }

    #[test]
    fn negotiation_follows_prometheus() {
        let n = |accept: &str| Format::negotiate(Some(accept));
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(n(""), Format::Classic);
        assert_eq!(n("*/*"), Format::Classic);
        assert_eq!(n("text/plain"), Format::Classic);
        assert_eq!(n("text/plain; version=0.0.4"), Format::Classic);
        assert_eq!(n("application/openmetrics-text"), Format::OpenMetrics);
        // What Prometheus 2.x and 3.x send.
        assert_eq!(
            n(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Format::OpenMetrics
        );
        assert_eq!(
            n(
                "application/openmetrics-text; version=0.0.1,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Format::OpenMetrics
        );
        // q-values decide, not the order; a tie goes to the first.
        assert_eq!(
            n("application/openmetrics-text;q=0.3, text/plain;q=0.5"),
            Format::Classic
        );
        assert_eq!(
            n("text/plain;q=0.5, Application/OpenMetrics-Text;q=0.9"),
            Format::OpenMetrics
        );
        assert_eq!(
            n("text/plain, application/openmetrics-text"),
            Format::Classic
        );
        // Refused or unknown versions do not count.
        assert_eq!(n("application/openmetrics-text;q=0"), Format::Classic);
        assert_eq!(n("application/openmetrics-text;q=x"), Format::Classic);
        assert_eq!(
            n("application/openmetrics-text;version=2.0.0"),
            Format::Classic
        );
        assert_eq!(
            n("text/plain;version=1.0.0, application/openmetrics-text;q=0.1"),
            Format::OpenMetrics
        );
    }
}
