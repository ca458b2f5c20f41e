//! Command line and configuration.
//!
//! Every option is a clap argument that also reads an environment variable, so `--help` documents both and a
//! flag wins over its variable. Clap only collects the raw strings: [`Config::from_lookup`] parses all of them
//! itself so that *every* problem is reported at once (clap would stop at the first), and so that tests can
//! build a configuration from a plain map without touching the process environment.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use http::{HeaderValue, Uri};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Exit code for invalid configuration or usage (BSD `EX_USAGE`).
pub const EXIT_CONFIG: i32 = 64;

/// Default vendor endpoint, from the vendor's documentation.
pub const DEFAULT_RISKSHIELD_URL: &str = "https://api.riskshield.com/v1";

/// The command line. Option values stay strings here; see [`Config::from_lookup`].
#[derive(Debug, Parser)]
#[command(name = "applicant-validator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// The command line, with the top-level `--help` also listing every `serve` option and its environment
    /// variable, so an operator finds the variables without knowing the subcommand's help exists.
    pub fn command_with_env_help() -> clap::Command {
        use clap::CommandFactory;
        let serve = ServeArgs::augment_args(clap::Command::new("serve"));
        let lines: Vec<String> = serve
            .get_arguments()
            .filter_map(|arg| {
                let env = arg.get_env()?.to_string_lossy().into_owned();
                Some(format!("  {env:<32} --{}", arg.get_long()?))
            })
            .collect();
        Cli::command().after_help(format!(
            "Environment variables of `serve` (a flag wins over its variable; `serve --help` says what each does):\n{}",
            lines.join("\n")
        ))
    }
}

/// The two things the binary does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeArgs>),
    /// Probe the local service's /health (for Docker's HEALTHCHECK); exit 0 only on HTTP 200.
    Healthcheck(HealthcheckArgs),
}

/// Where the service listens. Shared by `serve` and `healthcheck`: Docker runs the healthcheck as a separate
/// process that sees the container's environment but not the server's flags.
#[derive(Debug, Clone, Default, Args)]
pub struct ListenArgs {
    /// Bind address
    #[arg(long, env = "HOST", value_name = "ADDR")]
    pub host: Option<String>,
    /// Bind port
    #[arg(long, env = "PORT")]
    pub port: Option<String>,
}

/// Options of `healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    /// Overall deadline for the probe (keep it shorter than Docker's --timeout)
    #[arg(long, default_value = "3s", value_name = "DURATION")]
    pub timeout: String,
    /// Probe this http:// URL instead of http://127.0.0.1:$PORT/health
    #[arg(long)]
    pub url: Option<String>,
}

