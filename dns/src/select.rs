//! Which healthy targets answer a given asker: locality tiers, the fleet
//! policy's primary and failover order, affinity and min-healthy. Pure,
//! and a few lookups and comparisons per query: the grouping by cluster,
//! node, zone, region and provider, the effective weights and the
//! failover order resolved to chains are worked out when the snapshot is
//! built ([`ServiceView::build_in`]).
//!
//! Tiers, nearest first: the asker's node (affinity `node` only, for an
//! asker whose address is one its cluster announced for a node); its
//! cluster; its zone (endpoints in the asker's zone, plus the asker's own
//! cluster's endpoints elsewhere); its region; its cloud provider; then
//! each place of the failover order, alone; then anywhere. The answer
//! comes from the first tier with at least min-healthy healthy targets of
//! positive weight (the service's `min-healthy`, a count or a percentage
//! of the tier's exported endpoints, else `--min-healthy`). Affinity
//! `node`, `cluster`, `zone`, `region` or `provider` stops at that tier
//! whenever it is not empty; `none` answers from every tier at once.
//! Before all of it, a primary with at least min-healthy targets answers
//! every asker (fail-back is automatic: it is decided per query). Targets
//! of weight 0 (drained to 100%, or exported so) count in no tier: they
//! answer only when nothing of positive weight is healthy.

use std::cell::Cell;

use meshdns_proto::model::Affinity;

use crate::locality::AskerPlace;
use crate::snapshot::{ServiceView, Step, chain};

mod explain;
mod export;
mod pick;

pub use explain::{Explanation, TierCount, explain};
pub use export::{Gate, exported_to};
pub use pick::{Pick, Picked, Tier};

fn boundary(affinity: Affinity) -> Option<Tier> {
    match affinity {
        Affinity::Node => Some(Tier::Node),
        Affinity::Cluster => Some(Tier::Cluster),
        Affinity::Zone => Some(Tier::Zone),
        Affinity::Region => Some(Tier::Region),
        Affinity::Provider => Some(Tier::Provider),
        Affinity::Nearest | Affinity::None => None,
    }
}

/// How many healthy endpoints `pick` needs to answer: the service's
/// min-healthy (a percentage of the tier's exported endpoints, rounded
/// up), else the server's; at least 1. Endpoints in either mode: a
/// ClusterIp export counts its endpoints of positive weight, healthy
/// (against the threshold) or not (in the percentage's base).
pub fn threshold(view: &ServiceView, min_healthy: usize, pick: &Pick<'_>) -> usize {
    match view.min_healthy {
        Some(m) => m.of(pick.exported()),
        None => min_healthy.max(1),
    }
}

/// The targets that answer an asker at `place` (`None`: unknown asker, no
/// preference).
pub fn select<'a>(
    view: &'a ServiceView,
    place: Option<&AskerPlace>,
    min_healthy: usize,
) -> Pick<'a> {
    let stop = boundary(view.affinity);
    tiers(view, place, min_healthy, |pick, need, _| {
        enough(pick, need, stop)
    })
}

/// Whether `pick` answers: it has what it needs, or it is the affinity's
/// boundary and not empty.
fn enough(pick: &Pick<'_>, need: usize, stop: Option<Tier>) -> bool {
    pick.healthy() >= need || (Some(pick.tier) == stop && !pick.is_empty())
}

