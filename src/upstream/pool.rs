//! A per-worker pool of HTTP/1 connections to RiskShield, on hyper's low-level `client::conn::http1`.
//!
//! Each serving thread owns one [`Pool`]: the connections it holds were opened, and are driven, by that
//! thread's runtime, so a request and its upstream exchange never change threads. hyper-util's pooled client
//! instead hands every request to a per-connection dispatcher task through channels and a process-wide mutex,
//! which on a multi-threaded runtime often means a hop to another thread (measured in docs/benchmarks.md).
//!
//! Ready connections are reused last-in first-out, so a light load keeps reusing a few warm connections and the
//! rest age out. A connection goes back into the pool only after its answer was read completely; anything
//! else (an error, a timeout that dropped the exchange, an oversized body) closes it.

use std::error::Error as StdError;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::{self, SendRequest};
use tokio::time::Instant;
use tower_service::Service;

use crate::outbound::Connector;

/// Idle connections kept per pool; more are closed when they come back.
const MAX_IDLE: usize = 256;

/// An idle connection older than this is closed instead of reused (servers drop idle keep-alives too).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

type BoxError = Box<dyn StdError + Send + Sync>;

/// Why an exchange failed before an answer's head arrived.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect failed: {0}")]
    Connect(BoxError),
    #[error("HTTP exchange failed: {0}")]
    Http(#[from] hyper::Error),
}

/// An answer: its head and its body, read up to a limit (an error when it was longer or broke off).
pub type Answer = (response::Parts, Result<Bytes, BoxError>);

struct Idle {
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// One worker's connections to one upstream origin.
pub struct Pool {
    connector: Connector,
    /// scheme://authority of the upstream, what the connector connects to.
    origin: Uri,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("origin", &self.origin)
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl Pool {
    /// An empty pool for `origin` (scheme and authority; a path is ignored).
    pub fn new(connector: Connector, origin: Uri) -> Self {
        Self {
            connector,
            origin,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Connections currently idle in the pool.
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    /// Sends `request` (origin-form URI, Host set by the caller) and reads the answer's body up to
    /// `max_body` bytes. A request a reused connection could not even start is sent once more on a new
    /// connection: the server may have closed an idle connection just as it was taken.
    pub async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        max_body: usize,
    ) -> Result<Answer, PoolError> {
        // The connect path (TCP, TLS, handshake) is rare once connections are pooled. Boxed, its state no
        // longer sits inside every exchange: this future went from 4,056 to 1,664 bytes, and every future
        // that holds it (up to the whole request's) shrinks by as much and is cheaper to move.
        let (mut sender, reused) = match self.checkout().await {
            Some(sender) => (sender, true),
            None => (Box::pin(self.connect()).await?, false),
        };
        let response = match sender.try_send_request(request).await {
            Ok(response) => response,
            Err(mut failed) => match failed.take_message() {
                Some(request) if reused => {
                    sender = Box::pin(self.connect()).await?;
                    sender.send_request(request).await?
                }
                _ => return Err(failed.into_error().into()),
            },
        };
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, max_body)
            .collect()
            .await
            .map(|collected| collected.to_bytes());
        if body.is_ok() {
            self.checkin(sender);
        }
        Ok((parts, body))
    }

    /// The most recently used live connection, if any. Closed and expired connections are dropped on the way.
    async fn checkout(&self) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let idle = self.lock().pop()?;
            if idle.sender.is_closed() || idle.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            let mut sender = idle.sender;
            // A connection whose last answer was just read may not have told its sender it is ready again;
            // its task runs on this thread, so the wait is one turn of the scheduler.
            if sender.is_ready() || sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    fn checkin(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() >= MAX_IDLE {
            // The oldest connection is the least likely to be wanted again.
            idle.remove(0);
        }
        idle.push(Idle {
            sender,
            since: Instant::now(),
        });
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, PoolError> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (sender, connection) = http1::handshake(io).await?;
        // Spawned on the current runtime: with thread-per-core serving, the worker's own thread.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // Only ever locked by the pool's own worker thread: uncontended. A panic cannot leave the list
        // inconsistent (every change is one push, pop or remove), so a poisoned lock is used as is.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}
