//! Hostile clients against the real server: every buffer a connection can make the service hold has a cap,
//! and every wait has a deadline (docs/limits.md).
//!
//! - Unfinished request heads larger than MAX_HEADER_BYTES, and the largest heads and bodies the limits
//!   allow, held on many connections at once: the built binary's resident memory (/proc/PID/status) stays
//!   within a bound per connection.
//! - A head over MAX_HEADER_BYTES gets 431 and the connection closes; a head of exactly that size is served.
//! - A client that stops reading is cut off after SEND_TIMEOUT and its slot goes to the next client.
//! - An idle keep-alive connection is closed after HEADER_READ_TIMEOUT.
//! - X-Forwarded-For bytes left of the used entry never move a client into another bucket.

use std::net::SocketAddr;

use testkit::client::{Taken, connect_with_receive_buffer, raw, wait_until_read_or_closed};
use testkit::process::PATIENCE;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::support::{App, TestServer, config};

/// Connections each hostile test opens at once.
const CLIENTS: usize = 200;

/// Resident memory the service may gain per hostile connection: several times what one holds at most
/// (docs/limits.md), for the debug build's larger futures and the allocator's rounding, and far below the
/// 400 KB that one unfinished head made a connection hold before MAX_HEADER_BYTES capped the read buffer.
const RSS_PER_CLIENT_KIB: u64 = 96;

/// The resident memory of process `pid` (VmRSS), in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in {status}"))
}

/// A request head that never ends: the request line and `lines` header lines of `width` bytes each, and no
/// blank line.
fn unfinished_head(path: &str, lines: usize, width: usize) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: x\r\n").into_bytes();
    for n in 0..lines {
        head.extend_from_slice(format!("X-Pad-{n:03}: ").as_bytes());
        head.resize(head.len() + width, b'a');
        head.extend_from_slice(b"\r\n");
    }
    head
}

