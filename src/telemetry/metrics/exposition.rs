//! What a scrape reads: [`Format`], the negotiation between the two text formats, the collector that
//! walks [`Series`] and hands each non-zero series to prometheus-client's encoder, and [`to_classic`],
//! which rewrites that encoder's OpenMetrics text into the classic format.
//!
//! Families are written in a fixed order (HTTP, RiskShield, vault, logging, rate limiting, auth, build),
//! one small function per group, so the exposition reads the same from scrape to scrape.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use super::series::{
    AUTH_OUTCOMES, AtomicHistogram, METHODS, OUTCOMES, ROUTES, STATUSES, Series, UNSET,
    request_index, status_label,
};

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
pub(super) fn to_classic(openmetrics: &str) -> String {
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

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for Series {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_http(&mut encoder)?;
        self.encode_riskshield(&mut encoder)?;
        self.encode_vault(&mut encoder)?;
        self.encode_log_lines_dropped(&mut encoder)?;
        self.encode_rate_limit(&mut encoder)?;
        self.encode_auth(&mut encoder)?;
        encode_build(&mut encoder)
    }
}

/// One counter sample per outcome that happened, labelled with its name from `outcomes`; `counts` is
/// indexed like `outcomes`.
fn encode_outcome_counters(
    family: &mut MetricEncoder,
    outcomes: &[&'static str],
    counts: &[AtomicU64],
) -> Result<(), fmt::Error> {
    for (outcome, count) in outcomes.iter().zip(counts) {
        let n = count.load(Ordering::Relaxed);
        if n > 0 {
            ConstCounter::new(n).encode(family.encode_family(&[("outcome", *outcome)])?)?;
        }
    }
    Ok(())
}

/// The build's version, as an info family; the same in every scrape.
fn encode_build(encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "build",
        "Build information; the value is always 1.",
        None,
        MetricType::Info,
    )?;
    family.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])
}

impl Series {
    /// Requests by route, method and status; their durations by route; the requests in flight.
    fn encode_http(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "http_requests",
            "HTTP requests answered, by route template, method and status.",
            None,
            MetricType::Counter,
        )?;
        for (r, route) in ROUTES.iter().enumerate() {
            for (m, method) in METHODS.iter().enumerate() {
                for s in 0..STATUSES {
                    let n = self.requests[request_index(r, m, s)].load(Ordering::Relaxed);
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
        ConstGauge::new(self.in_flight.load(Ordering::Relaxed)).encode(family)
    }

    /// Attempts to call RiskShield and their durations by outcome, then the breaker once there is one.
    fn encode_riskshield(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "riskshield_attempts",
            "Attempts to call RiskShield /score, by outcome (retries count separately).",
            None,
            MetricType::Counter,
        )?;
        encode_outcome_counters(&mut family, &OUTCOMES, &self.upstream_attempts)?;
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

        if !self.breaker_known.load(Ordering::Relaxed) {
            return Ok(());
        }
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
        ConstCounter::new(self.breaker_transitions.load(Ordering::Relaxed)).encode(family)
    }

    /// Key Vault reads by outcome and their duration once there was one; the cached key's age once known.
    fn encode_vault(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
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
        Ok(())
    }

    /// Always present, so an alert on it has a series to watch from the first scrape.
    fn encode_log_lines_dropped(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let family = encoder.encode_descriptor(
            "log_lines_dropped",
            "Log lines dropped because standard output could not keep up (one warning line reports each episode).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.log_lines_dropped.load(Ordering::Relaxed)).encode(family)
    }

    /// The rate limiter's tracked clients, only when limiting is on.
    fn encode_rate_limit(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let clients = self.rate_limit_clients.load(Ordering::Relaxed);
        if clients == UNSET {
            return Ok(());
        }
        let family = encoder.encode_descriptor(
            "rate_limit_tracked_clients",
            "Client keys the rate limiter holds state for (idle ones are evicted).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::try_from(clients).unwrap_or(i64::MAX)).encode(family)
    }

    /// Bearer-token checks by outcome, once there was one (none unless AUTH_MODE=entra).
    fn encode_auth(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        if self
            .auth_outcomes
            .iter()
            .all(|n| n.load(Ordering::Relaxed) == 0)
        {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "auth_checks",
            "Bearer-token checks of validations (AUTH_MODE=entra), by outcome.",
            None,
            MetricType::Counter,
        )?;
        encode_outcome_counters(&mut family, &AUTH_OUTCOMES, &self.auth_outcomes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{Method, StatusCode};

    use super::*;
    use crate::routes::Route;
    use crate::telemetry::metrics::Metrics;

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
