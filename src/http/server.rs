//! The accept loop: per-connection limits, keep-alive, header-read timeout, and bounded graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower_layer::Layer;

use super::envelope::{Envelope, Router, cors_layer};
use super::state::AppState;

/// The accept loop over already-built state.
pub async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    if let Some(limiter) = &state.limiter {
        limiter.spawn_sweeper();
    }
    let cors = cors_layer(&state.config.cors_origins);
    let limit = Arc::new(Semaphore::new(state.config.max_connections));
    let (drain_tx, drain_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .keep_alive(true);
    tracing::info!(
        address = %local,
        environment = %state.config.environment,
        mode = if state.config.demo_mode { "demo" } else { "riskshield" },
        version = env!("CARGO_PKG_VERSION"),
        "listening"
    );

    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        // Waiting for a free slot before accepting leaves excess clients in the kernel's backlog.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually EMFILE or a connection reset before accept: back off briefly, never crash.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = Envelope {
            state: state.clone(),
            inner: cors.layer(Router {
                state: state.clone(),
            }),
            peer,
        };
        let connection = http1.serve_connection(TokioIo::new(stream), service);
        let mut drain = drain_rx.clone();
        connections.spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = drain.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }

    state.draining.store(true, Ordering::Relaxed);
    drop(listener);
    let _ = drain_tx.send(());
    let in_flight = connections.len();
    let grace = state.config.shutdown_grace;
    tracing::info!(
        connections = in_flight,
        grace_ms = grace.as_millis() as u64,
        "shutting down, draining"
    );
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained, exiting"),
        Err(_) => {
            let remaining = connections.len();
            connections.abort_all();
            tracing::warn!(
                remaining,
                "shutdown grace period over; closed remaining connections"
            );
        }
    }
    Ok(())
}
