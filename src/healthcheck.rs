//! The `healthcheck` subcommand: Docker's HEALTHCHECK without curl in the image.
//!
//! It speaks HTTP/1.1 directly over a TCP connection to loopback (hyper's `client::conn`), so no proxy
//! variable is ever consulted and there is no pool, no TLS and no DNS. One deadline bounds everything.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::parse::{parse_host, parse_port};
use crate::config::settings::default_text;

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Probe {
    /// `http://127.0.0.1:PORT/health` (or the HOST/PORT the server binds, mapped to loopback).
    pub fn local(addr: SocketAddr) -> Self {
        Self {
            addr,
            host: addr.to_string(),
            path: "/health".into(),
        }
    }

    /// An explicit `http://IP:PORT/path` URL. Only literal IP addresses: a healthcheck must not depend on DNS.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|_| format!("--url: not a URL: {url:?}"))?;
        if uri.scheme_str() != Some("http") {
            return Err("--url: only http:// URLs are supported".into());
        }
        let host = uri.host().ok_or("--url: the URL has no host")?;
        let ip = if host.eq_ignore_ascii_case("localhost") {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    format!("--url: the host must be an IP address or localhost, got {host:?}")
                })?
        };
        let addr = SocketAddr::new(ip, uri.port_u16().unwrap_or(80));
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Self {
            addr,
            host: uri
                .authority()
                .map_or_else(|| addr.to_string(), |a| a.to_string()),
            path,
        })
    }
}

/// Probes once; `Ok` only on HTTP 200, otherwise a one-line reason.
pub async fn check(probe: &Probe, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, exchange(probe)).await {
        Ok(Ok(StatusCode::OK)) => Ok(()),
        Ok(Ok(status)) => Err(format!(
            "unhealthy: {} answered HTTP {}",
            probe.addr,
            status.as_u16()
        )),
        Ok(Err(e)) => Err(format!("unhealthy: {e}")),
        Err(_) => Err(format!(
            "unhealthy: no answer from {} within {:?}",
            probe.addr, timeout
        )),
    }
}

async fn exchange(probe: &Probe) -> Result<StatusCode, String> {
    let stream = tokio::net::TcpStream::connect(probe.addr)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", probe.addr))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake with {} failed: {e}", probe.addr))?;
    let driver = tokio::spawn(connection);
    let request = Request::get(probe.path.as_str())
        .header(header::HOST, probe.host.as_str())
        .header(
            header::USER_AGENT,
            concat!(
                "applicant-validator-healthcheck/",
                env!("CARGO_PKG_VERSION")
            ),
        )
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("bad request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request to {} failed: {e}", probe.addr))?;
    driver.abort();
    Ok(response.status())
}

/// Where `healthcheck` connects: HOST/PORT (unset or empty: the server's defaults from the settings table),
/// with the unspecified addresses mapped to loopback, because a probe inside the container must reach the
/// server on the loopback interface.
pub fn probe_addr(host: Option<&str>, port: Option<&str>) -> Result<SocketAddr, Vec<String>> {
    let given_or_default = |value: Option<&str>, name: &str| {
        value
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .or_else(|| default_text(name))
            .unwrap_or_default()
            .to_owned()
    };
    let mut errors = Vec::new();
    let host = given_or_default(host, "HOST");
    let host = parse_host(&host).unwrap_or_else(|why| {
        errors.push(format!("HOST: {why} (got {host:?})"));
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    });
    let host = match host {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        other => other,
    };
    let port = given_or_default(port, "PORT");
    let port = parse_port(&port).unwrap_or_else(|why| {
        errors.push(format!("PORT: {why} (got {port:?})"));
        0
    });
    if errors.is_empty() {
        Ok((host, port).into())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_maps_unspecified_hosts_to_loopback() {
        assert_eq!(
            probe_addr(Some("0.0.0.0"), Some("9000")),
            Ok("127.0.0.1:9000".parse().expect("addr"))
        );
        assert_eq!(
            probe_addr(Some("::"), Some("9000")),
            Ok("[::1]:9000".parse().expect("addr"))
        );
        assert_eq!(
            probe_addr(None, None),
            Ok("127.0.0.1:8080".parse().expect("addr"))
        );
        assert!(probe_addr(Some("nowhere"), Some("x")).is_err_and(|e| e.len() == 2));
    }

    #[test]
    fn urls() {
        let p = Probe::from_url("http://127.0.0.1:9000/ready").expect("valid");
        assert_eq!(p.addr, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(p.path, "/ready");
        assert_eq!(
            Probe::from_url("http://localhost:81")
                .expect("valid")
                .addr
                .port(),
            81
        );
        assert!(Probe::from_url("https://127.0.0.1/").is_err());
        assert!(Probe::from_url("http://example.com/").is_err());
        assert!(Probe::from_url("::").is_err());
    }
}
