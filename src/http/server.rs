//! Serving: per-connection limits, keep-alive, the header-read and send timeouts and bounded graceful
//! shutdown, on one or on many worker threads.
//!
//! Every buffer of a connection has a cap and every wait a deadline (docs/limits.md states the sums): the
//! request head is read into at most MAX_HEADER_BYTES (a larger head gets hyper's 431 and the connection
//! closes), the head must arrive within HEADER_READ_TIMEOUT (which also closes a keep-alive connection idle
//! that long: hyper starts the timer when it waits for the next request's head), the body is capped by the
//! handlers (MAX_BODY_BYTES, REQUEST_TIMEOUT), and an answer whose write makes no progress for SEND_TIMEOUT
//! ends the connection ([`SendDeadline`]).
//!
//! Thread-per-core: [`spawn_workers`] starts one OS thread per worker, each with its own single-threaded tokio
//! runtime, its own `SO_REUSEPORT` listener on the shared address (the kernel spreads new connections across
//! them by a hash, and [`Balancer`] hands a connection on to a worker serving fewer), its own share of
//! MAX_CONNECTIONS and its own upstream connections (a [`WorkerScorer`]). A request and its upstream exchange
//! therefore never leave the thread that serves the connection. What must be global (the breaker, the key,
//! metrics, the rate limiter, the draining flag) lives in the shared [`AppState`].
//!
//! The shutdown sequence that drives them is `app::supervise`, for the binary and the integration tests alike.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};

use super::balance::{Balancer, Inbox};
use super::cors::Cors;
use super::envelope::Envelope;
use super::state::AppState;

/// Accept backlog of every listener (tokio's default for `TcpListener::bind`).
const BACKLOG: u32 = 1024;

/// Binds `workers` listeners on `addr`, sharing it with `SO_REUSEPORT` when there is more than one (a single
/// listener keeps the port exclusive). Must run inside a tokio runtime; the listeners are handed over as std
/// sockets so each worker registers its own with its own runtime.
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let shared = workers > 1;
    let first = listen(addr, shared)?;
    // With PORT=0 the first bind picks the port; the others must join that one, not pick their own.
    let addr = first.local_addr()?;
    let mut listeners = vec![first.into_std()?];
    for _ in 1..workers {
        listeners.push(listen(addr, shared)?.into_std()?);
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr, shared: bool) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if shared {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// One worker thread: when it finished, how many connections were cut off when the grace period ended.
pub type WorkerDone = oneshot::Receiver<std::io::Result<usize>>;

/// Starts one worker thread per listener, each serving until `stop` turns true and then draining its own
/// connections for at most SHUTDOWN_GRACE. The caller flips the flag after [`begin_drain`].
pub fn spawn_workers(
    state: &Arc<AppState>,
    listeners: Vec<std::net::TcpListener>,
    stop: &watch::Receiver<bool>,
) -> std::io::Result<Vec<WorkerDone>> {
    let workers = listeners.len().max(1);
    if let Some(first) = listeners.first() {
        log_listening(state, first.local_addr()?, workers);
    }
    start_background(state);
    // Each worker admits its share of MAX_CONNECTIONS; further clients wait in the kernel's backlog.
    let share = state.config.max_connections.div_ceil(workers).max(1);
    let (balancer, inboxes) = Balancer::new(workers);
    let mut done = Vec::with_capacity(workers);
    for ((index, listener), inbox) in listeners.into_iter().enumerate().zip(inboxes) {
        let state = state.clone();
        let balancer = balancer.clone();
        let mut stop = stop.clone();
        let (tx, rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        let served = runtime.block_on(async {
                            let listener = TcpListener::from_std(listener)?;
                            let stop = async move {
                                let _ = stop.wait_for(|stop| *stop).await;
                            };
                            let balance = (balancer, inbox);
                            Ok(worker(state, listener, balance, share, stop).await)
                        });
                        // Blocking DNS lookups left in flight must not hold the thread.
                        runtime.shutdown_background();
                        served
                    });
                let _ = tx.send(result);
            })?;
        done.push(rx);
    }
    Ok(done)
}

/// Marks the service as draining (/health 503, `Connection: close` on answers) and logs it once, before the
/// workers stop accepting.
pub fn begin_drain(state: &AppState) {
    state.draining.store(true, Ordering::Relaxed);
    tracing::info!(
        connections = state.open_connections(),
        grace_ms = state.config.shutdown_grace.as_millis() as u64,
        "shutting down, draining"
    );
}

