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

use meshdns_proto::backoff::Backoff;
use meshdns_proto::client::ClientAuth;
use meshdns_proto::model::{ClusterName, ServiceExport, ServiceKey};
use meshdns_proto::wire::{self, watch_event::Event};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::{PartsOrder, Upstream};
use crate::metrics::FollowerMetrics;
use crate::registry::{MirroredCluster, Writer};
pub use crate::state_wire::clusters_of;
use crate::state_wire::{keys, mirrored_cluster as cluster, services};

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

impl Assembly {
    /// Applies `event` to `registry`, or keeps it until its last part.
    /// `Err` when the upstream breaks the rules of parts.
    pub async fn apply(&mut self, writer: &Writer, event: Event) -> Result<(), PartsOrder> {
        let pending = self.reset.is_some() || self.services.is_some();
        match event {
            Event::Reset(reset) => {
                if self.services.is_some() {
                    return Err(PartsOrder::ResetInChange);
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
                    return Err(PartsOrder::ChangeInReset);
                }
                let parts = self.services.get_or_insert_with(|| ServicesParts {
                    cluster: changed.cluster.clone(),
                    upserts: Vec::new(),
                    removals: Vec::new(),
                });
                if parts.cluster != changed.cluster {
                    return Err(PartsOrder::OtherCluster {
                        got: changed.cluster,
                        pending: parts.cluster.clone(),
                    });
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
                return Err(PartsOrder::EventInParts);
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
        let delay = if result.is_retryable() {
            warn!(upstream = %url, error = %result, "lost the upstream registry; answering from the last state");
            backoff.next_delay()
        } else {
            // A bad credential is not an upstream that is down: say so,
            // and try again only at the longest delay.
            error!(upstream = %url, error = %result, retry_in = ?backoff.max, "cannot follow the upstream registry until this is fixed; answering from the last state");
            backoff.max
        };
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
) -> Upstream {
    let client = match auth.connect(url).await {
        Ok(client) => client,
        Err(e) => return e.into(),
    };
    let mut client = client.max_decoding_message_size(max_message_bytes);
    let mut events = match client.watch(wire::WatchRequest {}).await {
        Ok(r) => r.into_inner(),
        Err(status) => return Upstream::Refused(status),
    };
    let mut assembly = Assembly::default();
    loop {
        match events.message().await {
            Ok(Some(wire::WatchEvent { event: Some(event) })) => {
                let last_reset_part = matches!(&event, Event::Reset(r) if !r.more);
                if let Err(e) = assembly.apply(writer, event).await {
                    return e.into();
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
            Ok(None) => return Upstream::Ended,
            Err(status) => return Upstream::Broken(status),
        }
    }
}
