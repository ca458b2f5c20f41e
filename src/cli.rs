//! The command line: the subcommands and their options, each `serve` option also read from its environment
//! variable so that `--help` documents both and a flag wins over its variable.
//!
//! Values stay raw strings here; parsing and validation belong to [`crate::config`], which reports every
//! problem at once.
//!
//! The options are one table ([`SERVE_OPTIONS`]) read by a small parser on lexopt, which also renders the help
//! from it. clap's derive did the same for about 220 KB more of the static binary (docs/container.md, size
//! table); the command line is read once per process, so nothing here is on the request path.

use std::collections::BTreeMap;
use std::ffi::OsString;

/// The program's name in usage lines and messages.
const NAME: &str = "applicant-validator";

/// The things the binary does.
#[derive(Debug)]
pub enum Command {
    /// Run the HTTP service.
    Serve(Box<ServeArgs>),
    /// Probe the local service's /health (for Docker's HEALTHCHECK).
    Healthcheck(HealthcheckArgs),
    /// Check that this container reaches everything it needs.
    Diagnose(Box<DiagnoseArgs>),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Run a subcommand.
    Run(Command),
    /// Print this text (help or version) to stdout and exit 0.
    Print(String),
}

/// A command line that cannot be run, with the subcommand it was for: a healthcheck reports usage errors with
/// exit code 1 (Docker reserves 2), every other command with 64.
#[derive(Debug)]
pub struct UsageError {
    /// The complete message, ending with a pointer to `--help`.
    pub message: String,
    /// Whether the command line was a `healthcheck`.
    pub healthcheck: bool,
}

/// One option of `serve` (and `diagnose`): its flag, its environment variable, its value's name and its help.
#[derive(Debug)]
pub struct ServeOption {
    pub long: &'static str,
    pub env: &'static str,
    pub value: &'static str,
    pub help: &'static str,
}

macro_rules! serve_options {
    ($($long:literal $env:literal $value:literal $help:literal,)*) => {
        /// Every option of `serve`, in the order `--help` lists them.
        pub const SERVE_OPTIONS: &[ServeOption] = &[
            $(ServeOption { long: $long, env: $env, value: $value, help: $help },)*
        ];
    };
}

