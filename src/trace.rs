//! W3C Trace Context (level 1): the request's `traceparent` and `tracestate`, read once by the envelope and
//! sent on every attempt to the vendor, so Azure's tooling (Application Insights, API Management, the
//! OpenTelemetry agent) can follow a validation through this service to the vendor.
//!
//! The service starts no spans of its own: it passes a valid inbound `traceparent` on unchanged, and starts a
//! new trace (random ids, flags `00`: not sampled) when there is none or it is invalid. Reading the headers is
//! on every request's path, so it allocates nothing: a valid inbound value is kept as the header it came in
//! (a reference count), a new one is rendered into a fixed array. Only several `tracestate` lines, which have
//! to be joined, cost an allocation.
//!
//! This module sits at the bottom of the crate and imports nothing from it.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The header that carries the trace and the caller's span.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The header that carries vendor-specific trace data beside `traceparent`.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `vv-` + 32 hex digits + `-` + 16 hex digits + `-` + 2 hex digits: all of version `00`, and the part of
/// any later version that level 1 can read.
const TRACEPARENT_LEN: usize = 55;

/// Where the trace-id sits in a `traceparent`.
const TRACE_ID: std::ops::Range<usize> = 3..35;

/// Where the parent-id sits in a `traceparent`.
const PARENT_ID: std::ops::Range<usize> = 36..52;

/// A longer `tracestate` (its lines joined) is not passed on. The specification asks every vendor to pass on
/// at least 512 characters; beyond that it would have to cut entries, which this service does not do.
pub const MAX_TRACESTATE_LEN: usize = 512;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The trace a request belongs to, as it is sent to the vendor.
#[derive(Debug, Clone)]
pub struct TraceContext {
    parent: Parent,
    /// Only beside an inbound `traceparent` that was valid.
    state: Option<HeaderValue>,
}

#[derive(Debug, Clone)]
enum Parent {
    /// A valid inbound `traceparent`, passed on as it came.
    Inbound(HeaderValue),
    /// A new trace, rendered once.
    New([u8; TRACEPARENT_LEN]),
}

impl TraceContext {
    /// The request's trace: its own `traceparent` (and `tracestate`) when the `traceparent` is valid and
    /// sent once, otherwise a new trace without `tracestate`. Several `traceparent` lines are invalid: the
    /// specification does not say which one to believe, so none is.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut parents = headers.get_all(&TRACEPARENT).iter();
        match (parents.next(), parents.next()) {
            (Some(parent), None) if is_valid(parent.as_bytes()) => Self {
                parent: Parent::Inbound(parent.clone()),
                state: tracestate(headers),
            },
            _ => Self::new_trace(),
        }
    }

    /// A new trace: random trace-id and parent-id (never all zeros), flags `00`. The ids come from the
    /// thread's fast PRNG: they must be unique, not secret, and a system call per request is not worth it.
    pub fn new_trace() -> Self {
        let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
        // Zero (one chance in 2^128, or 2^64) becomes one; a bounded range would cost a wide multiplication.
        hex_into(
            &mut value[TRACE_ID],
            &fastrand::u128(..).max(1).to_be_bytes(),
        );
        hex_into(
            &mut value[PARENT_ID],
            &fastrand::u64(..).max(1).to_be_bytes(),
        );
        Self {
            parent: Parent::New(value),
            state: None,
        }
    }

    /// The `traceparent` value to send: visible ASCII, at least 55 bytes.
    pub fn traceparent(&self) -> &[u8] {
        match &self.parent {
            Parent::Inbound(value) => value.as_bytes(),
            Parent::New(value) => value,
        }
    }

    /// The `tracestate` value to send beside it, if any.
    pub fn tracestate(&self) -> Option<&HeaderValue> {
        self.state.as_ref()
    }

    /// The trace-id (32 lowercase hex digits), as the log lines carry it.
    pub fn trace_id(&self) -> &str {
        // Checked hex in both cases, so the conversion cannot fail.
        self.traceparent()
            .get(TRACE_ID)
            .and_then(|id| std::str::from_utf8(id).ok())
            .unwrap_or_default()
    }
}

