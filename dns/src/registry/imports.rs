//! The clusterset's view of every service ([`conflicts::resolve`]), kept
//! up to date from the registry's change feed by one task and published
//! on a `watch` channel: WatchImports streams it, GetService and the
//! `meshdns_service_conflicts` gauge read it.
//!
//! The task remembers when the registry first accepted each cluster's
//! export of each service (what "oldest export" means); an export that
//! goes away and comes back is new again. With `--state-file`, those
//! times are persisted beside it (`PATH.first-exported.json`, at most once
//! a second, on the blocking pool: a temporary file written, fsynced and
//! renamed) so a restart does not reshuffle winners.
//! Changes are applied as they arrive (cheap: a map insert per export);
//! the services they touch are resolved once [`RESOLVE_AFTER`] after the
//! first of them, all together, and the view is published once. Resolving
//! costs the service's exporters: a reconnect storm of 1,000 Snapshots
//! would otherwise resolve each service once per publish over up to 1,000
//! exporters, on the runtime that also answers probes and DNS over TCP,
//! and every single change would resolve its service while the DNS
//! answers it changed are still going out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::model::{ClusterName, Namespace, ServiceExport, ServiceKey, ServiceName};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::conflicts::{self, Exporter, Field, Resolved};
use super::{Change, FullState, Writer};
use crate::metrics::{Metrics, unix_ms};

/// Every service the clusterset offers, resolved.
#[derive(Debug, Default)]
pub struct ImportsView {
    pub services: BTreeMap<ServiceKey, Arc<Resolved>>,
    /// The view may be served to syncers (WatchImports): it was restored
    /// from `--state-file`, or one cluster TTL has passed since start, so
    /// every live member had the time to reconnect. A cold view is partial:
    /// served, it would read as "these services are gone".
    pub warm: bool,
}

/// The view as its readers hold it.
pub type Imports = watch::Receiver<Arc<ImportsView>>;

/// The side file's path for a `--state-file` path.
pub fn first_exported_path(state_file: &Path) -> PathBuf {
    let mut name = state_file.as_os_str().to_owned();
    name.push(".first-exported.json");
    PathBuf::from(name)
}

#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    /// (cluster, namespace, name, first accepted, ms since the epoch).
    exports: Vec<(String, String, String, u64)>,
}

type Pair = (ServiceKey, ClusterName);

fn load(path: &Path) -> HashMap<Pair, u64> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return HashMap::new(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the first-exported times; starting afresh");
            return HashMap::new();
        }
    };
    let persisted: Persisted = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "the first-exported times do not parse; starting afresh");
            return HashMap::new();
        }
    };
    persisted
        .exports
        .into_iter()
        .filter_map(|(cluster, ns, name, at)| {
            let key = ServiceKey {
                namespace: Namespace::new(&ns).ok()?,
                name: ServiceName::new(&name).ok()?,
            };
            Some(((key, ClusterName::new(&cluster).ok()?), at))
        })
        .collect()
}

fn save(path: &Path, times: &HashMap<Pair, u64>) {
    let mut exports: Vec<_> = times
        .iter()
        .map(|((key, cluster), at)| {
            (
                cluster.to_string(),
                key.namespace.to_string(),
                key.name.to_string(),
                *at,
            )
        })
        .collect();
    exports.sort();
    let tmp = {
        let mut name = path.as_os_str().to_owned();
        name.push(".tmp");
        PathBuf::from(name)
    };
    let written = serde_json::to_vec(&Persisted { exports })
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        warn!(path = %path.display(), error = %e, "cannot save the first-exported times");
    }
}

/// The side file is written at most this often.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// Changed services wait this long after the first change to be resolved
/// together: the view (MCS status, GetService's `resolved`) trails the
/// registry by at most this much, and a storm resolves each service about
/// once per interval instead of once per publish.
pub const RESOLVE_AFTER: Duration = Duration::from_millis(100);

/// Writes the side file on the blocking pool, one write at a time.
#[derive(Default)]
struct Saver {
    running: Option<tokio::task::JoinHandle<()>>,
}

