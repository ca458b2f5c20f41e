//! Log lines captured in memory for unit tests, in the service's JSON line format: what a test asserts about
//! a log line (its level, its message, its fields) is what an operator's collector would read.

use std::sync::{Arc, Mutex};

use super::jsonline::JsonLines;

/// Lines written by the events of the thread that called [`Logs::capture`], while its guard lives.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// Collects this thread's events at INFO and above until the guard is dropped.
    pub fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let logs = self.clone();
        tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_writer(move || logs.clone())
                .event_format(JsonLines)
                .finish(),
        )
    }

    /// Every line captured so far, parsed.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let text = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        text.split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| serde_json::from_slice(line).expect("a JSON line"))
            .collect()
    }
}