macro_rules! serve_args {
    ($($(#[doc = $doc:literal])* $field:ident => $env:literal),* $(,)?) => {
        /// Options of `serve`, each readable from its environment variable.
        #[derive(Debug, Clone, Default, Args)]
        pub struct ServeArgs {
            #[command(flatten)]
            pub listen: ListenArgs,
            $($(#[doc = $doc])* #[arg(long, env = $env, hide_env_values = true)] pub $field: Option<String>,)*
        }

        impl ServeArgs {
            /// The raw value of the option whose environment variable is `name`, as clap resolved it.
            pub fn lookup(&self, name: &str) -> Option<String> {
                match name {
                    "HOST" => self.listen.host.clone(),
                    "PORT" => self.listen.port.clone(),
                    $($env => self.$field.clone(),)*
                    _ => None,
                }
            }
        }
    };
}

serve_args! {
    /// Shown in /health; prod/production forbid demo mode and plain-http upstreams [default: dev]
    environment => "ENVIRONMENT",
    /// TRACE, DEBUG, INFO, WARN or ERROR [default: INFO]
    log_level => "LOG_LEVEL",
    /// json (one object per line) or pretty [default: json]
    log_format => "LOG_FORMAT",
    /// https URL of the Azure Key Vault holding the API key (read with Managed Identity)
    key_vault_url => "KEY_VAULT_URL",
    /// Name of the secret in the vault [default: RISKSHIELD-API-KEY]
    riskshield_api_key_secret_name => "RISKSHIELD_API_KEY_SECRET_NAME",
    /// The API key itself; only used when KEY_VAULT_URL is unset (local development)
    riskshield_api_key => "RISKSHIELD_API_KEY",
    /// Base URL; the service POSTs to {URL}/score [default: https://api.riskshield.com/v1]
    riskshield_api_url => "RISKSHIELD_API_URL",
    /// TCP+TLS connect timeout [default: 5s]
    riskshield_connect_timeout => "RISKSHIELD_CONNECT_TIMEOUT",
    /// Per-attempt timeout [default: 10s]
    riskshield_timeout => "RISKSHIELD_TIMEOUT",
    /// Total attempts for retryable failures, 1 = no retry [default: 3]
    riskshield_max_attempts => "RISKSHIELD_MAX_ATTEMPTS",
    /// Exponential backoff base (full jitter, each delay capped at 10s) [default: 1s]
    riskshield_retry_base_delay => "RISKSHIELD_RETRY_BASE_DELAY",
    /// Consecutive failed calls that open the circuit breaker [default: 5]
    circuit_failure_threshold => "CIRCUIT_FAILURE_THRESHOLD",
    /// How long the breaker stays open before one half-open probe [default: 60s]
    circuit_open_duration => "CIRCUIT_OPEN_DURATION",
    /// How often the vault secret is re-read [default: 5m]
    secret_cache_ttl => "SECRET_CACHE_TTL",
    /// Deadline for a whole inbound request, retries included [default: 30s]
    request_timeout => "REQUEST_TIMEOUT",
    /// Larger request bodies get 413 [default: 16384]
    max_body_bytes => "MAX_BODY_BYTES",
    /// Drain time after SIGTERM/SIGINT [default: 8s]
    shutdown_grace => "SHUTDOWN_GRACE",
    /// Allowed CORS origins: *, a comma-separated list or a JSON list [default: *]
    cors_origins => "CORS_ORIGINS",
    /// auto, true or false [default: auto]
    demo_mode => "DEMO_MODE",
    /// Also check the ID number's date and Luhn checksum [default: false]
    id_number_strict => "ID_NUMBER_STRICT",
    /// Allow a plain http:// RISKSHIELD_API_URL on a non-loopback host (never in prod) [default: false]
    allow_insecure_upstream => "ALLOW_INSECURE_UPSTREAM",
    /// PEM file of extra trusted root certificates for all outbound TLS
    extra_ca_certs => "EXTRA_CA_CERTS",
    /// Serve Prometheus metrics at /metrics [default: true]
    metrics_enabled => "METRICS_ENABLED",
    /// Per-client limit on validations per minute, 0 = off [default: 0]
    rate_limit_per_minute => "RATE_LIMIT_PER_MINUTE",
    /// Rate-limit bucket size [default: the per-minute limit]
    rate_limit_burst => "RATE_LIMIT_BURST",
    /// Key clients by the first X-Forwarded-For address instead of the peer address [default: false]
    trust_forwarded_for => "TRUST_FORWARDED_FOR",
    /// Time a client has to send its request headers [default: 10s]
    header_read_timeout => "HEADER_READ_TIMEOUT",
    /// Concurrent connections; further ones wait in the kernel's backlog [default: 4096]
    max_connections => "MAX_CONNECTIONS",
}

/// The vendor API key. Its `Debug` never shows the value, so it cannot leak through a log line by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Arc<str>);

impl ApiKey {
    /// Wraps a key read from the environment or the vault.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The key itself, for the one header that carries it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

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
    /// The upstream's base URL without a trailing slash.
    pub riskshield_api_url: String,
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
    pub trust_forwarded_for: bool,
    pub header_read_timeout: Duration,
    pub max_connections: usize,
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

/// Collects parse results and problems while the configuration is read.
struct Reader<F> {
    lookup: F,
    errors: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<F> {
    /// The trimmed value of `name`, `None` when unset or empty (an empty variable means "use the default").
    fn raw(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    fn parse<T>(
        &mut self,
        name: &str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self.raw(name) {
            None => default,
            Some(value) => match parse(&value) {
                Ok(parsed) => parsed,
                Err(why) => {
                    self.errors.push(format!("{name}: {why} (got {value:?})"));
                    default
                }
            },
        }
    }

    fn duration(&mut self, name: &str, default: Duration) -> Duration {
        self.parse(name, default, parse_duration)
    }

    fn number<T>(&mut self, name: &str, default: T, min: T, max: T) -> T
    where
        T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
    {
        self.parse(name, default, |v| match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(format!("must be a whole number from {min} to {max}")),
        })
    }

    fn flag(&mut self, name: &str, default: bool) -> bool {
        self.parse(name, default, parse_bool)
    }
}

/// Reads durations such as `250ms`, `5s`, `1m` (humantime syntax). Zero is refused: every duration here is a
/// timeout or a period, and zero would disable the thing it bounds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".into()),
        Ok(d) if d > Duration::from_secs(365 * 24 * 3600) => Err("must be at most a year".into()),
        Ok(d) => Ok(d),
        Err(_) => Err("must be a duration such as 250ms, 5s or 1m".into()),
    }
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err("must be true or false".into()),
    }
}

fn parse_level(value: &str) -> Result<tracing::Level, String> {
    match value.to_ascii_uppercase().as_str() {
        "TRACE" => Ok(tracing::Level::TRACE),
        "DEBUG" => Ok(tracing::Level::DEBUG),
        "INFO" => Ok(tracing::Level::INFO),
        "WARN" | "WARNING" => Ok(tracing::Level::WARN),
        "ERROR" => Ok(tracing::Level::ERROR),
        _ => Err("must be one of TRACE, DEBUG, INFO, WARN, ERROR".into()),
    }
}

/// Reads HOST: an IP address, or `localhost`.
pub fn parse_host(value: &str) -> Result<IpAddr, String> {
    if value.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| "must be an IP address such as 0.0.0.0, :: or 127.0.0.1".into())
}

/// Reads PORT.
pub fn parse_port(value: &str) -> Result<u16, String> {
    value
        .parse()
        .map_err(|_| "must be a port number from 0 to 65535".into())
}

fn parse_cors(value: &str) -> Result<CorsOrigins, String> {
    let items: Vec<String> = if value.starts_with('[') {
        serde_json::from_str(value).map_err(|_| "must be a JSON list of strings".to_string())?
    } else {
        value
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    if items.is_empty() || items.iter().any(|o| o == "*") {
        return Ok(CorsOrigins::Any);
    }
    let mut origins = Vec::with_capacity(items.len());
    for item in items {
        let origin = item.trim_end_matches('/');
        let valid = origin.parse::<Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some()
                && u.path() == "/"
        });
        match HeaderValue::from_str(origin) {
            Ok(v) if valid => origins.push(v),
            _ => {
                return Err(format!(
                    "{item:?} is not an origin such as https://app.example"
                ));
            }
        }
    }
    Ok(CorsOrigins::List(origins))
}

/// True when the host of a URL is loopback (localhost, 127.0.0.0/8, ::1).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_prod(environment: &str) -> bool {
    matches!(
        environment.to_ascii_lowercase().as_str(),
        "prod" | "production"
    )
}

