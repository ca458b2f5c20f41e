//! A per-worker pool of HTTP/1.1 connections to RiskShield, and the one exchange the service makes on them:
//! a request written in one piece, and its answer read and framed right here, on the calling task.
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
use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::{StatusCode, Uri};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower_service::Service;

use crate::outbound::Connector;

/// Idle connections kept per pool; more are closed when they come back.
const MAX_IDLE: usize = 256;

/// An idle connection older than this is closed instead of reused (servers drop idle keep-alives too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// An answer's status line and headers together may not be longer than this.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Header lines an answer may carry (and trailer lines after a chunked body).
const MAX_HEADERS: usize = 64;

/// A chunk-size line (with any chunk extensions) may not be longer than this.
const MAX_CHUNK_LINE: usize = 1024;

/// What each read asks the connection for at least.
const READ_SIZE: usize = 4096;

type BoxError = Box<dyn StdError + Send + Sync>;

/// A connection as the connector makes it (TCP, or TLS over TCP), seen through tokio's I/O traits.
type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// Why an exchange failed before an answer's head arrived.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect failed: {0}")]
    Connect(BoxError),
    #[error("request could not be sent: {0}")]
    Unsent(io::Error),
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    /// The connection ended, or was reset, before a byte of the answer arrived.
    #[error("connection closed before an answer")]
    Closed,
    #[error("invalid answer: {0}")]
    Invalid(&'static str),
}

/// Why an answer's body could not be read; its head (status and Retry-After) still counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body longer than the limit")]
    TooLarge,
    #[error("body broke off")]
    Truncated,
    #[error("body framing is invalid")]
    Malformed,
}

/// An answer: its status, its Retry-After, and its body read up to a limit.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// The Retry-After header as sent, if there was one and it was text.
    pub retry_after: Option<String>,
    pub body: Result<Bytes, BodyError>,
}

/// One connection and the bytes read from it that no answer has used yet.
struct Conn {
    io: Io,
    buf: BytesMut,
}

struct Idle {
    conn: Box<Conn>,
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
        if reused && sent.as_ref().is_err_and(PoolError::unanswered) {
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
    fn checkout(&self, now: Instant) -> Option<Box<Conn>> {
        loop {
            let idle = self.lock().pop()?;
            let mut conn = idle.conn;
            if now.saturating_duration_since(idle.since) <= IDLE_TIMEOUT && conn.is_open() {
                return Some(conn);
            }
        }
    }

    fn checkin(&self, conn: Box<Conn>, now: Instant) {
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE {
            // The oldest connection is the least likely to be wanted again.
            idle.remove(0);
        }
        idle.push(Idle { conn, since: now });
    }

    /// A new connection, boxed: a TLS connection's state is large, and every future that holds the
    /// exchange (up to the whole request's) would otherwise carry it and be moved with it.
    async fn connect(&self) -> Result<Box<Conn>, PoolError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        Ok(Box::new(Conn {
            io: TokioIo::new(io),
            buf: BytesMut::with_capacity(READ_SIZE),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // Only ever locked by the pool's own worker thread: uncontended. A panic cannot leave the list
        // inconsistent (every change is one push, pop or remove), so a poisoned lock is used as is.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How an answer's body ends (RFC 9112, section 6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body: 1xx, 204 and 304 answers.
    Empty,
    Length(u64),
    Chunked,
    /// Neither a length nor chunked: the body is whatever comes until the server closes.
    UntilClose,
}

/// What the service needs from an answer's head.
#[derive(Debug)]
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    status: StatusCode,
    framing: Framing,
    /// The connection cannot carry another request after this answer.
    close: bool,
    retry_after: Option<String>,
}

/// Parses an answer's head from the start of `buf`: `None` until it is complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, PoolError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(PoolError::Invalid("too many headers")),
        Err(_) => return Err(PoolError::Invalid("malformed head")),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| PoolError::Invalid("status code"))?;
    if code == 101 {
        return Err(PoolError::Invalid("protocol switch"));
    }
    // Only HTTP/1.1 keeps a connection open by default; an HTTP/1.0 answer's connection is not reused.
    let mut close = response.version != Some(1);
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
    let mut retry_after = None;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(header.value).ok_or(PoolError::Invalid("content-length"))?;
            if length.is_some_and(|l| l != value) {
                return Err(PoolError::Invalid("conflicting content-length"));
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding decides: chunked frames the body, any other runs to the connection's end.
            for coding in tokens(header.value) {
                chunked = Some(coding.eq_ignore_ascii_case(b"chunked"));
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close |= tokens(header.value).any(|token| token.eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(header.value).ok().map(str::to_owned);
        }
    }
    let framing = match (code, chunked, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, Some(true), _) => Framing::Chunked,
        (_, Some(false), _) | (_, None, None) => Framing::UntilClose,
        (_, None, Some(length)) => Framing::Length(length),
    };
    // A length next to a transfer coding may be a smuggling attempt: never reuse such a connection.
    close |= framing == Framing::UntilClose || (chunked.is_some() && length.is_some());
    Ok(Some(Head {
        len,
        status,
        framing,
        close,
        retry_after,
    }))
}

/// A Content-Length value: decimal digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A chunk size: hexadecimal digits, before any chunk extension.
fn parse_chunk_size(line: &[u8]) -> Option<usize> {
    let size = line.split(|b| *b == b';').next()?.trim_ascii();
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    usize::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()
}

impl PoolError {
    /// The connection took no request or gave not a byte of answer: the server cannot have acted on it.
    fn unanswered(&self) -> bool {
        matches!(self, PoolError::Unsent(_) | PoolError::Closed)
    }
}

impl Conn {
    /// Writes `request` and reads its answer; also whether the connection can be reused.
    async fn send(&mut self, request: &[u8], max_body: usize) -> Result<(Answer, bool), PoolError> {
        self.io
            .write_all(request)
            .await
            .map_err(PoolError::Unsent)?;
        self.io.flush().await.map_err(PoolError::Unsent)?;
        self.read_answer(max_body).await
    }

