//! The fake RiskShield: a real HTTP/1.1 server that answers `POST …/score` from a script.
//!
//! A [`Plan`] says what it answers: a script of [`Step`]s played in order, then a default step for every
//! request after that, optionally only for requests carrying the right `X-API-Key`. The tests start it with
//! [`FakeRiskShield`] on 127.0.0.1:0 and read back what it received; the `fake_riskshield` example serves a
//! plan without recording (see [`Plan::without_recording`]) so a benchmark measures the service, not the fake.
//! [`FakeRiskShield::https`] serves the same over TLS, with a certificate from a [`TestPki`].
//!
//! Routes, the same for both:
//! - a path ending in `/score`: POST plays the next step (other methods get 405); without the expected key
//!   the answer is 401 and no step is used;
//! - `GET /health` → 200, for healthchecks and readiness polling;
//! - `GET /stats` → `{"requests":N,"connections":M}`: score requests answered by a step, and TCP connections
//!   accepted, so a check can prove the service called upstream and reused its connections;
//! - anything else → 404.
//!
//! Steps that are not answers: [`Step::Close`] ends the connection without a byte of answer, and
//! [`Step::raw`] writes bytes hyper would never write (an interim `100 Continue` and then nothing, a head cut
//! off) and then ends it. Both work on a fresh connection and on one that already carried answers, which is
//! where a client meets a vendor closing a kept-alive connection.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

use crate::lock;
use crate::pki::TestPki;
use crate::server::{Server, accept_loop, serve_http};

/// What the fake does with one score request.
#[derive(Debug, Clone)]
pub enum Step {
    /// Answer with this status, headers and body, after `pause`.
    Reply {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        pause: Pause,
        /// Add `Retry-After` as an HTTP date this far after the moment the answer is sent.
        retry_after_in: Option<Duration>,
    },
    /// Close the connection without answering. When it is the next step as a connection opens, only the
    /// request head is read (recorded with the path `(closed)`); on a connection that already carried
    /// answers, the whole request is read and recorded as usual, then the connection closes.
    Close,
    /// Write these bytes as they are, in place of an answer, then close the connection (see [`Step::raw`]).
    Raw(Bytes),
}

/// How long a [`Step::Reply`] waits before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Answer at once.
    None,
    /// Wait this long (real time): for upstream timeouts, and requests in flight in the container checks.
    For(Duration),
    /// Wait until [`FakeRiskShield::release`]: a request held in flight for exactly as long as a test needs,
    /// with no guess about timing.
    UntilReleased,
}

impl Step {
    /// 200 with `{"riskScore":score,"riskLevel":level}`. Any score and level are allowed, so a test can
    /// exercise the service's rejection of invalid answers.
    pub fn ok(score: i64, level: &str) -> Step {
        Step::body(serde_json::json!({ "riskScore": score, "riskLevel": level }).to_string())
    }

