//! One cluster as the registry holds it: its metadata, place, exports,
//! liveness and the stream that speaks for it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use meshdns_proto::model::{Cluster, ServiceExport, ServiceKey};
use tokio_util::sync::CancellationToken;

use super::{ClusterStatus, Dirty, Registry};
use crate::locality::{ClusterId, Place};

pub(super) struct ClusterEntry {
    pub(super) id: ClusterId,
    pub(super) cluster: Cluster,
    /// The cluster's place with interned ids; kept in step with `cluster`
    /// and `stale` by [`State::place`].
    pub(super) place: Arc<Place>,
    pub(super) services: BTreeMap<ServiceKey, Arc<ServiceExport>>,
    pub(super) last_seen: Instant,
    pub(super) last_seen_unix_ms: u64,
    pub(super) stale: bool,
    /// The stream that speaks for the cluster now, if one is open.
    pub(super) session: Option<(u64, CancellationToken)>,
    /// On a follower: whether the upstream registry has a stream from the
    /// cluster (the follower has none of its own).
    pub(super) upstream_connected: Option<bool>,
    /// The open stream has not yet had a Snapshot accepted: until it has,
    /// its messages do not count as signs of life.
    pub(super) awaiting_snapshot: bool,
    /// A Hello may count as a sign of life for this live cluster: once
    /// after each accepted message (or a restore), so a syncer back after
    /// a restart keeps its cluster live while its Snapshot waits its turn
    /// in the storm, and one that keeps reconnecting with Snapshots that
    /// are never accepted keeps it live for at most one more ttl.
    pub(super) hello_counts: bool,
    /// Announced client CIDRs refused because another cluster holds an
    /// overlapping one: (what was announced, why).
    pub(super) refused_cidrs: Vec<String>,
    /// `last_seen_unix_ms`, shared with the published cluster list so a
    /// heartbeat need not republish it.
    pub(super) heartbeat: Arc<AtomicU64>,
    /// The status as last published; rebuilt when a change names the
    /// cluster.
    pub(super) published: Option<Arc<ClusterStatus>>,
}

impl ClusterEntry {
    /// Applies upserts (those that differ) and removals, noting what changed.
    pub(super) fn apply_delta(
        &mut self,
        upserts: Vec<ServiceExport>,
        removals: BTreeSet<ServiceKey>,
        dirty: &mut Dirty,
    ) {
        let mut changed = Vec::new();
        for service in upserts {
            let service = Arc::new(service);
            if self.services.get(service.key()) != Some(&service) {
                self.services.insert(service.key().clone(), service.clone());
                changed.push(service);
            }
        }
        let removed: Vec<ServiceKey> = removals
            .into_iter()
            .filter(|k| self.services.remove(k).is_some())
            .collect();
        Registry::services_changed(dirty, self.cluster.name.clone(), changed, removed);
    }

    /// The cluster was heard from now: its liveness deadline and the
    /// heartbeat time the published list and the state file carry.
    pub(super) fn heard_now(&mut self) {
        self.last_seen = Instant::now();
        self.last_seen_unix_ms = super::unix_ms();
        self.heartbeat
            .store(self.last_seen_unix_ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn status(&self) -> ClusterStatus {
        ClusterStatus {
            cluster: self.cluster.clone(),
            last_heartbeat_unix_ms: self.last_seen_unix_ms,
            connected: self.upstream_connected.unwrap_or(self.session.is_some()),
            stale: self.stale,
            services: self.services.len(),
            endpoints: self.services.values().map(|s| s.endpoints().len()).sum(),
            refused_cidrs: self.refused_cidrs.clone(),
        }
    }
}
