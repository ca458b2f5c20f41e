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

pub mod cert;
pub mod net;

use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::Uri;
use serde::Serialize;

use crate::api_key::identity::Identity;
use crate::api_key::vault::{ReadError, VaultAccess};
use crate::auth::jwks::SigningKeys;
use crate::config::{Config, KeySourceConfig};
use crate::outbound::{self, HttpClient};

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Fail,
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Skip => "skip",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub duration_ms: u64,
    pub detail: String,
}

/// Every check, in the order run, and whether none failed.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    pub ok: bool,
}

impl Report {
    fn new(checks: Vec<Check>) -> Self {
        let ok = checks.iter().all(|c| c.status != Status::Fail);
        Self { checks, ok }
    }

    /// `{"checks":[{"name","status","duration_ms","detail"}],"ok":bool}` on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| r#"{"checks":[],"ok":false}"#.into())
    }

    /// One aligned row per check and a closing verdict, for a terminal.
    pub fn table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(0)
            .max("CHECK".len());
        let mut out = format!("{:width$}  STATUS  {:>8}  DETAIL\n", "CHECK", "TIME");
        for check in &self.checks {
            let _ = writeln!(
                out,
                "{:width$}  {:6}  {:>5} ms  {}",
                check.name,
                check.status.as_str(),
                check.duration_ms,
                check.detail
            );
        }
        let failed: Vec<&str> = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        if failed.is_empty() {
            out.push_str("\nno check failed\n");
        } else {
            let _ = writeln!(out, "\nfailed: {}", failed.join(", "));
        }
        out
    }
}

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
            let access = http
                .clone()
                .and_then(|http: HttpClient| VaultAccess::new(url, &http, lookup));
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

/// A URL as safe to print: any user-info (`user:password@`) is masked.
fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find('/').unwrap_or(rest.len());
            match rest[..end].rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[end..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

fn skip(name: &str, reason: &str) -> Check {
    Check {
        name: name.into(),
        status: Status::Skip,
        duration_ms: 0,
        detail: reason.into(),
    }
}

fn skip_host(checks: &mut Vec<Check>, target: &str, reason: &str) {
    for step in ["dns", "tcp", "tls"] {
        checks.push(skip(&format!("{target}.{step}"), reason));
    }
}

/// Each step behind its own pointer, so the steps are separate functions rather than one large future inlined
/// into the caller: `diagnose` runs once and rarely, its code size matters more than its speed.
fn erased<'a>(step: impl Future<Output = ()> + 'a) -> Pin<Box<dyn Future<Output = ()> + 'a>> {
    Box::pin(step)
}

/// A check's work: the detail on success or failure. Boxed so that one `timed` serves every check.
type Work<'a> = Pin<Box<dyn Future<Output = Result<String, String>> + 'a>>;

/// Runs `work` within `timeout` and times it.
async fn timed(name: String, timeout: Duration, work: Work<'_>) -> Check {
    let started = Instant::now();
    let outcome = tokio::time::timeout(timeout, work).await;
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (status, detail) = match outcome {
        Ok(Ok(detail)) => (Status::Ok, detail),
        Ok(Err(detail)) => (Status::Fail, detail),
        Err(_) => (
            Status::Fail,
            format!(
                "no answer within {} (--timeout)",
                humantime::format_duration(timeout)
            ),
        ),
    };
    Check {
        name,
        status,
        duration_ms,
        detail,
    }
}

/// Unix seconds now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A time span in the unit an operator reads best.
fn span(seconds: i64) -> String {
    match seconds {
        s if s < 0 => "already passed".into(),
        s if s >= 2 * 86_400 => format!("in {} days", s / 86_400),
        s if s >= 2 * 3600 => format!("in {} h", s / 3600),
        s => format!("in {} min", s / 60),
    }
}

/// The DNS, TCP and TLS checks.
struct Probe<'a> {
    extra_roots: &'a [rustls_pki_types::CertificateDer<'static>],
    connect_timeout: Duration,
    timeout: Duration,
}

