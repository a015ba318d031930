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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use meshdns_proto::model::{Cluster, ClusterName, ServiceExport, ServiceKey};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Error;
use crate::locality::{ClusterId, Locality, Place};
use crate::metrics::Metrics;
use crate::snapshot::{ExportInput, PartChange, ServiceView, Snapshot};

mod claims;
pub mod conflicts;
pub mod imports;
mod mirror;
mod reaper;
mod writer;

use claims::Claims;

pub use mirror::MirroredCluster;
use reaper::Reaper;
pub use writer::Writer;

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
}

/// Liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Silent this long: stale, out of answers.
    pub cluster_ttl: Duration,
    /// Silent this long: purged.
    pub stale_grace: Duration,
}

struct ClusterEntry {
    id: ClusterId,
    cluster: Cluster,
    /// The cluster's place with interned ids; kept in step with `cluster`
    /// and `stale` by [`State::place`].
    place: Arc<Place>,
    services: BTreeMap<ServiceKey, Arc<ServiceExport>>,
    last_seen: Instant,
    last_seen_unix_ms: u64,
    stale: bool,
    /// The stream that speaks for the cluster now, if one is open.
    session: Option<(u64, CancellationToken)>,
    /// On a follower: whether the upstream registry has a stream from the
    /// cluster (the follower has none of its own).
    upstream_connected: Option<bool>,
    /// The open stream has not yet had a Snapshot accepted: until it has,
    /// its messages do not count as signs of life.
    awaiting_snapshot: bool,
    /// Announced client CIDRs refused because another cluster holds an
    /// overlapping one: (what was announced, why).
    refused_cidrs: Vec<String>,
    /// `last_seen_unix_ms`, shared with the published cluster list so a
    /// heartbeat need not republish it.
    heartbeat: Arc<AtomicU64>,
    /// The status as last published; rebuilt when a change names the
    /// cluster.
    published: Option<Arc<ClusterStatus>>,
}

