//! A per-worker pool of HTTP/1.1 connections to RiskShield, and the one exchange the service makes on them:
//! a request written in one piece, and its answer read and framed on the calling task ([`super::h1`]).
//!
//! Each serving thread owns one [`Pool`]: its connections were opened by that thread's runtime, so a request
//! and its upstream exchange never change threads.
//!
//! Why not hyper's client connection: `client::conn::http1` drives each connection in a task of its own and
//! hands it every request and answer through channels, and builds a header map for every request and answer.
//! Writing the request as one buffer and reading the answer with `httparse` (the parser hyper itself uses)
//! on the request's own task took the service's instructions per validation from 48,924 to 37,259 (−24 %,
//! callgrind; docs/benchmarks.md). The connections are still the one outbound stack's (hyper-util's TCP
//! connector under rustls, `crate::outbound`). The exchange is one fixed request shape, and the answer is
//! framed as RFC 9112 says: `Content-Length`, `chunked`, or the connection's end.
//!
//! One exchange writes the request at most once. A pooled connection that turns out to be closed before it
//! accepted a byte of the request is replaced, and that is still one request; once a byte was accepted the
//! vendor may have read it, so whatever happens next (a close, an interim 1xx and then a close, a broken
//! answer) is the exchange's failure, and the client's retry loop decides whether another attempt is made.
//!
//! The pool is bounded both ways. A worker holds at most [`MAX_CONNECTIONS`] connections, in use and idle
//! together; a caller beyond that waits for one to come free, inside its own attempt timeout, rather than
//! open more. And no connection stays idle longer than the vendor keeps it: after [`IDLE_TIMEOUT`] it is
//! closed, by the next checkout or by the worker's sweeper, wherever it sits in the idle stack.
//!
//! Ready connections are reused last-in first-out, so a light load keeps reusing a few warm connections and the
//! rest age out. A connection goes back into the pool only after its answer was read completely and nothing
//! followed it; anything else (an error, a timeout that dropped the exchange, an oversized body, `Connection:
//! close`, an answer that runs to the connection's end) closes it.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tower_service::Service;

use super::h1::{Answer, Connection, ExchangeError};
use crate::outbound::Connector;

/// Connections one worker holds to RiskShield at most, in use and idle together.
///
/// Enough to keep a worker busy: on loopback a worker is CPU-bound with a few dozen exchanges in flight, and
/// 64 in flight at 100 ms of vendor latency still carry 640 validations a second per worker. Few enough that
/// a burst of clients does not become a burst of vendor connections: a cold start at full load opens 64
/// per worker at once, which two workers' worth fits a common accept backlog of 128 (SYNs beyond a full
/// backlog are dropped and retried after a second). Measured in docs/benchmarks.md.
pub const MAX_CONNECTIONS: usize = 64;

/// A connection idle this long (counted from the start of its last exchange) is not used again.
///
/// Below the shortest common server keep-alive timeout (Node and HAProxy setups: 5 s; nginx: 75 s) with the
/// sweeper's spacing added, so the pool lets a connection go before the vendor does: a request is then never
/// written to a connection the vendor is closing at that moment.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3);

/// The sweeper looks at the idle connections at most this often: together with [`IDLE_TIMEOUT`], no
/// connection is idle for more than 4 s.
const SWEEP_SPACING: Duration = Duration::from_secs(1);

type BoxError = Box<dyn StdError + Send + Sync>;

/// A connection as the connector makes it (TCP, or TLS over TCP), seen through tokio's I/O traits.
type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// Why an exchange failed before an answer's head arrived.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect failed: {0}")]
    Connect(BoxError),
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
}

/// A pooled connection: boxed, because a TLS connection's state is large and every future that holds the
/// exchange (up to the whole request's) would otherwise carry it and be moved with it.
type Conn = Box<Connection<Io>>;

struct Idle {
    conn: Conn,
    /// When the exchange that last used it began: never later than it became idle, so its idle time is never
    /// under-counted.
    since: Instant,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= IDLE_TIMEOUT
    }
}

