//! The Azure SDK's transport on the project's own hyper + rustls client.
//!
//! Without a transport of its own the SDK would need its reqwest feature: a second HTTP and TLS stack that reads
//! /etc/ssl (absent in the container image) and ignores EXTRA_CA_CERTS. Implementing azure_core's `HttpClient`
//! on [`outbound::HttpClient`](crate::outbound::HttpClient) gives the Key Vault client and the identity
//! credentials the same trust roots, crypto provider and connection pool as the RiskShield client, and, like
//! it, no proxy variable is consulted.
//!
//! The SDK's defaults allow eight retries within a minute and no per-attempt timeout, so
//! [`client_options`] also bounds both: each attempt has a deadline here, and retries are few and short.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::async_runtime::{
    AbortableTask, AsyncRuntime, SpawnedTask, TaskFuture, set_async_runtime,
};
use azure_core::error::{Error, ErrorKind};
use azure_core::http::headers::{HeaderName, HeaderValue, Headers};
use azure_core::http::request::{Body, Request};
use azure_core::http::{
    AsyncRawResponse, ClientOptions, ExponentialRetryOptions, RetryOptions, StatusCode, Transport,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use crate::outbound::{HttpClient, error_text};

/// Deadline for one HTTP exchange with the vault or the identity endpoint, body included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(4);

/// Retries the SDK may make after a failed attempt (transport errors, 408, 429, 5xx).
const MAX_RETRIES: u32 = 2;

/// Vault and token answers are small JSON documents; anything larger is refused instead of buffered.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;

/// azure_core's `HttpClient` on the shared outbound client.
#[derive(Debug, Clone)]
pub struct HyperTransport {
    client: HttpClient,
    attempt_timeout: Duration,
}

impl HyperTransport {
    /// Wraps the shared client; every exchange is cut off after `attempt_timeout`.
    pub fn new(client: HttpClient, attempt_timeout: Duration) -> Self {
        Self {
            client,
            attempt_timeout,
        }
    }

    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> azure_core::Result<AsyncRawResponse> {
        let host = request.uri().host().unwrap_or_default().to_owned();
        let response = self.client.request(request).await.map_err(|e| {
            // The SDK retries Connection and Io errors; other kinds end the read at once.
            let kind = if e.is_connect() {
                ErrorKind::Connection
            } else {
                ErrorKind::Io
            };
            // The SDK logs only this message, so it carries the causes (refused, TLS, DNS) too.
            let message = format!("request to {host} failed: {}", error_text(&e));
            Error::with_error(kind, e, message)
        })?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| Error::with_message(ErrorKind::Io, format!("reading the answer: {e}")))?
            .to_bytes();
        let mut headers = Headers::new();
        for (name, value) in &parts.headers {
            // Azure's headers are ASCII; a header that is not cannot matter to the SDK.
            if let Ok(value) = value.to_str() {
                headers.insert(
                    HeaderName::from(name.as_str().to_owned()),
                    HeaderValue::from(value.to_owned()),
                );
            }
        }
        Ok(AsyncRawResponse::from_bytes(
            StatusCode::from(parts.status.as_u16()),
            headers,
            body,
        ))
    }
}

#[async_trait]
impl azure_core::http::HttpClient for HyperTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let body = match request.body() {
            Body::Bytes(bytes) => bytes.clone(),
            // Secret reads and token requests carry small in-memory bodies; streams are never produced here.
            Body::SeekableStream(_) => {
                return Err(Error::with_message(
                    ErrorKind::Other,
                    "streamed request bodies are not supported by this transport",
                ));
            }
        };
        let mut builder = http::Request::builder()
            .method(request.method().as_str())
            .uri(request.url().as_str());
        for (name, value) in request.headers().iter() {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let outgoing = builder
            .body(Full::new(body))
            .map_err(|e| Error::with_error(ErrorKind::Other, e, "invalid request"))?;
        match tokio::time::timeout(self.attempt_timeout, self.exchange(outgoing)).await {
            Ok(result) => result,
            // Io, so the SDK's retry policy treats a stalled attempt like a dropped connection.
            Err(_) => Err(Error::with_message(
                ErrorKind::Io,
                format!(
                    "no complete answer within {} ms",
                    self.attempt_timeout.as_millis()
                ),
            )),
        }
    }
}