    /// `status` with a small JSON error body.
    ///
    /// # Panics
    /// If `status` is not a valid HTTP status code (a mistake in the test's script).
    pub fn status(status: u16) -> Step {
        Step::Reply {
            status: StatusCode::from_u16(status).expect("a scripted status is in 100..=999"),
            headers: HeaderMap::new(),
            body: Bytes::from_static(br#"{"error":"scripted"}"#),
            pause: Pause::None,
            retry_after_in: None,
        }
    }

    /// 200 with exactly this body (no Content-Type: the contract does not require one).
    pub fn body(body: impl Into<Bytes>) -> Step {
        Step::Reply {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: body.into(),
            pause: Pause::None,
            retry_after_in: None,
        }
    }

    /// These bytes written as they are, in place of an answer, and then the end of the connection: for what
    /// hyper would never write, e.g. `HTTP/1.1 100 Continue\r\n\r\n` followed by nothing.
    pub fn raw(bytes: impl Into<Bytes>) -> Step {
        Step::Raw(bytes.into())
    }

    /// A valid answer (42, MEDIUM) after `delay`.
    pub fn slow(delay: Duration) -> Step {
        Step::ok(42, "MEDIUM").after(delay)
    }

    /// A valid answer (42, MEDIUM) held until [`FakeRiskShield::release`].
    pub fn hold() -> Step {
        Step::ok(42, "MEDIUM").held()
    }

    /// Adds a response header, e.g. Retry-After.
    pub fn with_header(self, name: HeaderName, value: HeaderValue) -> Step {
        self.map_reply(|headers, _| {
            headers.append(name, value);
        })
    }

    /// Adds `Retry-After` as an HTTP date `ahead` of the moment the answer is sent. The date is made then, not
    /// when the step is scripted, so the wait it asks for does not shrink while the test starts its servers.
    pub fn with_retry_after_date(mut self, ahead: Duration) -> Step {
        if let Step::Reply { retry_after_in, .. } = &mut self {
            *retry_after_in = Some(ahead);
        }
        self
    }

    /// Answers after `delay` (no pause when it is zero).
    pub fn after(self, delay: Duration) -> Step {
        self.map_reply(|_, pause| {
            *pause = if delay.is_zero() {
                Pause::None
            } else {
                Pause::For(delay)
            };
        })
    }

    /// Answers once released.
    pub fn held(self) -> Step {
        self.map_reply(|_, pause| *pause = Pause::UntilReleased)
    }

    fn map_reply(mut self, change: impl FnOnce(&mut HeaderMap, &mut Pause)) -> Step {
        if let Step::Reply { headers, pause, .. } = &mut self {
            change(headers, pause);
        }
        self
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: Method,
    /// The path; `(closed)` for a request answered by [`Step::Close`].
    pub path: String,
    pub headers: HeaderMap,
    /// The body as JSON, or null when it is not JSON.
    pub body: Value,
    pub at: Instant,
}

impl Received {
    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What a fake answers, before it serves.
#[derive(Debug, Clone)]
pub struct Plan {
    script: Vec<Step>,
    default: Step,
    api_key: Option<HeaderValue>,
    record: bool,
}

impl Plan {
    /// Answers every score request with `default`, recording each request.
    pub fn new(default: Step) -> Plan {
        Plan {
            script: Vec::new(),
            default,
            api_key: None,
            record: true,
        }
    }

    /// Plays `script` in order before falling back to the default step.
    pub fn script(mut self, script: Vec<Step>) -> Plan {
        self.script = script;
        self
    }

    /// Score requests must carry this `X-API-Key` or get 401.
    pub fn api_key(mut self, key: HeaderValue) -> Plan {
        self.api_key = Some(key);
        self
    }

    /// Keeps no record of requests: nothing per request but the answer and one counter, for load tests.
    pub fn without_recording(mut self) -> Plan {
        self.record = false;
        self
    }

    /// Serves on `listener` until the future is dropped: the entry point for a binary.
    pub async fn serve(self, listener: TcpListener) {
        let state = Arc::new(State::from(self));
        accept_loop(listener, move |stream| {
            state.connections.fetch_add(1, Ordering::SeqCst);
            connection(Arc::clone(&state), stream)
        })
        .await;
    }

    /// Like [`Plan::serve`], over TLS with `acceptor`. Connections are counted when accepted, before the
    /// handshake.
    pub async fn serve_tls(self, listener: TcpListener, acceptor: TlsAcceptor) {
        let state = Arc::new(State::from(self));
        accept_loop(listener, move |stream| {
            state.connections.fetch_add(1, Ordering::SeqCst);
            let state = Arc::clone(&state);
            let acceptor = acceptor.clone();
            async move {
                if let Ok(stream) = acceptor.accept(stream).await {
                    connection(state, stream).await;
                }
            }
        })
        .await;
    }
}

/// Shared by all connections of one fake. Options a plan leaves off are `None`, so the hot path of a
/// benchmark's fake takes no lock and notifies nobody.
struct State {
    script: Option<Mutex<VecDeque<Step>>>,
    default: Step,
    api_key: Option<Mutex<HeaderValue>>,
    received: Option<Mutex<Vec<Received>>>,
    /// Some step writes raw bytes ([`Step::Raw`]): connections are then shared between hyper and that step.
    raw: bool,
    answered: AtomicU64,
    connections: AtomicU64,
    arrived: Notify,
    release: Notify,
}

impl From<Plan> for State {
    fn from(plan: Plan) -> Self {
        let raw = plan
            .script
            .iter()
            .chain([&plan.default])
            .any(|step| matches!(step, Step::Raw(_)));
        State {
            raw,
            script: (!plan.script.is_empty()).then(|| Mutex::new(plan.script.into())),
            default: plan.default,
            api_key: plan.api_key.map(Mutex::new),
            received: plan.record.then(|| Mutex::new(Vec::new())),
            answered: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            arrived: Notify::new(),
            release: Notify::new(),
        }
    }
}

impl State {
    fn next_is_close(&self) -> bool {
        let next = self
            .script
            .as_ref()
            .and_then(|script| lock(script).front().map(|step| matches!(step, Step::Close)));
        next.unwrap_or(matches!(self.default, Step::Close))
    }

    fn next_step(&self) -> Cow<'_, Step> {
        match self.script.as_ref().and_then(|s| lock(s).pop_front()) {
            Some(step) => Cow::Owned(step),
            None => Cow::Borrowed(&self.default),
        }
    }

    fn accepts(&self, headers: &HeaderMap) -> bool {
        match &self.api_key {
            None => true,
            Some(expected) => headers.get("x-api-key") == Some(&*lock(expected)),
        }
    }

    /// Keeps a copy of the request when the plan records (the copy is only made then).
    fn record(&self, method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) {
        if let Some(received) = &self.received {
            lock(received).push(Received {
                method: method.clone(),
                path: path.to_owned(),
                headers: headers.clone(),
                body: serde_json::from_slice(body).unwrap_or(Value::Null),
                at: Instant::now(),
            });
            self.arrived.notify_waiters();
        }
    }
}

/// Serves one connection (already counted, and past TLS if any).
async fn connection<S>(state: Arc<State>, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if state.next_is_close() {
        let mut head = [0u8; 4096];
        if stream.read(&mut head).await.unwrap_or(0) > 0 {
            state.record(&Method::POST, "(closed)", &HeaderMap::new(), &[]);
            if let Some(script) = &state.script {
                let mut script = lock(script);
                if matches!(script.front(), Some(Step::Close)) {
                    script.pop_front();
                }
            }
        }
        return;
    }
    if state.raw {
        let shared = SharedIo(Arc::new(Mutex::new(stream)));
        let writer = shared.clone();
        let service = hyper::service::service_fn(move |req| {
            answer(Arc::clone(&state), req, Some(writer.clone()))
        });
        serve_http(shared, service).await;
    } else {
        let service = hyper::service::service_fn(move |req| {
            answer(Arc::clone(&state), req, None::<SharedIo<S>>)
        });
        serve_http(stream, service).await;
    }
}

/// A connection that hyper serves and a [`Step::Raw`] writes to directly. The lock is held only inside one
/// poll, and both sides are polled by the connection's one task, so it is never contended.
struct SharedIo<S>(Arc<Mutex<S>>);

impl<S> Clone for SharedIo<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SharedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SharedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *lock(&self.0)).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *lock(&self.0)).poll_shutdown(cx)
    }
}