/// One worker's connections to one upstream origin.
pub struct Pool {
    shared: Arc<Shared>,
    sweeper: Option<AbortHandle>,
}

struct Shared {
    connector: Connector,
    /// scheme://authority of the upstream, what the connector connects to.
    origin: Uri,
    /// Idle connections, the longest idle at the front; checkout takes from the back.
    idle: Mutex<VecDeque<Idle>>,
    /// One permit per connection an exchange holds (or is opening); see [`MAX_CONNECTIONS`].
    slots: Semaphore,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.shared.origin)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(sweeper) = &self.sweeper {
            sweeper.abort();
        }
    }
}

impl Pool {
    /// An empty pool for `origin` (scheme and authority; a path is ignored), at most [`MAX_CONNECTIONS`]
    /// connections. Made inside the worker's runtime, it starts that worker's sweeper there.
    pub fn new(connector: Connector, origin: Uri) -> Self {
        Self::with_limit(connector, origin, MAX_CONNECTIONS)
    }

    /// [`Pool::new`] with at most `limit` connections.
    pub fn with_limit(connector: Connector, origin: Uri, limit: usize) -> Self {
        let shared = Arc::new(Shared {
            connector,
            origin,
            idle: Mutex::new(VecDeque::new()),
            slots: Semaphore::new(limit.max(1)),
        });
        // Without a sweeper, connections left idle when the load stops would wait for the next checkout.
        let sweeper = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(sweep(Arc::downgrade(&shared))).abort_handle());
        Self { shared, sweeper }
    }

    /// Connections currently idle in the pool.
    pub fn idle_count(&self) -> usize {
        self.shared.lock().len()
    }

    /// Writes `request` (a whole HTTP/1.1 request: head and body) once and reads the answer, its body up to
    /// `max_body` bytes. `now` is when the exchange begins (the caller has just read the clock): idle
    /// connections are aged against it, and the one used counts as idle from it. Over the connection cap it
    /// waits for a connection to come free: the caller's timeout bounds the wait.
    pub async fn exchange(
        &self,
        request: &[u8],
        max_body: usize,
        now: Instant,
    ) -> Result<Answer, PoolError> {
        let shared = &*self.shared;
        // The permit is released when the exchange ends, after its connection went back: a waiter then finds
        // it idle. Waiting is the rare path; boxed, its state does not sit inside every exchange's future.
        let (_slot, now) = match shared.slots.try_acquire() {
            Ok(slot) => (slot, now),
            Err(_) => {
                let slot = Box::pin(shared.slots.acquire())
                    .await
                    .map_err(|e| PoolError::Connect(e.into()))?;
                (slot, Instant::now())
            }
        };
        loop {
            // The connect path (TCP, TLS) is rare once connections are pooled; boxed, its state does not sit
            // inside every exchange's future.
            let (mut conn, reused) = match shared.checkout(now) {
                Some(conn) => (conn, true),
                None => (Box::pin(shared.connect()).await?, false),
            };
            match conn.send(request, max_body).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        shared.checkin(conn, now);
                    }
                    return Ok(answer);
                }
                // The vendor closed the idle connection as it was taken, and not a byte of the request went
                // out: the next connection carries it, and it is still the one request. Each turn uses up an
                // idle connection, and a new one is never tried twice.
                Err(e) if reused && e.unwritten() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl Shared {
    /// The most recently used connection that is still open; expired ones at the bottom of the stack, and
    /// closed or expired ones on the way down from the top, are dropped.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.lock();
        while idle.front().is_some_and(|oldest| oldest.expired(now)) {
            idle.pop_front();
        }
        while let Some(mut top) = idle.pop_back() {
            if !top.expired(now) && top.conn.is_open() {
                return Some(top.conn);
            }
        }
        None
    }

    /// Puts a connection back. The idle stack needs no cap of its own: it never holds more connections than
    /// the pool's cap lets exist.
    fn checkin(&self, conn: Conn, since: Instant) {
        self.lock().push_back(Idle { conn, since });
    }

    /// Closes every idle connection that expired or that the vendor closed; when the next of the rest
    /// expires.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        let mut idle = self.lock();
        idle.retain_mut(|one| !one.expired(now) && one.conn.is_open());
        idle.iter().map(|one| one.since + IDLE_TIMEOUT).min()
    }

    /// A new connection, boxed: a TLS connection's state is large, and every future that holds the
    /// exchange (up to the whole request's) would otherwise carry it and be moved with it.
    async fn connect(&self) -> Result<Conn, PoolError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        Ok(Box::new(Connection::new(TokioIo::new(io))))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // Only ever locked by the pool's own worker thread: uncontended. A panic cannot leave the list
        // inconsistent (every change is one push, pop or retain), so a poisoned lock is used as is.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The worker's sweeper: closes idle connections once they expire, also when no request comes to do it, so