/// Logs how the drain ended: every connection finished, or `remaining` were cut off.
pub fn log_drained(remaining: usize) {
    if remaining == 0 {
        tracing::info!("drained, exiting");
    } else {
        tracing::warn!(
            remaining,
            "shutdown grace period over; closed remaining connections"
        );
    }
}

fn log_listening(state: &AppState, local: SocketAddr, workers: usize) {
    tracing::info!(
        address = %local,
        environment = %state.config.environment,
        mode = if state.config.demo_mode { "demo" } else { "riskshield" },
        workers,
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );
}

/// Process-wide background work that belongs to the server: the rate limiter's sweeper.
fn start_background(state: &AppState) {
    if let Some(limiter) = &state.limiter {
        limiter.spawn_sweeper();
    }
}

/// One worker's accept loop until `stop` resolves, then the drain of its own connections for at most
/// SHUTDOWN_GRACE. Returns how many connections were cut off.
async fn worker(
    state: Arc<AppState>,
    listener: TcpListener,
    (balancer, mut inbox): (Arc<Balancer>, Inbox),
    max_connections: usize,
    stop: impl Future<Output = ()>,
) -> usize {
    let worker_scorer = Arc::new(state.scorer.for_worker());
    let cors = Arc::new(Cors::new(&state.config.cors_origins));
    let limit = Arc::new(Semaphore::new(max_connections));
    let drain = Arc::new(Drain::default());
    let mut connections = JoinSet::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The read buffer is what an unfinished head can make a connection hold: hyper's default is about
    // 400 KB. Both limits at MAX_HEADER_BYTES: the buffer can never grow past it, and a head over it is
    // refused however its bytes arrive.
    let max_header_bytes = state.config.max_header_bytes;
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .max_buf_size(max_header_bytes)
        .max_header_size(max_header_bytes)
        .keep_alive(true);
    let send_timeout = state.config.send_timeout;

    tokio::pin!(stop);
    loop {
        while connections.try_join_next().is_some() {}
        // Waiting for a free slot before accepting leaves excess clients in the kernel's backlog.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer, served) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    match balancer.place(inbox.worker, stream, peer) {
                        Some((stream, served)) => (stream, peer, served),
                        // Another worker serves it; the slot taken for it is free again.
                        None => continue,
                    }
                }
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept: back off briefly, never crash.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(handed) = inbox.handed.recv() => match balancer.take(inbox.worker, handed) {
                Some(taken) => taken,
                None => continue,
            },
            () = &mut stop => break,
        };
        let service = Envelope {
            state: state.clone(),
            worker_scorer: worker_scorer.clone(),
            cors: cors.clone(),
            peer,
        };
        let io = SendDeadline::new(stream, send_timeout);
        let connection = Draining {
            connection: Box::pin(http1.serve_connection(io, service)),
            drain: drain.clone(),
            registered: None,
            shutting_down: false,
        };
        let open = state.connection_opened();
        connections.spawn(async move {
            let _permit = permit;
            let _open = open;
            let _served = served;
            if let Err(e) = connection.await {
                log_connection_error(&e, peer, max_header_bytes, send_timeout);
            }
        });
    }

    drop(listener);
    drain.raise();
    let drained = tokio::time::timeout(state.config.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => 0,
        Err(_) => {
            let remaining = connections.len();
            connections.abort_all();
            remaining
        }
    }
}

