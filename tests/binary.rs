//! The built binary: exit codes, configuration errors, the healthcheck subcommand, logs and SIGTERM drain.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{FakeUpstream, Step, TestServer, applicant, closed_port, config};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_applicant-validator");

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

async fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = command(args, env).output().await.expect("binary runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn version_and_help() {
    let (code, out, _) = run(&["--version"], &[]).await;
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        concat!("applicant-validator ", env!("CARGO_PKG_VERSION"))
    );
    let (code, out, _) = run(&["serve", "--help"], &[]).await;
    assert_eq!(code, 0);
    for var in [
        "HOST",
        "PORT",
        "KEY_VAULT_URL",
        "RISKSHIELD_API_URL",
        "REQUEST_TIMEOUT",
        "CORS_ORIGINS",
        "DEMO_MODE",
        "EXTRA_CA_CERTS",
    ] {
        assert!(out.contains(&format!("env: {var}")), "--help lacks {var}");
    }
    let (code, out, _) = run(&["--help"], &[]).await;
    assert_eq!(code, 0);
    for var in [
        "KEY_VAULT_URL",
        "RISKSHIELD_API_KEY",
        "RATE_LIMIT_PER_MINUTE",
        "MAX_CONNECTIONS",
    ] {
        assert!(out.contains(var), "top-level --help lacks {var}");
    }
    let (code, out, _) = run(&["healthcheck", "--help"], &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("--timeout") && out.contains("--url"));
}

#[tokio::test]
async fn configuration_errors_exit_64_naming_every_variable() {
    let (code, _, err) = run(
        &["serve"],
        &[
            ("PORT", "http"),
            ("LOG_LEVEL", "chatty"),
            ("RISKSHIELD_TIMEOUT", "forever"),
            ("KEY_VAULT_URL", "http://v.example"),
        ],
    )
    .await;
    assert_eq!(code, 64, "{err}");
    for var in ["PORT", "LOG_LEVEL", "RISKSHIELD_TIMEOUT", "KEY_VAULT_URL"] {
        assert!(
            err.lines().any(|l| l.contains(var)),
            "{var} not named in {err}"
        );
    }
    assert!(err.lines().count() >= 4);
}

#[tokio::test]
async fn a_flag_wins_over_its_variable() {
    let (code, _, err) = run(&["serve", "--port", "nope"], &[("PORT", "8080")]).await;
    assert_eq!(code, 64);
    assert!(err.contains("PORT") && err.contains("nope"), "{err}");
}

#[tokio::test]
async fn demo_mode_is_refused_in_prod() {
    for env in [
        vec![("ENVIRONMENT", "prod")],
        vec![
            ("ENVIRONMENT", "production"),
            ("DEMO_MODE", "true"),
            ("RISKSHIELD_API_KEY", "k"),
        ],
    ] {
        let (code, _, err) = run(&["serve"], &env).await;
        assert_eq!(code, 64, "{env:?}");
        assert!(err.contains("DEMO_MODE"), "{err}");
    }
}

#[tokio::test]
async fn plain_http_upstream_is_refused_in_prod() {
    let (code, _, err) = run(
        &["serve"],
        &[
            ("ENVIRONMENT", "prod"),
            ("RISKSHIELD_API_KEY", "k"),
            ("RISKSHIELD_API_URL", "http://rs.example/v1"),
            ("ALLOW_INSECURE_UPSTREAM", "true"),
        ],
    )
    .await;
    assert_eq!(code, 64);
    assert!(err.contains("RISKSHIELD_API_URL"), "{err}");
}

#[tokio::test]
async fn usage_errors_exit_64_for_serve_and_never_2() {
    let (code, _, _) = run(&["serve", "--no-such-flag"], &[]).await;
    assert_eq!(code, 64);
    let (code, _, _) = run(&["frobnicate"], &[]).await;
    assert_eq!(code, 64);
}

