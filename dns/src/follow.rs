//! `serve --follow URL`: mirror another registry through its Watch stream
//! (the whole state, then every change) and answer DNS from the mirror.
//! Reconnects with backoff and jitter; while the upstream is away the
//! replica keeps answering from the last state it had.
//!
//! A Reset or a ServicesChanged may come in parts ([`Assembly`]): parts
//! are validated as they arrive and kept until the last one, which is then
//! applied in one step, so answers never show half a Reset. A stream that
//! breaks between parts drops them; the next stream starts with a Reset.

use std::collections::HashMap;
use std::time::Duration;

use meshdns_proto::client::ClientAuth;
use meshdns_proto::convert::{Interner, service_export};
use meshdns_proto::model::{Cluster, ClusterName, ServiceExport, ServiceKey};
use meshdns_proto::wire::{self, watch_event::Event};
use meshdns_syncer::publish::Backoff;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::FollowerMetrics;
use crate::registry::{MirroredCluster, Writer};

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
    // Zone and node names shared across the cluster's services.
    let mut names = Interner::default();
    list.iter()
        .filter_map(|s| {
            service_export(s, &mut names)
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

/// The parts of a Reset or a ServicesChanged received so far.
#[derive(Debug, Default)]
pub struct Assembly {
    reset: Option<ResetParts>,
    services: Option<ServicesParts>,
}

/// A Reset's clusters so far, in order; a cluster named again continues.
#[derive(Debug, Default)]
struct ResetParts {
    clusters: Vec<(MirroredCluster, Vec<ServiceExport>)>,
    index: HashMap<ClusterName, usize>,
}

#[derive(Debug)]
struct ServicesParts {
    cluster: String,
    upserts: Vec<ServiceExport>,
    removals: Vec<ServiceKey>,
}

fn keys(list: &[wire::ServiceKey]) -> Vec<ServiceKey> {
    list.iter()
        .filter_map(|k| ServiceKey::try_from(k).ok())
        .collect()
}

impl Assembly {
    /// Applies `event` to `registry`, or keeps it until its last part.
    /// `Err` when the upstream breaks the rules of parts.
    pub async fn apply(&mut self, writer: &Writer, event: Event) -> Result<(), String> {
        let pending = self.reset.is_some() || self.services.is_some();
        match event {
            Event::Reset(reset) => {
                if self.services.is_some() {
                    return Err("a reset came between the parts of a services change".into());
                }
                let parts = self.reset.get_or_insert_with(ResetParts::default);
                for (cluster, services) in clusters_of(&reset) {
                    match parts.index.get(&cluster.cluster.name) {
                        Some(&i) => {
                            parts.clusters[i].0 = cluster;
                            parts.clusters[i].1.extend(services);
                        }
                        None => {
                            let name = cluster.cluster.name.clone();
                            parts.index.insert(name, parts.clusters.len());
                            parts.clusters.push((cluster, services));
                        }
                    }
                }
                if !reset.more
                    && let Some(parts) = self.reset.take()
                {
                    writer.mirror_reset(parts.clusters).await;
                }
            }
            Event::Services(changed) => {
                if self.reset.is_some() {
                    return Err("a services change came between the parts of a reset".into());
                }
                let parts = self.services.get_or_insert_with(|| ServicesParts {
                    cluster: changed.cluster.clone(),
                    upserts: Vec::new(),
                    removals: Vec::new(),
                });
                if parts.cluster != changed.cluster {
                    return Err(format!(
                        "a change of cluster {:?} came between the parts of a change of {:?}",
                        changed.cluster, parts.cluster
                    ));
                }
                parts.upserts.extend(services(&changed.upserts));
                parts.removals.extend(keys(&changed.removals));
                if !changed.more
                    && let Some(parts) = self.services.take()
                    && let Ok(name) = ClusterName::new(&parts.cluster)
                {
                    writer
                        .mirror_services(name, parts.upserts, parts.removals)
                        .await;
                }
            }
            _ if pending => {
                return Err("an event came between the parts of a reset or a change".into());
            }
            Event::Cluster(info) => {
                if let Some(m) = cluster(&info) {
                    writer.mirror_cluster(m).await;
                }
            }
            Event::ClusterRemoved(name) => {
                if let Ok(name) = ClusterName::new(&name) {
                    writer.mirror_remove(name).await;
                }
            }
        }
        Ok(())
    }
}

/// Mirrors `url` into `registry` until `shutdown`, taking messages up to
/// `max_message_bytes` (at least the 4 MiB a registry sends parts under).
/// `link` reports whether the upstream stream is up and when it last
/// sent an event (`meshdns_follow_*`).
pub async fn run(
    url: String,
    auth: ClientAuth,
    writer: Writer,
    max_message_bytes: usize,
    link: Option<FollowerMetrics>,
    shutdown: CancellationToken,
) {
    let max_message_bytes = max_message_bytes.max(MIN_DECODE_BYTES);
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = stream(&url, &auth, &writer, max_message_bytes, &mut backoff, link.as_ref()) => r,
        };
        if let Some(link) = &link {
            link.set_connected(false);
        }
        warn!(upstream = %url, error = %result, "lost the upstream registry; answering from the last state");
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The least a follower accepts in one message: tonic's default, four
/// times the part size registries send.
const MIN_DECODE_BYTES: usize = 4 * 1024 * 1024;

/// One Watch stream's life; returns why it ended. Parts not yet complete
/// when it ends are dropped with it.
async fn stream(
    url: &str,
    auth: &ClientAuth,
    writer: &Writer,
    max_message_bytes: usize,
    backoff: &mut Backoff,
    link: Option<&FollowerMetrics>,
) -> String {
    let client = match auth.connect(url).await {
        Ok(client) => client,
        Err(e) => return e,
    };
    let mut client = client.max_decoding_message_size(max_message_bytes);
    let mut events = match client.watch(wire::WatchRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(status) => return format!("watch: {}", status.message()),
    };
    let mut assembly = Assembly::default();
    loop {
        match events.message().await {
            Ok(Some(wire::WatchEvent { event: Some(event) })) => {
                let last_reset_part = matches!(&event, Event::Reset(r) if !r.more);
                if let Err(e) = assembly.apply(writer, event).await {
                    return format!("upstream broke the protocol: {e}");
                }
                if let Some(link) = link {
                    link.event();
                    if last_reset_part {
                        link.set_connected(true);
                    }
                }
                if last_reset_part {
                    info!(upstream = %url, "mirroring the upstream registry");
                    backoff.reset();
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return "the upstream ended the stream".into(),
            Err(status) => return format!("{:?}: {}", status.code(), status.message()),
        }
    }
}
