//! Retired snapshots are dropped on a thread of their own. Replacing a
//! snapshot after a full Snapshot from a cluster frees a hundred service
//! views and the exports they were built from: a sixth of the publish
//! (perf, benches/README.md), and none of it needed before the new
//! snapshot answers. The writer hands the old one over and returns.
//!
//! Once nothing has been retired for [`SETTLED`], the thread also gives
//! the allocator a chance to return what was freed ([`nudge`]).

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, sync_channel};
use std::thread;
use std::time::Duration;

use crate::snapshot::Snapshot;

/// Retired snapshots waiting before the writer blocks: freeing is faster
/// than building, so the queue stays short; the bound keeps a stalled
/// reaper from holding memory without limit.
const BACKLOG: usize = 64;

/// How long after the last retired snapshot the allocator is nudged:
/// past mimalloc's purge delay (1 s), so that what was freed is due.
const SETTLED: Duration = Duration::from_millis(1500);

/// A block big enough to be a page of its own in mimalloc (over its
/// largest size class), so that freeing it frees a page.
const NUDGE_BYTES: usize = 4 << 20;

/// The sending side; the thread ends when this is dropped, after
/// dropping what it was sent.
#[derive(Debug)]
pub struct Reaper {
    retired: Option<SyncSender<Arc<Snapshot>>>,
}

impl Reaper {
    pub fn spawn() -> Self {
        let (tx, rx) = sync_channel(BACKLOG);
        let started = thread::Builder::new()
            .name("meshdns-reaper".into())
            .spawn(move || {
                crate::priority::control_plane_thread();
                reap(rx, SETTLED, nudge)
            });
        // Without a thread (the system refused one), the writer frees.
        Reaper {
            retired: started.is_ok().then_some(tx),
        }
    }

    /// Drops `old` off this thread, or here if the reaper is gone.
    pub fn retire(&self, old: Arc<Snapshot>) {
        if let Some(tx) = &self.retired
            && let Err(returned) = tx.send(old)
        {
            drop(returned.0);
        }
    }
}

/// Drops what is retired; once nothing more has come for `settled` after
/// a drop, calls `nudge` (once per quiet spell).
fn reap(retired: Receiver<Arc<Snapshot>>, settled: Duration, nudge: impl Fn()) {
    let mut dropped = false;
    loop {
        match retired.recv_timeout(settled) {
            Ok(old) => {
                drop(old);
                dropped = true;
            }
            Err(RecvTimeoutError::Timeout) => {
                if std::mem::take(&mut dropped) {
                    nudge();
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Lets the allocator give back the pages a burst of publishes freed.
/// mimalloc returns freed memory to the system (purges it) only when some
/// thread later frees a page and the purge delay has passed since; after
/// a reconnect storm the writer goes idle and nothing does, so the hub
/// kept the storm's peak resident (benches/README.md, "Fleet scale, sixth
/// session"). Allocating and freeing one block of its own page, untouched
/// (no page is faulted in), is such a free. With another allocator it is
/// an allocation and a free, nothing more.
fn nudge() {
    drop(std::hint::black_box(Vec::<u8>::with_capacity(NUDGE_BYTES)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_snapshots_are_dropped_and_the_thread_ends() {
        let reaper = Reaper::spawn();
        let snapshot = Arc::new(Snapshot::new(false));
        let weak = Arc::downgrade(&snapshot);
        reaper.retire(snapshot);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while weak.upgrade().is_some() {
            assert!(std::time::Instant::now() < deadline, "never dropped");
            thread::sleep(std::time::Duration::from_millis(1));
        }
        drop(reaper);
    }

    #[test]
    fn the_allocator_is_nudged_once_per_quiet_spell_after_a_drop() {
        let (tx, rx) = sync_channel(BACKLOG);
        let nudges = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = nudges.clone();
        let settled = Duration::from_millis(50);
        let thread = thread::spawn(move || {
            reap(rx, settled, move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            });
        });
        let count = || nudges.load(std::sync::atomic::Ordering::SeqCst);
        // Nothing dropped yet: a quiet spell is not a reason.
        thread::sleep(settled * 4);
        assert_eq!(count(), 0);
        for round in 1..=2 {
            tx.send(Arc::new(Snapshot::new(false))).unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while count() < round {
                assert!(std::time::Instant::now() < deadline, "never nudged");
                thread::sleep(Duration::from_millis(5));
            }
            // Once per spell, however long it lasts.
            thread::sleep(settled * 4);
            assert_eq!(count(), round);
        }
        drop(tx);
        thread.join().unwrap();
    }
}
