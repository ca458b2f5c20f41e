//! Configuration: every setting of `serve`, parsed and validated once, every problem reported at once.
//!
//! The command line ([`crate::cli`]) only collects raw strings; [`Config::from_lookup`] parses all of them itself
//! so that *every* problem is reported at once (a command-line parser would stop at the first), and so that tests can build a
//! configuration from a plain map without touching the process environment. The value parsers live in
//! [`parse`].

pub(crate) mod parse;
mod url;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use http::HeaderValue;
use rustls_pki_types::CertificateDer;

use crate::domain::ApiKey;
use parse::{
    Reader, parse_bool, parse_cors, parse_host, parse_level, parse_port, parse_vault_url,
    read_pem_roots,
};
pub use parse::{is_loopback_host, parse_duration};
pub use url::RiskShieldUrl;
use url::{check_issuer, check_upstream_url};

/// Exit code for invalid configuration or usage (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Default vendor endpoint, from the vendor's documentation.
pub const DEFAULT_RISKSHIELD_URL: &str = "https://api.riskshield.com/v1";

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// Where the API key comes from.
#[derive(Debug, Clone)]
pub enum KeySourceConfig {
    /// Azure Key Vault with Managed Identity (or Workload Identity).
    Vault {
        url: String,
        secret_name: String,
        ttl: Duration,
    },
    /// A key given directly (local development).
    Env(ApiKey),
}

/// Which origins may call the API from a browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    Any,
    List(Vec<HeaderValue>),
}

/// Caller authentication (AUTH_MODE=entra): whose bearer tokens POST validate accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// AUTH_ISSUER exactly as configured: a token's `iss` must equal it.
    pub issuer: String,
    /// AUTH_AUDIENCE: a token's `aud` must name at least one of these.
    pub audiences: Vec<String>,
    /// AUTH_REQUIRED_ROLE: when set, the token's `roles` must contain it.
    pub required_role: Option<String>,
}

impl AuthConfig {
    /// Where the issuer publishes its OpenID configuration (OpenID Connect Discovery 1.0, section 4).
    pub fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }
}

/// The validated configuration of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub environment: String,
    pub log_level: tracing::Level,
    pub log_format: LogFormat,
    /// `None` in demo mode.
    pub key_source: Option<KeySourceConfig>,
    pub demo_mode: bool,
    /// RISKSHIELD_API_URL, checked and parsed once.
    pub riskshield_api_url: RiskShieldUrl,
    pub connect_timeout: Duration,
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    pub retry_base_delay: Duration,
    pub circuit_failure_threshold: u32,
    pub circuit_open_duration: Duration,
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub shutdown_grace: Duration,
    pub cors_origins: CorsOrigins,
    pub id_number_strict: bool,
    pub extra_ca_certs: Vec<CertificateDer<'static>>,
    pub metrics_enabled: bool,
    pub rate_limit_per_minute: u32,
    pub rate_limit_burst: u32,
    /// Proxies in front that append to X-Forwarded-For; 0: the client is the TCP peer.
    pub trusted_proxy_hops: u32,
    pub header_read_timeout: Duration,
    /// MAX_HEADER_BYTES: the most a request line and headers may take, and so what an unfinished head can make
    /// a connection buffer.
    pub max_header_bytes: usize,
    /// SEND_TIMEOUT: how long an answer's write may make no progress before its connection is closed.
    pub send_timeout: Duration,
    pub max_connections: usize,
    /// Serving threads, each with its own runtime, listener and upstream connections (thread-per-core).
    pub workers: usize,
    /// How long the service keeps serving after the first SIGTERM/SIGINT, with /ready answering 503, before the
    /// listener closes: time for a load balancer without a preStop hook to stop routing here.
    pub shutdown_delay: Duration,
    /// `None` with AUTH_MODE=off.
    pub auth: Option<AuthConfig>,
}

/// Every configuration problem found, one line each, each naming its variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<String>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for ConfigErrors {}

fn is_prod(environment: &str) -> bool {
    matches!(
        environment.to_ascii_lowercase().as_str(),
        "prod" | "production"
    )
}

