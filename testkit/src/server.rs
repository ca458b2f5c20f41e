//! The serving half every fake shares: an accept loop that hands each connection to a closure, and a
//! [`Server`] handle that stops the loop and closes every open connection when dropped. Dropping is how a
//! test takes a fake away: the service under test then sees real closed connections, not a mock's error.
//! [`closed_port`] is the other way to have nothing there: a port held so that connecting is refused.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
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

/// A listener on `addr` with an accept queue of `backlog` connections (the kernel caps it at
/// `net.core.somaxconn`). `TcpListener::bind` asks for 128, which a burst of new connections from a proxy
/// under load overflows: the overflowing clients then wait a whole SYN retransmission (one second) and a
/// benchmark measures the queue, not the server.
pub fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A port on 127.0.0.1 where nothing listens, for "connection refused" cases; see [`closed_port`].
#[derive(Debug)]
pub struct ClosedPort {
    socket: TcpSocket,
    addr: SocketAddr,
}

impl ClosedPort {
    /// The refusing address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts listening on the held port, for a fake that comes up later at the address it was promised.
    ///
    /// # Panics
    /// If the socket cannot listen (out of resources): the test cannot go on.
    pub fn listen(self) -> TcpListener {
        self.socket.listen(1024).expect("listen on the held port")
    }
}

/// Holds a port on 127.0.0.1 without listening on it, for as long as the value lives.
///
/// Linux answers a connection to a bound socket that does not listen with a reset, so connecting is refused
/// at once. And because the port stays bound (without SO_REUSEADDR), no other socket of a parallel test can
/// be given it meanwhile, which binding a port and releasing it could not promise.
///
/// # Panics
/// If no socket can be bound (out of ports or descriptors): the test cannot go on.
pub fn closed_port() -> ClosedPort {
    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a port to hold");
    let addr = socket.local_addr().expect("local address");
    ClosedPort { socket, addr }
}
