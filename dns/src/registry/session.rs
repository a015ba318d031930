//! Export streams: a Hello opens a session for its cluster (superseding
//! an older one), every message is a sign of life, and the stream's end
//! leaves the data to liveness.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use meshdns_proto::model::{Affinity, Cluster, ClusterName, ServiceKey};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{Change, ClusterEntry, Dirty, Registry, State};
use crate::error::Error;

/// One open Export stream's right to speak for its cluster. A newer Hello
/// for the same cluster supersedes it: `superseded` fires and its writes are
/// refused from then on.
#[derive(Debug)]
pub struct Session {
    pub cluster: ClusterName,
    pub(super) id: u64,
    pub superseded: CancellationToken,
    /// Most services this cluster may export.
    pub max_services: usize,
}

pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The services of `entry`'s cluster that announcing it anew as `cluster`
/// reshapes: every one when its placement (region, zone, provider)
/// changes; when only its node list does, those whose part has the node
/// tier (runs keyed by node index), not the rest — the locality, which
/// tells the node asking, is rebuilt on any announcement; none otherwise.
pub(super) fn reshaped(entry: &ClusterEntry, cluster: &Cluster) -> Vec<ServiceKey> {
    let old = &entry.cluster;
    if old.region != cluster.region || old.zone != cluster.zone || old.provider != cluster.provider
    {
        entry.services.keys().cloned().collect()
    } else if old.nodes != cluster.nodes {
        entry
            .services
            .iter()
            .filter(|(_, export)| export.policy().affinity == Affinity::Node)
            .map(|(key, _)| key.clone())
            .collect()
    } else {
        Vec::new()
    }
}

impl Registry {
    /// Opens a session for `cluster`, superseding any older stream for it,
    /// and returns it with the announced client CIDRs it refused: those
    /// overlapping a CIDR another cluster (live, or stale and not yet
    /// purged) holds; the first holder keeps it. The cluster's liveness is
    /// unchanged until the session's first Snapshot is accepted; its data
    /// stays as it was until then.
    pub fn hello(&self, cluster: Cluster, max_services: usize) -> (Session, Vec<String>) {
        self.write(|state, dirty| self.hello_in(state, dirty, cluster, max_services))
    }

    pub(super) fn hello_in(
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
            let place = State::place(&mut state.names, &state.policy, cluster_id, &cluster, true);
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
                    hello_counts: false,
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
        dirty.touch(&name, reshaped(entry, &cluster));
        entry.place = State::place(
            &mut state_ref.names,
            &state_ref.policy,
            entry.id,
            &cluster,
            entry.stale,
        );
        entry.cluster = cluster;
        entry.session = Some((id, token.clone()));
        entry.awaiting_snapshot = true;
        // A live cluster's syncer is back (after a restart of the hub, or
        // of its stream): a sign of life once, which never makes a stale
        // cluster live (its first accepted Snapshot does).
        if !entry.stale && std::mem::take(&mut entry.hello_counts) {
            entry.heard_now();
        }
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
    pub(super) fn entry<'a>(
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
                entry.heard_now();
                entry.hello_counts = true;
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

    /// Records that the cluster is alive.
    pub fn heartbeat(&self, session: &Session) -> Result<(), Error> {
        self.write(|state, dirty| Self::heartbeat_in(state, dirty, session))
    }

    pub(super) fn heartbeat_in(
        state: &mut State,
        dirty: &mut Dirty,
        session: &Session,
    ) -> Result<(), Error> {
        Self::entry(state, session, dirty).map(|_| ())
    }

    /// The stream ended. The cluster's data stays; its liveness decides
    /// how long it is served.
    pub fn disconnect(&self, session: &Session) {
        self.write(|state, dirty| Self::disconnect_in(state, dirty, session));
    }

    pub(super) fn disconnect_in(state: &mut State, dirty: &mut Dirty, session: &Session) {
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
}
