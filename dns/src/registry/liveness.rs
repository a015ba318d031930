//! Liveness: every message from a cluster's stream is a sign of life;
//! a cluster silent for `cluster_ttl` is stale (out of answers unless
//! nothing else holds the service), one silent for `stale_grace` purged.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::warn;

use super::{Change, Dirty, Registry, State};

/// Liveness settings.
#[derive(Debug, Clone, Copy)]
pub struct Liveness {
    /// Silent this long: stale, out of answers.
    pub cluster_ttl: Duration,
    /// Silent this long: purged.
    pub stale_grace: Duration,
}

impl Registry {
    /// Marks clusters silent for `cluster_ttl` stale and purges those
    /// silent for `stale_grace`. Run it often (every `cluster_ttl / 10`).
    pub fn sweep(&self, now: Instant, liveness: Liveness) {
        self.write(|state, dirty| Self::sweep_in(state, dirty, now, liveness));
    }

    pub(super) fn sweep_in(state: &mut State, dirty: &mut Dirty, now: Instant, liveness: Liveness) {
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
}
