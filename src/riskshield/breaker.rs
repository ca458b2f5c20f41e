//! The circuit breaker in front of RiskShield: `Closed → Open → HalfOpen → Closed | Open`.
//!
//! It counts *calls* (validations), not attempts: a call that ends in 503/504 is a failure, anything else
//! resets the count. After `threshold` consecutive failures it opens for `open_duration`; then exactly one
//! caller is let through as the half-open probe while everyone else is still refused. Time comes from tokio,
//! so tests drive it with paused time.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The breaker's state, with the textbook names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

impl State {
    /// The gauge value for metrics: 0 closed, 1 open, 2 half-open.
    pub fn code(&self) -> i64 {
        match self {
            State::Closed { .. } => 0,
            State::Open { .. } => 1,
            State::HalfOpen { .. } => 2,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            State::Closed { .. } => "closed",
            State::Open { .. } => "open",
            State::HalfOpen { .. } => "half_open",
        }
    }
}

/// A consecutive-failure circuit breaker.
#[derive(Debug)]
pub struct CircuitBreaker {
    state: Mutex<State>,
    threshold: u32,
    open_duration: Duration,
    transitions: AtomicU64,
}

/// Permission to make one call. Report its outcome with [`Permit::record`]; a permit dropped without an
/// outcome (the caller went away) counts as neither success nor failure, and a half-open probe slot is freed.
#[derive(Debug)]
#[must_use]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl Permit<'_> {
    /// Records the call's outcome: `failed` is true when it ended in 503/504.
    pub fn record(mut self, failed: bool) {
        self.recorded = true;
        self.breaker.on_outcome(self.probe, failed);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded && self.probe {
            self.breaker.release_probe();
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker that opens after `threshold` consecutive failed calls.
    pub fn new(threshold: u32, open_duration: Duration) -> Self {
        Self {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: threshold.max(1),
            open_duration,
            transitions: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a plain value updated in one assignment, so a poisoned lock still holds a valid state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The current state (an open breaker whose time is up still reads as open until someone calls).
    pub fn state(&self) -> State {
        *self.lock()
    }

    /// How many state changes happened since start.
    pub fn transitions(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }

    /// Whether calls are currently refused (open, or half-open with the probe out).
    pub fn is_open(&self) -> bool {
        match self.state() {
            State::Closed { .. } => false,
            State::Open { until } => Instant::now() < until,
            State::HalfOpen { probe_in_flight } => probe_in_flight,
        }
    }

    /// Asks to make a call. `Err` carries how long the caller should wait (at least one second).
    pub fn try_acquire(&self) -> Result<Permit<'_>, Duration> {
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return Err((until - now).max(Duration::from_secs(1)));
                }
                self.transition(
                    &mut state,
                    State::HalfOpen {
                        probe_in_flight: true,
                    },
                );
                true
            }
            State::HalfOpen {
                probe_in_flight: true,
            } => return Err(Duration::from_secs(1)),
            State::HalfOpen {
                probe_in_flight: false,
            } => {
                *state = State::HalfOpen {
                    probe_in_flight: true,
                };
                true
            }
        };
        Ok(Permit {
            breaker: self,
            probe,
            recorded: false,
        })
    }

    fn on_outcome(&self, probe: bool, failed: bool) {
        let mut state = self.lock();
        let next = match (*state, failed) {
            (State::HalfOpen { .. }, true) if probe => self.opened(),
            (State::HalfOpen { .. }, false) if probe => State::Closed { failures: 0 },
            // A call that began before the breaker opened finished late: it cannot change the decision.
            (State::Open { .. } | State::HalfOpen { .. }, _) => return,
            (State::Closed { failures }, true) if failures + 1 >= self.threshold => self.opened(),
            (State::Closed { failures }, true) => State::Closed {
                failures: failures + 1,
            },
            (State::Closed { .. }, false) => State::Closed { failures: 0 },
        };
        self.transition(&mut state, next);
    }

    fn release_probe(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { .. } = *state {
            *state = State::HalfOpen {
                probe_in_flight: false,
            };
        }
    }

    fn opened(&self) -> State {
        State::Open {
            until: Instant::now() + self.open_duration,
        }
    }

    fn transition(&self, state: &mut State, next: State) {
        if std::mem::discriminant(state) != std::mem::discriminant(&next) {
            self.transitions.fetch_add(1, Ordering::Relaxed);
            let from = state.name();
            let to = next.name();
            if let State::Open { .. } = next {
                tracing::warn!(
                    from,
                    to,
                    open_for_ms = self.open_duration.as_millis() as u64,
                    "circuit breaker state change"
                );
            } else {
                tracing::info!(from, to, "circuit breaker state change");
            }
        }
        *state = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::Logs;

    fn fail(b: &CircuitBreaker) {
        b.try_acquire().expect("allowed").record(true);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_consecutive_failures() {
        let b = CircuitBreaker::new(3, Duration::from_secs(60));
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), State::Closed { failures: 2 });
        fail(&b);
        assert!(matches!(b.state(), State::Open { .. }));
        assert_eq!(b.try_acquire().map(|_| ()), Err(Duration::from_secs(60)));
        assert_eq!(b.transitions(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = CircuitBreaker::new(3, Duration::from_secs(60));
        fail(&b);
        fail(&b);
        b.try_acquire().expect("allowed").record(false);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), State::Closed { failures: 2 });
    }

    #[tokio::test(start_paused = true)]
    async fn stays_open_until_the_duration_passes() {
        let b = CircuitBreaker::new(1, Duration::from_secs(60));
        fail(&b);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(b.try_acquire().map(|_| ()), Err(Duration::from_secs(1)));
        assert!(b.is_open());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(b.try_acquire().map(|_| ()), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(500)).await;
        let probe = b.try_acquire().expect("half-open probe");
        assert_eq!(
            b.state(),
            State::HalfOpen {
                probe_in_flight: true
            }
        );
        drop(probe);
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_at_a_time_and_success_closes() {
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().expect("probe");
        // Concurrent callers during the probe are refused.
        for _ in 0..5 {
            assert!(b.try_acquire().is_err());
        }
        assert!(b.is_open());
        probe.record(false);
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert!(b.try_acquire().is_ok());
        assert_eq!(b.transitions(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_the_full_duration() {
        let b = CircuitBreaker::new(2, Duration::from_secs(10));
        fail(&b);
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.try_acquire().expect("probe").record(true);
        assert!(matches!(b.state(), State::Open { .. }));
        assert_eq!(b.try_acquire().map(|_| ()), Err(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot() {
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        drop(b.try_acquire().expect("probe"));
        assert_eq!(
            b.state(),
            State::HalfOpen {
                probe_in_flight: false
            }
        );
        b.try_acquire().expect("next probe").record(false);
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_do_not_change_an_open_breaker() {
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        let early = b.try_acquire().expect("allowed");
        fail(&b);
        early.record(false);
        assert!(matches!(b.state(), State::Open { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_stays_open_until_the_last_instant_of_its_period() {
        let b = CircuitBreaker::new(1, Duration::from_secs(60));
        fail(&b);
        tokio::time::advance(Duration::from_secs(60) - Duration::from_millis(1)).await;
        assert!(b.is_open());
        assert!(b.try_acquire().is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        // The period is over: readiness and the next caller agree that the probe may go.
        assert!(!b.is_open());
        let probe = b.try_acquire().expect("the half-open probe");
        assert!(b.is_open());
        drop(probe);
    }

    /// A call let through while closed and answered after the breaker opened again and sent its probe: its
    /// failure is not the probe's, so it neither re-opens the breaker nor ends the probe.
    #[tokio::test(start_paused = true)]
    async fn a_late_failure_does_not_decide_the_probe() {
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        let early = b.try_acquire().expect("allowed while closed");
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().expect("probe");
        early.record(true);
        assert_eq!(
            b.state(),
            State::HalfOpen {
                probe_in_flight: true
            }
        );
        probe.record(false);
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert_eq!(b.transitions(), 3);
    }

    /// As above for a late success: only the probe's own success closes the breaker.
    #[tokio::test(start_paused = true)]
    async fn a_late_success_does_not_decide_the_probe() {
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        let early = b.try_acquire().expect("allowed while closed");
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().expect("probe");
        early.record(false);
        assert_eq!(
            b.state(),
            State::HalfOpen {
                probe_in_flight: true
            }
        );
        probe.record(true);
        assert!(matches!(b.state(), State::Open { .. }));
        assert_eq!(b.transitions(), 3);
    }

    /// Only the probe's own permit frees the probe slot when dropped unrecorded; an older permit going away
    /// must not let a second probe through.
    #[tokio::test(start_paused = true)]
    async fn dropping_a_permit_that_is_not_the_probe_keeps_the_probe_slot_taken() {
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        let early = b.try_acquire().expect("allowed while closed");
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().expect("probe");
        drop(early);
        assert_eq!(
            b.state(),
            State::HalfOpen {
                probe_in_flight: true
            }
        );
        assert_eq!(b.try_acquire().map(|_| ()), Err(Duration::from_secs(1)));
        drop(probe);
        assert!(b.try_acquire().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn state_changes_are_logged_with_the_textbook_state_names() {
        let logs = Logs::default();
        let _capture = logs.capture();
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.try_acquire().expect("probe").record(false);
        fail(&b);
        tokio::time::advance(Duration::from_secs(10)).await;
        b.try_acquire().expect("probe").record(true);
        let changes: Vec<(String, String, String)> = logs
            .lines()
            .iter()
            .filter(|line| line["message"] == "circuit breaker state change")
            .map(|line| {
                let text = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
                (text("level"), text("from"), text("to"))
            })
            .collect();
        let expected = [
            ("WARN", "closed", "open"),
            ("INFO", "open", "half_open"),
            ("INFO", "half_open", "closed"),
            ("WARN", "closed", "open"),
            ("INFO", "open", "half_open"),
            ("WARN", "half_open", "open"),
        ]
        .map(|(level, from, to)| (level.to_owned(), from.to_owned(), to.to_owned()));
        assert_eq!(changes, expected);
        assert_eq!(b.transitions(), 6);
    }

    /// The circuit_breaker_state gauge's values, as the metrics help text and the contract give them.
    #[tokio::test(start_paused = true)]
    async fn the_gauge_reads_0_closed_1_open_2_half_open() {
        let b = CircuitBreaker::new(1, Duration::from_secs(10));
        assert_eq!(b.state().code(), 0);
        fail(&b);
        assert_eq!(b.state().code(), 1);
        tokio::time::advance(Duration::from_secs(10)).await;
        let probe = b.try_acquire().expect("probe");
        assert_eq!(b.state().code(), 2);
        probe.record(false);
        assert_eq!(b.state().code(), 0);
    }
}
