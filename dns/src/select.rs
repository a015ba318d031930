//! Which healthy targets answer a given asker: locality tiers, affinity and
//! `min_healthy`. Pure, and a lookup plus a few comparisons per query:
//! the grouping by cluster, zone and region is done when the snapshot is
//! built ([`ServiceView::build`]).
//!
//! Tiers, nearest first, each containing the ones before it:
//! same cluster; same zone (endpoints in the asker's zone, plus the asker's
//! own cluster's endpoints elsewhere); same region; anywhere. The answer
//! comes from the first tier with at least `min_healthy` healthy targets.
//! Affinity `cluster`, `zone` or `region` stops at that tier whenever it is
//! not empty; `none` answers from every tier at once.

use std::cell::Cell;
use std::net::{Ipv4Addr, Ipv6Addr};

use meshdns_proto::model::Affinity;
use serde::Serialize;

use crate::locality::AskerPlace;
use crate::snapshot::{
    Chain, ClusterView, Cursor, Kind, Segment, ServiceView, Target, Walk, chain,
};

/// The locality tiers, nearest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Cluster,
    Zone,
    Region,
    Any,
}

impl Tier {
    const ALL: [Tier; 4] = [Tier::Cluster, Tier::Zone, Tier::Region, Tier::Any];
}

/// The chosen targets: a chain of clusters' runs, plus up to two runs of
/// the asker's own cluster (the zone tier is the zone's chain plus the
/// asker's cluster's targets outside that zone).
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    pub tier: Tier,
    view: &'a ServiceView,
    targets: Cursor<'a>,
}

impl<'a> Pick<'a> {
    /// A pick of one service-wide chain.
    pub fn one(tier: Tier, view: &'a ServiceView, chain: &'a Chain) -> Self {
        Pick {
            tier,
            view,
            targets: Cursor::of(chain),
        }
    }

    /// A pick of cluster `index`'s own targets.
    pub fn cluster(view: &'a ServiceView, index: usize) -> Self {
        let whole = view.clusters[index].whole(index as u32);
        Pick {
            tier: Tier::Cluster,
            view,
            targets: Cursor::with_extra(&chain::EMPTY, [whole, Segment::default()], 1),
        }
    }

    /// Healthy targets in the pick.
    pub fn len(&self) -> usize {
        self.targets.total(Kind::Targets)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn walk<T: Copy>(
        &self,
        kind: Kind,
        data: fn(&ClusterView) -> &[T],
        start: usize,
        max: usize,
    ) -> Walk<'a, T> {
        self.targets
            .walk(&self.view.clusters, kind, data, start, max)
    }

    /// Up to `max` IPv4 addresses, rotated by `start`.
    pub fn v4(&self, start: usize, max: usize) -> impl Iterator<Item = Ipv4Addr> + 'a {
        self.walk(Kind::V4, |c| &c.targets.v4, start, max)
            .map(|(_, a)| a)
    }

    /// Up to `max` IPv6 addresses, rotated by `start`.
    pub fn v6(&self, start: usize, max: usize) -> impl Iterator<Item = Ipv6Addr> + 'a {
        self.walk(Kind::V6, |c| &c.targets.v6, start, max)
            .map(|(_, a)| a)
    }

    /// [`v4`](Self::v4), each address with its cluster's index in the
    /// view (for the answers-by-cluster counters).
    pub fn v4_by_cluster(
        &self,
        start: usize,
        max: usize,
    ) -> impl Iterator<Item = (u32, Ipv4Addr)> + 'a {
        self.walk(Kind::V4, |c| &c.targets.v4, start, max)
    }

    /// [`v6`](Self::v6), each address with its cluster's index in the view.
    pub fn v6_by_cluster(
        &self,
        start: usize,
        max: usize,
    ) -> impl Iterator<Item = (u32, Ipv6Addr)> + 'a {
        self.walk(Kind::V6, |c| &c.targets.v6, start, max)
    }

    /// Up to `max` targets (for SRV), rotated by `start`, each naming its
    /// index in the service's clusters.
    pub fn targets(&self, start: usize, max: usize) -> impl Iterator<Item = Target> + 'a {
        self.walk(Kind::Targets, |c| &c.targets.targets, start, max)
            .map(|(cluster, t)| t.in_cluster(cluster))
    }
}

