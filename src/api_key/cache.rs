//! The RiskShield API key read from Azure Key Vault in the background, cached and refreshed.
//!
//! The secret is read by a background task from startup on, so the server listens at once and requests never
//! wait for the vault: [`VaultKeySource::current`] answers from the cache. The task re-reads every
//! SECRET_CACHE_TTL; a failed read keeps the last good key and is retried with backoff (1 s doubling, capped at
//! min(30 s, TTL)), so an unreachable vault never crash-loops the process. When the upstream refuses the
//! cached key, [`VaultKeySource::refresh_after_rejection`] forces one re-read; reads are serialised and a
//! forced read that finds a newer read already done reuses it, so a burst of 401s costs one vault call.
//!
//! Every read goes through [`VaultAccess`] (the SDK side, shared with `diagnose`), is bounded by
//! [`READ_TIMEOUT`] whatever the SDK's retry policy would do, and is logged with the vault host, secret name,
//! outcome and duration, never the value.

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;
use tokio::time::Instant;

use super::vault::{AccessError, READ_TIMEOUT, ReadError, VaultAccess};
use crate::domain::ApiKey;
use crate::outbound::{HttpClient, retry_delay};
use crate::telemetry::logging::millis;
use crate::telemetry::metrics::Metrics;

/// Why a read happens, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reason {
    Startup,
    Retry,
    Refresh,
    Rejected,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::Retry => "retry",
            Reason::Refresh => "ttl",
            Reason::Rejected => "upstream_rejected_key",
        }
    }
}

/// One read of the secret. A seam so the cache, backoff and single-flight logic can be tested without Azure.
#[async_trait]
trait FetchSecret: Send + Sync + fmt::Debug {
    async fn fetch(&self) -> Result<ApiKey, ReadError>;
}

/// The real reader: the process's one SecretClient.
struct SdkFetch {
    access: VaultAccess,
    secret_name: String,
}

impl fmt::Debug for SdkFetch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkFetch")
            .field("secret_name", &self.secret_name)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl FetchSecret for SdkFetch {
    async fn fetch(&self) -> Result<ApiKey, ReadError> {
        self.access
            .read(&self.secret_name)
            .await
            .map(|(key, _)| key)
    }
}

/// The key last read and when.
#[derive(Debug)]
struct Cached {
    key: ApiKey,
    read_at: Instant,
}

/// Reads numbered in start order. Reads never overlap, so when a read finishes every read started so far
/// has ended (a cancelled one simply never counts as completed until the next read finishes).
#[derive(Debug, Default)]
struct ReadCounter {
    started: u64,
    completed: u64,
    /// The read in flight was forced by a rejected key, so callers rejected meanwhile can share it.
    forced_in_flight: bool,
}

/// Reads the API key from Azure Key Vault in the background and serves it from a cache.
pub struct VaultKeySource {
    vault_host: String,
    secret_name: String,
    fetch: Box<dyn FetchSecret>,
    metrics: Arc<Metrics>,
    cache: Mutex<Option<Cached>>,
    /// Held while a read is in flight, so reads never overlap.
    read_lock: tokio::sync::Mutex<()>,
    /// Which reads have started and finished; lets forced reads share one vault call.
    reads: Mutex<ReadCounter>,
    /// Signalled after every read, so unit tests wait for a read instead of guessing when it is done.
    #[cfg(test)]
    read_done: tokio::sync::Notify,
    /// Dropped with the source, which tells the refresh task to stop.
    _stop: watch::Sender<()>,
}

impl fmt::Debug for VaultKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKeySource")
            .field("vault_host", &self.vault_host)
            .field("secret_name", &self.secret_name)
            .field("has_key", &self.current().is_some())
            .finish_non_exhaustive()
    }
}

