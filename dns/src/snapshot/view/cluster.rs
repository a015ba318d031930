//! One cluster's part of a global service: its endpoints' health and
//! its healthy targets grouped by zone, built from its export alone.

use std::net::IpAddr;
use std::sync::Arc;

use meshdns_proto::model::{Endpoint, Mode, Port, ServiceExport};

use super::chunk::PartMeta;
use super::targets::{Target, Targets};
use crate::locality::{ClusterId, Place, ZoneId};
use crate::snapshot::chain::{Segment, Span};
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
    /// This cluster's healthy targets, grouped by zone.
    pub targets: Targets,
    /// Each zone's run of `targets` (`None`: endpoints of no known zone),
    /// in zone order.
    groups: Vec<(Option<ZoneId>, Segment)>,
    health: Health,
    /// Whether any endpoint is ready (live or not).
    has_ready: bool,
    /// `place.id`, inline: the answer path counts answers by serving
    /// cluster without a pointer chase to the place.
    id: ClusterId,
}

impl ClusterView {
    pub(super) fn build(
        place: &Arc<Place>,
        export: &Arc<ServiceExport>,
        health: Health,
        zone_id: &mut dyn FnMut(Option<&str>, &str) -> ZoneId,
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
        // (zone, target, its addresses), grouped by zone: the order within
        // a zone is the export's. Sized exactly: a million endpoints'
        // worth of these live as long as the snapshot.
        let mut healthy: Vec<(Option<ZoneId>, Target, &[IpAddr])> = match export.mode() {
            Mode::Endpoints => endpoints
                .iter()
                .zip(export.endpoints())
                .enumerate()
                .filter(|(_, (view, _))| view.healthy)
                .map(|(e, (view, model))| {
                    let target = Target::Endpoint {
                        cluster: 0,
                        endpoint: e as u32,
                    };
                    (view.zone.or(own_zone), target, &model.addresses[..])
                })
                .collect(),
            Mode::ClusterIp if endpoints.iter().any(|ep| ep.healthy) => {
                vec![(
                    own_zone,
                    Target::ClusterIp { cluster: 0 },
                    export.cluster_ips(),
                )]
            }
            Mode::ClusterIp => Vec::new(),
        };
        healthy.sort_by_key(|(zone, _, _)| *zone);
        let v4 = healthy
            .iter()
            .flat_map(|(_, _, a)| a.iter())
            .filter(|a| a.is_ipv4())
            .count();
        let mut targets = Targets {
            targets: Vec::with_capacity(healthy.len()),
            v4: Vec::with_capacity(v4),
            v6: Vec::with_capacity(healthy.iter().map(|(_, _, a)| a.len()).sum::<usize>() - v4),
        };
        // One flat list, zone after zone, and each zone's run of it.
        let zones = healthy.chunk_by(|a, b| a.0 == b.0);
        let mut groups = Vec::with_capacity(zones.clone().count());
        for run in zones {
            let before = targets.spans();
            for (_, target, addresses) in run {
                targets.push(*target, addresses);
            }
            let after = targets.spans();
            let span = |k: usize| Span {
                start: before[k],
                end: after[k],
            };
            groups.push((
                run[0].0,
                Segment {
                    cluster: 0,
                    targets: span(0),
                    v4: span(1),
                    v6: span(2),
                },
            ));
        }
        ClusterView {
            id: place.id,
            place: place.clone(),
            export: export.clone(),
            has_ready: has_ready(export),
            endpoints,
            targets,
            groups,
            health,
        }
    }

    pub fn id(&self) -> ClusterId {
        self.id
    }

    /// What a view keeps of this part as cluster `index`; its zone runs
    /// are appended to `groups`.
    pub(super) fn meta(&self, index: u32, groups: &mut Vec<(Option<ZoneId>, Segment)>) -> PartMeta {
        let start = groups.len() as u32;
        groups.extend(self.groups.iter().map(|(z, g)| {
            (
                *z,
                Segment {
                    cluster: index,
                    ..*g
                },
            )
        }));
        PartMeta {
            id: self.place.id,
            stale: self.place.stale,
            has_ready: self.has_ready,
            health: self.health,
            region: self.place.region.as_ref().map(|r| r.0),
            affinity: self.export.policy().affinity,
            ttl: self.export.policy().ttl,
            whole: self.whole(index),
            groups: Span {
                start,
                end: groups.len() as u32,
            },
        }
    }

    /// All of this part's targets, as cluster `index`'s.
    pub fn whole(&self, index: u32) -> Segment {
        let [t, v4, v6] = self.targets.spans();
        Segment {
            cluster: index,
            targets: Span { start: 0, end: t },
            v4: Span { start: 0, end: v4 },
            v6: Span { start: 0, end: v6 },
        }
    }

    /// The targets outside the cluster's own zone, as cluster `index`'s:
    /// with the asker's zone, they make up the zone tier. At most two runs
    /// (before and after the own zone's).
    pub fn off_zone(&self, index: u32) -> ([Segment; 2], usize) {
        let own = self
            .groups
            .iter()
            .find(|(z, _)| z.is_some() && *z == self.place.zone.as_ref().map(|z| z.0))
            .map(|(_, g)| *g);
        let whole = self.whole(index);
        let Some(own) = own else {
            return (
                [whole, Segment::default()],
                usize::from(!whole.targets.is_empty()),
            );
        };
        let before = Segment {
            cluster: index,
            targets: Span {
                start: 0,
                end: own.targets.start,
            },
            v4: Span {
                start: 0,
                end: own.v4.start,
            },
            v6: Span {
                start: 0,
                end: own.v6.start,
            },
        };
        let after = Segment {
            cluster: index,
            targets: Span {
                start: own.targets.end,
                end: whole.targets.end,
            },
            v4: Span {
                start: own.v4.end,
                end: whole.v4.end,
            },
            v6: Span {
                start: own.v6.end,
                end: whole.v6.end,
            },
        };
        let mut out = [Segment::default(); 2];
        let mut n = 0;
        for s in [before, after] {
            if !s.targets.is_empty() {
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

    /// The exported endpoint at `index` (a [`Target::Endpoint`]'s).
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
