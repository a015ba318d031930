//! A view updated step after step from the previous one holds exactly
//! what a view built from scratch holds: every chain link for link (the
//! same runs, the same running ends), the same keys, health, weights,
//! TTL and affinity. Stronger than comparing answers: a relink that kept
//! a stale link or a wrong running end would answer right for most
//! askers and still be caught here.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::net::IpAddr;
use std::sync::Arc;

use meshdns_proto::fixtures;
use meshdns_proto::model::{Affinity, ClusterName, Endpoint, LabelValue, Policy, ServiceKey};
use proptest::prelude::*;

use super::{ExportInput, PartChange, ServiceView};
use crate::locality::Place;
use crate::snapshot::chain::{Chain, Ends, RunEnds, Segment, segment_at};

/// A generated endpoint: (ready, its own zone, weight).
type GenEndpoint = (bool, Option<u8>, u32);

/// A generated cluster: region, zone, provider, stale, TTL, affinity,
/// endpoints. Most clusters share region 0 and zone 0, so that rarer
/// zones are held by few chunks (and a chunk can lose its last run of
/// one).
#[derive(Debug, Clone, PartialEq)]
struct GenCluster {
    region: u8,
    zone: u8,
    provider: Option<u8>,
    stale: bool,
    ttl: Option<u32>,
    affinity: Affinity,
    endpoints: Vec<GenEndpoint>,
}

fn rare(common: u8, others: std::ops::Range<u8>) -> impl Strategy<Value = u8> {
    prop_oneof![6 => Just(common), 1 => others]
}

fn cluster() -> impl Strategy<Value = GenCluster> {
    (
        rare(0, 1..3),
        rare(0, 1..5),
        proptest::option::weighted(0.3, 0u8..2),
        proptest::bool::weighted(0.15),
        prop_oneof![6 => Just(None), 1 => Just(Some(30)), 1 => Just(Some(60))],
        prop_oneof![8 => Just(Affinity::Nearest), 1 => Just(Affinity::Zone)],
        proptest::collection::vec(
            (
                proptest::bool::weighted(0.8),
                proptest::option::weighted(0.3, rare(0, 1..5)),
                prop_oneof![6 => Just(meshdns_proto::model::DEFAULT_WEIGHT), 1 => Just(0u32), 1 => Just(7u32)],
            ),
            0..4,
        ),
    )
        .prop_map(
            |(region, zone, provider, stale, ttl, affinity, endpoints)| GenCluster {
                region,
                zone,
                provider,
                stale,
                ttl,
                affinity,
                endpoints,
            },
        )
}

fn zone_id(region: Option<&str>, zone: &str) -> u32 {
    let number = |s: Option<&str>, prefix| {
        s.and_then(|s| s.strip_prefix(prefix))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(9)
    };
    number(region, 'r') * 10 + number(Some(zone), 'z')
}

fn key() -> ServiceKey {
    fixtures::key("shop", "web")
}

fn name(slot: usize) -> ClusterName {
    ClusterName::new(&format!("c{slot:04}")).unwrap()
}

/// Cluster `slot`'s place and export.
fn part(slot: usize, c: &GenCluster) -> (Arc<Place>, Arc<meshdns_proto::model::ServiceExport>) {
    let (region, zone) = (format!("r{}", c.region), format!("z{}", c.zone));
    let place = Arc::new(Place {
        id: slot as u32 + 1,
        name: name(slot),
        region: Some((u32::from(c.region), region.clone())),
        zone: Some((zone_id(Some(&region), &zone), zone)),
        provider: c.provider.map(|p| (u32::from(p), format!("p{p}"))),
        nodes: Arc::from(Vec::new()),
        stale: c.stale,
    });
    let endpoints = c
        .endpoints
        .iter()
        .enumerate()
        .map(|(j, (ready, zone, weight))| Endpoint {
            ready: *ready,
            serving: *ready,
            zone: zone.map(|z| LabelValue::new(&format!("z{z}")).unwrap()),
            weight: *weight,
            ..Endpoint::ready(IpAddr::from([
                10,
                (slot >> 8) as u8,
                slot as u8,
                j as u8 + 1,
            ]))
        })
        .collect();
    let policy = Policy {
        affinity: c.affinity,
        ttl: c.ttl,
        ..Policy::default()
    };
    (
        place,
        Arc::new(fixtures::http_export(key(), endpoints, policy)),
    )
}

type Parts = Vec<(Arc<Place>, Arc<meshdns_proto::model::ServiceExport>)>;

fn parts(fleet: &[Option<GenCluster>]) -> Parts {
    fleet
        .iter()
        .enumerate()
        .filter_map(|(slot, c)| c.as_ref().map(|c| part(slot, c)))
        .collect()
}

