//! The follower's write path: a registry that mirrors another through
//! Watch takes whole clusters as the upstream reports them, liveness
//! included, instead of Export sessions. It never judges liveness itself:
//! a follower that loses its upstream keeps answering from the last state
//! it was told, rather than withdrawing clusters it cannot see.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use meshdns_proto::model::{Cluster, ClusterName, ServiceExport, ServiceKey};

use super::{Change, ClusterEntry, Dirty, Registry, State};

/// A cluster as an upstream registry reports it.
#[derive(Debug, Clone)]
pub struct MirroredCluster {
    pub cluster: Cluster,
    pub stale: bool,
    pub connected: bool,
    pub last_heartbeat_unix_ms: u64,
}

impl State {
    /// Inserts or updates a mirrored cluster's metadata and liveness; the
    /// keys of its services go dirty when its place changes.
    fn mirror_entry(&mut self, m: MirroredCluster, dirty: &mut Dirty) -> &mut ClusterEntry {
        let name = m.cluster.name.clone();
        if !self.clusters.contains_key(&name) {
            let id = self.next_cluster_id;
            self.next_cluster_id += 1;
            let place = State::place(&mut self.names, &self.policy, id, &m.cluster, m.stale);
            self.clusters.insert(
                name.clone(),
                ClusterEntry {
                    id,
                    place,
                    cluster: m.cluster.clone(),
                    services: BTreeMap::new(),
                    last_seen: Instant::now(),
                    last_seen_unix_ms: m.last_heartbeat_unix_ms,
                    stale: m.stale,
                    session: None,
                    upstream_connected: Some(m.connected),
                    awaiting_snapshot: false,
                    hello_counts: true,
                    refused_cidrs: Vec::new(),
                    heartbeat: Arc::new(std::sync::atomic::AtomicU64::new(
                        m.last_heartbeat_unix_ms,
                    )),
                    published: None,
                },
            );
            dirty.locality = true;
        }
        let names = &mut self.names;
        let policy = &self.policy;
        let Some(entry) = self.clusters.get_mut(&name) else {
            unreachable!("inserted above")
        };
        let moved = entry.cluster != m.cluster || entry.stale != m.stale;
        if moved {
            dirty.locality = true;
            if entry.stale == m.stale {
                dirty.touch(&name, super::session::reshaped(entry, &m.cluster));
            } else {
                dirty.touch(&name, entry.services.keys().cloned());
            }
            entry.place = State::place(names, policy, entry.id, &m.cluster, m.stale);
        }
        entry.cluster = m.cluster;
        entry.stale = m.stale;
        entry.upstream_connected = Some(m.connected);
        entry.last_seen_unix_ms = m.last_heartbeat_unix_ms;
        entry.heartbeat.store(
            m.last_heartbeat_unix_ms,
            std::sync::atomic::Ordering::Relaxed,
        );
        entry
    }
}

impl Registry {
    /// Replaces the whole state with the upstream's, in one step.
    pub fn mirror_reset(&self, clusters: Vec<(MirroredCluster, Vec<ServiceExport>)>) {
        self.write(|state, dirty| Self::mirror_reset_in(state, dirty, clusters));
    }

    pub(super) fn mirror_reset_in(
        state: &mut State,
        dirty: &mut Dirty,
        clusters: Vec<(MirroredCluster, Vec<ServiceExport>)>,
    ) {
        dirty.locality = true;
        let keep: std::collections::HashSet<&ClusterName> =
            clusters.iter().map(|(m, _)| &m.cluster.name).collect();
        let gone: Vec<ClusterName> = state
            .clusters
            .keys()
            .filter(|n| !keep.contains(n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(entry) = state.clusters.remove(&name) {
                dirty.touch(&name, entry.services.into_keys());
                dirty.changes.push(Change::ClusterRemoved(name));
            }
        }
        for (m, services) in clusters {
            let entry = state.mirror_entry(m, dirty);
            let next: BTreeMap<ServiceKey, Arc<ServiceExport>> = services
                .into_iter()
                .map(|s| (s.key().clone(), Arc::new(s)))
                .collect();
            let name = entry.cluster.name.clone();
            dirty.touch(&name, entry.services.keys().cloned());
            dirty.touch(&name, next.keys().cloned());
            entry.services = next;
            dirty.changes.push(Change::Cluster(entry.status()));
        }
    }

    /// A cluster's metadata or liveness changed upstream.
    pub fn mirror_cluster(&self, m: MirroredCluster) {
        self.write(|state, dirty| Self::mirror_cluster_in(state, dirty, m));
    }

    pub(super) fn mirror_cluster_in(state: &mut State, dirty: &mut Dirty, m: MirroredCluster) {
        let entry = state.mirror_entry(m, dirty);
        dirty.changes.push(Change::Cluster(entry.status()));
    }

    /// Services of a cluster changed upstream.
    pub fn mirror_services(
        &self,
        cluster: &ClusterName,
        upserts: Vec<ServiceExport>,
        removals: Vec<ServiceKey>,
    ) {
        self.write(|state, dirty| {
            Self::mirror_services_in(state, dirty, cluster, upserts, removals)
        });
    }

    pub(super) fn mirror_services_in(
        state: &mut State,
        dirty: &mut Dirty,
        cluster: &ClusterName,
        upserts: Vec<ServiceExport>,
        removals: Vec<ServiceKey>,
    ) {
        let Some(entry) = state.clusters.get_mut(cluster) else {
            return;
        };
        entry.apply_delta(upserts, removals.into_iter().collect(), dirty);
    }

    /// A cluster was purged upstream.
    pub fn mirror_remove(&self, cluster: &ClusterName) {
        self.write(|state, dirty| Self::mirror_remove_in(state, dirty, cluster));
    }

    pub(super) fn mirror_remove_in(state: &mut State, dirty: &mut Dirty, cluster: &ClusterName) {
        if let Some(entry) = state.clusters.remove(cluster) {
            dirty.locality = true;
            dirty.touch(cluster, entry.services.into_keys());
            dirty.changes.push(Change::ClusterRemoved(cluster.clone()));
        }
    }
}
