//! A cluster's exports applied: a Snapshot replaces the whole set, a
//! Delta upserts and removes, both within the cluster's service limit.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshdns_proto::model::{ClusterName, ServiceExport, ServiceKey};

use super::{Allowed, Change, Dirty, Registry, Session, State};
use crate::error::Error;

impl Registry {
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

    pub(super) fn apply_snapshot_in(
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
                // An export equal to the one held (a reconnect after a
                // restart, restored or not) keeps the held one: its parts
                // stay as built and it is no upsert.
                let export = match entry.services.get(service.key()) {
                    Some(held) if **held == service => held.clone(),
                    _ => Arc::new(service),
                };
                next.insert(export.key().clone(), export);
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
            .filter(|(k, v)| !entry.services.get(*k).is_some_and(|h| Arc::ptr_eq(h, v)))
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

    pub(super) fn apply_delta_in(
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

    /// Removes every service that `allowed` refuses, of every cluster,
    /// connected or not: what the fleet file stops allowing leaves the
    /// answers now, not when the cluster reconnects, goes stale or is
    /// purged (a stale cluster's services are served fail-open until
    /// then). Not a sign of life. Returns how many left.
    pub(super) fn enforce_in(state: &mut State, dirty: &mut Dirty, allowed: &Allowed) -> usize {
        let mut count = 0;
        for (name, entry) in &mut state.clusters {
            let removals: BTreeSet<ServiceKey> = entry
                .services
                .values()
                .filter(|s| !allowed(name, s))
                .map(|s| s.key().clone())
                .collect();
            if !removals.is_empty() {
                count += removals.len();
                entry.apply_delta(Vec::new(), removals, dirty);
            }
        }
        count
    }

    /// Services already known fleet-wide take the known key's strings.
    pub(super) fn share_keys(&self, services: &mut [ServiceExport]) {
        let current = self.snapshot.load();
        for service in services {
            if let Some(view) = current.view(service.key()) {
                service.share_key(&view.key);
            }
        }
    }

    pub(super) fn services_changed(
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
}
