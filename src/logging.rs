//! Log setup: JSON lines on stdout (one object per line) or human-readable text.
//!
//! What is logged is decided at the call sites, which never pass the API key, a full ID number or a name.

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call once; later calls are ignored (tests start many servers).
pub fn init(level: tracing::Level, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stdout);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
        LogFormat::Pretty => builder.with_ansi(false).try_init(),
    };
}
