//! `serve --follow URL`: mirror another registry through its Watch stream
//! (the whole state, then every change) and answer DNS from the mirror.
//! Reconnects with backoff and jitter; while the upstream is away the
//! replica keeps answering from the last state it had.

use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::client::ClientAuth;
use meshdns_proto::model::{Cluster, ClusterName, ServiceExport, ServiceKey};
use meshdns_proto::wire::{self, watch_event::Event};
use meshdns_syncer::publish::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::registry::{MirroredCluster, Registry};

fn cluster(info: &wire::ClusterInfo) -> Option<MirroredCluster> {
    let hello = wire::Hello {
        cluster: info.name.clone(),
        region: info.region.clone(),
        zone: info.zone.clone(),
        client_cidrs: info.client_cidrs.clone(),
        version: info.version.clone(),
    };
    match Cluster::try_from(&hello) {
        Ok(cluster) => Some(MirroredCluster {
            cluster,
            stale: info.state == wire::ClusterState::Stale as i32,
            connected: info.connected,
            last_heartbeat_unix_ms: info.last_heartbeat_unix_ms,
        }),
        Err(e) => {
            warn!(cluster = %info.name, error = %e, "upstream sent an invalid cluster; skipped");
            None
        }
    }
}

fn services(list: &[wire::ServiceExport]) -> Vec<ServiceExport> {
    list.iter()
        .filter_map(|s| {
            ServiceExport::try_from(s)
                .map_err(|e| warn!(error = %e, "upstream sent an invalid service; skipped"))
                .ok()
        })
        .collect()
}

/// The clusters of a wire Reset, validated; invalid items are skipped.
pub fn clusters_of(reset: &wire::Reset) -> Vec<(MirroredCluster, Vec<ServiceExport>)> {
    reset
        .clusters
        .iter()
        .filter_map(|c| Some((cluster(c.cluster.as_ref()?)?, services(&c.services))))
        .collect()
}

fn apply(registry: &Registry, event: Event) {
    match event {
        Event::Reset(reset) => registry.mirror_reset(clusters_of(&reset)),
        Event::Cluster(info) => {
            if let Some(m) = cluster(&info) {
                registry.mirror_cluster(m);
            }
        }
        Event::Services(changed) => {
            let Ok(name) = ClusterName::new(&changed.cluster) else {
                return;
            };
            let removals = changed
                .removals
                .iter()
                .filter_map(|k| ServiceKey::try_from(k).ok())
                .collect();
            registry.mirror_services(&name, services(&changed.upserts), removals);
        }
        Event::ClusterRemoved(name) => {
            if let Ok(name) = ClusterName::new(&name) {
                registry.mirror_remove(&name);
            }
        }
    }
}

/// Mirrors `url` into `registry` until `shutdown`.
pub async fn run(
    url: String,
    auth: ClientAuth,
    registry: Arc<Registry>,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = stream(&url, &auth, &registry, &mut backoff) => r,
        };
        warn!(upstream = %url, error = %result, "lost the upstream registry; answering from the last state");
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// One Watch stream's life; returns why it ended.
async fn stream(
    url: &str,
    auth: &ClientAuth,
    registry: &Registry,
    backoff: &mut Backoff,
) -> String {
    let mut client = match auth.connect(url).await {
        Ok(client) => client,
        Err(e) => return e,
    };
    let mut events = match client.watch(wire::WatchRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(status) => return format!("watch: {}", status.message()),
    };
    loop {
        match events.message().await {
            Ok(Some(wire::WatchEvent { event: Some(event) })) => {
                if matches!(event, Event::Reset(_)) {
                    info!(upstream = %url, "mirroring the upstream registry");
                    backoff.reset();
                }
                apply(registry, event);
            }
            Ok(Some(_)) => {}
            Ok(None) => return "the upstream ended the stream".into(),
            Err(status) => return format!("{:?}: {}", status.code(), status.message()),
        }
    }
}
