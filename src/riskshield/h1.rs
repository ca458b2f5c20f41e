//! Reading RiskShield's answers off an HTTP/1.1 connection: the head parsed with `httparse` (the parser hyper
//! itself uses) and the body framed as RFC 9112 section 6.3 says — `Content-Length`, `chunked`, or the
//! connection's end — with every part bounded (head, header count, chunk lines, body).
//!
//! The reading is strict where readers differ: an answer that two readers could frame differently (a length
//! beside a transfer coding, chunked twice, a chunk line or trailer not ended by CRLF) is an error and its
//! connection is never reused, so nothing between the service and the vendor can disagree with it about where
//! an answer ends (RFC 9112 section 11.2).
//!
//! The pool ([`super::pool`]) owns the connections and decides which to reuse; this file knows only the wire.
//! It is generic over the connection's I/O, so the same code reads a TLS connection, a plain TCP one, or an
//! in-memory pipe in a test.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// An answer's status line and headers together may not be longer than this.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Header lines an answer may carry (and trailer lines after a chunked body).
const MAX_HEADERS: usize = 64;

/// A chunk-size line (with any chunk extensions) may not be longer than this.
const MAX_CHUNK_LINE: usize = 1024;

/// The chunk extensions of one body together may not be longer than this (the service reads none of them).
const MAX_CHUNK_EXTENSIONS: usize = 4 * 1024;

/// The trailer section after a chunked body, its blank line included, may not be longer than this.
const MAX_TRAILER_BYTES: usize = 4 * 1024;

/// What each read asks the connection for at least.
pub(crate) const READ_SIZE: usize = 4096;

/// Why an exchange failed before an answer's head arrived.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The connection failed before it accepted a byte of the request.
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

impl ExchangeError {
    /// The connection accepted not one byte of the request: it can go out on another connection without
    /// the server ever seeing it twice. Anything else was written, and is an attempt of its own.
    pub fn unwritten(&self) -> bool {
        matches!(self, ExchangeError::Unsent(_))
    }
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
pub struct Connection<T> {
    io: T,
    buf: BytesMut,
}

impl<T> Connection<T> {
    /// A connection with nothing read from it yet.
    pub fn new(io: T) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(READ_SIZE),
        }
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
fn parse_head(buf: &[u8]) -> Result<Option<Head>, ExchangeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Invalid("too many headers"));
        }
        Err(_) => return Err(ExchangeError::Invalid("malformed head")),
    };
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| ExchangeError::Invalid("status code"))?;
    if code == 101 {
        return Err(ExchangeError::Invalid("protocol switch"));
    }
    // Only HTTP/1.1 keeps a connection open by default; an HTTP/1.0 answer's connection is not reused.
    let http10 = response.version != Some(1);
    let mut close = http10;
    let mut length: Option<u64> = None;
    let mut codings: Option<Codings> = None;
    let mut retry_after = None;
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value =
                parse_length(header.value).ok_or(ExchangeError::Invalid("content-length"))?;
            if length.is_some_and(|l| l != value) {
                return Err(ExchangeError::Invalid("conflicting content-length"));
            }
            length = Some(value);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.get_or_insert_default().add(header.value)?;
        } else if name.eq_ignore_ascii_case("connection") {
            close |= tokens(header.value).any(|token| token.eq_ignore_ascii_case(b"close"));
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(header.value).ok().map(str::to_owned);
        }
    }
    let framing = match (code, codings, length) {
        (100..=199 | 204 | 304, _, _) => Framing::Empty,
        (_, None, Some(length)) => Framing::Length(length),
        (_, None, None) => Framing::UntilClose,
        (_, Some(codings), length) => {
            // RFC 9112 section 6.3: a length beside a transfer coding "ought to be handled as an error" (it
            // is how requests are smuggled); section 6.1: an HTTP/1.0 message with one has faulty framing.
            if length.is_some() {
                return Err(ExchangeError::Invalid(
                    "transfer-encoding with content-length",
                ));
            }
            if http10 {
                return Err(ExchangeError::Invalid("transfer-encoding in HTTP/1.0"));
            }
            // A coding other than chunked is one the service cannot undo: the body is framed, but the
            // connection is not trusted with another request.
            close |= codings.other;
            codings.framing()?
        }
    };
    close |= framing == Framing::UntilClose;
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

