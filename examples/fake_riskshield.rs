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
//!
//! It builds static for musl like the service and runs as PID 1 in its own scratch container, so it handles
//! SIGTERM/SIGINT itself (PID 1 has no default signal handling) and exits 0.
//!
//! ```text
//! cargo run --release --example fake_riskshield -- --listen 127.0.0.1:9090 --score 17 --level LOW
//! ```

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

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
}

/// Shared by all connections: the prebuilt answers and the counters behind `/stats`.
struct State {
    score_body: Bytes,
    delay: Duration,
    api_key: Option<HeaderValue>,
    requests: AtomicU64,
    connections: AtomicU64,
}

type Body = Full<Bytes>;

fn main() -> ExitCode {
    let args = Args::parse();
    let score_body =
        serde_json::json!({ "riskScore": args.score, "riskLevel": args.level }).to_string();
    let api_key = match args.api_key.as_deref().map(HeaderValue::from_str) {
        None => None,
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            eprintln!("fake_riskshield: --api-key/FAKE_API_KEY must be visible ASCII");
            return ExitCode::from(64);
        }
    };
    let state = Arc::new(State {
        score_body: Bytes::from(score_body),
        delay: Duration::from_millis(args.delay_ms),
        api_key,
        requests: AtomicU64::new(0),
        connections: AtomicU64::new(0),
    });

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
    runtime.block_on(async move {
        let listener = match TcpListener::bind(args.listen).await {
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
                "answer": serde_json::from_slice::<serde_json::Value>(&state.score_body).unwrap_or_default(),
                "api_key_required": state.api_key.is_some(),
                "delay_ms": args.delay_ms,
            })
        );
        tokio::select! {
            () = accept_loop(listener, state) => ExitCode::from(1),
            signal = shutdown_signal() => {
                println!("{}", serde_json::json!({ "msg": "fake RiskShield exiting", "signal": signal }));
                ExitCode::SUCCESS
            }
        }
    })
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Usually EMFILE under load: back off briefly instead of spinning or crashing.
                eprintln!("fake_riskshield: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        state.connections.fetch_add(1, Ordering::Relaxed);
        // Small request/response pairs on keep-alive connections: Nagle would add delayed-ACK latency.
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
            // Errors here are client disconnects; nothing useful to do with them.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path();
    if path.ends_with("/score") {
        if req.method() != Method::POST {
            return Ok(reply(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"use POST"}"#,
            ));
        }
        let authorised = match &state.api_key {
            None => true,
            Some(expected) => req.headers().get("x-api-key") == Some(expected),
        };
        // Read the body to the end so the connection can be reused for the next request.
        if req.into_body().collect().await.is_err() {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                r#"{"error":"unreadable body"}"#,
            ));
        }
        if !authorised {
            return Ok(reply(
                StatusCode::UNAUTHORIZED,
                r#"{"error":"invalid API key"}"#,
            ));
        }
        state.requests.fetch_add(1, Ordering::Relaxed);
        if !state.delay.is_zero() {
            tokio::time::sleep(state.delay).await;
        }
        return Ok(reply(StatusCode::OK, state.score_body.clone()));
    }
    Ok(match (req.method(), path) {
        (&Method::GET, "/health") => reply(StatusCode::OK, r#"{"status":"ok"}"#),
        (&Method::GET, "/stats") => reply(
            StatusCode::OK,
            serde_json::json!({
                "requests": state.requests.load(Ordering::Relaxed),
                "connections": state.connections.load(Ordering::Relaxed),
            })
            .to_string(),
        ),
        _ => reply(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
    })
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
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
