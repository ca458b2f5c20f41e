//! The built binary's shutdown, driven by events only (a request held in flight by the fake upstream, the
//! drain's own log lines, a connection whose request head the server is known to have half read):
//! SHUTDOWN_DELAY (serving on with /ready 503), the drain and its grace period, a second signal ending the
//! process at once, and several workers sharing one port.

use std::process::Stdio;

use http::StatusCode;
use serde_json::Value;
use testkit::client::{self, get, post_json, raw, send, wait_until_read};
use testkit::riskshield::{FakeRiskShield, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;

use crate::support::{App, applicant};

const BIN: &str = env!("CARGO_BIN_EXE_applicant-validator");

/// The first log line whose message is `message`.
async fn logged(app: &App, message: &str) -> Value {
    app.process
        .wait_for_log(message, |line| line["message"] == message)
        .await
}

/// The exit code, once the process has ended.
async fn exit_code(app: &mut App) -> Option<i32> {
    app.process.wait().await.code()
}

#[tokio::test]
async fn during_the_shutdown_delay_everything_but_ready_is_served_and_a_second_sigterm_exits_143() {
    let mut served = App::start(&[
        ("DEMO_MODE", "true"),
        ("WORKERS", "2"),
        ("SHUTDOWN_DELAY", "1h"),
    ])
    .await;
    assert_eq!(get(&served.url("/ready")).await.status, StatusCode::OK);

    served.process.signal("TERM");
    let requested = logged(&served, "shutdown requested").await;
    assert_eq!(requested["signal"], "SIGTERM");
    let ready = get(&served.url("/ready")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);
    let health = get(&served.url("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "healthy");
    let reply = post_json(&served.url("/api/v1/validate"), &applicant()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("connection").is_none_or(|v| v != "close"));

    served.process.signal("TERM");
    assert_eq!(exit_code(&mut served).await, Some(143));
}

#[tokio::test]
async fn after_the_shutdown_delay_the_service_drains_and_exits_0() {
    let mut served = App::start(&[("DEMO_MODE", "true"), ("SHUTDOWN_DELAY", "200ms")]).await;
    served.process.signal("INT");
    let requested = logged(&served, "shutdown requested").await;
    assert_eq!(requested["signal"], "SIGINT");
    assert_eq!(requested["delay_ms"], 200);
    logged(&served, "shutting down, draining").await;
    logged(&served, "drained, exiting").await;
    assert_eq!(exit_code(&mut served).await, Some(0));
}

#[tokio::test]
async fn a_second_signal_during_the_drain_ends_the_process_with_its_own_code() {
    let fake = FakeRiskShield::start(Step::hold()).await;
    let url = fake.url();
    let mut served = App::start(&[
        ("RISKSHIELD_API_KEY", "k"),
        ("RISKSHIELD_API_URL", &url),
        ("SHUTDOWN_GRACE", "1h"),
    ])
    .await;
    let target = served.url("/api/v1/validate");
    let held = tokio::spawn(async move {
        let _ = send(
            http::Method::POST,
            &target,
            &[("content-type", "application/json")],
            serde_json::to_vec(&applicant()).expect("json"),
        )
        .await;
    });
    fake.wait_for(1).await;
    served.process.signal("TERM");
    logged(&served, "shutting down, draining").await;
    // The held request would keep the drain going for an hour; SIGINT ends it now, and its code is SIGINT's.
    served.process.signal("INT");
    assert_eq!(exit_code(&mut served).await, Some(130));
    fake.release();
    let _ = held.await;
}

#[tokio::test]
async fn several_workers_share_the_port_and_answer_every_connection() {
    let mut served = App::start(&[("DEMO_MODE", "true"), ("WORKERS", "3")]).await;
    // Separate connections, so the kernel spreads them over the workers' listeners.
    for _ in 0..12 {
        let addr = served.addr;
        let answer = raw(
            addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    served.process.signal("TERM");
    assert_eq!(exit_code(&mut served).await, Some(0));
}

#[tokio::test]
async fn several_workers_do_not_take_over_a_port_another_socket_holds() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port().to_string();
    let out = Command::new(BIN)
        .arg("serve")
        .env_clear()
        .envs([
            ("HOST", "127.0.0.1"),
            ("PORT", port.as_str()),
            ("DEMO_MODE", "true"),
            ("WORKERS", "2"),
        ])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("binary runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot bind"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_and_exits_0() {
    let fake = FakeRiskShield::start(Step::hold()).await;
    let url = fake.url();
    let mut app = App::start(&[
        ("RISKSHIELD_API_KEY", "secret-key-value"),
        ("RISKSHIELD_API_URL", url.as_str()),
    ])
    .await;
    let target = app.url("/api/v1/validate");
    let request = tokio::spawn(async move { post_json(&target, &applicant()).await });
    fake.wait_for(1).await;
    app.process.signal("TERM");
    // Wait for the drain to begin before letting the upstream answer.
    app.process
        .wait_for_log("the drain", |l| l["message"] == "shutting down, draining")
        .await;
    fake.release();
    let reply = request.await.expect("request task");
    assert_eq!(reply.status, http::StatusCode::OK);
    assert_eq!(reply.json()["riskScore"], 42);
    let status = app.process.wait().await;
    assert_eq!(status.code(), Some(0));
    let lines = app.process.json_lines();
    let rest: Vec<&Value> = lines
        .iter()
        .skip_while(|l| l["message"] != "shutting down, draining")
        .collect();
    assert!(
        rest.iter().any(|l| l["message"] == "drained, exiting"),
        "{rest:?}"
    );
}

#[tokio::test]
async fn health_answers_503_draining_on_a_connection_opened_before_the_signal() {
    let fake = FakeRiskShield::start(Step::hold()).await;
    let url = fake.url();
    let mut app = App::start(&[
        ("RISKSHIELD_API_KEY", "rs-key-drain-1"),
        ("RISKSHIELD_API_URL", url.as_str()),
        ("SHUTDOWN_GRACE", "1m"),
        ("HEADER_READ_TIMEOUT", "1m"),
    ])
    .await;
    // A validation held by the upstream keeps the server draining for as long as the test needs.
    let target = app.url("/api/v1/validate");
    let held = tokio::spawn(async move { client::post_json(&target, &applicant()).await });
    fake.wait_for(1).await;

    // The listener closes when draining starts, so the health request goes on a connection opened before.
    // Half its head is sent and read by the server first: a connection with nothing read yet would simply be
    // closed by the drain, this one is a request in progress and gets its answer.
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n")
        .await
        .expect("write");
    wait_until_read(&stream).await;

    app.process.signal("TERM");
    let draining = app
        .process
        .wait_for_log("the drain", |l| l["message"] == "shutting down, draining")
        .await;
    assert_eq!(draining["connections"], 2, "{draining}");
    stream.write_all(b"\r\n").await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 503"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains(r#""status":"draining""#), "{answer}");

    // The held request still gets its answer, then the process exits cleanly.
    fake.release();
    let reply = held.await.expect("request task");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("connection"), Some("close"));
    let status = app.process.wait().await;
    assert_eq!(status.code(), Some(0));
    assert!(
        app.process
            .json_lines()
            .iter()
            .any(|l| l["message"] == "drained, exiting")
    );
}

#[tokio::test]
async fn requests_still_running_when_the_grace_period_ends_are_cut_off_and_the_exit_is_0() {
    let fake = FakeRiskShield::start(Step::hold()).await;
    let url = fake.url();
    let mut app = App::start(&[
        ("RISKSHIELD_API_KEY", "rs-key-drain-2"),
        ("RISKSHIELD_API_URL", url.as_str()),
        ("SHUTDOWN_GRACE", "1s"),
        ("RISKSHIELD_TIMEOUT", "1m"),
        ("REQUEST_TIMEOUT", "1m"),
    ])
    .await;
    let request = http::Request::post(app.url("/api/v1/validate"))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            applicant().to_string(),
        )))
        .expect("request");
    let held = tokio::spawn(client::exchange(request));
    fake.wait_for(1).await;

    // The upstream never answers: only the end of the grace period can end the drain.
    app.process.signal("TERM");
    let line = app
        .process
        .wait_for_log("the end of the grace period", |l| {
            l["message"] == "shutdown grace period over; closed remaining connections"
        })
        .await;
    assert_eq!(line["remaining"], 1, "{line}");
    assert_eq!(line["level"], "WARN");
    let status = app.process.wait().await;
    assert_eq!(status.code(), Some(0));
    let outcome = held.await.expect("client task");
    assert!(
        outcome.is_err(),
        "the connection was closed without an answer: {outcome:?}"
    );
    assert!(
        !app.process
            .json_lines()
            .iter()
            .any(|l| l["message"] == "drained, exiting")
    );
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed_by_the_drain_without_waiting_for_the_grace_period()
{
    let mut app = App::start(&[
        ("DEMO_MODE", "true"),
        ("SHUTDOWN_GRACE", "10m"),
        ("HEADER_READ_TIMEOUT", "10m"),
    ])
    .await;
    // Two keep-alive connections, each answered once and then left idle.
    let mut idle = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(app.addr).await.expect("connect");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .expect("write");
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"HTTP/1.1 200");
        idle.push(stream);
    }
    app.process.signal("TERM");
    // Each idle connection is closed by the server: the rest of its answer, then the end. (Bounded, so a drain
    // that forgets idle connections fails here instead of hanging for the grace period.)
    for mut stream in idle {
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            stream.read_to_end(&mut rest),
        );
        assert!(
            matches!(closed.await, Ok(Ok(_))),
            "an idle connection was left open"
        );
    }
    // Nothing was left to cut off: the drain ended long before the ten-minute grace period.
    app.process
        .wait_for_log("the drain's end", |l| l["message"] == "drained, exiting")
        .await;
    assert_eq!(app.process.wait().await.code(), Some(0));
}