impl Config {
    /// Reads the configuration from `lookup` (an environment-variable name to its value) and reports every
    /// problem at once. Each section has its reader; they share one [`Reader`], which collects the problems.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader {
            lookup,
            errors: Vec::new(),
        };
        let environment = r.raw("ENVIRONMENT").unwrap_or_else(|| "dev".into());
        let prod = is_prod(&environment);
        let Serving {
            host,
            port,
            header_read_timeout,
            max_header_bytes,
            send_timeout,
            max_connections,
            workers,
            shutdown_delay,
            shutdown_grace,
        } = read_serving(&mut r);
        let (log_level, log_format) = read_logging(&mut r);
        let (key_source, demo_mode) = read_key_source(&mut r, &environment, prod);
        let RiskShield {
            url: riskshield_api_url,
            connect_timeout,
            attempt_timeout,
            max_attempts,
            retry_base_delay,
            circuit_failure_threshold,
            circuit_open_duration,
        } = read_riskshield(&mut r, prod);
        let Requests {
            request_timeout,
            max_body_bytes,
            cors_origins,
            id_number_strict,
            rate_limit_per_minute,
            rate_limit_burst,
            trusted_proxy_hops,
        } = read_requests(&mut r);
        let extra_ca_certs = r.parse("EXTRA_CA_CERTS", Vec::new(), read_pem_roots);
        let metrics_enabled = r.flag("METRICS_ENABLED", true);
        let auth = read_auth(&mut r, prod);

        let (Some(riskshield_api_url), true) = (riskshield_api_url, r.errors.is_empty()) else {
            // An invalid RISKSHIELD_API_URL has its line among the errors; the default always parses.
            return Err(ConfigErrors(r.errors));
        };
        Ok(Config {
            host,
            port,
            environment,
            log_level,
            log_format,
            key_source,
            demo_mode,
            riskshield_api_url,
            connect_timeout,
            attempt_timeout,
            max_attempts,
            retry_base_delay,
            circuit_failure_threshold,
            circuit_open_duration,
            request_timeout,
            max_body_bytes,
            shutdown_grace,
            cors_origins,
            id_number_strict,
            extra_ca_certs,
            metrics_enabled,
            rate_limit_per_minute,
            rate_limit_burst,
            trusted_proxy_hops,
            header_read_timeout,
            max_header_bytes,
            send_timeout,
            max_connections,
            workers,
            shutdown_delay,
            auth,
        })
    }
}

/// Listening, connections, worker threads and shutdown.
struct Serving {
    host: IpAddr,
    port: u16,
    header_read_timeout: Duration,
    max_header_bytes: usize,
    send_timeout: Duration,
    max_connections: usize,
    workers: usize,
    shutdown_delay: Duration,
    shutdown_grace: Duration,
}

fn read_serving<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> Serving {
    Serving {
        host: r.parse("HOST", IpAddr::V4(Ipv4Addr::UNSPECIFIED), parse_host),
        port: r.parse("PORT", 8080, parse_port),
        header_read_timeout: r.duration("HEADER_READ_TIMEOUT", Duration::from_secs(10)),
        // hyper's read buffer cannot be smaller than 8 KiB.
        max_header_bytes: r.number("MAX_HEADER_BYTES", 16_384usize, 8192, 1024 * 1024),
        send_timeout: r.duration("SEND_TIMEOUT", Duration::from_secs(30)),
        max_connections: r.number("MAX_CONNECTIONS", 4096usize, 1, 1_000_000),
        workers: r.number("WORKERS", default_workers(), 1, 1024),
        shutdown_delay: r.parse("SHUTDOWN_DELAY", Duration::ZERO, |v| {
            // Zero is this setting's default ("close at once"), so unlike the timeouts it is accepted.
            match humantime::parse_duration(v) {
                Ok(d) if d.is_zero() => Ok(d),
                _ => parse_duration(v),
            }
        }),
        shutdown_grace: r.duration("SHUTDOWN_GRACE", Duration::from_secs(8)),
    }
}