/// What the Transfer-Encoding lines of an answer say, read as one comma-separated list of codings.
#[derive(Debug, Default, Clone, Copy)]
struct Codings {
    /// Times `chunked` appears.
    chunked: u32,
    /// A coding other than `chunked` appears.
    other: bool,
    /// The last coding that is not empty is `chunked`.
    chunked_last: bool,
    /// The last element is `chunked`, an empty one included (what a reader that does not skip empty list
    /// elements takes for the final coding).
    chunked_final: bool,
}

impl Codings {
    fn add(&mut self, value: &[u8]) -> Result<(), ExchangeError> {
        // Bytes beyond ASCII text make the value unreadable to some readers, who then frame the body another way.
        if !value
            .iter()
            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\t')
        {
            return Err(ExchangeError::Invalid("transfer-encoding"));
        }
        for coding in value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
            let chunked = coding.eq_ignore_ascii_case(b"chunked");
            self.chunked_final = chunked;
            if chunked {
                self.chunked += 1;
            } else if !coding.is_empty() {
                self.other = true;
            }
            if !coding.is_empty() {
                self.chunked_last = chunked;
            }
        }
        Ok(())
    }

    /// How the body ends (RFC 9112 section 6.3): chunked as the final coding frames it, anything else runs to
    /// the connection's end. Codings that readers frame differently are an error: chunked twice (section 7.1
    /// forbids it), or chunked followed only by empty elements (skipped by the list rule of RFC 9110 section
    /// 5.6.1, the final coding to a reader that does not skip them).
    fn framing(self) -> Result<Framing, ExchangeError> {
        if self.chunked > 1 || self.chunked_last != self.chunked_final {
            return Err(ExchangeError::Invalid("ambiguous transfer-encoding"));
        }
        Ok(if self.chunked_last {
            Framing::Chunked
        } else {
            Framing::UntilClose
        })
    }
}

/// The comma-separated tokens of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// A chunk-size line without its CRLF (RFC 9112 section 7.1): the size in hexadecimal digits, optional white
/// space, and optionally an extension from `;` on, which is not read. Nothing else: no white space before the
/// size, no control byte (a bare CR among them). The size, and how long the extension is.
fn parse_chunk_line(line: &[u8]) -> Option<(usize, usize)> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let (size, rest) = line.split_at(digits);
    let space = rest
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    let extension = &rest[space..];
    let significant = size.iter().skip_while(|b| **b == b'0').count();
    if digits == 0
        || significant > 15
        || !matches!(extension.first(), None | Some(b';'))
        || extension
            .iter()
            .any(|b| b.is_ascii_control() && *b != b'\t')
    {
        return None;
    }
    let size = usize::from_str_radix(std::str::from_utf8(size).ok()?, 16).ok()?;
    Some((size, extension.len()))
}

impl<T: AsyncRead + AsyncWrite + Unpin> Connection<T> {
    /// Writes `request` and reads its answer; also whether the connection can be reused.
    pub async fn send(
        &mut self,
        request: &[u8],
        max_body: usize,
    ) -> Result<(Answer, bool), ExchangeError> {
        // Written piece by piece rather than with `write_all`, whose error does not say whether some of the
        // request went out: only a failure before the first accepted byte is `Unsent`.
        let mut written = 0;
        while written < request.len() {
            match self.io.write(&request[written..]).await {
                Ok(n) if n > 0 => written += n,
                Ok(_) if written == 0 => {
                    return Err(ExchangeError::Unsent(io::ErrorKind::WriteZero.into()));
                }
                Ok(_) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Err(e) if written == 0 => return Err(ExchangeError::Unsent(e)),
                Err(e) => return Err(e.into()),
            }
        }
        self.io.flush().await?;
        self.read_answer(max_body).await
    }

