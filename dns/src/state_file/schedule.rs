//! When the state file is saved: once the registry has changed and then
//! settled, at most once per interval, spaced by the last save's duration,
//! and never more than [`MAX_BEHIND`] after a change was first seen.
//!
//! A reconnect storm publishes many times a second for seconds on end. A
//! save then (the whole state converted and written: a few hundred
//! milliseconds at a million endpoints) takes CPU from the storm and from
//! answering, and is out of date before it is written. So a save waits
//! for the serial to stay put for one poll ([`settled`](Schedule::due)),
//! unless the file would fall more than `MAX_BEHIND` behind. A quiet
//! registry that changes once saves within a poll or two of the change, as
//! before.

use std::time::Duration;

use tokio::time::Instant;

/// A save may take at most one part in `SAVE_DUTY` of the time.
const SAVE_DUTY: u32 = 10;

/// The longest a change waits for the registry to settle before it is
/// saved anyway: the file is never further behind than this (plus a poll
/// and a save) while the fleet keeps changing.
pub(super) const MAX_BEHIND: Duration = Duration::from_secs(10);

/// Polls of the serial per save interval: the serial unchanged over one
/// poll is a settled registry.
const POLLS: u32 = 4;

/// How long after the start of a save that took `took` the next may
/// start: a save of a big registry (a few hundred milliseconds at a
/// million endpoints) is not repeated every interval while the fleet
/// changes. A small registry saves every interval as before.
pub(super) fn pause_after(took: Duration) -> Duration {
    took.saturating_mul(SAVE_DUTY)
}

/// The saver's bookkeeping, fed the registry's serial at every poll.
#[derive(Debug)]
pub(super) struct Schedule {
    /// Saves start at least this far apart (`interval`).
    every: Duration,
    /// The serial the file holds.
    saved: u32,
    /// The serial at the last poll, and when it was first seen.
    last: u32,
    since: Instant,
    /// The first poll that saw a serial the file does not hold.
    behind: Option<Instant>,
    /// No save starts before this.
    not_before: Instant,
}

impl Schedule {
    /// A schedule for a file that holds `serial` as of `now`.
    pub(super) fn new(every: Duration, serial: u32, now: Instant) -> Self {
        Schedule {
            every,
            saved: serial,
            last: serial,
            since: now,
            behind: None,
            not_before: now,
        }
    }

    /// How often the serial is polled.
    pub(super) fn poll(&self) -> Duration {
        (self.every / POLLS).max(Duration::from_millis(1))
    }

    /// Whether to save now, the registry being at `serial`: it changed
    /// since the last save, the spacing allows it, and it has settled (the
    /// same serial a poll ago) or the file is `MAX_BEHIND` behind.
    pub(super) fn due(&mut self, now: Instant, serial: u32) -> bool {
        if serial != self.last {
            self.last = serial;
            self.since = now;
        }
        if serial == self.saved {
            self.behind = None;
            return false;
        }
        let behind = *self.behind.get_or_insert(now);
        let settled = now.saturating_duration_since(self.since) >= self.poll();
        let overdue = now.saturating_duration_since(behind) >= MAX_BEHIND;
        now >= self.not_before && (settled || overdue)
    }

    /// A save that started at `started` and took `took` wrote `serial`
    /// (`None`: it failed, and is tried again after the same spacing).
    pub(super) fn saved(&mut self, serial: Option<u32>, started: Instant, took: Duration) {
        if let Some(serial) = serial {
            self.saved = serial;
            self.behind = None;
        }
        self.not_before = started + self.every.max(pause_after(took));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(2);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_slow_save_spaces_the_next_and_a_quick_one_does_not() {
        // A million endpoints take a few hundred milliseconds to save.
        assert_eq!(pause_after(ms(400)), Duration::from_secs(4));
        // A small registry saves at every 2 s interval, as before.
        assert!(pause_after(ms(5)) < EVERY);
    }

    #[test]
    fn a_change_is_saved_once_it_settles() {
        let t0 = Instant::now();
        let mut s = Schedule::new(EVERY, 1, t0);
        assert!(!s.due(t0 + ms(500), 1), "nothing changed");
        assert!(!s.due(t0 + ms(1000), 2), "just changed");
        assert!(s.due(t0 + ms(1500), 2), "settled for a poll");
        s.saved(Some(2), t0 + ms(1500), ms(10));
        assert!(!s.due(t0 + ms(2000), 2), "saved");
    }

    #[test]
    fn changes_that_never_settle_are_saved_when_overdue() {
        let t0 = Instant::now();
        let mut s = Schedule::new(EVERY, 0, t0);
        let mut serial = 0;
        let mut at = t0;
        let first = loop {
            at += ms(500);
            serial += 1;
            if s.due(at, serial) {
                break at;
            }
        };
        assert_eq!(first - t0, ms(500) + MAX_BEHIND);
    }

    #[test]
    fn saves_are_spaced_by_the_interval_and_the_duty() {
        let t0 = Instant::now();
        let mut s = Schedule::new(EVERY, 1, t0);
        assert!(!s.due(t0, 2));
        assert!(s.due(t0 + ms(500), 2));
        s.saved(Some(2), t0 + ms(500), ms(1000));
        assert!(!s.due(t0 + ms(1000), 3));
        assert!(!s.due(t0 + ms(5000), 3), "a 1 s save spaces the next 10 s");
        assert!(s.due(t0 + ms(10_500), 3));
        s.saved(None, t0 + ms(10_500), ms(10));
        assert!(!s.due(t0 + ms(11_000), 3), "a failed save is retried later");
        assert!(s.due(t0 + ms(12_500), 3));
    }
}
