//! The writer side: what every cluster exports, and the one path that
//! changes it and publishes the next [`Snapshot`].
//!
//! Writes go through a std `Mutex` (never held across `.await`): they are
//! short, and holding it while the next snapshot is stored means that when a
//! write returns, DNS answers already reflect it, so an Export response
//! acknowledges data that is visible. Readers never touch the mutex: they
//! load the current `Arc<Snapshot>` from an `ArcSwap`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use meshdns_proto::model::{Cluster, ClusterName, ServiceExport, ServiceKey};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::snapshot::{ServiceView, Snapshot};

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
}

/// A cluster as `status` and Watch show it.
#[derive(Debug, Clone)]
pub struct ClusterStatus {
    pub cluster: Cluster,
    pub last_heartbeat_unix_ms: u64,
    pub connected: bool,
    pub services: usize,
    pub endpoints: usize,
}

/// The registry's whole state at one moment, as Watch's Reset carries it.
#[derive(Debug, Clone)]
pub struct FullState {
    pub clusters: Vec<(ClusterStatus, Vec<Arc<ServiceExport>>)>,
}

struct ClusterEntry {
    cluster: Cluster,
    services: BTreeMap<ServiceKey, Arc<ServiceExport>>,
    last_heartbeat: Instant,
    last_heartbeat_unix_ms: u64,
    /// The stream that speaks for the cluster now, if one is open.
    session: Option<(u64, CancellationToken)>,
}

impl ClusterEntry {
    fn status(&self) -> ClusterStatus {
        ClusterStatus {
            cluster: self.cluster.clone(),
            last_heartbeat_unix_ms: self.last_heartbeat_unix_ms,
            connected: self.session.is_some(),
            services: self.services.len(),
            endpoints: self.services.values().map(|s| s.endpoints().len()).sum(),
        }
    }
}

struct State {
    clusters: BTreeMap<ClusterName, ClusterEntry>,
    next_session: u64,
    serial: u32,
}

/// The fleet-wide registry.
pub struct Registry {
    state: Mutex<State>,
    snapshot: ArcSwap<Snapshot>,
    changes: broadcast::Sender<Arc<Change>>,
    default_ttl: u32,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("serial", &self.snapshot.load().serial)
            .finish_non_exhaustive()
    }
}

