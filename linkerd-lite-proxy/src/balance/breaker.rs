//! Failure accrual: a circuit breaker per endpoint, kept in atomics so that a p2c
//! pick over healthy endpoints costs one relaxed load per candidate.
//!
//! After `max_failures` consecutive failures (a 5xx or an error) the breaker opens:
//! the endpoint leaves the ready set for a backoff. When the backoff has passed, the
//! next pick that draws it takes the one probe (half-open). A successful probe closes
//! the breaker; a failed one re-opens it with the next, longer backoff.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::backoff::ExponentialBackoff;

/// Failure accrual settings, as an outbound policy sets them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FailureAccrual {
    /// Consecutive failures that open the breaker; at least 1.
    pub max_failures: u32,
    /// The ejection time, growing with each failed probe.
    pub backoff: ExponentialBackoff,
}

/// The settings a balancer's breakers read, changeable while they run.
#[derive(Debug, Default)]
pub(crate) struct AccrualCell {
    /// 0 turns failure accrual off.
    max_failures: AtomicU32,
    min_ms: AtomicU64,
    max_ms: AtomicU64,
    /// The jitter ratio, in thousandths.
    jitter_milli: AtomicU32,
}

impl AccrualCell {
    pub(crate) fn set(&self, accrual: Option<FailureAccrual>) {
        let Some(a) = accrual else {
            self.max_failures.store(0, Ordering::Relaxed);
            return;
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        self.min_ms.store(ms(a.backoff.min), Ordering::Relaxed);
        self.max_ms.store(ms(a.backoff.max), Ordering::Relaxed);
        let jitter = (a.backoff.jitter * 1000.0).clamp(0.0, f64::from(u32::MAX)) as u32;
        self.jitter_milli.store(jitter, Ordering::Relaxed);
        self.max_failures.store(a.max_failures, Ordering::Relaxed);
    }

    fn max_failures(&self) -> u32 {
        self.max_failures.load(Ordering::Relaxed)
    }

    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBackoff {
            min: Duration::from_millis(self.min_ms.load(Ordering::Relaxed)),
            max: Duration::from_millis(self.max_ms.load(Ordering::Relaxed)),
            jitter: f64::from(self.jitter_milli.load(Ordering::Relaxed)) / 1000.0,
        }
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const PROBING: u8 = 2;

/// Whether an endpoint may take a request now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Avail {
    /// Closed: take it.
    Ready,
    /// Open, and its backoff has passed: one request may probe it.
    Probe,
    /// Open until this many milliseconds after the epoch, or being probed (`None`).
    Ejected(Option<u64>),
}

/// What a recorded outcome changed, for logging and waking waiters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transition {
    /// The breaker opened (or re-opened after a failed probe) for this long.
    Opened(Duration),
    /// A probe succeeded: the endpoint is back.
    Closed,
}

/// One endpoint's breaker. Times are milliseconds since the balancer's epoch.
#[derive(Debug, Default)]
pub(crate) struct Breaker {
    state: AtomicU8,
    failures: AtomicU32,
    /// Failed probes since the breaker last closed; picks the backoff step.
    trips: AtomicU32,
    reopen_at_ms: AtomicU64,
}

impl Breaker {
    /// Whether the endpoint may take a request; `now_ms` is only read when the
    /// breaker is not closed.
    pub(crate) fn avail(&self, now_ms: impl FnOnce() -> u64) -> Avail {
        match self.state.load(Ordering::Acquire) {
            CLOSED => Avail::Ready,
            OPEN => {
                let at = self.reopen_at_ms.load(Ordering::Acquire);
                if now_ms() >= at {
                    Avail::Probe
                } else {
                    Avail::Ejected(Some(at))
                }
            }
            _ => Avail::Ejected(None),
        }
    }