fn inputs(parts: &Parts) -> Vec<ExportInput<'_>> {
    parts
        .iter()
        .map(|(place, export)| ExportInput { place, export })
        .collect()
}

/// A chain as plain values: per link, (chunk, heaviest, the run's
/// segments as `view`'s table holds them, the running ends over the
/// links). Slots are not compared: an updated chunk's table keeps the
/// slots of runs it kept, a full build numbers them afresh.
type Plain = Vec<(u32, u64, Vec<(Segment, RunEnds)>, Ends)>;

fn plain(view: &ServiceView, chain: &Chain) -> Plain {
    chain
        .runs
        .iter()
        .enumerate()
        .map(|(i, (link, ends))| {
            (
                link.chunk,
                link.heaviest,
                {
                    let run = chain.run(view.table(), i);
                    (0..run.len())
                        .map(|s| (segment_at(run, s), run[s].1))
                        .collect()
                },
                *ends,
            )
        })
        .collect()
}

fn keyed(view: &ServiceView, chains: &[(u32, Chain)]) -> Vec<(u32, Plain)> {
    chains.iter().map(|(k, c)| (*k, plain(view, c))).collect()
}

/// Every run in a chunk's table is one the chunk names (its every
/// healthy target's, its reserve's, or a key's: none kept alive after
/// the chunk stopped holding its list), each in its own slot, and the
/// table holds no free slot at its end.
fn check_slots(view: &ServiceView) -> Result<(), TestCaseError> {
    for chunk in &view.chunks {
        let mut named: Vec<u32> = [chunk.all, chunk.reserve]
            .into_iter()
            .chain(chunk.region_runs().iter().map(|(_, s)| *s))
            .chain(chunk.provider_runs().iter().map(|(_, s)| *s))
            .chain(chunk.zone_runs().iter().map(|(_, s)| *s))
            .collect();
        let names = named.len();
        named.sort_unstable();
        named.dedup();
        prop_assert_eq!(named.len(), names, "two lists in one slot");
        let (slots, filled) = chunk.slot_use();
        prop_assert_eq!(filled, names, "a run in the table no list names");
        prop_assert!(named.iter().all(|s| chunk.runs_at(*s).is_some()));
        prop_assert!(slots == 0 || chunk.runs_at((slots - 1) as u32).is_some());
    }
    Ok(())
}

/// `got` holds what `want` (built from scratch) holds.
fn check_same(got: &ServiceView, want: &ServiceView) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.clusters.len(), want.clusters.len());
    for i in 0..got.clusters.len() {
        prop_assert_eq!(got.clusters[i].name(), want.clusters[i].name());
    }
    prop_assert_eq!(got.counts, want.counts);
    prop_assert_eq!(got.fail_open, want.fail_open);
    prop_assert_eq!(got.any_ready, want.any_ready);
    prop_assert_eq!(got.weighted, want.weighted);
    prop_assert_eq!(got.ttl, want.ttl);
    prop_assert_eq!(got.affinity, want.affinity);
    prop_assert_eq!(&got.by_id[..], &want.by_id[..]);
    prop_assert_eq!(plain(got, &got.all), plain(want, &want.all), "all");
    prop_assert_eq!(
        plain(got, &got.reserve),
        plain(want, &want.reserve),
        "reserve"
    );
    prop_assert_eq!(keyed(got, &got.zones), keyed(want, &want.zones), "zones");
    prop_assert_eq!(
        keyed(got, &got.regions),
        keyed(want, &want.regions),
        "regions"
    );
    prop_assert_eq!(
        keyed(got, &got.providers),
        keyed(want, &want.providers),
        "providers"
    );
    check_slots(got)?;
    check_slots(want)?;
    Ok(())
}

