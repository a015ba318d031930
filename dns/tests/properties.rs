//! Property tests for the pure parts of the answer path: name parsing and
//! answer selection, over generated names and fleets.

#![allow(clippy::unwrap_used)]

use std::net::IpAddr;

use meshdns::locality::Place;
use meshdns::qname::{self, Domain, QName};
use meshdns::select::{self, Tier};
use meshdns::snapshot::{ExportInput, PartChange, ServiceView};
use meshdns_proto::fixtures;
use meshdns_proto::model::{
    Affinity, ClusterName, Endpoint, LabelValue, Policy, ServiceExport, ServiceKey,
};
use proptest::prelude::*;

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?"
}

fn domains() -> Vec<Domain> {
    vec![
        Domain::parse("global").unwrap(),
        Domain::parse("clusterset.local").unwrap(),
    ]
}

proptest! {
    /// Any labels at all: parsing never panics, and a name is in a domain
    /// exactly when it ends with that domain's labels.
    #[test]
    fn parse_never_panics(labels in proptest::collection::vec("[a-z0-9_-]{0,8}", 0..10)) {
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let parsed = qname::parse(&refs, &domains());
        let in_global = refs.last() == Some(&"global");
        let in_mcs = refs.len() >= 2 && refs[refs.len() - 2..] == ["clusterset", "local"];
        prop_assert_eq!(parsed.is_some(), in_global || in_mcs);
    }

    /// Every name form round-trips: build the name, parse it back.
    #[test]
    fn name_forms_round_trip(ns in label(), svc in label(), cluster in label(), host in label(), port in label()) {
        let d = domains();
        let check = |name: String, expected: QName<'_>| {
            let labels: Vec<&str> = name.split('.').collect();
            assert_eq!(qname::parse(&labels, &d), Some((0, expected)), "{name}");
        };
        check(format!("{svc}.{ns}.global"), QName::Service { ns: &ns, svc: &svc });
        check(format!("{cluster}.{svc}.{ns}.global"), QName::Cluster { ns: &ns, svc: &svc, cluster: &cluster });
        check(format!("{host}.{cluster}.{svc}.{ns}.global"), QName::Host { ns: &ns, svc: &svc, cluster: &cluster, host: &host });
        check(format!("_{port}._tcp.{svc}.{ns}.global"), QName::Srv { ns: &ns, svc: &svc, proto: "tcp", port: &port });
        let mcs = format!("{svc}.{ns}.svc.clusterset.local");
        let labels: Vec<&str> = mcs.split('.').collect();
        prop_assert_eq!(qname::parse(&labels, &d), Some((1, QName::Service { ns: &ns, svc: &svc })));
    }
}

/// A generated cluster: (region 0..2, zone 0..3, stale, endpoints as (ready, own zone)).
type GenCluster = (u8, u8, bool, Vec<(bool, Option<u8>)>);

fn fleet_cluster() -> impl Strategy<Value = GenCluster> {
    (
        0u8..2,
        0u8..3,
        proptest::bool::weighted(0.2),
        proptest::collection::vec(
            (proptest::bool::weighted(0.7), proptest::option::of(0u8..3)),
            0..5,
        ),
    )
}

fn fleet() -> impl Strategy<Value = Vec<GenCluster>> {
    proptest::collection::vec(fleet_cluster(), 1..6)
}

