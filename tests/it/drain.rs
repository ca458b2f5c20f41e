//! Shutdown of the built binary, driven by events only: a request held in flight by the fake upstream, the
//! drain's own log lines, and a connection whose request head the server is known to have half read.

use http::StatusCode;
use testkit::client::{self, wait_until_read};
use testkit::riskshield::{FakeRiskShield, Step};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{App, applicant};

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
