//! Retired snapshots are dropped on a thread of their own. Replacing a
//! snapshot after a full Snapshot from a cluster frees a hundred service
//! views and the exports they were built from: a sixth of the publish
//! (perf, benches/README.md), and none of it needed before the new
//! snapshot answers. The writer hands the old one over and returns.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use crate::snapshot::Snapshot;

/// Retired snapshots waiting before the writer blocks: freeing is faster
/// than building, so the queue stays short; the bound keeps a stalled
/// reaper from holding memory without limit.
const BACKLOG: usize = 64;

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
            .spawn(move || reap(rx));
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

fn reap(retired: Receiver<Arc<Snapshot>>) {
    for old in retired {
        drop(old);
    }
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
}
