//! `applicant-validator diagnose`: can this container reach everything it needs, with its identity?
//!
//! The image has no shell, curl or openssl, so the binary answers the questions an operator would otherwise
//! ask with them: is the configuration what I think, does each host resolve, accept a connection and present
//! a certificate we trust (and for how much longer), does the identity get a token, and can it read the secret.
//! Every check runs the service's own code: the configuration parser, the outbound TLS configuration, the
//! identity choice and the vault client ([`VaultAccess`]). Nothing here calls `/score`, binds a port, or prints
//! a key or a token (values that are secret are shown as `set`).
//!
//! Checks run one after another, each bounded by the `--timeout`; a check whose prerequisite failed is skipped
//! with that reason, so the first failure in the list is the one to fix.
//!
//! Here: [`run`] and the configuration, identity, vault and auth checks. Beside it: the report and its
//! rendering (`report`), the DNS, TCP and TLS probes ([`net`]), and the certificate's fields ([`cert`]).

pub mod cert;
pub(crate) mod net;
mod report;

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::api_key::identity::Identity;
use crate::api_key::vault::{ReadError, VaultAccess};
use crate::auth::jwks::SigningKeys;
use crate::config::{Config, KeySourceConfig};
use crate::outbound::{self, HttpClient};
use net::{Probe, skip_host};
pub use report::{Check, Report, Status};
use report::{Work, now, shown_url, skip, span, timed};

/// Runs every check. `lookup` reads a variable as `serve` would (flag, then environment); the identity
/// variables and AUTH_MODE are read through it too. `timeout` bounds each check.
pub async fn run(
    config: &Config,
    lookup: &(dyn Fn(&str) -> Option<String> + Sync),
    timeout: Duration,
) -> Report {
    let mut checks = vec![config_check(config, lookup)];
    // One client for the vault and the issuer, as the service has.
    let http = outbound::build_client(&config.extra_ca_certs, config.connect_timeout)
        .map_err(|e| e.to_string());
    let probe = Probe {
        extra_roots: &config.extra_ca_certs,
        connect_timeout: config.connect_timeout,
        timeout,
    };

    match config.demo_mode {
        true => skip_host(
            &mut checks,
            "riskshield",
            "demo mode: RiskShield is not called",
        ),
        false => {
            erased(probe.host(
                &mut checks,
                "riskshield",
                config.riskshield_api_url.as_str(),
            ))
            .await
        }
    }

    let vault = match &config.key_source {
        Some(KeySourceConfig::Vault {
            url, secret_name, ..
        }) => Ok((url.as_str(), secret_name.as_str())),
        _ if config.demo_mode => Err("demo mode: no API key is read"),
        _ => Err("no KEY_VAULT_URL: the key comes from RISKSHIELD_API_KEY"),
    };
    match vault {
        Ok((url, secret_name)) => {
            erased(probe.host(&mut checks, "key_vault", url)).await;
            let identity = Identity::from_lookup(lookup);
            let endpoint = identity.token_endpoint(lookup);
            erased(probe.host(&mut checks, "identity", &endpoint.url)).await;
            let access = http.clone().and_then(|http: HttpClient| {
                VaultAccess::new(url, &http, lookup).map_err(|e| e.to_string())
            });
            erased(vault_checks(
                &mut checks,
                access,
                endpoint.via,
                secret_name,
                timeout,
            ))
            .await;
        }
        Err(reason) => {
            skip_host(&mut checks, "key_vault", reason);
            skip_host(&mut checks, "identity", reason);
            checks.push(skip("identity", reason));
            checks.push(skip("key_vault", reason));
        }
    }

    checks.push(auth_check(config, http, timeout).await);
    Report::new(checks)
}

/// The `auth` check (AUTH_MODE=entra): the issuer's OpenID configuration and JWKS fetched through the
/// service's outbound client, as the service fetches them, reporting the number of signing keys.
async fn auth_check(config: &Config, http: Result<HttpClient, String>, timeout: Duration) -> Check {
    let Some(auth) = &config.auth else {
        return skip("auth", "caller authentication is off");
    };
    let discovery = auth.discovery_url();
    let work: Work<'_> = Box::pin(async move {
        let keys = SigningKeys::fetch_once(&discovery, http?)
            .await
            .map_err(|e| format!("{e} (from {discovery})"))?;
        if keys == 0 {
            return Err(format!(
                "{discovery} names a JWKS with no RSA signing key: every token would be refused"
            ));
        }
        Ok(format!(
            "issuer {}: OpenID configuration and JWKS fetched, {keys} signing key(s)",
            auth.issuer
        ))
    });
    timed("auth".into(), timeout, work).await
}

