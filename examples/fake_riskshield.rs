//! A fake RiskShield scoring API for local development, the container checks and load tests.
//!
//! Every POST to a path ending in `/score` (so both `{URL}/score` with `RISKSHIELD_API_URL=http://fake:9090/v1`
//! and `http://fake:9090`) gets one fixed answer, `{"riskScore":N,"riskLevel":"..."}`. The answer is serialised
//! once at startup and requests are never logged, so the fake costs as little CPU as possible and a benchmark
//! measures the service, not the fake.
//!
//! - `GET /health` → 200, for compose healthchecks and readiness polling.
//! - `GET /stats` → `{"requests":N,"connections":M}`: score requests answered and TCP connections accepted,
//!   so a test can prove the service really called upstream and reuses its connections.
//! - With `--api-key`/`FAKE_API_KEY`, a score request without a matching `X-API-Key` gets 401.
//! - With `--delay-ms`/`FAKE_DELAY_MS`, score answers are held back that long (in-flight and timeout tests).
//! - With `--tls CA_FILE`/`FAKE_TLS_CA_OUT`, it serves HTTPS, as the real vendor does: a CA and a certificate
//!   for localhost and 127.0.0.1 are made at startup (testkit's test PKI, so no key material is kept
//!   anywhere) and the CA certificate is written to CA_FILE, for the service's EXTRA_CA_CERTS or a proxy's
//!   trusted-CA setting.
//!
//! Its accept queue holds [`BACKLOG`] connections (the kernel caps it at `net.core.somaxconn`), more than the
//! service's 1,024 per listener: a benchmark that opens connections in bursts must measure the proxy, not
//! the fake's queue.
//!
//! It builds static for musl like the service and runs as PID 1 in its own scratch container, so it handles
//! SIGTERM/SIGINT itself (PID 1 has no default signal handling) and exits 0.
//!
//! The serving is the tests' fake RiskShield (`testkit::riskshield`) with one fixed step and no request
//! recording; this file is its command line.
//!
//! ```text
//! cargo run --release --example fake_riskshield -- --listen 127.0.0.1:9090 --score 17 --level LOW
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use http::header::{CONTENT_TYPE, HeaderValue};
use testkit::pki::TestPki;
use testkit::riskshield::{Plan, Step};
use testkit::server::listen;

/// The accept queue asked for.
const BACKLOG: u32 = 4096;

/// Command line; every option also reads the env var named next to it, so the scratch image is configured
/// with `-e` alone.
#[derive(Debug, Parser)]
#[command(
    name = "fake_riskshield",
    version,
    about = "A fake RiskShield scoring API"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "LISTEN", default_value = "0.0.0.0:9090")]
    listen: SocketAddr,
    /// The riskScore every score request gets. Values outside 0..=100 are allowed on purpose: they let a
    /// test exercise the service's rejection of invalid upstream answers.
    #[arg(
        long,
        env = "FAKE_SCORE",
        default_value_t = 42,
        allow_negative_numbers = true
    )]
    score: i64,
    /// The riskLevel every score request gets (sent verbatim, so invalid levels can be tested too).
    #[arg(long, env = "FAKE_LEVEL", default_value = "MEDIUM")]
    level: String,
    /// When set, score requests must carry this value in X-API-Key or get 401.
    #[arg(long, env = "FAKE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Milliseconds to wait before answering a score request: lets a test hold a request in flight (to
    /// prove graceful draining) or trip the service's upstream timeout. 0 answers at once.
    #[arg(long, env = "FAKE_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
    /// Tokio worker threads (default: one per CPU). A benchmark on a small machine can pin the fake to
    /// fewer threads than the service under test.
    #[arg(long, env = "FAKE_THREADS")]
    threads: Option<usize>,
    /// Serve HTTPS with a certificate from a CA made at startup, and write that CA's certificate (PEM) here.
    #[arg(long = "tls", env = "FAKE_TLS_CA_OUT", value_name = "CA_FILE")]
    tls_ca_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let api_key = match args.api_key.as_deref().map(HeaderValue::from_str) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            eprintln!("fake_riskshield: --api-key/FAKE_API_KEY must be visible ASCII");
            return ExitCode::from(64);
        }
    };
    let answer = Step::ok(args.score, &args.level)
        .with_header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .after(Duration::from_millis(args.delay_ms));
    let mut plan = Plan::new(answer).without_recording();
    if let Some(key) = api_key.clone() {
        plan = plan.api_key(key);
    }

    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads.filter(|&n| n > 0) {
        builder.worker_threads(threads);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fake_riskshield: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    // The test PKI before the runtime: making it is synchronous, and a CA file that cannot be written
    // stops the fake before it listens.
    let pki = match &args.tls_ca_out {
        None => None,
        Some(path) => {
            let pki = TestPki::new();
            if let Err(e) = std::fs::copy(pki.ca_file(), path) {
                eprintln!("fake_riskshield: cannot write {}: {e}", path.display());
                return ExitCode::from(1);
            }
            Some(pki)
        }
    };
    runtime.block_on(async move {
        let listener = match listen(args.listen, BACKLOG) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("fake_riskshield: cannot bind {}: {e}", args.listen);
                return ExitCode::from(1);
            }
        };
        // One startup line (not per request) so logs show where it listens and what it answers.
        println!(
            "{}",
            serde_json::json!({
                "msg": "fake RiskShield listening",
                "listen": args.listen.to_string(),
                "tls": pki.is_some(),
                "answer": { "riskScore": args.score, "riskLevel": args.level },
                "api_key_required": api_key.is_some(),
                "delay_ms": args.delay_ms,
            })
        );
        let serving = async move {
            match &pki {
                Some(pki) => plan.serve_tls(listener, pki.acceptor()).await,
                None => plan.serve(listener).await,
            }
        };
        tokio::select! {
            () = serving => ExitCode::from(1),
            signal = shutdown_signal() => {
                println!("{}", serde_json::json!({ "msg": "fake RiskShield exiting", "signal": signal }));
                ExitCode::SUCCESS
            }
        }
    })
}

/// Resolves with the signal's name on SIGTERM (docker stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            eprintln!("fake_riskshield: cannot install signal handlers; stop with SIGKILL");
            std::future::pending().await
        }
    }
}