fn read_logging<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> (tracing::Level, LogFormat) {
    let level = r.parse("LOG_LEVEL", tracing::Level::INFO, parse_level);
    let format = r.parse("LOG_FORMAT", LogFormat::Json, |v| {
        match v.to_ascii_lowercase().as_str() {
            "json" => Ok(LogFormat::Json),
            "pretty" | "text" => Ok(LogFormat::Pretty),
            _ => Err("must be json or pretty".into()),
        }
    });
    (level, format)
}

/// Where the API key comes from, and whether the service runs in demo mode (`None` as the source then).
fn read_key_source<F: Fn(&str) -> Option<String>>(
    r: &mut Reader<F>,
    environment: &str,
    prod: bool,
) -> (Option<KeySourceConfig>, bool) {
    let secret_cache_ttl = r.duration("SECRET_CACHE_TTL", Duration::from_secs(300));
    let vault_url = r.parse("KEY_VAULT_URL", None, |v| parse_vault_url(v).map(Some));
    let vault_set = r.raw("KEY_VAULT_URL").is_some();
    let secret_name = r.parse(
        "RISKSHIELD_API_KEY_SECRET_NAME",
        "RISKSHIELD-API-KEY".to_string(),
        |v| {
            if v.len() <= 127 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                Ok(v.to_owned())
            } else {
                Err("must be 1-127 letters, digits and hyphens".into())
            }
        },
    );
    let env_key = r.raw("RISKSHIELD_API_KEY");
    // Checked only where it is used (no vault); the message must not repeat the key, so no `r.parse`.
    let env_key = match env_key.as_deref().map(ApiKey::parse) {
        Some(Err(why)) if !vault_set => {
            r.errors
                .push(format!("RISKSHIELD_API_KEY: {why} (value not shown)"));
            None
        }
        Some(Ok(key)) => Some(key),
        _ => None,
    };
    let env_key_set = r.raw("RISKSHIELD_API_KEY").is_some();
    let demo_setting = r.parse("DEMO_MODE", None, |v| {
        match v.to_ascii_lowercase().as_str() {
            "auto" => Ok(None),
            other => parse_bool(other)
                .map(Some)
                .map_err(|_| "must be auto, true or false".into()),
        }
    });
    let has_credentials = vault_set || env_key_set;
    let demo_mode = demo_setting.unwrap_or(!has_credentials && !prod);
    if prod && (demo_mode || !has_credentials) {
        r.errors.push(format!(
            "DEMO_MODE: demo mode is refused when ENVIRONMENT={environment}; set KEY_VAULT_URL or RISKSHIELD_API_KEY"
        ));
    } else if !demo_mode && !has_credentials {
        r.errors.push(
            "KEY_VAULT_URL: no API key source; set KEY_VAULT_URL or RISKSHIELD_API_KEY (or DEMO_MODE=true outside prod)"
                .into(),
        );
    }
    let key_source = match (vault_url, env_key) {
        _ if demo_mode => None,
        (Some(url), _) => Some(KeySourceConfig::Vault {
            url,
            secret_name,
            ttl: secret_cache_ttl,
        }),
        (None, Some(key)) => Some(KeySourceConfig::Env(key)),
        (None, None) => None,
    };
    (key_source, demo_mode)
}

/// The vendor: its URL, timeouts, retries and breaker.
struct RiskShield {
    /// `None` only when RISKSHIELD_API_URL was refused (its problem is among the errors).
    url: Option<RiskShieldUrl>,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    max_attempts: u32,
    retry_base_delay: Duration,
    circuit_failure_threshold: u32,
    circuit_open_duration: Duration,
}

