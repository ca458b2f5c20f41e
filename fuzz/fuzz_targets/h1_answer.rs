//! The upstream answer reader (src/riskshield/h1.rs) against hyper's client connection, on the same bytes.
//!
//! Input: one byte of settings, then the vendor's bytes. Bit 0 of the settings: the vendor ends the connection
//! after its bytes (else it keeps it open and sends nothing more); bits 1-3: how many bytes each read gets
//! (1 to 4096, so answers arrive cut at every place); bit 4: a body limit of 16 bytes instead of the service's
//! 64 KiB.
//!
//! The service's reader is stricter than hyper on purpose (docs/fuzzing.md): it refuses some answers hyper
//! takes (a length beside a transfer coding, chunked twice, a bare LF in trailers, a Content-Length list, an
//! HTTP/1.0 keep-alive), so the comparison runs one way:
//! - a body the service reads is one hyper reads too, under the same status, byte for byte;
//! - an answer whose head the service reads has, where hyper reads a head too, the same status;
//! - a connection the service would use again is one hyper keeps alive.

#![no_main]

use std::io;
use std::pin::{Pin, pin};
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use applicant_validator::fuzzing::{self, Answer};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The vendor's end of a connection: once a request has come, its bytes, `piece` at a time, then the
/// connection's end or silence. The request itself is dropped.
struct Vendor {
    bytes: Bytes,
    piece: usize,
    ends: bool,
    asked: bool,
    /// The reader waiting for the request to come.
    waiting: Option<Waker>,
}

impl AsyncRead for Vendor {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.asked {
            self.waiting = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if self.bytes.is_empty() {
            // Silence: never ready again, and nothing will wake the reader.
            return if self.ends {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
        let n = self.piece.min(self.bytes.len()).min(buf.remaining());
        let piece = self.bytes.split_to(n);
        buf.put_slice(&piece);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Vendor {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.asked = true;
        if let Some(reader) = self.waiting.take() {
            reader.wake();
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// A score request, as the service writes one (its content does not matter to the vendor here).
const REQUEST: &[u8] = b"POST /score HTTP/1.1\r\nHost: vendor\r\nContent-Length: 0\r\n\r\n";

/// The service's exchange: `None` while it still waits for bytes. The vendor is always ready once asked until
/// it falls silent, so one poll runs the exchange as far as it can go.
fn ours(vendor: Vendor, max_body: usize) -> Option<Result<Answer, String>> {
    let mut read = pin!(fuzzing::exchange(vendor, REQUEST, max_body));
    match read.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(outcome) => Some(outcome),
        Poll::Pending => None,
    }
}

/// What hyper made of the same bytes.
#[derive(Debug)]
enum Theirs {
    /// Still waiting for the head.
    Waiting,
    /// No response: its error (read in failure messages only).
    #[allow(dead_code)]
    Refused(String),
    Response {
        status: u16,
        /// The body; `None` while still waiting for it.
        body: Option<Result<Bytes, String>>,
        /// The connection stays open for another request once everything that could happen has.
        kept_alive: bool,
    },
}

/// One runtime for every run, its clock paused: a wait for bytes that never come ends as soon as nothing else
/// can happen, without real time passing.
static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime")
});

const PATIENCE: Duration = Duration::from_secs(60);

async fn theirs(vendor: Vendor) -> Theirs {
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(vendor)).await {
            Ok(parts) => parts,
            Err(e) => return Theirs::Refused(e.to_string()),
        };
    let mut connection = tokio::spawn(connection);
    let request = http::Request::post("/score")
        .header(http::header::HOST, "vendor")
        .body(Empty::<Bytes>::new())
        .expect("a request");
    let outcome = match tokio::time::timeout(PATIENCE, sender.send_request(request)).await {
        Err(_) => Theirs::Waiting,
        Ok(Err(e)) => Theirs::Refused(e.to_string()),
        Ok(Ok(response)) => {
            let status = response.status().as_u16();
            let body = match tokio::time::timeout(PATIENCE, response.into_body().collect()).await {
                Err(_) => None,
                Ok(Err(e)) => Some(Err(e.to_string())),
                Ok(Ok(collected)) => Some(Ok(collected.to_bytes())),
            };
            // Alive once everything else has happened: kept for another request.
            let kept_alive = tokio::time::timeout(PATIENCE, &mut connection)
                .await
                .is_err();
            Theirs::Response {
                status,
                body,
                kept_alive,
            }
        }
    };
    connection.abort();
    outcome
}

fuzz_target!(|data: &[u8]| {
    let Some((&settings, bytes)) = data.split_first() else {
        return;
    };
    let vendor = || Vendor {
        bytes: Bytes::copy_from_slice(bytes),
        piece: [1, 2, 3, 7, 16, 64, 512, 4096][usize::from(settings >> 1 & 7)],
        ends: settings & 1 == 1,
        asked: false,
        waiting: None,
    };
    let max_body = if settings & 0x10 != 0 { 16 } else { 64 * 1024 };
    let Some(Ok(ours)) = ours(vendor(), max_body) else {
        // No answer read, or still waiting for one: nothing was taken from these bytes.
        return;
    };
    let theirs = RUNTIME.block_on(theirs(vendor()));
    let context = || {
        format!(
            "\nbytes: {:?}\nours: {ours:?}\ntheirs: {theirs:?}",
            Bytes::copy_from_slice(bytes)
        )
    };
    match &theirs {
        Theirs::Response {
            status,
            body,
            kept_alive,
        } => {
            assert_eq!(ours.status, *status, "status{}", context());
            if let Ok(ours_body) = &ours.body {
                assert_eq!(
                    body.as_ref().and_then(|b| b.as_ref().ok()),
                    Some(ours_body),
                    "body{}",
                    context()
                );
            }
            assert!(!ours.reusable || *kept_alive, "reused{}", context());
        }
        Theirs::Waiting | Theirs::Refused(_) => {
            assert!(
                ours.body.is_err(),
                "read where hyper read nothing{}",
                context()
            );
        }
    }
});
