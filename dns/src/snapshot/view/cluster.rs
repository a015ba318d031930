//! One cluster's part of a global service: its endpoints' health and
//! its healthy targets grouped by zone, built from its export alone.

#![warn(clippy::cast_possible_truncation)]

use std::net::IpAddr;
use std::sync::Arc;

use meshdns_proto::model::{Endpoint, Mode, Port, ServiceExport};

use super::chunk::{PartMeta, Uniformity};
use super::targets::{PartTarget, Targets, position};
use super::weights::Weights;
use crate::locality::{ClusterId, Place, ZoneId};
use crate::snapshot::chain::{Kind, Segment, Span, slot};
use meshdns_proto::model::ClusterName;

/// What a cluster's part was built under: health depends on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Health {
    /// The cluster's endpoints are served (it is live, or the service fails open).
    pub(super) serving: bool,
    /// Some serving endpoint of the service is ready: serving-but-unready
    /// (terminating) endpoints stay out.
    pub(super) any_ready: bool,
}

/// Whether any endpoint of `export` is ready.
pub(super) fn has_ready(export: &ServiceExport) -> bool {
    export.endpoints().iter().any(|e| e.ready)
}

/// How one part is weighed and grouped: from the fleet policy and the
/// service's affinity, worked out by the view.
pub(crate) struct PartPolicy<'a> {
    /// An endpoint's effective weight (its own, scaled by the policy's
    /// weights and drains; 0: last resort only).
    pub(crate) weigh: &'a dyn Fn(&Endpoint) -> u64,
    /// An endpoint's node, as an index into its cluster's announced
    /// nodes: only for a service with the node tier (affinity `node`).
    pub(crate) node_of: Option<NodeOf<'a>>,
}

/// An endpoint's node index in its cluster's announced nodes.
pub(crate) type NodeOf<'a> = &'a dyn Fn(&Endpoint) -> Option<u32>;

/// One cluster's part of a global service. Its targets name the cluster
/// as index 0; the service-wide lists carry the real index.
#[derive(Debug)]
pub struct ClusterView {
    /// The cluster's place when this part was built (stale: left out of
    /// answers unless the service fails open).
    pub place: Arc<Place>,
    /// The export this part was built from; endpoint data is read from it.
    pub export: Arc<ServiceExport>,
    /// Health of each endpoint of `export`, in its order.
    pub endpoints: Vec<EndpointView>,
    /// This cluster's healthy targets: those of positive weight grouped by
    /// zone (and node), then those of weight 0 (the last resort).
    pub targets: Targets,
    /// The targets' effective weights.
    pub weights: Weights,
    /// Each zone's run of the positive-weight targets (`None`: endpoints
    /// of no known zone), in zone order; a zone whose endpoints are all
    /// unhealthy has an empty run that still counts them as exported.
    groups: Vec<(Option<ZoneId>, Segment)>,
    /// Each node's run, by node index (services with the node tier only).
    nodes: Vec<(u32, Segment)>,
    /// Every positive-weight target, as cluster 0's: the lists' first
    /// items; the weight-0 targets (the reserve) are the rest of them,
    /// so they need no segment of their own ([`reserve`](Self::reserve)).
    all: Segment,
    health: Health,
    /// Whether any endpoint is ready (live or not).
    has_ready: bool,
    /// `place.id`, inline: the answer path counts answers by serving
    /// cluster without a pointer chase to the place.
    id: ClusterId,
}

/// One healthy target or counted endpoint while a part is built.
struct Item<'e> {
    /// Weight 0: answered only as a last resort.
    zero: bool,
    zone: Option<ZoneId>,
    node: Option<u32>,
    /// `None`: an unhealthy endpoint, counted as exported only.
    target: Option<(PartTarget, &'e [IpAddr])>,
    weight: u64,
    /// Endpoints it stands for (one, or a ClusterIp's of positive weight),
    /// and how many of those are healthy: what `min-healthy` counts.
    exported: u32,
    healthy: u32,
}