impl Saver {
    /// Starts writing a copy of `times` once the previous write is done.
    async fn save(&mut self, path: &Path, times: &HashMap<Pair, u64>) {
        self.finish().await;
        let (path, times) = (path.to_owned(), times.clone());
        self.running = Some(tokio::task::spawn_blocking(move || {
            crate::priority::control_plane_thread();
            save(&path, &times)
        }));
    }

    /// Waits for the write under way, if any.
    async fn finish(&mut self) {
        if let Some(running) = self.running.take() {
            let _ = running.await;
        }
    }
}

/// The task's state: every export by service, and when each was first
/// accepted.
struct Tracker {
    /// Each export with its time from `first`, so resolving a service
    /// looks nothing up per exporter.
    exports: HashMap<ServiceKey, BTreeMap<ClusterName, (Arc<ServiceExport>, u64)>>,
    first: HashMap<Pair, u64>,
    view: BTreeMap<ServiceKey, Arc<Resolved>>,
    /// `first` changed since it was last saved.
    dirty: bool,
    /// `view` changed since it was last published.
    changed: bool,
    /// Services changed since they were last resolved.
    pending: BTreeSet<ServiceKey>,
}

impl Tracker {
    fn reset(&mut self, state: FullState) {
        self.exports.clear();
        for (status, services) in state.clusters {
            for service in services {
                self.exports
                    .entry(service.key().clone())
                    .or_default()
                    .insert(status.cluster.name.clone(), (service, u64::MAX));
            }
        }
        let now = unix_ms();
        let before = self.first.len();
        let exports = &self.exports;
        self.first
            .retain(|(key, cluster), _| exports.get(key).is_some_and(|c| c.contains_key(cluster)));
        for (key, clusters) in &mut self.exports {
            for (cluster, (_, at)) in clusters.iter_mut() {
                *at = *self
                    .first
                    .entry((key.clone(), cluster.clone()))
                    .or_insert_with(|| {
                        self.dirty = true;
                        now
                    });
            }
        }
        self.dirty |= self.first.len() != before;
        let keys: Vec<ServiceKey> = self.exports.keys().cloned().collect();
        self.pending.clear();
        self.view.clear();
        self.changed = true;
        for key in keys {
            self.resolve(&key);
        }
    }

    fn upsert(&mut self, cluster: &ClusterName, service: Arc<ServiceExport>) {
        let key = service.key().clone();
        let at = *self
            .first
            .entry((key.clone(), cluster.clone()))
            .or_insert_with(|| {
                self.dirty = true;
                unix_ms()
            });
        self.exports
            .entry(key.clone())
            .or_default()
            .insert(cluster.clone(), (service, at));
        self.pending.insert(key);
    }

    fn remove(&mut self, cluster: &ClusterName, key: &ServiceKey) {
        if let Some(clusters) = self.exports.get_mut(key) {
            clusters.remove(cluster);
            if clusters.is_empty() {
                self.exports.remove(key);
            }
        }
        if self.first.remove(&(key.clone(), cluster.clone())).is_some() {
            self.dirty = true;
        }
        self.pending.insert(key.clone());
    }

    /// Resolves every service changed since the last flush, once each.
    fn flush(&mut self) {
        for key in std::mem::take(&mut self.pending) {
            self.resolve(&key);
        }
    }

