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
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::backoff::Backoff;
use meshdns_proto::client::ClientAuth;
use meshdns_proto::model::{ClusterName, FleetPolicy, ServiceExport, ServiceKey};
use meshdns_proto::wire::{self, watch_event::Event};
use tokio_util::sync::CancellationToken;
use tonic::metadata::MetadataMap;
use tracing::{error, info, warn};

use crate::error::{PartsOrder, Upstream};
use crate::metrics::{FollowerMetrics, FollowerView};
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
    /// The upstream's traffic policy, from the first part: the empty one
    /// from an upstream before policies; `None` when it did not validate
    /// (the policy in force stays).
    policy: Option<FleetPolicy>,
}

/// A policy from the wire; one that does not validate is logged and
/// leaves the policy in force (`None`).
fn policy_of(policy: &wire::FleetPolicy) -> Option<FleetPolicy> {
    FleetPolicy::try_from(policy)
        .map_err(|e| warn!(error = %e, "upstream sent an invalid traffic policy; keeping the one in force"))
        .ok()
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
                let first = self.reset.is_none();
                let parts = self.reset.get_or_insert_with(ResetParts::default);
                if first {
                    parts.policy = match &reset.policy {
                        None => Some(FleetPolicy::default()),
                        Some(policy) => policy_of(policy),
                    };
                }
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
                    writer
                        .mirror_reset_with_policy(parts.clusters, parts.policy.map(Arc::new))
                        .await;
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
            Event::Policy(policy) => {
                if let Some(policy) = policy_of(&policy) {
                    writer.set_policy(Arc::new(policy)).await;
                }
            }
        }
        Ok(())
    }
}

/// Mirrors `url` into `registry` until `shutdown`, taking messages up to
/// `max_message_bytes` (at least the 4 MiB a registry sends parts under).
/// `link` reports whether the upstream stream is up, when it last sent an
/// event, reconnects, and staleness: cut off for longer than
/// `stale_after`, answers are counted as stale (`meshdns_follow_*`).
///
/// Answers never wait for this loop: the registry serves its last state
/// (the state file's, at start) from the first query, whether or not the
/// upstream can be reached.
pub async fn run(
    url: String,
    auth: ClientAuth,
    writer: Writer,
    max_message_bytes: usize,
    link: Option<FollowerMetrics>,
    stale_after: Duration,
    shutdown: CancellationToken,
) {
    if let Some(link) = link.clone() {
        tokio::spawn(watch_staleness(link, stale_after, shutdown.clone()));
    }
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
        if let Some(link) = &link {
            link.reconnect();
        }
    }
}

/// Sets the follower's stale flag from how long its stream has been lost,
/// often enough to turn it within a tenth of `stale_after` (and at least
/// every second), so the answer path reads one atomic.
async fn watch_staleness(
    link: FollowerMetrics,
    stale_after: Duration,
    shutdown: CancellationToken,
) {
    let period = (stale_after / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut was_stale = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let stale = link.check_stale(stale_after);
        if stale && !was_stale {
            warn!(stale_after = ?stale_after, "cut off from the upstream past --follow-stale-after: answers are stale");
        }
        was_stale = stale;
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

/// Response metadata of `ListClusters` on a follower: its upstream link,
/// for `meshdns status` run against it.
const UPSTREAM: &str = "meshdns-follow-upstream";
const CONNECTED: &str = "meshdns-follow-connected";
const LAST_EVENT: &str = "meshdns-follow-last-event-unix-ms";
const DISCONNECTED: &str = "meshdns-follow-disconnected-ms";
const STALE: &str = "meshdns-follow-stale";

/// Puts a follower's link into `metadata`.
pub fn report(view: &FollowerView, metadata: &mut MetadataMap) {
    let mut put = |key: &'static str, value: String| {
        if let Ok(value) = value.parse() {
            metadata.insert(key, value);
        }
    };
    put(UPSTREAM, view.upstream.clone());
    put(CONNECTED, view.connected.to_string());
    put(LAST_EVENT, view.last_event_unix_ms.to_string());
    put(DISCONNECTED, view.disconnected.as_millis().to_string());
    put(STALE, view.stale.to_string());
}

/// A follower's link as [`report`] put it; `None` from a registry that
/// follows nobody (or says nothing readable).
pub fn reported(metadata: &MetadataMap) -> Option<FollowerView> {
    let get = |key: &str| metadata.get(key).and_then(|v| v.to_str().ok());
    Some(FollowerView {
        upstream: get(UPSTREAM)?.to_owned(),
        connected: get(CONNECTED)?.parse().ok()?,
        last_event_unix_ms: get(LAST_EVENT)?.parse().ok()?,
        disconnected: Duration::from_millis(get(DISCONNECTED)?.parse().ok()?),
        stale: get(STALE)?.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_round_trips_through_metadata() {
        let view = FollowerView {
            upstream: "https://hub.example:7443".into(),
            connected: false,
            last_event_unix_ms: 1_700_000_000_000,
            disconnected: Duration::from_millis(42_500),
            stale: true,
        };
        let mut metadata = MetadataMap::new();
        assert_eq!(reported(&metadata), None, "not a follower");
        report(&view, &mut metadata);
        assert_eq!(reported(&metadata), Some(view));
    }

    /// A Reset and its policy are published in one snapshot: answers
    /// never show the upstream's new state under the old policy. A Reset
    /// restating the policy in force leaves it as it is.
    #[tokio::test]
    async fn a_reset_and_its_policy_publish_together() {
        use meshdns_proto::model::{ClusterPolicy, FleetPolicy};

        let registry = Arc::new(crate::registry::Registry::new(
            5,
            false,
            Arc::new(crate::metrics::Metrics::new()),
        ));
        let writer = Writer::spawn(registry.clone()).unwrap();
        let mut policy = FleetPolicy::default();
        policy.clusters.insert(
            ClusterName::new("east-1").unwrap(),
            ClusterPolicy {
                drain_percent: 100,
                ..ClusterPolicy::default()
            },
        );
        let reset = || {
            Event::Reset(wire::Reset {
                clusters: vec![],
                more: false,
                policy: Some(wire::FleetPolicy::from(&policy)),
            })
        };
        let before = registry.snapshot().serial;
        let mut assembly = Assembly::default();
        assembly.apply(&writer, reset()).await.unwrap();
        assert_eq!(*registry.policy(), policy);
        assert_eq!(registry.snapshot().serial, before.wrapping_add(1));
        let installed = registry.policy();
        assembly.apply(&writer, reset()).await.unwrap();
        assert!(Arc::ptr_eq(&installed, &registry.policy()));
    }
}