serve_options! {
    "host" "HOST" "ADDR" "Bind address [default: 0.0.0.0]",
    "port" "PORT" "PORT" "Bind port [default: 8080]",
    "environment" "ENVIRONMENT" "NAME" "Shown in /health; prod/production forbid demo mode and plain-http upstreams [default: dev]",
    "log-level" "LOG_LEVEL" "LEVEL" "TRACE, DEBUG, INFO, WARN or ERROR [default: INFO]",
    "log-format" "LOG_FORMAT" "FORMAT" "json (one object per line) or pretty [default: json]",
    "key-vault-url" "KEY_VAULT_URL" "URL" "https URL of the Azure Key Vault holding the API key (read with Managed Identity)",
    "riskshield-api-key-secret-name" "RISKSHIELD_API_KEY_SECRET_NAME" "NAME" "Name of the secret in the vault [default: RISKSHIELD-API-KEY]",
    "riskshield-api-key" "RISKSHIELD_API_KEY" "KEY" "The API key itself; only used when KEY_VAULT_URL is unset (local development). Prefer the environment variable: a value given on the command line is visible to every user of the machine in `ps`",
    "riskshield-api-url" "RISKSHIELD_API_URL" "URL" "Base URL; the service POSTs to {URL}/score [default: https://api.riskshield.com/v1]",
    "riskshield-connect-timeout" "RISKSHIELD_CONNECT_TIMEOUT" "DURATION" "TCP+TLS connect timeout [default: 5s]",
    "riskshield-timeout" "RISKSHIELD_TIMEOUT" "DURATION" "Per-attempt timeout [default: 10s]",
    "riskshield-max-attempts" "RISKSHIELD_MAX_ATTEMPTS" "N" "Total attempts for retryable failures, 1 = no retry [default: 3]",
    "riskshield-retry-base-delay" "RISKSHIELD_RETRY_BASE_DELAY" "DURATION" "Exponential backoff base (full jitter, each delay capped at 10s) [default: 1s]",
    "circuit-failure-threshold" "CIRCUIT_FAILURE_THRESHOLD" "N" "Consecutive failed calls that open the circuit breaker [default: 5]",
    "circuit-open-duration" "CIRCUIT_OPEN_DURATION" "DURATION" "How long the breaker stays open before one half-open probe [default: 60s]",
    "secret-cache-ttl" "SECRET_CACHE_TTL" "DURATION" "How often the vault secret is re-read [default: 5m]",
    "request-timeout" "REQUEST_TIMEOUT" "DURATION" "Deadline for a whole inbound request, retries included [default: 30s]",
    "max-body-bytes" "MAX_BODY_BYTES" "BYTES" "Larger request bodies get 413 [default: 16384]",
    "shutdown-grace" "SHUTDOWN_GRACE" "DURATION" "Drain time after SIGTERM/SIGINT [default: 8s]",
    "cors-origins" "CORS_ORIGINS" "ORIGINS" "Allowed CORS origins: *, a comma-separated list or a JSON list [default: *]",
    "demo-mode" "DEMO_MODE" "MODE" "auto, true or false [default: auto]",
    "id-number-strict" "ID_NUMBER_STRICT" "BOOL" "Also check the ID number's date and Luhn checksum [default: false]",
    "allow-insecure-upstream" "ALLOW_INSECURE_UPSTREAM" "BOOL" "Allow a plain http:// RISKSHIELD_API_URL on a non-loopback host (never in prod) [default: false]",
    "extra-ca-certs" "EXTRA_CA_CERTS" "FILE" "PEM file of extra trusted root certificates for all outbound TLS",
    "metrics-enabled" "METRICS_ENABLED" "BOOL" "Serve Prometheus metrics at /metrics [default: true]",
    "rate-limit-per-minute" "RATE_LIMIT_PER_MINUTE" "N" "Per-client limit on validations per minute, 0 = off [default: 0]",
    "rate-limit-burst" "RATE_LIMIT_BURST" "N" "Rate-limit bucket size [default: the per-minute limit]",
    "trusted-proxy-hops" "TRUSTED_PROXY_HOPS" "N" "Proxies in front that append to X-Forwarded-For (Container Apps ingress: 1); 0 keys clients by the TCP peer [default: 0]",
    "trust-forwarded-for" "TRUST_FORWARDED_FOR" "BOOL" "Replaced by TRUSTED_PROXY_HOPS; setting it is a configuration error",
    "header-read-timeout" "HEADER_READ_TIMEOUT" "DURATION" "Time a client has to send its request headers [default: 10s]",
    "max-header-bytes" "MAX_HEADER_BYTES" "BYTES" "Largest request line plus headers; a larger head gets 431 and the connection closes [default: 16384]",
    "send-timeout" "SEND_TIMEOUT" "DURATION" "An answer whose write makes no progress this long closes its connection [default: 30s]",
    "max-connections" "MAX_CONNECTIONS" "N" "Concurrent connections; further ones wait in the kernel's backlog [default: 4096]",
    "workers" "WORKERS" "N" "Serving threads, each with its own listener and upstream connections [default: one per CPU]",
    "shutdown-delay" "SHUTDOWN_DELAY" "DURATION" "After SIGTERM/SIGINT, keep serving this long with /ready answering 503 before closing the listener [default: 0s]",
    "auth-mode" "AUTH_MODE" "MODE" "Caller authentication: off, or entra (POST validate requires a bearer token from AUTH_ISSUER) [default: off]",
    "auth-issuer" "AUTH_ISSUER" "URL" "Token issuer with AUTH_MODE=entra, e.g. https://login.microsoftonline.com/{tenant}/v2.0; its /.well-known/openid-configuration names the signing keys",
    "auth-audience" "AUTH_AUDIENCE" "LIST" "Accepted token audiences with AUTH_MODE=entra, comma-separated, e.g. api://applicant-validator",
    "auth-required-role" "AUTH_REQUIRED_ROLE" "ROLE" "App role the token's roles claim must contain (403 otherwise)",
}

