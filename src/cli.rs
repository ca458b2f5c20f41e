//! The command line (clap): the subcommands and their options, each option also read from its environment
//! variable so that `--help` documents both and a flag wins over its variable.
//!
//! Values stay raw strings here; parsing and validation belong to [`crate::config`], which reports every
//! problem at once.

use clap::{Args, Parser, Subcommand};

/// The command line. Option values stay strings here; see [`Config::from_lookup`](crate::Config::from_lookup).
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

/// The things the binary does.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeArgs>),
    /// Probe the local service's /health (for Docker's HEALTHCHECK); exit 0 only on HTTP 200.
    Healthcheck(HealthcheckArgs),
    /// Check, with the service's own configuration and code, that this container reaches everything it needs:
    /// DNS, TCP and TLS to each host, the identity's token, the Key Vault secret. Binds no port, never calls
    /// /score, never prints a key or token; exit 0 when no check failed, 1 otherwise, 64 for invalid
    /// configuration.
    Diagnose(Box<DiagnoseArgs>),
}

/// Options of `diagnose`: those of `serve` (same flags, same variables), plus the output format and a
/// per-check deadline.
#[derive(Debug, Clone, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Print one JSON object {"checks":[{"name","status","duration_ms","detail"}],"ok":bool} instead of a table
    #[arg(long)]
    pub json: bool,
    /// Deadline for each check
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub timeout: String,
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
        #[derive(Clone, Default, Args)]
        pub struct ServeArgs {
            #[command(flatten)]
            pub listen: ListenArgs,
            $($(#[doc = $doc])* #[arg(long, env = $env, hide_env_values = true)] pub $field: Option<String>,)*
        }

        /// Names the options that are set, never their values: one of them is the API key.
        impl std::fmt::Debug for ServeArgs {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut out = f.debug_struct("ServeArgs");
                out.field("listen", &self.listen);
                $(out.field(stringify!($field), &self.$field.as_ref().map(|_| "set"));)*
                out.finish()
            }
        }

        impl ServeArgs {
            /// The validated configuration these options describe. `serve` and `diagnose` both call this one
            /// function, so they read the configuration identically (and the parser is compiled once).
            pub fn config(&self) -> Result<crate::Config, crate::config::ConfigErrors> {
                crate::Config::from_lookup(|name| self.lookup(name))
            }

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
    /// The API key itself; only used when KEY_VAULT_URL is unset (local development). Prefer the environment
    /// variable: a value given on the command line is visible to every user of the machine in `ps`
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
    /// Proxies in front that append to X-Forwarded-For (Container Apps ingress: 1); 0 keys clients by the TCP
    /// peer [default: 0]
    trusted_proxy_hops => "TRUSTED_PROXY_HOPS",
    /// Replaced by TRUSTED_PROXY_HOPS; setting it is a configuration error
    trust_forwarded_for => "TRUST_FORWARDED_FOR",
    /// Time a client has to send its request headers [default: 10s]
    header_read_timeout => "HEADER_READ_TIMEOUT",
    /// Concurrent connections; further ones wait in the kernel's backlog [default: 4096]
    max_connections => "MAX_CONNECTIONS",
    /// Serving threads, each with its own listener and upstream connections [default: one per CPU]
    workers => "WORKERS",
    /// After SIGTERM/SIGINT, keep serving this long with /ready answering 503 before closing the listener [default: 0s]
    shutdown_delay => "SHUTDOWN_DELAY",
    /// Caller authentication: off, or entra (POST validate requires a bearer token from AUTH_ISSUER)
    /// [default: off]
    auth_mode => "AUTH_MODE",
    /// Token issuer with AUTH_MODE=entra, e.g. https://login.microsoftonline.com/{tenant}/v2.0; its
    /// /.well-known/openid-configuration names the signing keys
    auth_issuer => "AUTH_ISSUER",
    /// Accepted token audiences with AUTH_MODE=entra, comma-separated, e.g. api://applicant-validator
    auth_audience => "AUTH_AUDIENCE",
    /// App role the token's roles claim must contain (403 otherwise)
    auth_required_role => "AUTH_REQUIRED_ROLE",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_names_options_but_never_shows_values() {
        let args = ServeArgs {
            riskshield_api_key: Some("s3cret-key".into()),
            ..ServeArgs::default()
        };
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret-key"), "{shown}");
        assert!(
            shown.contains("riskshield_api_key: Some(\"set\")"),
            "{shown}"
        );
        assert_eq!(
            args.lookup("RISKSHIELD_API_KEY").as_deref(),
            Some("s3cret-key")
        );
    }

    #[test]
    fn help_warns_that_a_key_on_the_command_line_is_visible() {
        let help = Cli::command_with_env_help()
            .find_subcommand_mut("serve")
            .expect("serve exists")
            .render_long_help()
            .to_string();
        assert!(help.contains("visible to every user"), "{help}");
        assert!(help.contains("TRUSTED_PROXY_HOPS"), "{help}");
    }
}
