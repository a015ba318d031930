//! What readers see of the registry: the clusters' statuses, the change
//! feed Watch streams, and the full state a Reset carries.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use meshdns_proto::model::{Cluster, ClusterName, FleetPolicy, ServiceExport, ServiceKey};

use super::{Registry, State};

/// A change, as Watch streams it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A cluster's metadata or liveness changed.
    Cluster(ClusterStatus),
    /// Services of one cluster changed.
    Services {
        cluster: ClusterName,
        upserts: Vec<Arc<ServiceExport>>,
        removals: Vec<ServiceKey>,
    },
    /// A cluster was purged with everything it exported.
    ClusterRemoved(ClusterName),
    /// The traffic policy changed (the whole new one).
    Policy(Arc<FleetPolicy>),
}

impl Change {
    /// What holding it costs, in endpoints (one per service named, and
    /// one for the change itself): the change feed's backlog is bounded
    /// by the sum.
    pub fn weight(&self) -> usize {
        match self {
            Change::Services {
                upserts, removals, ..
            } => {
                let endpoints: usize = upserts.iter().map(|s| s.endpoints().len()).sum();
                1 + endpoints + upserts.len() + removals.len()
            }
            Change::Cluster(_) | Change::ClusterRemoved(_) | Change::Policy(_) => 1,
        }
    }
}

/// A cluster as `status` and Watch show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub cluster: Cluster,
    pub last_heartbeat_unix_ms: u64,
    pub connected: bool,
    pub stale: bool,
    pub services: usize,
    pub endpoints: usize,
    /// Client CIDRs the cluster announced that another cluster holds.
    pub refused_cidrs: Vec<String>,
}

/// The registry's whole state at one moment, as Watch's Reset carries it.
#[derive(Debug, Clone)]
pub struct FullState {
    pub clusters: Vec<(ClusterStatus, Vec<Arc<ServiceExport>>)>,
    /// The traffic policy in force.
    pub policy: Arc<FleetPolicy>,
}

impl Registry {
    /// Publishes the cluster list, rebuilding the statuses of the clusters
    /// `changes` name (the others are shared with the last list). When
    /// each of those reads as last published (a Delta that keeps its
    /// cluster's counts) and no cluster came or went, the last list
    /// stands: a write costs O(clusters it names), not O(clusters).
    pub(super) fn list(&self, state: &mut State, changes: &[Change]) {
        let mut changed = state.clusters.len() != self.listed.load().len();
        for change in changes {
            let name = match change {
                Change::Cluster(status) => &status.cluster.name,
                Change::Services { cluster, .. } => cluster,
                Change::ClusterRemoved(_) => {
                    changed = true;
                    continue;
                }
                Change::Policy(_) => continue,
            };
            let Some(entry) = state.clusters.get_mut(name) else {
                changed = true;
                continue;
            };
            let status = entry.status();
            // The heartbeat is read from the shared counter, not the list.
            let same = entry.published.as_deref().is_some_and(|p| {
                *p == ClusterStatus {
                    last_heartbeat_unix_ms: p.last_heartbeat_unix_ms,
                    ..status.clone()
                }
            });
            if !same {
                entry.published = Some(Arc::new(status));
                changed = true;
            }
        }
        if !changed {
            return;
        }
        let list: Vec<_> = state
            .clusters
            .values_mut()
            .map(|entry| {
                let status = match &entry.published {
                    Some(status) => status.clone(),
                    None => {
                        let status = Arc::new(entry.status());
                        entry.published = Some(status.clone());
                        status
                    }
                };
                (status, entry.heartbeat.clone())
            })
            .collect();
        state.listed_endpoints = list.iter().map(|(s, _)| s.endpoints).sum();
        self.listed.store(Arc::new(list));
    }

    /// Every cluster with its status and exports.
    pub fn full_state(&self) -> FullState {
        Self::full_state_of(&self.lock())
    }

    pub(super) fn full_state_of(state: &State) -> FullState {
        FullState {
            clusters: state
                .clusters
                .values()
                .map(|e| (e.status(), e.services.values().cloned().collect()))
                .collect(),
            policy: state.policy.clone(),
        }
    }

    /// The full state and a receiver of every change after it, taken
    /// together so nothing falls between them.
    pub fn subscribe(&self) -> (FullState, super::ChangeReceiver) {
        let state = self.lock();
        let receiver = self.changes.subscribe();
        (Self::full_state_of(&state), receiver)
    }

    /// Every cluster's status, from the last published list: lock-free.
    pub fn clusters(&self) -> Vec<ClusterStatus> {
        self.listed
            .load()
            .iter()
            .map(|(status, heartbeat)| ClusterStatus {
                last_heartbeat_unix_ms: heartbeat.load(Ordering::Relaxed),
                ..ClusterStatus::clone(status)
            })
            .collect()
    }

    /// How many clusters the last published list holds: lock-free.
    pub fn cluster_count(&self) -> usize {
        self.listed.load().len()
    }

    /// Every cluster's export of `key`.
    pub fn service(&self, key: &ServiceKey) -> Vec<(ClusterName, Arc<ServiceExport>)> {
        Self::service_of(&self.lock(), key)
    }

    pub(super) fn service_of(
        state: &State,
        key: &ServiceKey,
    ) -> Vec<(ClusterName, Arc<ServiceExport>)> {
        state
            .clusters
            .iter()
            .filter_map(|(n, e)| e.services.get(key).map(|s| (n.clone(), s.clone())))
            .collect()
    }
}