impl ClusterEntry {
    /// Applies upserts (those that differ) and removals, noting what changed.
    fn apply_delta(
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

    fn status(&self) -> ClusterStatus {
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

/// Interned region and (region, zone) names. An id is never reused, so a
/// view built earlier stays valid; names no cluster or export uses any
/// more are forgotten by [`Names::collect`], so a member cannot grow the
/// table without bound by cycling through zone names.
struct Names {
    ids: HashMap<String, u32>,
    next: u32,
    /// Collect when the table grows past this.
    collect_at: usize,
}

/// The table is collected when it holds this many names, or twice what
/// the last collection kept.
const NAMES_COLLECT_MIN: usize = 4096;

impl Default for Names {
    fn default() -> Self {
        Names {
            ids: HashMap::new(),
            next: 0,
            collect_at: NAMES_COLLECT_MIN,
        }
    }
}

impl Names {
    fn id(&mut self, key: String) -> u32 {
        let next = &mut self.next;
        *self.ids.entry(key).or_insert_with(|| {
            let id = *next;
            *next = next.wrapping_add(1);
            id
        })
    }

    fn region_key(region: &str) -> String {
        format!("r\0{region}")
    }

    fn zone_key(region: Option<&str>, zone: &str) -> String {
        format!("z\0{}\0{zone}", region.unwrap_or(""))
    }

    fn region(&mut self, region: &str) -> u32 {
        self.id(Self::region_key(region))
    }

    fn zone(&mut self, region: Option<&str>, zone: &str) -> u32 {
        self.id(Self::zone_key(region, zone))
    }

    /// Forgets the names no cluster and no export of `clusters` uses, once
    /// the table has grown enough to be worth the walk (O(endpoints)).
    fn collect(&mut self, clusters: &BTreeMap<ClusterName, ClusterEntry>) {
        if self.ids.len() < self.collect_at {
            return;
        }
        let mut used = std::collections::HashSet::new();
        for entry in clusters.values() {
            let region = entry.cluster.region.as_ref().map(|r| r.as_str());
            if let Some(r) = region {
                used.insert(Self::region_key(r));
            }
            if let Some(z) = &entry.cluster.zone {
                used.insert(Self::zone_key(region, z.as_str()));
            }
            for export in entry.services.values() {
                for ep in export.endpoints() {
                    if let Some(z) = &ep.zone {
                        used.insert(Self::zone_key(region, z.as_str()));
                    }
                }
            }
        }
        let before = self.ids.len();
        self.ids.retain(|k, _| used.contains(k));
        self.collect_at = (self.ids.len() * 2).max(NAMES_COLLECT_MIN);
        info!(
            before,
            after = self.ids.len(),
            "interned zone and region names collected"
        );
    }
}

struct State {
    clusters: BTreeMap<ClusterName, ClusterEntry>,
    /// Every cluster's accepted client CIDRs.
    claims: Claims,
    names: Names,
    next_session: u64,
    next_cluster_id: ClusterId,
    serial: u32,
}

impl State {
    fn place(names: &mut Names, id: ClusterId, cluster: &Cluster, stale: bool) -> Arc<Place> {
        let region = cluster.region.as_ref().map(|r| r.as_str());
        Arc::new(Place {
            id,
            name: cluster.name.clone(),
            region: region.map(|r| (names.region(r), r.to_owned())),
            zone: cluster
                .zone
                .as_ref()
                .map(|z| (names.zone(region, z.as_str()), z.to_string())),
            stale,
        })
    }

    fn locality(&mut self) -> Locality {
        let places: Vec<(Place, &[ipnet::IpNet])> = self
            .clusters
            .values()
            .map(|e| (Place::clone(&e.place), e.cluster.client_cidrs.as_slice()))
            .collect();
        let locality = Locality::build(places);
        for (cidr, kept, ignored) in &locality.conflicts {
            warn!(%cidr, %kept, %ignored, "two clusters announce the same client CIDR; the first by name keeps it");
        }
        locality
    }
}

/// The fleet-wide registry.
pub struct Registry {
    state: Mutex<State>,
    snapshot: ArcSwap<Snapshot>,
    /// Every cluster's status as last published, for readers
    /// (ListClusters, readiness, metrics): they never touch `state`.
    listed: ArcSwap<Vec<(Arc<ClusterStatus>, Arc<AtomicU64>)>>,
    changes: broadcast::Sender<Arc<Change>>,
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

/// One open Export stream's right to speak for its cluster. A newer Hello
/// for the same cluster supersedes it: `superseded` fires and its writes are
/// refused from then on.
#[derive(Debug)]
pub struct Session {
    pub cluster: ClusterName,
    id: u64,
    pub superseded: CancellationToken,
    /// Most services this cluster may export.
    pub max_services: usize,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What a write changed, to publish.
#[derive(Default)]
struct Dirty {
    /// Per service, the clusters whose part of it changed.
    keys: BTreeMap<ServiceKey, BTreeSet<ClusterName>>,
    locality: bool,
    changes: Vec<Change>,
}

impl Dirty {
    fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.locality && self.changes.is_empty()
    }

    /// Notes that `cluster`'s part of each of `keys` changed.
    fn touch(&mut self, cluster: &ClusterName, keys: impl IntoIterator<Item = ServiceKey>) {
        for key in keys {
            self.keys.entry(key).or_default().insert(cluster.clone());
        }
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
            }),
            snapshot: ArcSwap::from_pointee(Snapshot::new(reverse).with_changes(serial, None, [])),
            listed: ArcSwap::default(),
            changes: broadcast::channel(1024).0,
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

    /// Opens a session for `cluster`, superseding any older stream for it,
    /// and returns it with the announced client CIDRs it refused: those
    /// overlapping a CIDR another cluster (live, or stale and not yet
    /// purged) holds; the first holder keeps it. The cluster's liveness is
    /// unchanged until the session's first Snapshot is accepted; its data
    /// stays as it was until then.
    pub fn hello(&self, cluster: Cluster, max_services: usize) -> (Session, Vec<String>) {
        self.write(|state, dirty| self.hello_in(state, dirty, cluster, max_services))
    }

    fn hello_in(
        &self,
        state: &mut State,
        dirty: &mut Dirty,
        mut cluster: Cluster,
        max_services: usize,
    ) -> (Session, Vec<String>) {
        let id = state.next_session;
        state.next_session += 1;
        let token = CancellationToken::new();
        let name = cluster.name.clone();
        dirty.locality = true;
        if !state.clusters.contains_key(&name) {
            let cluster_id = state.next_cluster_id;
            state.next_cluster_id += 1;
            // New: not live until its Snapshot is accepted.
            let place = State::place(&mut state.names, cluster_id, &cluster, true);
            state.clusters.insert(
                name.clone(),
                ClusterEntry {
                    id: cluster_id,
                    place,
                    cluster: Cluster {
                        client_cidrs: Vec::new(),
                        ..cluster.clone()
                    },
                    services: BTreeMap::new(),
                    last_seen: Instant::now(),
                    last_seen_unix_ms: unix_ms(),
                    stale: true,
                    session: None,
                    upstream_connected: None,
                    awaiting_snapshot: true,
                    refused_cidrs: Vec::new(),
                    heartbeat: Arc::new(AtomicU64::new(unix_ms())),
                    published: None,
                },
            );
        }
        let state_ref = &mut *state;
        let Some(entry) = state_ref.clusters.get_mut(&name) else {
            unreachable!("inserted above")
        };
        // The cluster's own CIDRs are given back before it claims anew.
        for net in &entry.cluster.client_cidrs {
            state_ref.claims.remove(net, &name);
        }
        let mut refused = Vec::new();
        cluster.client_cidrs.retain(|net| {
            match state_ref.claims.overlapping(net, &name) {
                Some((held, holder)) => {
                    refused.push(format!(
                        "client CIDR {net} overlaps {held}, which cluster {holder} holds; on a flat network pod CIDRs never overlap, so this is a misconfiguration (the first holder keeps it)"
                    ));
                    false
                }
                None => {
                    state_ref.claims.insert(net, &name);
                    true
                }
            }
        });
        if let Some((_, old)) = entry.session.take() {
            old.cancel();
        }
        // Placement changes reshape the cluster's services.
        if entry.cluster.region != cluster.region || entry.cluster.zone != cluster.zone {
            dirty.touch(&name, entry.services.keys().cloned());
        }
        entry.place = State::place(&mut state_ref.names, entry.id, &cluster, entry.stale);
        entry.cluster = cluster;
        entry.session = Some((id, token.clone()));
        entry.awaiting_snapshot = true;
        entry.refused_cidrs = refused.clone();
        dirty.changes.push(Change::Cluster(entry.status()));
        let session = Session {
            cluster: name,
            id,
            superseded: token,
            max_services,
        };
        (session, refused)
    }

    /// The session's cluster entry, touched as alive; an error when a newer
    /// stream has taken over. A stale cluster heard from again is live.
    fn entry<'a>(
        state: &'a mut State,
        session: &Session,
        dirty: &mut Dirty,
    ) -> Result<&'a mut ClusterEntry, Error> {
        match state.clusters.get_mut(&session.cluster) {
            Some(entry)
                if entry
                    .session
                    .as_ref()
                    .is_some_and(|(id, _)| *id == session.id) =>
            {
                if entry.awaiting_snapshot {
                    return Ok(entry);
                }
                entry.last_seen = Instant::now();
                entry.last_seen_unix_ms = unix_ms();
                entry
                    .heartbeat
                    .store(entry.last_seen_unix_ms, Ordering::Relaxed);
                if entry.stale {
                    info!(cluster = %session.cluster, "cluster is live again");
                    entry.stale = false;
                    Arc::make_mut(&mut entry.place).stale = false;
                    dirty.locality = true;
                    dirty.touch(&session.cluster, entry.services.keys().cloned());
                    dirty.changes.push(Change::Cluster(entry.status()));
                }
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
    ) -> Result<Vec<ServiceKey>, Error> {
        self.write(|state, dirty| self.apply_snapshot_in(state, dirty, session, services, keep))
    }

    fn apply_snapshot_in(
        &self,
        state: &mut State,
        dirty: &mut Dirty,
        session: &Session,
        mut services: Vec<ServiceExport>,
        keep: &BTreeSet<ServiceKey>,
    ) -> Result<Vec<ServiceKey>, Error> {
        self.share_keys(&mut services);
        let max = self.max_services.min(session.max_services);
        if let Some(entry) = state.clusters.get_mut(&session.cluster)
            && entry
                .session
                .as_ref()
                .is_some_and(|(id, _)| *id == session.id)
        {
            // The first accepted Snapshot makes the cluster live.
            entry.awaiting_snapshot = false;
        }
        let entry = Self::entry(state, session, dirty)?;
        let mut next: BTreeMap<ServiceKey, Arc<ServiceExport>> = BTreeMap::new();
        let mut over = Vec::new();
        for service in services {
            if next.len() < max {
                next.insert(service.key().clone(), Arc::new(service));
            } else {
                over.push(service.key().clone());
            }
        }
        for key in keep {
            if let Some(old) = entry.services.get(key)
                && next.len() < max
            {
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
        Self::services_changed(dirty, session.cluster.clone(), upserts, removals);
        Ok(over)
    }

    /// Applies upserts and removals to the cluster's export set.
    /// Removals are a set: naming a service twice removes it once. The
    /// count held against the limit is the one the Delta leaves.
    pub fn apply_delta(
        &self,
        session: &Session,
        upserts: Vec<ServiceExport>,
        removals: BTreeSet<ServiceKey>,
    ) -> Result<Vec<ServiceKey>, Error> {
        self.write(|state, dirty| self.apply_delta_in(state, dirty, session, upserts, removals))
    }

    fn apply_delta_in(
        &self,
        state: &mut State,
        dirty: &mut Dirty,
        session: &Session,
        mut upserts: Vec<ServiceExport>,
        removals: BTreeSet<ServiceKey>,
    ) -> Result<Vec<ServiceKey>, Error> {
        self.share_keys(&mut upserts);
        let max = self.max_services.min(session.max_services);
        let entry = Self::entry(state, session, dirty)?;
        if entry.awaiting_snapshot {
            return Err(Error::OutOfOrder(
                "a Delta came before the stream's first Snapshot",
            ));
        }
        let mut accepted = Vec::with_capacity(upserts.len());
        let mut over = Vec::new();
        let mut count = entry.services.len()
            - removals
                .iter()
                .filter(|k| entry.services.contains_key(*k))
                .count();
        for service in upserts {
            if entry.services.contains_key(service.key()) && !removals.contains(service.key()) {
                accepted.push(service);
            } else if count < max {
                count += 1;
                accepted.push(service);
            } else {
                over.push(service.key().clone());
            }
        }
        entry.apply_delta(accepted, removals, dirty);
        debug_assert!(entry.services.len() <= max.max(count));
        Ok(over)
    }

    /// Services already known fleet-wide take the known key's strings.
    fn share_keys(&self, services: &mut [ServiceExport]) {
        let current = self.snapshot.load();
        for service in services {
            if let Some(view) = current.view(service.key()) {
                service.share_key(&view.key);
            }
        }
    }

    fn services_changed(
        dirty: &mut Dirty,
        cluster: ClusterName,
        upserts: Vec<Arc<ServiceExport>>,
        removals: Vec<ServiceKey>,
    ) {
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        dirty.touch(&cluster, upserts.iter().map(|s| s.key().clone()));
        dirty.touch(&cluster, removals.iter().cloned());
        dirty.changes.push(Change::Services {
            cluster,
            upserts,
            removals,
        });
    }

    /// Records that the cluster is alive.
    pub fn heartbeat(&self, session: &Session) -> Result<(), Error> {
        self.write(|state, dirty| Self::heartbeat_in(state, dirty, session))
    }

    fn heartbeat_in(state: &mut State, dirty: &mut Dirty, session: &Session) -> Result<(), Error> {
        Self::entry(state, session, dirty).map(|_| ())
    }

    /// The stream ended. The cluster's data stays; its liveness decides
    /// how long it is served.
    pub fn disconnect(&self, session: &Session) {
        self.write(|state, dirty| Self::disconnect_in(state, dirty, session));
    }

    fn disconnect_in(state: &mut State, dirty: &mut Dirty, session: &Session) {
        let Some(entry) = state.clusters.get_mut(&session.cluster) else {
            return;
        };
        if entry
            .session
            .as_ref()
            .is_some_and(|(id, _)| *id == session.id)
        {
            entry.session = None;
            dirty.changes.push(Change::Cluster(entry.status()));
        }
    }

    /// Marks clusters silent for `cluster_ttl` stale and purges those
    /// silent for `stale_grace`. Run it often (every `cluster_ttl / 10`).
    pub fn sweep(&self, now: Instant, liveness: Liveness) {
        self.write(|state, dirty| Self::sweep_in(state, dirty, now, liveness));
    }

    fn sweep_in(state: &mut State, dirty: &mut Dirty, now: Instant, liveness: Liveness) {
        let mut purge = Vec::new();
        for (name, entry) in state.clusters.iter_mut() {
            let silent = now.saturating_duration_since(entry.last_seen);
            if silent >= liveness.stale_grace {
                purge.push(name.clone());
            } else if silent >= liveness.cluster_ttl && !entry.stale {
                warn!(cluster = %name, silent_ms = silent.as_millis() as u64, "cluster missed its heartbeats: stale, out of answers");
                entry.stale = true;
                Arc::make_mut(&mut entry.place).stale = true;
                dirty.locality = true;
                dirty.touch(name, entry.services.keys().cloned());
                dirty.changes.push(Change::Cluster(entry.status()));
            }
        }
        let State {
            clusters, names, ..
        } = &mut *state;
        names.collect(clusters);
        for name in purge {
            if let Some(entry) = state.clusters.remove(&name) {
                warn!(cluster = %name, services = entry.services.len(), "stale cluster purged after its grace period");
                for net in &entry.cluster.client_cidrs {
                    state.claims.remove(net, &name);
                }
                if let Some((_, token)) = entry.session {
                    token.cancel();
                }
                dirty.locality = true;
                dirty.touch(&name, entry.services.into_keys());
                dirty.changes.push(Change::ClusterRemoved(name));
            }
        }
    }

    /// Rebuilds the views of the services that changed (and the locality
    /// if clusters changed), stores the next snapshot and tells watchers.
    /// Runs under the state lock so snapshots are published in write order.
    fn publish(&self, state: &mut State, dirty: Dirty) {
        let Dirty {
            keys,
            locality,
            changes,
        } = dirty;
        if !keys.is_empty() || locality {
            self.rebuild(state, keys, locality);
        }
        // The cluster list and the change feed follow the snapshot, so a
        // reader that sees them finds the answers already there.
        if !changes.is_empty() {
            self.list(state, &changes);
        }
        for change in changes {
            let _ = self.changes.send(Arc::new(change));
        }
    }

    /// Rebuilds the views of `keys` (and the locality table) and stores
    /// the next snapshot.
    fn rebuild(
        &self,
        state: &mut State,
        keys: BTreeMap<ServiceKey, BTreeSet<ClusterName>>,
        locality: bool,
    ) {
        let dirty_locality = locality;
        let started = Instant::now();
        state.serial = state.serial.wrapping_add(1);
        let locality = dirty_locality.then(|| Arc::new(state.locality()));
        let State {
            clusters, names, ..
        } = &mut *state;
        let current = self.snapshot.load();
        let views: Vec<(ServiceKey, Option<Arc<ServiceView>>)> = keys
            .into_iter()
            .map(|(key, changed)| {
                // Only the changed clusters' parts are rebuilt; the rest
                // are shared with the current view.
                let changes: Vec<PartChange<'_>> = changed
                    .iter()
                    .map(|name| {
                        let held = clusters
                            .get(name)
                            .and_then(|e| e.services.get(&key).map(|x| (e, x)));
                        match held {
                            Some((entry, export)) => PartChange::Set(ExportInput {
                                place: &entry.place,
                                export,
                            }),
                            None => PartChange::Remove(name),
                        }
                    })
                    .collect();
                let view = ServiceView::update(
                    key.clone(),
                    current.view(&key).map(|v| &**v),
                    &changes,
                    self.default_ttl,
                    &mut |r, z| names.zone(r, z),
                );
                (key, (!view.clusters.is_empty()).then(|| Arc::new(view)))
            })
            .collect();
        let next = current.with_changes(state.serial, locality, views);
        let old = self.snapshot.swap(Arc::new(next));
        drop(current);
        self.metrics.snapshot_built(started.elapsed());
        self.reaper.retire(old);
    }

    /// Publishes the cluster list, rebuilding the statuses of the clusters
    /// `changes` name (the others are shared with the last list).
    fn list(&self, state: &mut State, changes: &[Change]) {
        let named: std::collections::HashSet<&ClusterName> = changes
            .iter()
            .filter_map(|c| match c {
                Change::Cluster(status) => Some(&status.cluster.name),
                Change::Services { cluster, .. } => Some(cluster),
                Change::ClusterRemoved(_) => None,
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

    fn service_of(state: &State, key: &ServiceKey) -> Vec<(ClusterName, Arc<ServiceExport>)> {
        state
            .clusters
            .iter()
            .filter_map(|(n, e)| e.services.get(key).map(|s| (n.clone(), s.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_names_are_collected_and_ids_never_reused() {
        let mut names = Names::default();
        let kept = names.zone(Some("r"), "kept");
        for i in 0..NAMES_COLLECT_MIN {
            names.zone(Some("r"), &format!("z{i}"));
        }
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::new(5, false, metrics);
        let cluster = Cluster {
            name: ClusterName::new("c").unwrap(),
            region: Some(meshdns_proto::model::LabelValue::new("r").unwrap()),
            zone: Some(meshdns_proto::model::LabelValue::new("kept").unwrap()),
            client_cidrs: vec![],
            version: String::new(),
        };
        registry.hello(cluster, usize::MAX);
        let state = registry.lock();
        names.collect(&state.clusters);
        assert_eq!(names.ids.len(), 1, "only the cluster's zone is in use");
        assert_eq!(names.zone(Some("r"), "kept"), kept);
        let fresh = names.zone(Some("r"), "z0");
        assert!(fresh > kept + NAMES_COLLECT_MIN as u32 - 1, "{fresh}");
    }
}
