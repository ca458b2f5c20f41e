//! Which Azure identity the process authenticates as, chosen from the environment the platform sets.
//!
//! The SDK reads the endpoint variables itself; this module only decides between Workload Identity and
//! Managed Identity (system- or user-assigned) so that the choice can be logged and tested.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::ClientOptions;
use azure_identity::{
    ClientAssertionCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};

/// Which identity the SDK authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// AKS Workload Identity: AZURE_FEDERATED_TOKEN_FILE, AZURE_CLIENT_ID and AZURE_TENANT_ID are all set.
    Workload,
    /// Managed Identity (IDENTITY_ENDPOINT + IDENTITY_HEADER, or IMDS); a client id selects a user-assigned one.
    Managed { client_id: Option<String> },
}

impl Identity {
    /// Picks the identity from the environment (`lookup` maps a variable name to its value). Empty values
    /// count as unset, as they do in the SDK.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        if set("AZURE_FEDERATED_TOKEN_FILE").is_some()
            && set("AZURE_CLIENT_ID").is_some()
            && set("AZURE_TENANT_ID").is_some()
        {
            Identity::Workload
        } else {
            Identity::Managed {
                client_id: set("AZURE_CLIENT_ID"),
            }
        }
    }

    /// The SDK credential; the SDK itself reads the endpoint variables.
    pub fn credential(
        &self,
        options: ClientOptions,
    ) -> azure_core::Result<Arc<dyn TokenCredential>> {
        Ok(match self {
            Identity::Workload => {
                WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                    credential_options: ClientAssertionCredentialOptions {
                        client_options: options,
                    },
                    ..Default::default()
                }))?
            }
            Identity::Managed { client_id } => {
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    client_options: options,
                }))?
            }
        })
    }

    /// How the identity is named in logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Identity::Workload => "workload identity",
            Identity::Managed { client_id: None } => "system-assigned managed identity",
            Identity::Managed { client_id: Some(_) } => "user-assigned managed identity",
        }
    }

    /// Where the SDK will ask for tokens, chosen by the same variables and in the same order as azure_identity
    /// does, so that `diagnose` probes the endpoint the service really uses.
    pub fn token_endpoint(&self, lookup: impl Fn(&str) -> Option<String>) -> TokenEndpoint {
        let set = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let (url, via) = match self {
            Identity::Workload => (
                set("AZURE_AUTHORITY_HOST")
                    .unwrap_or_else(|| "https://login.microsoftonline.com".into()),
                "Microsoft Entra ID (AZURE_AUTHORITY_HOST) with the federated token file",
            ),
            Identity::Managed { .. } => match (
                set("IDENTITY_ENDPOINT"),
                set("IDENTITY_HEADER"),
                set("MSI_ENDPOINT"),
            ) {
                (Some(url), Some(_), _) => (
                    url,
                    "the managed identity endpoint (IDENTITY_ENDPOINT: Container Apps, App Service)",
                ),
                (Some(url), None, _) => (url, "the managed identity endpoint (IDENTITY_ENDPOINT)"),
                (None, _, Some(url)) => (url, "the managed identity endpoint (MSI_ENDPOINT)"),
                (None, _, None) => (
                    IMDS_ENDPOINT.into(),
                    "IMDS (no IDENTITY_ENDPOINT: virtual machines, AKS without workload identity)",
                ),
            },
        };
        TokenEndpoint { url, via }
    }
}

/// The instance metadata service's token endpoint, used when the platform sets no endpoint variable.
pub const IMDS_ENDPOINT: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Where tokens come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEndpoint {
    /// The endpoint's URL (no secret: the identity header travels separately).
    pub url: String,
    /// Which mechanism, in words.
    pub via: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_choice_follows_the_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Identity::from_lookup(env(&[])),
            Identity::Managed { client_id: None }
        );
        assert_eq!(
            Identity::from_lookup(env(&[("AZURE_CLIENT_ID", "abc")])),
            Identity::Managed {
                client_id: Some("abc".into())
            }
        );
        assert_eq!(
            Identity::from_lookup(env(&[
                ("AZURE_CLIENT_ID", "abc"),
                ("AZURE_TENANT_ID", "t"),
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ])),
            Identity::Workload
        );
        assert_eq!(
            Identity::from_lookup(env(&[
                ("AZURE_CLIENT_ID", "abc"),
                ("AZURE_TENANT_ID", ""),
                ("AZURE_FEDERATED_TOKEN_FILE", "/var/run/token"),
            ])),
            Identity::Managed {
                client_id: Some("abc".into())
            }
        );
    }

    #[test]
    fn the_token_endpoint_follows_the_sdk_s_order() {
        let managed = Identity::Managed { client_id: None };
        let none = |_: &str| None;
        assert_eq!(managed.token_endpoint(none).url, IMDS_ENDPOINT);
        let app_service = |name: &str| match name {
            "IDENTITY_ENDPOINT" => Some("http://localhost:42356/msi/token".to_string()),
            "IDENTITY_HEADER" => Some("h".to_string()),
            _ => None,
        };
        let endpoint = managed.token_endpoint(app_service);
        assert_eq!(endpoint.url, "http://localhost:42356/msi/token");
        assert!(endpoint.via.contains("IDENTITY_ENDPOINT"));
        assert_eq!(
            Identity::Workload.token_endpoint(none).url,
            "https://login.microsoftonline.com"
        );
    }
}