/// Options of `serve`: the raw value of each option that is set, by its environment variable's name; a flag
/// wins over its variable.
#[derive(Clone, Default)]
pub struct ServeArgs {
    values: BTreeMap<&'static str, String>,
}

/// Names the options that are set, never their values: one of them is the API key.
impl std::fmt::Debug for ServeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeArgs")
            .field("set", &self.values.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ServeArgs {
    /// The validated configuration these options describe. `serve` and `diagnose` both call this one
    /// function, so they read the configuration identically (and the parser is compiled once).
    pub fn config(&self) -> Result<crate::Config, crate::config::ConfigErrors> {
        crate::Config::from_lookup(|name| self.lookup(name))
    }

    /// The raw value of the option whose environment variable is `name`, from its flag or its variable.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    /// Fills every option not given as a flag from its environment variable.
    fn read_environment(&mut self, env: &impl Fn(&str) -> Option<OsString>) -> Result<(), String> {
        for option in SERVE_OPTIONS {
            if self.values.contains_key(option.env) {
                continue;
            }
            if let Some(value) = env(option.env) {
                let value = value
                    .into_string()
                    .map_err(|_| format!("the environment variable {} is not UTF-8", option.env))?;
                self.values.insert(option.env, value);
            }
        }
        Ok(())
    }
}

/// Options of `healthcheck`. Docker runs the healthcheck as a separate process that sees the container's
/// environment but not the server's flags, so HOST and PORT come from the environment too.
#[derive(Debug, Clone)]
pub struct HealthcheckArgs {
    pub host: Option<String>,
    pub port: Option<String>,
    /// Overall deadline for the probe (keep it shorter than Docker's --timeout).
    pub timeout: String,
    /// Probe this http:// URL instead of http://127.0.0.1:$PORT/health.
    pub url: Option<String>,
}

/// Options of `diagnose`: those of `serve`, plus the output format and a per-check deadline.
#[derive(Debug, Clone)]
pub struct DiagnoseArgs {
    pub serve: ServeArgs,
    /// One JSON object instead of a table.
    pub json: bool,
    /// Deadline for each check.
    pub timeout: String,
}

const SERVE_ABOUT: &str = "Run the HTTP service.";
const HEALTHCHECK_ABOUT: &str =
    "Probe the local service's /health (for Docker's HEALTHCHECK); exit 0 only on HTTP 200.";
const DIAGNOSE_ABOUT: &str = "Check, with the service's own configuration and code, that this container \
reaches everything it needs: DNS, TCP and TLS to each host, the identity's token, the Key Vault secret. Binds \
no port, never calls /score, never prints a key or token; exit 0 when no check failed, 1 otherwise, 64 for \
invalid configuration.";

/// Reads the command line (`args` without the program name) against the process environment.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, UsageError> {
    parse_with_env(args, |name| std::env::var_os(name))
}

