//! The service's own vocabulary: an applicant, a risk score and level, and the vendor API key.
//!
//! This module sits at the bottom of the crate and imports nothing from it, so every other layer can speak
//! these types without pulling in HTTP, configuration or the vendor client.

use std::fmt;
use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// A validated applicant; names are trimmed, as they are sent upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applicant {
    pub first_name: String,
    pub last_name: String,
    pub id_number: String,
}

/// RiskShield's four levels. Deserialisation is case-sensitive, as the vendor documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RiskLevel {
    #[serde(rename = "LOW")]
    Low,
    #[serde(rename = "MEDIUM")]
    Medium,
    #[serde(rename = "HIGH")]
    High,
    #[serde(rename = "CRITICAL")]
    Critical,
}

impl RiskLevel {
    /// The level's name, as the vendor and the API spell it (the same as its serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLevel::Low => "LOW",
            RiskLevel::Medium => "MEDIUM",
            RiskLevel::High => "HIGH",
            RiskLevel::Critical => "CRITICAL",
        }
    }

    /// The level demo mode gives a score: LOW ≤ 25 < MEDIUM ≤ 50 < HIGH ≤ 75 < CRITICAL.
    pub fn for_score(score: u8) -> Self {
        match score {
            0..=25 => RiskLevel::Low,
            26..=50 => RiskLevel::Medium,
            51..=75 => RiskLevel::High,
            _ => RiskLevel::Critical,
        }
    }
}

/// A risk assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score {
    pub risk_score: u8,
    pub risk_level: RiskLevel,
}

/// Demo scoring: deterministic, no network. Score = sum of the ID number's digits mod 101.
pub fn demo_score(id_number: &str) -> Score {
    let sum: u32 = id_number
        .bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| u32::from(b - b'0'))
        .sum();
    // The sum of 13 digits is at most 117, so the remainder always fits in a u8.
    let risk_score = u8::try_from(sum % 101).unwrap_or(100);
    Score {
        risk_score,
        risk_level: RiskLevel::for_score(risk_score),
    }
}

/// The correlation header, on every response and every upstream call.
pub static X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

/// The vendor API key. Its `Debug` never shows the value, so it cannot leak through a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    value: Arc<str>,
    /// The value as the header that carries it (marked sensitive), made once per key rather than once per
    /// request: building and checking a header value on every call showed in the request path's profile.
    /// `None` when the value cannot be a header value.
    header: Option<HeaderValue>,
}

impl ApiKey {
    /// Wraps a key read from the environment or the vault.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        let value = value.into();
        let header = HeaderValue::from_str(&value).ok().map(|mut header| {
            header.set_sensitive(true);
            header
        });
        Self { value, header }
    }

    /// Checks that `value` can be sent as a header value: visible ASCII (0x21–0x7E), at least one character.
    /// The error never repeats the value.
    pub fn parse(value: &str) -> Result<Self, &'static str> {
        if value.is_empty() {
            return Err("the key is empty");
        }
        if !value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(
                "the key must be visible ASCII (no spaces, control or non-ASCII characters) to be sent as a header",
            );
        }
        Ok(Self::new(value))
    }

    /// The key itself.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The key as the one header that carries it, or `None` if it cannot be sent as one.
    pub fn header(&self) -> Option<&HeaderValue> {
        self.header.as_ref()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_scores_follow_the_digit_sum() {
        assert_eq!(
            demo_score("9001011234088"),
            Score {
                risk_score: 37,
                risk_level: RiskLevel::Medium
            }
        );
        assert_eq!(
            demo_score("0000000000000"),
            Score {
                risk_score: 0,
                risk_level: RiskLevel::Low
            }
        );
        assert_eq!(
            demo_score("9999999999999"),
            Score {
                risk_score: 16,
                risk_level: RiskLevel::Low
            }
        );
        assert_eq!(demo_score("9999999999990").risk_score, 108 % 101);
    }

    #[test]
    fn level_boundaries() {
        assert_eq!(RiskLevel::for_score(25), RiskLevel::Low);
        assert_eq!(RiskLevel::for_score(26), RiskLevel::Medium);
        assert_eq!(RiskLevel::for_score(50), RiskLevel::Medium);
        assert_eq!(RiskLevel::for_score(51), RiskLevel::High);
        assert_eq!(RiskLevel::for_score(75), RiskLevel::High);
        assert_eq!(RiskLevel::for_score(76), RiskLevel::Critical);
        assert_eq!(RiskLevel::for_score(100), RiskLevel::Critical);
    }

    #[test]
    fn keys_must_be_header_values_and_errors_never_repeat_them() {
        assert_eq!(
            ApiKey::parse("abc-123_XYZ").map(|k| k.expose().to_owned()),
            Ok("abc-123_XYZ".into())
        );
        for bad in ["", "has space", "tab\there", "new\nline", "naïve", "\u{7f}"] {
            let error = ApiKey::parse(bad).expect_err(bad);
            assert!(bad.is_empty() || !error.contains(bad), "{error}");
        }
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        assert_eq!(format!("{:?}", ApiKey::new("s3cret")), "ApiKey(***)");
    }
}
