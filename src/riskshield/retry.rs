//! When and how long to wait before another attempt: full-jitter exponential backoff, Retry-After, the cap.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// No single backoff or Retry-After wait is longer than this.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// Retry and timeout settings, split out so tests can build a client directly.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempt_timeout: Duration,
    pub max_attempts: u32,
    pub base_delay: Duration,
}

impl RetryPolicy {
    /// Full jitter: a uniformly random wait between zero and `base * 2^(retry-1)`, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << (retry.saturating_sub(1)).min(20))
            .min(MAX_RETRY_DELAY);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// Whether another attempt, begun `wait` after `now`, would begin at or after the request's deadline, where it
/// could only time out (and would still reach the vendor). Both the retries after a failure and the one after
/// a refreshed key ask this.
pub fn too_late(now: Instant, wait: Duration, deadline: Instant) -> bool {
    now + wait >= deadline
}

/// Reads Retry-After as delta-seconds or an HTTP date (relative to `now`). A date in the past means "now".
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_that_would_begin_at_the_deadline_is_too_late() {
        let now = Instant::now();
        let deadline = now + Duration::from_secs(2);
        let ms = Duration::from_millis;
        assert!(!too_late(now, ms(1_999), deadline));
        assert!(too_late(now, ms(2_000), deadline));
        assert!(too_late(now, ms(2_001), deadline));
        assert!(!too_late(now, Duration::ZERO, deadline));
        assert!(too_late(deadline, Duration::ZERO, deadline));
        assert!(too_late(deadline + ms(1), Duration::ZERO, deadline));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_is_capped_full_jitter() {
        let policy = RetryPolicy {
            attempt_timeout: Duration::from_secs(1),
            max_attempts: 10,
            base_delay: Duration::from_secs(1),
        };
        for retry in 1..=30 {
            let ceiling =
                (Duration::from_secs(1) * 2u32.pow((retry - 1).min(20))).min(MAX_RETRY_DELAY);
            for _ in 0..20 {
                assert!(policy.backoff(retry) <= ceiling);
            }
        }
    }

    fn policy(base_delay: Duration) -> RetryPolicy {
        RetryPolicy {
            attempt_timeout: Duration::from_secs(1),
            max_attempts: 10,
            base_delay,
        }
    }

    /// With the generator seeded, the wait is exactly the drawn share of the ceiling, and the ceiling is
    /// `base × 2^(retry-1)` up to the cap: 100, 200, 400 ms, …, then 10 s from the eighth retry on.
    #[test]
    fn backoff_is_a_random_share_of_a_ceiling_that_doubles_each_retry() {
        let policy = policy(Duration::from_millis(100));
        let ceilings_ms = [
            100, 200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000, 10_000, 10_000, 10_000,
        ];
        for (retry, ceiling_ms) in (1u32..).zip(ceilings_ms) {
            fastrand::seed(u64::from(retry));
            let share = fastrand::f64();
            fastrand::seed(u64::from(retry));
            assert_eq!(
                policy.backoff(retry),
                Duration::from_millis(ceiling_ms).mul_f64(share),
                "retry {retry}"
            );
        }
        // Far past the cap (the shift is bounded, nothing overflows) the ceiling stays 10 s.
        fastrand::seed(99);
        let share = fastrand::f64();
        fastrand::seed(99);
        assert_eq!(policy.backoff(u32::MAX), MAX_RETRY_DELAY.mul_f64(share));
    }

    /// Full jitter spreads the waits over the whole range below the ceiling: they are not all zero, nor all
    /// the ceiling.
    #[test]
    fn backoff_is_never_always_zero_and_spreads_below_its_ceiling() {
        let policy = policy(Duration::from_secs(1));
        fastrand::seed(7);
        let ceiling = Duration::from_secs(4);
        let waits: Vec<Duration> = (0..1_000).map(|_| policy.backoff(3)).collect();
        assert!(waits.iter().all(|w| *w <= ceiling));
        assert!(waits.iter().any(|w| *w > ceiling * 3 / 4), "{waits:?}");
        assert!(waits.iter().any(|w| *w < ceiling / 4), "{waits:?}");
    }
}