impl ClusterView {
    pub(super) fn build(
        place: &Arc<Place>,
        export: &Arc<ServiceExport>,
        health: Health,
        zone_id: &mut dyn FnMut(Option<&str>, &str) -> ZoneId,
        policy: &PartPolicy<'_>,
    ) -> Self {
        let region_name = place.region.as_ref().map(|r| r.1.as_str());
        let endpoints: Vec<EndpointView> = export
            .endpoints()
            .iter()
            .map(|ep| EndpointView {
                healthy: health.serving && (ep.ready || (!health.any_ready && ep.serving)),
                zone: ep.zone.as_ref().map(|z| zone_id(region_name, z.as_str())),
            })
            .collect();
        let own_zone = place.zone.as_ref().map(|z| z.0);
        let mut items: Vec<Item<'_>> = Vec::new();
        if health.serving {
            match export.mode() {
                Mode::Endpoints => {
                    items.reserve_exact(endpoints.len());
                    for (e, (view, model)) in endpoints.iter().zip(export.endpoints()).enumerate() {
                        let weight = (policy.weigh)(model);
                        if weight == 0 && !view.healthy {
                            continue;
                        }
                        items.push(Item {
                            zero: weight == 0,
                            exported: 1,
                            healthy: u32::from(view.healthy),
                            zone: view.zone.or(own_zone),
                            node: policy.node_of.and_then(|f| f(model)),
                            target: view
                                .healthy
                                .then(|| (PartTarget::endpoint(position(e)), &model.addresses[..])),
                            weight,
                        });
                    }
                }
                Mode::ClusterIp => {
                    // One target standing for the healthy endpoints behind
                    // it: it weighs what they weigh together, and counts
                    // for min-healthy as its endpoints of positive weight
                    // (exported), healthy or not.
                    let weight: u64 = endpoints
                        .iter()
                        .zip(export.endpoints())
                        .filter(|(v, _)| v.healthy)
                        .map(|(_, m)| (policy.weigh)(m))
                        .fold(0, u64::saturating_add);
                    let healthy = endpoints.iter().any(|v| v.healthy);
                    let positive = |m: &Endpoint| (policy.weigh)(m) > 0;
                    let counted = export.endpoints().iter().filter(|m| positive(m)).count();
                    let counted_healthy = endpoints
                        .iter()
                        .zip(export.endpoints())
                        .filter(|(v, m)| v.healthy && positive(m))
                        .count();
                    if healthy || counted > 0 {
                        items.push(Item {
                            zero: weight == 0,
                            exported: u32::try_from(counted).unwrap_or(u32::MAX),
                            healthy: u32::try_from(counted_healthy).unwrap_or(u32::MAX),
                            zone: own_zone,
                            node: None,
                            target: healthy
                                .then(|| (PartTarget::cluster_ip(), export.cluster_ips())),
                            weight,
                        });
                    }
                }
            }
        }
        // Positive weights first, grouped by zone then node; the export's
        // order within a group. Sized exactly: a million endpoints' worth
        // of these live as long as the snapshot.
        items.sort_by_key(|i| (i.zero, i.zone, i.node));
        let healthy = items.iter().filter_map(|i| i.target);
        let v4 = healthy
            .clone()
            .flat_map(|(_, a)| a.iter())
            .filter(|a| a.is_ipv4())
            .count();
        let addresses: usize = healthy.clone().map(|(_, a)| a.len()).sum();
        let mut targets = Targets {
            targets: Vec::with_capacity(healthy.count()),
            v4: Vec::with_capacity(v4),
            v6: Vec::with_capacity(addresses - v4),
        };
        let mut weights: [Vec<u64>; 3] = [
            Vec::with_capacity(targets.targets.capacity()),
            Vec::with_capacity(v4),
            Vec::with_capacity(addresses - v4),
        ];
        // One flat list, zone after zone (node after node within one),
        // and each zone's and node's run of it; the runs sized exactly
        // too (pushed one by one they kept a quarter more than they held:
        // 8 bytes per endpoint at a million, benches/README.md).
        let positive = &items[..items.partition_point(|i| !i.zero)];
        let mut groups = Vec::with_capacity(positive.chunk_by(|a, b| a.zone == b.zone).count());
        let mut nodes = Vec::with_capacity(
            positive
                .chunk_by(|a, b| (a.zone, a.node) == (b.zone, b.node))
                .filter(|run| run[0].node.is_some())
                .count(),
        );
        let mut reserve_from = None;
        let mut pos = 0;
        while pos < items.len() {
            let first = &items[pos];
            let (zero, zone, node) = (first.zero, first.zone, first.node);
            let before = targets.spans();
            let (mut exported, mut healthy) = (0u32, 0u32);
            while pos < items.len()
                && (items[pos].zero, items[pos].zone, items[pos].node) == (zero, zone, node)
            {
                let item = &items[pos];
                if !item.zero {
                    exported += item.exported;
                    healthy += item.healthy;
                }
                if let Some((target, addresses)) = item.target {
                    targets.push(target, addresses);
                    weights[0].push(item.weight);
                    for a in addresses {
                        weights[if a.is_ipv4() { 1 } else { 2 }].push(item.weight);
                    }
                }
                pos += 1;
            }
            if zero {
                reserve_from.get_or_insert(before);
                continue;
            }
            let after = targets.spans();
            let run = Segment {
                cluster: 0,
                targets: Span::new(before[0], after[0]),
                v4: Span::new(before[1], after[1]),
                v6: Span::new(before[2], after[2]),
                weight: [0; 3],
                exported,
                heaviest: 0,
                healthy,
            };
            if let Some(node) = node {
                nodes.push((node, run));
            }
            match groups.last_mut() {
                Some((z, g)) if *z == zone => merge(g, &run),
                _ => groups.push((zone, run)),
            }
        }
        let weights = Weights::new(weights);
        let end = targets.spans();
        let positive = reserve_from.unwrap_or(end);
        let weigh = |mut s: Segment| {
            for kind in [Kind::Targets, Kind::V4, Kind::V6] {
                s.weight[slot(kind)] = weights.sum(kind, s.span(kind));
            }
            s.heaviest = weights.heaviest(Kind::Targets, s.targets);
            s
        };
        for (_, g) in &mut groups {
            *g = weigh(*g);
        }
        for (_, g) in &mut nodes {
            *g = weigh(*g);
        }
        nodes.sort_by_key(|(n, _)| *n);
        let all = weigh(Segment {
            cluster: 0,
            targets: Span::new(0, positive[0]),
            v4: Span::new(0, positive[1]),
            v6: Span::new(0, positive[2]),
            weight: [0; 3],
            exported: groups.iter().map(|(_, g)| g.exported).sum(),
            heaviest: 0,
            healthy: groups.iter().map(|(_, g)| g.healthy).sum(),
        });
        ClusterView {
            id: place.id,
            place: place.clone(),
            export: export.clone(),
            has_ready: has_ready(export),
            endpoints,
            targets,
            weights,
            groups,
            nodes,
            all,
            health,
        }
    }

