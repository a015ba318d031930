//! Per-client-address token buckets for the registration API, in a
//! bounded table: one client's flood (bad tokens, bad bodies) spends its
//! own bucket, never another client's.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most client addresses tracked at once; past it, idle (full) buckets
/// are dropped first, then one at random.
pub const MAX_CLIENTS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// `rate` requests a second per client (an address, or a token after
/// authentication), bursts of `burst`.
#[derive(Debug)]
pub struct RateLimit<K = IpAddr> {
    rate: f64,
    burst: f64,
    max_clients: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimit<K> {
    pub fn new(rate: u32, burst: u32, max_clients: usize) -> Self {
        RateLimit {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Spends one request of `client`'s; false when it has none left.
    pub fn allow(&self, client: K, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(&client) && buckets.len() >= self.max_clients {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if buckets.len() >= self.max_clients {
                let victim = buckets
                    .keys()
                    .nth(fastrand::usize(..buckets.len()))
                    .cloned();
                if let Some(victim) = victim {
                    buckets.remove(&victim);
                }
            }
        }
        let bucket = buckets.entry(client).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    pub fn clients(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_flood_does_not_spend_another_clients_bucket() {
        let limit = RateLimit::new(10, 5, 16);
        let now = Instant::now();
        let flood: IpAddr = "10.0.0.1".parse().unwrap();
        let good: IpAddr = "10.0.0.2".parse().unwrap();
        let allowed = (0..100).filter(|_| limit.allow(flood, now)).count();
        assert_eq!(allowed, 5);
        assert!(limit.allow(good, now));
        // Refills at the rate.
        assert!(limit.allow(flood, now + Duration::from_millis(150)));
    }

    /// Finding 8: after authentication a token has one bucket whatever
    /// address it comes from.
    #[test]
    fn a_token_has_one_bucket() {
        let limit = RateLimit::<String>::new(1, 2, 16);
        let now = Instant::now();
        assert!(limit.allow("owner".into(), now));
        assert!(limit.allow("owner".into(), now));
        assert!(!limit.allow("owner".into(), now));
        assert!(limit.allow("other".into(), now));
    }

    #[test]
    fn the_table_stays_bounded() {
        let limit = RateLimit::new(1, 1, 8);
        let now = Instant::now();
        for i in 0..100u8 {
            limit.allow(IpAddr::from([10, 0, 0, i]), now);
        }
        assert!(limit.clients() <= 8);
    }
}
