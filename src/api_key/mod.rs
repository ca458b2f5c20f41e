//! Where the RiskShield API key comes from: a fixed key from the environment, or Azure Key Vault.
//!
//! The HTTP layer and the upstream client only see [`KeySource`]: they ask for the current key (never
//! waiting for the vault) and, when the upstream refuses a key with 401/403, ask for a re-read. That keeps the
//! vault's background refresh, caching and single-flight re-reads out of the request path.
//!
//! Inside: [`cache`] (the secret read in the background, cached, refreshed), [`vault`] (one read through the
//! Azure SDK, and its errors), [`identity`] (which Azure credential), and [`transport`] (the Azure SDK on the
//! service's own HTTP client).

pub mod cache;
pub mod identity;
pub mod transport;
pub mod vault;

use std::sync::Arc;

use crate::domain::ApiKey;
use cache::VaultKeySource;

/// The process-wide source of the API key. Cloning is cheap.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// RISKSHIELD_API_KEY: nothing to re-read.
    Static(ApiKey),
    /// KEY_VAULT_URL: read in the background, cached, refreshed.
    Vault(Arc<VaultKeySource>),
}

impl KeySource {
    /// The key to use now, or `None` while the vault has not delivered one yet. Never waits for the vault.
    pub fn current(&self) -> Option<ApiKey> {
        match self {
            KeySource::Static(key) => Some(key.clone()),
            KeySource::Vault(vault) => vault.current(),
        }
    }

    /// Called after the upstream refused `rejected`: re-reads the secret and returns the key to retry with, or
    /// `None` when there is nothing new to try (a fixed key, a failed read, or the same key again).
    /// `correlation_id` ties the vault read's log line to the request that triggered it.
    pub async fn refresh_after_rejection(
        &self,
        rejected: &ApiKey,
        correlation_id: &str,
    ) -> Option<ApiKey> {
        match self {
            KeySource::Static(_) => None,
            KeySource::Vault(vault) => {
                vault
                    .refresh_after_rejection(rejected, correlation_id)
                    .await
            }
        }
    }

    /// How long ago the cached vault key was read (`None` for a fixed key or before the first read).
    pub fn key_age(&self) -> Option<std::time::Duration> {
        match self {
            KeySource::Static(_) => None,
            KeySource::Vault(vault) => vault.key_age(),
        }
    }

    /// The `key_vault` readiness check: `None` when no vault is configured (the check is not shown).
    pub fn vault_ready(&self) -> Option<bool> {
        match self {
            KeySource::Static(_) => None,
            KeySource::Vault(vault) => Some(vault.current().is_some()),
        }
    }
}
