//! The JSON line format of the logs: one object per event, formatted straight into the output buffer.
//!
//! This replaces tracing-subscriber's `json` formatter (serde_json with a map per event). A log line is written
//! for every request and every upstream attempt; with the stock formatter (and a `write(2)` per line) the
//! benchmark measured the logging costing about as much CPU as the request itself. With this formatter and
//! the batched writer, a validation's two lines cost 7,275 instructions against 31,812 for the rest of the
//! validation (callgrind, docs/benchmarks.md). There is no serde, no per-field allocation, and the timestamp
//! comes from humantime's RFC 3339 formatter.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

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
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => {
                line.clear();
                format_line(&mut line, event)?;
                writer.write_str(&line)?;
                if !keeps(line.capacity()) {
                    *line = String::new();
                }
                Ok(())
            }
            // Only when a value's Debug logs while its own line is being formatted: a buffer of its own.
            Err(_) => {
                let mut line = String::new();
                format_line(&mut line, event)?;
                writer.write_str(&line)
            }
        })
    }
}

thread_local! {
    /// The line being formatted. Built here with plain string pushes and handed over in one piece: writing
    /// each piece through the subscriber's `Writer` (a `dyn fmt::Write`) cost a call per piece, some forty
    /// per line, 1,981 instructions for a validation's two lines (docs/benchmarks.md).
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A line buffer that grew past this (one very long line) is given back rather than kept.
const MAX_KEPT_LINE: usize = 16 * 1024;

/// Whether a line buffer of `capacity` bytes is kept for the thread's next line.
fn keeps(capacity: usize) -> bool {
    capacity <= MAX_KEPT_LINE
}

fn format_line(line: &mut String, event: &Event<'_>) -> fmt::Result {
    // humantime's RFC 3339 formatter writes the digits directly: no allocation, no time zone lookup.
    line.push_str("{\"timestamp\":\"");
    write!(
        line,
        "{}",
        humantime::format_rfc3339_micros(SystemTime::now())
    )?;
    line.push_str("\",\"level\":\"");
    line.push_str(event.metadata().level().as_str());
    line.push('"');
    let mut fields = JsonFields {
        out: line,
        result: Ok(()),
    };
    event.record(&mut fields);
    fields.result?;
    line.push_str("}\n");
    Ok(())
}

/// Writes each field as `,"name":value`; `message` comes first because tracing records it first.
struct JsonFields<'a> {
    out: &'a mut String,
    /// The first error a value's Debug or Display returned; the line is then not written.
    result: fmt::Result,
}

impl JsonFields<'_> {
    fn key(&mut self, field: &Field) {
        self.out.push_str(",\"");
        push_escaped(self.out, field.name());
        self.out.push_str("\":");
    }

    fn raw(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.out.push_str(value);
    }
}