/// Opens `count` connections to `addr`, sends `bytes` on each and waits until the server has read or
/// refused every byte. Returns the streams (kept open, so the server keeps what it holds) and how many the
/// server holds after reading everything sent on them.
async fn send_on_many(addr: SocketAddr, count: usize, bytes: Vec<u8>) -> (Vec<TcpStream>, usize) {
    let bytes = std::sync::Arc::new(bytes);
    let mut sent = JoinSet::new();
    for _ in 0..count {
        let bytes = bytes.clone();
        sent.spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            // A server that refuses the head closes the connection while it is still being written.
            let _ = stream.write_all(&bytes).await;
            stream
        });
    }
    let mut streams = Vec::with_capacity(count);
    while let Some(done) = sent.join_next().await {
        streams.push(done.expect("a client task"));
    }
    let taken = wait_until_read_or_closed(&streams).await;
    let held = taken.iter().filter(|t| **t == Taken::Read).count();
    (streams, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_heads_and_bodies_keep_the_resident_memory_bounded() {
    // Room for every hostile connection and one more for the last /health.
    let connections = (2 * CLIENTS + 1).to_string();
    let app = App::start(&[
        ("DEMO_MODE", "true"),
        ("WORKERS", "1"),
        ("MAX_CONNECTIONS", &connections),
        // Nothing may time out while the memory is measured.
        ("HEADER_READ_TIMEOUT", "10m"),
        ("REQUEST_TIMEOUT", "10m"),
    ])
    .await;
    let pid = app.process.id();
    // One request first, so what every server allocates once is in the baseline.
    assert_eq!(app.get("/health").await.status, http::StatusCode::OK);
    let baseline = rss_kib(pid);
    let bound = |clients: usize| baseline + clients as u64 * RSS_PER_CLIENT_KIB;

    // 400 KB heads that never end: the server must read at most MAX_HEADER_BYTES of each, then refuse it.
    let huge = unfinished_head("/", 50, 8000);
    let (refused, held) = send_on_many(app.addr, CLIENTS, huge).await;
    let rss = rss_kib(pid);
    eprintln!("RSS {baseline} KiB, after {CLIENTS} refused 400 KB heads {rss} KiB");
    assert!(
        rss <= bound(CLIENTS),
        "{CLIENTS} unfinished 400 KB heads took the RSS from {baseline} KiB to {rss} KiB ({held} held)"
    );
    assert_eq!(held, 0, "a head over MAX_HEADER_BYTES was kept");
    drop(refused);

    // The largest head and the largest body the limits allow, each held unfinished on its own connection.
    let largest_head = {
        let mut head = unfinished_head("/", 3, 8000);
        head.truncate(16_384 - 1);
        head
    };
    let largest_body = {
        let mut request = b"POST /api/v1/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 16384\r\n\r\n".to_vec();
        request.resize(request.len() + 16_384 - 1, b' ');
        request
    };
    let ((_heads, heads_held), (_bodies, bodies_held)) = tokio::join!(
        send_on_many(app.addr, CLIENTS, largest_head),
        send_on_many(app.addr, CLIENTS, largest_body),
    );
    assert_eq!(heads_held, CLIENTS, "a head within the limit was refused");
    assert_eq!(bodies_held, CLIENTS, "a body within the limit was refused");
    let rss = rss_kib(pid);
    eprintln!(
        "RSS {baseline} KiB, holding {CLIENTS} largest heads and {CLIENTS} largest bodies {rss} KiB"
    );
    assert!(
        rss <= bound(2 * CLIENTS),
        "{CLIENTS} largest heads and {CLIENTS} largest bodies took the RSS from {baseline} KiB to {rss} KiB"
    );
    // The service still answers beside them.
    assert_eq!(app.get("/health").await.status, http::StatusCode::OK);
}

/// `GET /health` whose head, blank line included, is exactly `size` bytes.
fn head_of_size(size: usize) -> Vec<u8> {
    let start = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: ";
    let mut head = start.to_vec();
    head.resize(size - 4, b'a');
    head.extend_from_slice(b"\r\n\r\n");
    head
}

#[tokio::test]
async fn a_head_over_max_header_bytes_gets_431_and_the_connection_closes() {
    let s = TestServer::start(config(&[("MAX_HEADER_BYTES", "16384")])).await;
    let exact = raw(s.addr, &head_of_size(16_384)).await;
    assert!(exact.starts_with("HTTP/1.1 200 "), "{exact}");
    // One byte more, or far more: refused, and `raw` returning at all means the server closed the
    // connection (the request does not end, and the client never closes its side).
    for size in [16_385, 64 * 1024] {
        let over = raw(s.addr, &head_of_size(size)).await;
        assert!(over.starts_with("HTTP/1.1 431 "), "{size}: {over}");
        // hyper's own answer, before a request exists (docs/limits.md): no body, and the connection closes.
        let head = over.to_ascii_lowercase();
        assert!(head.contains("\r\nconnection: close\r\n"), "{over}");
        assert!(head.contains("\r\ncontent-length: 0\r\n"), "{over}");
        assert!(over.ends_with("\r\n\r\n"), "{over}");
    }
    s.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_send_timeout_and_its_slot_freed() {
    let s = TestServer::start(config(&[
        ("SEND_TIMEOUT", "200ms"),
        ("MAX_CONNECTIONS", "1"),
        ("WORKERS", "1"),
    ]))
    .await;
    // Far more answers than the kernel's buffers on both ends can hold (the document is about 29 KB).
    const PIPELINED: usize = 1000;
    let mut stalled = connect_with_receive_buffer(s.addr, 4096).await;
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n";
    stalled
        .write_all(&request.repeat(PIPELINED))
        .await
        .expect("the pipelined requests are sent");

    // The only slot is taken until the stalled connection goes: this one waits in the kernel's backlog.
    let next = tokio::time::timeout(
        PATIENCE,
        raw(
            s.addr,
            b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        ),
    )
    .await
    .expect("the next client is served once the stalled one is cut off");
    assert!(next.starts_with("HTTP/1.1 200 "), "{next}");

    // The stalled connection ended (reset or closed) before all its answers were sent.
    let mut received = Vec::new();
    let ended = tokio::time::timeout(PATIENCE, stalled.read_to_end(&mut received))
        .await
        .expect("the stalled connection was closed by the server");
    let answers = received.windows(9).filter(|w| w == b"HTTP/1.1 ").count();
    assert!(
        answers < PIPELINED,
        "all {answers} answers arrived ({ended:?})"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_header_read_timeout() {
    let s = TestServer::start(config(&[("HEADER_READ_TIMEOUT", "200ms")])).await;
    let mut stream = TcpStream::connect(s.addr).await.expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // The answer, then nothing: the server closes the idle connection, so reading reaches the end.
    let mut received = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received))
        .await
        .expect("the idle connection was closed")
        .expect("a clean close");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    assert!(!text.contains("connection: close"), "{text}");
    s.stop().await;
}

/// A validation sent raw, with `forwarded` as the X-Forwarded-For value (any bytes): its status line.
async fn validate_forwarded_for(addr: SocketAddr, forwarded: &[u8]) -> String {
    let body = r#"{"firstName":"Jane","lastName":"Doe","idNumber":"8001015009087"}"#;
    let mut request = format!(
        "POST /api/v1/validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nX-Forwarded-For: ",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(forwarded);
    request.extend_from_slice(b"\r\n\r\n");
    request.extend_from_slice(body.as_bytes());
    let answer = raw(addr, &request).await;
    answer.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn bytes_left_of_the_used_forwarded_for_entry_never_change_the_bucket() {
    let s = TestServer::start(config(&[
        ("DEMO_MODE", "true"),
        ("RATE_LIMIT_PER_MINUTE", "1"),
        ("TRUSTED_PROXY_HOPS", "1"),
    ]))
    .await;
    // The proxy's own bucket (its address is the TCP peer) is spent by a request without the header.
    let raw_request = |xff: &'static [u8]| validate_forwarded_for(s.addr, xff);
    assert!(raw_request(b"").await.contains(" 200 "));
    // A client whose entry the proxy appended, behind bytes that are not text: its own bucket, not the
    // proxy's.
    assert!(
        raw_request(b"\xff\xfe, 198.51.100.7")
            .await
            .contains(" 200 ")
    );
    // The same client again, with other bytes in front: the same bucket, now spent.
    assert!(
        raw_request(b"203.0.113.1\x80, 198.51.100.7")
            .await
            .contains(" 429 ")
    );
    assert!(raw_request(b"198.51.100.7").await.contains(" 429 "));
    s.stop().await;
}