    /// Takes the probe of an open endpoint; false when another request took it.
    pub(crate) fn claim_probe(&self) -> bool {
        self.state
            .compare_exchange(OPEN, PROBING, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// A probe ended without an outcome (the request was cancelled): let the next
    /// request probe at once.
    pub(crate) fn probe_abandoned(&self, now_ms: u64) {
        self.reopen_at_ms.store(now_ms, Ordering::Release);
        let _ = self
            .state
            .compare_exchange(PROBING, OPEN, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Records a response (`success` false for a 5xx or an error). Only the probe's
    /// outcome moves an open breaker; late answers of requests sent before it opened
    /// do not.
    pub(crate) fn record(
        &self,
        success: bool,
        probe: bool,
        accrual: &AccrualCell,
        now_ms: impl FnOnce() -> u64,
    ) -> Option<Transition> {
        let max = accrual.max_failures();
        if max == 0 {
            // Accrual was turned off: whatever was open closes on its next answer.
            if self.state.load(Ordering::Relaxed) == CLOSED {
                return None;
            }
            return Some(self.close());
        }
        if success {
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return probe.then(|| self.close());
        }
        if probe {
            let trips = self.trips.fetch_add(1, Ordering::Relaxed).saturating_add(1);
            return Some(self.open(trips, accrual, now_ms()));
        }
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures < max || self.state.load(Ordering::Acquire) != CLOSED {
            return None;
        }
        self.trips.store(0, Ordering::Relaxed);
        // Only one of several concurrent failures opens the breaker.
        if self
            .state
            .compare_exchange(CLOSED, PROBING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        Some(self.open(0, accrual, now_ms()))
    }

    fn close(&self) -> Transition {
        self.failures.store(0, Ordering::Relaxed);
        self.trips.store(0, Ordering::Relaxed);
        self.state.store(CLOSED, Ordering::Release);
        Transition::Closed
    }

    fn open(&self, step: u32, accrual: &AccrualCell, now_ms: u64) -> Transition {
        let wait = accrual.backoff().wait(step, &mut rand::rng());
        let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
        self.failures.store(0, Ordering::Relaxed);
        self.reopen_at_ms
            .store(now_ms.saturating_add(wait_ms), Ordering::Release);
        self.state.store(OPEN, Ordering::Release);
        Transition::Opened(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accrual(max: u32) -> AccrualCell {
        let cell = AccrualCell::default();
        cell.set(Some(FailureAccrual {
            max_failures: max,
            backoff: ExponentialBackoff::new(Duration::from_secs(1), Duration::from_secs(4), 0.0)
                .unwrap(),
        }));
        cell
    }

    #[test]
    fn consecutive_failures_open_and_a_success_resets_the_count() {
        let a = accrual(3);
        let b = Breaker::default();
        let now = || 0;
        assert_eq!(b.record(false, false, &a, now), None);
        assert_eq!(b.record(false, false, &a, now), None);
        assert_eq!(b.record(true, false, &a, now), None, "a success resets");
        assert_eq!(b.record(false, false, &a, now), None);
        assert_eq!(b.record(false, false, &a, now), None);
        assert_eq!(
            b.record(false, false, &a, now),
            Some(Transition::Opened(Duration::from_secs(1)))
        );
        assert_eq!(b.avail(|| 999), Avail::Ejected(Some(1000)));
        assert_eq!(b.avail(|| 1000), Avail::Probe);
    }

    #[test]
    fn failed_probes_back_off_longer_and_a_good_probe_closes() {
        let a = accrual(1);
        let b = Breaker::default();
        assert!(matches!(
            b.record(false, false, &a, || 0),
            Some(Transition::Opened(_))
        ));
        assert!(b.claim_probe());
        assert!(!b.claim_probe(), "one probe at a time");
        assert_eq!(b.avail(|| 5000), Avail::Ejected(None));
        let waits: Vec<_> = (0..3)
            .map(|_| {
                let t = b.record(false, true, &a, || 1000);
                assert!(b.claim_probe());
                t
            })
            .collect();
        let secs = |s| Some(Transition::Opened(Duration::from_secs(s)));
        assert_eq!(waits, vec![secs(2), secs(4), secs(4)]);
        assert_eq!(b.record(true, true, &a, || 0), Some(Transition::Closed));
        assert_eq!(b.avail(|| 0), Avail::Ready);
        // After closing, the backoff starts over.
        assert_eq!(b.record(false, false, &a, || 0), secs(1));
    }

    #[test]
    fn late_answers_do_not_move_an_open_breaker_and_abandoned_probes_reopen() {
        let a = accrual(1);
        let b = Breaker::default();
        b.record(false, false, &a, || 0);
        assert_eq!(b.record(true, false, &a, || 0), None);
        assert_eq!(b.record(false, false, &a, || 0), None);
        assert_eq!(b.avail(|| 10), Avail::Ejected(Some(1000)));
        assert!(b.claim_probe());
        b.probe_abandoned(1500);
        assert_eq!(b.avail(|| 1500), Avail::Probe);
    }

    #[test]
    fn disabled_accrual_never_opens_and_closes_what_was_open() {
        let a = accrual(1);
        let b = Breaker::default();
        b.record(false, false, &a, || 0);
        a.set(None);
        assert_eq!(b.record(false, false, &a, || 0), Some(Transition::Closed));
        for _ in 0..10 {
            assert_eq!(b.record(false, false, &a, || 0), None);
        }
        assert_eq!(b.avail(|| 0), Avail::Ready);
    }
}
