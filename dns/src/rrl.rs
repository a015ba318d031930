//! Response rate limiting (RRL) for DNS over UDP, after Knot's `rrl`
//! module: a token bucket per source prefix (/24 for IPv4, /56 for IPv6)
//! refilled at `--rrl-rate` responses a second, holding at most one
//! second's worth. A response over the rate is dropped, except every
//! `--rrl-slip`th one, which goes out truncated (TC set, no records) so a
//! real client behind a spoofed prefix retries over TCP and gets its
//! answer. Replies to queries with a valid server cookie are not limited
//! (their source is proven); TCP is never limited.
//!
//! The buckets are a fixed table of [`TABLE_BUCKETS`] atomics indexed by a
//! seeded hash of the prefix, like Knot's: an attacker spraying source
//! addresses cannot make it grow, and cannot aim collisions at a victim's
//! prefix without the seed. Prefixes that share a bucket share its rate,
//! which errs on the side of limiting. One table serves every UDP worker,
//! so the rate holds across the SO_REUSEPORT sockets; a check is one load
//! and one compare-and-swap, no lock.

// The answer path: every narrowing cast and every panic is written out.
#![warn(clippy::cast_possible_truncation, clippy::expect_used)]

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Buckets in the table: 2^18 = 262,144 of 8 bytes, 2 MiB, allocated only
/// when `--rrl-rate` is set.
pub const TABLE_BUCKETS: usize = 1 << 18;
/// Highest `--rrl-rate`: a second's worth of milli-tokens fits 32 bits.
pub const MAX_RATE: u32 = 1_000_000;
/// Highest `--rrl-slip`.
pub const MAX_SLIP: u32 = 100;
/// A token, in the milli-tokens a bucket counts.
const TOKEN: u64 = 1000;
/// How far (ms) a bucket's stamp may be ahead of a worker's clock reading.
const CLOCK_SKEW: u32 = 60_000;

/// What to do with a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Send,
    /// Over the rate: send it truncated.
    Slip,
    /// Over the rate: send nothing.
    Drop,
}

/// The shared bucket table.
pub struct RateLimiter {
    /// Per bucket: the time it was last filled (milliseconds since
    /// `start`, 32 bits wrapping) in the high half, and the milli-tokens
    /// spent in the low half (0 is a full bucket, so a zeroed table starts
    /// full).
    buckets: Box<[AtomicU64]>,
    rate: u32,
    slip: u32,
    hasher: foldhash::fast::RandomState,
    start: Instant,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("slip", &self.slip)
            .field("buckets", &self.buckets.len())
            .finish_non_exhaustive()
    }
}

impl RateLimiter {
    /// A limiter of `rate` responses a second per prefix (1 to
    /// [`MAX_RATE`]) that lets every `slip`th limited response out
    /// truncated (0: none).
    pub fn new(rate: u32, slip: u32) -> Self {
        RateLimiter {
            buckets: (0..TABLE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            rate: rate.clamp(1, MAX_RATE),
            slip: slip.min(MAX_SLIP),
            hasher: foldhash::fast::RandomState::default(),
            start: Instant::now(),
        }
    }

    /// The limiter's clock, in milliseconds: read once per batch.
    pub fn now(&self) -> u32 {
        // Wraps after 49 days; buckets compare times with wrapping arithmetic.
        #[allow(clippy::cast_possible_truncation)]
        let now = self.start.elapsed().as_millis() as u32;
        now
    }

    /// Takes a token for a response to `source` at `now` ([`Self::now`]);
    /// `false` when its prefix is over the rate.
    pub fn allow(&self, source: IpAddr, now: u32) -> bool {
        // Any bits of the hash pick a bucket as well as any others.
        #[allow(clippy::cast_possible_truncation)]
        let index = self.hasher.hash_one(prefix(source)) as usize % self.buckets.len();
        let bucket = &self.buckets[index];
        let full = u64::from(self.rate) * TOKEN;
        let mut current = bucket.load(Ordering::Relaxed);
        loop {
            let (filled, spent) = ((current >> 32) as u32, current & 0xffff_ffff);
            // Another worker's batch may have started a little later and
            // stamped the bucket ahead of `now`: that is no time passing,
            // not a wrap of the clock.
            let (elapsed, stamp) = match now.wrapping_sub(filled) {
                d if d > u32::MAX - CLOCK_SKEW => (0, filled),
                d => (u64::from(d), now),
            };
            // `rate` tokens a second is `rate` milli-tokens a millisecond.
            let spent = spent.saturating_sub(elapsed * u64::from(self.rate));
            if spent + TOKEN > full {
                return false;
            }
            let next = (u64::from(stamp) << 32) | (spent + TOKEN);
            match bucket.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => current = seen,
            }
        }
    }

    /// A worker's slip counter; each worker keeps its own.
    pub fn slipper(&self) -> Slipper {
        Slipper {
            every: self.slip,
            limited: 0,
        }
    }
}

/// Counts one worker's limited responses: every `every`th slips.
#[derive(Debug)]
pub struct Slipper {
    every: u32,
    limited: u32,
}

