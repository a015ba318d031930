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
#[derive(Debug, Clone)]
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
    /// `changes` name (the others are shared with the last list).
    pub(super) fn list(&self, state: &mut State, changes: &[Change]) {
        let named: std::collections::HashSet<&ClusterName> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Cluster(status) => Some(&status.cluster.name),
                Change::Services { cluster, .. } => Some(cluster),
                Change::ClusterRemoved(_) | Change::Policy(_) => None,
            })
            .collect();
        let list = state
            .clusters
            .iter_mut()
            .map(|(name, entry)| {
                if entry.published.is_none() || named.contains(name) {
                    entry.published = Some(Arc::new(entry.status()));
                }
                let status = entry
                    .published
                    .clone()
                    .unwrap_or_else(|| Arc::new(entry.status()));
                (status, entry.heartbeat.clone())
            })
            .collect();
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