fn read_riskshield<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>, prod: bool) -> RiskShield {
    let allow_insecure = r.flag("ALLOW_INSECURE_UPSTREAM", false);
    let url = r.parse("RISKSHIELD_API_URL", None, |v| {
        check_upstream_url(v, prod, allow_insecure).map(Some)
    });
    RiskShield {
        url: url.or_else(|| RiskShieldUrl::parse(DEFAULT_RISKSHIELD_URL).ok()),
        connect_timeout: r.duration("RISKSHIELD_CONNECT_TIMEOUT", Duration::from_secs(5)),
        attempt_timeout: r.duration("RISKSHIELD_TIMEOUT", Duration::from_secs(10)),
        max_attempts: r.number("RISKSHIELD_MAX_ATTEMPTS", 3u32, 1, 10),
        retry_base_delay: r.duration("RISKSHIELD_RETRY_BASE_DELAY", Duration::from_secs(1)),
        circuit_failure_threshold: r.number("CIRCUIT_FAILURE_THRESHOLD", 5u32, 1, 1_000_000),
        circuit_open_duration: r.duration("CIRCUIT_OPEN_DURATION", Duration::from_secs(60)),
    }
}

/// What an inbound request may cost and who may send it: deadline, body size, CORS, the ID check, the rate
/// limit and how the client is found behind proxies.
struct Requests {
    request_timeout: Duration,
    max_body_bytes: usize,
    cors_origins: CorsOrigins,
    id_number_strict: bool,
    rate_limit_per_minute: u32,
    rate_limit_burst: u32,
    trusted_proxy_hops: u32,
}

