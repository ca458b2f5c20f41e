//! The built binary's shutdown: SHUTDOWN_DELAY (serving on with /ready 503), a second signal ending the
//! process at once, and several workers sharing one port.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{FakeUpstream, Step, applicant};
use http::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_applicant-validator");

/// A running `serve` child, the address it logged and its log lines.
struct Served {
    child: Child,
    addr: String,
    lines: tokio::sync::mpsc::UnboundedReceiver<Value>,
}

impl Served {
    async fn start(env: &[(&str, &str)]) -> Self {
        let mut vars = vec![("HOST", "127.0.0.1"), ("PORT", "0"), ("LOG_FORMAT", "json")];
        vars.extend_from_slice(env);
        let mut child = Command::new(BIN)
            .arg("serve")
            .env_clear()
            .envs(vars.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
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
        Self { child, addr, lines }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the log line whose message is `message` and returns it.
    async fn logged(&mut self, message: &str) -> Value {
        loop {
            let line = self
                .lines
                .recv()
                .await
                .unwrap_or_else(|| panic!("the server exited before logging {message:?}"));
            if line["message"] == message {
                return line;
            }
        }
    }

    async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("exits")
            .expect("status")
            .code()
    }
}

#[tokio::test]
async fn during_the_shutdown_delay_everything_but_ready_is_served_and_a_second_sigterm_exits_143() {
    let mut served = Served::start(&[
        ("DEMO_MODE", "true"),
        ("WORKERS", "2"),
        ("SHUTDOWN_DELAY", "1h"),
    ])
    .await;
    assert_eq!(
        common::get(&served.url("/ready")).await.status,
        StatusCode::OK
    );

    served.signal("TERM");
    let requested = served.logged("shutdown requested").await;
    assert_eq!(requested["signal"], "SIGTERM");
    let ready = common::get(&served.url("/ready")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(ready.json()["ready"], false);
    let health = common::get(&served.url("/health")).await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.json()["status"], "healthy");
    let reply = common::post_json(&served.url("/api/v1/validate"), &applicant()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("connection").is_none_or(|v| v != "close"));

    served.signal("TERM");
    assert_eq!(served.exit_code().await, Some(143));
}

#[tokio::test]
async fn after_the_shutdown_delay_the_service_drains_and_exits_0() {
    let mut served = Served::start(&[("DEMO_MODE", "true"), ("SHUTDOWN_DELAY", "200ms")]).await;
    served.signal("INT");
    let requested = served.logged("shutdown requested").await;
    assert_eq!(requested["signal"], "SIGINT");
    assert_eq!(requested["delay_ms"], 200);
    served.logged("shutting down, draining").await;
    served.logged("drained, exiting").await;
    assert_eq!(served.exit_code().await, Some(0));
}

#[tokio::test]
async fn a_second_signal_during_the_drain_ends_the_process_with_its_own_code() {
    let fake = FakeUpstream::start(Step::Hold).await;
    let url = fake.url();
    let mut served = Served::start(&[
        ("RISKSHIELD_API_KEY", "k"),
        ("RISKSHIELD_API_URL", &url),
        ("SHUTDOWN_GRACE", "1h"),
    ])
    .await;
    let target = served.url("/api/v1/validate");
    let held = tokio::spawn(async move {
        let _ = common::client()
            .request(
                http::Request::post(target)
                    .header("content-type", "application/json")
                    .body(http_body_util::Full::new(bytes::Bytes::from(
                        serde_json::to_vec(&applicant()).expect("json"),
                    )))
                    .expect("request"),
            )
            .await;
    });
    fake.wait_for(1).await;
    served.signal("TERM");
    served.logged("shutting down, draining").await;
    // The held request would keep the drain going for an hour; SIGINT ends it now, and its code is SIGINT's.
    served.signal("INT");
    assert_eq!(served.exit_code().await, Some(130));
    fake.release();
    let _ = held.await;
}

#[tokio::test]
async fn several_workers_share_the_port_and_answer_every_connection() {
    let mut served = Served::start(&[("DEMO_MODE", "true"), ("WORKERS", "3")]).await;
    // Separate connections, so the kernel spreads them over the workers' listeners.
    for _ in 0..12 {
        let addr = served.addr.parse().expect("socket address");
        let answer = common::raw(
            addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    served.signal("TERM");
    assert_eq!(served.exit_code().await, Some(0));
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
