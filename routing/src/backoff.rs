//! The wait between two attempts: exponential, with jitter.
//!
//! Every retry loop in tessera — the router's, the SDK's failover between
//! routers, the directory connection, the stores' Raft streams — waits by
//! this one rule: the n-th wait (1-based) is drawn uniformly between half
//! of and the full `min · 2ⁿ⁻¹`, capped at `max`. The jitter keeps clients
//! that failed together from retrying together; the floor of half keeps a
//! wait from collapsing to nothing.

use std::time::Duration;

use rand::Rng as _;

/// The wait between two attempts of an operation: exponential with jitter.
///
/// The n-th wait is drawn between half of and the full `min · 2ⁿ⁻¹`,
/// capped at `max`; no wait outlasts the operation's deadline.
///
/// ```
/// use std::time::Duration;
/// use tessera_routing::Backoff;
///
/// let b = Backoff::default();
/// assert_eq!(b.min, Duration::from_millis(20));
/// assert_eq!(b.max, Duration::from_secs(1));
/// let third = b.delay(3);
/// assert!(third >= Duration::from_millis(40) && third <= Duration::from_millis(80));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait (before jitter). Must be positive.
    pub min: Duration,
    /// The longest wait. Must not be below `min`.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min: Duration::from_millis(20),
            max: Duration::from_secs(1),
        }
    }
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Backoff { min, max }
    }

    /// The ceiling of the `failures`-th wait: `min · 2ⁿ⁻¹`, capped at `max`.
    pub fn ceiling(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(24);
        self.min.saturating_mul(1u32 << exponent).min(self.max)
    }

    /// The wait after the `failures`-th failed attempt (1-based): between
    /// half of and the full [`Backoff::ceiling`].
    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::rng().random_range(0..=spread))
    }

    /// Sleeps the `failures`-th wait.
    pub async fn wait(&self, failures: u32) {
        tokio::time::sleep(self.delay(failures)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_with_jitter_and_are_capped() {
        let b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        for failures in 1..40 {
            let ceiling = b.ceiling(failures);
            let d = b.delay(failures);
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{failures}: {d:?} of {ceiling:?}"
            );
        }
        assert_eq!(b.ceiling(1), Duration::from_millis(10));
        assert_eq!(b.ceiling(3), Duration::from_millis(40));
        assert_eq!(b.ceiling(5), Duration::from_millis(100));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(100));
        let spread: std::collections::BTreeSet<Duration> = (0..50).map(|_| b.delay(4)).collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
