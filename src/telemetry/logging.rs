//! Log setup: JSON lines on stdout (one object per line) or human-readable text.
//!
//! Two things exist for speed, because a log line is written for every request and every upstream attempt,
//! and the benchmark showed the stock path cost about as much CPU as the request itself:
//! - [`JsonLines`] (in [`super::jsonline`]) formats an event straight into the output buffer;
//! - [`BatchedStdout`] collects lines in memory and one background thread writes them in batches every
//!   [`FLUSH_INTERVAL`] (sooner when a batch is large), so a request does not pay a `write(2)` per line.
//!
//! Writing logs never blocks request handling: only the writer thread touches stdout, so a slow or stuck
//! stdout (a full pipe, a paused log collector) stalls that thread alone. Pending lines are bounded by
//! [`MAX_PENDING_BYTES`]; past that, lines are dropped and counted ([`lines_dropped`], exported in /metrics),
//! and once a write succeeds again one warning line says how many were lost. A batch that stdout refused
//! counts as dropped lines too, and its count waits for the next successful write. Lines that are written keep
//! their order, since one thread writes them. The [`LogGuard`] returned by [`init`] flushes whatever is left
//! when the process ends normally.
//!
//! What is logged is decided at the call sites, which never pass the API key, a full ID number or a name.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
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

/// A batch this large wakes the writer at once.
const FLUSH_BYTES: usize = 64 * 1024;

/// Lines waiting to be written, at most (about 20,000 request lines). Past this, new lines are dropped.
pub const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// How long the process waits at exit for the last lines to be written to a stuck stdout.
const EXIT_FLUSH_WAIT: Duration = Duration::from_secs(1);

thread_local! {
    /// Set on the writer thread while it reports dropped lines: that one line may exceed the bound, or the
    /// report could itself be dropped.
    static REPORTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lines dropped since the process started, because stdout could not keep up.
static LINES_DROPPED: AtomicU64 = AtomicU64::new(0);

/// Log lines dropped so far because stdout could not keep up (the `log_lines_dropped_total` metric).
pub fn lines_dropped() -> u64 {
    LINES_DROPPED.load(Ordering::Relaxed)
}

/// Longest path a request log line carries; a huge URL cannot bloat the logs.
const MAX_LOGGED_PATH: usize = 200;

/// A duration as a log line's `duration_ms`: milliseconds, with their fraction.
pub fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A request path as logged: cut to [`MAX_LOGGED_PATH`] bytes on a character boundary, and every run of six
/// or more digits masked with `*`, so an ID number a client put in a URL never reaches the logs. Digits
/// written as percent-escapes (`%30`–`%39`) count as digits, and a run cut by the length limit is still
/// masked. Borrows the path when there is nothing to mask (the usual case).
pub fn loggable_path(path: &str) -> Cow<'_, str> {
    let mut end = path.len().min(MAX_LOGGED_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    let path = &path[..end];
    let bytes = path.as_bytes();
    // Each digit's byte range: one byte, or three for a percent-escaped digit.
    let digit_at = |i: usize| -> Option<usize> {
        match bytes.get(i)? {
            b'0'..=b'9' => Some(1),
            b'%' if bytes.get(i + 1) == Some(&b'3')
                && bytes.get(i + 2).is_some_and(u8::is_ascii_digit) =>
            {
                Some(3)
            }
            _ => None,
        }
    };
    let mut masked: Option<Vec<u8>> = None;
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let mut digits = 0;
        while let Some(width) = digit_at(i) {
            digits += 1;
            i += width;
        }
        if digits >= 6 {
            let out = masked.get_or_insert_with(|| bytes.to_vec());
            out[start..i].fill(b'*');
        }
        if digits == 0 {
            i += 1;
        }
    }
    match masked {
        // Only ASCII bytes were replaced by ASCII, so the text is still UTF-8.
        Some(out) => Cow::Owned(String::from_utf8(out).unwrap_or_default()),
        None => Cow::Borrowed(path),
    }
}

/// Installs the global subscriber. Later calls are ignored (tests start many servers); each returns a guard
/// that flushes the buffered lines when dropped.
///
/// Other crates (the Azure SDK, hyper, rustls) log at WARN and above unless LOG_LEVEL is DEBUG or TRACE: their
/// INFO lines (every SDK request and response) would drown the service's own and are only useful when debugging.
pub fn init(level: tracing::Level, format: LogFormat) -> LogGuard {
    let (out, guard) = BatchedStdout::start(Box::new(io::stdout()), MAX_PENDING_BYTES);
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
        .with_writer(out);
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
    guard
}

