//! Log setup: JSON lines on stdout (one object per line) or human-readable text.
//!
//! Two things exist for speed, because a log line is written for every request and every upstream attempt,
//! and the benchmark showed the stock path cost about as much CPU as the request itself:
//! - [`JsonLines`] (in [`super::jsonline`]) formats an event straight into the output buffer;
//! - [`BatchedStdout`] collects lines in memory and a background thread writes them in batches every
//!   [`FLUSH_INTERVAL`] (or at once when the batch is large), so a request does not pay a `write(2)` per line.
//!   The [`LogGuard`] returned by [`init`] flushes whatever is left when the process ends normally.
//!
//! What is logged is decided at the call sites, which never pass the API key, a full ID number or a name.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry;
use tracing_subscriber::util::SubscriberInitExt;

use super::jsonline::JsonLines;
use crate::config::LogFormat;

/// How long a line may wait in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// A batch this large is written at once by the thread that filled it.
const FLUSH_BYTES: usize = 64 * 1024;

/// Installs the global subscriber. Later calls are ignored (tests start many servers); each returns a guard
/// that flushes the buffered lines when dropped.
///
/// Other crates (the Azure SDK, hyper, rustls) log at WARN and above unless LOG_LEVEL is DEBUG or TRACE: their
/// INFO lines (every SDK request and response) would drown the service's own and are only useful when debugging.
pub fn init(level: tracing::Level, format: LogFormat) -> LogGuard {
    let out = BatchedStdout::start();
    let others = if level >= tracing::Level::DEBUG {
        level
    } else {
        level.min(tracing::Level::WARN)
    };
    let filter = Targets::new()
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_default(others);
    let layer = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_writer(out.clone());
    let _ = match format {
        LogFormat::Json => registry()
            .with(layer.event_format(JsonLines))
            .with(filter)
            .try_init(),
        LogFormat::Pretty => registry()
            .with(layer.with_ansi(false))
            .with(filter)
            .try_init(),
    };
    LogGuard { out }
}

/// Flushes buffered log lines when dropped; keep it alive for the life of the process.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    out: BatchedStdout,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.out.shared.stopped.store(true, Ordering::Relaxed);
        self.out.flush_now();
    }
}

#[derive(Debug, Default)]
struct Shared {
    buffer: Mutex<Vec<u8>>,
    stopped: AtomicBool,
}

/// Standard output, written in batches by a background thread.
#[derive(Debug, Clone)]
pub struct BatchedStdout {
    shared: Arc<Shared>,
}

impl BatchedStdout {
    fn start() -> Self {
        let out = Self {
            shared: Arc::new(Shared::default()),
        };
        let flusher = out.clone();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                while !flusher.shared.stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(FLUSH_INTERVAL);
                    flusher.flush_now();
                }
            });
        if spawned.is_err() {
            // Without the thread every line is written at once (see `write`): slower, never lost.
            out.shared.stopped.store(true, Ordering::Relaxed);
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while appending bytes leaves a valid (if partial) buffer; keep logging.
        self.shared.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the pending lines out of the lock, then writes them; errors (a closed stdout) are ignored.
    fn flush_now(&self) {
        let batch = std::mem::take(&mut *self.lock());
        if !batch.is_empty() {
            let mut stdout = io::stdout().lock();
            let _ = stdout.write_all(&batch);
            let _ = stdout.flush();
        }
    }
}

impl Write for BatchedStdout {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let full = {
            let mut buffer = self.lock();
            buffer.extend_from_slice(line);
            buffer.len() >= FLUSH_BYTES
        };
        if full || self.shared.stopped.load(Ordering::Relaxed) {
            self.flush_now();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchedStdout {
    type Writer = BatchedStdout;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_become_one_json_object_per_line() {
        let out = BatchedStdout {
            shared: Arc::new(Shared::default()),
        };
        let capture = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(out)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(status = 200u16, duration_ms = 1.5, path = %"/a\"b", ok = true, delta = -3i64, "request");
            tracing::warn!("second");
        });
        let text = String::from_utf8(capture.lock().clone()).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"], "request");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["duration_ms"], 1.5);
        assert_eq!(lines[0]["path"], "/a\"b");
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["delta"], -3);
        assert_eq!(lines[1]["level"], "WARN");
        assert!(
            lines[0]["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }
}
