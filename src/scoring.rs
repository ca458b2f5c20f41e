//! What produces scores for the HTTP layer: the demo scorer, or RiskShield through the resilient client.
//!
//! The HTTP layer only sees [`Scorer`], so demo mode and the real vendor share one code path above this line.

use std::sync::Arc;

use tokio::time::Instant;

use crate::domain::{Applicant, Score, demo_score};
use crate::error::UpstreamError;
use crate::upstream::RiskShieldClient;

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
