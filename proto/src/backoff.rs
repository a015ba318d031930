//! Reconnect delays for a registry's clients (the syncer's publishers, a
//! follower): exponential, capped, with full jitter.

use std::time::Duration;

/// Reconnect delays: exponential from `min` to `max`, full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The first delay, and the least of any.
    pub min: Duration,
    /// The most any delay grows to.
    pub max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Delays from `min` to `max`, starting at the first attempt.
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            attempt: 0,
        }
    }

    /// The next delay: uniform in [min, min * 2^attempt] capped at max, so
    /// a fleet of syncers does not reconnect in step after an outage.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let span = u64::try_from(ceiling.saturating_sub(self.min).as_millis()).unwrap_or(u64::MAX);
        self.min + Duration::from_millis(fastrand::u64(0..=span))
    }

    /// Back to the first attempt, after a connection that worked.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}
