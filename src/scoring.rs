//! What produces scores for the HTTP layer: the demo scorer, or RiskShield through the resilient client.
//!
//! The HTTP layer only sees [`Scorer`] and its per-worker [`WorkerScorer`], so demo mode and the real vendor
//! share one code path above this line: the scorer scores, answers its part of readiness and copies its own
//! gauges into the metrics, and nothing above reaches into the RiskShield client.

use std::sync::Arc;

use http::HeaderValue;
use tokio::time::Instant;

use crate::domain::{Applicant, Score, demo_score};
use crate::error::UpstreamError;
use crate::riskshield::{Pool, RiskShieldClient};
use crate::telemetry::metrics::Metrics;
use crate::trace::TraceContext;

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

    /// The scorer's readiness checks, named as /ready shows them and in the order it shows them: for
    /// RiskShield, `key_vault` when the key comes from Key Vault (a key has been read), then `riskshield_api`
    /// (the breaker is not open and the host accepted a TCP connection at the last probe). The demo scorer
    /// needs nothing, so it has no checks.
    pub async fn readiness(&self) -> Vec<(&'static str, bool)> {
        let Scorer::RiskShield(client) = self else {
            return Vec::new();
        };
        let mut checks = Vec::with_capacity(2);
        if let Some(vault) = client.keys().vault_ready() {
            checks.push(("key_vault", vault));
        }
        checks.push(("riskshield_api", client.ready().await));
        checks
    }

    /// Copies the scorer's own state into `metrics` at scrape time: the breaker's state and transitions and
    /// the vault key's age. The demo scorer has none, so those series stay absent rather than a misleading
    /// zero.
    pub fn record_gauges(&self, metrics: &Metrics) {
        if let Scorer::RiskShield(client) = self {
            metrics.set_breaker_state(client.breaker().state().code());
            metrics.set_breaker_transitions(client.breaker().transitions());
            metrics.set_vault_key_age(client.keys().key_age());
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
    /// Scores `applicant`; the upstream call never runs past `deadline`. The correlation id and the trace go
    /// with every attempt to the vendor.
    pub async fn score(
        &self,
        applicant: &Applicant,
        correlation_id: &HeaderValue,
        trace: &TraceContext,
        deadline: Instant,
    ) -> Result<Score, UpstreamError> {
        match self {
            WorkerScorer::Demo => Ok(demo_score(&applicant.id_number)),
            WorkerScorer::RiskShield { client, pool } => {
                client
                    .score(pool, applicant, correlation_id, trace, deadline)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::Format;

    #[tokio::test]
    async fn the_demo_scorer_has_no_checks_and_no_gauges() {
        assert!(Scorer::Demo.readiness().await.is_empty());
        let metrics = Metrics::new();
        Scorer::Demo.record_gauges(&metrics);
        let text = metrics.encode_as(Format::OpenMetrics);
        assert!(!text.contains("circuit_breaker"), "{text}");
        assert!(!text.contains("vault_key_age"), "{text}");
    }
}
