//! The change feed that Watch streams and the imports view read: a
//! broadcast whose backlog is bounded by size, not only by count.
//!
//! A change is held until every receiver subscribed when it was sent has
//! read it (as with tokio's broadcast), but never beyond a weight: the
//! endpoints (plus one per service named) of the changes held. A receiver
//! further behind than that is told it lagged, as with too many changes,
//! and starts over from a Reset, so a slow follower cannot keep replaced
//! exports alive past the bound. The bound a publish passes is the
//! registry's own size (at least [`MIN_WEIGHT`]): past it, a Reset costs
//! the follower no more than catching up would, and the backlog costs at
//! most as much memory again as the registry.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

use super::Change;

/// Most changes held, whatever their weight.
pub const MAX_CHANGES: usize = 1024;

/// The least weight the backlog may hold, however small the registry.
pub const MIN_WEIGHT: usize = 64 * 1024;

/// The sending side; receivers come from [`Feed::subscribe`].
pub struct Feed {
    shared: Arc<Shared>,
}

struct Shared {
    ring: Mutex<Ring>,
    /// The sequence number after the newest change: receivers wait on it.
    tail: watch::Sender<u64>,
}

#[derive(Default)]
struct Ring {
    /// Sequence number of `entries[0]`.
    head: u64,
    entries: VecDeque<Entry>,
    /// Total weight of the changes held.
    weight: usize,
    receivers: usize,
    closed: bool,
}

struct Entry {
    /// `None` once every receiver counted in `unread` has read it.
    change: Option<Arc<Change>>,
    weight: usize,
    unread: usize,
}

impl Ring {
    fn tail(&self) -> u64 {
        self.head + self.entries.len() as u64
    }

    /// One receiver is done with entry `i`.
    fn read(&mut self, i: usize) -> Option<Arc<Change>> {
        let entry = self.entries.get_mut(i)?;
        entry.unread = entry.unread.saturating_sub(1);
        let change = if entry.unread == 0 {
            self.weight -= if entry.change.is_some() {
                entry.weight
            } else {
                0
            };
            entry.change.take()
        } else {
            entry.change.clone()
        };
        // Entries every receiver has read are a prefix: drop it.
        while self.entries.front().is_some_and(|e| e.change.is_none()) {
            self.entries.pop_front();
            self.head += 1;
        }
        change
    }

    /// Drops the oldest changes while over a bound; the newest is kept.
    fn evict(&mut self, max_weight: usize) {
        while self.entries.len() > MAX_CHANGES
            || (self.weight > max_weight && self.entries.len() > 1)
        {
            if let Some(entry) = self.entries.pop_front() {
                self.head += 1;
                if entry.change.is_some() {
                    self.weight -= entry.weight;
                }
            }
        }
    }
}

