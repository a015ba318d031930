//! The writer's state: every cluster, the CIDR claims, the interned names.

use std::collections::BTreeMap;
use std::sync::Arc;

use meshdns_proto::model::{Cluster, ClusterName, FleetPolicy};
use tracing::warn;

use super::{Claims, ClusterEntry, Names};
use crate::locality::{ClusterId, Locality, NodePlace, Place};

pub(super) struct State {
    pub(super) clusters: BTreeMap<ClusterName, ClusterEntry>,
    /// Every cluster's accepted client CIDRs.
    pub(super) claims: Claims,
    pub(super) names: Names,
    pub(super) next_session: u64,
    pub(super) next_cluster_id: ClusterId,
    pub(super) serial: u32,
    /// The fleet policy every view is built under (`--policy`).
    pub(super) policy: Arc<FleetPolicy>,
    /// The endpoints of the published cluster list, summed (the change
    /// feed's bound), kept with the list rather than summed per publish.
    pub(super) listed_endpoints: usize,
}

impl State {
    pub(super) fn place(
        names: &mut Names,
        policy: &FleetPolicy,
        id: ClusterId,
        cluster: &Cluster,
        stale: bool,
    ) -> Arc<Place> {
        let region = cluster.region.as_ref().map(|r| r.as_str());
        let provider = policy.provider(&cluster.name, cluster.provider.as_ref());
        let mut nodes: Vec<NodePlace> = cluster
            .nodes
            .iter()
            .map(|n| NodePlace {
                name: n.name.to_string(),
                addresses: n.addresses.clone(),
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Arc::new(Place {
            id,
            name: cluster.name.clone(),
            region: region.map(|r| (names.region(r), r.to_owned())),
            zone: cluster
                .zone
                .as_ref()
                .map(|z| (names.zone(region, z.as_str()), z.to_string())),
            provider: provider.map(|p| (names.provider(p.as_str()), p.to_string())),
            nodes: nodes.into(),
            stale,
        })
    }

    pub(super) fn locality(&mut self) -> Locality {
        let places: Vec<(Place, &[ipnet::IpNet])> = self
            .clusters
            .values()
            .map(|e| (Place::clone(&e.place), e.cluster.client_cidrs.as_slice()))
            .collect();
        let locality = Locality::build(places);
        for (cidr, kept, ignored) in &locality.conflicts {
            warn!(%cidr, %kept, %ignored, "two clusters announce the same client CIDR; the first by name keeps it");
        }
        locality
    }
}
