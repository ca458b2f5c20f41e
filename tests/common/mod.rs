//! Shared test fixtures: the real server started through the library seam, a scriptable fake RiskShield
//! (a real hyper server on 127.0.0.1:0), and small HTTP helpers.

#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use applicant_validator::Config;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

/// A configuration from `vars` (unset variables take their defaults), HOST pinned to loopback.
pub fn config(vars: &[(&str, &str)]) -> Config {
    let mut map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    map.entry("HOST".into())
        .or_insert_with(|| "127.0.0.1".into());
    match Config::from_lookup(|name| map.get(name).cloned()) {
        Ok(c) => c,
        Err(e) => panic!("test configuration is invalid: {e}"),
    }
}

/// The service under test, running in this process on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub async fn start(config: Config) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            applicant_validator::serve(config, listener, shutdown)
                .await
                .expect("server runs");
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits until it has drained.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of a JSON error answer.
    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request with the given headers and body.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).expect("request");
    let response = client().request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// POSTs a JSON value with Content-Type application/json.
pub async fn post_json(url: &str, body: &Value) -> Reply {
    send(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        serde_json::to_vec(body).expect("json"),
    )
    .await
}

pub fn applicant() -> Value {
    serde_json::json!({"firstName": "Thandi", "lastName": "Nkosi", "idNumber": "9001011234088"})
}

/// Writes raw bytes to the server and reads the whole answer (the request should ask for Connection: close).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// What the fake RiskShield does with one request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this status, extra headers and body.
    Reply {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Wait (real time) before answering 200 with a valid score.
    Slow(Duration),
    /// Wait until [`FakeUpstream::release`] is called, then answer 200 with a valid score.
    Hold,
    /// Close the connection without answering.
    Close,
}

impl Step {
    pub fn ok(score: u8, level: &str) -> Step {
        Step::Reply {
            status: 200,
            headers: vec![],
            body: format!(r#"{{"riskScore":{score},"riskLevel":"{level}"}}"#),
        }
    }

    pub fn status(status: u16) -> Step {
        Step::Reply {
            status,
            headers: vec![],
            body: r#"{"error":"scripted"}"#.into(),
        }
    }

    pub fn body(body: impl Into<String>) -> Step {
        Step::Reply {
            status: 200,
            headers: vec![],
            body: body.into(),
        }
    }

    pub fn with_header(self, name: &'static str, value: impl Into<String>) -> Step {
        match self {
            Step::Reply {
                status,
                mut headers,
                body,
            } => {
                headers.push((name, value.into()));
                Step::Reply {
                    status,
                    headers,
                    body,
                }
            }
            other => other,
        }
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Value,
    pub at: Instant,
}

#[derive(Default)]
struct FakeState {
    script: Mutex<VecDeque<Step>>,
    default: Mutex<Option<Step>>,
    received: Mutex<Vec<Received>>,
    connections: AtomicUsize,
    arrived: Notify,
    release: Notify,
}

/// A scriptable fake RiskShield: a real HTTP/1.1 server on 127.0.0.1:0 that plays its script in order, then
/// repeats its default step, and records every request and connection.
#[derive(Clone)]
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<FakeState>,
}

impl FakeUpstream {
    /// A fake that answers every request with `default`.
    pub async fn start(default: Step) -> Self {
        Self::scripted(vec![], default).await
    }

    /// A fake that plays `script`, then answers `default`.
    pub async fn scripted(script: Vec<Step>, default: Step) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(FakeState::default());
        *state.script.lock().expect("lock") = script.into();
        *state.default.lock().expect("lock") = Some(default);
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = accept_state.clone();
                tokio::spawn(serve_fake_connection(stream, state));
            }
        });
        Self { addr, state }
    }

    /// The base URL to configure as RISKSHIELD_API_URL.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn requests(&self) -> Vec<Received> {
        self.state.received.lock().expect("lock").clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().expect("lock").len()
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let notified = self.state.arrived.notified();
            if self.count() >= n {
                return;
            }
            notified.await;
        }
    }

    /// Lets held requests ([`Step::Hold`]) answer.
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }
}

async fn serve_fake_connection(stream: TcpStream, state: Arc<FakeState>) {
    // Peek at the first step: a Close step drops the connection after the request head arrives.
    let next_is_close = {
        let script = state.script.lock().expect("lock");
        match script.front() {
            Some(step) => matches!(step, Step::Close),
            None => matches!(*state.default.lock().expect("lock"), Some(Step::Close)),
        }
    };
    if next_is_close {
        let mut stream = stream;
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n > 0 {
            record(
                &state,
                Method::POST,
                "(closed)".into(),
                HeaderMap::new(),
                Value::Null,
            );
            let mut script = state.script.lock().expect("lock");
            if matches!(script.front(), Some(Step::Close)) {
                script.pop_front();
            }
        }
        return;
    }
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(fake_answer(state, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

fn record(state: &FakeState, method: Method, path: String, headers: HeaderMap, body: Value) {
    state.received.lock().expect("lock").push(Received {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    });
    state.arrived.notify_waiters();
}

async fn fake_answer(state: Arc<FakeState>, req: Request<Incoming>) -> http::Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let step = {
        let mut script = state.script.lock().expect("lock");
        script
            .pop_front()
            .or_else(|| state.default.lock().expect("lock").clone())
            .unwrap_or_else(|| Step::status(500))
    };
    let release = state.release.notified();
    record(
        &state,
        parts.method,
        parts.uri.path().to_owned(),
        parts.headers,
        body,
    );
    let step = match step {
        Step::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Step::ok(42, "MEDIUM")
        }
        Step::Hold => {
            release.await;
            Step::ok(42, "MEDIUM")
        }
        other => other,
    };
    match step {
        Step::Reply {
            status,
            headers,
            body,
        } => {
            let mut response = http::Response::new(Full::new(Bytes::from(body)));
            *response.status_mut() = StatusCode::from_u16(status).expect("status");
            for (name, value) in headers {
                response
                    .headers_mut()
                    .insert(name, value.parse().expect("header value"));
            }
            response
        }
        // Close on a served connection: answer nothing useful (only reachable if scripted mid-connection).
        _ => http::Response::new(Full::new(Bytes::new())),
    }
}

/// A port on 127.0.0.1 where nothing listens.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}
