//! Every setting of `serve`, declared once: its environment variable, its flag, the name of its value, its
//! default and what it does.
//!
//! Three things are made from this table, so they cannot disagree: the command line ([`crate::cli`] builds one
//! flag per row, with its variable and its help), the defaults [`super::Config::from_lookup`] falls back to
//! (a row's default text is parsed exactly as a value the operator gave would be), and the README's
//! configuration table ([`markdown_table`], compared with the README by a test).

/// What a setting is when neither its flag nor its variable gives it a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// Nothing: the feature the setting configures is off or not used.
    Unset,
    /// This text, read as if the operator had given it.
    Text(&'static str),
    /// Worked out at startup from something else; the text says from what.
    Computed(&'static str),
}

/// One setting of `serve` (and `diagnose`).
#[derive(Debug)]
pub struct Setting {
    /// The environment variable, also the name the configuration reads it by.
    pub env: &'static str,
    /// The flag without its dashes: the variable in lower case with `-` for `_`.
    pub flag: &'static str,
    /// What the value is, as `--help` shows it (`--port <PORT>`).
    pub value: &'static str,
    pub default: DefaultValue,
    /// One or two sentences for `--help` and the README.
    pub help: &'static str,
}

macro_rules! settings {
    (@default unset) => { DefaultValue::Unset };
    (@default default $text:literal) => { DefaultValue::Text($text) };
    (@default computed $text:literal) => { DefaultValue::Computed($text) };
    ($($env:ident $flag:literal <$value:ident> $kind:ident $($text:literal)?: $($help:literal)+;)*) => {
        /// Every setting, in the order `--help` and the README list them.
        pub static SETTINGS: &[Setting] = &[$(Setting {
            env: stringify!($env),
            flag: $flag,
            value: stringify!($value),
            default: settings!(@default $kind $($text)?),
            help: concat!($($help),+),
        },)*];
    };
}

// One row per setting: VARIABLE "flag" <VALUE> then `default "text"`, `computed "how"` or `unset`, then the help.
settings! {
    HOST "host" <ADDR> default "0.0.0.0": "Bind address: an IP address, or localhost";
    PORT "port" <PORT> default "8080": "Bind port";
    ENVIRONMENT "environment" <NAME> default "dev":
        "Shown in /health; prod or production forbid demo mode and plain-http upstreams";
    LOG_LEVEL "log-level" <LEVEL> default "INFO": "TRACE, DEBUG, INFO, WARN or ERROR (any case)";
    LOG_FORMAT "log-format" <FORMAT> default "json": "json (one object per line on stdout) or pretty";
    KEY_VAULT_URL "key-vault-url" <URL> unset:
        "When set, the API key is read from this Azure Key Vault with Managed Identity: an https URL such as "
        "https://my-vault.vault.azure.net/ (a non-ASCII host name in its xn-- form)";
    RISKSHIELD_API_KEY_SECRET_NAME "riskshield-api-key-secret-name" <NAME> default "RISKSHIELD-API-KEY":
        "Name of the secret in the vault";
    RISKSHIELD_API_KEY "riskshield-api-key" <KEY> unset:
        "The API key itself; used only when KEY_VAULT_URL is unset (local development). Prefer the variable: "
        "a value given as a flag is visible to every user of the machine in ps";
    RISKSHIELD_API_URL "riskshield-api-url" <URL> default "https://api.riskshield.com/v1":
        "Base URL; the service POSTs to {URL}/score";
    RISKSHIELD_CONNECT_TIMEOUT "riskshield-connect-timeout" <DURATION> default "5s":
        "TCP and TLS connect timeout. Durations read as 250ms, 5s, 1m";
    RISKSHIELD_TIMEOUT "riskshield-timeout" <DURATION> default "10s": "Per-attempt timeout";
    RISKSHIELD_MAX_ATTEMPTS "riskshield-max-attempts" <N> default "3":
        "Total attempts for retryable failures, 1 to 10 (1 = no retry)";
    RISKSHIELD_RETRY_BASE_DELAY "riskshield-retry-base-delay" <DURATION> default "1s":
        "Exponential backoff base with full jitter, each delay capped at 10s";
    CIRCUIT_FAILURE_THRESHOLD "circuit-failure-threshold" <N> default "5":
        "Consecutive failed calls that open the circuit breaker";
    CIRCUIT_OPEN_DURATION "circuit-open-duration" <DURATION> default "60s":
        "How long the breaker stays open before one half-open probe";
    SECRET_CACHE_TTL "secret-cache-ttl" <DURATION> default "5m": "How often the vault secret is re-read";
    REQUEST_TIMEOUT "request-timeout" <DURATION> default "30s":
        "Deadline for a whole inbound request, retries included";
    MAX_BODY_BYTES "max-body-bytes" <BYTES> default "16384": "Larger request bodies get 413";
    MAX_HEADER_BYTES "max-header-bytes" <BYTES> default "16384":
        "Largest request line plus headers, at least 8192; a larger head gets 431 and the connection closes";
    HEADER_READ_TIMEOUT "header-read-timeout" <DURATION> default "10s":
        "Time a client has to send its request headers";
    SEND_TIMEOUT "send-timeout" <DURATION> default "30s":
        "An answer whose write makes no progress this long closes its connection (a client that stops "
        "reading frees its slot)";
    MAX_CONNECTIONS "max-connections" <N> default "4096":
        "Concurrent connections; further clients wait in the kernel's accept backlog";
    WORKERS "workers" <N> computed "one per CPU":
        "Serving threads, 1 to 1024, each with its own runtime, its own SO_REUSEPORT listener, an equal share "
        "of MAX_CONNECTIONS and its own RiskShield connections";
    SHUTDOWN_DELAY "shutdown-delay" <DURATION> default "0s":
        "After SIGTERM/SIGINT, keep serving this long with /ready answering 503 before the listener closes "
        "(for platforms without a preStop hook)";
    SHUTDOWN_GRACE "shutdown-grace" <DURATION> default "8s": "Drain time after the listener closes";
    CORS_ORIGINS "cors-origins" <ORIGINS> default "*":
        "Allowed browser origins: *, a comma-separated list, or a JSON list such as [\"https://a.example\"]";
    DEMO_MODE "demo-mode" <MODE> default "auto":
        "auto: demo scoring when neither KEY_VAULT_URL nor RISKSHIELD_API_KEY is set and not prod; true or "
        "false force it (true is refused in prod)";
    ID_NUMBER_STRICT "id-number-strict" <BOOL> default "false":
        "Also check the ID number's date (YYMMDD) and Luhn checksum (the common example 9001011234088 fails "
        "Luhn)";
    ALLOW_INSECURE_UPSTREAM "allow-insecure-upstream" <BOOL> default "false":
        "Allow a plain http:// RISKSHIELD_API_URL on a non-loopback host (loopback is always allowed; never in "
        "prod)";
    EXTRA_CA_CERTS "extra-ca-certs" <FILE> unset:
        "PEM file of extra trusted root certificates for all outbound TLS (vault, identity, upstream); public "
        "roots are bundled";
    METRICS_ENABLED "metrics-enabled" <BOOL> default "true": "Serve Prometheus metrics at GET /metrics";
    RATE_LIMIT_PER_MINUTE "rate-limit-per-minute" <N> default "0":
        "Per-client limit on validations per minute; 0 = off";
    RATE_LIMIT_BURST "rate-limit-burst" <N> computed "the per-minute limit": "Rate-limit bucket size";
    TRUSTED_PROXY_HOPS "trusted-proxy-hops" <N> default "0":
        "Proxies in front that append to X-Forwarded-For (Container Apps ingress: 1); 0 keys clients by the "
        "TCP peer, N by the Nth entry from the right";
    TRUST_FORWARDED_FOR "trust-forwarded-for" <BOOL> unset:
        "Replaced by TRUSTED_PROXY_HOPS; setting it is a configuration error";
    AUTH_MODE "auth-mode" <MODE> default "off":
        "Caller authentication: off, or entra (POST validate requires a bearer token from AUTH_ISSUER)";
    AUTH_ISSUER "auth-issuer" <URL> unset:
        "Required with entra: the token issuer, e.g. https://login.microsoftonline.com/{tenant}/v2.0; https "
        "(plain http only on a loopback host, never in prod)";
    AUTH_AUDIENCE "auth-audience" <LIST> unset:
        "Required with entra: accepted aud values, comma-separated, e.g. api://applicant-validator";
    AUTH_REQUIRED_ROLE "auth-required-role" <ROLE> unset:
        "When set, the token's roles claim must contain this app role (403 otherwise)";
}

/// The setting read by the environment variable `env`.
pub fn setting(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

/// The default text of the setting `env`, when it has one to parse.
pub fn default_text(env: &str) -> Option<&'static str> {
    match setting(env)?.default {
        DefaultValue::Text(text) => Some(text),
        DefaultValue::Unset | DefaultValue::Computed(_) => None,
    }
}

impl Setting {
    /// The help `--help` shows: the sentence, then the default as clap writes one (clap adds `[env: …]`).
    pub fn help_with_default(&self) -> String {
        match self.default {
            DefaultValue::Unset => self.help.to_owned(),
            DefaultValue::Text(text) | DefaultValue::Computed(text) => {
                format!("{} [default: {text}]", self.help)
            }
        }
    }
}

/// The README's configuration table, one row per setting.
pub fn markdown_table() -> String {
    let mut out = String::from("| Variable | Default | Meaning |\n|---|---|---|\n");
    for s in SETTINGS {
        let default = match s.default {
            DefaultValue::Unset => "unset".to_owned(),
            DefaultValue::Text(text) => format!("`{text}`"),
            DefaultValue::Computed(how) => how.to_owned(),
        };
        let help = s.help.replace('|', "\\|");
        out.push_str(&format!("| `{}` | {default} | {help} |\n", s.env));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_setting_has_a_distinct_variable_and_the_flag_named_after_it() {
        for (i, s) in SETTINGS.iter().enumerate() {
            assert_eq!(s.env.to_lowercase().replace('_', "-"), s.flag, "{}", s.env);
            assert!(
                SETTINGS[..i].iter().all(|other| other.env != s.env),
                "{} is declared twice",
                s.env
            );
            assert!(!s.help.is_empty() && !s.help.ends_with('.'), "{}", s.env);
        }
    }

    /// The README's table is made from [`SETTINGS`]; when a row changes, this fails with the table to paste.
    #[test]
    fn the_readme_lists_every_setting_as_declared() {
        const BEGIN: &str = "<!-- settings table: made from src/config/settings.rs -->\n";
        const END: &str = "<!-- end of settings table -->";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).expect("README.md is readable");
        let table = readme
            .split_once(BEGIN)
            .and_then(|(_, rest)| rest.split_once(END))
            .map(|(table, _)| table)
            .unwrap_or_else(|| panic!("README.md has no section between {BEGIN:?} and {END:?}"));
        let expected = markdown_table();
        assert!(
            table == expected,
            "README.md's settings table differs from src/config/settings.rs; replace it with:\n\n{expected}"
        );
    }
}
