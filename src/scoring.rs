//! Scores an applicant: the demo scorer, or RiskShield through the resilient client.
//!
//! The HTTP layer only sees [`Scorer`], so demo mode and the real vendor share one code path above this line.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::UpstreamError;
use crate::upstream::RiskShieldClient;
use crate::validation::Applicant;

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

/// What produces scores for the HTTP layer.
#[derive(Clone, Debug)]
pub enum Scorer {
    Demo,
    RiskShield(Arc<RiskShieldClient>),
}

impl Scorer {
    /// Scores `applicant`; the upstream call never runs past `deadline`.
    pub async fn score(
        &self,
        applicant: &Applicant,
        correlation_id: &str,
        deadline: Instant,
    ) -> Result<Score, UpstreamError> {
        match self {
            Scorer::Demo => Ok(demo_score(&applicant.id_number)),
            Scorer::RiskShield(client) => client.score(applicant, correlation_id, deadline).await,
        }
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
}
