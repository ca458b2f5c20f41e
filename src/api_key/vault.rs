//! The way into Azure Key Vault with the process's Managed (or Workload) Identity, through the Azure SDK.
//!
//! [`VaultAccess`] holds the identity chosen from the environment, its credential and a SecretClient on the
//! shared outbound client, and reads the secret once with the checks the service applies. The service's
//! background reader ([`super::cache`]) and `diagnose` both read through it, so both take exactly the same
//! path. The SDK's errors are sorted once into [`ReadError`], whose variants name what an operator should
//! check; a read reports what it found as [`SecretInfo`], never with the value.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::error::ErrorKind;
use azure_core::http::{StatusCode, Url};
use azure_core::time::OffsetDateTime;
use azure_security_keyvault_secrets::{ResourceExt, SecretClient, SecretClientOptions};

use super::identity::Identity;
use super::transport;
use crate::config::is_loopback_host;
use crate::domain::ApiKey;
use crate::outbound::{HttpClient, error_text};

/// Upper bound for one vault read, token acquisition and SDK retries included. The SDK's own budget is
/// shorter (see [`transport::client_options`]); this also covers IMDS, whose credential imposes its own
/// long retry schedule.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a vault read failed. The variants map to fixed metric labels and to what an operator should check.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("the secret does not exist in the vault (404)")]
    NotFound,
    #[error("the identity may not read the secret (403); it needs the Key Vault Secrets User role")]
    Forbidden,
    #[error("the vault refused the identity's token (401)")]
    Unauthorized,
    #[error("no token from the managed identity: {0}")]
    Credential(String),
    #[error("the vault or the identity endpoint is unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {} s", READ_TIMEOUT.as_secs())]
    Timeout,
    #[error("the vault answered HTTP {status}: {message}")]
    Http { status: u16, message: String },
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{0}")]
    Other(String),
}

impl ReadError {
    /// The fixed metric and log label of this failure.
    pub fn outcome(&self) -> &'static str {
        match self {
            ReadError::NotFound => "not_found",
            ReadError::Forbidden => "forbidden",
            ReadError::Unauthorized => "unauthorized",
            ReadError::Credential(_) => "credential_error",
            ReadError::Unreachable(_) => "unreachable",
            ReadError::Timeout => "timeout",
            ReadError::Http { .. } => "http_error",
            ReadError::Invalid(_) => "invalid_secret",
            ReadError::Other(_) => "error",
        }
    }

    /// Sorts an SDK error by what went wrong. Deserialisation errors are not quoted: serde's messages can echo
    /// parts of the document, which here is the secret.
    fn from_sdk(error: &azure_core::Error) -> Self {
        match error.kind() {
            ErrorKind::Credential => ReadError::Credential(error_text(error)),
            ErrorKind::HttpResponse { status, .. } => match *status {
                StatusCode::NotFound => ReadError::NotFound,
                StatusCode::Forbidden => ReadError::Forbidden,
                StatusCode::Unauthorized => ReadError::Unauthorized,
                other => ReadError::Http {
                    status: u16::from(other),
                    message: error_text(error),
                },
            },
            ErrorKind::Connection | ErrorKind::Io => ReadError::Unreachable(error_text(error)),
            ErrorKind::DataConversion => ReadError::Invalid("the vault's answer is not a secret"),
            _ => ReadError::Other(error_text(error)),
        }
    }
}

/// The scope of a token for Key Vault, the one the vault's challenge names.
pub const VAULT_SCOPE: &str = "https://vault.azure.net/.default";

/// The way into one vault: the identity chosen from the environment, its credential, and a SecretClient on the
/// shared outbound client. The service builds one for its background reads; `diagnose` builds one to run a
/// single read, so both take exactly the same path.
pub struct VaultAccess {
    vault_host: String,
    identity: Identity,
    credential: Arc<dyn TokenCredential>,
    verify_challenge_resource: bool,
    client: SecretClient,
}

impl fmt::Debug for VaultAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultAccess")
            .field("vault_host", &self.vault_host)
            .field("identity", &self.identity.describe())
            .finish_non_exhaustive()
    }
}

/// What one read found, without the value: safe to print.
#[derive(Debug, Clone)]
pub struct SecretInfo {
    pub name: String,
    /// The version the vault served (the last segment of the secret's id).
    pub version: Option<String>,
    /// When the secret was last changed, as the vault records it.
    pub updated: Option<OffsetDateTime>,
    /// Characters in the value as the service uses it (surrounding whitespace trimmed).
    pub value_chars: usize,
}