/// Stops the writer and flushes buffered log lines when dropped; keep it alive for the life of the process.
#[must_use = "dropping the guard stops the log writer"]
#[derive(Debug)]
pub struct LogGuard {
    shared: Arc<Shared>,
    /// Receives once the writer thread has written its last batch and ended.
    done: Option<mpsc::Receiver<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Release);
        self.shared.wake.notify_one();
        if let Some(done) = self.done.take() {
            // Bounded: a stuck stdout must not keep the process from exiting.
            let _ = done.recv_timeout(EXIT_FLUSH_WAIT);
        }
    }
}

#[derive(Debug, Default)]
struct Pending {
    lines: Vec<u8>,
    /// Lines dropped and not yet reported by a warning line that was written.
    dropped: u64,
    /// The count carried by warning lines still in `lines`: if their batch fails to be written, it goes back
    /// into `dropped`, so a count is never lost with the line that reported it.
    reported: u64,
}

#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    stopped: AtomicBool,
    max_pending: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while appending bytes leaves a valid (if partial) buffer; keep logging.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The log sink handed to the subscriber: appends to the bounded in-memory batch, never writes itself.
#[derive(Debug, Clone)]
pub struct BatchedStdout {
    shared: Arc<Shared>,
}

impl BatchedStdout {
    /// Starts the writer thread on `sink` (stdout in the service). Without a thread (the system refused one)
    /// lines are buffered up to the bound and written by the guard at exit.
    fn start(sink: Box<dyn Write + Send>, max_pending: usize) -> (Self, LogGuard) {
        Self::start_reporting(sink, max_pending, report_dropped)
    }

    /// [`start`](Self::start) with the function that reports dropped lines (tests capture it).
    fn start_reporting(
        sink: Box<dyn Write + Send>,
        max_pending: usize,
        report: impl Fn(u64) + Send + 'static,
    ) -> (Self, LogGuard) {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            stopped: AtomicBool::new(false),
            max_pending,
        });
        let (done_tx, done_rx) = mpsc::channel();
        let writer = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                write_batches(&writer, sink, report);
                let _ = done_tx.send(());
            });
        let guard = LogGuard {
            shared: shared.clone(),
            done: spawned.ok().map(|_| done_rx),
        };
        (Self { shared }, guard)
    }
}