#[tokio::test]
async fn healthcheck_passes_against_a_healthy_server() {
    let s = TestServer::start(config(&[])).await;
    let port = s.addr.port().to_string();
    let (code, _, err) = run(&["healthcheck"], &[("PORT", &port)]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&["healthcheck"], &[("PORT", &port), ("HOST", "0.0.0.0")]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = run(&["healthcheck", "--url", &s.url("/health")], &[]).await;
    assert_eq!(code, 0);
    // Proxy variables are never consulted.
    let (code, _, _) = run(
        &["healthcheck"],
        &[
            ("PORT", &port),
            ("http_proxy", "http://127.0.0.1:1"),
            ("HTTP_PROXY", "http://127.0.0.1:1"),
        ],
    )
    .await;
    assert_eq!(code, 0);
    // Anything but 200 fails.
    let (code, _, err) = run(&["healthcheck", "--url", &s.url("/nope")], &[]).await;
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
    assert_eq!(err.trim().lines().count(), 1);
    s.stop().await;
}

#[tokio::test]
async fn healthcheck_fails_when_nothing_listens() {
    let addr = closed_port().await;
    let (code, _, err) = run(&["healthcheck"], &[("PORT", &addr.port().to_string())]).await;
    assert_eq!(code, 1);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[tokio::test]
async fn healthcheck_gives_up_on_a_server_that_never_answers() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port().to_string();
    // Accept connections and hold them open without answering.
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let (code, _, err) = run(&["healthcheck", "--timeout", "300ms"], &[("PORT", &port)]).await;
    assert_eq!(code, 1);
    assert!(err.contains("within"), "{err}");
    holder.abort();
}

#[tokio::test]
async fn healthcheck_argument_errors_exit_1() {
    for args in [
        &["healthcheck", "--bogus"][..],
        &["healthcheck", "--timeout", "soon"],
        &["healthcheck", "--url", "https://127.0.0.1/"],
    ] {
        let (code, _, _) = run(args, &[]).await;
        assert_eq!(code, 1, "{args:?}");
    }
    let (code, _, _) = run(&["healthcheck"], &[("PORT", "not-a-port")]).await;
    assert_eq!(code, 1);
}

/// A running `serve` child and the address it logged.
struct Served {
    child: Child,
    addr: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

async fn spawn_serve(env: &[(&str, &str)]) -> Served {
    let mut vars = vec![("HOST", "127.0.0.1"), ("PORT", "0"), ("LOG_FORMAT", "json")];
    vars.extend_from_slice(env);
    let mut child = command(&["serve"], &vars)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut reader = BufReader::new(stdout).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    let addr = loop {
        let line = lines.recv().await.expect("server logged before exiting");
        if line["message"] == "listening" {
            break line["address"].as_str().expect("address").to_owned();
        }
    };
    Served { child, addr, lines }
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_0() {
    let fake = FakeUpstream::start(Step::Hold).await;
    let url = fake.url();
    let mut served = spawn_serve(&[
        ("RISKSHIELD_API_KEY", "secret-key-value"),
        ("RISKSHIELD_API_URL", &url),
    ])
    .await;
    let target = format!("http://{}/api/v1/validate", served.addr);
    let request = tokio::spawn(async move { common::post_json(&target, &applicant()).await });
    fake.wait_for(1).await;
    sigterm(&served.child);
    // Wait for the drain to begin before letting the upstream answer.
    loop {
        let line = served.lines.recv().await.expect("log");
        if line["message"] == "shutting down, draining" {
            break;
        }
    }
    fake.release();
    let reply = request.await.expect("request task");
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(reply.json()["riskScore"], 42);
    let status = tokio::time::timeout(Duration::from_secs(20), served.child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert_eq!(status.code(), Some(0));
    let mut rest = Vec::new();
    while let Some(line) = served.lines.recv().await {
        rest.push(line);
    }
    assert!(
        rest.iter().any(|l| l["message"] == "drained, exiting"),
        "{rest:?}"
    );
}

#[tokio::test]
async fn logs_are_json_lines_without_secrets_or_personal_data() {
    let fake = FakeUpstream::start(Step::ok(42, "MEDIUM")).await;
    let url = fake.url();
    let mut served = spawn_serve(&[
        ("RISKSHIELD_API_KEY", "secret-key-value"),
        ("RISKSHIELD_API_URL", &url),
    ])
    .await;
    let reply = common::send(
        http::Method::POST,
        &format!("http://{}/api/v1/validate", served.addr),
        &[
            ("content-type", "application/json"),
            ("x-correlation-id", "log-test-1"),
        ],
        serde_json::to_vec(&applicant()).expect("json"),
    )
    .await;
    assert_eq!(reply.status, http::StatusCode::OK);
    sigterm(&served.child);
    let _ = served.child.wait().await;
    let mut lines = Vec::new();
    while let Some(line) = served.lines.recv().await {
        lines.push(line);
    }
    let request_line = lines
        .iter()
        .find(|l| l["message"] == "request" && l["correlation_id"] == "log-test-1")
        .expect("a request line");
    assert_eq!(request_line["method"], "POST");
    assert_eq!(request_line["path"], "/api/v1/validate");
    assert_eq!(request_line["status"], 200);
    assert!(request_line["duration_ms"].is_number());
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "upstream attempt" && l["correlation_id"] == "log-test-1")
    );
    let all = lines
        .iter()
        .map(Value::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    for secret in ["secret-key-value", "Thandi", "Nkosi", "9001011234088"] {
        assert!(!all.contains(secret), "logs contain {secret}");
    }
}