impl Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.key(field);
        self.out.push('"');
        if self.result.is_ok() {
            self.result = write!(Escaped(&mut *self.out), "{value:?}");
        }
        self.out.push('"');
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.key(field);
        self.out.push('"');
        push_escaped(self.out, value);
        self.out.push('"');
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.raw(field, itoa::Buffer::new().format(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.raw(field, itoa::Buffer::new().format(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.raw(field, if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.key(field);
        // Writing to a String cannot fail.
        let _ = Thousandths(value).write_to(&mut *self.out);
    }
}

/// A number as JSON with three decimals (`null` when it is not finite). Durations, the only floats the
/// service logs, are written with integer digits instead of `{:.3}`: the two durations of a validation's log
/// lines went from 2,755 to 1,116 instructions, keys included (callgrind, docs/benchmarks.md). A number from
/// 9e12 up (either sign) is written in exponent form, the shortest that reads back as the same double: all its
/// integer digits can be too many for a JSON reader (serde_json finds `-f64::MAX` written out of range).
struct Thousandths(f64);

impl fmt::Display for Thousandths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_to(f)
    }
}

impl Thousandths {
    fn write_to(&self, f: &mut impl fmt::Write) -> fmt::Result {
        let value = self.0;
        if !value.is_finite() {
            return f.write_str("null");
        }
        // Non-negative and below 2^53 / 1000, so the product rounds to an exact integer.
        if !(0.0..9.0e12).contains(&value) {
            return if value.abs() < 9.0e12 {
                write!(f, "{value:.3}")
            } else {
                write!(f, "{value:e}")
            };
        }
        let thousandths = (value * 1000.0).round() as u64;
        let (mut whole, mut fraction) = (itoa::Buffer::new(), itoa::Buffer::new());
        let fraction = fraction.format(thousandths % 1000);
        f.write_str(whole.format(thousandths / 1000))?;
        f.write_str(&".00"[..4 - fraction.len()])?;
        f.write_str(fraction)
    }
}

/// Escapes text for a JSON string as it is written (for values formatted with Debug or Display).
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// Appends `s` escaped for a JSON string (the log lines' strings, and the validation answer's correlation id).
///
/// Byte by byte: everything that needs escaping is ASCII, and a byte below 0x80 is always a whole character,
/// so the text is cut only at character boundaries. Walking `char`s instead decoded UTF-8 for nothing: with
/// the one-piece fast path below, escaping a validation's two log lines went from 6,138 to 3,233
/// instructions (callgrind, docs/benchmarks.md).
pub fn push_escaped(out: &mut String, s: &str) {
    // Most text needs no escaping: a scan without an early exit (which the compiler vectorises) finds that
    // out, and the text is appended in one piece.
    if !s.bytes().fold(false, |special, b| {
        special | (b < 0x20 || b == b'"' || b == b'\\')
    }) {
        out.push_str(s);
        return;
    }
    let mut start = 0;
    for (i, &b) in s.as_bytes().iter().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::Logs;
    use std::time::{Duration, UNIX_EPOCH};

    /// The thread's line buffer is kept for the next line, unless one line made it grow past
    /// MAX_KEPT_LINE: then it is given back, so one huge line does not pin its memory for good.
    #[test]
    fn the_line_buffer_is_reused_unless_a_line_outgrew_it() {
        let capacity = || LINE.with(|line| line.borrow().capacity());
        let logs = Logs::default();
        let _capture = logs.capture();
        tracing::info!(n = 1u64, "a line");
        let kept = capacity();
        assert!(kept > 0 && kept <= MAX_KEPT_LINE, "kept {kept} bytes");
        // A line of 7,000 bytes is still one whose buffer is worth keeping (the limit is 16 KiB; the buffer
        // may grow to twice what the line needs).
        tracing::info!(text = "x".repeat(7_000).as_str(), "a longer line");
        assert!(capacity() > 7_000, "kept {} bytes", capacity());
        tracing::info!(text = "x".repeat(MAX_KEPT_LINE + 1).as_str(), "a long line");
        assert_eq!(capacity(), 0, "the grown buffer is given back");
        assert_eq!(logs.lines().len(), 3);
        assert_eq!(
            logs.lines()[2]["text"].as_str().map(str::len),
            Some(MAX_KEPT_LINE + 1)
        );
        // The limit itself, on both sides.
        assert!(keeps(16 * 1024));
        assert!(!keeps(16 * 1024 + 1));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let at = |secs: u64, micros: u64| {
            humantime::format_rfc3339_micros(
                UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros),
            )
            .to_string()
        };
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(at(951_782_400, 5), "2000-02-29T00:00:00.000005Z");
        assert_eq!(at(1_795_957_638, 289_637), "2026-11-29T13:07:18.289637Z");
        assert_eq!(at(4_107_542_399, 999_999), "2100-02-28T23:59:59.999999Z");
    }

    #[test]
    fn numbers_have_three_decimals() {
        for (value, text) in [
            (0.0, "0.000"),
            (0.0004, "0.000"),
            (0.05, "0.050"),
            (1.5, "1.500"),
            (12.0456, "12.046"),
            (999.9996, "1000.000"),
            (86_400_000.25, "86400000.250"),
            (-2.5, "-2.500"),
            (1.0e13, "1e13"),
            (-1.25e13, "-1.25e13"),
            (f64::NAN, "null"),
            (f64::INFINITY, "null"),
        ] {
            assert_eq!(Thousandths(value).to_string(), text, "{value}");
        }
        for i in 0..100_000u32 {
            let value = f64::from(i) * 0.0137;
            let printed: f64 = Thousandths(value).to_string().parse().expect("a number");
            assert!(
                (printed - value).abs() <= 0.000_501,
                "{value} printed as {printed}"
            );
        }
    }

    /// Found by the `jsonline` fuzz target (docs/fuzzing.md): a number far from any duration, written with all
    /// its integer digits, was out of range for serde_json (`-f64::MAX`) or read back as another number.
    #[test]
    fn numbers_of_any_size_read_back() {
        let mut wrong = Vec::new();
        for value in [
            f64::MAX,
            -f64::MAX,
            f64::MAX * 0.999_999_999_9,
            1.0e300,
            -1.234_567_89e200,
            1.0e15,
            9.0e12,
            -9.0e12,
            -8.999_999_999_999e12,
            -2.5,
            -5.0e-324,
        ] {
            let text = Thousandths(value).to_string();
            let exact = value.abs() >= 9.0e12;
            match serde_json::from_str::<f64>(&text) {
                Ok(read) if read == value => {}
                Ok(read) if !exact && (read - value).abs() <= 0.000_501 => {}
                _ => wrong.push(text),
            }
        }
        assert_eq!(wrong, Vec::<String>::new());
        // The switch to exponent form, on both sides of 9e12, either sign.
        assert_eq!(Thousandths(9.0e12).to_string(), "9e12");
        assert_eq!(Thousandths(-9.0e12).to_string(), "-9e12");
        assert_eq!(
            Thousandths(-8.999_999_999_999e12).to_string(),
            "-8999999999999.000"
        );
        assert_eq!(Thousandths(8_999_999_999.5).to_string(), "8999999999.500");
    }

    #[test]
    fn strings_are_escaped_for_json() {
        let mut s = String::new();
        push_escaped(&mut s, "a\"b\\c\nd\u{1}é");
        assert_eq!(s, "a\\\"b\\\\c\\nd\\u0001é");
        let parsed: String = serde_json::from_str(&format!("\"{s}\"")).expect("valid JSON string");
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

    #[test]
    fn each_special_byte_has_its_own_escape() {
        for (text, escaped) in [
            ("a\"b", "a\\\"b"),
            ("a\\b", "a\\\\b"),
            ("a\nb", "a\\nb"),
            ("a\rb", "a\\rb"),
            ("a\tb", "a\\tb"),
            ("a\u{1f}b", "a\\u001fb"),
            // From the space up (DEL and non-ASCII too), text is written as it is.
            ("a b~\u{7f}é", "a b~\u{7f}é"),
        ] {
            let mut s = String::new();
            push_escaped(&mut s, text);
            assert_eq!(s, escaped, "{text:?}");
        }
    }
}