impl Config {
    /// Reads the configuration from `lookup` (an environment-variable name to its value) and reports every
    /// problem at once.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut r = Reader {
            lookup,
            errors: Vec::new(),
        };
        let host = r.parse("HOST", IpAddr::V4(Ipv4Addr::UNSPECIFIED), parse_host);
        let port = r.parse("PORT", 8080, parse_port);
        let environment = r.raw("ENVIRONMENT").unwrap_or_else(|| "dev".into());
        let prod = is_prod(&environment);
        let log_level = r.parse("LOG_LEVEL", tracing::Level::INFO, parse_level);
        let log_format = r.parse("LOG_FORMAT", LogFormat::Json, |v| {
            match v.to_ascii_lowercase().as_str() {
                "json" => Ok(LogFormat::Json),
                "pretty" | "text" => Ok(LogFormat::Pretty),
                _ => Err("must be json or pretty".into()),
            }
        });

        let secret_cache_ttl = r.duration("SECRET_CACHE_TTL", Duration::from_secs(300));
        let vault_url = r.parse("KEY_VAULT_URL", None, |v| {
            let uri: Uri = v.parse().map_err(|_| "must be a URL".to_string())?;
            if uri.scheme_str() != Some("https") || uri.host().is_none() {
                return Err(
                    "must be an https:// URL such as https://my-vault.vault.azure.net/".into(),
                );
            }
            Ok(Some(v.to_owned()))
        });
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
        let demo_setting = r.parse("DEMO_MODE", None, |v| {
            match v.to_ascii_lowercase().as_str() {
                "auto" => Ok(None),
                other => parse_bool(other)
                    .map(Some)
                    .map_err(|_| "must be auto, true or false".into()),
            }
        });
        let has_credentials = vault_set || env_key.is_some();
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
            (None, Some(key)) => Some(KeySourceConfig::Env(ApiKey::new(key))),
            (None, None) => None,
        };

        let allow_insecure = r.flag("ALLOW_INSECURE_UPSTREAM", false);
        let riskshield_api_url = r.parse(
            "RISKSHIELD_API_URL",
            DEFAULT_RISKSHIELD_URL.to_string(),
            |v| check_upstream_url(v, prod, allow_insecure),
        );
        let connect_timeout = r.duration("RISKSHIELD_CONNECT_TIMEOUT", Duration::from_secs(5));
        let attempt_timeout = r.duration("RISKSHIELD_TIMEOUT", Duration::from_secs(10));
        let max_attempts = r.number("RISKSHIELD_MAX_ATTEMPTS", 3u32, 1, 10);
        let retry_base_delay = r.duration("RISKSHIELD_RETRY_BASE_DELAY", Duration::from_secs(1));
        let circuit_failure_threshold = r.number("CIRCUIT_FAILURE_THRESHOLD", 5u32, 1, 1_000_000);
        let circuit_open_duration = r.duration("CIRCUIT_OPEN_DURATION", Duration::from_secs(60));
        let request_timeout = r.duration("REQUEST_TIMEOUT", Duration::from_secs(30));
        let max_body_bytes = r.number("MAX_BODY_BYTES", 16_384usize, 1, 64 * 1024 * 1024);
        let shutdown_grace = r.duration("SHUTDOWN_GRACE", Duration::from_secs(8));
        let cors_origins = r.parse("CORS_ORIGINS", CorsOrigins::Any, parse_cors);
        let id_number_strict = r.flag("ID_NUMBER_STRICT", false);
        let extra_ca_certs = r.parse("EXTRA_CA_CERTS", Vec::new(), read_pem_roots);
        let metrics_enabled = r.flag("METRICS_ENABLED", true);
        let rate_limit_per_minute = r.number("RATE_LIMIT_PER_MINUTE", 0u32, 0, 1_000_000_000);
        let rate_limit_burst =
            r.number("RATE_LIMIT_BURST", rate_limit_per_minute, 0, 1_000_000_000);
        if rate_limit_per_minute > 0 && rate_limit_burst == 0 {
            r.errors.push(
                "RATE_LIMIT_BURST: must be at least 1 when RATE_LIMIT_PER_MINUTE is set".into(),
            );
        }
        let trust_forwarded_for = r.flag("TRUST_FORWARDED_FOR", false);
        let header_read_timeout = r.duration("HEADER_READ_TIMEOUT", Duration::from_secs(10));
        let max_connections = r.number("MAX_CONNECTIONS", 4096usize, 1, 1_000_000);

        if !r.errors.is_empty() {
            return Err(ConfigErrors(r.errors));
        }
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
            trust_forwarded_for,
            header_read_timeout,
            max_connections,
        })
    }
}

