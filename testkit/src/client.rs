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