/// The cumulative tiers for an asker.
fn tiers<'a>(view: &'a ServiceView, place: &AskerPlace) -> [Pick<'a>; 3] {
    let own = view.cluster_by_id(place.cluster).map(|(i, _)| i);
    let cluster = cluster_tier(view, own);
    let zone = zone_tier(view, place, own, cluster);
    [cluster, zone, region_tier(view, place, zone)]
}

/// The asker's own cluster's targets.
fn cluster_tier(view: &ServiceView, own: Option<usize>) -> Pick<'_> {
    own.map_or(Pick::one(Tier::Cluster, view, &chain::EMPTY), |i| {
        Pick::cluster(view, i)
    })
}

/// The asker's zone's targets plus its own cluster's outside that zone.
fn zone_tier<'a>(
    view: &'a ServiceView,
    place: &AskerPlace,
    own: Option<usize>,
    cluster: Pick<'a>,
) -> Pick<'a> {
    match place.zone.and_then(|z| view.zone(z)) {
        Some(zone) => {
            let (extra, extras) = own.map_or(([Segment::default(); 2], 0), |i| {
                view.clusters[i].off_zone(i as u32)
            });
            Pick {
                tier: Tier::Zone,
                view,
                targets: Cursor::with_extra(zone, extra, extras),
            }
        }
        // No zone known: the zone tier is the cluster tier.
        None => Pick {
            tier: Tier::Zone,
            ..cluster
        },
    }
}

/// The asker's region's targets.
fn region_tier<'a>(view: &'a ServiceView, place: &AskerPlace, zone: Pick<'a>) -> Pick<'a> {
    match place.region.and_then(|r| view.region(r)) {
        Some(region) => Pick::one(Tier::Region, view, region),
        None if place.region.is_some() => Pick::one(Tier::Region, view, &chain::EMPTY),
        None => Pick {
            tier: Tier::Region,
            ..zone
        },
    }
}

fn boundary(affinity: Affinity) -> Option<Tier> {
    match affinity {
        // Until the node tier exists, `node` stays in the asker's cluster.
        Affinity::Node | Affinity::Cluster => Some(Tier::Cluster),
        Affinity::Zone => Some(Tier::Zone),
        Affinity::Region => Some(Tier::Region),
        Affinity::Nearest | Affinity::Provider | Affinity::None => None,
    }
}

/// The targets that answer an asker at `place` (`None`: unknown asker, no
/// preference).
pub fn select<'a>(
    view: &'a ServiceView,
    place: Option<&AskerPlace>,
    min_healthy: usize,
) -> Pick<'a> {
    let Some(place) = place else {
        return Pick::one(Tier::Any, view, &view.all);
    };
    if view.affinity == Affinity::None {
        return Pick::one(Tier::Any, view, &view.all);
    }
    let stop = boundary(view.affinity);
    let enough = |pick: &Pick<'_>| {
        let n = pick.len();
        n >= min_healthy.max(1) || (Some(pick.tier) == stop && n > 0)
    };
    // Nearest first, each tier worked out only when the one before fell short.
    let own = view.cluster_by_id(place.cluster).map(|(i, _)| i);
    let cluster = cluster_tier(view, own);
    if enough(&cluster) {
        return cluster;
    }
    let zone = zone_tier(view, place, own, cluster);
    if enough(&zone) {
        return zone;
    }
    let region = region_tier(view, place, zone);
    if enough(&region) {
        return region;
    }
    Pick::one(Tier::Any, view, &view.all)
}

/// How an answer was chosen, for `/debug/answer`.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub affinity: &'static str,
    pub min_healthy: usize,
    /// Healthy targets in each cumulative tier, nearest first.
    pub tiers: Vec<(Tier, usize)>,
    pub chosen: Tier,
    pub fail_open: bool,
    pub stale_clusters_excluded: Vec<String>,
}

/// [`select`], explained.
pub fn explain(view: &ServiceView, place: Option<&AskerPlace>, min_healthy: usize) -> Explanation {
    let pick = select(view, place, min_healthy);
    let tiers = match place {
        Some(place) => tiers(view, place)
            .iter()
            .map(|p| (p.tier, p.len()))
            .chain([(Tier::Any, view.all.total(Kind::Targets))])
            .collect(),
        None => vec![(Tier::Any, view.all.total(Kind::Targets))],
    };
    debug_assert!(Tier::ALL.len() >= tiers.len());
    Explanation {
        affinity: view.affinity.as_str(),
        min_healthy,
        tiers,
        chosen: pick.tier,
        fail_open: view.fail_open,
        stale_clusters_excluded: if view.fail_open {
            Vec::new()
        } else {
            view.clusters
                .iter()
                .filter(|c| c.stale())
                .map(|c| c.name().to_string())
                .collect()
        },
    }
}