fn zone_id(region: Option<&str>, zone: &str) -> u32 {
    let r: u32 = region
        .and_then(|r| r.strip_prefix('r'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(9);
    let z: u32 = zone
        .strip_prefix('z')
        .and_then(|n| n.parse().ok())
        .unwrap_or(9);
    r * 10 + z
}

/// Cluster `i`'s place and export.
fn part(
    i: usize,
    (region, zone, stale, eps): &GenCluster,
    affinity: Affinity,
) -> (std::sync::Arc<Place>, std::sync::Arc<ServiceExport>) {
    let (r, z) = (format!("r{region}"), format!("z{zone}"));
    let place = std::sync::Arc::new(Place {
        id: i as u32 + 1,
        name: ClusterName::new(&format!("c{i}")).unwrap(),
        region: Some((u32::from(*region), r.clone())),
        zone: Some((zone_id(Some(&r), &z), z)),
        provider: None,
        nodes: std::sync::Arc::from(Vec::new()),
        stale: *stale,
    });
    let endpoints = eps
        .iter()
        .enumerate()
        .map(|(j, (ready, zone))| Endpoint {
            ready: *ready,
            serving: *ready,
            zone: zone.map(|z| LabelValue::new(&format!("z{z}")).unwrap()),
            ..Endpoint::ready(IpAddr::from([10, i as u8, 0, j as u8 + 1]))
        })
        .collect();
    let export = fixtures::http_export(
        key(),
        endpoints,
        Policy {
            affinity,
            ttl: None,
            ..Policy::default()
        },
    );
    (place, std::sync::Arc::new(export))
}

fn key() -> ServiceKey {
    fixtures::key("shop", "web")
}

fn build(clusters: &[GenCluster], affinity: Affinity) -> (Vec<std::sync::Arc<Place>>, ServiceView) {
    let parts: Vec<_> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| part(i, c, affinity))
        .collect();
    let inputs: Vec<ExportInput<'_>> = parts
        .iter()
        .map(|(place, export)| ExportInput { place, export })
        .collect();
    let view = ServiceView::build(key(), &inputs, 5, &mut |r, z| zone_id(r, z));
    (parts.into_iter().map(|(p, _)| p).collect(), view)
}

/// A healthy endpoint in the oracle: (address, cluster index, its
/// (region, zone), its region).
type Healthy = (std::net::Ipv4Addr, usize, (u8, u8), u8);

/// The answer for an asker in cluster `asker` (an index into `clusters`,
/// or none: unknown), worked out from the generated fleet alone by the
/// documented rules (`select.rs`), with no view, chain or index: an
/// oracle independent of the code it checks.
///
/// Healthy: ready, in a live cluster (or any cluster when all are stale).
/// Tiers, each containing the nearer ones: the asker's cluster; its zone
/// (endpoints whose own zone, else their cluster's, is the asker's, plus
/// its own cluster's); its region; anywhere. The first tier with
/// `min_healthy` answers, or the affinity's tier when it has any.
fn oracle(
    clusters: &[(usize, GenCluster)],
    asker: Option<usize>,
    min_healthy: usize,
    affinity: Affinity,
) -> (Tier, Vec<std::net::Ipv4Addr>) {
    let every_stale = clusters.iter().all(|(_, c)| c.2);
    let healthy: Vec<Healthy> = clusters
        .iter()
        .filter(|(_, c)| every_stale || !c.2)
        .flat_map(|(i, (region, zone, _, eps))| {
            eps.iter()
                .enumerate()
                .filter(|(_, e)| e.0)
                .map(move |(j, (_, own))| {
                    (
                        std::net::Ipv4Addr::new(10, *i as u8, 0, j as u8 + 1),
                        *i,
                        (*region, own.unwrap_or(*zone)),
                        *region,
                    )
                })
        })
        .collect();
    let pick = |keep: &dyn Fn(&Healthy) -> bool| {
        let mut v: Vec<_> = healthy.iter().filter(|t| keep(t)).map(|t| t.0).collect();
        v.sort();
        v
    };
    let everything = pick(&|_| true);
    let asker = asker.and_then(|a| clusters.iter().find(|(i, _)| *i == a));
    let (Some((own, (region, zone, _, _))), false) = (asker, affinity == Affinity::None) else {
        return (Tier::Any, everything);
    };
    let stop = match affinity {
        Affinity::Cluster => Some(Tier::Cluster),
        Affinity::Zone => Some(Tier::Zone),
        Affinity::Region => Some(Tier::Region),
        _ => None,
    };
    let tiers = [
        (Tier::Cluster, pick(&|t| t.1 == *own)),
        (
            Tier::Zone,
            pick(&|t| t.2 == (*region, *zone) || t.1 == *own),
        ),
        (Tier::Region, pick(&|t| t.3 == *region)),
    ];
    for (tier, answer) in tiers {
        let n = answer.len();
        if n >= min_healthy.max(1) || (Some(tier) == stop && n > 0) {
            return (tier, answer);
        }
    }
    (Tier::Any, everything)
}

/// [`oracle`] for every asker of `clusters` and the unknown asker, as
/// [`answers`] lists them.
fn expected(
    clusters: &[(usize, GenCluster)],
    min_healthy: usize,
    affinity: Affinity,
) -> Vec<(Tier, Vec<std::net::Ipv4Addr>)> {
    clusters
        .iter()
        .map(|(i, _)| Some(*i))
        .chain([None])
        .map(|asker| oracle(clusters, asker, min_healthy, affinity))
        .collect()
}

/// Every asker's answer (tier and sorted addresses) at `min_healthy`.
fn answers(
    view: &ServiceView,
    places: &[std::sync::Arc<Place>],
    min_healthy: usize,
) -> Vec<(Tier, Vec<std::net::Ipv4Addr>)> {
    places
        .iter()
        .map(|p| Some(p.asker(None, 32)))
        .chain([None])
        .map(|place| {
            let pick = select::select(view, place.as_ref(), min_healthy);
            let mut v: Vec<_> = pick.v4(0, usize::MAX).collect();
            v.sort();
            (pick.tier, v)
        })
        .collect()
}

/// Builds the view of `.0` of each pair (none at all when no cluster had
/// the service), updates it to `.1` with only the clusters that differ,
/// and checks it answers as a view built from `.1` and as the oracle
/// works out from the fleet.
fn check_incremental(
    pairs: &[(Option<GenCluster>, Option<GenCluster>)],
    min_healthy: usize,
    affinity: Affinity,
) -> Result<(), TestCaseError> {
    let before: Vec<(usize, GenCluster)> = pairs
        .iter()
        .enumerate()
        .filter_map(|(i, (b, _))| b.clone().map(|c| (i, c)))
        .collect();
    let after: Vec<(usize, GenCluster)> = pairs
        .iter()
        .enumerate()
        .filter_map(|(i, (_, a))| a.clone().map(|c| (i, c)))
        .collect();
    let zone = &mut |r: Option<&str>, z: &str| zone_id(r, z);
    let old_parts: Vec<_> = before.iter().map(|(i, c)| part(*i, c, affinity)).collect();
    let old_inputs: Vec<_> = old_parts
        .iter()
        .map(|(place, export)| ExportInput { place, export })
        .collect();
    // A service no cluster held has no previous view.
    let old = (!before.is_empty()).then(|| ServiceView::build(key(), &old_inputs, 5, zone));
    let new_parts: Vec<_> = after.iter().map(|(i, c)| part(*i, c, affinity)).collect();
    let new_inputs: Vec<_> = new_parts
        .iter()
        .map(|(place, export)| ExportInput { place, export })
        .collect();
    let full = ServiceView::build(key(), &new_inputs, 5, zone);
    // Changes: clusters that differ; the rest are taken from `old`.
    let names: Vec<ClusterName> = (0..pairs.len())
        .map(|i| ClusterName::new(&format!("c{i}")).unwrap())
        .collect();
    let mut changes = Vec::new();
    for (i, (b, a)) in pairs.iter().enumerate() {
        if b == a {
            continue;
        }
        match after.iter().position(|(j, _)| *j == i) {
            Some(k) => changes.push(PartChange::Set(new_inputs[k])),
            None => changes.push(PartChange::Remove(&names[i])),
        }
    }
    let updated = ServiceView::update(key(), old.as_ref(), &changes, 5, zone);
    let places: Vec<std::sync::Arc<Place>> = new_parts.iter().map(|(p, _)| p.clone()).collect();
    prop_assert_eq!(updated.fail_open, full.fail_open);
    let got = answers(&updated, &places, min_healthy);
    prop_assert_eq!(&got, &answers(&full, &places, min_healthy));
    prop_assert_eq!(got, expected(&after, min_healthy, affinity));
    Ok(())
}

fn affinity() -> impl Strategy<Value = Affinity> {
    prop_oneof![
        Just(Affinity::Nearest),
        Just(Affinity::Cluster),
        Just(Affinity::Zone),
        Just(Affinity::Region),
        Just(Affinity::None)
    ]
}

proptest! {
    /// A view updated from the previous one with only the changed
    /// clusters' parts answers every asker exactly as one built from
    /// scratch.
    #[test]
    fn incremental_update_matches_full_build(
        pairs in proptest::collection::vec(
            (proptest::option::of(fleet_cluster()), proptest::option::of(fleet_cluster())),
            1..6,
        ),
        min_healthy in 1usize..3,
        affinity in affinity(),
    ) {
        check_incremental(&pairs, min_healthy, affinity)?;
    }

    /// The same across many clusters, where unchanged runs of parts are
    /// shared between views in chunks: a few clusters change, appear or
    /// go, anywhere in the list.
    #[test]
    fn incremental_update_across_chunks(
        n in 60usize..200,
        base in proptest::collection::vec(fleet_cluster(), 210),
        edits in proptest::collection::vec((0usize..210, proptest::option::of(fleet_cluster())), 1..5),
        min_healthy in 1usize..3,
        affinity in affinity(),
    ) {
        let mut pairs: Vec<(Option<GenCluster>, Option<GenCluster>)> =
            (0..210).map(|i| { let c = (i < n).then(|| base[i].clone()); (c.clone(), c) }).collect();
        for (i, edit) in edits {
            pairs[i].1 = edit;
        }
        check_incremental(&pairs, min_healthy, affinity)?;
    }

    /// Whatever the fleet, asker, affinity and `min_healthy`: the tier and
    /// the addresses are the oracle's, with no duplicate; `explain`
    /// counts each tier as the oracle does.
    #[test]
    fn selection_matches_the_oracle(clusters in fleet(), asker in proptest::option::of(0usize..6), min_healthy in 1usize..4, affinity in affinity()) {
        let (places, view) = build(&clusters, affinity);
        let asker = asker.filter(|a| *a < places.len());
        let place = asker.map(|a| &places[a]).map(|p| p.asker(None, 32));
        let pick = select::select(&view, place.as_ref(), min_healthy);
        let chosen: Vec<_> = pick.v4(0, usize::MAX).collect();
        let mut sorted_chosen = chosen.clone();
        sorted_chosen.sort();
        let indexed: Vec<(usize, GenCluster)> = clusters.iter().cloned().enumerate().collect();
        let (tier, want) = oracle(&indexed, asker, min_healthy, affinity);
        prop_assert_eq!(pick.tier, tier);
        prop_assert_eq!(&sorted_chosen, &want);
        let mut unique = sorted_chosen.clone();
        unique.dedup();
        prop_assert_eq!(unique.len(), chosen.len(), "no duplicates");
        // The explanation's counts per cumulative tier, from the oracle.
        let explained = select::explain(
            &view,
            place.as_ref(),
            min_healthy,
            &meshdns::snapshot::NO_POLICY,
        );
        prop_assert_eq!(explained.chosen, tier);
        if let (Some(a), true) = (asker, affinity != Affinity::None) {
            for select::TierCount { tier: t, healthy, .. } in &explained.tiers {
                let expected = match t {
                    Tier::Any => oracle(&indexed, None, 1, affinity).1.len(),
                    // The count of a tier: the oracle asked with a bar no
                    // nearer tier meets and an affinity that stops there.
                    t => {
                        let stop = match t {
                            Tier::Cluster => Affinity::Cluster,
                            Tier::Zone => Affinity::Zone,
                            _ => Affinity::Region,
                        };
                        let (got_tier, got) = oracle(&indexed, Some(a), usize::MAX, stop);
                        if got_tier == *t { got.len() } else { 0 }
                    }
                };
                prop_assert_eq!(*healthy, expected, "{:?} count", t);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Chains over several chunks of clusters (each chunk a run): the
    /// unknown asker gets every healthy address exactly once, and for any
    /// asker a rotated answer is the unrotated one turned, whole or cut.
    #[test]
    fn rotation_across_chunks(
        clusters in proptest::collection::vec(fleet_cluster(), 130..200),
        asker in 0usize..130,
        min_healthy in 1usize..4,
        start in any::<usize>(),
    ) {
        let (places, view) = build(&clusters, Affinity::Nearest);
        let every_stale = clusters.iter().all(|c| c.2);
        let mut expected: Vec<std::net::Ipv4Addr> = clusters
            .iter()
            .enumerate()
            .filter(|(_, c)| every_stale || !c.2)
            .flat_map(|(i, c)| {
                c.3.iter()
                    .enumerate()
                    .filter(|(_, (ready, _))| *ready)
                    .map(move |(j, _)| std::net::Ipv4Addr::new(10, i as u8, 0, j as u8 + 1))
            })
            .collect();
        expected.sort();
        let mut all: Vec<_> = select::select(&view, None, 1).v4(0, usize::MAX).collect();
        all.sort();
        prop_assert_eq!(all, expected);
        let p = &places[asker];
        let asking = p.asker(None, 32);
        for place in [None, Some(asking)] {
            let pick = select::select(&view, place.as_ref(), min_healthy);
            let whole: Vec<_> = pick.v4(0, usize::MAX).collect();
            if whole.is_empty() {
                continue;
            }
            let mut turned = whole.clone();
            // The rotation's low 48 bits are a fraction of the circle.
            let first = (u128::from(start as u64 & ((1 << 48) - 1)) * whole.len() as u128) >> 48;
            turned.rotate_left(first as usize);
            prop_assert_eq!(pick.v4(start, usize::MAX).collect::<Vec<_>>(), turned.clone());
            let cut = 3.min(turned.len());
            prop_assert_eq!(pick.v4(start, 3).collect::<Vec<_>>(), turned[..cut].to_vec());
        }
    }
}
