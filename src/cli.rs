//! The command line (clap): the subcommands and their options. Each option of `serve` and `diagnose` is a row
//! of [`SETTINGS`], read from its flag or else from its environment variable, so `--help` documents both and a
//! flag wins over its variable.
//!
//! Values stay raw strings here; parsing, defaults and validation belong to [`crate::config`], which reports
//! every problem at once (clap would stop at the first).

use std::collections::BTreeMap;
use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches};

use crate::config::SETTINGS;

/// The program's name in usage lines and messages.
const NAME: &str = "applicant-validator";

/// `healthcheck --timeout` when none (or an empty one) is given.
const HEALTHCHECK_TIMEOUT: &str = "3s";
/// `diagnose --timeout` when none (or an empty one) is given.
const DIAGNOSE_TIMEOUT: &str = "10s";

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
    /// clap's message: the problem, the usage line and a pointer to `--help`.
    pub message: String,
    /// Whether the command line was a `healthcheck`.
    pub healthcheck: bool,
}

/// Options of `serve`: the raw value of each setting that is given, by its environment variable's name.
#[derive(Clone, Default)]
pub struct ServeArgs {
    values: BTreeMap<&'static str, String>,
    /// The API key came as a flag, where every user of the machine can read it in `ps`.
    key_as_flag: bool,
}

