//! The `applicant-validator` binary: parse the command line, then serve or probe.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use applicant_validator::app::{StopSignal, Stopped};
use applicant_validator::cli::{self, Command, DiagnoseArgs, HealthcheckArgs, Parsed, ServeArgs};
use applicant_validator::config::{self, EXIT_CONFIG};
use applicant_validator::telemetry::logging;
use applicant_validator::{app, diagnose, healthcheck};
use tokio::sync::mpsc;

/// musl's malloc takes a global lock; the static binary uses mimalloc instead (measured in docs/benchmarks.md).
#[cfg(target_env = "musl")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // args_os: an argument that is not UTF-8 must reach the parser (which reports it), not panic here.
    let cli = match cli::parse(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(command)) => command,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{}", e.message);
            // Docker reserves exit code 2: a healthcheck reports 1, everything else 64 like a bad variable.
            return ExitCode::from(if e.healthcheck { 1 } else { EXIT_CONFIG as u8 });
        }
    };
    match cli {
        Command::Healthcheck(args) => run_healthcheck(&args),
        Command::Serve(args) => run_serve(&args),
        Command::Diagnose(args) => run_diagnose(&args),
    }
}

/// Reads the configuration as `serve` does (same error lines, exit 64), runs the checks on a single-threaded
/// runtime, prints the report, and exits 1 if any check failed. Logging stays off: stdout is the report.
fn run_diagnose(args: &DiagnoseArgs) -> ExitCode {
    if let Some(warning) = args.serve.key_warning() {
        eprintln!("applicant-validator: {warning}");
    }
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
    let runtime = match runtime() {
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
        None => healthcheck::probe_addr(args.host.as_deref(), args.port.as_deref())
            .map(healthcheck::Probe::local)
            .map_err(|e| e.join("; ")),
    };
    let probe = match probe {
        Ok(p) => p,
        Err(why) => return fail(&why),
    };
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    match runtime.block_on(healthcheck::check(&probe, timeout)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => fail(&why),
    }
}

fn run_serve(args: &ServeArgs) -> ExitCode {
    if let Some(warning) = args.key_warning() {
        eprintln!("applicant-validator: {warning}");
    }
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
    // This thread's runtime runs the background work (vault reads, the rate limiter's sweeper) and the
    // signal handling; requests are served on the worker threads, each with its own runtime.
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("applicant-validator: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let outcome = runtime.block_on(async {
        let signals = forward_signals();
        app::run_threaded(config, signals).await
    });
    // Worker threads and blocking lookups still running must not delay the exit.
    runtime.shutdown_background();
    match outcome {
        Ok(Stopped::Gracefully) => ExitCode::SUCCESS,
        Ok(Stopped::Forced(signal)) => ExitCode::from(signal.exit_code()),
        Err(e) if e.is_configuration() => {
            tracing::error!(error = %e, "cannot start");
            eprintln!("applicant-validator: configuration error: {e}");
            ExitCode::from(EXIT_CONFIG as u8)
        }
        Err(e) => {
            tracing::error!(error = %e, "server failed");
            eprintln!("applicant-validator: {e}");
            ExitCode::from(1)
        }
    }
}

/// Forwards every SIGTERM (docker stop, Kubernetes) and SIGINT (Ctrl-C) to the returned channel. As PID 1 in
/// a container the process gets no default signal handling, so both are handled explicitly; the channel closes
/// at once if they cannot be installed.
fn forward_signals() -> mpsc::Receiver<StopSignal> {
    use tokio::signal::unix::{SignalKind, signal};
    let (tx, rx) = mpsc::channel(4);
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::spawn(async move {
                loop {
                    let which = tokio::select! {
                        _ = term.recv() => StopSignal::Terminate,
                        _ = int.recv() => StopSignal::Interrupt,
                    };
                    if tx.send(which).await.is_err() {
                        break;
                    }
                }
            });
        }
        _ => tracing::error!("cannot install signal handlers; stop with SIGKILL"),
    }
    rx
}

/// The main thread's runtime: a single thread serves `healthcheck` and `diagnose` whole, and for `serve` runs
/// the background work and the signal handling while the workers serve requests on their own threads.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}