fn check_upstream_url(value: &str, prod: bool, allow_insecure: bool) -> Result<String, String> {
    let uri: Uri = value.parse().map_err(|_| "must be a URL".to_string())?;
    let host = uri.host().ok_or("must be an absolute URL with a host")?;
    if uri.query().is_some() {
        return Err("must not have a query string".into());
    }
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback_host(host) => {}
        Some("http") if prod => {
            return Err("plain http:// is refused in prod except on a loopback host".into());
        }
        Some("http") if !allow_insecure => {
            return Err(
                "plain http:// on a non-loopback host needs ALLOW_INSECURE_UPSTREAM=true".into(),
            );
        }
        Some("http") => {}
        _ => return Err("must be an http:// or https:// URL".into()),
    }
    Ok(value.trim_end_matches('/').to_owned())
}

fn read_pem_roots(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let path = PathBuf::from(path);
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(format!("{} holds no PEM certificate", path.display())),
        Err(e) => Err(format!("{} is not valid PEM: {e}", path.display())),
    }
}

/// Where `healthcheck` connects: HOST/PORT with the unspecified addresses mapped to loopback, because a probe
/// inside the container must reach the server on the loopback interface.
pub fn probe_addr(listen: &ListenArgs) -> Result<std::net::SocketAddr, Vec<String>> {
    let mut errors = Vec::new();
    let host = match listen
        .host
        .as_deref()
        .map(str::trim)
        .filter(|h| !h.is_empty())
    {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(h) => parse_host(h).unwrap_or_else(|why| {
            errors.push(format!("HOST: {why} (got {h:?})"));
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        }),
    };
    let host = match host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let port = match listen
        .port
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        None => 8080,
        Some(p) => parse_port(p).unwrap_or_else(|why| {
            errors.push(format!("PORT: {why} (got {p:?})"));
            0
        }),
    };
    if errors.is_empty() {
        Ok((host, port).into())
    } else {
        Err(errors)
    }
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
        assert_eq!(c.riskshield_api_url, DEFAULT_RISKSHIELD_URL);
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
        assert_eq!(c.riskshield_api_url, "https://rs.example/v1");
    }

    #[test]
    fn durations_read_units_and_refuse_zero() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5").is_err());
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
    fn extra_ca_certs_must_be_readable_pem() {
        let errs = errors(&[("EXTRA_CA_CERTS", "/nonexistent/ca.pem")]);
        assert!(errs[0].starts_with("EXTRA_CA_CERTS"), "{errs:?}");
    }

    #[test]
    fn probe_maps_unspecified_hosts_to_loopback() {
        let listen = |h: &str, p: &str| ListenArgs {
            host: Some(h.into()),
            port: Some(p.into()),
        };
        assert_eq!(
            probe_addr(&listen("0.0.0.0", "9000")),
            Ok("127.0.0.1:9000".parse().expect("addr"))
        );
        assert_eq!(
            probe_addr(&listen("::", "9000")),
            Ok("[::1]:9000".parse().expect("addr"))
        );
        assert_eq!(
            probe_addr(&ListenArgs::default()),
            Ok("127.0.0.1:8080".parse().expect("addr"))
        );
        assert!(probe_addr(&listen("nowhere", "x")).is_err_and(|e| e.len() == 2));
    }
}
