//! The report `diagnose` prints: one row per check ([`Check`], with its [`Status`]) and the verdict
//! ([`Report`]), rendered as an aligned table for a terminal or as one JSON line for `--json`.
//!
//! A row is made in one of two ways: a check's work run against the `--timeout` and timed, or a skip with its
//! reason. The words that details share live here too (a URL with its user-info masked, a time span in the
//! unit an operator reads best), so every row says them the same way and none prints a secret.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub duration_ms: u64,
    pub detail: String,
}

/// Every check, in the order run, and whether none failed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub ok: bool,
}

impl Report {
    pub(super) fn new(checks: Vec<Check>) -> Self {
        let ok = checks.iter().all(|c| c.status != Status::Fail);
        Self { checks, ok }
    }

    /// `{"checks":[{"name","status","duration_ms","detail"}],"ok":bool}` on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"checks":[],"ok":false}"#.into())
    }

    /// One aligned row per check and a closing verdict, for a terminal.
    pub fn table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max("CHECK".len());
        let mut out = format!("{:width$}  STATUS  {:>8}  DETAIL\n", "CHECK", "TIME");
        for check in &self.checks {
            let _ = writeln!(
                out,
                "{:width$}  {:6}  {:>5} ms  {}",
                check.name,
                check.status.as_str(),
                check.duration_ms,
                check.detail
            );
        }
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        if failed.is_empty() {
            out.push_str("\nno check failed\n");
        } else {
            let _ = writeln!(out, "\nfailed: {}", failed.join(", "));
        }
        out
    }
}

/// A URL as safe to print: any user-info (`user:password@`) is masked.
pub(super) fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[end..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// The row of a check that did not run, with the reason in its detail.
pub(super) fn skip(name: &str, reason: &str) -> Check {
    Check {
        name: name.into(),
        status: Status::Skip,
        duration_ms: 0,
        detail: reason.into(),
    }
}

/// A check's work: the detail on success or failure. Boxed so that one `timed` serves every check.
pub(super) type Work<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + 'a>>;

/// Runs `work` within `timeout` and times it.
pub(super) async fn timed(name: String, timeout: Duration, work: Work<'_>) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, work).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, detail) = match outcome {
        Ok(Ok(detail)) => (Status::Ok, detail),
        Ok(Err(detail)) => (Status::Fail, detail),
        Err(_) => (
            Status::Fail,
            format!(
                "no answer within {} (--timeout)",
                humantime::format_duration(timeout)
            ),
        ),
    };
    Check {
        name,
        status,
        duration_ms,
        detail,
    }
}

/// Unix seconds now.
pub(super) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A time span in the unit an operator reads best.
pub(super) fn span(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "already passed".into(),
        s if s >= 2 * 86_400 => format!("in {} days", s / 86_400),
        s if s >= 2 * 3600 => format!("in {} h", s / 3600),
        s => format!("in {} min", s / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_in_a_url_is_masked() {
        assert_eq!(
            shown_url("https://user:pw@rs.example/v1"),
            "https://***@rs.example/v1"
        );
        assert_eq!(shown_url("https://rs.example/v1"), "https://rs.example/v1");
        assert_eq!(
            shown_url("https://rs.example/a@b"),
            "https://rs.example/a@b"
        );
    }

    #[test]
    fn a_failed_check_makes_the_report_fail() {
        let row = |status| Check {
            name: "x".into(),
            status,
            duration_ms: 1,
            detail: "d".into(),
        };
        assert!(Report::new(vec![row(Status::Ok), row(Status::Skip)]).ok);
        let report = Report::new(vec![row(Status::Ok), row(Status::Fail)]);
        assert!(!report.ok);
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json()).expect("the report is JSON");
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][1]["status"], "fail");
        assert!(report.table().contains("failed: x"));
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(30 * 86_400), "in 30 days");
        assert_eq!(span(5 * 3600), "in 5 h");
        assert_eq!(span(59 * 60), "in 59 min");
        assert_eq!(span(-1), "already passed");
    }
}
