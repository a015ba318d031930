//! A token bucket: the cluster's API server sees at most `rate` writes a
//! second from the MCS writers, in bursts of at most `burst`.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// `rate` per second (> 0), `burst` at most at once (≥ 1).
    pub fn new(rate: f64, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// How long until a token is free (zero: take it now).
    pub fn wait(&mut self) -> Duration {
        self.refill(Instant::now());
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
        }
    }

    /// Waits for a token and takes it.
    pub async fn take(&mut self) {
        let wait = self.wait();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
            self.refill(Instant::now());
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_then_the_rate() {
        let mut b = Bucket::new(10.0, 5);
        for _ in 0..5 {
            assert_eq!(b.wait(), Duration::ZERO, "the burst goes at once");
            b.take().await;
        }
        // Empty: the next token is about 1/rate away, never more.
        let wait = b.wait();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }
}
