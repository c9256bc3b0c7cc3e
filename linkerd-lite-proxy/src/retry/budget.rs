//! Retry budgets: retries may add at most `retry_ratio` times the requests of the
//! last `ttl`, plus `min_retries_per_second` (Linkerd's semantics). A budget is
//! shared by every request to one target, so a failing backend cannot be hammered
//! by retries: under a 100 % failure storm, retries stay at the ratio.
//!
//! The window is ten buckets of `ttl / 10`, rotated lazily on use. Only requests on
//! routes with retries touch it, under a short lock never held across an await.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Budget parameters, from `Destination.GetProfile`'s `retry_budget`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetParams {
    /// Retries allowed per request over the window (0.2: one retry per five
    /// requests).
    pub ratio: f64,
    /// Retries always allowed per second, whatever the ratio says.
    pub min_per_second: u32,
    /// The window requests and retries are counted over.
    pub ttl: Duration,
}

impl Default for BudgetParams {
    /// Linkerd's defaults: 20 %, at least 10 retries per second, over 10 s.
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_second: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl BudgetParams {
    /// Parameters from a profile's `retry_budget`; out-of-range values fall back to
    /// the defaults, field by field, with a warning.
    pub fn from_proto(b: &linkerd2_proxy_api::destination::RetryBudget) -> Self {
        let d = Self::default();
        let ratio = f64::from(b.retry_ratio);
        let ratio = if ratio.is_finite() && (0.0..=1000.0).contains(&ratio) {
            ratio
        } else {
            tracing::warn!(
                retry_ratio = ratio,
                "profile retry_budget.retry_ratio is out of range; using the default"
            );
            d.ratio
        };
        let ttl = match b.ttl.map(Duration::try_from) {
            Some(Ok(ttl)) if !ttl.is_zero() && ttl <= Duration::from_secs(3600) => ttl,
            None => d.ttl,
            Some(_) => {
                tracing::warn!(
                    "profile retry_budget.ttl is not a duration from 1 ns to 1 h; using the default"
                );
                d.ttl
            }
        };
        Self {
            ratio,
            min_per_second: b.min_retries_per_second,
            ttl,
        }
    }
}

const BUCKETS: usize = 10;

#[derive(Debug)]
struct Window {
    params: BudgetParams,
    deposits: [u64; BUCKETS],
    withdrawals: [u64; BUCKETS],
    current: usize,
    current_start: Instant,
}

impl Window {
    fn bucket_len(&self) -> Duration {
        (self.params.ttl / BUCKETS as u32).max(Duration::from_nanos(1))
    }

    /// Moves the current bucket forward to `now`, clearing the buckets passed.
    fn rotate(&mut self, now: Instant) {
        let len = self.bucket_len();
        let elapsed = now.saturating_duration_since(self.current_start);
        let steps = elapsed.as_nanos() / len.as_nanos();
        if steps == 0 {
            return;
        }
        if steps >= BUCKETS as u128 {
            self.deposits = [0; BUCKETS];
            self.withdrawals = [0; BUCKETS];
            self.current_start = now;
            return;
        }
        for _ in 0..steps {
            self.current = (self.current + 1) % BUCKETS;
            self.deposits[self.current] = 0;
            self.withdrawals[self.current] = 0;
        }
        // `steps` < BUCKETS, so this fits.
        self.current_start += len * (steps as u32);
    }
}

/// A retry budget shared by every request to one target.
#[derive(Debug)]
pub struct RetryBudget {
    window: Mutex<Window>,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(BudgetParams::default())
    }
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(params: BudgetParams) -> Self {
        Self {
            window: Mutex::new(Window {
                params,
                deposits: [0; BUCKETS],
                withdrawals: [0; BUCKETS],
                current: 0,
                current_start: Instant::now(),
            }),
        }
    }

    /// Adopts new parameters (a profile update); a new `ttl` starts a new window.
    pub fn configure(&self, params: BudgetParams) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.params == params {
            return;
        }
        if w.params.ttl != params.ttl {
            w.deposits = [0; BUCKETS];
            w.withdrawals = [0; BUCKETS];
            w.current_start = Instant::now();
        }
        w.params = params;
    }

    /// Counts a request.
    pub fn deposit(&self) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.rotate(Instant::now());
        let i = w.current;
        w.deposits[i] += 1;
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn withdraw(&self) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.rotate(Instant::now());
        let deposits: u64 = w.deposits.iter().sum();
        let withdrawals: u64 = w.withdrawals.iter().sum();
        let reserve = f64::from(w.params.min_per_second) * w.params.ttl.as_secs_f64();
        let allowed = w.params.ratio * deposits as f64 + reserve;
        if (withdrawals + 1) as f64 > allowed {
            return false;
        }
        let i = w.current;
        w.withdrawals[i] += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(ratio: f64, min: u32, ttl_secs: u64) -> BudgetParams {
        BudgetParams {
            ratio,
            min_per_second: min,
            ttl: Duration::from_secs(ttl_secs),
        }
    }

    fn retries_allowed(b: &RetryBudget) -> usize {
        std::iter::from_fn(|| b.withdraw().then_some(())).count()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_ratio_of_requests_plus_a_reserve() {
        let b = RetryBudget::new(params(0.2, 0, 10));
        assert_eq!(retries_allowed(&b), 0, "no requests, no reserve");
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(retries_allowed(&b), 20);
        b.configure(params(0.2, 1, 10));
        assert_eq!(retries_allowed(&b), 10, "1/s over 10 s");
    }

    #[tokio::test(start_paused = true)]
    async fn old_requests_and_retries_leave_the_window() {
        let b = RetryBudget::new(params(0.5, 0, 10));
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(retries_allowed(&b), 5);
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..10 {
            b.deposit();
        }
        assert_eq!(
            retries_allowed(&b),
            5,
            "20 requests, 5 retries already used"
        );
        // The first 10 requests and their 5 retries expire after the ttl.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            retries_allowed(&b),
            0,
            "10 requests, 5 retries in the window"
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.withdraw(), "everything expired");
        for _ in 0..4 {
            b.deposit();
        }
        assert_eq!(retries_allowed(&b), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_ttl_starts_a_new_window() {
        let b = RetryBudget::new(params(1.0, 0, 10));
        for _ in 0..10 {
            b.deposit();
        }
        b.configure(params(1.0, 0, 1));
        assert_eq!(retries_allowed(&b), 0);
    }

    #[test]
    fn profile_budgets_are_checked() {
        use linkerd2_proxy_api::destination::RetryBudget as Proto;
        let p = BudgetParams::from_proto(&Proto {
            retry_ratio: 0.5,
            min_retries_per_second: 3,
            ttl: Some(prost_types::Duration {
                seconds: 2,
                nanos: 0,
            }),
        });
        assert_eq!(p, params(0.5, 3, 2));
        let p = BudgetParams::from_proto(&Proto {
            retry_ratio: f32::NAN,
            min_retries_per_second: 0,
            ttl: Some(prost_types::Duration {
                seconds: -1,
                nanos: 0,
            }),
        });
        assert_eq!(p, params(0.2, 0, 10));
    }
}