    fn apply(&mut self, change: &Change) {
        match change {
            Change::Cluster(_) | Change::Policy(_) => {}
            Change::Services {
                cluster,
                upserts,
                removals,
            } => {
                for key in removals {
                    self.remove(cluster, key);
                }
                for service in upserts {
                    self.upsert(cluster, service.clone());
                }
            }
            Change::ClusterRemoved(cluster) => {
                let keys: Vec<ServiceKey> = self
                    .exports
                    .iter()
                    .filter(|(_, c)| c.contains_key(cluster))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    self.remove(cluster, &key);
                }
            }
        }
    }

    /// Resolves `key` again; the view keeps the old `Arc` when nothing
    /// changed, so readers comparing pointers see no change.
    fn resolve(&mut self, key: &ServiceKey) {
        let resolved = self.exports.get(key).and_then(|clusters| {
            conflicts::resolve(
                key,
                clusters.iter().map(|(cluster, (export, at))| Exporter {
                    cluster,
                    first_exported_unix_ms: *at,
                    export,
                }),
            )
        });
        match resolved {
            Some(r) => {
                if self.view.get(key).is_none_or(|old| **old != r) {
                    self.view.insert(key.clone(), Arc::new(r));
                    self.changed = true;
                }
            }
            None => {
                self.changed |= self.view.remove(key).is_some();
            }
        }
    }

    fn gauges(&self) -> [usize; 2] {
        let mut counts = [0; 2];
        for r in self.view.values() {
            for c in &r.conflicts {
                counts[match c.field {
                    Field::Ports => 0,
                    Field::Mode => 1,
                }] += 1;
            }
        }
        counts
    }
}

