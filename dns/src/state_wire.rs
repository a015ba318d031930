//! The registry's state on the wire, both ways, in one place: a
//! cluster's status as a `ClusterInfo`, the whole state as a `Reset`
//! (Watch, `ListClusters`, the state file), and back into what a follower
//! or a restore mirrors. Service exports and keys convert through
//! `meshdns_proto::convert`; what does not validate is skipped and logged.

use meshdns_proto::model::{Cluster, ServiceExport, ServiceKey};
use meshdns_proto::wire;
use tracing::warn;

use crate::registry::{ClusterStatus, FullState, MirroredCluster};

/// A cluster's status as Watch, `ListClusters` and the state file carry it.
pub fn cluster_info(status: &ClusterStatus) -> wire::ClusterInfo {
    let hello = wire::Hello::from(&status.cluster);
    wire::ClusterInfo {
        name: hello.cluster,
        region: hello.region,
        zone: hello.zone,
        client_cidrs: hello.client_cidrs,
        version: hello.version,
        last_heartbeat_unix_ms: status.last_heartbeat_unix_ms,
        state: if status.stale {
            wire::ClusterState::Stale.into()
        } else {
            wire::ClusterState::Live.into()
        },
        connected: status.connected,
        services: status.services as u32,
        endpoints: status.endpoints as u64,
        refused_client_cidrs: status.refused_cidrs.clone(),
        provider: hello.provider,
        nodes: hello.nodes,
    }
}

/// The whole registry state in wire form: Watch's Reset, and the state file.
pub fn full_state(state: &FullState) -> wire::Reset {
    wire::Reset {
        clusters: state
            .clusters
            .iter()
            .map(|(status, services)| wire::ClusterExports {
                cluster: Some(cluster_info(status)),
                services: services.iter().map(|s| s.as_ref().into()).collect(),
            })
            .collect(),
        more: false,
    }
}

/// A cluster from the wire, as a follower (or a restore) mirrors it; `None`
/// (logged) when it does not validate.
pub fn mirrored_cluster(info: &wire::ClusterInfo) -> Option<MirroredCluster> {
    let hello = wire::Hello {
        cluster: info.name.clone(),
        region: info.region.clone(),
        zone: info.zone.clone(),
        client_cidrs: info.client_cidrs.clone(),
        version: info.version.clone(),
        provider: info.provider.clone(),
        nodes: info.nodes.clone(),
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

pub fn services(list: &[wire::ServiceExport]) -> Vec<ServiceExport> {
    // Zone and node names shared across the cluster's services.
    let mut names = meshdns_proto::convert::Interner::default();
    list.iter()
        .filter_map(|s| {
            meshdns_proto::convert::service_export(s, &mut names)
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
        .filter_map(|c| {
            Some((
                mirrored_cluster(c.cluster.as_ref()?)?,
                services(&c.services),
            ))
        })
        .collect()
}

/// Service keys from the wire; invalid ones are skipped.
pub fn keys(list: &[wire::ServiceKey]) -> Vec<ServiceKey> {
    list.iter()
        .filter_map(|k| ServiceKey::try_from(k).ok())
        .collect()
}
