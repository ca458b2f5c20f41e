//! The `applicant-validator` binary: parse the command line, then serve or probe.

use std::process::ExitCode;

use applicant_validator::cli::{Cli, Command, DiagnoseArgs, HealthcheckArgs, ServeArgs};
use applicant_validator::config::{self, EXIT_CONFIG};
use applicant_validator::telemetry::logging;
use applicant_validator::{app, diagnose, healthcheck};
use clap::FromArgMatches;

/// musl's malloc takes a global lock; the static binary uses mimalloc instead (measured in docs/benchmarks.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let healthcheck_requested = std::env::args().nth(1).as_deref() == Some("healthcheck");
    let parsed = Cli::command_with_env_help()
        .try_get_matches()
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                // Docker reserves exit code 2, which clap would use: a healthcheck reports 1.
                _ if healthcheck_requested => ExitCode::from(1),
                _ => ExitCode::from(EXIT_CONFIG as u8),
            };
        }
    };
    match cli.command {
        Command::Healthcheck(args) => run_healthcheck(&args),
        Command::Serve(args) => run_serve(&args),
        Command::Diagnose(args) => run_diagnose(&args),
    }
}

/// Reads the configuration as `serve` does (same error lines, exit 64), runs the checks on a single-threaded
/// runtime, prints the report, and exits 1 if any check failed. Logging stays off: stdout is the report.
fn run_diagnose(args: &DiagnoseArgs) -> ExitCode {
    let config = match args.serve.config() {
        Ok(config) => config,
        Err(errors) => {
            for line in &errors.0 {
                eprintln!("applicant-validator: configuration error: {line}");
            }
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let timeout = match config::parse_duration(&args.timeout) {
        Ok(t) if !t.is_zero() => t,
        Ok(_) => {
            eprintln!("applicant-validator: --timeout: must be more than 0");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
        Err(why) => {
            eprintln!("applicant-validator: --timeout: {why}");
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("applicant-validator: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let lookup = |name: &str| args.serve.lookup(name).or_else(|| std::env::var(name).ok());
    let report = runtime.block_on(diagnose::run(&config, &lookup, timeout));
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    ExitCode::from(if report.ok { 0 } else { 1 })
}

fn run_healthcheck(args: &HealthcheckArgs) -> ExitCode {
    let fail = |message: &str| {
        eprintln!("{message}");
        ExitCode::from(1)
    };
    let timeout = match config::parse_duration(&args.timeout) {
        Ok(t) => t,
        Err(why) => return fail(&format!("--timeout: {why}")),
    };
    let probe = match &args.url {
        Some(url) => healthcheck::Probe::from_url(url),
        None => healthcheck::probe_addr(args.listen.host.as_deref(), args.listen.port.as_deref())
            .map(healthcheck::Probe::local)
            .map_err(|e| e.join("; ")),
    };
    let probe = match probe {
        Ok(p) => p,
        Err(why) => return fail(&why),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    match runtime.block_on(healthcheck::check(&probe, timeout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => fail(&why),
    }
}

fn run_serve(args: &ServeArgs) -> ExitCode {
    let config = match args.config() {
        Ok(config) => config,
        Err(errors) => {
            for line in &errors.0 {
                eprintln!("applicant-validator: configuration error: {line}");
            }
            return ExitCode::from(EXIT_CONFIG as u8);
        }
    };
    let _logs = logging::init(config.log_level, config.log_format);
    if config.demo_mode {
        tracing::warn!(
            "DEMO MODE: scores are computed locally from the ID number; RiskShield is not called"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("applicant-validator: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let addr = std::net::SocketAddr::new(config.host, config.port);
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::error!(address = %addr, error = %e, "cannot bind");
                eprintln!("applicant-validator: cannot bind {addr}: {e}");
                return ExitCode::from(1);
            }
        };
        match app::serve(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "server failed");
                eprintln!("applicant-validator: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Resolves on SIGTERM (docker stop, Kubernetes) or SIGINT (Ctrl-C). As PID 1 in a container the process
/// gets no default signal handling, so both are handled explicitly.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            let which = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            tracing::info!(signal = which, "shutdown requested");
        }
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
        }
    }
}