/// Offers each tier the asker may be answered from, in order, with its
/// threshold (and the failover place or primary it stands for), until
/// `take` takes one; else anywhere. Each tier is worked out only when the
/// one before was not taken.
pub(crate) fn tiers<'a>(
    view: &'a ServiceView,
    place: Option<&AskerPlace>,
    min_healthy: usize,
    mut take: impl FnMut(&Pick<'a>, usize, Option<&'a Step>) -> bool,
) -> Pick<'a> {
    let any = Pick::one(Tier::Any, view, &view.all);
    if any.is_empty() {
        // Nothing of positive weight is healthy: the weight-0 targets
        // (with none either, the tiers are all empty as they were).
        let reserve = Pick::one(Tier::LastResort, view, &view.reserve);
        if !reserve.is_empty() {
            return reserve;
        }
    }
    let mut offer = |pick: &Pick<'a>, step: Option<&'a Step>| {
        take(pick, threshold(view, min_healthy, pick), step)
    };
    if let Some(step) = &view.primary {
        let primary = Pick::one(Tier::Primary, view, view.step(step));
        if offer(&primary, Some(step)) {
            return primary;
        }
    }
    let Some(place) = place else {
        return any;
    };
    if view.affinity == Affinity::None {
        return any;
    }
    let own = view.cluster_by_id(place.cluster).map(|(i, _)| i);
    if view.affinity == Affinity::Node
        && let (Some(node), Some(i)) = (place.node, own)
    {
        let node = Pick::node(view, i, node);
        if offer(&node, None) {
            return node;
        }
    }
    // The cluster's weight-0 targets are no tier (the last resort is).
    let cluster = match own {
        Some(i) if !view.clusters[i].whole(0).is_empty() => Pick::cluster(view, i),
        _ => Pick::one(Tier::Cluster, view, &chain::EMPTY),
    };
    if offer(&cluster, None) {
        return cluster;
    }
    let zone = match place.zone.and_then(|z| view.zone(z)) {
        Some(zone) => {
            let (extra, extras) = own.map_or(([Default::default(); 2], 0), |i| {
                view.clusters[i].off_zone(i as u32)
            });
            Pick::zone(view, zone, extra, extras)
        }
        // No zone known: the zone tier is the cluster tier.
        None => cluster.as_tier(Tier::Zone),
    };
    if offer(&zone, None) {
        return zone;
    }
    let region = match place.region.and_then(|r| view.region(r)) {
        Some(region) => Pick::one(Tier::Region, view, region),
        None if place.region.is_some() => Pick::one(Tier::Region, view, &chain::EMPTY),
        None => zone.as_tier(Tier::Region),
    };
    if offer(&region, None) {
        return region;
    }
    if let Some(provider) = place.provider {
        let chain = view.provider(provider).unwrap_or(&chain::EMPTY);
        let provider = Pick::one(Tier::Provider, view, chain);
        if offer(&provider, None) {
            return provider;
        }
    }
    for step in view.failover_for(place.region) {
        let failover = Pick::one(Tier::Failover, view, view.step(step));
        if offer(&failover, Some(step)) {
            return failover;
        }
    }
    any
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

    use meshdns_proto::fixtures;
    use meshdns_proto::model::{ClusterName, Endpoint, LabelValue, Policy, ServiceExport};

    use super::*;
    use crate::locality::Place;
    use crate::snapshot::ExportInput;

    /// The standard fleet with three ready endpoints in east-1, one of
    /// them in its own zone.
    fn three_in_east_1() -> Fleet {
        standard(
            Affinity::Nearest,
            &[
                ("10.1.0.1", true, None),
                ("10.1.0.2", true, Some("us-east-1b")),
                ("10.1.0.3", true, None),
            ],
        )
    }

    #[test]
    fn rotation() {
        use Tier::*;
        let f = three_in_east_1();
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
            for first in 0..2 * len {
                // The rotation offset whose low 48 bits, read as a fraction
                // of the circle, land on target `first` (mod len).
                let at = ((first % len) as u64 * (1 << 48)).div_ceil(len as u64);
                let start = (at | ((first / len) as u64) << 48) as usize;
                for max in 0..=len + 1 {
                    let got: Vec<_> = pick.v4(start, max).collect();
                    let expected: Vec<_> =
                        (0..max.min(len)).map(|i| all[(first + i) % len]).collect();
                    assert_eq!(got, expected, "{tier:?} start {start} max {max}");
                    let targets = pick.targets(start, max).count();
                    assert_eq!(targets, max.min(len));
                }
            }
        }
    }

    /// A target names its own cluster and endpoint: a part stores only the
    /// endpoint index, the walk stamps the cluster. Over every tier's
    /// walk, each target's endpoint is the address the same rotation
    /// answers (one address per target in this fleet).
    #[test]
    fn targets_name_their_cluster_and_endpoint() {
        let f = three_in_east_1();
        let view = f.view();
        let east1 = f.asker("east-1");
        for (place, min_healthy) in [(Some(&east1), 1), (Some(&east1), 4), (None, 1)] {
            let pick = select(&view, place, min_healthy);
            for start in [0, 1 << 47, 3 << 46] {
                let addresses: Vec<IpAddr> = pick.v4(start, 8).map(IpAddr::V4).collect();
                let named: Vec<IpAddr> = pick
                    .targets(start, 8)
                    .map(|t| match t {
                        crate::snapshot::Target::Endpoint { cluster, endpoint } => {
                            view.clusters[cluster as usize]
                                .endpoint_model(endpoint)
                                .addresses[0]
                        }
                        crate::snapshot::Target::ClusterIp { .. } => unreachable!("endpoints"),
                    })
                    .collect();
                assert_eq!(named, addresses, "{:?} start {start}", pick.tier);
                assert!(!named.is_empty());
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
                provider: None,
                nodes: std::sync::Arc::from(Vec::new()),
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
            exports.push(std::sync::Arc::new(fixtures::http_export(
                fixtures::key("shop", "web"),
                endpoints,
                Policy {
                    affinity,
                    ttl: None,
                    ..Policy::default()
                },
            )));
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
            p.asker(None, 32)
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
        let e = explain(
            &f.view(),
            Some(&f.asker("east-1")),
            1,
            &crate::snapshot::NO_POLICY,
        );
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
        assert!(explain(&f.view(), None, 1, &crate::snapshot::NO_POLICY).fail_open);
    }
}
