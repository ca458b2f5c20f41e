//! One way for a test to talk HTTP: every request goes on a fresh HTTP/1.1 connection, optionally from a
//! chosen loopback source address (the rate limiter keys clients by peer address), and comes back as one
//! [`Reply`]. A fresh connection per request keeps tests independent of connection reuse, which some of
//! them measure on the service's own upstream side.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Whatever went wrong between connecting and reading the whole answer.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    ///
    /// # Panics
    /// If the body is not JSON, showing it.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The body as text, for assertion messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of a JSON error answer (empty when there is none).
    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

/// Sends `request` (with an absolute URL) on a fresh connection, from `source` when given, in origin form
/// with a Host header, as a browser or client library would.
pub async fn exchange_from(
    source: Option<IpAddr>,
    request: Request<Full<Bytes>>,
) -> Result<Reply, Error> {
    let (mut parts, body) = request.into_parts();
    let authority = parts
        .uri
        .authority()
        .ok_or("the request URL has no host")?
        .clone();
    let addr: SocketAddr = tokio::net::lookup_host(authority.as_str())
        .await?
        .next()
        .ok_or("the request URL's host does not resolve")?;
    let stream = match source {
        None => TcpStream::connect(addr).await?,
        Some(source) => {
            let socket = if source.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(source, 0))?;
            socket.connect(addr).await?
        }
    };
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    if !parts.headers.contains_key(HOST) {
        parts
            .headers
            .insert(HOST, HeaderValue::from_str(authority.as_str())?);
    }
    parts.uri = match parts.uri.path_and_query() {
        Some(target) => Uri::try_from(target.as_str())?,
        None => Uri::from_static("/"),
    };
    let response = sender
        .send_request(Request::from_parts(parts, body))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// [`exchange_from`] from the default source address.
pub async fn exchange(request: Request<Full<Bytes>>) -> Result<Reply, Error> {
    exchange_from(None, request).await
}

/// Sends one request from `source` with the given headers and body.
///
/// # Panics
/// If the request cannot be built or gets no answer: in a test that is the failure to report.
pub async fn send_from(
    source: Option<IpAddr>,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(body.into()))
        .expect("a valid request");
    exchange_from(source, request)
        .await
        .unwrap_or_else(|e| panic!("no answer from {url}: {e}"))
}

/// Sends one request with the given headers and body.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Reply {
    send_from(None, method, url, headers, body).await
}

/// GETs `url`.
pub async fn get(url: &str) -> Reply {
    send(Method::GET, url, &[], Bytes::new()).await
}

/// POSTs a JSON value with Content-Type application/json.
pub async fn post_json(url: &str, body: &Value) -> Reply {
    send(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        body.to_string(),
    )
    .await
}

/// Writes raw bytes to `addr` and reads until the peer closes, for requests no client library would send.
/// The request should ask for `Connection: close`.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Waits until the server end of `stream` has taken every byte sent so far out of its receive queue: the
/// server process has read them (into its HTTP parser's buffer), not just the kernel.
///
/// A test needs this to put a server connection in a known state, such as a request head half read, before
/// it changes something else (a shutdown signal). Linux reports each socket's unread bytes in
/// /proc/net/tcp and offers no event for it, so this checks that exact condition repeatedly, bounded by
/// [`PATIENCE`](crate::process::PATIENCE); no duration is assumed.
///
/// # Panics
/// If the connection is not IPv4, /proc/net/tcp is unreadable or lacks the server's socket, or the bytes are
/// still unread after the patience bound.
pub async fn wait_until_read(stream: &TcpStream) {
    let server = stream.peer_addr().expect("peer address");
    let client = stream.local_addr().expect("local address");
    let deadline = tokio::time::Instant::now() + crate::process::PATIENCE;
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        let unread = unread_bytes(&table, server, client)
            .unwrap_or_else(|| panic!("no socket {server} <- {client} in /proc/net/tcp"));
        if unread == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server never read the {unread} bytes sent to it"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// The receive-queue length of the socket `local` connected to `remote` in a /proc/net/tcp table.
fn unread_bytes(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    socket_row(table, local, remote).map(|row| row.unread)
}

/// What /proc/net/tcp says about one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SocketRow {
    /// The TCP state (1 = established).
    state: u8,
    /// Bytes sent and not yet acknowledged by the peer (the send queue).
    unsent: u64,
    /// Bytes received and not yet read by the process (the receive queue).
    unread: u64,
}

/// TCP_ESTABLISHED in /proc/net/tcp.
const ESTABLISHED: u8 = 1;

/// The row of the socket `local` connected to `remote` in a /proc/net/tcp table.
fn socket_row(table: &str, local: SocketAddr, remote: SocketAddr) -> Option<SocketRow> {
    let key = (hex(local), hex(remote));
    socket_rows(table).find_map(|(k, row)| (k == key).then_some(row))
}