/// Level 1's reading of a `traceparent`: two lowercase hex digits of version other than `ff`; then, in the
/// first 55 characters, the trace-id (not all zeros), the parent-id (not all zeros) and the flags, all
/// lowercase hex, separated by dashes. Version `00` is exactly that long. A later version may go on after a
/// dash; what follows is passed on with the rest, so it must be visible ASCII.
fn is_valid(value: &[u8]) -> bool {
    let Some(head) = value.first_chunk::<TRACEPARENT_LEN>() else {
        return false;
    };
    // Checks fold over every byte rather than stop at the first bad one: most values are valid, and
    // without the early exit the compiler checks many bytes per instruction.
    let hex = |range: std::ops::Range<usize>| {
        head[range]
            .iter()
            .fold(true, |ok, b| ok & matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let zeros = |range: std::ops::Range<usize>| head[range].iter().all(|&b| b == b'0');
    let laid_out = head[2] == b'-' && head[35] == b'-' && head[52] == b'-';
    let version = &head[..2];
    let ids = hex(0..2)
        && hex(TRACE_ID)
        && hex(PARENT_ID)
        && hex(53..55)
        && !zeros(TRACE_ID)
        && !zeros(PARENT_ID);
    let rest = &value[TRACEPARENT_LEN..];
    let rest_ok = match version {
        b"ff" => false,
        b"00" => rest.is_empty(),
        _ => match rest.split_first() {
            None => true,
            Some((dash, more)) => *dash == b'-' && more.iter().all(u8::is_ascii_graphic),
        },
    };
    laid_out && ids && rest_ok
}

/// The inbound `tracestate`, its lines joined with commas as HTTP joins a list header, unless it is empty,
/// longer than [`MAX_TRACESTATE_LEN`], or holds other than printable ASCII and tabs (which the
/// specification's grammar does not allow, and which must not be passed on).
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let lines = headers.get_all(&TRACESTATE);
    let first = lines.iter().next()?;
    // A fold over every byte, like the checks of `traceparent`.
    let printable = |v: &HeaderValue| {
        v.as_bytes().iter().fold(true, |ok, &b| {
            ok & (b == b'\t' || (0x20..0x7f).contains(&b))
        })
    };
    // Each further line adds at least its comma, so hostile input stops this loop within the bound.
    let (mut len, mut count) = (0, 0);
    for line in &lines {
        len += line.len() + usize::from(count > 0);
        count += 1;
        if len > MAX_TRACESTATE_LEN || !printable(line) {
            return None;
        }
    }
    match (len, count) {
        (0, _) => None,
        (_, 1) => Some(first.clone()),
        _ => {
            let mut joined = Vec::with_capacity(len);
            for (i, line) in lines.iter().enumerate() {
                if i > 0 {
                    joined.push(b',');
                }
                joined.extend_from_slice(line.as_bytes());
            }
            HeaderValue::from_bytes(&joined).ok()
        }
    }
}

/// Writes `bytes` into `out` (twice as long) as lowercase hex.
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0xf)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(traceparents: &[&str], tracestates: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in traceparents {
            map.append(&TRACEPARENT, HeaderValue::from_str(value).expect("ascii"));
        }
        for value in tracestates {
            map.append(&TRACESTATE, HeaderValue::from_str(value).expect("ascii"));
        }
        map
    }

    fn sent(traceparents: &[&str], tracestates: &[&str]) -> (String, Option<String>) {
        let trace = TraceContext::from_headers(&headers(traceparents, tracestates));
        let parent = String::from_utf8(trace.traceparent().to_vec()).expect("ascii");
        let state = trace
            .tracestate()
            .map(|v| v.to_str().expect("ascii").to_string());
        (parent, state)
    }

    /// The shape of a trace this service started.
    fn assert_new(parent: &str) {
        let bytes = parent.as_bytes();
        assert_eq!(bytes.len(), TRACEPARENT_LEN, "{parent}");
        assert!(is_valid(bytes), "{parent}");
        assert!(
            parent.starts_with("00-") && parent.ends_with("-00"),
            "{parent}"
        );
    }

    #[test]
    fn a_valid_traceparent_is_passed_on_with_its_tracestate() {
        let (parent, state) = sent(&[VALID], &["congo=t61rcWkgMzE"]);
        assert_eq!(parent, VALID);
        assert_eq!(state.as_deref(), Some("congo=t61rcWkgMzE"));
        let trace = TraceContext::from_headers(&headers(&[VALID], &[]));
        assert_eq!(trace.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(trace.tracestate().is_none());
        // Any flags are passed on as they are.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe";
        assert_eq!(sent(&[unsampled], &[]).0, unsampled);
    }

    #[test]
    fn invalid_traceparents_start_a_new_trace_without_tracestate() {
        let cases = [
            (
                "all-zero trace-id",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            (
                "all-zero parent-id",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            ),
            (
                "uppercase trace-id",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            ),
            (
                "uppercase parent-id",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            ),
            (
                "uppercase flags",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A",
            ),
            (
                "uppercase version",
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "version ff",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            (
                "too short",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            ),
            (
                "trace-id too short",
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            ),
            (
                "version 00 too long",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            ),
            (
                "version 00 with more",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            ),
            (
                "later version, no dash after",
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.x",
            ),
            (
                "later version, space after",
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01- x",
            ),
            (
                "wrong separators",
                "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            ),
            (
                "not hex",
                "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            ),
            (
                "one-digit version",
                "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            ),
            ("empty", ""),
        ];
        for (why, value) in cases {
            let (parent, state) = sent(&[value], &["congo=t61rcWkgMzE"]);
            assert_ne!(parent, value, "{why}");
            assert_new(&parent);
            assert_eq!(state, None, "{why}");
        }
    }

    #[test]
    fn later_versions_are_read_by_the_level_1_rules() {
        for value in [
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be-like",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-",
            "fe-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(
                sent(&[value], &["a=b"]),
                (value.to_string(), Some("a=b".into()))
            );
        }
    }

    #[test]
    fn several_traceparents_are_invalid() {
        let other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (parent, state) = sent(&[VALID, other], &["a=b"]);
        assert!(parent != VALID && parent != other, "{parent}");
        assert_new(&parent);
        assert_eq!(state, None);
        // Even the same value twice.
        assert_ne!(sent(&[VALID, VALID], &[]).0, VALID);
    }

    #[test]
    fn no_traceparent_starts_a_new_trace() {
        let (parent, state) = sent(&[], &["a=b"]);
        assert_new(&parent);
        assert_eq!(state, None);
        // Random ids: two new traces differ in both.
        let (a, b) = (TraceContext::new_trace(), TraceContext::new_trace());
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.traceparent()[PARENT_ID], b.traceparent()[PARENT_ID]);
        assert_eq!(a.trace_id().len(), 32);
    }

    #[test]
    fn tracestate_lines_are_joined_and_bounded() {
        assert_eq!(
            sent(&[VALID], &["a=1", "b=2 ,c=3"]).1.as_deref(),
            Some("a=1,b=2 ,c=3")
        );
        let longest = format!("a={}", "x".repeat(MAX_TRACESTATE_LEN - 2));
        assert_eq!(sent(&[VALID], &[&longest]).1, Some(longest.clone()));
        let over = format!("a={}", "x".repeat(MAX_TRACESTATE_LEN - 1));
        let (parent, state) = sent(&[VALID], &[&over]);
        assert_eq!((parent.as_str(), state), (VALID, None));
        // Joined, the lines are one over: dropped whole.
        let half = format!("a={}", "x".repeat(MAX_TRACESTATE_LEN / 2 - 2));
        assert_eq!(half.len() * 2 + 1, MAX_TRACESTATE_LEN + 1);
        assert_eq!(sent(&[VALID], &[&half, &half]).1, None);
        let fits = format!("b={}", "x".repeat(MAX_TRACESTATE_LEN / 2 - 3));
        assert_eq!(
            sent(&[VALID], &[&half, &fits]).1.map(|s| s.len()),
            Some(MAX_TRACESTATE_LEN)
        );
        assert_eq!(sent(&[VALID], &[""]).1, None);
    }

    #[test]
    fn a_tracestate_with_bytes_outside_printable_ascii_is_dropped() {
        let mut map = headers(&[VALID], &[]);
        map.append(
            &TRACESTATE,
            HeaderValue::from_bytes(b"a=\xff").expect("obs-text"),
        );
        assert!(TraceContext::from_headers(&map).tracestate().is_none());
        let mut map = headers(&[VALID], &["a=1"]);
        map.append(
            &TRACESTATE,
            HeaderValue::from_bytes(b"b=\x80").expect("obs-text"),
        );
        assert!(TraceContext::from_headers(&map).tracestate().is_none());
        assert!(sent(&[VALID], &["a=1,\tb=2"]).1.is_some());
    }

    #[test]
    fn ids_are_written_as_lowercase_hex() {
        let mut out = [0u8; 16];
        hex_into(&mut out, &0x00f0_67aa_0ba9_02b7_u64.to_be_bytes());
        assert_eq!(&out, b"00f067aa0ba902b7");
        let mut out = [0u8; 32];
        hex_into(&mut out, &u128::MAX.to_be_bytes());
        assert_eq!(&out, &[b'f'; 32]);
    }
}
