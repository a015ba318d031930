//! Publishing: the changed services' views rebuilt, the next snapshot
//! stored, then the cluster list and the change feed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use meshdns_proto::model::{ClusterName, FleetPolicy, ServiceKey};

use super::{Change, Registry, State};
use crate::snapshot::{Context, ExportInput, PartChange, ServiceView, Snapshot};

/// What a write changed, to publish.
#[derive(Default)]
pub(super) struct Dirty {
    /// Per service, the clusters whose part of it changed.
    pub(super) keys: BTreeMap<ServiceKey, BTreeSet<ClusterName>>,
    pub(super) locality: bool,
    /// The fleet policy changed: every view is rebuilt from scratch.
    pub(super) policy: bool,
    pub(super) changes: Vec<Change>,
}

impl Dirty {
    pub(super) fn is_empty(&self) -> bool {
        self.keys.is_empty() && !self.locality && !self.policy && self.changes.is_empty()
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
            policy,
            changes,
        } = dirty;
        if !keys.is_empty() || locality || policy {
            self.rebuild(state, keys, locality, policy);
        }
        // The cluster list and the change feed follow the snapshot, so a
        // reader that sees them finds the answers already there.
        if !changes.is_empty() {
            self.list(state, &changes);
            // The backlog a slow watcher keeps is bounded by the
            // registry's own size (see `feed`).
            let size = state.listed_endpoints;
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
        new_policy: bool,
    ) {
        let dirty_locality = locality;
        let started = Instant::now();
        state.serial = state.serial.wrapping_add(1);
        let locality = dirty_locality.then(|| Arc::new(state.locality()));
        let in_force = state.policy.clone();
        let policy: &FleetPolicy = &in_force;
        let State {
            clusters, names, ..
        } = &mut *state;
        let loaded = self.snapshot.load();
        // A new policy: no view of the old one is built upon.
        let repoliced = new_policy.then(|| Arc::new(loaded.with_policy(in_force.clone())));
        let current: &Snapshot = repoliced.as_deref().unwrap_or(&loaded);
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
                let view = ServiceView::update_in(
                    key.clone(),
                    current.view(&key).filter(|_| !new_policy).map(|v| &**v),
                    &changes,
                    &mut Context {
                        default_ttl: self.default_ttl,
                        policy,
                        names: &mut *names,
                    },
                );
                (key, (!view.clusters.is_empty()).then(|| Arc::new(view)))
            })
            .collect();
        let next = current.with_changes(state.serial, locality, views);
        let old = self.snapshot.swap(Arc::new(next));
        drop(loaded);
        self.metrics.snapshot_built(started.elapsed());
        self.reaper.retire(old);
    }
}

impl Registry {
    /// Puts `policy` in force: every cluster's place (a provider the
    /// policy names) and every service's view are rebuilt under it, and
    /// the next snapshot published. Once this returns (or the writer's
    /// [`Writer::set_policy`](super::Writer::set_policy) is answered),
    /// answers follow the policy.
    pub fn set_policy(&self, policy: Arc<FleetPolicy>) {
        self.write(|state, dirty| Self::set_policy_in(state, dirty, policy));
    }

    /// The policy in force.
    pub fn policy(&self) -> Arc<FleetPolicy> {
        self.snapshot.load().policy.clone()
    }

    pub(super) fn set_policy_in(state: &mut State, dirty: &mut Dirty, policy: Arc<FleetPolicy>) {
        // Watchers (followers) take the whole new policy.
        dirty.changes.push(Change::Policy(policy.clone()));
        state.policy = policy;
        dirty.policy = true;
        dirty.locality = true;
        let State {
            clusters,
            names,
            policy,
            ..
        } = state;
        // A region default applies to askers of a region no cluster is in
        // yet: its id exists before that cluster's Hello.
        names.pin_regions(policy.regions.keys().map(|r| r.as_str()));
        for entry in clusters.values_mut() {
            entry.place = State::place(names, policy, entry.id, &entry.cluster, entry.stale);
            let name = entry.cluster.name.clone();
            dirty.touch(&name, entry.services.keys().cloned());
        }
    }
}