/// Logs why a connection ended with an error. The two endings the limits cause are logged at INFO, without
/// the client's address, so an operator sees them: a head over MAX_HEADER_BYTES (hyper has answered 431, or
/// 414 for a request target over 64 KiB) and an answer cut off by SEND_TIMEOUT. Anything else (a reset, a
/// malformed request) at DEBUG.
fn log_connection_error(
    e: &hyper::Error,
    peer: SocketAddr,
    max_header_bytes: usize,
    send_timeout: Duration,
) {
    if e.is_parse_too_large() {
        tracing::info!(
            max_header_bytes,
            "request head too large; refused and closed the connection"
        );
    } else if SendTimedOut::caused(e) {
        tracing::info!(
            send_timeout_ms = send_timeout.as_millis() as u64,
            "answer made no progress for SEND_TIMEOUT; closed the connection"
        );
    } else {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
}

/// A connection's socket with SEND_TIMEOUT on its writes: a write that stays blocked for that long (the
/// client stopped reading, or advertises a zero window) fails, which ends the connection and frees its
/// share of MAX_CONNECTIONS.
///
/// The deadline is armed only when a write returns `Pending` and disarmed by the next write that goes
/// through, so "no progress for SEND_TIMEOUT" is measured from the first blocked write after the last one
/// that moved bytes. An answer that fits in the kernel's send buffer (every answer to a client that reads)
/// costs one flag store per write; the timer is made only for a connection that once had to wait, and reset
/// after that.
struct SendDeadline {
    io: TokioIo<TcpStream>,
    timeout: Duration,
    /// Made at the first blocked write, kept for later ones.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is blocked and the timer runs for it.
    armed: bool,
}

impl SendDeadline {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        Self {
            io: TokioIo::new(stream),
            timeout,
            timer: None,
            armed: false,
        }
    }

    /// A write went through (or failed): the deadline is off until a write blocks again.
    fn moved<T>(&mut self, done: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.armed = false;
        done
    }

    /// A write is blocked: the deadline starts now unless it already runs, and an expired one fails it.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        if !self.armed {
            self.armed = true;
            let deadline = Instant::now() + self.timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .timer
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if !expired {
            return Poll::Pending;
        }
        // A reset instead of a FIN queued behind data the client will never read: the kernel frees the
        // socket and its send buffer at once rather than probing a zero window for minutes.
        let _ = self.io.inner().set_zero_linger();
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, SendTimedOut)))
    }
}

impl hyper::rt::Read for SendDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for SendDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.blocked(cx),
            done => this.moved(done),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.blocked(cx),
            done => this.moved(done),
        }
    }

    fn is_write_vectored(&self) -> bool {
        hyper::rt::Write::is_write_vectored(&self.io)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The error a write fails with once SEND_TIMEOUT has passed without progress.
#[derive(Debug, thiserror::Error)]
#[error("the answer made no progress for SEND_TIMEOUT")]
struct SendTimedOut;

impl SendTimedOut {
    /// Whether `e` ended a connection because of SEND_TIMEOUT.
    fn caused(e: &hyper::Error) -> bool {
        std::error::Error::source(e)
            .and_then(|source| source.downcast_ref::<io::Error>())
            .and_then(io::Error::get_ref)
            .is_some_and(|inner| inner.is::<SendTimedOut>())
    }
}

/// One worker's drain signal as its connections see it: a flag each connection reads when it is polled, and
/// the wakers of the open connections, woken once when the flag is raised so idle keep-alive connections
/// close too. tokio's `watch` channel, polled beside every connection on every wake, cost 460 instructions
/// per validation (callgrind, docs/benchmarks.md); this is one atomic load per poll.
#[derive(Default)]
struct Drain {
    raised: AtomicBool,
    /// The open connections' wakers, by the id each connection was given when it first registered.
    wakers: Mutex<HashMap<u64, Waker>>,
    next_id: AtomicU64,
}

impl Drain {
    fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.lock());
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    fn is_raised(&self) -> bool {
        self.raised.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waker>> {
        // Every change is one insert or remove: a panic cannot leave the map inconsistent.
        self.wakers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A connection as the worker serves it.
type Served = hyper::server::conn::http1::Connection<SendDeadline, Envelope>;

/// A served connection that starts hyper's graceful shutdown once its worker drains.
struct Draining {
    connection: Pin<Box<Served>>,
    drain: Arc<Drain>,
    /// The id and waker this connection registered with the drain.
    registered: Option<(u64, Waker)>,
    shutting_down: bool,
}

impl Future for Draining {
    type Output = <Served as Future>::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if !this.shutting_down {
            // Registered before the flag is read, so a drain raised in between still wakes this task.
            let stale = this
                .registered
                .as_ref()
                .is_none_or(|(_, waker)| !waker.will_wake(cx.waker()));
            if stale {
                let id = match &this.registered {
                    Some((id, _)) => *id,
                    None => this.drain.next_id.fetch_add(1, Ordering::Relaxed),
                };
                this.drain.lock().insert(id, cx.waker().clone());
                this.registered = Some((id, cx.waker().clone()));
            }
            if this.drain.is_raised() {
                this.connection.as_mut().graceful_shutdown();
                this.shutting_down = true;
            }
        }
        this.connection.as_mut().poll(cx)
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if let Some((id, _)) = self.registered.take() {
            self.drain.lock().remove(&id);
        }
    }
}