/// [`parse`] with the environment given as a function, for tests.
pub fn parse_with_env(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Parsed, UsageError> {
    use lexopt::prelude::*;
    let mut parser = lexopt::Parser::from_args(args);
    let top_error = |message: String| UsageError {
        message: format!("error: {message}\n\nFor more information, try '--help'."),
        healthcheck: false,
    };
    let subcommand = match parser.next().map_err(|e| top_error(e.to_string()))? {
        Some(Long("help") | Short('h')) => return Ok(Parsed::Print(top_help())),
        Some(Long("version") | Short('V')) => {
            return Ok(Parsed::Print(format!(
                "{NAME} {}\n",
                env!("CARGO_PKG_VERSION")
            )));
        }
        Some(Value(value)) => value
            .into_string()
            .map_err(|v| top_error(format!("unrecognized subcommand '{}'", v.to_string_lossy())))?,
        Some(other) => {
            return Err(top_error(format!(
                "unexpected argument {}",
                describe(&other)
            )));
        }
        None => return Err(top_error("a subcommand is required".into())),
    };
    let sub_error = |message: String| UsageError {
        message: format!(
            "error: {message}\n\nFor more information, try '{NAME} {subcommand} --help'."
        ),
        healthcheck: subcommand == "healthcheck",
    };
    let read = |parser: &mut lexopt::Parser| -> Result<String, UsageError> {
        let value = parser.value().map_err(|e| sub_error(e.to_string()))?;
        value
            .into_string()
            .map_err(|v| sub_error(format!("a value is not UTF-8: {}", v.to_string_lossy())))
    };
    match subcommand.as_str() {
        "serve" | "diagnose" => {
            let diagnose = subcommand == "diagnose";
            let mut serve = ServeArgs::default();
            let mut json = false;
            let mut timeout = None;
            while let Some(arg) = parser.next().map_err(|e| sub_error(e.to_string()))? {
                match arg {
                    Long("help") | Short('h') => {
                        return Ok(Parsed::Print(subcommand_help(&subcommand)));
                    }
                    Long("json") if diagnose => json = true,
                    Long("timeout") if diagnose => timeout = Some(read(&mut parser)?),
                    Long(name) => {
                        let Some(option) = SERVE_OPTIONS.iter().find(|o| o.long == name) else {
                            return Err(sub_error(format!("unexpected argument '--{name}'")));
                        };
                        let value = read(&mut parser)?;
                        if serve.values.insert(option.env, value).is_some() {
                            let flag = option.long;
                            return Err(sub_error(format!("'--{flag}' given more than once")));
                        }
                    }
                    other => {
                        return Err(sub_error(format!(
                            "unexpected argument {}",
                            describe(&other)
                        )));
                    }
                }
            }
            serve.read_environment(&env).map_err(sub_error)?;
            Ok(Parsed::Run(if diagnose {
                Command::Diagnose(Box::new(DiagnoseArgs {
                    serve,
                    json,
                    timeout: timeout.unwrap_or_else(|| "10s".into()),
                }))
            } else {
                Command::Serve(Box::new(serve))
            }))
        }
        "healthcheck" => {
            let mut args = HealthcheckArgs {
                host: None,
                port: None,
                timeout: "3s".into(),
                url: None,
            };
            while let Some(arg) = parser.next().map_err(|e| sub_error(e.to_string()))? {
                match arg {
                    Long("help") | Short('h') => {
                        return Ok(Parsed::Print(subcommand_help("healthcheck")));
                    }
                    Long("host") => args.host = Some(read(&mut parser)?),
                    Long("port") => args.port = Some(read(&mut parser)?),
                    Long("timeout") => args.timeout = read(&mut parser)?,
                    Long("url") => args.url = Some(read(&mut parser)?),
                    other => {
                        return Err(sub_error(format!(
                            "unexpected argument {}",
                            describe(&other)
                        )));
                    }
                }
            }
            let from_env = |name: &str| env(name).and_then(|v| v.into_string().ok());
            args.host = args.host.or_else(|| from_env("HOST"));
            args.port = args.port.or_else(|| from_env("PORT"));
            Ok(Parsed::Run(Command::Healthcheck(args)))
        }
        "help" => match parser.next().map_err(|e| top_error(e.to_string()))? {
            None => Ok(Parsed::Print(top_help())),
            Some(Value(name)) => match name.to_str() {
                Some(name @ ("serve" | "healthcheck" | "diagnose")) => {
                    Ok(Parsed::Print(subcommand_help(name)))
                }
                _ => Err(top_error(format!(
                    "unrecognized subcommand '{}'",
                    name.to_string_lossy()
                ))),
            },
            Some(other) => Err(top_error(format!(
                "unexpected argument {}",
                describe(&other)
            ))),
        },
        other => Err(top_error(format!("unrecognized subcommand '{other}'"))),
    }
}

/// An argument as the user typed it, for an error message.
fn describe(arg: &lexopt::Arg<'_>) -> String {
    match arg {
        lexopt::Arg::Short(c) => format!("'-{c}'"),
        lexopt::Arg::Long(name) => format!("'--{name}'"),
        lexopt::Arg::Value(value) => format!("'{}'", value.to_string_lossy()),
    }
}

/// The top-level help: the subcommands, then every environment variable of `serve`, so an operator finds the
/// variables without knowing the subcommand's help exists.
fn top_help() -> String {
    let mut out = format!(
        "{}\n\nUsage: {NAME} <COMMAND>\n\nCommands:\n  serve        {SERVE_ABOUT}\n  healthcheck  {HEALTHCHECK_ABOUT}\n  diagnose     Check that this container reaches everything it needs (see `diagnose --help`).\n  help         Print this message or the help of the given subcommand\n\nOptions:\n  -h, --help     Print help\n  -V, --version  Print version\n\nEnvironment variables of `serve` (a flag wins over its variable; `serve --help` says what each does):\n",
        env!("CARGO_PKG_DESCRIPTION")
    );
    for option in SERVE_OPTIONS {
        out.push_str(&format!("  {:<32} --{}\n", option.env, option.long));
    }
    out
}

/// The help of one subcommand.
fn subcommand_help(subcommand: &str) -> String {
    // As clap lays it out: long-only flags line up after the room a short flag would take.
    let option = |flag: &str, help: &str| {
        let indent = if flag.starts_with("--") {
            "      "
        } else {
            "  "
        };
        format!("{indent}{flag}\n          {help}\n")
    };
    let mut out = String::new();
    match subcommand {
        "healthcheck" => {
            out.push_str(&format!(
                "{HEALTHCHECK_ABOUT}\n\nUsage: {NAME} healthcheck [OPTIONS]\n\nOptions:\n"
            ));
            out.push_str(&option(
                "--host <ADDR>",
                "Bind address of the service [env: HOST]",
            ));
            out.push_str(&option(
                "--port <PORT>",
                "Bind port of the service [env: PORT]",
            ));
            out.push_str(&option(
                "--timeout <DURATION>",
                "Overall deadline for the probe (keep it shorter than Docker's --timeout) [default: 3s]",
            ));
            out.push_str(&option(
                "--url <URL>",
                "Probe this http:// URL instead of http://127.0.0.1:$PORT/health",
            ));
        }
        _ => {
            let diagnose = subcommand == "diagnose";
            let about = if diagnose {
                DIAGNOSE_ABOUT
            } else {
                SERVE_ABOUT
            };
            out.push_str(&format!(
                "{about}\n\nUsage: {NAME} {subcommand} [OPTIONS]\n\nOptions (each also read from its environment variable; a flag wins):\n"
            ));
            if diagnose {
                out.push_str(&option(
                    "--json",
                    "Print one JSON object {\"checks\":[{\"name\",\"status\",\"duration_ms\",\"detail\"}],\"ok\":bool} instead of a table",
                ));
                out.push_str(&option(
                    "--timeout <DURATION>",
                    "Deadline for each check [default: 10s]",
                ));
            }
            for o in SERVE_OPTIONS {
                out.push_str(&option(
                    &format!("--{} <{}>", o.long, o.value),
                    &format!("{} [env: {}]", o.help, o.env),
                ));
            }
        }
    }
    out.push_str(&option("-h, --help", "Print help"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, UsageError> {
        let env: Vec<(String, OsString)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        parse_with_env(args.iter().map(OsString::from), move |name| {
            env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    fn serve(args: &[&str], env: &[(&str, &str)]) -> ServeArgs {
        match parse_args(args, env) {
            Ok(Parsed::Run(Command::Serve(args))) => *args,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    #[test]
    fn debug_output_names_options_but_never_shows_values() {
        let args = serve(&["serve"], &[("RISKSHIELD_API_KEY", "s3cret-key")]);
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret-key"), "{shown}");
        assert!(shown.contains("RISKSHIELD_API_KEY"), "{shown}");
        assert_eq!(
            args.lookup("RISKSHIELD_API_KEY").as_deref(),
            Some("s3cret-key")
        );
    }

    #[test]
    fn a_flag_wins_over_its_variable_and_variables_fill_the_rest() {
        let args = serve(
            &["serve", "--port", "9000", "--log-level=DEBUG"],
            &[("PORT", "8080"), ("WORKERS", "2"), ("UNRELATED", "x")],
        );
        assert_eq!(args.lookup("PORT").as_deref(), Some("9000"));
        assert_eq!(args.lookup("LOG_LEVEL").as_deref(), Some("DEBUG"));
        assert_eq!(args.lookup("WORKERS").as_deref(), Some("2"));
        assert_eq!(args.lookup("UNRELATED"), None);
    }

    #[test]
    fn every_option_has_a_distinct_flag_and_variable_that_the_configuration_reads() {
        let mut flags: Vec<_> = SERVE_OPTIONS.iter().map(|o| o.long).collect();
        let mut vars: Vec<_> = SERVE_OPTIONS.iter().map(|o| o.env).collect();
        flags.sort_unstable();
        flags.dedup();
        vars.sort_unstable();
        vars.dedup();
        assert_eq!(flags.len(), SERVE_OPTIONS.len());
        assert_eq!(vars.len(), SERVE_OPTIONS.len());
        for o in SERVE_OPTIONS {
            assert_eq!(o.long.replace('-', "_").to_uppercase(), o.env, "{}", o.long);
        }
    }

    #[test]
    fn usage_errors_name_the_argument_and_say_which_subcommand() {
        for (args, healthcheck, names) in [
            (&["serve", "--no-such-flag"][..], false, "--no-such-flag"),
            (&["serve", "stray"], false, "stray"),
            (&["serve", "--port"], false, "--port"),
            (&["serve", "--port", "1", "--port", "2"], false, "--port"),
            (&["serve", "--json"], false, "--json"),
            (&["healthcheck", "--bogus"], true, "--bogus"),
            (&["frobnicate"], false, "frobnicate"),
            (&[], false, "subcommand"),
        ] {
            match parse_args(args, &[]) {
                Err(e) => {
                    assert_eq!(e.healthcheck, healthcheck, "{args:?}");
                    assert!(e.message.contains(names), "{args:?}: {}", e.message);
                }
                Ok(other) => panic!("{args:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn healthcheck_and_diagnose_read_their_own_options() {
        match parse_args(
            &["healthcheck", "--timeout", "1s"],
            &[("PORT", "81"), ("HOST", "::1")],
        ) {
            Ok(Parsed::Run(Command::Healthcheck(h))) => {
                assert_eq!(h.timeout, "1s");
                assert_eq!(h.port.as_deref(), Some("81"));
                assert_eq!(h.host.as_deref(), Some("::1"));
                assert_eq!(h.url, None);
            }
            other => panic!("{other:?}"),
        }
        match parse_args(&["diagnose", "--json", "--workers", "3"], &[]) {
            Ok(Parsed::Run(Command::Diagnose(d))) => {
                assert!(d.json);
                assert_eq!(d.timeout, "10s");
                assert_eq!(d.serve.lookup("WORKERS").as_deref(), Some("3"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_lists_every_option_with_its_variable_and_warns_about_the_key_flag() {
        let Ok(Parsed::Print(help)) = parse_args(&["serve", "--help"], &[]) else {
            panic!("serve --help prints help");
        };
        for o in SERVE_OPTIONS {
            assert!(help.contains(&format!("--{} <", o.long)), "{help}");
            assert!(help.contains(&format!("env: {}", o.env)), "{help}");
        }
        assert!(help.contains("visible to every user"), "{help}");
        let Ok(Parsed::Print(top)) = parse_args(&["help"], &[]) else {
            panic!("help prints help");
        };
        assert!(top.contains("TRUSTED_PROXY_HOPS"), "{top}");
    }
}