fn read_requests<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> Requests {
    let request_timeout = r.duration("REQUEST_TIMEOUT", Duration::from_secs(30));
    let max_body_bytes = r.number("MAX_BODY_BYTES", 16_384usize, 1, 64 * 1024 * 1024);
    let cors_origins = r.parse("CORS_ORIGINS", CorsOrigins::Any, parse_cors);
    let id_number_strict = r.flag("ID_NUMBER_STRICT", false);
    let rate_limit_per_minute = r.number("RATE_LIMIT_PER_MINUTE", 0u32, 0, 1_000_000_000);
    let rate_limit_burst = r.number("RATE_LIMIT_BURST", rate_limit_per_minute, 0, 1_000_000_000);
    if rate_limit_per_minute > 0 && rate_limit_burst == 0 {
        r.errors
            .push("RATE_LIMIT_BURST: must be at least 1 when RATE_LIMIT_PER_MINUTE is set".into());
    }
    let trusted_proxy_hops = r.number("TRUSTED_PROXY_HOPS", 0u32, 0, 16);
    if r.raw("TRUST_FORWARDED_FOR").is_some() {
        r.errors.push(
            "TRUST_FORWARDED_FOR: replaced by TRUSTED_PROXY_HOPS (the number of proxies in front that append to X-Forwarded-For, e.g. 1 behind Container Apps ingress); unset TRUST_FORWARDED_FOR"
                .into(),
        );
    }
    Requests {
        request_timeout,
        max_body_bytes,
        cors_origins,
        id_number_strict,
        rate_limit_per_minute,
        rate_limit_burst,
        trusted_proxy_hops,
    }
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The AUTH_* block. With AUTH_MODE=off the other variables must be unset: an operator who sets an issuer
/// but forgets the mode would otherwise believe validations are protected while they are not.
fn read_auth<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>, prod: bool) -> Option<AuthConfig> {
    let entra = r.parse("AUTH_MODE", false, |v| {
        match v.to_ascii_lowercase().as_str() {
            "off" => Ok(false),
            "entra" => Ok(true),
            _ => Err("must be off or entra".into()),
        }
    });
    const DEPENDENT: [&str; 3] = ["AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_REQUIRED_ROLE"];
    if !entra {
        let mode_valid = r
            .raw("AUTH_MODE")
            .is_none_or(|v| v.eq_ignore_ascii_case("off"));
        for name in DEPENDENT {
            if mode_valid && r.raw(name).is_some() {
                r.errors.push(format!(
                    "{name}: set, but AUTH_MODE is off; set AUTH_MODE=entra to require tokens, or unset {name}"
                ));
            }
        }
        return None;
    }
    let issuer = match r.raw("AUTH_ISSUER") {
        None => {
            r.errors.push(
                "AUTH_ISSUER: required with AUTH_MODE=entra, e.g. https://login.microsoftonline.com/{tenant}/v2.0"
                    .into(),
            );
            None
        }
        Some(_) => r.parse("AUTH_ISSUER", None, |v| check_issuer(v, prod).map(Some)),
    };
    let audiences: Vec<String> = r
        .raw("AUTH_AUDIENCE")
        .map(|v| {
            v.split(',')
                .map(|a| a.trim().to_owned())
                .filter(|a| !a.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if audiences.is_empty() {
        r.errors.push(
            "AUTH_AUDIENCE: required with AUTH_MODE=entra, e.g. api://applicant-validator (comma-separated for several)"
                .into(),
        );
    }
    let required_role = r.raw("AUTH_REQUIRED_ROLE");
    Some(AuthConfig {
        issuer: issuer?,
        audiences,
        required_role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    fn errors(vars: &[(&str, &str)]) -> Vec<String> {
        match config(vars) {
            Ok(_) => panic!("expected configuration errors for {vars:?}"),
            Err(e) => e.0,
        }
    }

    #[test]
    fn defaults_are_demo_mode_in_dev() {
        let c = config(&[]).expect("defaults are valid");
        assert!(c.demo_mode);
        assert!(c.key_source.is_none());
        assert_eq!(c.port, 8080);
        assert_eq!(c.riskshield_api_url.as_str(), DEFAULT_RISKSHIELD_URL);
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.cors_origins, CorsOrigins::Any);
    }

    #[test]
    fn an_env_key_disables_auto_demo_mode() {
        let c = config(&[("RISKSHIELD_API_KEY", "k")]).expect("valid");
        assert!(!c.demo_mode);
        assert!(matches!(c.key_source, Some(KeySourceConfig::Env(ref k)) if k.expose() == "k"));
    }

    #[test]
    fn the_vault_wins_over_an_env_key() {
        let c = config(&[
            ("RISKSHIELD_API_KEY", "k"),
            ("KEY_VAULT_URL", "https://v.vault.azure.net/"),
        ])
        .expect("valid");
        assert!(
            matches!(c.key_source, Some(KeySourceConfig::Vault { ref secret_name, .. }) if secret_name == "RISKSHIELD-API-KEY")
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = errors(&[
            ("PORT", "eighty"),
            ("LOG_LEVEL", "loud"),
            ("RISKSHIELD_TIMEOUT", "soon"),
            ("MAX_BODY_BYTES", "-1"),
        ]);
        assert_eq!(errs.len(), 4, "{errs:?}");
        for name in ["PORT", "LOG_LEVEL", "RISKSHIELD_TIMEOUT", "MAX_BODY_BYTES"] {
            assert!(
                errs.iter().any(|e| e.starts_with(name)),
                "{name} missing in {errs:?}"
            );
        }
    }

    #[test]
    fn log_level_is_case_insensitive() {
        let c = config(&[("LOG_LEVEL", "debug")]).expect("valid");
        assert_eq!(c.log_level, tracing::Level::DEBUG);
    }

    #[test]
    fn prod_refuses_demo_mode() {
        let errs = errors(&[("ENVIRONMENT", "production")]);
        assert!(errs[0].starts_with("DEMO_MODE"), "{errs:?}");
        let errs = errors(&[
            ("ENVIRONMENT", "prod"),
            ("DEMO_MODE", "true"),
            ("RISKSHIELD_API_KEY", "k"),
        ]);
        assert!(errs[0].starts_with("DEMO_MODE"), "{errs:?}");
    }

    #[test]
    fn demo_false_without_credentials_is_an_error() {
        let errs = errors(&[("DEMO_MODE", "false")]);
        assert!(errs[0].starts_with("KEY_VAULT_URL"), "{errs:?}");
    }

    #[test]
    fn vault_url_must_be_https() {
        let errs = errors(&[("KEY_VAULT_URL", "http://v.vault.azure.net/")]);
        assert!(
            errs.iter().any(|e| e.starts_with("KEY_VAULT_URL")),
            "{errs:?}"
        );
    }

    #[test]
    fn plain_http_upstream_rules() {
        let key = ("RISKSHIELD_API_KEY", "k");
        assert!(config(&[key, ("RISKSHIELD_API_URL", "http://127.0.0.1:9/v1/")]).is_ok());
        assert!(
            config(&[
                key,
                ("RISKSHIELD_API_URL", "http://localhost:9"),
                ("ENVIRONMENT", "prod")
            ])
            .is_ok()
        );
        let errs = errors(&[key, ("RISKSHIELD_API_URL", "http://rs.example/v1")]);
        assert!(errs[0].starts_with("RISKSHIELD_API_URL"), "{errs:?}");
        assert!(
            config(&[
                key,
                ("RISKSHIELD_API_URL", "http://rs.example/v1"),
                ("ALLOW_INSECURE_UPSTREAM", "true")
            ])
            .is_ok()
        );
        let errs = errors(&[
            key,
            ("RISKSHIELD_API_URL", "http://rs.example/v1"),
            ("ALLOW_INSECURE_UPSTREAM", "true"),
            ("ENVIRONMENT", "prod"),
        ]);
        assert!(errs[0].starts_with("RISKSHIELD_API_URL"), "{errs:?}");
        let errs = errors(&[key, ("RISKSHIELD_API_URL", "ftp://rs.example")]);
        assert!(errs[0].starts_with("RISKSHIELD_API_URL"), "{errs:?}");
    }

    #[test]
    fn trailing_slash_is_trimmed_from_the_upstream_url() {
        let c = config(&[
            ("RISKSHIELD_API_KEY", "k"),
            ("RISKSHIELD_API_URL", "https://rs.example/v1/"),
        ])
        .expect("valid");
        assert_eq!(c.riskshield_api_url.as_str(), "https://rs.example/v1");
    }

    #[test]
    fn cors_origins_read_lists_and_json() {
        let c = config(&[("CORS_ORIGINS", "https://a.example, https://b.example")]).expect("valid");
        assert_eq!(
            c.cors_origins,
            CorsOrigins::List(vec![
                HeaderValue::from_static("https://a.example"),
                HeaderValue::from_static("https://b.example")
            ])
        );
        let c = config(&[("CORS_ORIGINS", r#"["https://a.example/"]"#)]).expect("valid");
        assert_eq!(
            c.cors_origins,
            CorsOrigins::List(vec![HeaderValue::from_static("https://a.example")])
        );
        assert!(errors(&[("CORS_ORIGINS", "[1,2]")])[0].starts_with("CORS_ORIGINS"));
        assert!(errors(&[("CORS_ORIGINS", "not an origin")])[0].starts_with("CORS_ORIGINS"));
    }

    #[test]
    fn workers_and_shutdown_delay() {
        let c = config(&[]).expect("defaults are valid");
        assert!(c.workers >= 1);
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        let c = config(&[("WORKERS", "1"), ("SHUTDOWN_DELAY", "5s")]).expect("valid");
        assert_eq!(c.workers, 1);
        assert_eq!(c.shutdown_delay, Duration::from_secs(5));
        assert_eq!(
            config(&[("SHUTDOWN_DELAY", "0s")])
                .expect("valid")
                .shutdown_delay,
            Duration::ZERO
        );
        let errs = errors(&[("WORKERS", "0"), ("SHUTDOWN_DELAY", "soon")]);
        assert!(errs[0].starts_with("WORKERS"), "{errs:?}");
        assert!(errs[1].starts_with("SHUTDOWN_DELAY"), "{errs:?}");
    }

    #[test]
    fn extra_ca_certs_must_be_readable_pem() {
        let errs = errors(&[("EXTRA_CA_CERTS", "/nonexistent/ca.pem")]);
        assert!(errs[0].starts_with("EXTRA_CA_CERTS"), "{errs:?}");
    }

    #[test]
    fn extra_ca_certs_must_be_trust_anchors() {
        // Valid PEM around DER that is no certificate: it parses as PEM but cannot anchor trust.
        let dir = std::env::temp_dir().join(format!("av-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("junk.pem");
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let errs = errors(&[("EXTRA_CA_CERTS", path.to_str().expect("utf-8 path"))]);
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            errs[0].starts_with("EXTRA_CA_CERTS") && errs[0].contains("trust anchor"),
            "{errs:?}"
        );
    }

    #[test]
    fn an_api_key_that_is_no_header_value_is_refused_without_showing_it() {
        let errs = errors(&[("RISKSHIELD_API_KEY", "sec ret\u{1}")]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("RISKSHIELD_API_KEY"), "{errs:?}");
        assert!(!errs[0].contains("sec ret"), "{errs:?}");
        // With a vault the variable is not used, so it is not judged.
        assert!(
            config(&[
                ("RISKSHIELD_API_KEY", "sec ret"),
                ("KEY_VAULT_URL", "https://v.vault.azure.net/")
            ])
            .is_ok()
        );
    }

    #[test]
    fn auth_is_off_by_default_and_entra_needs_issuer_and_audience() {
        assert_eq!(config(&[]).expect("valid").auth, None);
        let c = config(&[
            ("AUTH_MODE", "Entra"),
            ("AUTH_ISSUER", "https://login.microsoftonline.com/t/v2.0"),
            ("AUTH_AUDIENCE", "api://a, api://b"),
            ("AUTH_REQUIRED_ROLE", "Validate"),
        ])
        .expect("valid");
        let auth = c.auth.expect("auth on");
        assert_eq!(auth.audiences, ["api://a", "api://b"]);
        assert_eq!(auth.required_role.as_deref(), Some("Validate"));
        assert_eq!(
            auth.discovery_url(),
            "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration"
        );
        let errs = errors(&[("AUTH_MODE", "entra")]);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("AUTH_ISSUER"), "{errs:?}");
        assert!(errs[1].starts_with("AUTH_AUDIENCE"), "{errs:?}");
        assert!(errors(&[("AUTH_MODE", "basic")])[0].starts_with("AUTH_MODE"));
    }

    #[test]
    fn auth_settings_without_the_mode_are_refused() {
        let errs = errors(&[("AUTH_ISSUER", "https://issuer.example")]);
        assert!(
            errs[0].starts_with("AUTH_ISSUER") && errs[0].contains("AUTH_MODE=entra"),
            "{errs:?}"
        );
    }

    #[test]
    fn the_issuer_must_be_https_except_on_loopback_outside_prod() {
        let entra = |issuer: &'static str, env: &'static str| {
            vec![
                ("AUTH_MODE", "entra"),
                ("AUTH_ISSUER", issuer),
                ("AUTH_AUDIENCE", "api://a"),
                ("ENVIRONMENT", env),
                ("RISKSHIELD_API_KEY", "k"),
            ]
        };
        assert!(config(&entra("http://127.0.0.1:9/t", "dev")).is_ok());
        assert!(config(&entra("http://localhost:9/t", "dev")).is_ok());
        for (issuer, env) in [
            ("http://issuer.example/t", "dev"),
            ("http://127.0.0.1:9/t", "prod"),
            ("ftp://issuer.example", "dev"),
            ("issuer.example", "dev"),
        ] {
            let errs = errors(&entra(issuer, env));
            assert!(errs[0].starts_with("AUTH_ISSUER"), "{issuer}: {errs:?}");
        }
    }

    #[test]
    fn trusted_proxy_hops_replaces_trust_forwarded_for() {
        assert_eq!(config(&[]).expect("valid").trusted_proxy_hops, 0);
        assert_eq!(
            config(&[("TRUSTED_PROXY_HOPS", "1")])
                .expect("valid")
                .trusted_proxy_hops,
            1
        );
        let errs = errors(&[("TRUST_FORWARDED_FOR", "true")]);
        assert!(
            errs[0].starts_with("TRUST_FORWARDED_FOR") && errs[0].contains("TRUSTED_PROXY_HOPS"),
            "{errs:?}"
        );
        assert!(errors(&[("TRUSTED_PROXY_HOPS", "-1")])[0].starts_with("TRUSTED_PROXY_HOPS"));
    }
}