impl VaultKeySource {
    /// Builds the credential (from the process environment) and the process's one SecretClient on the shared
    /// outbound client, then starts the background reads. Must be called inside the tokio runtime.
    ///
    /// Fails only on setup problems (an unusable vault URL, identity variables the SDK refuses); an
    /// unreachable vault is not an error here: the service starts and reports not-ready until a read works.
    pub fn start(
        vault_url: &str,
        secret_name: &str,
        ttl: Duration,
        http: &HttpClient,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, AccessError> {
        let access = VaultAccess::new(vault_url, http, |name| std::env::var(name).ok())?;
        tracing::info!(
            vault = %access.vault_host(),
            secret = secret_name,
            identity = access.identity().describe(),
            verify_challenge_resource = access.verify_challenge_resource(),
            ttl_ms = ttl.as_millis() as u64,
            "reading the API key from Key Vault"
        );
        let vault_host = access.vault_host().to_owned();
        let fetch = SdkFetch {
            access,
            secret_name: secret_name.to_owned(),
        };
        Ok(Self::spawn(
            vault_host,
            secret_name.to_owned(),
            Box::new(fetch),
            ttl,
            metrics,
        ))
    }

    /// Creates the source around `fetch` and starts its refresh task.
    fn spawn(
        vault_host: String,
        secret_name: String,
        fetch: Box<dyn FetchSecret>,
        ttl: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (stop_tx, stop_rx) = watch::channel(());
        let source = Arc::new(Self {
            vault_host,
            secret_name,
            fetch,
            metrics,
            cache: Mutex::new(None),
            read_lock: tokio::sync::Mutex::new(()),
            reads: Mutex::new(ReadCounter::default()),
            #[cfg(test)]
            read_done: tokio::sync::Notify::new(),
            _stop: stop_tx,
        });
        // Startup runs inside the runtime (`app::build`), so this cannot fail.
        tokio::spawn(refresh_loop(Arc::downgrade(&source), stop_rx, ttl));
        source
    }

    /// The cached key, if any read has succeeded. Never waits.
    pub fn current(&self) -> Option<ApiKey> {
        self.lock_cache().as_ref().map(|c| c.key.clone())
    }

    /// Time since the cached key was read, for the key-age metric.
    pub fn key_age(&self) -> Option<Duration> {
        self.lock_cache().as_ref().map(|c| c.read_at.elapsed())
    }

    /// Re-reads the secret after the upstream refused `rejected` and returns the key now cached, if it is a
    /// different one (`None`: nothing new to try).
    ///
    /// If the cache already holds another key, that key is returned without a read. A caller that arrives while
    /// a forced read is in flight shares its result; one that arrives during a scheduled read waits for it and
    /// then reads again only if the key is still the rejected one. So a burst of 401s costs one vault call.
    ///
    /// `correlation_id` is the request whose upstream call was refused; the read's log line carries it.
    pub async fn refresh_after_rejection(
        &self,
        rejected: &ApiKey,
        correlation_id: &str,
    ) -> Option<ApiKey> {
        if let Some(key) = self.replacement_for(rejected) {
            return Some(key);
        }
        // The number of the read whose result answers this caller.
        let wanted = {
            let reads = self.lock_reads();
            if reads.forced_in_flight {
                reads.started
            } else {
                reads.started + 1
            }
        };
        let _reading = self.read_lock.lock().await;
        let done = self.lock_reads().completed >= wanted;
        if !done && self.replacement_for(rejected).is_none() {
            // A failure is logged and counted inside; the caller then sees the old key and gives up.
            let _ = self
                .read_locked(Reason::Rejected, Some(correlation_id))
                .await;
        }
        self.replacement_for(rejected)
    }

    /// The cached key if it differs from `rejected`: the only key worth retrying with.
    fn replacement_for(&self, rejected: &ApiKey) -> Option<ApiKey> {
        self.current().filter(|key| key != rejected)
    }

    /// One serialised read, as the refresh task does it.
    async fn read_serialized(&self, reason: Reason) -> Result<(), ReadError> {
        let _reading = self.read_lock.lock().await;
        self.read_locked(reason, None).await
    }

    /// A read with its bookkeeping. Call with `read_lock` held.
    async fn read_locked(
        &self,
        reason: Reason,
        correlation_id: Option<&str>,
    ) -> Result<(), ReadError> {
        {
            let mut reads = self.lock_reads();
            reads.started += 1;
            reads.forced_in_flight = reason == Reason::Rejected;
        }
        let result = self.read(reason, correlation_id).await;
        let mut reads = self.lock_reads();
        reads.completed = reads.started;
        reads.forced_in_flight = false;
        #[cfg(test)]
        self.read_done.notify_waiters();
        result
    }

    /// Reads, bounded by [`READ_TIMEOUT`]; caches a good key; logs and counts the outcome. Call with
    /// `read_lock` held.
    async fn read(&self, reason: Reason, correlation_id: Option<&str>) -> Result<(), ReadError> {
        let started = Instant::now();
        let result = match tokio::time::timeout(READ_TIMEOUT, self.fetch.fetch()).await {
            Ok(result) => result,
            Err(_) => Err(ReadError::Timeout),
        };
        let elapsed = started.elapsed();
        let duration_ms = millis(elapsed);
        match result {
            Ok(key) => {
                let changed = self.current().is_some_and(|old| old != key);
                *self.lock_cache() = Some(Cached {
                    key,
                    read_at: Instant::now(),
                });
                self.metrics.vault_read("success", elapsed);
                tracing::info!(
                    vault = %self.vault_host,
                    secret = %self.secret_name,
                    reason = reason.as_str(),
                    correlation_id,
                    outcome = "success",
                    key_changed = changed,
                    duration_ms,
                    "key vault read"
                );
                Ok(())
            }
            Err(error) => {
                let outcome = error.outcome();
                self.metrics.vault_read(outcome, elapsed);
                // Same fields either way; only the level and what it means for requests differ.
                macro_rules! failed {
                    ($level:ident, $message:literal) => {
                        tracing::$level!(
                            vault = %self.vault_host,
                            secret = %self.secret_name,
                            reason = reason.as_str(),
                            correlation_id,
                            outcome,
                            duration_ms,
                            error = %error,
                            $message
                        )
                    };
                }
                if self.current().is_some() {
                    failed!(warn, "key vault read failed; still using the last key read");
                } else {
                    failed!(
                        error,
                        "key vault read failed; no API key yet, validations answer 503"
                    );
                }
                Err(error)
            }
        }
    }

    fn lock_reads(&self) -> std::sync::MutexGuard<'_, ReadCounter> {
        // Plain counters updated in one step each; a poisoned lock still holds usable values.
        self.reads.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        // The cache holds plain data that is replaced whole, so a poisoned lock still holds a consistent value.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads at startup, then every `ttl`, retrying failures with backoff. Holds the source only weakly and only
/// while reading, and stops when the source is dropped.
async fn refresh_loop(source: Weak<VaultKeySource>, mut stop: watch::Receiver<()>, ttl: Duration) {
    let mut reason = Reason::Startup;
    let mut failures = 0u32;
    loop {
        let Some(strong) = source.upgrade() else {
            return;
        };
        let wait = match strong.read_serialized(reason).await {
            Ok(()) => {
                failures = 0;
                reason = Reason::Refresh;
                ttl
            }
            Err(_) => {
                failures = failures.saturating_add(1);
                reason = Reason::Retry;
                retry_delay(failures, ttl)
            }
        };
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Only ever an error: the sender is never used, and is dropped with the source.
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Answers reads from a script; the last answer repeats. Counts calls, and signals each one.
    #[derive(Debug)]
    struct Script {
        answers: Mutex<VecDeque<Result<&'static str, ReadError>>>,
        calls: Arc<AtomicUsize>,
        called: Arc<tokio::sync::Notify>,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    }

    #[async_trait]
    impl FetchSecret for Script {
        async fn fetch(&self) -> Result<ApiKey, ReadError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.called.notify_waiters();
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            let mut answers = self.answers.lock().expect("not poisoned");
            let answer = if answers.len() > 1 {
                answers.pop_front().expect("non-empty")
            } else {
                answers.front().cloned().expect("non-empty")
            };
            answer.map(ApiKey::new)
        }
    }

    fn source(
        answers: Vec<Result<&'static str, ReadError>>,
        ttl: Duration,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    ) -> (Arc<VaultKeySource>, Arc<AtomicUsize>) {
        let (source, calls, _) = source_signalling(answers, ttl, gate);
        (source, calls)
    }

    /// [`source`], also returning the signal of each fetch call.
    fn source_signalling(
        answers: Vec<Result<&'static str, ReadError>>,
        ttl: Duration,
        gate: Option<Arc<tokio::sync::Semaphore>>,
    ) -> (
        Arc<VaultKeySource>,
        Arc<AtomicUsize>,
        Arc<tokio::sync::Notify>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let called = Arc::new(tokio::sync::Notify::new());
        let script = Script {
            answers: Mutex::new(answers.into()),
            calls: calls.clone(),
            called: called.clone(),
            gate,
        };
        let source = VaultKeySource::spawn(
            "vault.example".into(),
            "NAME".into(),
            Box::new(script),
            ttl,
            Arc::new(Metrics::new()),
        );
        (source, calls, called)
    }

    /// Waits until `n` reads have finished (cache updated, outcome logged), woken by each read's end. With the
    /// clock paused, the runtime moves time on to the refresh task's next timer whenever everything waits, so
    /// the time at which this returns is exactly when the read was made.
    async fn reads_done(source: &VaultKeySource, n: u64) {
        loop {
            let done = source.read_done.notified();
            if source.lock_reads().completed >= n {
                return;
            }
            done.await;
        }
    }

    /// Waits until `calls` has reached `n`, woken by each call.
    async fn calls_reach(calls: &AtomicUsize, called: &tokio::sync::Notify, n: usize) {
        loop {
            let signalled = called.notified();
            if calls.load(Ordering::SeqCst) >= n {
                return;
            }
            signalled.await;
        }
    }

    fn key_of(source: &VaultKeySource) -> Option<String> {
        source.current().map(|k| k.expose().to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn first_read_failures_back_off_then_the_key_arrives() {
        let (source, calls) = source(
            vec![
                Err(ReadError::Unreachable("down".into())),
                Err(ReadError::Unreachable("down".into())),
                Ok("k1"),
            ],
            Duration::from_secs(300),
            None,
        );
        let start = Instant::now();
        reads_done(&source, 1).await;
        assert_eq!(start.elapsed(), Duration::ZERO, "the first read is at once");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(source.current().is_none());
        reads_done(&source, 2).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(1),
            "first retry after 1 s"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(source.current().is_none());
        reads_done(&source, 3).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3),
            "second retry 2 s later"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(key_of(&source), Some("k1".into()));
        assert_eq!(source.key_age(), Some(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_refresh_keeps_the_last_key() {
        let ttl = Duration::from_secs(60);
        let (source, calls) = source(
            vec![
                Ok("k1"),
                Err(ReadError::Http {
                    status: 500,
                    message: "boom".into(),
                }),
            ],
            ttl,
            None,
        );
        let start = Instant::now();
        reads_done(&source, 1).await;
        assert_eq!(key_of(&source), Some("k1".into()));
        reads_done(&source, 2).await;
        assert_eq!(start.elapsed(), ttl, "re-read after the TTL");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(key_of(&source), Some("k1".into()));
        assert_eq!(source.key_age(), Some(ttl), "the key is as old as its read");
        // The failure is retried with backoff (1 s), not after another TTL.
        reads_done(&source, 3).await;
        assert_eq!(start.elapsed(), ttl + Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_re_read_returning_the_same_key_keeps_it_and_renews_its_age() {
        let ttl = Duration::from_secs(60);
        let (source, calls) = source(vec![Ok("k1")], ttl, None);
        reads_done(&source, 1).await;
        assert_eq!(key_of(&source), Some("k1".into()));
        reads_done(&source, 2).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(key_of(&source), Some("k1".into()));
        assert_eq!(
            source.key_age(),
            Some(Duration::ZERO),
            "read again just now"
        );
        // The next read is a whole TTL after this one.
        let reread = Instant::now();
        reads_done(&source, 3).await;
        assert_eq!(reread.elapsed(), ttl);
        // A rejection of that same key reads once more and finds nothing new to try.
        let key = source
            .refresh_after_rejection(&ApiKey::new("k1"), "test")
            .await;
        assert!(key.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        assert_eq!(key_of(&source), Some("k1".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_forced_reads_share_one_call() {
        let gate = Arc::new(tokio::sync::Semaphore::new(1));
        let (source, calls, called) = source_signalling(
            vec![Ok("old"), Ok("new")],
            Duration::from_secs(300),
            Some(gate.clone()),
        );
        reads_done(&source, 1).await;
        assert_eq!(key_of(&source), Some("old".into()));
        let rejected = ApiKey::new("old");
        let mut waiting = tokio::task::JoinSet::new();
        let entered = Arc::new(AtomicUsize::new(0));
        let all_entered = Arc::new(tokio::sync::Notify::new());
        for _ in 0..5 {
            let source = source.clone();
            let rejected = rejected.clone();
            let (entered, all_entered) = (entered.clone(), all_entered.clone());
            waiting.spawn(async move {
                // Counted in the same poll that runs the call up to its first wait (the read lock, or the
                // gate for the one that reads), with nothing in between that could yield.
                if entered.fetch_add(1, Ordering::SeqCst) + 1 == 5 {
                    all_entered.notify_one();
                }
                source.refresh_after_rejection(&rejected, "test").await
            });
        }
        // The test runtime has one thread: once the fifth task has been polled, all five are waiting.
        all_entered.notified().await;
        calls_reach(&calls, &called, 2).await;
        // One forced read is in flight, blocked on the gate; the other four wait for it.
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        gate.add_permits(1);
        while let Some(result) = waiting.join_next().await {
            let key = result.expect("task ran");
            assert_eq!(key.map(|k| k.expose().to_owned()), Some("new".into()));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_rejection_of_an_already_replaced_key_reads_nothing() {
        let (source, calls) = source(vec![Ok("current")], Duration::from_secs(300), None);
        reads_done(&source, 1).await;
        let key = source
            .refresh_after_rejection(&ApiKey::new("older"), "test")
            .await;
        assert_eq!(key.map(|k| k.expose().to_owned()), Some("current".into()));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_refresh_task_stops_when_the_source_is_dropped() {
        let (source, calls) = source(vec![Ok("k")], Duration::from_secs(1), None);
        reads_done(&source, 1).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let weak = Arc::downgrade(&source);
        drop(source);
        // The task holds the source only while reading, so dropping the last handle frees it at once.
        assert!(weak.upgrade().is_none());
        // Ten TTLs of paused time: every timer due in them fires, and each woken task runs before the clock
        // moves on, so a task still running would have read again by the end.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "read after the source was dropped"
        );
    }
}