/// The writer thread: waits for lines (at most [`FLUSH_INTERVAL`], or until a batch is large), writes them
/// in one go, then reports any lines dropped meanwhile. Ends after the last batch once stopped.
///
/// A batch that cannot be written (a closed or failing stdout) is lost: its lines count as dropped, and the
/// count waits, with any count a lost warning line carried, until a later batch is written.
fn write_batches(shared: &Shared, mut sink: Box<dyn Write + Send>, report: impl Fn(u64)) {
    loop {
        let (batch, reported) = {
            let mut pending = shared.lock();
            if pending.lines.len() < FLUSH_BYTES && !shared.stopped.load(Ordering::Acquire) {
                pending = shared
                    .wake
                    .wait_timeout(pending, FLUSH_INTERVAL)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            (
                std::mem::take(&mut pending.lines),
                std::mem::take(&mut pending.reported),
            )
        };
        let stopping = shared.stopped.load(Ordering::Acquire);
        if !batch.is_empty() {
            let dropped = {
                let failed = write_batch(&mut *sink, &batch);
                let mut pending = shared.lock();
                match failed {
                    None => std::mem::take(&mut pending.dropped),
                    Some(lost) => {
                        LINES_DROPPED.fetch_add(lost, Ordering::Relaxed);
                        pending.dropped += lost + reported;
                        0
                    }
                }
            };
            if dropped > 0 {
                REPORTING.with(|r| r.set(true));
                report(dropped);
                REPORTING.with(|r| r.set(false));
                shared.lock().reported += dropped;
            }
        }
        if stopping && shared.lock().lines.is_empty() {
            return;
        }
    }
}

/// Writes `batch` to `sink`. On an error, `Some` with how many of its lines were not written whole. The
/// error itself goes nowhere: standard output is where it would be reported.
fn write_batch(sink: &mut dyn Write, batch: &[u8]) -> Option<u64> {
    let mut rest = batch;
    while !rest.is_empty() {
        match sink.write(rest) {
            Ok(0) => break,
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    if rest.is_empty() && sink.flush().is_ok() {
        return None;
    }
    // A line is lost unless its newline was written: a cut line's tail never follows.
    Some(rest.iter().filter(|b| **b == b'\n').count() as u64)
}

/// The one warning line about lost lines; it goes through the subscriber like any other line.
fn report_dropped(dropped: u64) {
    tracing::warn!(
        dropped,
        "log lines dropped: standard output could not keep up"
    );
}

impl Write for BatchedStdout {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let wake = {
            let mut pending = self.shared.lock();
            if pending.lines.len() + line.len() > self.shared.max_pending
                && !REPORTING.with(std::cell::Cell::get)
            {
                pending.dropped += 1;
                LINES_DROPPED.fetch_add(1, Ordering::Relaxed);
                return Ok(line.len());
            }
            pending.lines.extend_from_slice(line);
            pending.lines.len() >= FLUSH_BYTES
        };
        if wake {
            self.shared.wake.notify_one();
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
    fn durations_are_logged_in_milliseconds() {
        assert_eq!(millis(Duration::from_millis(1_500)), 1_500.0);
        assert_eq!(millis(Duration::from_micros(250)), 0.25);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }
    use tracing::Dispatch;

    /// Standard output as the tests see it: what was written, and optionally a gate that holds every write
    /// until opened, announcing each write it holds.
    #[derive(Clone, Default)]
    struct Capture {
        out: Arc<Mutex<Vec<u8>>>,
        gate: Option<Arc<(Mutex<bool>, Condvar)>>,
        entered: Option<mpsc::Sender<()>>,
        /// Whether each successive write fails (`true`) once through the gate; later writes succeed.
        fails: Arc<Mutex<std::collections::VecDeque<bool>>>,
    }

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            if let Some(gate) = &self.gate {
                if let Some(entered) = &self.entered {
                    let _ = entered.send(());
                }
                let (open, opened) = &**gate;
                let mut open = open.lock().expect("gate lock");
                while !*open {
                    open = opened.wait(open).expect("gate wait");
                }
            }
            if self.fails.lock().expect("fails lock").pop_front() == Some(true) {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            self.out
                .lock()
                .expect("capture lock")
                .extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn lines(&self) -> Vec<serde_json::Value> {
            let text =
                String::from_utf8(self.out.lock().expect("capture lock").clone()).expect("utf-8");
            text.lines()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect()
        }
    }

    /// Stops the writer and waits until it has written everything (no bound: the test's sink never sticks).
    fn finish(mut guard: LogGuard) {
        guard.shared.stopped.store(true, Ordering::Release);
        guard.shared.wake.notify_one();
        if let Some(done) = guard.done.take() {
            done.recv().expect("the writer thread ends");
        }
    }

    fn json_dispatch(out: BatchedStdout) -> Dispatch {
        Dispatch::new(
            tracing_subscriber::fmt()
                .with_writer(out)
                .event_format(JsonLines)
                .finish(),
        )
    }

    #[test]
    fn logged_paths_are_cut_and_mask_digit_runs() {
        assert_eq!(loggable_path("/a"), "/a");
        assert!(matches!(
            loggable_path("/api/v1/validate"),
            Cow::Borrowed(_)
        ));
        assert_eq!(loggable_path(&"é".repeat(300)).len(), 200);
        assert_eq!(loggable_path("/x/9001011234088"), "/x/*************");
        assert_eq!(loggable_path("/x/12345/y"), "/x/12345/y");
        assert_eq!(loggable_path("/x/123456"), "/x/******");
        assert_eq!(loggable_path("/a1b2c3d4e5f6"), "/a1b2c3d4e5f6");
        assert_eq!(
            loggable_path("/x/%39001011234088?q=1"),
            "/x/***************?q=1"
        );
        assert_eq!(loggable_path("/v1/%3x123456"), "/v1/%3x******");
        let long = format!("/{}{}", "a".repeat(190), "9".repeat(40));
        let logged = loggable_path(&long);
        assert_eq!(logged.len(), 200);
        assert!(logged.ends_with("*********"), "{logged}");
        assert!(!logged.contains('9'));
    }

    #[test]
    fn events_become_one_json_object_per_line() {
        let capture = Capture::default();
        let (out, guard) = BatchedStdout::start(Box::new(capture.clone()), MAX_PENDING_BYTES);
        tracing::dispatcher::with_default(&json_dispatch(out), || {
            tracing::info!(status = 200u16, duration_ms = 1.5, path = %"/a\"b", ok = true, delta = -3i64, text = "tab\there\u{1}", "request");
            tracing::warn!("second");
        });
        finish(guard);
        let lines = capture.lines();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["message"], "request");
        assert_eq!(lines[0]["level"], "INFO");
        assert_eq!(lines[0]["status"], 200);
        assert_eq!(lines[0]["duration_ms"], 1.5);
        assert_eq!(lines[0]["path"], "/a\"b");
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["delta"], -3);
        assert_eq!(lines[0]["text"], "tab\there\u{1}");
        assert_eq!(lines[1]["level"], "WARN");
        assert!(
            lines[0]["timestamp"]
                .as_str()
                .is_some_and(|t| t.ends_with('Z'))
        );
    }

    /// The tests that count [`lines_dropped`], which is process-wide, one at a time.
    static COUNTING: Mutex<()> = Mutex::new(());

    /// A writer on `capture` whose dropped-line reports go through the same JSON subscriber as the lines.
    fn reporting_json(capture: &Capture, max_pending: usize) -> (Dispatch, LogGuard) {
        let reported = Arc::new(Mutex::new(None::<Dispatch>));
        let report_to = reported.clone();
        let (out, guard) =
            BatchedStdout::start_reporting(Box::new(capture.clone()), max_pending, move |n| {
                if let Some(dispatch) = report_to.lock().expect("lock").as_ref() {
                    tracing::dispatcher::with_default(dispatch, || report_dropped(n));
                }
            });
        let dispatch = json_dispatch(out);
        *reported.lock().expect("lock") = Some(dispatch.clone());
        (dispatch, guard)
    }

    fn open(gate: &(Mutex<bool>, Condvar)) {
        let (open, opened) = gate;
        *open.lock().expect("gate lock") = true;
        opened.notify_all();
    }

    #[test]
    fn a_failed_write_keeps_the_dropped_count_until_a_warning_is_written() {
        let _counting = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (entered_tx, entered) = mpsc::channel();
        let capture = Capture {
            gate: Some(gate.clone()),
            entered: Some(entered_tx),
            // Line 0 is refused; the lines kept meanwhile are written; the first warning is refused.
            fails: Arc::new(Mutex::new([true, false, true].into())),
            ..Capture::default()
        };
        let (dispatch, guard) = reporting_json(&capture, 2048);
        // A bound against hanging (a writer that never writes the warning), not a timing assertion.
        let written = |what: &str| {
            entered
                .recv_timeout(Duration::from_secs(40))
                .unwrap_or_else(|_| panic!("the writer never wrote {what}"));
        };
        let dropped_before = lines_dropped();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(n = 0u64, "line");
            written("line 0");
            for n in 1..=200u64 {
                tracing::info!(n, "line");
            }
            open(&gate);
            written("the kept lines");
            written("the first warning");
            // Writing works again: the next line lets the count out.
            tracing::info!(n = 201u64, "line");
        });
        finish(guard);
        let lines = capture.lines();
        let numbers: Vec<u64> = lines.iter().filter_map(|l| l["n"].as_u64()).collect();
        assert_eq!(numbers.last(), Some(&201), "{numbers:?}");
        assert!(!numbers.contains(&0), "line 0 was refused: {numbers:?}");
        let warnings: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["level"] == "WARN").collect();
        assert_eq!(warnings.len(), 1, "{lines:?}");
        let reported = warnings[0]["dropped"].as_u64().expect("a count");
        // Every line that was not written is in the one warning that was: 202 lines logged plus the refused
        // warning.
        assert_eq!(numbers.len() as u64 + reported, 203, "{lines:?}");
        assert_eq!(lines_dropped() - dropped_before, reported);
        assert_eq!(lines.last(), Some(warnings[0]));
    }

    #[test]
    fn a_stuck_stdout_never_blocks_logging_and_dropped_lines_are_counted_then_reported_in_order() {
        let _counting = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (entered_tx, entered) = mpsc::channel();
        let capture = Capture {
            gate: Some(gate.clone()),
            entered: Some(entered_tx),
            ..Capture::default()
        };
        let (dispatch, guard) = reporting_json(&capture, 2048);
        let dropped_before = lines_dropped();
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(n = 0u64, "line");
            // The writer now holds line 0 and is stuck in the write: standard output does not move.
            // (Bounded, so a formatter that writes nothing fails the test instead of hanging it.)
            entered
                .recv_timeout(testkit::process::PATIENCE)
                .expect("the writer writes");
            // If logging blocked on stdout, this loop would never finish.
            for n in 1..=200u64 {
                tracing::info!(n, "line");
            }
        });
        let dropped = lines_dropped() - dropped_before;
        assert!(dropped > 150, "only {dropped} dropped with a 2 KiB bound");
        open(&gate);
        finish(guard);
        let lines = capture.lines();
        let numbers: Vec<u64> = lines.iter().filter_map(|l| l["n"].as_u64()).collect();
        assert_eq!(numbers.first(), Some(&0));
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "out of order: {numbers:?}"
        );
        assert_eq!(numbers.len() as u64 + dropped, 201);
        let warning = lines
            .iter()
            .find(|l| l["level"] == "WARN")
            .expect("one warning about dropped lines");
        assert_eq!(warning["dropped"].as_u64(), Some(dropped));
        // It comes after the lines that were kept, once writing resumed.
        assert_eq!(lines.last(), Some(warning));
    }
}
