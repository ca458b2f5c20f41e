//! Readiness probes RiskShield with a TCP connect at most every 5 s, and concurrent /ready calls share one
//! probe (single-flight) instead of each opening a connection.

use std::net::SocketAddr;

use http::StatusCode;
use testkit::client::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::{TestServer, config};

/// Accepts until the connection from `sentinel` arrives and returns how many came before it. The kernel
/// queues completed connections in order, so every probe that connected before the sentinel is counted.
async fn accepted_before(listener: &TcpListener, sentinel: SocketAddr) -> usize {
    let mut count = 0;
    loop {
        let (_stream, peer) = listener.accept().await.expect("accept");
        if peer == sentinel {
            return count;
        }
        count += 1;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ready_calls_share_one_tcp_probe() {
    // The "upstream" only completes TCP handshakes (the kernel does, from the backlog); readiness never
    // sends it a request.
    let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    // A host name, so each probe also waits for a lookup: the window in which calls could overlap is wide.
    let port = upstream.local_addr().expect("addr").port();
    let url = format!("http://localhost:{port}/v1");
    let server = TestServer::start(config(&[
        ("RISKSHIELD_API_KEY", "k"),
        ("RISKSHIELD_API_URL", &url),
    ]))
    .await;

    // Connect first, then send every request at once, so the calls reach the server together.
    let mut streams = Vec::new();
    for _ in 0..16 {
        streams.push(TcpStream::connect(server.addr).await.expect("connect"));
    }
    let request = b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for stream in &mut streams {
        stream.write_all(request).await.expect("write");
    }
    for mut stream in streams {
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""riskshield_api":true"#), "{answer}");
    }
    // A further call inside the 5 s window reuses the cached answer.
    assert_eq!(get(&server.url("/ready")).await.status, StatusCode::OK);

    let sentinel = TcpStream::connect(upstream.local_addr().expect("addr"))
        .await
        .expect("sentinel connects");
    let probes = accepted_before(&upstream, sentinel.local_addr().expect("addr")).await;
    assert_eq!(
        probes, 1,
        "16 concurrent /ready calls opened {probes} connections"
    );
    server.stop().await;
}
