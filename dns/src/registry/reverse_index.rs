//! The PTR index kept up to date publish by publish (`--reverse`)
//! answers as one built from scratch from the same final state: a
//! property test over random Snapshots and Deltas from a few clusters
//! whose services share addresses and hostnames.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use meshdns_proto::fixtures;
use meshdns_proto::model::{Cluster, Endpoint, Hostname, Policy, ServiceExport, ServiceKey};
use proptest::prelude::*;

use super::Registry;
use crate::metrics::Metrics;

/// Addresses drawn from: two IPv4 /24s and one IPv6 /120, so leaves are
/// shared, split and emptied.
fn address(n: u8) -> IpAddr {
    match n % 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, n / 3)),
        1 => IpAddr::V4(Ipv4Addr::new(10, 0, 1, n / 3)),
        _ => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(n / 3))),
    }
}

const ADDRESSES: u8 = 24;

/// One endpoint: an address, maybe a hostname, ready or not.
#[derive(Debug, Clone)]
struct Ep {
    address: u8,
    host: Option<u8>,
    ready: bool,
}

/// One service of a cluster's export: its name and endpoints.
type Svc = (u8, Vec<Ep>);

#[derive(Debug, Clone)]
enum Op {
    Snapshot(usize, Vec<Svc>),
    Delta(usize, Vec<Svc>, Vec<u8>),
}

fn ep() -> impl Strategy<Value = Ep> {
    (0..ADDRESSES, proptest::option::of(0u8..3), any::<bool>()).prop_map(
        |(address, host, ready)| Ep {
            address,
            host,
            ready,
        },
    )
}

fn svc() -> impl Strategy<Value = Svc> {
    (0u8..5, proptest::collection::vec(ep(), 1..4))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..3, proptest::collection::vec(svc(), 0..4)).prop_map(|(c, s)| Op::Snapshot(c, s)),
        (
            0usize..3,
            proptest::collection::vec(svc(), 0..3),
            proptest::collection::vec(0u8..5, 0..2)
        )
            .prop_map(|(c, u, r)| Op::Delta(c, u, r)),
    ]
}

fn key(s: u8) -> ServiceKey {
    fixtures::key("ns", &format!("s{s}"))
}

fn export((s, eps): &Svc) -> ServiceExport {
    // One endpoint per address, and a hostname named once per service,
    // as validation requires.
    let (mut addresses, mut hosts) = (BTreeSet::new(), BTreeSet::new());
    let endpoints = eps
        .iter()
        .filter(|e| addresses.insert(e.address))
        .map(|e| {
            let mut endpoint = Endpoint::ready(address(e.address));
            endpoint.ready = e.ready;
            endpoint.hostname = e
                .host
                .filter(|h| hosts.insert(*h))
                .map(|h| Hostname::new(&format!("h{h}")).unwrap());
            endpoint
        })
        .collect();
    fixtures::http_export(key(*s), endpoints, Policy::default())
}

fn cluster(c: usize) -> Cluster {
    fixtures::cluster(&format!("c{c}"))
}

/// Every address's PTR names and every /24 (/120) range's emptiness, as
/// `registry` answers them.
fn answers(registry: &Registry) -> (Vec<Option<Vec<String>>>, Vec<bool>) {
    let snapshot = registry.snapshot();
    let ptr = (0..ADDRESSES + 3)
        .map(|n| {
            snapshot.ptr(&address(n)).map(|names| {
                names
                    .iter()
                    .map(|p| format!("{}.{}/{:?}", p.service, p.namespace, p.host))
                    .collect()
            })
        })
        .collect();
    let ranges = [
        (address(0), address(ADDRESSES - 3)),
        (address(1), address(ADDRESSES - 2)),
        (address(2), address(ADDRESSES - 1)),
        (address(3), address(9)),
    ]
    .iter()
    .map(|(low, high)| snapshot.has_reverse_range(*low, *high))
    .collect();
    (ptr, ranges)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// After every message, the incrementally kept index answers every
    /// address (and range) as a registry given only the resulting state,
    /// one Snapshot per cluster, does.
    #[test]
    fn the_incremental_ptr_index_answers_as_a_full_rebuild(
        ops in proptest::collection::vec(op(), 1..16)
    ) {
        let registry = Registry::new(5, true, Arc::new(Metrics::new()));
        let sessions: Vec<_> = (0..3)
            .map(|c| {
                let (session, _) = registry.hello(cluster(c), usize::MAX);
                registry.apply_snapshot(&session, vec![], &BTreeSet::new()).unwrap();
                session
            })
            .collect();
        // The model: each cluster's services as last sent.
        let mut held: Vec<BTreeMap<u8, Svc>> = vec![BTreeMap::new(); 3];
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Snapshot(c, services) => {
                    held[*c] = services.iter().map(|s| (s.0, s.clone())).collect();
                    let services = held[*c].values().map(export).collect();
                    registry.apply_snapshot(&sessions[*c], services, &BTreeSet::new()).unwrap();
                }
                Op::Delta(c, upserts, removals) => {
                    let upserts: BTreeMap<u8, Svc> =
                        upserts.iter().map(|s| (s.0, s.clone())).collect();
                    let removals: BTreeSet<u8> = removals
                        .iter()
                        .copied()
                        .filter(|r| !upserts.contains_key(r))
                        .collect();
                    for r in &removals {
                        held[*c].remove(r);
                    }
                    held[*c].extend(upserts.clone());
                    registry
                        .apply_delta(
                            &sessions[*c],
                            upserts.values().map(export).collect(),
                            removals.iter().map(|r| key(*r)).collect(),
                        )
                        .unwrap();
                }
            }
            let fresh = Registry::new(5, true, Arc::new(Metrics::new()));
            for (c, services) in held.iter().enumerate() {
                let (session, _) = fresh.hello(cluster(c), usize::MAX);
                fresh
                    .apply_snapshot(&session, services.values().map(export).collect(), &BTreeSet::new())
                    .unwrap();
            }
            prop_assert_eq!(answers(&registry), answers(&fresh), "after message {}", i);
        }
    }
}