impl Probe<'_> {
    /// `target.dns`, `target.tcp` and `target.tls` for the host of `url`. Each step runs only when the one
    /// before it worked.
    async fn host(&self, checks: &mut Vec<Check>, target: &str, url: &str) {
        let Some((uri, host)) = url
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned).map(|h| (u, h)))
        else {
            checks.push(Check {
                name: format!("{target}.dns"),
                status: Status::Fail,
                duration_ms: 0,
                detail: format!("{} has no host", shown_url(url)),
            });
            skip_host_rest(checks, target, "no host to connect to");
            return;
        };
        let tls = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });

        let mut addrs: Vec<SocketAddr> = Vec::new();
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            addrs.push(SocketAddr::new(ip, port));
            checks.push(skip(
                &format!("{target}.dns"),
                &format!("{host} is an IP address: nothing to resolve"),
            ));
        } else {
            let work = Box::pin(async {
                addrs = net::resolve(bare, port).await.map_err(|e| {
                    format!("{e}: check the host name, and the DNS this container uses (a private endpoint needs its private DNS zone linked)")
                })?;
                let list: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
                Ok(format!("{host} → {}", list.join(", ")))
            });
            checks.push(timed(format!("{target}.dns"), self.timeout, work).await);
            if addrs.is_empty() {
                skip_host_rest(checks, target, "skipped: the host does not resolve");
                return;
            }
        }

        let work = Box::pin(async {
            let stream = net::connect(&addrs).await.map_err(|e| {
                format!("cannot connect to {host}:{port} ({e}): a firewall, network policy or egress rule may block it")
            })?;
            Ok(stream.peer_addr().map_or_else(
                |_| format!("connected to {host}:{port}"),
                |a| format!("connected to {a}"),
            ))
        });
        let check = timed(format!("{target}.tcp"), self.timeout, work).await;
        let connected = check.status == Status::Ok;
        checks.push(check);
        if !connected {
            checks.push(skip(&format!("{target}.tls"), "skipped: no TCP connection"));
        } else if !tls {
            checks.push(skip(
                &format!("{target}.tls"),
                "plain http: no TLS to check",
            ));
        } else {
            checks.push(self.tls(target, uri).await);
        }
    }

    /// `target.tls`: the handshake, the certificate's names and expiry.
    async fn tls(&self, target: &str, uri: Uri) -> Check {
        let work = Box::pin(async {
            let done = net::handshake(uri, self.extra_roots, self.connect_timeout)
                .await
                .map_err(|e| match e.certificate {
                    Some(c) => format!(
                        "{}; certificate: subject {}, issuer {}, expires {}",
                        e.reason,
                        c.subject,
                        c.issuer,
                        cert::rfc3339(c.not_after)
                    ),
                    None => e.reason,
                })?;
            let Some(c) = done.certificate else {
                return Ok(format!(
                    "{}; the certificate was trusted but its fields could not be read",
                    done.protocol
                ));
            };
            let detail = format!(
                "{}; subject {}; issuer {}; expires {} ({})",
                done.protocol,
                c.subject,
                c.issuer,
                cert::rfc3339(c.not_after),
                span(c.not_after - now())
            );
            if net::days_left(&c, now()) < net::EXPIRY_WARNING_DAYS {
                return Err(format!(
                    "the certificate expires within {} days: {detail}; renew it (or have its owner renew it) before then",
                    net::EXPIRY_WARNING_DAYS
                ));
            }
            Ok(detail)
        });
        timed(format!("{target}.tls"), self.timeout, work).await
    }
}

fn skip_host_rest(checks: &mut Vec<Check>, target: &str, reason: &str) {
    for step in ["tcp", "tls"] {
        checks.push(skip(&format!("{target}.{step}"), reason));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_in_a_url_is_masked() {
        assert_eq!(
            shown_url("https://user:pw@rs.example/v1"),
            "https://***@rs.example/v1"
        );
        assert_eq!(shown_url("https://rs.example/v1"), "https://rs.example/v1");
        assert_eq!(
            shown_url("https://rs.example/a@b"),
            "https://rs.example/a@b"
        );
    }

    #[test]
    fn a_failed_check_makes_the_report_fail() {
        let row = |status| Check {
            name: "x".into(),
            status,
            duration_ms: 1,
            detail: "d".into(),
        };
        assert!(Report::new(vec![row(Status::Ok), row(Status::Skip)]).ok);
        let report = Report::new(vec![row(Status::Ok), row(Status::Fail)]);
        assert!(!report.ok);
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json()).expect("the report is JSON");
        assert_eq!(json["ok"], false);
        assert_eq!(json["checks"][1]["status"], "fail");
        assert!(report.table().contains("failed: x"));
    }

    #[test]
    fn spans_read_naturally() {
        assert_eq!(span(30 * 86_400), "in 30 days");
        assert_eq!(span(5 * 3600), "in 5 h");
        assert_eq!(span(59 * 60), "in 59 min");
        assert_eq!(span(-1), "already passed");
    }
}
