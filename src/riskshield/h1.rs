//! Reading RiskShield's answers off an HTTP/1.1 connection: the head parsed with `httparse` (the parser hyper
//! itself uses) and the body framed as RFC 9112 section 6.3 says — `Content-Length`, `chunked`, or the
//! connection's end — with every part bounded (head, header count, chunk lines, body).
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
    let mut close = response.version != Some(1);
    let mut length: Option<u64> = None;
    let mut chunked: Option<bool> = None;
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
}