impl Slipper {
    /// The verdict for the next limited response.
    pub fn limited(&mut self) -> Verdict {
        if self.every == 0 {
            return Verdict::Drop;
        }
        self.limited = (self.limited + 1) % self.every;
        if self.limited == 0 {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

/// The limited prefix of an address: /24 of IPv4 (IPv4-mapped included),
/// /56 of IPv6, tagged apart.
fn prefix(source: IpAddr) -> u64 {
    match source.to_canonical() {
        IpAddr::V4(v4) => (1 << 63) | u64::from(u32::from(v4) >> 8),
        IpAddr::V6(v6) => (u128::from(v6) >> 72) as u64,
    }
}

/// Turns a reply into its truncated form in place: the header with TC set
/// and no records, the question, and the reply's OPT record if it had one
/// (EDNS, a server cookie the client can present next time). Replies are
/// our own, so walking them only has to be safe, not general: anything
/// unexpected leaves just the header and question.
pub fn truncate(reply: &mut Vec<u8>) {
    if reply.len() < 12 {
        return;
    }
    let count = |at: usize| u16::from_be_bytes([reply[at], reply[at + 1]]);
    let questions = count(4);
    let records = usize::from(count(6)) + usize::from(count(8)) + usize::from(count(10));
    let mut at = 12;
    for _ in 0..questions {
        match skip_name(reply, at) {
            Some(end) if end + 4 <= reply.len() => at = end + 4,
            _ => {
                finish(reply, 12, 0, None);
                return;
            }
        }
    }
    let question_end = at;
    let mut opt = None;
    for _ in 0..records {
        let Some(start) = skip_name(reply, at) else {
            break;
        };
        if start + 10 > reply.len() {
            break;
        }
        let rtype = u16::from_be_bytes([reply[start], reply[start + 1]]);
        let rdlen = usize::from(u16::from_be_bytes([reply[start + 8], reply[start + 9]]));
        let end = start + 10 + rdlen;
        if end > reply.len() {
            break;
        }
        if rtype == 41 {
            opt = Some((at, end));
        }
        at = end;
    }
    finish(reply, question_end, questions, opt);
}

fn finish(reply: &mut Vec<u8>, question_end: usize, questions: u16, opt: Option<(usize, usize)>) {
    let mut end = question_end;
    if let Some((start, stop)) = opt {
        reply.copy_within(start..stop, question_end);
        end += stop - start;
    }
    reply.truncate(end);
    reply[2] |= 0x02;
    reply[4..6].copy_from_slice(&questions.to_be_bytes());
    reply[6..10].fill(0);
    reply[10..12].copy_from_slice(&u16::from(opt.is_some()).to_be_bytes());
}

/// The offset after the name at `at` (labels, ending in a zero byte or a
/// compression pointer).
fn skip_name(packet: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *packet.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return (at + 2 <= packet.len()).then_some(at + 2),
            l if l & 0xc0 != 0 => return None,
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    // The answer-path lints of this module are for its code, not its tests.
    #![allow(
        clippy::unwrap_used,
        clippy::cast_possible_truncation,
        clippy::expect_used
    )]

    use super::*;

    #[test]
    fn a_prefix_gets_its_rate_and_refills() {
        let rrl = RateLimiter::new(10, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let same: IpAddr = "192.0.2.200".parse().unwrap();
        let other: IpAddr = "192.0.3.1".parse().unwrap();
        let allowed = (0..100)
            .filter(|i| rrl.allow(if i % 2 == 0 { a } else { same }, 5))
            .count();
        assert_eq!(allowed, 10, "one /24 shares one bucket");
        assert!(rrl.allow(other, 5), "another /24 has its own");
        // 100 ms later: one more token (10 a second).
        assert!(rrl.allow(a, 105));
        assert!(!rrl.allow(a, 105));
        // A stamp a little ahead of a worker's clock is not a wrap.
        assert!(!rrl.allow(a, 100));
        // A second later the bucket is full again, not fuller.
        let allowed = (0..100).filter(|_| rrl.allow(a, 5000)).count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn ipv6_by_56() {
        let rrl = RateLimiter::new(1, 0);
        assert!(rrl.allow("2001:db8:0:100::1".parse().unwrap(), 0));
        assert!(!rrl.allow("2001:db8:0:1ff::2".parse().unwrap(), 0));
        assert!(rrl.allow("2001:db8:0:200::1".parse().unwrap(), 0));
        // IPv4-mapped is IPv4.
        assert!(rrl.allow("10.0.0.1".parse().unwrap(), 0));
        assert!(!rrl.allow("::ffff:10.0.0.9".parse().unwrap(), 0));
    }

    #[test]
    fn slip_ratio() {
        let verdicts = |slip| {
            let mut s = RateLimiter::new(1, slip).slipper();
            (0..6).map(|_| s.limited()).collect::<Vec<_>>()
        };
        use Verdict::{Drop, Slip};
        assert_eq!(verdicts(0), [Drop; 6]);
        assert_eq!(verdicts(1), [Slip; 6]);
        assert_eq!(verdicts(2), [Drop, Slip, Drop, Slip, Drop, Slip]);
        assert_eq!(verdicts(3), [Drop, Drop, Slip, Drop, Drop, Slip]);
    }

    #[test]
    fn truncation_keeps_question_and_opt() {
        // A reply: one question, two A answers, an OPT with a cookie.
        let mut reply = vec![0x12, 0x34, 0x85, 0x00, 0, 1, 0, 2, 0, 0, 0, 1];
        reply.extend_from_slice(b"\x03web\x04shop\x06global\x00\x00\x01\x00\x01");
        let question_end = reply.len();
        for last in [1u8, 2] {
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 10, 0, 0, last]);
        }
        let opt = [
            0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        reply.extend_from_slice(&opt);
        let mut expected = reply[..question_end].to_vec();
        expected[2] |= 0x02;
        expected[6..8].copy_from_slice(&[0, 0]);
        expected.extend_from_slice(&opt);
        truncate(&mut reply);
        assert_eq!(reply, expected);
        // Without an OPT: header and question.
        let mut plain = expected[..question_end].to_vec();
        plain[11] = 0;
        let want = plain.clone();
        truncate(&mut plain);
        assert_eq!(plain, want);
        // Garbage does not panic.
        for len in 0..40 {
            let mut junk: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            truncate(&mut junk);
        }
    }
}