/// What `serve` would run with, secrets shown only as `set`.
fn config_check(config: &Config, lookup: &(dyn Fn(&str) -> Option<String> + Sync)) -> Check {
    let set = |name: &str| {
        if lookup(name).is_some_and(|v| !v.is_empty()) {
            "set"
        } else {
            "unset"
        }
    };
    let d = |d: Duration| humantime::format_duration(d).to_string();
    let mut detail = format!(
        "environment={}, mode={}",
        config.environment,
        if config.demo_mode {
            "demo"
        } else {
            "riskshield"
        }
    );
    match &config.key_source {
        Some(KeySourceConfig::Vault {
            url,
            secret_name,
            ttl,
        }) => {
            let _ = write!(
                detail,
                ", key source=vault (KEY_VAULT_URL={}, secret {secret_name}, re-read every {})",
                shown_url(url),
                d(*ttl)
            );
        }
        Some(KeySourceConfig::Env(_)) => detail.push_str(", key source=env (RISKSHIELD_API_KEY)"),
        None => detail.push_str(", key source=none"),
    }
    let _ = write!(
        detail,
        ", RISKSHIELD_API_KEY={}, RISKSHIELD_API_URL={}, connect timeout {}, attempt timeout {}, attempts {}, \
         request timeout {}, breaker {} failures/{}, EXTRA_CA_CERTS={}, rate limit {}, trusted proxy hops {}, \
         log level {}",
        set("RISKSHIELD_API_KEY"),
        shown_url(config.riskshield_api_url.as_str()),
        d(config.connect_timeout),
        d(config.attempt_timeout),
        config.max_attempts,
        d(config.request_timeout),
        config.circuit_failure_threshold,
        d(config.circuit_open_duration),
        match config.extra_ca_certs.len() {
            0 => "unset".to_string(),
            n => format!("{n} certificate(s)"),
        },
        match config.rate_limit_per_minute {
            0 => "off".to_string(),
            n => format!("{n}/min"),
        },
        config.trusted_proxy_hops,
        config.log_level,
    );
    Check {
        name: "config".into(),
        status: Status::Ok,
        duration_ms: 0,
        detail,
    }
}

/// Each step behind its own pointer, so the steps are separate functions rather than one large future inlined
/// into the caller: `diagnose` runs once and rarely, its code size matters more than its speed.
fn erased<'a>(step: impl Future<Output = ()> + 'a) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    Box::pin(step)
}

/// `identity` (a Key Vault token, its expiry only) and `key_vault` (one read, never the value).
async fn vault_checks(
    checks: &mut Vec<Check>,
    access: Result<VaultAccess, String>,
    via: &str,
    secret_name: &str,
    timeout: Duration,
) {
    let access = match access {
        Ok(access) => access,
        Err(why) => {
            checks.push(Check {
                name: "identity".into(),
                status: Status::Fail,
                duration_ms: 0,
                detail: why,
            });
            checks.push(skip("key_vault", "skipped: no vault client"));
            return;
        }
    };
    let who = format!("{} via {via}", access.identity().describe());
    let work = Box::pin(async {
        let expires = access.token_expiry().await.map_err(|e| {
            format!(
                "{who}: {e} (is an identity assigned to this app or pod? a user-assigned one also needs AZURE_CLIENT_ID)"
            )
        })?;
        let expires = expires.unix_timestamp();
        Ok(format!(
            "{who}: a token for Key Vault was obtained, expires {} ({})",
            cert::rfc3339(expires),
            span(expires - now())
        ))
    });
    let check = timed("identity".into(), timeout, work).await;
    let token = check.status == Status::Ok;
    checks.push(check);
    if !token {
        checks.push(skip("key_vault", "skipped: no token (see identity)"));
        return;
    }
    let host = access.vault_host();
    let work = Box::pin(async {
        let info = access
            .read_once(secret_name)
            .await
            .map_err(|e| read_advice(&e, &access, secret_name))?;
        Ok(format!(
            "secret {} read from {host}: version {}, updated {}, value length {} characters",
            info.name,
            info.version.as_deref().unwrap_or("unknown"),
            info.updated
                .map_or_else(|| "unknown".into(), |t| cert::rfc3339(t.unix_timestamp())),
            info.value_chars
        ))
    });
    checks.push(timed("key_vault".into(), timeout, work).await);
}

/// A failed read in words an operator can act on.
fn read_advice(error: &ReadError, access: &VaultAccess, secret_name: &str) -> String {
    let host = access.vault_host();
    let who = access.identity().describe();
    match error {
        ReadError::Forbidden => format!(
            "403: the identity ({who}) lacks the \"Key Vault Secrets User\" role on vault {host}: assign that role to it on the vault (or on the secret), or, for a vault using access policies, allow it to get secrets"
        ),
        ReadError::NotFound => format!(
            "404: no secret named {secret_name} in vault {host}: check RISKSHIELD_API_KEY_SECRET_NAME and that the secret exists"
        ),
        ReadError::Unauthorized => format!(
            "401: vault {host} refused the identity's token: the identity may belong to another tenant than the vault"
        ),
        ReadError::Unreachable(why) if looks_like_tls(why) => format!(
            "TLS to vault {host} failed: {why} (see key_vault.tls; behind a TLS-inspecting proxy, add its CA to EXTRA_CA_CERTS)"
        ),
        ReadError::Other(why) if why.to_ascii_lowercase().contains("challenge") => format!(
            "vault {host} answered with an authentication challenge for another resource or tenant: {why} (KEY_VAULT_URL must be the vault's own URL, https://NAME.vault.azure.net/)"
        ),
        ReadError::Invalid(why) => {
            format!("secret {secret_name} cannot be used as the API key: {why}")
        }
        other => format!("vault {host}: {other}"),
    }
}

fn looks_like_tls(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    ["certificate", "tls", "handshake"]
        .iter()
        .any(|word| text.contains(word))
}