/// An IPv4 socket address as /proc/net/tcp prints it.
fn hex(addr: SocketAddr) -> String {
    match addr {
        // The kernel prints the address's four bytes as one native-endian (x86: little-endian) word.
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_ne_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => panic!("only IPv4 connections can be inspected"),
    }
}

/// Every row of a /proc/net/tcp table, by (local, remote) address as printed there.
fn socket_rows(table: &str) -> impl Iterator<Item = ((String, String), SocketRow)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (tx, rx) = fields.get(4)?.split_once(':')?;
        let row = SocketRow {
            state: u8::from_str_radix(fields.get(3)?, 16).ok()?,
            unsent: u64::from_str_radix(tx, 16).ok()?,
            unread: u64::from_str_radix(rx, 16).ok()?,
        };
        Some((
            ((*fields.get(1)?).to_owned(), (*fields.get(2)?).to_owned()),
            row,
        ))
    })
}

/// What became of the bytes a client sent: see [`wait_until_read_or_closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// The server process has read every byte, and the connection is still open.
    Read,
    /// The server closed (or reset) the connection.
    Closed,
}

/// Waits until, on each of `streams`, the server process has read every byte sent (nothing left in the
/// client's send queue or the server's receive queue) or has closed the connection, and says which. A
/// hostile test uses it to know the server holds what was sent (or refused it) before it measures the
/// server. Like [`wait_until_read`] it rechecks /proc/net/tcp (once per round for all streams), bounded by
/// [`PATIENCE`](crate::process::PATIENCE).
///
/// # Panics
/// If a connection is not IPv4, /proc/net/tcp is unreadable, or a stream still has bytes in flight after the
/// patience bound.
pub async fn wait_until_read_or_closed(streams: &[TcpStream]) -> Vec<Taken> {
    // Each stream's two sockets as /proc/net/tcp names them; `None` once reset (it has no peer any more).
    let sockets: Vec<Option<(String, String)>> = streams
        .iter()
        .map(|s| match (s.local_addr(), s.peer_addr()) {
            (Ok(client), Ok(server)) => Some((hex(client), hex(server))),
            _ => None,
        })
        .collect();
    let mut taken: Vec<Option<Taken>> = sockets
        .iter()
        .map(|s| s.is_none().then_some(Taken::Closed))
        .collect();
    let deadline = tokio::time::Instant::now() + crate::process::PATIENCE;
    loop {
        let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
        let rows: std::collections::HashMap<(String, String), SocketRow> =
            socket_rows(&table).collect();
        for (slot, socket) in taken.iter_mut().zip(&sockets) {
            let (None, Some((client, server))) = (&slot, socket) else {
                continue;
            };
            let client_side = rows.get(&(client.clone(), server.clone()));
            let server_side = rows.get(&(server.clone(), client.clone()));
            *slot = match (client_side, server_side) {
                (Some(c), Some(s)) if c.state == ESTABLISHED && s.state == ESTABLISHED => {
                    (c.unsent == 0 && s.unread == 0).then_some(Taken::Read)
                }
                // Gone from the table, or closing: the server ended the connection.
                _ => Some(Taken::Closed),
            };
        }
        if taken.iter().all(Option::is_some) {
            return taken.into_iter().flatten().collect();
        }
        let waiting = taken.iter().filter(|t| t.is_none()).count();
        assert!(
            tokio::time::Instant::now() < deadline,
            "the server neither read nor refused what was sent on {waiting} connections"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Connects to `addr` with a receive buffer of about `bytes` (the kernel doubles it and keeps a minimum),
/// for a client that reads slowly or not at all: once that little is unread, the server's writes block.
pub async fn connect_with_receive_buffer(addr: SocketAddr, bytes: u32) -> TcpStream {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .expect("socket");
    // Set before connecting, so the window advertised in the handshake is already small.
    socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
    socket.connect(addr).await.expect("connect")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_bytes_reads_the_receive_queue_of_one_socket() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1\n   1: 0100007F:1F90 0100007F:D431 01 00000000:0000001E 00:00000000 00000000     0        0 2 1\n";
        let server: SocketAddr = "127.0.0.1:8080".parse().expect("addr");
        let client: SocketAddr = "127.0.0.1:54321".parse().expect("addr");
        assert_eq!(unread_bytes(table, server, client), Some(30));
        assert_eq!(unread_bytes(table, client, server), None);
        assert_eq!(
            socket_row(table, server, client),
            Some(SocketRow {
                state: ESTABLISHED,
                unsent: 0,
                unread: 30
            })
        );
    }

    #[tokio::test]
    async fn a_server_that_reads_is_seen_to_have_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut client = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");
        client.write_all(b"half a request").await.expect("write");
        let mut buf = [0u8; 14];
        server.read_exact(&mut buf).await.expect("read");
        wait_until_read(&client).await;
        assert_eq!(&buf, b"half a request");
    }
}
