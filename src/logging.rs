//! Log setup: JSON lines on stdout (one object per line) or human-readable text.
//!
//! Two things here exist for speed, because a log line is written for every request and every upstream
//! attempt, and the benchmark showed the stock path cost about as much CPU as the request itself:
//! - [`JsonLines`] formats an event straight into the output buffer (no serde, no per-field allocation, a
//!   hand-rolled RFC 3339 timestamp);
//! - [`BatchedStdout`] collects lines in memory and a background thread writes them in batches every
//!   [`FLUSH_INTERVAL`] (or at once when the batch is large), so a request does not pay a `write(2)` per line.
//!   The [`LogGuard`] returned by [`init`] flushes whatever is left when the process ends normally.
//!
//! What is logged is decided at the call sites, which never pass the API key, a full ID number or a name.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::LogFormat;

/// How long a line may wait in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(20);

/// A batch this large is written at once by the thread that filled it.
const FLUSH_BYTES: usize = 64 * 1024;

/// Installs the global subscriber. Later calls are ignored (tests start many servers); each returns a guard
/// that flushes the buffered lines when dropped.
pub fn init(level: tracing::Level, format: LogFormat) -> LogGuard {
    let out = BatchedStdout::start();
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(out.clone());
    let _ = match format {
        LogFormat::Json => builder.event_format(JsonLines).try_init(),
        LogFormat::Pretty => builder.with_ansi(false).try_init(),
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

/// One JSON object per event: `timestamp`, `level`, `message`, then the event's fields.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, SystemTime::now())?;
        write!(writer, "\",\"level\":\"{}\"", event.metadata().level())?;
        let mut fields = JsonFields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`; `message` comes first because tracing records it first.
struct JsonFields<'w, 'a> {
    out: &'w mut Writer<'a>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.out.write_str(",\"")?;
        Escaped(&mut *self.out).write_str(field.name())?;
        self.out.write_str("\":")
    }

    fn raw(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| self.out.write_fmt(value));
        }
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| {
                self.out.write_char('"')?;
                write!(Escaped(&mut *self.out), "{value:?}")?;
                self.out.write_char('"')
            });
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| {
                self.out.write_char('"')?;
                Escaped(&mut *self.out).write_str(value)?;
                self.out.write_char('"')
            });
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, format_args!("{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.raw(field, format_args!("{value:.3}"));
        } else {
            self.raw(field, format_args!("null"));
        }
    }
}

/// Escapes text for a JSON string as it is written.
struct Escaped<W>(W);

impl<W: fmt::Write> fmt::Write for Escaped<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, c) in s.char_indices() {
            let escape = match c {
                '"' => "\\\"",
                '\\' => "\\\\",
                '\n' => "\\n",
                '\r' => "\\r",
                '\t' => "\\t",
                c if (c as u32) < 0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{:04x}", c as u32)?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + c.len_utf8();
        }
        self.0.write_str(&s[start..])
    }
}

/// RFC 3339 in UTC with microseconds, e.g. `2026-11-29T13:07:18.289637Z`.
fn write_timestamp(out: &mut impl fmt::Write, now: SystemTime) -> fmt::Result {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    write!(
        out,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, micros: u64| {
            let mut s = String::new();
            write_timestamp(
                &mut s,
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
            )
            .expect("formats");
            s
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_795_957_638, 289_637), "2026-11-29T13:07:18.289637Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    }

    #[test]
    fn strings_are_escaped_for_json() {
        let mut s = String::new();
        Escaped(&mut s)
            .write_str("a\"b\\c\nd\u{1}é")
            .expect("writes");
        assert_eq!(s, "a\\\"b\\\\c\\nd\\u0001é");
        let parsed: String = serde_json::from_str(&format!("\"{s}\"")).expect("valid JSON string");
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

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