/// Starts the task; the view is empty until the registry's state is read,
/// and cold (not [`ImportsView::warm`]) until the first state read holds a
/// cluster (restored from `--state-file`) or `warm_after` (the cluster
/// TTL) has passed.
pub fn start(
    writer: Writer,
    metrics: Arc<Metrics>,
    persist: Option<PathBuf>,
    warm_after: Duration,
    shutdown: CancellationToken,
) -> Imports {
    let (tx, rx) = watch::channel(Arc::new(ImportsView::default()));
    let warm_at = tokio::time::Instant::now() + warm_after;
    tokio::spawn(async move {
        let mut warm = warm_after.is_zero();
        let mut saver = Saver::default();
        let mut save_at: Option<tokio::time::Instant> = None;
        let mut last_save = tokio::time::Instant::now()
            .checked_sub(SAVE_EVERY)
            .unwrap_or_else(tokio::time::Instant::now);
        // When the services changed since the last resolve are due.
        let mut resolve_at: Option<tokio::time::Instant> = None;
        let mut tracker = Tracker {
            exports: HashMap::new(),
            first: persist.as_deref().map(load).unwrap_or_default(),
            view: BTreeMap::new(),
            dirty: false,
            changed: false,
            pending: BTreeSet::new(),
        };
        'subscribe: loop {
            let Ok((state, mut changes)) = writer.subscribe().await else {
                return;
            };
            if !warm && !state.clusters.is_empty() {
                info!("the imports view is warm: restored from the state file");
                warm = true;
            }
            tracker.reset(state);
            loop {
                // Heartbeats and liveness changes leave the view alone.
                if std::mem::take(&mut tracker.changed) {
                    tx.send_replace(Arc::new(ImportsView {
                        services: tracker.view.clone(),
                        warm,
                    }));
                    metrics.conflicts.set(tracker.gauges(), tracker.view.len());
                }
                if tracker.dirty && persist.is_some() && save_at.is_none() {
                    save_at = Some(last_save + SAVE_EVERY);
                }
                let first = tokio::select! {
                    _ = shutdown.cancelled() => {
                        if tracker.dirty && let Some(path) = &persist {
                            saver.save(path, &tracker.first).await;
                        }
                        saver.finish().await;
                        return;
                    }
                    () = tokio::time::sleep_until(resolve_at.unwrap_or(warm_at)), if resolve_at.is_some() => {
                        tracker.flush();
                        resolve_at = None;
                        continue;
                    }
                    () = tokio::time::sleep_until(save_at.unwrap_or(warm_at)), if save_at.is_some() => {
                        if let Some(path) = &persist {
                            saver.save(path, &tracker.first).await;
                        }
                        tracker.dirty = false;
                        save_at = None;
                        last_save = tokio::time::Instant::now();
                        continue;
                    }
                    received = changes.recv() => received,
                    () = tokio::time::sleep_until(warm_at), if !warm => {
                        info!(after = ?warm_after, "the imports view is warm: one cluster TTL since start");
                        warm = true;
                        tracker.changed = true;
                        continue;
                    }
                };
                let mut next = Some(first);
                // Everything already queued is published once.
                while let Some(received) = next.take() {
                    match received {
                        Ok(change) => tracker.apply(&change),
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            info!(
                                missed,
                                "the imports view fell behind the changes; rebuilding it"
                            );
                            continue 'subscribe;
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                    next = match changes.try_recv() {
                        Ok(c) => Some(Ok(c)),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => {
                            Some(Err(broadcast::error::RecvError::Lagged(n)))
                        }
                        Err(_) => None,
                    };
                }
                if !tracker.pending.is_empty() && resolve_at.is_none() {
                    resolve_at = Some(tokio::time::Instant::now() + RESOLVE_AFTER);
                }
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU16;

    use meshdns_proto::fixtures;
    use meshdns_proto::model::{Mode, Policy, Port, Protocol};

    use super::*;

    fn tracker(first: HashMap<Pair, u64>) -> Tracker {
        Tracker {
            exports: HashMap::new(),
            first,
            view: BTreeMap::new(),
            dirty: false,
            changed: false,
            pending: BTreeSet::new(),
        }
    }

    fn export(service: usize, port: u16) -> Arc<ServiceExport> {
        let key = fixtures::key("shop", &format!("s{service}"));
        let port = Port {
            name: None,
            protocol: Protocol::Tcp,
            port: NonZeroU16::new(port).unwrap(),
        };
        let endpoint = fixtures::endpoint(std::net::Ipv4Addr::new(10, 0, 0, 1).into());
        Arc::new(
            ServiceExport::new(
                key,
                vec![port],
                Mode::Endpoints,
                vec![],
                vec![endpoint],
                Policy::default(),
            )
            .unwrap(),
        )
    }

    fn cluster(c: usize) -> ClusterName {
        ClusterName::new(&format!("c{c}")).unwrap()
    }

    /// A storm: every cluster sends every service (ports disagreeing, so
    /// there are conflicts), some send again, some remove, one is purged.
    fn storm() -> Vec<Change> {
        let mut changes = Vec::new();
        for c in 0..6 {
            changes.push(Change::Services {
                cluster: cluster(c),
                upserts: (0..4).map(|s| export(s, 80 + (c % 3) as u16)).collect(),
                removals: vec![],
            });
        }
        changes.push(Change::Services {
            cluster: cluster(1),
            upserts: vec![export(2, 9090)],
            removals: vec![fixtures::key("shop", "s3")],
        });
        changes.push(Change::ClusterRemoved(cluster(0)));
        changes.push(Change::Services {
            cluster: cluster(4),
            upserts: vec![],
            removals: vec![fixtures::key("shop", "s1")],
        });
        changes
    }

    #[test]
    fn changes_applied_together_resolve_as_one_at_a_time_would() {
        // First-accepted times fixed up front, so both trackers agree on
        // who is oldest without reading the clock.
        let first: HashMap<Pair, u64> = (0..6)
            .flat_map(|c| {
                (0..4).map(move |s| {
                    (
                        (fixtures::key("shop", &format!("s{s}")), cluster(c)),
                        1_000 + c as u64,
                    )
                })
            })
            .collect();
        let mut one_by_one = tracker(first.clone());
        for change in storm() {
            one_by_one.apply(&change);
            one_by_one.flush();
        }
        let mut together = tracker(first);
        for change in storm() {
            together.apply(&change);
        }
        together.flush();
        assert!(together.pending.is_empty());
        assert_eq!(together.view, one_by_one.view);
        assert_eq!(together.view.len(), 4, "every service still exported");
        let conflicts: usize = together.view.values().map(|r| r.conflicts.len()).sum();
        assert!(conflicts > 0, "the storm's ports disagree");
        // c0 was purged: no longer an exporter of anything.
        assert!(
            together
                .view
                .values()
                .all(|r| r.clusters.iter().all(|(c, _)| c != &cluster(0)))
        );
    }
}