/// Applies each step's edits (slot, what the cluster exports now) to
/// `fleet` as an update of the previous view, checking each updated
/// view against one built from scratch.
fn check_steps(
    mut fleet: Vec<Option<GenCluster>>,
    steps: Vec<Vec<(usize, Option<GenCluster>)>>,
) -> Result<(), TestCaseError> {
    let zone = &mut |r: Option<&str>, z: &str| zone_id(r, z);
    let first = parts(&fleet);
    let mut view = (!first.is_empty()).then(|| ServiceView::build(key(), &inputs(&first), 5, zone));
    for edits in steps {
        let mut changed = Vec::new();
        for (slot, now) in edits {
            let slot = slot % fleet.len();
            if fleet[slot] != now {
                fleet[slot] = now;
                changed.push(slot);
            }
        }
        let now = parts(&fleet);
        let now_inputs = inputs(&now);
        let names: Vec<ClusterName> = changed.iter().map(|s| name(*s)).collect();
        let changes: Vec<PartChange<'_>> = changed
            .iter()
            .zip(&names)
            .map(|(slot, name)| match &fleet[*slot] {
                Some(_) => {
                    let at = now_inputs
                        .iter()
                        .position(|i| i.place.name == *name)
                        .unwrap();
                    PartChange::Set(now_inputs[at])
                }
                None => PartChange::Remove(name),
            })
            .collect();
        let updated = ServiceView::update(key(), view.as_ref(), &changes, 5, zone);
        let full = ServiceView::build(key(), &now_inputs, 5, zone);
        check_same(&updated, &full)?;
        view = (!updated.clusters.is_empty()).then_some(updated);
    }
    Ok(())
}

fn edits(slots: usize) -> impl Strategy<Value = Vec<Vec<(usize, Option<GenCluster>)>>> {
    proptest::collection::vec(
        proptest::collection::vec((0..slots, proptest::option::weighted(0.8, cluster())), 1..4),
        1..5,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Over several chunks: clusters change, arrive (the parts after them
    /// shift chunks) and leave; zones appear and vanish within a chunk;
    /// weights and staleness change. Each step is an update of the last.
    #[test]
    fn updates_across_chunks_hold_what_a_full_build_holds(
        fleet in proptest::collection::vec(proptest::option::weighted(0.9, cluster()), 64..260),
        steps in edits(260),
    ) {
        check_steps(fleet, steps)?;
    }

    /// A few clusters: every one stale (fail-open) and back, readiness of
    /// the whole service flipping.
    #[test]
    fn updates_of_a_small_fleet_hold_what_a_full_build_holds(
        fleet in proptest::collection::vec(proptest::option::of(cluster()), 1..5),
        steps in edits(5),
    ) {
        check_steps(fleet, steps)?;
    }
}

/// A cluster whose chunk holds no run of a zone changes: that zone's
/// chain (held by another chunk only) is the previous view's, shared,
/// not relinked; so is a zone's (and a region's) that the changed chunk
/// holds but the changed cluster is not in: the chunk's run of it keeps
/// its allocation. A zone the changed cluster is in is relinked.
#[test]
fn chains_of_untouched_chunks_are_shared() {
    let common = GenCluster {
        region: 0,
        zone: 0,
        provider: None,
        stale: false,
        ttl: None,
        affinity: Affinity::Nearest,
        endpoints: vec![(true, None, 1)],
    };
    let mut fleet = vec![Some(common.clone()); 200];
    // Slot 150 (chunk 2) is alone in zone 3 of region 1, slot 10 (chunk
    // 0, the changed cluster's) alone in zone 2 of region 2.
    fleet[150] = Some(GenCluster {
        region: 1,
        zone: 3,
        ..common.clone()
    });
    fleet[10] = Some(GenCluster {
        region: 2,
        zone: 2,
        ..common.clone()
    });
    let zone = &mut |r: Option<&str>, z: &str| zone_id(r, z);
    let before = parts(&fleet);
    let old = ServiceView::build(key(), &inputs(&before), 5, zone);
    fleet[3] = Some(GenCluster {
        endpoints: vec![(true, None, 1), (true, None, 1)],
        ..common
    });
    let now = parts(&fleet);
    let now_inputs = inputs(&now);
    let new = ServiceView::update(
        key(),
        Some(&old),
        &[PartChange::Set(now_inputs[3])],
        5,
        zone,
    );
    let shared = |a: &Chain, b: &Chain| match (&a.runs.0, &b.runs.0) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        _ => false,
    };
    let rare = zone_id(Some("r1"), "z3");
    let common = zone_id(Some("r0"), "z0");
    assert!(shared(old.zone(rare).unwrap(), new.zone(rare).unwrap()));
    assert!(shared(old.region(1).unwrap(), new.region(1).unwrap()));
    let neighbour = zone_id(Some("r2"), "z2");
    assert!(shared(
        old.zone(neighbour).unwrap(),
        new.zone(neighbour).unwrap()
    ));
    assert!(shared(old.region(2).unwrap(), new.region(2).unwrap()));
    assert!(!shared(old.region(0).unwrap(), new.region(0).unwrap()));
    assert!(!Arc::ptr_eq(&old.chunks[0], &new.chunks[0]));
    assert!(!shared(
        old.zone(common).unwrap(),
        new.zone(common).unwrap()
    ));
    assert_eq!(
        new.zone(common).unwrap().total(super::super::Kind::Targets),
        199
    );
}
