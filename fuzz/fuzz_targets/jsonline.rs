//! The JSON log line writer (src/telemetry/jsonline.rs) against serde_json: an event with arbitrary text and
//! numbers, logged through the service's formatter, is one line that serde_json parses, every string reads
//! back as it was logged, integers exactly, and a float to its three decimals (`null` when not finite).
//! `push_escaped` on its own, as the validation answer uses it for the correlation id, must give a JSON string
//! that reads back too.

#![no_main]

use std::cell::RefCell;
use std::io;
use std::sync::LazyLock;

use applicant_validator::fuzzing::{self, JsonLines};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tracing::Dispatch;

#[derive(Arbitrary, Debug)]
struct Event {
    message: String,
    text: String,
    debug: String,
    signed: i64,
    unsigned: u64,
    flag: bool,
    seconds: f64,
}

thread_local! {
    static LINES: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Where the formatter's lines go: a buffer the run reads back.
struct Capture;

impl io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        LINES.with_borrow_mut(|lines| lines.extend_from_slice(bytes));
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

static LOGGER: LazyLock<Dispatch> = LazyLock::new(|| {
    Dispatch::new(
        tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(|| Capture)
            .finish(),
    )
});

fuzz_target!(|event: Event| {
    tracing::dispatcher::with_default(&LOGGER, || {
        tracing::info!(
            text = event.text.as_str(),
            debug = ?event.debug,
            signed = event.signed,
            unsigned = event.unsigned,
            flag = event.flag,
            seconds = event.seconds,
            "{}",
            event.message
        );
    });
    let line = LINES.with_borrow_mut(std::mem::take);
    let text = String::from_utf8_lossy(&line);
    assert!(
        line.ends_with(b"}\n") && line.iter().filter(|b| **b == b'\n').count() == 1,
        "not one line: {text:?}"
    );
    let parsed: Value = serde_json::from_slice(&line).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    let field = |name: &str| &parsed[name];
    assert_eq!(field("level"), "INFO", "{text:?}");
    assert!(field("timestamp").is_string(), "{text:?}");
    assert_eq!(field("message"), event.message.as_str(), "{text:?}");
    assert_eq!(field("text"), event.text.as_str(), "{text:?}");
    assert_eq!(
        field("debug"),
        format!("{:?}", event.debug).as_str(),
        "{text:?}"
    );
    assert_eq!(field("signed").as_i64(), Some(event.signed), "{text:?}");
    assert_eq!(field("unsigned").as_u64(), Some(event.unsigned), "{text:?}");
    assert_eq!(field("flag").as_bool(), Some(event.flag), "{text:?}");
    let seconds = event.seconds;
    match field("seconds") {
        Value::Null => assert!(!seconds.is_finite(), "{text:?}"),
        number => {
            let printed = number
                .as_f64()
                .unwrap_or_else(|| panic!("not a number: {text:?}"));
            // Three decimals, and what a double holds of a number that size.
            let tolerance = 0.000_5 + seconds.abs() * 4.0 * f64::EPSILON;
            assert!(
                seconds.is_finite() && (printed - seconds).abs() <= tolerance,
                "{seconds} logged as {printed}: {text:?}"
            );
        }
    }

    let mut escaped = String::from("\"");
    fuzzing::push_escaped(&mut escaped, &event.text);
    escaped.push('"');
    let read: String =
        serde_json::from_str(&escaped).unwrap_or_else(|e| panic!("{e}: {escaped:?}"));
    assert_eq!(read, event.text);
});