/// One open Export stream's right to speak for its cluster. A newer Hello
/// for the same cluster supersedes it: `superseded` fires and its writes are
/// refused from then on.
#[derive(Debug)]
pub struct Session {
    pub cluster: ClusterName,
    id: u64,
    pub superseded: CancellationToken,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Registry {
    /// An empty registry; answers use `default_ttl` unless a service says.
    pub fn new(default_ttl: u32) -> Self {
        // Serials start from the clock so they keep growing across restarts.
        let serial = (unix_ms() / 1000) as u32;
        Registry {
            state: Mutex::new(State {
                clusters: BTreeMap::new(),
                next_session: 1,
                serial,
            }),
            snapshot: ArcSwap::from_pointee(Snapshot::default().with_changes(serial, [])),
            changes: broadcast::channel(1024).0,
            default_ttl,
        }
    }

    /// The current read side. Lock-free.
    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while writing cannot leave State half-changed in a way
        // readers see (they read snapshots), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a session for `cluster`, superseding any older stream for it.
    /// The cluster's data stays as it was until its Snapshot arrives.
    pub fn hello(&self, cluster: Cluster) -> Session {
        let mut state = self.lock();
        let id = state.next_session;
        state.next_session += 1;
        let token = CancellationToken::new();
        let now = Instant::now();
        let name = cluster.name.clone();
        let entry = state
            .clusters
            .entry(name.clone())
            .or_insert_with(|| ClusterEntry {
                cluster: cluster.clone(),
                services: BTreeMap::new(),
                last_heartbeat: now,
                last_heartbeat_unix_ms: 0,
                session: None,
            });
        if let Some((_, old)) = entry.session.take() {
            old.cancel();
        }
        entry.cluster = cluster;
        entry.session = Some((id, token.clone()));
        entry.last_heartbeat = now;
        entry.last_heartbeat_unix_ms = unix_ms();
        let status = entry.status();
        drop(state);
        let _ = self.changes.send(Arc::new(Change::Cluster(status)));
        Session {
            cluster: name,
            id,
            superseded: token,
        }
    }

    fn entry<'a>(state: &'a mut State, session: &Session) -> Result<&'a mut ClusterEntry, Error> {
        match state.clusters.get_mut(&session.cluster) {
            Some(entry)
                if entry
                    .session
                    .as_ref()
                    .is_some_and(|(id, _)| *id == session.id) =>
            {
                entry.last_heartbeat = Instant::now();
                entry.last_heartbeat_unix_ms = unix_ms();
                Ok(entry)
            }
            _ => Err(Error::Superseded(session.cluster.to_string())),
        }
    }

    /// Replaces the cluster's whole export set in one step. Services named
    /// in `keep` (refused in this Snapshot) keep their previous version.
    pub fn apply_snapshot(
        &self,
        session: &Session,
        services: Vec<ServiceExport>,
        keep: &BTreeSet<ServiceKey>,
    ) -> Result<(), Error> {
        let mut state = self.lock();
        let entry = Self::entry(&mut state, session)?;
        let mut next: BTreeMap<ServiceKey, Arc<ServiceExport>> = services
            .into_iter()
            .map(|s| (s.key().clone(), Arc::new(s)))
            .collect();
        for key in keep {
            if let Some(old) = entry.services.get(key) {
                next.entry(key.clone()).or_insert_with(|| old.clone());
            }
        }
        let removals: Vec<ServiceKey> = entry
            .services
            .keys()
            .filter(|k| !next.contains_key(*k))
            .cloned()
            .collect();
        let upserts: Vec<Arc<ServiceExport>> = next
            .iter()
            .filter(|(k, v)| entry.services.get(*k) != Some(*v))
            .map(|(_, v)| v.clone())
            .collect();
        entry.services = next;
        self.publish(state, session.cluster.clone(), upserts, removals);
        Ok(())
    }

    /// Applies upserts and removals to the cluster's export set.
    pub fn apply_delta(
        &self,
        session: &Session,
        upserts: Vec<ServiceExport>,
        removals: Vec<ServiceKey>,
    ) -> Result<(), Error> {
        let mut state = self.lock();
        let entry = Self::entry(&mut state, session)?;
        let mut changed = Vec::new();
        for service in upserts {
            let service = Arc::new(service);
            if entry.services.get(service.key()) != Some(&service) {
                entry
                    .services
                    .insert(service.key().clone(), service.clone());
                changed.push(service);
            }
        }
        let removed: Vec<ServiceKey> = removals
            .into_iter()
            .filter(|k| entry.services.remove(k).is_some())
            .collect();
        self.publish(state, session.cluster.clone(), changed, removed);
        Ok(())
    }

    /// Records that the cluster is alive.
    pub fn heartbeat(&self, session: &Session) -> Result<(), Error> {
        let mut state = self.lock();
        Self::entry(&mut state, session).map(|_| ())
    }

    /// The stream ended. The cluster's data stays (its liveness decides how
    /// long it is served); only the session is closed.
    pub fn disconnect(&self, session: &Session) {
        let mut state = self.lock();
        let Some(entry) = state.clusters.get_mut(&session.cluster) else {
            return;
        };
        if entry
            .session
            .as_ref()
            .is_some_and(|(id, _)| *id == session.id)
        {
            entry.session = None;
            let status = entry.status();
            drop(state);
            let _ = self.changes.send(Arc::new(Change::Cluster(status)));
        }
    }

    /// Rebuilds the views of the services that changed, stores the next
    /// snapshot and tells watchers. Runs under the state lock so snapshots
    /// are published in the order writes happened.
    fn publish(
        &self,
        mut state: MutexGuard<'_, State>,
        cluster: ClusterName,
        upserts: Vec<Arc<ServiceExport>>,
        removals: Vec<ServiceKey>,
    ) {
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        let keys: BTreeSet<ServiceKey> = upserts
            .iter()
            .map(|s| s.key().clone())
            .chain(removals.iter().cloned())
            .collect();
        state.serial = state.serial.wrapping_add(1);
        let views: Vec<(ServiceKey, Option<Arc<ServiceView>>)> = keys
            .into_iter()
            .map(|key| {
                let exports: Vec<(ClusterName, Arc<ServiceExport>)> = state
                    .clusters
                    .iter()
                    .filter_map(|(name, entry)| {
                        entry.services.get(&key).map(|s| (name.clone(), s.clone()))
                    })
                    .collect();
                let view = (!exports.is_empty())
                    .then(|| Arc::new(ServiceView::build(key.clone(), &exports, self.default_ttl)));
                (key, view)
            })
            .collect();
        let next = self.snapshot.load().with_changes(state.serial, views);
        self.snapshot.store(Arc::new(next));
        let _ = self.changes.send(Arc::new(Change::Services {
            cluster,
            upserts,
            removals,
        }));
        drop(state);
    }

    /// Every cluster with its status and exports.
    pub fn full_state(&self) -> FullState {
        Self::full_state_of(&self.lock())
    }

    fn full_state_of(state: &State) -> FullState {
        FullState {
            clusters: state
                .clusters
                .values()
                .map(|e| (e.status(), e.services.values().cloned().collect()))
                .collect(),
        }
    }

    /// The full state and a receiver of every change after it, taken
    /// together so nothing falls between them.
    pub fn subscribe(&self) -> (FullState, broadcast::Receiver<Arc<Change>>) {
        let state = self.lock();
        let receiver = self.changes.subscribe();
        (Self::full_state_of(&state), receiver)
    }

    pub fn clusters(&self) -> Vec<ClusterStatus> {
        self.lock()
            .clusters
            .values()
            .map(ClusterEntry::status)
            .collect()
    }

    /// Every cluster's export of `key`.
    pub fn service(&self, key: &ServiceKey) -> Vec<(ClusterName, Arc<ServiceExport>)> {
        self.lock()
            .clusters
            .iter()
            .filter_map(|(n, e)| e.services.get(key).map(|s| (n.clone(), s.clone())))
            .collect()
    }
}