    /// Whether an idle connection can still carry a request: nothing has arrived on it since its last
    /// answer, no end and no error. One poll with a waker that does nothing: when the runtime has seen no
    /// event on the socket this answers without a system call.
    pub fn is_open(&mut self) -> bool {
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
    pub async fn read_answer(&mut self, max_body: usize) -> Result<(Answer, bool), ExchangeError> {
        let head = loop {
            match parse_head(&self.buf)? {
                Some(head) => {
                    self.buf.advance(head.len);
                    if !head.status.is_informational() {
                        break head;
                    }
                }
                None if self.buf.len() >= MAX_HEAD_BYTES => {
                    return Err(ExchangeError::Invalid("head too large"));
                }
                None => match self.fill().await {
                    Ok(n) if n > 0 => {}
                    // Ended or reset before a byte of this answer arrived.
                    Ok(_) | Err(_) if self.buf.is_empty() => return Err(ExchangeError::Closed),
                    Ok(_) => return Err(ExchangeError::Invalid("answer cut off")),
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

    /// Where the next line feed is, reading more until one is buffered.
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

    async fn read_chunked(&mut self, max_body: usize) -> Result<Bytes, BodyError> {
        let mut body = BytesMut::new();
        let mut extensions = 0;
        loop {
            let end = self.line(MAX_CHUNK_LINE).await?;
            let line = self.buf.split_to(end + 1);
            // Lines end in CRLF: a bare LF is how a reader that accepts it gets out of step with one that does not.
            let (size, extension) = line
                .strip_suffix(b"\r\n")
                .and_then(parse_chunk_line)
                .ok_or(BodyError::Malformed)?;
            extensions += extension;
            if extensions > MAX_CHUNK_EXTENSIONS {
                return Err(BodyError::Malformed);
            }
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
        self.read_trailers().await?;
        Ok(body.freeze())
    }

    /// Consumes the trailer section after the last chunk, up to the blank line that ends the body. Their
    /// content is not used.
    async fn read_trailers(&mut self) -> Result<(), BodyError> {
        loop {
            match trailer_section(&self.buf)? {
                Some(len) => {
                    self.buf.advance(len);
                    return Ok(());
                }
                None if self.buf.len() < MAX_TRAILER_BYTES => {
                    if !matches!(self.fill().await, Ok(n) if n > 0) {
                        return Err(BodyError::Truncated);
                    }
                }
                None => return Err(BodyError::Malformed),
            }
        }
    }
}

/// The length of the trailer section at the start of `buf` (RFC 9112 section 7.1.2: field lines as in a head,
/// each ended by CRLF, then a blank line), or `None` while it is incomplete.
///
/// Not async, so the parser's field array lives only during the parse: held across the read that waits for
/// more bytes, its 2 KiB sat in every exchange's future, which is moved whole on the way to the pool.
fn trailer_section(buf: &[u8]) -> Result<Option<usize>, BodyError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, _))) => {
            // httparse also ends lines at a bare LF.
            let section = &buf[..len];
            let bare_lf = section
                .iter()
                .enumerate()
                .any(|(i, b)| *b == b'\n' && (i == 0 || section[i - 1] != b'\r'));
            if bare_lf {
                return Err(BodyError::Malformed);
            }
            Ok(Some(len))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(BodyError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trailer section alone: its length once the blank line has come, none before, and bare line feeds
    /// refused. (Through a connection, a section never seen complete only waits for more bytes.)
    #[test]
    fn trailer_sections() {
        assert_eq!(trailer_section(b"\r\n"), Ok(Some(2)));
        assert_eq!(trailer_section(b"X-A: 1\r\n\r\nrest"), Ok(Some(10)));
        assert_eq!(trailer_section(b"X-A: 1\r\n"), Ok(None));
        assert_eq!(trailer_section(b""), Ok(None));
        assert_eq!(trailer_section(b"X-A: 1\n\r\n"), Err(BodyError::Malformed));
        assert_eq!(trailer_section(b"X A\r\n\r\n"), Err(BodyError::Malformed));
    }

    #[test]
    fn heads() {
        let head = |s: &str| parse_head(s.as_bytes()).expect("valid").expect("complete");
        let text = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n";
        let h = head(&format!("{text}{{\"riskScore\""));
        assert_eq!(
            (h.len, h.status, h.framing, h.close),
            (text.len(), StatusCode::OK, Framing::Length(12), false)
        );
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Chunked, false));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::UntilClose, true));
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
                matches!(parse_head(bad.as_bytes()), Err(ExchangeError::Invalid(_))),
                "{bad}"
            );
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert!(matches!(
            parse_head(many.as_bytes()),
            Err(ExchangeError::Invalid(_))
        ));
    }

    /// Reads one answer from `bytes`, the server's end closed after them; also whether the connection could
    /// be reused.
    async fn read(bytes: &str) -> (Result<Answer, ExchangeError>, bool) {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        server.write_all(bytes.as_bytes()).await.expect("written");
        drop(server);
        match Connection::new(client).read_answer(1024).await {
            Ok((answer, reusable)) => (Ok(answer), reusable),
            Err(e) => (Err(e), false),
        }
    }

    /// Reads one answer from `bytes` as they arrive 64 at a time, so that every bound on what is buffered while
    /// a head or trailer section is incomplete is met on the way.
    async fn read_slowly(bytes: String) -> Result<Answer, ExchangeError> {
        let (client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            // The reader may stop early, closing its end; what is left is then not needed.
            let _ = server.write_all(bytes.as_bytes()).await;
        });
        let answer = Connection::new(client).read_answer(1024).await;
        writer.abort();
        answer.map(|(answer, _)| answer)
    }

    /// Runs `exchange` on a runtime and thread of its own and waits for it within testkit's patience: a reader
    /// or writer loop that spins never yields, so no timer on the test's own runtime could end it.
    fn within_patience<T: Send + 'static>(
        exchange: impl std::future::Future<Output = T> + Send + 'static,
    ) -> T {
        let (done, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a runtime");
            let _ = done.send(runtime.block_on(exchange));
        });
        outcome
            .recv_timeout(testkit::process::PATIENCE)
            .expect("the exchange ends")
    }

    /// The request goes out in pieces (the pipe holds 16 bytes), all of it before the answer is read, and the
    /// answer comes in pieces too.
    #[test]
    fn send_writes_the_whole_request_then_reads_the_answer() {
        let request = b"POST /v1/score HTTP/1.1\r\nhost: rs\r\ncontent-length: 2\r\n\r\n{}";
        let (answer, reusable, received) = within_patience(async move {
            let (client, mut server) = tokio::io::duplex(16);
            let vendor = tokio::spawn(async move {
                let mut received = vec![0u8; request.len()];
                server.read_exact(&mut received).await.expect("the request");
                server
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .expect("the answer");
                (server, received)
            });
            let (answer, reusable) = Connection::new(client)
                .send(request, 1024)
                .await
                .expect("an answer");
            let (_server, received) = vendor.await.expect("the vendor's end");
            (answer, reusable, received)
        });
        assert_eq!(received, request);
        assert_eq!(answer.body.as_deref(), Ok(b"ok".as_slice()));
        assert!(reusable);
    }

    /// Wherever the vendor's end closes, the read ends with an error: before the answer, in its head, in a
    /// body of known length, in a chunk line, a chunk or the trailers. Each is read on a thread of its own, so
    /// a loop that takes the end for more bytes fails the test instead of hanging it.
    #[test]
    fn an_answer_cut_off_anywhere_ends_the_read_with_an_error() {
        let cut = |bytes: String| {
            within_patience(async move {
                let (client, mut server) = tokio::io::duplex(4096);
                server.write_all(bytes.as_bytes()).await.expect("written");
                drop(server);
                Connection::new(client)
                    .read_answer(1024)
                    .await
                    .map(|(answer, _)| answer.body)
            })
        };
        assert!(matches!(cut(String::new()), Err(ExchangeError::Closed)));
        assert!(matches!(
            cut("HTTP/1.1 200 OK\r\nContent-Le".into()),
            Err(ExchangeError::Invalid("answer cut off"))
        ));
        let chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for body in [
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_owned(),
            format!("{chunked}2\r\nab\r\n1"),
            format!("{chunked}2\r\na"),
            format!("{chunked}2\r\nab\r\n0\r\nX-A: 1\r\n"),
        ] {
            assert_eq!(
                cut(body.clone()).expect("a head"),
                Err(BodyError::Truncated),
                "{body:?}"
            );
        }
    }

    /// `read()` reads with a body bound of 1,024 bytes: that many are read, one more is too many, whether the
    /// body runs to the close, has a length or comes in chunks.
    #[tokio::test]
    async fn bodies_of_up_to_the_bound_are_read() {
        let a = |n: usize| "a".repeat(n);
        for (n, fits) in [(1_024, true), (1_025, false)] {
            for answer in [
                format!("HTTP/1.1 200 OK\r\n\r\n{}", a(n)),
                format!("HTTP/1.1 200 OK\r\nContent-Length: {n}\r\n\r\n{}", a(n)),
                format!(
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{n:x}\r\n{}\r\n0\r\n\r\n",
                    a(n)
                ),
            ] {
                let read = body(&answer).await;
                if fits {
                    assert_eq!(read.map(|b| b.len()), Ok(n), "{answer:.40}");
                } else {
                    assert_eq!(read, Err(BodyError::TooLarge), "{answer:.40}");
                }
            }
        }
    }

    /// A connection that stops taking bytes, having taken none or some of the request, by accepting no byte of
    /// a write or by failing it: an error that says whether any of the request went out (only then may it go
    /// out again elsewhere), never a loop that does not end.
    #[test]
    fn a_connection_that_stops_taking_bytes_fails_the_send_saying_whether_any_went_out() {
        /// Takes `left` bytes of what is written to it, then no more: each write after that is accepted with
        /// no byte (`fail` false) or fails. Reads nothing.
        struct Takes {
            left: usize,
            fail: bool,
        }
        impl AsyncRead for Takes {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Pending
            }
        }
        impl AsyncWrite for Takes {
            fn poll_write(
                mut self: Pin<&mut Self>,
                _: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                let n = self.left.min(buf.len()).min(4);
                self.left -= n;
                Poll::Ready(match n {
                    0 if self.fail => Err(io::ErrorKind::BrokenPipe.into()),
                    n => Ok(n),
                })
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        /// The send's error as (unsent, its kind).
        fn send_to(left: usize, fail: bool) -> (bool, io::ErrorKind) {
            within_patience(async move {
                let sent = Connection::new(Takes { left, fail })
                    .send(b"GET / HTTP/1.1\r\n\r\n", 16)
                    .await;
                match sent {
                    Err(ExchangeError::Unsent(e)) => Some((true, e.kind())),
                    Err(ExchangeError::Io(e)) => Some((false, e.kind())),
                    _ => None,
                }
            })
            .expect("an I/O error")
        }
        assert_eq!(send_to(0, false), (true, io::ErrorKind::WriteZero));
        assert_eq!(send_to(0, true), (true, io::ErrorKind::BrokenPipe));
        assert_eq!(send_to(6, false), (false, io::ErrorKind::WriteZero));
        assert_eq!(send_to(6, true), (false, io::ErrorKind::BrokenPipe));
    }

    /// An idle connection is reusable only while nothing arrives on it: not once the vendor closed it, and not
    /// when it sent bytes no request asked for.
    #[tokio::test]
    async fn an_idle_connection_is_open_until_the_vendor_closes_it_or_sends_unasked_bytes() {
        let (client, server) = tokio::io::duplex(64);
        let mut idle = Connection::new(client);
        assert!(idle.is_open());
        drop(server);
        assert!(!idle.is_open(), "closed by the vendor");

        let (client, mut server) = tokio::io::duplex(64);
        let mut idle = Connection::new(client);
        server.write_all(b"HTTP/1.1 408 ").await.expect("written");
        assert!(!idle.is_open(), "bytes that answer no request");
    }

    #[tokio::test]
    async fn answer_heads_of_up_to_16_kib_are_read() {
        let head = |pad: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nX-Pad: {}\r\nContent-Length: 2\r\n\r\nok",
                "p".repeat(pad)
            )
        };
        // 47 bytes of the head are not padding, and the bytes come 64 at a time.
        let answer = read_slowly(head(MAX_HEAD_BYTES - 47 - 64)).await;
        assert_eq!(
            answer.expect("a head").body.as_deref(),
            Ok(b"ok".as_slice())
        );
        let too_long = read_slowly(head(MAX_HEAD_BYTES)).await;
        assert!(
            matches!(too_long, Err(ExchangeError::Invalid("head too large"))),
            "{too_long:?}"
        );
        assert_eq!(MAX_HEAD_BYTES, 16_384);
    }

    #[tokio::test]
    async fn trailer_sections_of_up_to_4_kib_are_read() {
        let answer = |fields: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n{}\r\n",
                format!("X-T: {}\r\n", "t".repeat(54)).repeat(fields)
            )
        };
        // Each field line is 64 bytes: 60 of them are 3,840 bytes, 70 are 4,480.
        let read = read_slowly(answer(60)).await.expect("a head");
        assert_eq!(read.body.as_deref(), Ok(b"ok".as_slice()));
        let read = read_slowly(answer(70)).await.expect("a head");
        assert_eq!(read.body, Err(BodyError::Malformed));
        // Cut off unfinished: fewer than MAX_TRAILER_BYTES held is a truncated body, that many a refused one.
        let cut = |n: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: {}",
                "t".repeat(n - 5)
            )
        };
        assert_eq!(
            body(&cut(MAX_TRAILER_BYTES - 1)).await,
            Err(BodyError::Truncated)
        );
        assert_eq!(
            body(&cut(MAX_TRAILER_BYTES)).await,
            Err(BodyError::Malformed)
        );
        assert_eq!(MAX_TRAILER_BYTES, 4_096);
    }

    /// The body of an answer whose head was read.
    async fn body(bytes: &str) -> Result<Bytes, BodyError> {
        read(bytes).await.0.expect("a head").body
    }

    #[test]
    fn a_transfer_coding_beside_a_length_is_an_error() {
        // RFC 9112 section 6.3: a message with both "ought to be handled as an error". An empty
        // Transfer-Encoding is still a Transfer-Encoding: the length must not frame the body either.
        let accepted = [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding:\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: ,\r\nContent-Length: 3\r\n\r\n",
        ]
        .into_iter()
        .filter(|head| !matches!(parse_head(head.as_bytes()), Err(ExchangeError::Invalid(_))));
        assert_eq!(accepted.collect::<Vec<_>>(), Vec::<&str>::new());
    }

    #[test]
    fn transfer_codings_that_readers_frame_differently_are_errors() {
        let accepted = [
            // Chunked twice (section 7.1 forbids it): decoded once or twice?
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            // An empty element after chunked: ignored by the RFC's list rule, the final coding for others.
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding:\r\n\r\n",
            // A byte that is not text: some readers cannot read the value at all.
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\u{e9}, chunked\r\n\r\n",
            // Section 6.1: HTTP/1.0 has no transfer codings; the framing is faulty.
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]
        .into_iter()
        .filter(|head| !matches!(parse_head(head.as_bytes()), Err(ExchangeError::Invalid(_))));
        assert_eq!(accepted.collect::<Vec<_>>(), Vec::<&str>::new());
    }

    #[test]
    fn an_empty_or_unknown_transfer_coding_closes_the_connection() {
        let head = |s: &str| parse_head(s.as_bytes()).expect("valid").expect("complete");
        let mut wrong = Vec::new();
        for (text, framing) in [
            ("Transfer-Encoding:\r\n", Framing::UntilClose),
            ("Transfer-Encoding: ,\r\n", Framing::UntilClose),
            ("Transfer-Encoding: gzip\r\n", Framing::UntilClose),
            ("Transfer-Encoding: gzip, chunked\r\n", Framing::Chunked),
            (
                "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                Framing::Chunked,
            ),
            ("Transfer-Encoding: chunked, gzip\r\n", Framing::UntilClose),
        ] {
            let h = head(&format!("HTTP/1.1 200 OK\r\n{text}\r\n"));
            if (h.framing, h.close) != (framing, true) {
                wrong.push((text, h.framing, h.close));
            }
        }
        assert_eq!(wrong, vec![]);
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: , Chunked\r\n\r\n");
        assert_eq!((h.framing, h.close), (Framing::Chunked, false));
    }

    #[tokio::test]
    async fn chunk_lines_end_in_crlf() {
        let mut wrong = Vec::new();
        for bytes in [
            // A bare LF after the size, after the last chunk, and as the blank line ending the trailers.
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nab\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\n",
            // A stray CR before the CRLF or inside an extension (section 2.2: a bare CR is invalid).
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\r\nab\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\rb\r\nab\r\n0\r\n\r\n",
            // White space before the size, and a control byte in an extension.
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n 2\r\nab\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;a\u{0}\r\nab\r\n0\r\n\r\n",
        ] {
            let (answer, reusable) = read(bytes).await;
            let answer = answer.expect("a head");
            if answer.body != Err(BodyError::Malformed) || reusable {
                wrong.push(bytes);
            }
        }
        assert_eq!(wrong, Vec::<&str>::new());
    }

    #[tokio::test]
    async fn trailers_are_field_lines_ending_in_crlf() {
        let mut wrong = Vec::new();
        for bytes in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-A: 1\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-A: 1\r\n\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nnot a field\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n folded: 1\r\n\r\n",
        ] {
            if body(bytes).await != Err(BodyError::Malformed) {
                wrong.push(bytes);
            }
        }
        assert_eq!(wrong, Vec::<&str>::new());
        let many = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(body(&many).await, Err(BodyError::Malformed));
    }

    #[tokio::test]
    async fn chunk_extensions_of_up_to_4_kib_in_all_are_read() {
        // Eight extensions of 512 bytes (the `;` counted) are 4,096; a ninth of one byte is one too many.
        let chunk = format!("1;{}\r\na\r\n", "x".repeat(511));
        let answer = |last: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}{last}0\r\n\r\n",
                chunk.repeat(8)
            )
        };
        assert_eq!(
            body(&answer("")).await.as_deref(),
            Ok(b"aaaaaaaa".as_slice())
        );
        assert_eq!(
            body(&answer("1;\r\na\r\n")).await,
            Err(BodyError::Malformed)
        );
        assert_eq!(MAX_CHUNK_EXTENSIONS, 4_096);
    }

    /// Up to MAX_CHUNK_LINE bytes are held while a chunk line's LF is awaited; a byte more and the line is
    /// refused, whatever follows.
    #[tokio::test]
    async fn a_chunk_line_is_awaited_for_up_to_1_kib() {
        let cut_after = |n: usize| {
            format!(
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;{}",
                "x".repeat(n - 2)
            )
        };
        assert_eq!(
            body(&cut_after(MAX_CHUNK_LINE)).await,
            Err(BodyError::Truncated)
        );
        assert_eq!(
            body(&cut_after(MAX_CHUNK_LINE + 1)).await,
            Err(BodyError::Malformed)
        );
        assert_eq!(MAX_CHUNK_LINE, 1_024);
    }

    #[tokio::test]
    async fn chunk_extensions_are_bounded_in_all() {
        // Each line is within its own bound; together they are not.
        let chunk = format!("1;{}\r\na\r\n", "x".repeat(MAX_CHUNK_LINE - 8));
        let bytes = format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
            chunk.repeat(20)
        );
        assert_eq!(body(&bytes).await, Err(BodyError::Malformed));
    }

    #[tokio::test]
    async fn well_formed_chunked_bodies_are_read_and_the_connection_kept() {
        for bytes in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2 ;a=1; b=\"x;y\"\r\nab\r\n1\t\r\nc\r\n000\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-A: 1\r\nX-B:\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;\u{e9}\r\nabc\r\n0\r\n\r\n",
        ] {
            let (answer, reusable) = read(bytes).await;
            assert_eq!(
                answer.expect("a head").body.as_deref(),
                Ok(b"abc".as_slice()),
                "{bytes:?}"
            );
            assert!(reusable, "{bytes:?}");
        }
    }

    #[test]
    fn chunk_lines() {
        assert_eq!(parse_chunk_line(b"1a"), Some((26, 0)));
        assert_eq!(parse_chunk_line(b"0"), Some((0, 0)));
        assert_eq!(parse_chunk_line(b"A ; name=value"), Some((10, 12)));
        assert_eq!(parse_chunk_line(b"A\t"), Some((10, 0)));
        assert_eq!(parse_chunk_line(b"00000000000000000001"), Some((1, 0)));
        // Fifteen significant digits are the most: sixteen reach sizes where `size + 2` overflows.
        assert_eq!(
            parse_chunk_line(b"fffffffffffffff"),
            Some((0xfff_ffff_ffff_ffff, 0))
        );
        for bad in [
            &b""[..],
            b"-1",
            b"0x10",
            b" 1",
            b"1 2",
            b"1;a\rb",
            b"1\r",
            b"ffffffffffffffff",
        ] {
            assert_eq!(parse_chunk_line(bad), None, "{bad:?}");
        }
    }
}
