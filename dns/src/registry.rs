//! The writer side: what every cluster exports and whether it is alive,
//! and the one path that changes it and publishes the next [`Snapshot`].
//!
//! A running server writes through one [`Writer`] thread: it owns the
//! state (behind a std `Mutex` only it takes, besides tests and start-up),
//! applies queued writes in batches, publishes once per batch and only
//! then acknowledges them, so an Export response acknowledges data that is
//! visible. Readers never touch the mutex: they load the current
//! `Arc<Snapshot>`, or the published cluster list, from an `ArcSwap`.
//!
//! Liveness: every message from a cluster's stream is a sign of life.
//! [`Registry::sweep`] marks a cluster silent for `cluster_ttl` stale (its
//! endpoints leave answers unless nothing else holds the service) and
//! purges one silent for `stale_grace`.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;
use arc_swap::ArcSwap;

mod apply;
mod claims;
pub mod conflicts;
mod entry;
mod feed;
pub mod imports;
mod liveness;
mod mirror;
mod names;
mod publish;
mod reaper;
mod restore;
#[cfg(test)]
mod reverse_index;
mod session;
mod state;
mod status;
mod writer;

use claims::Claims;
use entry::ClusterEntry;
pub use feed::Receiver as ChangeReceiver;
pub use liveness::Liveness;
pub use mirror::MirroredCluster;
use names::Names;
use publish::Dirty;
use reaper::Reaper;
pub use restore::{CLOCK_SLACK, RestoreClock, RestoredLiveness, Verdict, verdict};
pub use session::Session;
use session::unix_ms;
use state::State;
pub use status::{Change, ClusterStatus, FullState};
pub use writer::{Allowed, Writer};

/// The fleet-wide registry.
pub struct Registry {
    state: Mutex<State>,
    snapshot: ArcSwap<Snapshot>,
    /// Every cluster's status as last published, for readers
    /// (ListClusters, readiness, metrics): they never touch `state`.
    listed: ArcSwap<Vec<(Arc<ClusterStatus>, Arc<AtomicU64>)>>,
    /// The change feed: Watch streams and the imports view read it.
    changes: feed::Feed,
    default_ttl: u32,
    /// `--max-services-per-cluster`.
    max_services: usize,
    metrics: Arc<Metrics>,
    /// Drops replaced snapshots off the write path.
    reaper: Reaper,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("serial", &self.snapshot.load().serial)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry; answers use `default_ttl` unless a service says.
    /// With `reverse`, snapshots keep the address -> name index for PTR.
    pub fn new(default_ttl: u32, reverse: bool, metrics: Arc<Metrics>) -> Self {
        // Serials start from the clock so they keep growing across restarts.
        let serial = (unix_ms() / 1000) as u32;
        Registry {
            state: Mutex::new(State {
                clusters: BTreeMap::new(),
                claims: Claims::default(),
                names: Names::default(),
                next_session: 1,
                next_cluster_id: 1,
                serial,
                policy: Arc::default(),
                listed_endpoints: 0,
            }),
            snapshot: ArcSwap::from_pointee(Snapshot::new(reverse).with_changes(serial, None, [])),
            listed: ArcSwap::default(),
            changes: feed::Feed::default(),
            default_ttl,
            max_services: usize::MAX,
            metrics,
            reaper: Reaper::spawn(),
        }
    }

    /// Caps the services one cluster may export.
    #[must_use]
    pub fn with_max_services(mut self, max: usize) -> Self {
        self.max_services = max;
        self
    }

    /// The current read side. Lock-free.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Runs one write and publishes what it changed: the path of tests,
    /// benches and start-up. A running server writes through its
    /// [`Writer`], which batches writes and publishes once per batch.
    fn write<R>(&self, f: impl FnOnce(&mut State, &mut Dirty) -> R) -> R {
        let mut state = self.lock();
        let mut dirty = Dirty::default();
        let result = f(&mut state, &mut dirty);
        self.publish(&mut state, dirty);
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while writing cannot leave State half-changed in a way
        // readers see (they read snapshots), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}