/// connections left over from a burst do not sit half-closed (CLOSE_WAIT) once the vendor has dropped them.
/// It wakes when the next idle connection expires, at most every [`SWEEP_SPACING`], and every
/// [`IDLE_TIMEOUT`] while the pool has none; it ends with the pool.
async fn sweep(pool: Weak<Shared>) {
    let mut next = next_sweep(Instant::now(), None);
    loop {
        tokio::time::sleep_until(next).await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        next = next_sweep(now, pool.sweep(now));
    }
}

/// When the sweeper looks next, having looked at `now`: when the next idle connection expires, but not
/// sooner than [`SWEEP_SPACING`] from now; with none idle, after [`IDLE_TIMEOUT`], the soonest a connection
/// checked in from now on could expire.
fn next_sweep(now: Instant, next_expiry: Option<Instant>) -> Instant {
    match next_expiry {
        Some(expiry) => expiry.max(now + SWEEP_SPACING),
        None => now + IDLE_TIMEOUT,
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
    use tokio::sync::{Notify, watch};

    use super::*;
    use crate::riskshield::h1::BodyError;

    /// A raw HTTP/1.1 server on 127.0.0.1: every request (head, then a Content-Length body) is answered with
    /// the next scripted bytes, then the connection is closed or kept as the script says; with nothing left
    /// to answer, the connection is closed. Counts connections, requests, and connections the client closed.
    /// A gated server holds every answer until that many requests have arrived.
    struct Raw {
        addr: std::net::SocketAddr,
        connections: Arc<AtomicUsize>,
        requests: watch::Receiver<usize>,
        client_closed: Arc<(AtomicUsize, Notify)>,
    }

    /// What the raw server does with one request.
    #[derive(Clone, Copy)]
    enum Then {
        Keep,
        Close,
    }

    type Script = Arc<Mutex<std::collections::VecDeque<(&'static str, Then)>>>;

    /// What every connection of one raw server shares.
    #[derive(Clone)]
    struct Shared {
        script: Script,
        requests: Arc<watch::Sender<usize>>,
        gate: usize,
        client_closed: Arc<(AtomicUsize, Notify)>,
    }

    impl Raw {
        async fn start(script: Vec<(&'static str, Then)>) -> Raw {
            Raw::gated(script, 0).await
        }

        async fn gated(script: Vec<(&'static str, Then)>, gate: usize) -> Raw {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (requests, requests_seen) = watch::channel(0);
            let shared = Shared {
                script: Arc::new(Mutex::new(script.into())),
                requests: Arc::new(requests),
                gate,
                client_closed: Arc::default(),
            };
            let connections = Arc::new(AtomicUsize::new(0));
            let (counted, client_closed) = (connections.clone(), shared.client_closed.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve_raw(stream, shared.clone()));
                }
            });
            Raw {
                addr,
                connections,
                requests: requests_seen,
                client_closed,
            }
        }

        fn pool(&self) -> Pool {
            self.pool_with_limit(MAX_CONNECTIONS)
        }

        fn pool_with_limit(&self, limit: usize) -> Pool {
            let connector =
                crate::outbound::build_connector(&[], Duration::from_secs(5)).expect("connector");
            let origin = format!("http://{}", self.addr).parse().expect("uri");
            Pool::with_limit(connector, origin, limit)
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn requests(&self) -> usize {
            *self.requests.borrow()
        }

        /// Waits until the client has closed `n` connections (woken by each close; bounded, so a pool that
        /// never closes fails the test instead of hanging it).
        async fn wait_client_closed(&self, n: usize) {
            let (count, closed) = &*self.client_closed;
            let all = async {
                loop {
                    let next = closed.notified();
                    if count.load(Ordering::SeqCst) >= n {
                        return;
                    }
                    next.await;
                }
            };
            let closed = tokio::time::timeout(Duration::from_secs(10), all).await;
            assert!(closed.is_ok(), "the client did not close {n} connections");
        }
    }

    async fn serve_raw(mut stream: tokio::net::TcpStream, shared: Shared) {
        let mut buf = Vec::new();
        loop {
            // One whole request: its head, then as many bytes as its Content-Length says.
            let end = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                let mut chunk = [0u8; 1024];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => {
                        if buf.is_empty() {
                            let (count, closed) = &*shared.client_closed;
                            count.fetch_add(1, Ordering::SeqCst);
                            closed.notify_waiters();
                        }
                        return;
                    }
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let length: usize = head
                .split("content-length: ")
                .nth(1)
                .and_then(|rest| rest.split("\r\n").next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            while buf.len() < end + length {
                let mut chunk = [0u8; 1024];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            buf.drain(..end + length);
            shared.requests.send_modify(|n| *n += 1);
            let mut arrived = shared.requests.subscribe();
            let _ = arrived.wait_for(|n| *n >= shared.gate).await;
            let next = shared.script.lock().expect("script").pop_front();
            let Some((answer, then)) = next else { return };
            if stream.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
            if let Then::Close = then {
                return;
            }
        }
    }

    const REQUEST: &[u8] = b"POST /score HTTP/1.1\r\nhost: test\r\ncontent-length: 2\r\n\r\n{}";

    const OK_A: &str = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na";
    const OK_B: &str = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb";

    async fn exchange(pool: &Pool, max_body: usize) -> Answer {
        pool.exchange(REQUEST, max_body, Instant::now())
            .await
            .expect("answer")
    }

    /// A pooled connection that looks open when taken, but that the vendor has reset, takes no byte of the
    /// request: the request goes out on a new connection as the same one request, not as a failed attempt.
    /// The vendor runs on a thread of its own, and this test's runtime is held still (blocked) while the
    /// vendor resets the connection, so the pool has had no chance to see the reset when it takes the
    /// connection.
    #[tokio::test]
    async fn a_pooled_connection_reset_unseen_is_replaced_without_a_second_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (reset, do_reset) = std::sync::mpsc::channel::<()>();
        let (was_reset, reset_done) = std::sync::mpsc::channel::<()>();
        let vendor = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let mut requests = 0;
                for answer in [OK_A, OK_B] {
                    let (mut stream, _) = listener.accept().await.expect("a connection");
                    let mut request = vec![0u8; REQUEST.len()];
                    stream.read_exact(&mut request).await.expect("a request");
                    requests += 1;
                    stream.write_all(answer.as_bytes()).await.expect("written");
                    if answer == OK_A {
                        do_reset.recv().expect("told to reset");
                        stream.set_zero_linger().expect("linger");
                        drop(stream);
                        was_reset.send(()).expect("said");
                    }
                }
                requests
            })
        });
        let connector =
            crate::outbound::build_connector(&[], Duration::from_secs(5)).expect("connector");
        let pool = Pool::new(connector, format!("http://{addr}").parse().expect("uri"));
        assert_eq!(
            exchange(&pool, 8).await.body.as_deref(),
            Ok(b"a".as_slice())
        );
        // One look at the idle connection, as a checkout takes: nothing has arrived, so it is open, and the
        // runtime now believes so until its I/O driver next runs.
        assert!(
            pool.shared
                .lock()
                .front_mut()
                .is_some_and(|idle| idle.conn.is_open())
        );
        reset.send(()).expect("told");
        reset_done.recv().expect("the vendor reset the connection");
        assert_eq!(
            exchange(&pool, 8).await.body.as_deref(),
            Ok(b"b".as_slice())
        );
        assert_eq!(vendor.join().expect("the vendor"), 2, "one request each");
    }

    #[test]
    fn the_sweeper_looks_when_the_next_connection_expires_but_at_most_once_a_second() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(next_sweep(now, None), now + s(3));
        assert_eq!(next_sweep(now, Some(now + s(2))), now + s(2));
        assert_eq!(next_sweep(now, Some(now + s(1))), now + s(1));
        assert_eq!(
            next_sweep(now, Some(now + Duration::from_millis(200))),
            now + s(1)
        );
        assert_eq!((IDLE_TIMEOUT, SWEEP_SPACING), (s(3), s(1)));
    }

    /// An idle connection counts from the start of its last exchange, and the sweep says when the first of
    /// those left expires.
    #[tokio::test]
    async fn a_sweep_tells_when_the_next_idle_connection_expires() {
        let raw = Raw::start(vec![(OK_A, Then::Keep)]).await;
        let pool = raw.pool();
        let started = Instant::now();
        pool.exchange(REQUEST, 8, started).await.expect("answer");
        assert_eq!(pool.shared.sweep(started), Some(started + IDLE_TIMEOUT));
        assert_eq!(
            pool.shared.sweep(started + IDLE_TIMEOUT),
            None,
            "expired and closed"
        );
        assert_eq!(pool.idle_count(), 0);
    }

    /// The sweeper is the pool's: it goes with it, not at its next round a second later.
    #[tokio::test(start_paused = true)]
    async fn a_dropped_pool_stops_its_sweeper_at_once() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.num_alive_tasks();
        let connector =
            crate::outbound::build_connector(&[], Duration::from_secs(5)).expect("connector");
        let pool = Pool::new(connector, Uri::from_static("http://127.0.0.1:9"));
        assert_eq!(metrics.num_alive_tasks(), before + 1, "the sweeper");
        assert_eq!(
            format!("{pool:?}"),
            "Pool { origin: http://127.0.0.1:9/, idle: 0 }"
        );
        drop(pool);
        // An aborted task is let go of when the runtime next runs; the paused clock does not move meanwhile.
        tokio::task::yield_now().await;
        assert_eq!(metrics.num_alive_tasks(), before);
    }

    /// An exchange's future is moved whole on its way into the request's (into the attempt timeout, then
    /// into the retry loop), on every validation: state a rare path holds across an await (a chunked answer's
    /// trailer fields once took 2 KiB of it) is paid for in every request's copies.
    #[tokio::test]
    async fn an_exchange_future_stays_small() {
        let connector =
            crate::outbound::build_connector(&[], Duration::from_secs(5)).expect("connector");
        let pool = Pool::new(connector, Uri::from_static("http://127.0.0.1:9"));
        let exchange = pool.exchange(b"", 8, Instant::now());
        let size = std::mem::size_of_val(&exchange);
        assert!(size <= 1024, "an exchange's future is {size} bytes");
    }

    #[tokio::test]
    async fn answers_framed_by_length_by_chunks_or_by_the_end() {
        let raw = Raw::start(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst", Then::Keep),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nsec\r\nA\r\nond-answer\r\n0\r\nX-Trailer: t\r\n\r\n",
                Then::Keep,
            ),
            ("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", Then::Keep),
            ("HTTP/1.1 200 OK\r\n\r\nto the end", Then::Close),
        ])
        .await;
        let pool = raw.pool();
        let bodies = [
            (200, "first"),
            (200, "second-answer"),
            (201, ""),
            (200, "to the end"),
        ];
        for (status, body) in bodies {
            let answer = exchange(&pool, 64).await;
            assert_eq!(answer.status.as_u16(), status);
            assert_eq!(answer.body.as_deref(), Ok(body.as_bytes()));
        }
        // Three answers on one connection; the one that ran to the connection's end left none to reuse.
        assert_eq!(raw.connections(), 1);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn bodies_over_the_limit_or_broken_off_keep_the_status_and_close_the_connection() {
        let raw = Raw::start(vec![
            (
                "HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nContent-Length: 9\r\n\r\n123456789",
                Then::Keep,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n12345\r\n5\r\n6789",
                Then::Keep,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n123",
                Then::Close,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                Then::Keep,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n123456789", Then::Close),
        ])
        .await;
        let pool = raw.pool();
        let answer = exchange(&pool, 8).await;
        assert_eq!(answer.status.as_u16(), 503);
        assert_eq!(answer.retry_after.as_deref(), Some("7"));
        assert_eq!(answer.body, Err(BodyError::TooLarge));
        assert_eq!(exchange(&pool, 8).await.body, Err(BodyError::TooLarge));
        assert_eq!(exchange(&pool, 8).await.body, Err(BodyError::Truncated));
        assert_eq!(exchange(&pool, 8).await.body, Err(BodyError::Malformed));
        assert_eq!(exchange(&pool, 8).await.body, Err(BodyError::TooLarge));
        // None of those connections was used again.
        assert_eq!(raw.connections(), 5);
    }

    #[tokio::test]
    async fn connection_close_and_extra_bytes_keep_a_connection_out_of_the_pool() {
        let raw = Raw::start(vec![
            (
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\na",
                Then::Keep,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nbHTTP/1.1 200 OK\r\n",
                Then::Keep,
            ),
            ("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nc", Then::Keep),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nd", Then::Keep),
        ])
        .await;
        let pool = raw.pool();
        for body in ["a", "b", "c", "d"] {
            assert_eq!(
                exchange(&pool, 8).await.body.as_deref(),
                Ok(body.as_bytes())
            );
        }
        assert_eq!(raw.connections(), 4);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced_without_a_second_request() {
        let raw = Raw::start(vec![(OK_A, Then::Close), (OK_B, Then::Keep)]).await;
        let pool = raw.pool();
        exchange(&pool, 8).await;
        // Wait until the runtime has seen the server's end of the pooled connection (bounded, so a pool that
        // never notices fails the test instead of hanging it).
        let noticed = tokio::time::timeout(Duration::from_secs(10), async {
            while pool
                .shared
                .lock()
                .front_mut()
                .is_some_and(|idle| idle.conn.is_open())
            {
                tokio::task::yield_now().await;
            }
        });
        assert!(
            noticed.await.is_ok(),
            "the closed connection still looks open"
        );
        assert_eq!(
            exchange(&pool, 8).await.body.as_deref(),
            Ok(b"b".as_slice())
        );
        assert_eq!((raw.connections(), raw.requests()), (2, 2));
    }

    #[tokio::test]
    async fn a_request_a_connection_took_is_never_sent_again() {
        let raw = Raw::start(vec![
            (OK_A, Then::Keep),
            // Read, then closed without a byte of answer.
            ("", Then::Close),
            (OK_A, Then::Keep),
            // An interim answer, then the end: no answer either, but the vendor has read the request.
            ("HTTP/1.1 100 Continue\r\n\r\n", Then::Close),
            (OK_A, Then::Keep),
            ("HTTP/1.1 200 OK\r\nContent-Le", Then::Close),
            ("", Then::Close),
        ])
        .await;
        let pool = raw.pool();
        exchange(&pool, 8).await;
        assert!(pool.shared.lock()[0].conn.is_open());
        // The reused connection ends without an answer: the exchange fails, and the request went out once.
        assert!(matches!(
            pool.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Exchange(ExchangeError::Closed))
        ));
        assert_eq!((raw.connections(), raw.requests()), (1, 2));
        // The same after an interim 1xx answer.
        exchange(&pool, 8).await;
        assert!(matches!(
            pool.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Exchange(ExchangeError::Closed))
        ));
        assert_eq!((raw.connections(), raw.requests()), (2, 4));
        // And when it ends in the middle of an answer's head.
        exchange(&pool, 8).await;
        assert!(matches!(
            pool.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Exchange(ExchangeError::Invalid(_)))
        ));
        assert_eq!((raw.connections(), raw.requests()), (3, 6));
        // A new connection that ends without an answer is the exchange's failure too.
        assert!(matches!(
            pool.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Exchange(ExchangeError::Closed))
        ));
        assert_eq!((raw.connections(), raw.requests()), (4, 7));
    }

    /// A connection that accepts `accepts` bytes of a request, then fails every write; it never answers.
    struct Refusing {
        accepts: usize,
    }

    impl AsyncWrite for Refusing {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.accepts == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            let n = self.accepts.min(buf.len());
            self.accepts -= n;
            Poll::Ready(Ok(n))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncRead for Refusing {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn only_a_request_the_connection_took_no_byte_of_is_unwritten() {
        let refused = Connection::new(Refusing { accepts: 0 })
            .send(REQUEST, 8)
            .await;
        assert!(refused.is_err_and(|e| e.unwritten()));
        // Part of it went out: the vendor may act on what it read, so it is not sent anywhere else.
        let partly = Connection::new(Refusing { accepts: 10 })
            .send(REQUEST, 8)
            .await;
        assert!(partly.is_err_and(|e| !e.unwritten()));
    }

    #[tokio::test]
    async fn callers_over_the_cap_wait_for_a_connection_instead_of_opening_one() {
        const CAP: usize = 3;
        const CALLERS: usize = 7;
        // Every answer is held until CAP requests have arrived: a pool that waited for its connections to
        // come back would otherwise never have more than one in use.
        let raw = Raw::gated(vec![(OK_A, Then::Keep); CALLERS], CAP).await;
        let pool = Arc::new(raw.pool_with_limit(CAP));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..CALLERS {
            let pool = pool.clone();
            calls.spawn(async move { exchange(&pool, 8).await.body });
        }
        while let Some(body) = calls.join_next().await {
            assert_eq!(body.expect("call").as_deref(), Ok(b"a".as_slice()));
        }
        assert_eq!((raw.connections(), raw.requests()), (CAP, CALLERS));
        assert_eq!(pool.idle_count(), CAP);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_after_the_idle_timeout_wherever_they_sit() {
        let raw = Raw::start(vec![(OK_A, Then::Keep); 3]).await;
        let pool = raw.pool();
        let before = Instant::now();
        // A burst of two opens two connections; the next call reuses the top one, the other stays below it.
        let (a, b) = tokio::join!(exchange(&pool, 8), exchange(&pool, 8));
        assert_eq!((a.status.as_u16(), b.status.as_u16()), (200, 200));
        exchange(&pool, 8).await;
        let after = Instant::now();
        assert_eq!((raw.connections(), pool.idle_count()), (2, 2));

        // From here on the clock only moves when the runtime has nothing else to do: no real waiting.
        tokio::time::pause();
        tokio::time::sleep_until(before + IDLE_TIMEOUT - Duration::from_millis(1)).await;
        assert_eq!(pool.idle_count(), 2, "closed before the idle timeout");
        tokio::time::sleep_until(after + IDLE_TIMEOUT + SWEEP_SPACING).await;
        assert_eq!(pool.idle_count(), 0, "still idle after the idle timeout");
        tokio::time::resume();
        // And the server sees both ends: nothing is left half-closed.
        raw.wait_client_closed(2).await;
    }
}
