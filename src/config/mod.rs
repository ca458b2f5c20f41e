//! Configuration: every setting of `serve`, parsed and validated once, every problem reported at once.
//!
//! The settings are declared once, in [`settings`]: name, flag, default and help. The command line
//! ([`crate::cli`]) only collects raw strings; [`Config::from_lookup`] parses all of them itself so that *every*
//! problem is reported at once (a command-line parser would stop at the first), and so that tests can build a
//! configuration from a plain map without touching the process environment. The value parsers live in
//! [`parse`].

pub(crate) mod parse;
pub mod settings;
mod url;

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use http::HeaderValue;
use rustls_pki_types::CertificateDer;

use crate::domain::ApiKey;
use parse::{
    Reader, number, parse_bool, parse_cors, parse_host, parse_level, parse_port, parse_vault_url,
    read_pem_roots,
};
pub use parse::{is_loopback_host, parse_duration};
pub use settings::SETTINGS;
pub use url::RiskShieldUrl;
use url::{check_issuer, check_upstream_url};

/// Exit code for invalid configuration or usage (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

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
    /// problem at once. Each section has its reader; they share one [`Reader`], which collects the problems,
    /// and a section is `None` only when one of them is among those problems.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader::new(lookup);
        let environment = r.get("ENVIRONMENT", |v| Ok(v.to_owned()));
        let prod = environment.as_deref().is_some_and(is_prod);
        let serving = read_serving(&mut r);
        let logging = read_logging(&mut r);
        let keys = read_key_source(&mut r, environment.as_deref().unwrap_or_default(), prod);
        let riskshield = read_riskshield(&mut r, prod);
        let requests = read_requests(&mut r);
        let extra_ca_certs = r
            .given("EXTRA_CA_CERTS", read_pem_roots)
            .unwrap_or_default();
        let metrics_enabled = r.get("METRICS_ENABLED", parse_bool);
        let auth = read_auth(&mut r, prod);

        let (
            Some(environment),
            Some(serving),
            Some((log_level, log_format)),
            Some((key_source, demo_mode)),
            Some(riskshield),
            Some(requests),
            Some(metrics_enabled),
            true,
        ) = (
            environment,
            serving,
            logging,
            keys,
            riskshield,
            requests,
            metrics_enabled,
            r.errors.is_empty(),
        )
        else {
            return Err(ConfigErrors(r.errors));
        };
        Ok(Config {
            host: serving.host,
            port: serving.port,
            environment,
            log_level,
            log_format,
            key_source,
            demo_mode,
            riskshield_api_url: riskshield.url,
            connect_timeout: riskshield.connect_timeout,
            attempt_timeout: riskshield.attempt_timeout,
            max_attempts: riskshield.max_attempts,
            retry_base_delay: riskshield.retry_base_delay,
            circuit_failure_threshold: riskshield.circuit_failure_threshold,
            circuit_open_duration: riskshield.circuit_open_duration,
            request_timeout: requests.request_timeout,
            max_body_bytes: requests.max_body_bytes,
            shutdown_grace: serving.shutdown_grace,
            cors_origins: requests.cors_origins,
            id_number_strict: requests.id_number_strict,
            extra_ca_certs,
            metrics_enabled,
            rate_limit_per_minute: requests.rate_limit_per_minute,
            rate_limit_burst: requests.rate_limit_burst,
            trusted_proxy_hops: requests.trusted_proxy_hops,
            header_read_timeout: serving.header_read_timeout,
            max_header_bytes: serving.max_header_bytes,
            send_timeout: serving.send_timeout,
            max_connections: serving.max_connections,
            workers: serving.workers,
            shutdown_delay: serving.shutdown_delay,
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

fn read_serving<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> Option<Serving> {
    let host = r.get("HOST", parse_host);
    let port = r.get("PORT", parse_port);
    let header_read_timeout = r.get("HEADER_READ_TIMEOUT", parse_duration);
    // hyper's read buffer cannot be smaller than 8 KiB.
    let max_header_bytes = r.get("MAX_HEADER_BYTES", number(8192usize, 1024 * 1024));
    let send_timeout = r.get("SEND_TIMEOUT", parse_duration);
    let max_connections = r.get("MAX_CONNECTIONS", number(1usize, 1_000_000));
    let workers = r.given("WORKERS", number(1usize, 1024));
    let shutdown_delay = r.get("SHUTDOWN_DELAY", |v| {
        // Zero is this setting's default ("close at once"), so unlike the timeouts it is accepted.
        match humantime::parse_duration(v) {
            Ok(d) if d.is_zero() => Ok(d),
            _ => parse_duration(v),
        }
    });
    let shutdown_grace = r.get("SHUTDOWN_GRACE", parse_duration);
    Some(Serving {
        host: host?,
        port: port?,
        header_read_timeout: header_read_timeout?,
        max_header_bytes: max_header_bytes?,
        send_timeout: send_timeout?,
        max_connections: max_connections?,
        workers: workers.unwrap_or_else(one_per_cpu),
        shutdown_delay: shutdown_delay?,
        shutdown_grace: shutdown_grace?,
    })
}

/// WORKERS when it is not given.
fn one_per_cpu() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

fn read_logging<F: Fn(&str) -> Option<String>>(
    r: &mut Reader<F>,
) -> Option<(tracing::Level, LogFormat)> {
    let level = r.get("LOG_LEVEL", parse_level);
    let format = r.get("LOG_FORMAT", |v| match v.to_ascii_lowercase().as_str() {
        "json" => Ok(LogFormat::Json),
        "pretty" | "text" => Ok(LogFormat::Pretty),
        _ => Err("must be json or pretty".into()),
    });
    Some((level?, format?))
}

/// Where the API key comes from, and whether the service runs in demo mode (`None` as the source then).
fn read_key_source<F: Fn(&str) -> Option<String>>(
    r: &mut Reader<F>,
    environment: &str,
    prod: bool,
) -> Option<(Option<KeySourceConfig>, bool)> {
    let secret_cache_ttl = r.get("SECRET_CACHE_TTL", parse_duration);
    let vault_url = r.given("KEY_VAULT_URL", parse_vault_url);
    let vault_set = r.raw("KEY_VAULT_URL").is_some();
    let secret_name = r.get("RISKSHIELD_API_KEY_SECRET_NAME", |v| {
        if v.len() <= 127 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            Ok(v.to_owned())
        } else {
            Err("must be 1-127 letters, digits and hyphens".into())
        }
    });
    let env_key = r.raw("RISKSHIELD_API_KEY");
    // Checked only where it is used (no vault); the message must not repeat the key, so no `r.given`.
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
    // `None` inside: auto.
    let demo_setting = r.get("DEMO_MODE", |v| match v.to_ascii_lowercase().as_str() {
        "auto" => Ok(None),
        other => parse_bool(other)
            .map(Some)
            .map_err(|_| "must be auto, true or false".into()),
    });
    let has_credentials = vault_set || env_key_set;
    let demo_mode = demo_setting.flatten().unwrap_or(!has_credentials && !prod);
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
    let (secret_cache_ttl, secret_name) = (secret_cache_ttl?, secret_name?);
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
    Some((key_source, demo_mode))
}

/// The vendor: its URL, timeouts, retries and breaker.
struct RiskShield {
    url: RiskShieldUrl,
    connect_timeout: Duration,
    attempt_timeout: Duration,
    max_attempts: u32,
    retry_base_delay: Duration,
    circuit_failure_threshold: u32,
    circuit_open_duration: Duration,
}

fn read_riskshield<F: Fn(&str) -> Option<String>>(
    r: &mut Reader<F>,
    prod: bool,
) -> Option<RiskShield> {
    // While ALLOW_INSECURE_UPSTREAM is itself refused, the URL is judged by the stricter rule.
    let allow_insecure = r
        .get("ALLOW_INSECURE_UPSTREAM", parse_bool)
        .unwrap_or(false);
    let url = r.get("RISKSHIELD_API_URL", |v| {
        check_upstream_url(v, prod, allow_insecure)
    });
    let connect_timeout = r.get("RISKSHIELD_CONNECT_TIMEOUT", parse_duration);
    let attempt_timeout = r.get("RISKSHIELD_TIMEOUT", parse_duration);
    let max_attempts = r.get("RISKSHIELD_MAX_ATTEMPTS", number(1u32, 10));
    let retry_base_delay = r.get("RISKSHIELD_RETRY_BASE_DELAY", parse_duration);
    let circuit_failure_threshold = r.get("CIRCUIT_FAILURE_THRESHOLD", number(1u32, 1_000_000));
    let circuit_open_duration = r.get("CIRCUIT_OPEN_DURATION", parse_duration);
    Some(RiskShield {
        url: url?,
        connect_timeout: connect_timeout?,
        attempt_timeout: attempt_timeout?,
        max_attempts: max_attempts?,
        retry_base_delay: retry_base_delay?,
        circuit_failure_threshold: circuit_failure_threshold?,
        circuit_open_duration: circuit_open_duration?,
    })
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

fn read_requests<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>) -> Option<Requests> {
    let request_timeout = r.get("REQUEST_TIMEOUT", parse_duration);
    let max_body_bytes = r.get("MAX_BODY_BYTES", number(1usize, 64 * 1024 * 1024));
    let cors_origins = r.get("CORS_ORIGINS", parse_cors);
    let id_number_strict = r.get("ID_NUMBER_STRICT", parse_bool);
    let rate_limit_per_minute = r.get("RATE_LIMIT_PER_MINUTE", number(0u32, 1_000_000_000));
    let rate_limit_burst = r
        .given("RATE_LIMIT_BURST", number(0u32, 1_000_000_000))
        .or(rate_limit_per_minute);
    if rate_limit_per_minute.is_some_and(|n| n > 0) && rate_limit_burst == Some(0) {
        r.errors
            .push("RATE_LIMIT_BURST: must be at least 1 when RATE_LIMIT_PER_MINUTE is set".into());
    }
    let trusted_proxy_hops = r.get("TRUSTED_PROXY_HOPS", number(0u32, 16));
    if r.raw("TRUST_FORWARDED_FOR").is_some() {
        r.errors.push(
            "TRUST_FORWARDED_FOR: replaced by TRUSTED_PROXY_HOPS (the number of proxies in front that append to X-Forwarded-For, e.g. 1 behind Container Apps ingress); unset TRUST_FORWARDED_FOR"
                .into(),
        );
    }
    Some(Requests {
        request_timeout: request_timeout?,
        max_body_bytes: max_body_bytes?,
        cors_origins: cors_origins?,
        id_number_strict: id_number_strict?,
        rate_limit_per_minute: rate_limit_per_minute?,
        rate_limit_burst: rate_limit_burst?,
        trusted_proxy_hops: trusted_proxy_hops?,
    })
}

/// The AUTH_* block. With AUTH_MODE=off the other variables must be unset: an operator who sets an issuer
/// but forgets the mode would otherwise believe validations are protected while they are not. `None`: off
/// (or refused, with the problem recorded).
fn read_auth<F: Fn(&str) -> Option<String>>(r: &mut Reader<F>, prod: bool) -> Option<AuthConfig> {
    let entra = r.get("AUTH_MODE", |v| match v.to_ascii_lowercase().as_str() {
        "off" => Ok(false),
        "entra" => Ok(true),
        _ => Err("must be off or entra".into()),
    });
    const DEPENDENT: [&str; 3] = ["AUTH_ISSUER", "AUTH_AUDIENCE", "AUTH_REQUIRED_ROLE"];
    if entra != Some(true) {
        for name in DEPENDENT {
            if entra == Some(false) && r.raw(name).is_some() {
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
        Some(_) => r.given("AUTH_ISSUER", |v| check_issuer(v, prod)),
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
        assert_eq!(
            c.riskshield_api_url.as_str(),
            "https://api.riskshield.com/v1"
        );
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.cors_origins, CorsOrigins::Any);
    }

    /// A reader that falls back to a value of its own instead of the table's default text would make the
    /// service disagree with `--help` and the README: giving each default text explicitly must change nothing.
    #[test]
    fn each_default_is_the_one_the_settings_table_declares() {
        let defaults = format!("{:?}", config(&[]).expect("the defaults are valid"));
        for s in SETTINGS {
            if let settings::DefaultValue::Text(text) = s.default {
                let given = config(&[(s.env, text)]).expect("a default given explicitly is valid");
                assert_eq!(format!("{given:?}"), defaults, "{}={text}", s.env);
            }
        }
    }

    #[test]
    fn the_configuration_reads_exactly_the_declared_settings() {
        let asked = std::cell::RefCell::new(std::collections::BTreeSet::new());
        Config::from_lookup(|name| {
            asked.borrow_mut().insert(name.to_owned());
            None
        })
        .expect("the defaults are valid");
        let asked = asked.into_inner();
        let declared: std::collections::BTreeSet<String> =
            SETTINGS.iter().map(|s| s.env.to_owned()).collect();
        assert!(
            asked == declared,
            "read but not in the settings table: {:?}; in the table but never read: {:?}",
            asked.difference(&declared).collect::<Vec<_>>(),
            declared.difference(&asked).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_setting_without_a_default_text_is_reported_not_guessed() {
        let mut r = Reader::new(|_: &str| None);
        assert_eq!(r.get("NOT_A_SETTING", |v| Ok(v.to_owned())), None);
        assert_eq!(r.get("KEY_VAULT_URL", |v| Ok(v.to_owned())), None);
        assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
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
    fn demo_mode_asked_for_uses_no_key_even_when_one_is_given() {
        let c = config(&[("DEMO_MODE", "true"), ("RISKSHIELD_API_KEY", "k-123")]).expect("valid");
        assert!(c.demo_mode);
        assert!(c.key_source.is_none(), "{:?}", c.key_source);
    }

    #[test]
    fn max_body_bytes_goes_up_to_64_mib() {
        let c = config(&[("MAX_BODY_BYTES", "67108864")]).expect("valid");
        assert_eq!(c.max_body_bytes, 64 * 1024 * 1024);
        let errs = errors(&[("MAX_BODY_BYTES", "67108865")]);
        assert!(errs[0].starts_with("MAX_BODY_BYTES"), "{errs:?}");
    }

    #[test]
    fn a_burst_of_zero_is_refused_only_with_a_rate_limit() {
        let errs = errors(&[("RATE_LIMIT_PER_MINUTE", "60"), ("RATE_LIMIT_BURST", "0")]);
        assert!(errs[0].starts_with("RATE_LIMIT_BURST"), "{errs:?}");
        let c =
            config(&[("RATE_LIMIT_PER_MINUTE", "0"), ("RATE_LIMIT_BURST", "0")]).expect("no limit");
        assert_eq!((c.rate_limit_per_minute, c.rate_limit_burst), (0, 0));
    }

    /// What `serve` prints when it refuses its configuration: one problem per line.
    #[test]
    fn the_problems_are_shown_one_per_line() {
        let shown = ConfigErrors(vec!["PORT: a".into(), "LOG_LEVEL: b".into()]).to_string();
        assert_eq!(shown, "PORT: a\nLOG_LEVEL: b");
    }

    #[test]
    fn log_format_is_json_or_pretty_also_called_text() {
        for (given, format) in [
            ("json", LogFormat::Json),
            ("JSON", LogFormat::Json),
            ("pretty", LogFormat::Pretty),
            ("text", LogFormat::Pretty),
        ] {
            let c = config(&[("LOG_FORMAT", given)]).expect("valid");
            assert_eq!(c.log_format, format, "{given}");
        }
        assert!(errors(&[("LOG_FORMAT", "xml")])[0].starts_with("LOG_FORMAT"));
    }

    #[test]
    fn the_secret_name_is_1_to_127_letters_digits_and_hyphens() {
        let name = |n: &str| {
            config(&[
                ("KEY_VAULT_URL", "https://kv.vault.azure.net"),
                ("RISKSHIELD_API_KEY_SECRET_NAME", n),
            ])
        };
        for good in ["riskshield-api-key", "A1", &"k".repeat(127)] {
            assert!(name(good).is_ok(), "{good}");
        }
        for bad in [&"k".repeat(128), "risk_shield", "key.1", "ключ"] {
            let errs = name(bad).expect_err(bad).0;
            assert!(
                errs[0].starts_with("RISKSHIELD_API_KEY_SECRET_NAME"),
                "{errs:?}"
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
        // An origin is a scheme of the web, a host and nothing after it.
        for bad in ["ftp://a.example", "https://a.example/app", "a.example"] {
            let errs = errors(&[("CORS_ORIGINS", bad)]);
            assert!(errs[0].starts_with("CORS_ORIGINS"), "{bad}: {errs:?}");
        }
        assert!(config(&[("CORS_ORIGINS", "http://localhost:3000")]).is_ok());
    }

    #[test]
    fn workers_and_shutdown_delay() {
        let c = config(&[]).expect("defaults are valid");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(c.workers, cpus, "one worker per CPU by default");
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
        // Zero is let through, the other durations' bounds are not.
        let errs = errors(&[("SHUTDOWN_DELAY", "400days")]);
        assert!(errs[0].contains("at most a year"), "{errs:?}");
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