/// Client options for every SDK client in the process: our transport and a short retry budget
/// (0.25 s then 0.5 s between attempts, nothing after 3 s).
pub fn client_options(client: &HttpClient) -> ClientOptions {
    install_runtime();
    ClientOptions {
        transport: Some(Transport::new(Arc::new(HyperTransport::new(
            client.clone(),
            ATTEMPT_TIMEOUT,
        )))),
        retry: RetryOptions::exponential(ExponentialRetryOptions {
            initial_delay: azure_core::time::Duration::milliseconds(250),
            max_retries: MAX_RETRIES,
            max_total_elapsed: azure_core::time::Duration::seconds(3),
            max_delay: azure_core::time::Duration::seconds(1),
        }),
        ..ClientOptions::default()
    }
}

/// The SDK's sleeps (between retries) and spawns run on the caller's tokio runtime.
///
/// The SDK's own tokio support is not enabled: it turns on tokio's multi-threaded scheduler, which the binary
/// never runs (one single-threaded runtime per worker), and that scheduler weighs about 74 KB of the static
/// binary (docs/container.md, size table). Without a runtime of ours the SDK would fall back to a thread per
/// sleep, and `tokio::time::pause` in the tests would not reach its retry delays.
struct TokioRuntime;

/// The SDK's handle on a task spawned with [`TokioRuntime`].
struct Spawned(tokio::task::JoinHandle<()>);

impl std::future::Future for Spawned {
    type Output = Result<(), Box<dyn std::error::Error + Send>>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|done| done.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send>))
    }
}

impl AbortableTask for Spawned {
    fn abort(&self) {
        self.0.abort();
    }
}

impl AsyncRuntime for TokioRuntime {
    fn spawn(&self, f: TaskFuture) -> SpawnedTask {
        Box::pin(Spawned(tokio::spawn(f)))
    }

    fn sleep(&self, duration: azure_core::time::Duration) -> TaskFuture {
        // A negative duration (never asked for by the SDK's retry policy) is no wait at all.
        let duration = Duration::try_from(duration).unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep(duration))
    }

    fn yield_now(&self) -> TaskFuture {
        Box::pin(tokio::task::yield_now())
    }
}

/// Makes [`TokioRuntime`] the SDK's runtime, once per process (later calls find it set and change nothing).
fn install_runtime() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // Fails only when a runtime is already set, which is then this same one.
        let _ = set_async_runtime(Arc::new(TokioRuntime));
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use azure_core::async_runtime::get_async_runtime;
    use azure_core::http::{HttpClient as _, Method, Url};

    #[tokio::test(start_paused = true)]
    async fn the_sdk_sleeps_and_spawns_on_tokio() {
        install_runtime();
        let runtime = get_async_runtime();
        // With time paused, the hour passes at once on tokio's timer; a sleep anywhere else would still be
        // pending when the (also paused) two-hour timeout fires.
        let slept = tokio::time::timeout(
            Duration::from_secs(7200),
            runtime.sleep(azure_core::time::Duration::hours(1)),
        )
        .await;
        assert!(slept.is_ok(), "the SDK's sleep is not on tokio's timer");
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = runtime.spawn(Box::pin(async move {
            let _ = tx.send(tokio::task::try_id().is_some());
        }));
        assert!(task.await.is_ok());
        assert_eq!(rx.await.ok(), Some(true), "the task ran as a tokio task");
    }

    fn client() -> HttpClient {
        crate::outbound::build_client(&[], Duration::from_secs(2)).expect("client")
    }

    #[tokio::test]
    async fn a_stalled_answer_ends_as_a_retryable_io_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepts and holds the connection without ever answering.
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            std::future::pending::<()>().await;
            drop(stream);
        });
        let transport = HyperTransport::new(client(), Duration::from_millis(200));
        let url = Url::parse(&format!("http://{addr}/token")).expect("url");
        let error = transport
            .execute_request(&Request::new(url, Method::Get))
            .await
            .expect_err("no answer");
        assert!(matches!(error.kind(), ErrorKind::Io), "{error:?}");
        server.abort();
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connection_error_naming_the_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let transport = HyperTransport::new(client(), ATTEMPT_TIMEOUT);
        let url = Url::parse(&format!("http://{addr}/token")).expect("url");
        let error = transport
            .execute_request(&Request::new(url, Method::Get))
            .await
            .expect_err("refused");
        assert!(matches!(error.kind(), ErrorKind::Connection), "{error:?}");
        assert!(error.to_string().contains("127.0.0.1"), "{error}");
    }
}
