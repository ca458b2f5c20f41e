//! The built binary's shutdown: SHUTDOWN_DELAY (serving on with /ready 503), a second signal ending the
//! process at once, and several workers sharing one port.

use std::process::Stdio;

use http::StatusCode;
use serde_json::Value;
use testkit::client::{get, post_json, raw, send};
use testkit::riskshield::{FakeRiskShield, Step};
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
