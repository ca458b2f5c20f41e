//! What produces scores for the HTTP layer: the demo scorer, or RiskShield through the resilient client.
//!
//! The HTTP layer only sees [`Scorer`] and its per-worker [`WorkerScorer`], so demo mode and the real vendor share one
//! code path above this line.

use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use crate::domain::{Applicant, Score, demo_score};
use crate::error::UpstreamError;
use crate::riskshield::{Pool, RiskShieldClient};

/// What produces scores for the HTTP layer, shared by every worker thread.
#[derive(Clone, Debug)]
pub enum Scorer {
    Demo,
    RiskShield(Arc<RiskShieldClient>),
}

impl Scorer {
    /// A worker_scorer for one worker thread: the shared scorer with that worker's own upstream connections.
    pub fn for_worker(&self) -> WorkerScorer {
        match self {
            Scorer::Demo => WorkerScorer::Demo,
            Scorer::RiskShield(client) => WorkerScorer::RiskShield {
                pool: client.pool(),
                client: client.clone(),
            },
        }
    }
}

/// One worker's way to scores: the process-wide client (breaker, key, readiness) and the worker's own
/// connection pool, so a request and its upstream exchange stay on the worker's thread.
#[derive(Debug)]
pub enum WorkerScorer {
    Demo,
    RiskShield {
        client: Arc<RiskShieldClient>,
        pool: Pool,
    },
}

impl WorkerScorer {
    /// Scores `applicant`; the upstream call never runs past `deadline`.
    pub async fn score(
        &self,
        applicant: &Applicant,
        correlation_id: &HeaderValue,
        deadline: Instant,
    ) -> Result<Score, UpstreamError> {
        match self {
            WorkerScorer::Demo => Ok(demo_score(&applicant.id_number)),
            WorkerScorer::RiskShield { client, pool } => {
                client
                    .score(pool, applicant, correlation_id, deadline)
                    .await
            }
        }
    }
}