thread_local! {
    /// Per-thread rotation state: no shared mutable state on the answer
    /// path.
    static ROTATION: Cell<usize> = const { Cell::new(0) };
}

/// A new rotation offset for one answer. Successive offsets on a thread
/// step by the golden ratio (a Weyl sequence), so whatever the number of
/// targets, a few answers from one worker already start all over the
/// list, and several workers together do not repeat each other's
/// starting points in step.
pub fn next_rotation() -> usize {
    ROTATION.with(|r| {
        let n = r.get().wrapping_add(0x9e37_79b9_7f4a_7c15_u64 as usize);
        r.set(n);
        // The high bits of a Weyl sequence are the well-spread ones.
        n >> 16
    })
}

/// Sets this thread's rotation counter, so a test can give two answer
/// paths the same rotation.
#[doc(hidden)]
pub fn set_rotation(n: usize) {
    ROTATION.with(|r| r.set(n));
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::num::NonZeroU16;

    use meshdns_proto::model::{
        ClusterName, Endpoint, LabelValue, Mode, Namespace, Policy, Port, Protocol, ServiceExport,
        ServiceKey, ServiceName,
    };

    use super::*;
    use crate::locality::Place;
    use crate::snapshot::ExportInput;

    #[test]
    fn rotation() {
        use Tier::*;
        let f = standard(
            Affinity::Nearest,
            &[
                ("10.1.0.1", true, None),
                ("10.1.0.2", true, Some("us-east-1b")),
                ("10.1.0.3", true, None),
            ],
        );
        let view = f.view();
        let east1 = f.asker("east-1");
        // Each tier's shape: one cluster's run; a zone chain plus the own
        // cluster's runs outside it; a region chain; the whole chain.
        for (place, min_healthy, tier) in [
            (Some(&east1), 1, Cluster),
            (Some(&east1), 4, Zone),
            (Some(&east1), 5, Region),
            (None, 1, Any),
        ] {
            let pick = select(&view, place, min_healthy);
            assert_eq!(pick.tier, tier);
            let all: Vec<_> = pick.v4(0, usize::MAX).collect();
            let len = all.len();
            assert_eq!(len, pick.len(), "{tier:?}: one address per target");
            for start in 0..2 * len {
                for max in 0..=len + 1 {
                    let got: Vec<_> = pick.v4(start, max).collect();
                    let expected: Vec<_> =
                        (0..max.min(len)).map(|i| all[(start + i) % len]).collect();
                    assert_eq!(got, expected, "{tier:?} start {start} max {max}");
                    let targets = pick.targets(start, max).count();
                    assert_eq!(targets, max.min(len));
                }
            }
        }
    }

    /// A fleet: (cluster, region, zone) with endpoints as (ip, ready, own zone).
    struct Fleet {
        places: Vec<std::sync::Arc<Place>>,
        exports: Vec<std::sync::Arc<ServiceExport>>,
    }

    const REGIONS: [&str; 2] = ["us-east", "us-west"];

    /// (ip, ready, endpoint zone)
    type Ep<'a> = (&'a str, bool, Option<&'a str>);
    /// (cluster, region, zone, stale, endpoints)
    type ClusterRow<'a> = (&'a str, &'a str, &'a str, bool, &'a [Ep<'a>]);

    fn zone_id(region: Option<&str>, zone: &str) -> u32 {
        100 * REGIONS.iter().position(|r| Some(*r) == region).unwrap_or(9) as u32
            + zone.bytes().last().unwrap_or(0) as u32
    }

    fn fleet(affinity: Affinity, clusters: &[ClusterRow<'_>]) -> Fleet {
        let mut places = Vec::new();
        let mut exports = Vec::new();
        for (i, (name, region, zone, stale, eps)) in clusters.iter().enumerate() {
            places.push(std::sync::Arc::new(Place {
                id: i as u32 + 1,
                name: ClusterName::new(name).unwrap(),
                region: Some((
                    REGIONS.iter().position(|r| r == region).unwrap() as u32,
                    region.to_string(),
                )),
                zone: Some((zone_id(Some(region), zone), zone.to_string())),
                stale: *stale,
            }));
            let endpoints = eps
                .iter()
                .map(|(ip, ready, z)| Endpoint {
                    ready: *ready,
                    serving: *ready,
                    zone: z.map(|z| LabelValue::new(z).unwrap()),
                    ..Endpoint::ready(ip.parse::<IpAddr>().unwrap())
                })
                .collect();
            exports.push(std::sync::Arc::new(
                ServiceExport::new(
                    ServiceKey {
                        namespace: Namespace::new("shop").unwrap(),
                        name: ServiceName::new("web").unwrap(),
                    },
                    vec![Port {
                        name: None,
                        protocol: Protocol::Tcp,
                        port: NonZeroU16::new(80).unwrap(),
                    }],
                    Mode::Endpoints,
                    vec![],
                    endpoints,
                    Policy {
                        affinity,
                        ttl: None,
                        ..Policy::default()
                    },
                )
                .unwrap(),
            ));
        }
        Fleet { places, exports }
    }

    impl Fleet {
        fn view(&self) -> ServiceView {
            let inputs: Vec<ExportInput<'_>> = self
                .places
                .iter()
                .zip(&self.exports)
                .map(|(place, export)| ExportInput { place, export })
                .collect();
            let key = self.exports[0].key().clone();
            ServiceView::build(key, &inputs, 5, &mut |r, z| zone_id(r, z))
        }

        fn asker(&self, cluster: &str) -> AskerPlace {
            let p = self
                .places
                .iter()
                .find(|p| p.name.as_str() == cluster)
                .unwrap();
            AskerPlace {
                cluster: p.id,
                region: p.region.as_ref().map(|r| r.0),
                zone: p.zone.as_ref().map(|z| z.0),
                prefix: 32,
            }
        }
    }

    /// One row: from `asker` (None: unknown), with `min_healthy`, the tier
    /// and the sorted addresses answered.
    fn check(f: &Fleet, asker: Option<&str>, min_healthy: usize, tier: Tier, expected: &[&str]) {
        let view = f.view();
        let place = asker.map(|a| f.asker(a));
        let pick = select(&view, place.as_ref(), min_healthy);
        let mut got: Vec<String> = pick.v4(0, 100).map(|a| a.to_string()).collect();
        got.sort();
        assert_eq!(
            (pick.tier, got),
            (
                tier,
                expected.iter().map(|s| s.to_string()).collect::<Vec<_>>()
            ),
            "asker {asker:?} min {min_healthy}"
        );
    }

    // east-1 and east-2 share region us-east, zones 1a and 1b; west-1 is elsewhere.
    fn standard(affinity: Affinity, east1: &[Ep<'_>]) -> Fleet {
        fleet(
            affinity,
            &[
                ("east-1", "us-east", "us-east-1a", false, east1),
                (
                    "east-2",
                    "us-east",
                    "us-east-1b",
                    false,
                    &[
                        ("10.2.0.1", true, None),
                        ("10.2.0.2", true, Some("us-east-1a")),
                    ],
                ),
                (
                    "west-1",
                    "us-west",
                    "us-west-1a",
                    false,
                    &[("10.3.0.1", true, None)],
                ),
            ],
        )
    }

    #[test]
    fn tiers_and_spill_over() {
        use Tier::*;
        let healthy = standard(
            Affinity::Nearest,
            &[("10.1.0.1", true, None), ("10.1.0.2", true, None)],
        );
        check(
            &healthy,
            Some("east-1"),
            1,
            Cluster,
            &["10.1.0.1", "10.1.0.2"],
        );
        check(
            &healthy,
            Some("east-1"),
            2,
            Cluster,
            &["10.1.0.1", "10.1.0.2"],
        );
        // Fewer than min_healthy in the cluster: its zone (east-2's pod in 1a counts).
        check(
            &healthy,
            Some("east-1"),
            3,
            Zone,
            &["10.1.0.1", "10.1.0.2", "10.2.0.2"],
        );
        check(
            &healthy,
            Some("east-1"),
            4,
            Region,
            &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2"],
        );
        check(
            &healthy,
            Some("east-1"),
            5,
            Any,
            &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2", "10.3.0.1"],
        );
        check(
            &healthy,
            Some("east-1"),
            9,
            Any,
            &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2", "10.3.0.1"],
        );
        check(
            &healthy,
            Some("east-2"),
            1,
            Cluster,
            &["10.2.0.1", "10.2.0.2"],
        );
        // east-2's own pod in zone 1a stays in its zone tier.
        check(
            &healthy,
            Some("east-2"),
            3,
            Region,
            &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2"],
        );
        check(&healthy, Some("west-1"), 1, Cluster, &["10.3.0.1"]);
        check(
            &healthy,
            Some("west-1"),
            2,
            Any,
            &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2", "10.3.0.1"],
        );
        check(
            &healthy,
            None,
            1,
            Any,
            &["10.1.0.1", "10.1.0.2", "10.2.0.1", "10.2.0.2", "10.3.0.1"],
        );
        // The asker's cluster has nothing healthy: its zone, then region.
        let sick = standard(Affinity::Nearest, &[("10.1.0.1", false, None)]);
        check(&sick, Some("east-1"), 1, Zone, &["10.2.0.2"]);
        check(&sick, Some("east-1"), 2, Region, &["10.2.0.1", "10.2.0.2"]);
        // An endpoint of the asker's cluster in another zone stays in the zone tier.
        let split = standard(
            Affinity::Nearest,
            &[
                ("10.1.0.1", false, None),
                ("10.1.0.9", true, Some("us-east-1c")),
            ],
        );
        check(&split, Some("east-1"), 1, Cluster, &["10.1.0.9"]);
        check(&split, Some("east-1"), 2, Zone, &["10.1.0.9", "10.2.0.2"]);
    }

    #[test]
    fn affinities() {
        use Tier::*;
        let one = [("10.1.0.1", true, None)];
        let none_ready = [("10.1.0.1", false, None)];
        // cluster: never leaves the asker's cluster while it has anything.
        check(
            &standard(Affinity::Cluster, &one),
            Some("east-1"),
            3,
            Cluster,
            &["10.1.0.1"],
        );
        check(
            &standard(Affinity::Cluster, &none_ready),
            Some("east-1"),
            1,
            Zone,
            &["10.2.0.2"],
        );
        // zone: stops at the zone tier when it is not empty.
        check(
            &standard(Affinity::Zone, &one),
            Some("east-1"),
            5,
            Zone,
            &["10.1.0.1", "10.2.0.2"],
        );
        check(
            &standard(Affinity::Zone, &one),
            Some("west-1"),
            5,
            Zone,
            &["10.3.0.1"],
        );
        // region: stops at the region tier.
        check(
            &standard(Affinity::Region, &one),
            Some("east-1"),
            5,
            Region,
            &["10.1.0.1", "10.2.0.1", "10.2.0.2"],
        );
        check(
            &standard(Affinity::Region, &one),
            Some("west-1"),
            5,
            Region,
            &["10.3.0.1"],
        );
        // none: everything, always.
        check(
            &standard(Affinity::None, &one),
            Some("east-1"),
            1,
            Any,
            &["10.1.0.1", "10.2.0.1", "10.2.0.2", "10.3.0.1"],
        );
    }

    #[test]
    fn stale_clusters_and_fail_open() {
        use Tier::*;
        let f = fleet(
            Affinity::Nearest,
            &[
                (
                    "east-1",
                    "us-east",
                    "us-east-1a",
                    true,
                    &[("10.1.0.1", true, None)],
                ),
                (
                    "west-1",
                    "us-west",
                    "us-west-1a",
                    false,
                    &[("10.3.0.1", true, None)],
                ),
            ],
        );
        check(&f, Some("east-1"), 1, Any, &["10.3.0.1"]);
        let e = explain(&f.view(), Some(&f.asker("east-1")), 1);
        assert_eq!(e.stale_clusters_excluded, vec!["east-1"]);
        assert!(!e.fail_open);
        // Every holder stale: the last known endpoints are served.
        let f = fleet(
            Affinity::Nearest,
            &[(
                "east-1",
                "us-east",
                "us-east-1a",
                true,
                &[("10.1.0.1", true, None)],
            )],
        );
        check(&f, Some("east-1"), 1, Cluster, &["10.1.0.1"]);
        check(&f, None, 1, Any, &["10.1.0.1"]);
        assert!(explain(&f.view(), None, 1).fail_open);
    }
}
