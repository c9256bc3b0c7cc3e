//! Exponential backoff with jitter, shared by retries and failure accrual.
//!
//! The `n`th wait (from 0) is `min * 2^n`, capped at `max`, plus a random extra of up
//! to `jitter` times that base. Jitter spreads out proxies that failed together, so
//! they do not all come back at the same instant.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff parameters, as the control plane sends them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExponentialBackoff {
    /// The first wait.
    pub min: Duration,
    /// The longest wait before jitter.
    pub max: Duration,
    /// Up to this fraction of the base wait is added at random (0 for none).
    pub jitter: f64,
}

/// Why backoff parameters are unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BackoffError {
    /// `max_backoff` is shorter than `min_backoff`.
    #[error("max_backoff {max:?} is shorter than min_backoff {min:?}")]
    Reversed {
        /// The minimum.
        min: Duration,
        /// The maximum.
        max: Duration,
    },
    /// The jitter ratio is negative or not a number.
    #[error("jitter_ratio {0} is not a non-negative number")]
    Jitter(String),
}

impl ExponentialBackoff {
    /// Checked parameters.
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Result<Self, BackoffError> {
        if max < min {
            return Err(BackoffError::Reversed { min, max });
        }
        if !jitter.is_finite() || jitter < 0.0 {
            return Err(BackoffError::Jitter(jitter.to_string()));
        }
        Ok(Self { min, max, jitter })
    }

    /// The wait before the `n`th retry or probe (from 0), without jitter.
    pub fn base(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.min.saturating_mul(factor).min(self.max)
    }

    /// The wait before the `n`th retry or probe (from 0), with jitter from `rng`.
    pub fn wait<R: Rng + ?Sized>(&self, n: u32, rng: &mut R) -> Duration {
        let base = self.base(n);
        if self.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        let extra = base.mul_f64(self.jitter * rng.random::<f64>());
        base.saturating_add(extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn waits_double_up_to_the_maximum() {
        let b = ExponentialBackoff::new(ms(25), ms(250), 0.0).unwrap();
        let waits: Vec<_> = (0..6).map(|n| b.base(n)).collect();
        assert_eq!(waits, [ms(25), ms(50), ms(100), ms(200), ms(250), ms(250)]);
        assert_eq!(b.base(200), ms(250), "huge exponents saturate");
        assert_eq!(b.wait(3, &mut rand::rng()), ms(200), "no jitter, no noise");
    }

    #[test]
    fn jitter_adds_at_most_its_ratio() {
        let b = ExponentialBackoff::new(ms(100), ms(1000), 0.5).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        let waits: Vec<_> = (0..200).map(|_| b.wait(1, &mut rng)).collect();
        assert!(waits.iter().all(|w| *w >= ms(200) && *w <= ms(300)));
        assert!(waits.iter().any(|w| *w > ms(250)), "jitter is spread out");
    }

    #[test]
    fn bad_parameters_are_named() {
        assert_eq!(
            ExponentialBackoff::new(ms(2), ms(1), 0.0).unwrap_err(),
            BackoffError::Reversed {
                min: ms(2),
                max: ms(1)
            }
        );
        assert!(
            ExponentialBackoff::new(ms(1), ms(2), f64::NAN)
                .unwrap_err()
                .to_string()
                .contains("jitter_ratio NaN")
        );
    }
}
