//! Publishing: the changed services' views rebuilt, the next snapshot
//! stored, then the cluster list and the change feed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use meshdns_proto::model::{ClusterName, ServiceKey};

use super::{Change, Registry, State};
use crate::snapshot::{ExportInput, PartChange, ServiceView};

/// What a write changed, to publish.
#[derive(Default)]
pub(super) struct Dirty {
    /// Per service, the clusters whose part of it changed.
    pub(super) keys: BTreeMap<ServiceKey, BTreeSet<ClusterName>>,
    pub(super) locality: bool,
    pub(super) changes: Vec<Change>,
}

impl Dirty {
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.locality && self.changes.is_empty()
    }

    /// Notes that `cluster`'s part of each of `keys` changed.
    pub(super) fn touch(
        &mut self,
        cluster: &ClusterName,
        keys: impl IntoIterator<Item = ServiceKey>,
    ) {
        for key in keys {
            self.keys.entry(key).or_default().insert(cluster.clone());
        }
    }
}

impl Registry {
    /// Rebuilds the views of the services that changed (and the locality
    /// if clusters changed), stores the next snapshot and tells watchers.
    /// Runs under the state lock so snapshots are published in write order.
    pub(super) fn publish(&self, state: &mut State, dirty: Dirty) {
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
            // The backlog a slow watcher keeps is bounded by the
            // registry's own size (see `feed`).
            let size: usize = self.listed.load().iter().map(|(s, _)| s.endpoints).sum();
            for change in changes {
                self.changes.send(Arc::new(change), size);
            }
        }
    }

    /// Rebuilds the views of `keys` (and the locality table) and stores
    /// the next snapshot.
    pub(super) fn rebuild(
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
}