    /// Whether an idle connection can still carry a request: nothing has arrived on it since its last
    /// answer, no end and no error. One poll with a waker that does nothing: when the runtime has seen no
    /// event on the socket this answers without a system call.
    fn is_open(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }

    /// Reads more from the connection into the buffer: how many bytes came (0 at the connection's end).
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(READ_SIZE);
        self.io.read_buf(&mut self.buf).await
    }

    /// Reads an answer (interim 1xx answers skipped) and its body; also whether the connection can be reused.
    async fn read_answer(&mut self, max_body: usize) -> Result<(Answer, bool), PoolError> {
        let head = loop {
            match parse_head(&self.buf)? {
                Some(head) => {
                    self.buf.advance(head.len);
                    if !head.status.is_informational() {
                        break head;
                    }
                }
                None if self.buf.len() >= MAX_HEAD_BYTES => {
                    return Err(PoolError::Invalid("head too large"));
                }
                None => match self.fill().await {
                    Ok(n) if n > 0 => {}
                    // Ended or reset before a byte of this answer arrived.
                    Ok(_) | Err(_) if self.buf.is_empty() => return Err(PoolError::Closed),
                    Ok(_) => return Err(PoolError::Invalid("answer cut off")),
                    Err(e) => return Err(e.into()),
                },
            }
        };
        let body = match head.framing {
            Framing::Empty => Ok(Bytes::new()),
            Framing::Length(length) => match usize::try_from(length) {
                Ok(length) if length <= max_body => self.read_length(length).await,
                _ => Err(BodyError::TooLarge),
            },
            Framing::Chunked => self.read_chunked(max_body).await,
            Framing::UntilClose => self.read_to_end(max_body).await,
        };
        // Bytes after the answer were not asked for: the connection is out of step, so it is not reused.
        let reusable = !head.close && body.is_ok() && self.buf.is_empty();
        let answer = Answer {
            status: head.status,
            retry_after: head.retry_after,
            body,
        };
        Ok((answer, reusable))
    }

    /// Makes sure at least `wanted` bytes are buffered.
    async fn fill_to(&mut self, wanted: usize) -> Result<(), BodyError> {
        while self.buf.len() < wanted {
            if !matches!(self.fill().await, Ok(n) if n > 0) {
                return Err(BodyError::Truncated);
            }
        }
        Ok(())
    }

    async fn read_length(&mut self, length: usize) -> Result<Bytes, BodyError> {
        self.fill_to(length).await?;
        Ok(self.buf.split_to(length).freeze())
    }

    async fn read_to_end(&mut self, max_body: usize) -> Result<Bytes, BodyError> {
        loop {
            if self.buf.len() > max_body {
                return Err(BodyError::TooLarge);
            }
            match self.fill().await {
                Ok(0) => return Ok(self.buf.split().freeze()),
                Ok(_) => {}
                Err(_) => return Err(BodyError::Truncated),
            }
        }
    }