    pub fn id(&self) -> ClusterId {
        self.id
    }

    /// What a view keeps of this part beside it (the same at any index).
    pub(super) fn meta(&self) -> PartMeta {
        PartMeta {
            id: self.place.id,
            stale: self.place.stale,
            has_ready: self.has_ready,
            health: self.health,
            region: self.place.region.as_ref().map(|r| r.0),
            provider: self.place.provider.as_ref().map(|p| p.0),
            uniform: if self.all.targets.is_empty() {
                Uniformity::Empty
            } else {
                self.weights
                    .uniform()
                    .map_or(Uniformity::Varied, Uniformity::All)
            },
            affinity: self.export.policy().affinity,
            ttl: self.export.policy().ttl,
            traffic: {
                let p = self.export.policy();
                !p.failover.is_empty()
                    || p.primary.is_some()
                    || p.min_healthy.is_some()
                    || !p.export_to.is_empty()
            },
        }
    }

    /// Its zone runs of a known zone, zones ascending, as cluster
    /// `index`'s: what its chunk's zone runs are made of.
    pub(super) fn zones(&self, index: u32) -> impl Iterator<Item = (ZoneId, Segment)> + '_ {
        self.groups.iter().filter_map(move |(z, g)| {
            z.map(|z| {
                (
                    z,
                    Segment {
                        cluster: index,
                        ..*g
                    },
                )
            })
        })
    }

    /// All of this part's positive-weight targets, as cluster `index`'s.
    pub fn whole(&self, index: u32) -> Segment {
        Segment {
            cluster: index,
            ..self.all
        }
    }

    /// This part's weight-0 targets (the last resort), as cluster
    /// `index`'s: every item of each list after the positive-weight ones
    /// (`all`'s). They weigh nothing and count no exported endpoint.
    pub fn reserve(&self, index: u32) -> Segment {
        let end = self.targets.spans();
        let rest = |kind: Kind| Span::new(self.all.span(kind).end, end[slot(kind)]);
        Segment {
            cluster: index,
            targets: rest(Kind::Targets),
            v4: rest(Kind::V4),
            v6: rest(Kind::V6),
            ..Segment::default()
        }
    }

    /// The targets on node `node` (an index into the cluster's announced
    /// nodes), as cluster `index`'s: at most two runs (a node whose
    /// endpoints name two zones).
    pub fn on_node(&self, node: u32, index: u32) -> ([Segment; 2], usize) {
        let from = self.nodes.partition_point(|(n, _)| *n < node);
        let mut out = [Segment::default(); 2];
        let mut n = 0;
        for (_, s) in self.nodes[from..].iter().take_while(|(n, _)| *n == node) {
            if n == 2 {
                break;
            }
            out[n] = Segment {
                cluster: index,
                ..*s
            };
            n += 1;
        }
        (out, n)
    }

    /// The targets outside the cluster's own zone, as cluster `index`'s:
    /// with the asker's zone, they make up the zone tier. At most two runs
    /// (before and after the own zone's).
    pub fn off_zone(&self, index: u32) -> ([Segment; 2], usize) {
        let own_zone = self.place.zone.as_ref().map(|z| z.0);
        let own = self
            .groups
            .iter()
            .position(|(z, _)| z.is_some() && *z == own_zone);
        let whole = self.whole(index);
        let Some(own) = own else {
            return ([whole, Segment::default()], usize::from(!whole.is_empty()));
        };
        let join = |groups: &[(Option<ZoneId>, Segment)]| {
            let mut run = Segment {
                cluster: index,
                ..Segment::default()
            };
            let mut first = true;
            for (_, g) in groups {
                if first {
                    run = Segment {
                        cluster: index,
                        ..*g
                    };
                    first = false;
                } else {
                    merge(&mut run, g);
                }
            }
            run
        };
        let mut out = [Segment::default(); 2];
        let mut n = 0;
        for s in [join(&self.groups[..own]), join(&self.groups[own + 1..])] {
            if !s.is_empty() {
                out[n] = s;
                n += 1;
            }
        }
        (out, n)
    }

    pub fn name(&self) -> &ClusterName {
        &self.place.name
    }

    /// Left out of answers (unless the service fails open).
    pub fn stale(&self) -> bool {
        self.place.stale
    }

    pub fn mode(&self) -> Mode {
        self.export.mode()
    }

    pub fn ports(&self) -> &[Port] {
        self.export.ports()
    }

    pub fn cluster_ips(&self) -> &[IpAddr] {
        self.export.cluster_ips()
    }

    /// The exported endpoint at `index` (a [`PartTarget`]'s).
    pub fn endpoint_model(&self, index: u32) -> &Endpoint {
        &self.export.endpoints()[index as usize]
    }

    /// The endpoint a hostname label names: its hostname, or for an endpoint
    /// without one, its first address written with dashes (`10-1-0-11`),
    /// with whether it is healthy.
    pub fn endpoint(&self, label: &str) -> Option<(&Endpoint, bool)> {
        let address = crate::snapshot::undashed(label);
        self.export
            .endpoints()
            .iter()
            .zip(&self.endpoints)
            .find(|(e, _)| match &e.hostname {
                Some(h) => h.as_str() == label,
                None => address == Some(e.addresses[0]),
            })
            .map(|(e, v)| (e, v.healthy))
    }
}

/// An endpoint's health and place, beside its exported data.
#[derive(Debug, Clone, Copy)]
pub struct EndpointView {
    pub healthy: bool,
    /// The endpoint's own (region, zone), when its slice names one.
    pub zone: Option<ZoneId>,
}

/// `run` extended by `next`, the run right after it in the same lists.
fn merge(run: &mut Segment, next: &Segment) {
    run.targets.end = next.targets.end;
    run.v4.end = next.v4.end;
    run.v6.end = next.v6.end;
    for k in 0..3 {
        run.weight[k] += next.weight[k];
    }
    run.exported += next.exported;
    run.heaviest = run.heaviest.max(next.heaviest);
    run.healthy += next.healthy;
}
