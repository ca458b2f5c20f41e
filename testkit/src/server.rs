//! The serving half every fake shares: an accept loop that hands each connection to a closure, and a
//! [`Server`] handle that stops the loop and closes every open connection when dropped. Dropping is how a
//! test takes a fake away: the service under test then sees real closed connections, not a mock's error.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A fake running on its own task; dropping it closes the listener and every connection.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Server {
    /// Runs [`accept_loop`] on a new task.
    pub fn spawn<F, Fut>(listener: TcpListener, on_connection: F) -> std::io::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, on_connection));
        Ok(Self { addr, task })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Accepts connections until the future is dropped, each handled by `on_connection` on its own task. The
/// connection tasks are owned here, so dropping the loop also drops every open connection.
pub async fn accept_loop<F, Fut>(listener: TcpListener, on_connection: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        // Finished connections are reaped here so a long benchmark run does not accumulate them.
        while connections.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                // Small request/response pairs on keep-alive connections: Nagle would add delayed-ACK latency.
                let _ = stream.set_nodelay(true);
                connections.spawn(on_connection(stream));
            }
            Err(e) => {
                // Usually EMFILE under load: back off briefly instead of spinning or crashing.
                eprintln!("fake server: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves HTTP/1.1 on one connection until the peer closes it. Errors are client disconnects; a fake has
/// nothing useful to do with them.
pub async fn serve_http<I, S, B>(io: I, service: S)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
    B: hyper::body::Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// A port on 127.0.0.1 where nothing listens (bound, then released), for "connection refused" cases.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a port to release");
    listener.local_addr().expect("local address")
}