    /// The next line (without its CRLF) as a length, reading more until one is buffered.
    async fn line(&mut self, max: usize) -> Result<usize, BodyError> {
        let mut searched = 0;
        loop {
            if let Some(at) = self.buf[searched..].iter().position(|b| *b == b'\n') {
                return Ok(searched + at);
            }
            searched = self.buf.len();
            if searched > max {
                return Err(BodyError::Malformed);
            }
            if !matches!(self.fill().await, Ok(n) if n > 0) {
                return Err(BodyError::Truncated);
            }
        }
    }

    /// Consumes a line of `end` bytes and its line feed; the line without a closing carriage return.
    fn take_line(&mut self, end: usize) -> Bytes {
        let mut line = self.buf.split_to(end + 1);
        line.truncate(end);
        if line.last() == Some(&b'\r') {
            line.truncate(end - 1);
        }
        line.freeze()
    }

    async fn read_chunked(&mut self, max_body: usize) -> Result<Bytes, BodyError> {
        let mut body = BytesMut::new();
        loop {
            let end = self.line(MAX_CHUNK_LINE).await?;
            let line = self.take_line(end);
            let size = parse_chunk_size(&line).ok_or(BodyError::Malformed)?;
            if size == 0 {
                break;
            }
            if size > max_body - body.len() {
                return Err(BodyError::TooLarge);
            }
            self.fill_to(size + 2).await?;
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(BodyError::Malformed);
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.advance(size + 2);
        }
        // Trailer lines, up to the blank line that ends the body; their content is not used.
        for _ in 0..=MAX_HEADERS {
            let end = self.line(MAX_HEAD_BYTES).await?;
            if self.take_line(end).is_empty() {
                return Ok(body.freeze());
            }
        }
        Err(BodyError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::AsyncWriteExt;

    use super::*;

    #[test]
    fn heads() {
        let head = |s: &str| parse_head(s.as_bytes()).expect("valid").expect("complete");
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
        let h = head(&format!("{text}{{\"riskScore\""));
        assert_eq!(
            (h.len, h.status, h.framing, h.close),
            (text.len(), StatusCode::OK, Framing::Length(12), false)
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Chunked, false));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Chunked, true));
        let h = head("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
        let h = head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Empty, false));
        let h = head(
            "HTTP/1.1 503 Busy\r\nRetry-After: 7\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(
            (h.status.as_u16(), h.retry_after.as_deref(), h.close),
            (503, Some("7"), true)
        );
        let h = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(h.close);
        let h = head("HTTP/1.1 100 Continue\r\n\r\n");
        assert_eq!(h.framing, Framing::Empty);

        assert!(matches!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Le"),
            Ok(None)
        ));
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(
                matches!(parse_head(bad.as_bytes()), Err(PoolError::Invalid(_))),
                "{bad}"
            );
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            parse_head(many.as_bytes()),
            Err(PoolError::Invalid(_))
        ));
    }

    #[test]
    fn chunk_sizes() {
        assert_eq!(parse_chunk_size(b"1a"), Some(26));
        assert_eq!(parse_chunk_size(b"0"), Some(0));
        assert_eq!(parse_chunk_size(b"A ; name=value"), Some(10));
        assert_eq!(parse_chunk_size(b""), None);
        assert_eq!(parse_chunk_size(b"-1"), None);
        assert_eq!(parse_chunk_size(b"0x10"), None);
        assert_eq!(parse_chunk_size(b"ffffffffffffffff"), None);
    }

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
            Err(PoolError::Invalid(_))
        ));
        assert_eq!((raw.connections(), raw.requests()), (2, 4));
        // A new connection that ends without an answer is the exchange's failure, not sent again.
        let fresh = raw.pool();
        assert!(matches!(
            fresh.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Closed)
        ));
        assert_eq!((raw.connections(), raw.requests()), (3, 5));
    }

    #[tokio::test]
    async fn a_malformed_head_fails_the_exchange() {
        let raw = Raw::start(vec![("SMTP ready\r\n\r\n", Then::Keep)]).await;
        let pool = raw.pool();
        assert!(matches!(
            pool.exchange(REQUEST, 8, Instant::now()).await,
            Err(PoolError::Invalid(_))
        ));
        assert_eq!(pool.idle_count(), 0);
    }
}
