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
//! Ready connections are reused last-in first-out, so a light load keeps reusing a few warm connections and the
//! rest age out. A connection goes back into the pool only after its answer was read completely and nothing
//! followed it; anything else (an error, a timeout that dropped the exchange, an oversized body, `Connection:
//! close`, an answer that runs to the connection's end) closes it.

use std::error::Error as StdError;
use std::sync::Mutex;
use std::time::Duration;

use http::Uri;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

use super::h1::{Answer, Connection, ExchangeError};
use crate::outbound::Connector;

/// Idle connections kept per pool; more are closed when they come back.
const MAX_IDLE: usize = 256;

/// An idle connection older than this is closed instead of reused (servers drop idle keep-alives too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

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
    since: Instant,
}

/// One worker's connections to one upstream origin.
pub struct Pool {
    connector: Connector,
    /// scheme://authority of the upstream, what the connector connects to.
    origin: Uri,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Pool {
    /// An empty pool for `origin` (scheme and authority; a path is ignored).
    pub fn new(connector: Connector, origin: Uri) -> Self {
        Self {
            connector,
            origin,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Connections currently idle in the pool.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Writes `request` (a whole HTTP/1.1 request: head and body) and reads the answer, its body up to
    /// `max_body` bytes. `now` is when the exchange begins (the caller has just read the clock): idle
    /// connections are aged against it, and the one used counts as idle from it. A request that a reused
    /// connection could not take, or that it ended without a byte of answer, is sent once more on a new one:
    /// the server may have closed the idle connection just as it was taken.
    pub async fn exchange(
        &self,
        request: &[u8],
        max_body: usize,
        now: Instant,
    ) -> Result<Answer, PoolError> {
        // The connect path (TCP, TLS) is rare once connections are pooled; boxed, its state does not sit
        // inside every exchange's future.
        let (mut conn, reused) = match self.checkout(now) {
            Some(conn) => (conn, true),
            None => (Box::pin(self.connect()).await?, false),
        };
        let mut sent = conn.send(request, max_body).await;
        if reused && sent.as_ref().is_err_and(ExchangeError::unanswered) {
            // The keep-alive race: the server closed the idle connection as the request went out. The request
            // is sent once more on a new connection; a score request can be repeated (the client retries
            // whole attempts anyway).
            conn = Box::pin(self.connect()).await?;
            sent = conn.send(request, max_body).await;
        }
        let (answer, reusable) = sent?;
        if reusable {
            self.checkin(conn, now);
        }
        Ok(answer)
    }

    /// The most recently used connection that is still open; closed and expired ones are dropped on the way.
    fn checkout(&self, now: Instant) -> Option<Conn> {
        loop {
            let idle = self.lock().pop()?;
            let mut conn = idle.conn;
            if now.saturating_duration_since(idle.since) <= IDLE_TIMEOUT && conn.is_open() {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, conn: Conn, now: Instant) {
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE {
            // The oldest connection is the least likely to be wanted again.
            idle.remove(0);
        }
        idle.push(Idle { conn, since: now });
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // Only ever locked by the pool's own worker thread: uncontended. A panic cannot leave the list
        // inconsistent (every change is one push, pop or remove), so a poisoned lock is used as is.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::riskshield::h1::BodyError;

    /// A raw HTTP/1.1 server on 127.0.0.1: every request (head, then a Content-Length body) is answered with
    /// the next scripted bytes, then the connection is closed or kept as the script says; with nothing left
    /// to answer, the connection is closed. Counts connections and requests.
    struct Raw {
        addr: std::net::SocketAddr,
        connections: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
    }

    /// What the raw server does with one request.
    enum Then {
        Keep,
        Close,
    }

    impl Raw {
        async fn start(script: Vec<(&'static str, Then)>) -> Raw {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let addr = listener.local_addr().expect("addr");
            let script = Arc::new(Mutex::new(std::collections::VecDeque::from(script)));
            let connections = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(AtomicUsize::new(0));
            let (c, r) = (connections.clone(), requests.clone());
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(serve_raw(stream, script.clone(), r.clone()));
                }
            });
            Raw {
                addr,
                connections,
                requests,
            }
        }

        fn pool(&self) -> Pool {
            let connector =
                crate::outbound::build_connector(&[], Duration::from_secs(5)).expect("connector");
            let origin = format!("http://{}", self.addr).parse().expect("uri");
            Pool::new(connector, origin)
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    async fn serve_raw(
        mut stream: tokio::net::TcpStream,
        script: Arc<Mutex<std::collections::VecDeque<(&'static str, Then)>>>,
        requests: Arc<AtomicUsize>,
    ) {
        let mut buf = Vec::new();
        loop {
            // One whole request: its head, then as many bytes as its Content-Length says.
            let end = loop {
                if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                let mut chunk = [0u8; 1024];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
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
            requests.fetch_add(1, Ordering::SeqCst);
            let next = script.lock().expect("script").pop_front();
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

    async fn exchange(pool: &Pool, max_body: usize) -> Answer {
        pool.exchange(REQUEST, max_body, Instant::now())
            .await
            .expect("answer")
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
    async fn a_connection_the_server_closed_while_idle_is_not_used_again() {
        let raw = Raw::start(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", Then::Close),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb", Then::Keep),
        ])
        .await;
        let pool = raw.pool();
        exchange(&pool, 8).await;
        // Wait until the runtime has seen the server's end of the pooled connection (bounded, so a pool that
        // never notices fails the test instead of hanging it).
        let noticed = tokio::time::timeout(Duration::from_secs(10), async {
            while pool
                .lock()
                .first_mut()
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
    async fn a_reused_connection_that_ends_without_an_answer_is_replaced_once() {
        let raw = Raw::start(vec![
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na", Then::Keep),
            ("", Then::Close),
            ("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb", Then::Keep),
            ("HTTP/1.1 200 OK\r\nContent-Le", Then::Close),
            ("", Then::Close),
        ])
        .await;
        let pool = raw.pool();
        exchange(&pool, 8).await;
        assert!(pool.lock()[0].conn.is_open());
        // The reused connection ends without an answer: sent again on a new connection, answered there.
        assert_eq!(
            exchange(&pool, 8).await.body.as_deref(),
            Ok(b"b".as_slice())
        );
        assert_eq!((raw.connections(), raw.requests()), (2, 3));
        // A reused connection that ends in the middle of an answer's head: the server saw the request, so it
        // is not sent again.
        assert!(matches!(
            pool.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Exchange(ExchangeError::Invalid(_)))
        ));
        assert_eq!((raw.connections(), raw.requests()), (2, 4));
        // A new connection that ends without an answer is the exchange's failure, not sent again.
        let fresh = raw.pool();
        assert!(matches!(
            fresh.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Exchange(ExchangeError::Closed))
        ));
        assert_eq!((raw.connections(), raw.requests()), (3, 5));
    }

    #[tokio::test]
    async fn a_malformed_head_fails_the_exchange() {
        let raw = Raw::start(vec![("SMTP ready\r\n\r\n", Then::Keep)]).await;
        let pool = raw.pool();
        assert!(matches!(
            pool.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Exchange(ExchangeError::Invalid(_)))
        ));
        assert_eq!(pool.idle_count(), 0);
    }
}
