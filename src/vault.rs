//! Azure Key Vault key source (placeholder until the vault integration lands).

use crate::config::ApiKey;

/// Reads the API key from Azure Key Vault in the background.
#[derive(Debug, Default)]
pub struct VaultKeySource {}

impl VaultKeySource {
    /// The cached key, if any.
    pub fn current(&self) -> Option<ApiKey> {
        None
    }

    /// Time since the cached key was read.
    pub fn key_age(&self) -> Option<std::time::Duration> {
        None
    }

    /// Forces a re-read after the upstream refused `rejected`.
    pub async fn refresh_after_rejection(&self, _rejected: &ApiKey) -> Option<ApiKey> {
        None
    }
}