/// Names the settings that are given, never their values: one of them is the API key.
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

    /// The raw value of the setting whose environment variable is `name`, from its flag or its variable.
    pub fn lookup(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    /// A warning for stderr when the API key was given as a flag rather than in its variable.
    pub fn key_warning(&self) -> Option<&'static str> {
        self.key_as_flag.then_some(
            "warning: --riskshield-api-key is visible to every user of this machine in `ps`; set RISKSHIELD_API_KEY instead",
        )
    }

    fn from_matches(matches: &ArgMatches) -> Self {
        let mut args = Self::default();
        for setting in SETTINGS {
            if let Some(value) = matches.get_one::<String>(setting.env) {
                args.values.insert(setting.env, value.clone());
            }
        }
        args.key_as_flag =
            matches.value_source("RISKSHIELD_API_KEY") == Some(ValueSource::CommandLine);
        args
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

const SERVE_ABOUT: &str = "Run the HTTP service";
const HEALTHCHECK_ABOUT: &str =
    "Probe the local service's /health (for Docker's HEALTHCHECK); exit 0 only on HTTP 200";
const DIAGNOSE_ABOUT: &str = "Check that this container reaches everything it needs";
const DIAGNOSE_LONG_ABOUT: &str = "Check, with the service's own configuration and code, that this \
container reaches everything it needs: DNS, TCP and TLS to each host, the identity's token, the Key Vault \
secret. Binds no port, never calls /score, never prints a key or token; exit 0 when no check failed, 1 \
otherwise, 64 for invalid configuration.";

/// An option that takes a value, as every option here does but `diagnose --json`.
fn option(id: &'static str, long: &'static str, value: &'static str, help: String) -> Arg {
    Arg::new(id)
        .long(long)
        .value_name(value)
        .action(ArgAction::Set)
        .help(help)
}

/// One option per setting, each also read from its variable. Values are never shown in `--help`: one of them
/// is the API key.
fn settings_args() -> impl Iterator<Item = Arg> {
    SETTINGS.iter().map(|s| {
        option(s.env, s.flag, s.value, s.help_with_default())
            .env(s.env)
            .hide_env_values(true)
    })
}

/// The whole command line.
pub fn command() -> clap::Command {
    let variables: String = SETTINGS
        .iter()
        .map(|s| format!("\n  {:<32} --{}", s.env, s.flag))
        .collect();
    clap::Command::new(NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .about(env!("CARGO_PKG_DESCRIPTION"))
        .subcommand_required(true)
        // The variables are listed here too, so an operator finds them without knowing `serve --help` exists.
        .after_help(format!(
            "Environment variables of `serve` (a flag wins over its variable; `serve --help` says what each does):{variables}"
        ))
        .subcommand(
            clap::Command::new("serve")
                .about(SERVE_ABOUT)
                .args(settings_args()),
        )
        .subcommand(
            clap::Command::new("healthcheck")
                .about(HEALTHCHECK_ABOUT)
                .arg(
                    option("host", "host", "ADDR", "Bind address of the service".into())
                        .env("HOST")
                        .hide_env_values(true),
                )
                .arg(
                    option("port", "port", "PORT", "Bind port of the service".into())
                        .env("PORT")
                        .hide_env_values(true),
                )
                .arg(option(
                    "timeout",
                    "timeout",
                    "DURATION",
                    format!("Overall deadline for the probe (keep it shorter than Docker's --timeout) [default: {HEALTHCHECK_TIMEOUT}]"),
                ))
                .arg(option(
                    "url",
                    "url",
                    "URL",
                    "Probe this http:// URL instead of http://127.0.0.1:$PORT/health".into(),
                )),
        )
        .subcommand(
            clap::Command::new("diagnose")
                .about(DIAGNOSE_ABOUT)
                // The whole description in its own help, without switching clap to its long layout.
                .help_template(format!(
                    "{DIAGNOSE_LONG_ABOUT}\n\n{{usage-heading}} {{usage}}\n\n{{all-args}}"
                ))
                .arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .help("Print one JSON object {\"checks\":[{\"name\",\"status\",\"duration_ms\",\"detail\"}],\"ok\":bool} instead of a table"),
                )
                .arg(option(
                    "timeout",
                    "timeout",
                    "DURATION",
                    format!("Deadline for each check [default: {DIAGNOSE_TIMEOUT}]"),
                ))
                .args(settings_args()),
        )
}

/// Reads the command line (`args` without the program name); options not given as flags are read from the
/// process environment.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Parsed, UsageError> {
    let args: Vec<OsString> = args.into_iter().collect();
    let subcommand = args.first().and_then(|a| a.to_str()).map(str::to_owned);
    let healthcheck = subcommand.as_deref() == Some("healthcheck");
    let matches = match command().try_get_matches_from(std::iter::once(NAME.into()).chain(args)) {
        Ok(matches) => matches,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            return Ok(Parsed::Print(e.render().to_string()));
        }
        Err(e) => {
            return Err(UsageError {
                message: with_usage(e.render().to_string().trim_end(), subcommand.as_deref()),
                healthcheck,
            });
        }
    };
    // An empty value means what an empty variable means: the default.
    let text = |m: &ArgMatches, id: &str, default: &str| {
        m.get_one::<String>(id)
            .filter(|v| !v.trim().is_empty())
            .map_or_else(|| default.to_owned(), Clone::clone)
    };
    let command = match matches.subcommand() {
        Some(("healthcheck", m)) => Command::Healthcheck(HealthcheckArgs {
            host: m.get_one::<String>("host").cloned(),
            port: m.get_one::<String>("port").cloned(),
            timeout: text(m, "timeout", HEALTHCHECK_TIMEOUT),
            url: m.get_one::<String>("url").cloned(),
        }),
        Some(("diagnose", m)) => Command::Diagnose(Box::new(DiagnoseArgs {
            serve: ServeArgs::from_matches(m),
            json: m.get_flag("json"),
            timeout: text(m, "timeout", DIAGNOSE_TIMEOUT),
        })),
        Some(("serve", m)) => Command::Serve(Box::new(ServeArgs::from_matches(m))),
        // `subcommand_required` leaves nothing else.
        _ => {
            return Err(UsageError {
                message: command().render_usage().to_string(),
                healthcheck,
            });
        }
    };
    Ok(Parsed::Run(command))
}