/// What a step that is not an answer gives hyper: an error, on which it closes the connection without
/// writing anything.
fn hang_up() -> std::io::Error {
    std::io::Error::other("the script closes this connection")
}

async fn answer<W: AsyncWrite + Unpin>(
    state: Arc<State>,
    req: Request<Incoming>,
    raw: Option<W>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    if !path.ends_with("/score") {
        return Ok(match (&parts.method, path) {
            (&Method::GET, "/health") => json(StatusCode::OK, r#"{"status":"ok"}"#),
            (&Method::GET, "/stats") => json(
                StatusCode::OK,
                serde_json::json!({
                    "requests": state.answered.load(Ordering::Relaxed),
                    "connections": state.connections.load(Ordering::Relaxed),
                })
                .to_string(),
            ),
            _ => json(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#),
        });
    }
    if parts.method != Method::POST {
        state.record(&parts.method, path, &parts.headers, &[]);
        return Ok(json(
            StatusCode::METHOD_NOT_ALLOWED,
            r#"{"error":"use POST"}"#,
        ));
    }
    let authorised = state.accepts(&parts.headers);
    // Read the body to the end so the connection can be reused for the next request.
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Ok(json(
            StatusCode::BAD_REQUEST,
            r#"{"error":"unreadable body"}"#,
        ));
    };
    // A rejected request uses no step. The release is subscribed to before the request is recorded, so a
    // test that waits for the request and then releases it cannot release too early.
    let step = authorised.then(|| state.next_step());
    let released = matches!(
        step.as_deref(),
        Some(Step::Reply {
            pause: Pause::UntilReleased,
            ..
        })
    )
    .then(|| state.release.notified());
    state.record(&parts.method, path, &parts.headers, &body);
    let Some(step) = step else {
        return Ok(json(
            StatusCode::UNAUTHORIZED,
            r#"{"error":"invalid API key"}"#,
        ));
    };
    let (status, headers, body, pause, retry_after_in) = match &*step {
        Step::Reply {
            status,
            headers,
            body,
            pause,
            retry_after_in,
        } => (status, headers, body, pause, retry_after_in),
        Step::Close => return Err(hang_up()),
        Step::Raw(bytes) => {
            if let Some(mut raw) = raw {
                raw.write_all(bytes).await?;
                raw.flush().await?;
            }
            return Err(hang_up());
        }
    };
    state.answered.fetch_add(1, Ordering::Relaxed);
    match (pause, released) {
        (Pause::For(delay), _) => tokio::time::sleep(*delay).await,
        (Pause::UntilReleased, Some(released)) => released.await,
        _ => {}
    }
    let mut response = Response::new(Full::new(body.clone()));
    *response.status_mut() = *status;
    if !headers.is_empty() {
        *response.headers_mut() = headers.clone();
    }
    if let Some(ahead) = retry_after_in {
        let date = httpdate::fmt_http_date(SystemTime::now() + *ahead);
        if let Ok(date) = HeaderValue::try_from(date) {
            response.headers_mut().insert(header::RETRY_AFTER, date);
        }
    }
    Ok(response)
}

fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A fake RiskShield on 127.0.0.1:0 for one test, recording every score request; dropping it stops it.
pub struct FakeRiskShield {
    addr: SocketAddr,
    state: Arc<State>,
    tls: bool,
    _server: Server,
}

impl FakeRiskShield {
    /// Answers every score request with `default`.
    pub async fn start(default: Step) -> Self {
        Self::with_plan(Plan::new(default)).await
    }

    /// Plays `script`, then answers `default`.
    pub async fn scripted(script: Vec<Step>, default: Step) -> Self {
        Self::with_plan(Plan::new(default).script(script)).await
    }

    /// Serves `plan`, recording requests whatever the plan says: the readers below need the record.
    pub async fn with_plan(plan: Plan) -> Self {
        Self::serve(plan, None).await
    }

    /// Serves `plan` over HTTPS with a certificate from `pki` (for localhost and 127.0.0.1; [`Self::url`] names
    /// localhost), so the service reaches it only if it trusts `pki`'s CA. Connections are counted when
    /// accepted, before the handshake: one whose handshake fails is counted but sees no step.
    pub async fn https(plan: Plan, pki: &TestPki) -> Self {
        Self::serve(plan, Some(pki.acceptor())).await
    }

    async fn serve(mut plan: Plan, tls: Option<TlsAcceptor>) -> Self {
        plan.record = true;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake RiskShield");
        let state = Arc::new(State::from(plan));
        let shared = Arc::clone(&state);
        let https = tls.is_some();
        let server = Server::spawn(listener, move |stream| {
            shared.connections.fetch_add(1, Ordering::SeqCst);
            let state = Arc::clone(&shared);
            let tls = tls.clone();
            async move {
                match tls {
                    None => connection(state, stream).await,
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(stream).await {
                            connection(state, stream).await;
                        }
                    }
                }
            }
        })
        .expect("the fake RiskShield's address");
        Self {
            addr: server.addr(),
            state,
            tls: https,
            _server: server,
        }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to configure as RISKSHIELD_API_URL (the service POSTs to `{url}/score`).
    pub fn url(&self) -> String {
        if self.tls {
            // The test certificate names localhost: a client that checks the name, or resolves it, can.
            format!("https://localhost:{}/v1", self.addr.port())
        } else {
            format!("http://{}/v1", self.addr)
        }
    }

    /// Every score request so far, answered or rejected.
    pub fn requests(&self) -> Vec<Received> {
        lock(self.received()).clone()
    }

    /// How many score requests have arrived, answered or rejected.
    pub fn count(&self) -> usize {
        lock(self.received()).len()
    }

    /// The `X-API-Key` of every score request so far, in order.
    pub fn keys(&self) -> Vec<String> {
        lock(self.received())
            .iter()
            .map(|r| r.header("x-api-key").unwrap_or_default().to_owned())
            .collect()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        usize::try_from(self.state.connections.load(Ordering::SeqCst)).unwrap_or(usize::MAX)
    }

    /// Waits until at least `n` score requests have arrived: woken by each arrival, never by a timer.
    pub async fn wait_for(&self, n: usize) {
        loop {
            let arrived = self.state.arrived.notified();
            if self.count() >= n {
                return;
            }
            arrived.await;
        }
    }

    /// Lets every held answer ([`Step::hold`]) go.
    pub fn release(&self) {
        self.state.release.notify_waiters();
    }

    /// From now on, accept only `key`.
    ///
    /// # Panics
    /// If the fake was started without key checking ([`Plan::api_key`]).
    pub fn accept_only(&self, key: HeaderValue) {
        let expected = self
            .state
            .api_key
            .as_ref()
            .expect("accept_only needs a fake started with Plan::api_key");
        *lock(expected) = key;
    }

    fn received(&self) -> &Mutex<Vec<Received>> {
        self.state
            .received
            .as_ref()
            .expect("a FakeRiskShield always records")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{exchange, get, send};

    async fn post(fake: &str, headers: &[(&str, &str)]) -> crate::Reply {
        send(Method::POST, &format!("{fake}/score"), headers, "{}").await
    }

    #[tokio::test]
    async fn a_plan_served_without_recording_routes_like_the_example_binary() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let answer = Step::ok(17, "LOW").with_header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let plan = Plan::new(answer)
            .api_key(HeaderValue::from_static("k1"))
            .without_recording();
        let serving = tokio::spawn(plan.serve(listener));
        let base = format!("http://{addr}/v1");

        assert_eq!(
            get(&format!("http://{addr}/health")).await.status,
            StatusCode::OK
        );
        assert_eq!(post(&base, &[]).await.status, StatusCode::UNAUTHORIZED);
        let wrong = post(&base, &[("x-api-key", "k2")]).await;
        assert_eq!(wrong.code(), "invalid API key");
        let ok = post(&base, &[("x-api-key", "k1")]).await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(
            ok.json(),
            serde_json::json!({"riskScore": 17, "riskLevel": "LOW"})
        );
        assert_eq!(ok.header("content-type"), Some("application/json"));
        let get_score = get(&format!("{base}/score")).await;
        assert_eq!(get_score.status, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            get(&format!("http://{addr}/nope")).await.status,
            StatusCode::NOT_FOUND
        );
        // One answered score request; every request above came on its own connection, this one too.
        let stats = get(&format!("http://{addr}/stats")).await.json();
        assert_eq!(stats, serde_json::json!({"requests": 1, "connections": 7}));
        serving.abort();
    }

    #[tokio::test]
    async fn a_script_plays_in_order_then_the_default_and_records_everything() {
        let fake = FakeRiskShield::scripted(
            vec![
                Step::status(503).with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
                Step::body("not json"),
            ],
            Step::ok(5, "LOW"),
        )
        .await;
        let first = post(&fake.url(), &[("x-api-key", "a")]).await;
        assert_eq!(first.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(first.header("retry-after"), Some("1"));
        assert_eq!(first.header("content-type"), None);
        assert_eq!(post(&fake.url(), &[]).await.text(), "not json");
        for _ in 0..2 {
            assert_eq!(post(&fake.url(), &[]).await.json()["riskScore"], 5);
        }
        assert_eq!(fake.count(), 4);
        assert_eq!(fake.keys(), ["a", "", "", ""]);
        let first = &fake.requests()[0];
        assert_eq!(
            (first.method.as_str(), first.path.as_str()),
            ("POST", "/v1/score")
        );
        assert_eq!(first.body, serde_json::json!({}));
        assert_eq!(fake.connections(), 4);
    }

    #[tokio::test]
    async fn a_held_answer_waits_for_release() {
        let fake = FakeRiskShield::start(Step::hold()).await;
        let url = format!("{}/score", fake.url());
        let pending = tokio::spawn(async move { send(Method::POST, &url, &[], "{}").await });
        fake.wait_for(1).await;
        assert!(!pending.is_finished());
        fake.release();
        let reply = pending.await.expect("request task");
        assert_eq!(reply.json()["riskScore"], 42);
    }

    #[tokio::test]
    async fn close_ends_the_connection_without_an_answer_then_the_script_goes_on() {
        let fake = FakeRiskShield::scripted(vec![Step::Close], Step::ok(1, "LOW")).await;
        let request = || {
            Request::post(format!("{}/score", fake.url()))
                .body(Full::new(Bytes::from_static(b"{}")))
                .expect("request")
        };
        assert!(exchange(request()).await.is_err());
        assert_eq!(fake.requests()[0].path, "(closed)");
        let reply = exchange(request()).await.expect("the next step answers");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(fake.count(), 2);
    }

    #[tokio::test]
    async fn close_and_raw_steps_end_a_kept_alive_connection_after_reading_its_request() {
        let fake = FakeRiskShield::scripted(
            vec![
                Step::ok(1, "LOW"),
                Step::Close,
                Step::ok(2, "LOW"),
                Step::raw("HTTP/1.1 100 Continue\r\n\r\n"),
            ],
            Step::ok(3, "LOW"),
        )
        .await;
        let request = b"POST /v1/score HTTP/1.1\r\nhost: fake\r\ncontent-length: 2\r\n\r\n{}";
        for (score, end) in [(1, b"".as_slice()), (2, b"HTTP/1.1 100 Continue\r\n\r\n")] {
            let mut stream = tokio::net::TcpStream::connect(fake.addr())
                .await
                .expect("connect");
            stream.write_all(request).await.expect("first request");
            // The first answer, whole: its head, then as many bytes as its Content-Length says.
            let mut first = Vec::new();
            let complete = |bytes: &[u8]| {
                let text = String::from_utf8_lossy(bytes);
                let (head, body) = text.split_once("\r\n\r\n")?;
                let head = head.to_lowercase();
                let length = head
                    .split("content-length: ")
                    .nth(1)?
                    .split("\r\n")
                    .next()?;
                (body.len() >= length.parse().ok()?).then(|| body.to_owned())
            };
            let body = loop {
                if let Some(body) = complete(&first) {
                    break body;
                }
                let mut chunk = [0u8; 512];
                let n = stream.read(&mut chunk).await.expect("first answer");
                assert!(n > 0, "the first answer broke off");
                first.extend_from_slice(&chunk[..n]);
            };
            assert_eq!(
                serde_json::from_str::<Value>(&body).expect("json")["riskScore"],
                score
            );
            stream.write_all(request).await.expect("second request");
            let mut rest = Vec::new();
            stream.read_to_end(&mut rest).await.expect("the end");
            assert_eq!(rest, end);
        }
        let paths: Vec<_> = fake.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/v1/score"; 4]);
        assert_eq!(fake.connections(), 2);
    }

    #[tokio::test]
    async fn a_changed_key_is_the_only_one_accepted() {
        let fake = FakeRiskShield::with_plan(
            Plan::new(Step::ok(1, "LOW")).api_key(HeaderValue::from_static("old")),
        )
        .await;
        assert_eq!(
            post(&fake.url(), &[("x-api-key", "old")]).await.status,
            StatusCode::OK
        );
        fake.accept_only(HeaderValue::from_static("new"));
        assert_eq!(
            post(&fake.url(), &[("x-api-key", "old")]).await.status,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post(&fake.url(), &[("x-api-key", "new")]).await.status,
            StatusCode::OK
        );
        assert_eq!(fake.keys(), ["old", "old", "new"]);
    }
}