/// Why the vault could not be set up: configuration the service was given (exit 64 at startup).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("KEY_VAULT_URL: {0}")]
    Url(String),
    #[error("Azure identity ({identity}): {detail}")]
    Identity {
        identity: &'static str,
        detail: String,
    },
}

impl VaultAccess {
    /// Builds the credential (`lookup` reads the identity variables; the SDK reads the endpoint variables from
    /// the process environment itself) and the SecretClient.
    pub fn new(
        vault_url: &str,
        http: &HttpClient,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, AccessError> {
        let url = Url::parse(vault_url).map_err(|e| AccessError::Url(e.to_string()))?;
        let vault_host = url
            .host_str()
            .ok_or_else(|| AccessError::Url("no host".into()))?
            .to_owned();
        let identity = Identity::from_lookup(lookup);
        let credential = identity
            .credential(transport::client_options(http))
            .map_err(|e| AccessError::Identity {
                identity: identity.describe(),
                detail: error_text(&e),
            })?;
        // The challenge names the resource the token is for; checking it against the vault's domain stops a
        // spoofed vault from obtaining a token for another resource. A loopback vault is a local test double
        // whose host can never be a subdomain of vault.azure.net, so the check is off only there.
        let verify_challenge_resource = !is_loopback_host(&vault_host);
        let client = SecretClient::new(
            url.as_str(),
            credential.clone(),
            Some(SecretClientOptions {
                client_options: transport::client_options(http),
                verify_challenge_resource: Some(verify_challenge_resource),
                ..Default::default()
            }),
        )
        .map_err(|e| AccessError::Url(error_text(&e)))?;
        Ok(Self {
            vault_host,
            identity,
            credential,
            verify_challenge_resource,
            client,
        })
    }

    /// The vault's host name.
    pub fn vault_host(&self) -> &str {
        &self.vault_host
    }

    /// The identity the credential authenticates as.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Whether the SDK checks that the vault's challenge names a Key Vault resource (off only for a loopback
    /// test vault), for the startup log line.
    pub fn verify_challenge_resource(&self) -> bool {
        self.verify_challenge_resource
    }

    /// Asks the credential for a Key Vault token and returns only when it expires. The credential caches the
    /// token, so a read right after this one reuses it.
    pub async fn token_expiry(&self) -> Result<OffsetDateTime, ReadError> {
        self.credential
            .get_token(&[VAULT_SCOPE], None)
            .await
            .map(|token| token.expires_on)
            .map_err(|e| ReadError::from_sdk(&e))
    }

    /// Reads the secret once, with the checks the service applies, and describes it without its value.
    pub async fn read_once(&self, secret_name: &str) -> Result<SecretInfo, ReadError> {
        self.read(secret_name).await.map(|(_, info)| info)
    }

    /// One read: the key, and what to say about it. Boxed so that the service's reader and `diagnose` share
    /// one copy of the SDK's request code instead of each inlining its own.
    pub(super) fn read<'a>(&'a self, secret_name: &'a str) -> Reading<'a> {
        Box::pin(self.read_inner(secret_name))
    }

    async fn read_inner(&self, secret_name: &str) -> Result<(ApiKey, SecretInfo), ReadError> {
        let response = self
            .client
            .get_secret(secret_name, None)
            .await
            .map_err(|e| ReadError::from_sdk(&e))?;
        let secret = response
            .into_model()
            .map_err(|_| ReadError::Invalid("the vault's answer is not a secret"))?;
        let info = SecretInfo {
            name: secret_name.to_owned(),
            version: secret.resource_id().ok().and_then(|id| id.version),
            updated: secret.attributes.as_ref().and_then(|a| a.updated),
            value_chars: secret
                .value
                .as_deref()
                .map_or(0, |v| v.trim().chars().count()),
        };
        match secret.value {
            // A value that cannot be sent as a header would make every validation fail: refuse it here, so
            // /ready stays false and the last good key (if any) keeps serving.
            Some(value) if !value.trim().is_empty() => ApiKey::parse(value.trim())
                .map(|key| (key, info))
                .map_err(ReadError::Invalid),
            _ => Err(ReadError::Invalid("the secret is empty")),
        }
    }
}

/// A read in flight: the key, and what to say about it.
pub(super) type Reading<'a> =
    std::pin::Pin<Box<dyn Future<Output = Result<(ApiKey, SecretInfo), ReadError>> + Send + 'a>>;