/// clap's message, with the usage line of the subcommand (or of the program) added where clap leaves it out,
/// as it does for a missing value.
fn with_usage(message: &str, subcommand: Option<&str>) -> String {
    if message.contains("\nUsage: ") {
        return message.to_owned();
    }
    let mut command = command();
    command.build();
    let usage = match subcommand.and_then(|name| command.find_subcommand_mut(name)) {
        Some(subcommand) => subcommand.render_usage(),
        None => command.render_usage(),
    };
    match message.split_once("\n\n") {
        Some((problem, rest)) => format!("{problem}\n\n{usage}\n\n{rest}"),
        None => format!("{message}\n\n{usage}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::settings::DefaultValue;

    fn parse_args(args: &[&str]) -> Result<Parsed, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn serve(args: &[&str]) -> ServeArgs {
        match parse_args(args) {
            Ok(Parsed::Run(Command::Serve(args))) => *args,
            other => panic!("expected serve, got {other:?}"),
        }
    }

    fn help(args: &[&str]) -> String {
        match parse_args(args) {
            Ok(Parsed::Print(help)) => help,
            other => panic!("{args:?} should print help, got {other:?}"),
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        command().debug_assert();
    }

    #[test]
    fn debug_output_names_options_but_never_shows_values() {
        let args = serve(&["serve", "--riskshield-api-key", "s3cret-key"]);
        let shown = format!("{args:?}");
        assert!(!shown.contains("s3cret-key"), "{shown}");
        assert!(shown.contains("RISKSHIELD_API_KEY"), "{shown}");
        assert_eq!(
            args.lookup("RISKSHIELD_API_KEY").as_deref(),
            Some("s3cret-key")
        );
        assert!(args.key_warning().is_some_and(|w| w.contains("ps")));
    }

    #[test]
    fn flags_give_raw_values_and_an_empty_one_stays_empty_for_the_configuration() {
        let args = serve(&["serve", "--port", "9000", "--log-level=DEBUG", "--workers="]);
        assert_eq!(args.lookup("PORT").as_deref(), Some("9000"));
        assert_eq!(args.lookup("LOG_LEVEL").as_deref(), Some("DEBUG"));
        assert_eq!(args.lookup("WORKERS").as_deref(), Some(""));
        assert!(args.key_warning().is_none());
    }

    #[test]
    fn usage_errors_show_the_usage_and_say_which_subcommand() {
        for (args, healthcheck, names) in [
            (&["serve", "--no-such-flag"][..], false, "--no-such-flag"),
            (&["serve", "stray"], false, "stray"),
            (&["serve", "--port"], false, "--port"),
            (&["serve", "--port", "1", "--port", "2"], false, "--port"),
            (&["serve", "--json"], false, "--json"),
            (&["help", "serve", "extra"], false, "extra"),
            (&["healthcheck", "--bogus"], true, "--bogus"),
            (&["frobnicate"], false, "frobnicate"),
            (&[], false, "subcommand"),
        ] {
            match parse_args(args) {
                Err(e) => {
                    assert_eq!(e.healthcheck, healthcheck, "{args:?}");
                    assert!(e.message.contains(names), "{args:?}: {}", e.message);
                    assert!(e.message.contains("Usage: "), "{args:?}: {}", e.message);
                }
                Ok(other) => panic!("{args:?} parsed as {other:?}"),
            }
        }
    }

    #[test]
    fn healthcheck_and_diagnose_read_their_own_options() {
        match parse_args(&["healthcheck", "--timeout", "1s", "--port", "81"]) {
            Ok(Parsed::Run(Command::Healthcheck(h))) => {
                assert_eq!(h.timeout, "1s");
                assert_eq!(h.port.as_deref(), Some("81"));
                assert_eq!(h.url, None);
            }
            other => panic!("{other:?}"),
        }
        match parse_args(&["healthcheck", "--timeout="]) {
            Ok(Parsed::Run(Command::Healthcheck(h))) => assert_eq!(h.timeout, "3s"),
            other => panic!("{other:?}"),
        }
        match parse_args(&["diagnose", "--json", "--workers", "3"]) {
            Ok(Parsed::Run(Command::Diagnose(d))) => {
                assert!(d.json);
                assert_eq!(d.timeout, "10s");
                assert_eq!(d.serve.lookup("WORKERS").as_deref(), Some("3"));
            }
            other => panic!("{other:?}"),
        }
    }

    /// `--help` is made from the settings table: every flag with its value, variable and default.
    #[test]
    fn help_lists_every_setting_with_its_variable_and_default() {
        for subcommand in ["serve", "diagnose"] {
            let help = help(&[subcommand, "--help"]);
            for s in SETTINGS {
                assert!(
                    help.contains(&format!("--{} <{}>", s.flag, s.value)),
                    "{help}"
                );
                assert!(help.contains(&format!("[env: {}]", s.env)), "{help}");
                if let DefaultValue::Text(text) | DefaultValue::Computed(text) = s.default {
                    assert!(help.contains(&format!("[default: {text}]")), "{help}");
                }
            }
            assert!(help.contains("visible to every user"), "{help}");
        }
        let top = help(&["help"]);
        assert!(top.contains("TRUSTED_PROXY_HOPS"), "{top}");
        assert_eq!(help(&["help", "serve"]), help(&["serve", "--help"]));
    }
}