impl Default for Feed {
    fn default() -> Self {
        Feed {
            shared: Arc::new(Shared {
                ring: Mutex::new(Ring::default()),
                tail: watch::channel(0).0,
            }),
        }
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Ring> {
    // Every change to a ring is completed before its lock is released.
    shared.ring.lock().unwrap_or_else(|e| e.into_inner())
}

impl Feed {
    /// Sends `change` to every receiver, keeping the backlog within
    /// `max_weight` (and [`MAX_CHANGES`]). With no receivers it is dropped.
    pub fn send(&self, change: Arc<Change>, max_weight: usize) {
        let tail = {
            let mut ring = lock(&self.shared);
            if ring.receivers == 0 {
                return;
            }
            let weight = change.weight();
            let unread = ring.receivers;
            ring.entries.push_back(Entry {
                change: Some(change),
                weight,
                unread,
            });
            ring.weight += weight;
            ring.evict(max_weight.max(MIN_WEIGHT));
            ring.tail()
        };
        self.shared.tail.send_replace(tail);
    }

    /// A receiver of every change sent from now on.
    pub fn subscribe(&self) -> Receiver {
        let mut ring = lock(&self.shared);
        ring.receivers += 1;
        Receiver {
            next: ring.tail(),
            tail: self.shared.tail.subscribe(),
            shared: self.shared.clone(),
        }
    }

    /// The weight of the changes held (what the backlog costs).
    #[cfg(test)]
    pub fn weight(&self) -> usize {
        lock(&self.shared).weight
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        lock(&self.shared).closed = true;
        self.shared.tail.send_modify(|_| {});
    }
}

/// One reader of the feed, in order; dropped, it releases what it had
/// not read.
pub struct Receiver {
    next: u64,
    tail: watch::Receiver<u64>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// The next change, or `Lagged(missed)` once if changes were dropped
    /// before this receiver read them (it then goes on from the oldest
    /// held), or `Empty`, or `Closed` when the feed is gone.
    pub fn try_recv(&mut self) -> Result<Arc<Change>, TryRecvError> {
        let mut ring = lock(&self.shared);
        if self.next < ring.head {
            let missed = ring.head - self.next;
            self.next = ring.head;
            return Err(TryRecvError::Lagged(missed));
        }
        let i = (self.next - ring.head) as usize;
        if i >= ring.entries.len() {
            return Err(if ring.closed {
                TryRecvError::Closed
            } else {
                TryRecvError::Empty
            });
        }
        self.next += 1;
        ring.read(i).ok_or(TryRecvError::Empty)
    }

    /// Waits for the next change (see [`Receiver::try_recv`]).
    pub async fn recv(&mut self) -> Result<Arc<Change>, RecvError> {
        loop {
            self.tail.borrow_and_update();
            match self.try_recv() {
                Ok(change) => return Ok(change),
                Err(TryRecvError::Lagged(missed)) => return Err(RecvError::Lagged(missed)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                Err(TryRecvError::Empty) => {}
            }
            if self.tail.changed().await.is_err() {
                return Err(RecvError::Closed);
            }
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut ring = lock(&self.shared);
        ring.receivers -= 1;
        let from = self.next.saturating_sub(ring.head) as usize;
        // Each read may drop a prefix, so count from the back.
        let unread = ring.entries.len().saturating_sub(from);
        for back in (1..=unread).rev() {
            let i = ring.entries.len() - back;
            ring.read(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::fixtures;
    use meshdns_proto::model::{ClusterName, Policy, ServiceExport};

    fn services(endpoints: usize) -> Arc<ServiceExport> {
        let list = (0..endpoints)
            .map(|i| fixtures::endpoint(std::net::Ipv4Addr::from(0x0a00_0000 + i as u32).into()))
            .collect();
        Arc::new(fixtures::http_export(
            fixtures::key("shop", "web"),
            list,
            Policy::default(),
        ))
    }

    fn change(export: &Arc<ServiceExport>) -> Arc<Change> {
        Arc::new(Change::Services {
            cluster: ClusterName::new("east").unwrap(),
            upserts: vec![export.clone()],
            removals: vec![],
        })
    }

    #[tokio::test]
    async fn a_reader_gets_every_change_in_order_and_frees_them() {
        let feed = Feed::default();
        let mut rx = feed.subscribe();
        let exports: Vec<_> = (0..10).map(|_| services(100)).collect();
        for e in &exports {
            feed.send(change(e), 0);
        }
        for e in &exports {
            let Change::Services { upserts, .. } = &*rx.recv().await.unwrap() else {
                panic!("not a services change");
            };
            assert!(Arc::ptr_eq(&upserts[0], e));
        }
        assert_eq!(feed.weight(), 0, "read by every receiver: nothing held");
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
        for e in &exports {
            assert_eq!(Arc::strong_count(e), 1, "released once read");
        }
    }

    #[tokio::test]
    async fn a_slow_reader_keeps_no_more_than_the_weight_bound() {
        let feed = Feed::default();
        let mut slow = feed.subscribe();
        let bound = MIN_WEIGHT * 2;
        // Each change weighs 10,000 endpoints; 100 of them are 1M, far
        // under the count bound and far over the weight bound.
        let exports: Vec<_> = (0..100).map(|_| services(10_000)).collect();
        for e in &exports {
            feed.send(change(e), bound);
        }
        assert!(feed.weight() <= bound, "{} held", feed.weight());
        let held = exports.iter().filter(|e| Arc::strong_count(e) > 1).count();
        let fits = bound / change(&exports[0]).weight();
        assert_eq!(held, fits, "replaced exports kept alive by a slow reader");
        assert!(
            Arc::strong_count(&exports[99]) > 1,
            "the newest change is held"
        );
        match slow.recv().await {
            Err(RecvError::Lagged(missed)) => assert_eq!(missed as usize, 100 - held),
            other => panic!("the slow reader must be told it lagged: {other:?}"),
        }
        // It goes on from the oldest change held.
        let Change::Services { upserts, .. } = &*slow.recv().await.unwrap() else {
            panic!("not a services change");
        };
        assert!(Arc::ptr_eq(&upserts[0], &exports[100 - held]));
    }

    #[tokio::test]
    async fn a_dropped_reader_releases_what_it_had_not_read() {
        let feed = Feed::default();
        let mut fast = feed.subscribe();
        let slow = feed.subscribe();
        let e = services(10);
        feed.send(change(&e), 0);
        fast.recv().await.unwrap();
        assert!(feed.weight() > 0, "the slow reader has not read it");
        drop(slow);
        assert_eq!(feed.weight(), 0);
        assert_eq!(Arc::strong_count(&e), 1);
        // No receivers: nothing is held.
        drop(fast);
        feed.send(change(&e), 0);
        assert_eq!(Arc::strong_count(&e), 1);
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_and_a_closed_feed_ends_it() {
        let feed = Feed::default();
        let mut rx = feed.subscribe();
        let waiting = tokio::spawn(async move {
            let first = rx.recv().await.map(|_| ());
            (first, rx.recv().await.map(|_| ()))
        });
        tokio::task::yield_now().await;
        feed.send(change(&services(1)), 0);
        tokio::task::yield_now().await;
        drop(feed);
        let (first, second) = waiting.await.unwrap();
        assert_eq!(first, Ok(()));
        assert_eq!(second, Err(RecvError::Closed));
    }
}
