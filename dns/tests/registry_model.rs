//! The registry against a model, on what it publishes (the snapshot DNS
//! answers from, not the writer's own state):
//!
//! - a storm of concurrent Snapshots from many clusters, through the
//!   writer, ends with exactly each cluster's last message in every
//!   service view; no snapshot a reader loads meanwhile shows part of a
//!   message; and each acknowledgement finds its message already
//!   published;
//! - the PTR index, updated part by part, answers as one rebuilt from the
//!   published views would, after every write.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use meshdns::metrics::Metrics;
use meshdns::registry::{Liveness, Registry, Session, Writer};
use meshdns::snapshot::{PtrName, Snapshot};
use meshdns_proto::fixtures;
use meshdns_proto::model::{Endpoint, Hostname, Policy, ServiceExport};
use proptest::prelude::*;

mod common;
use common::{SERVICES, cluster, key};

/// One generated endpoint: (ready, hostname, address shared with other
/// clusters).
type GenEndpoint = (bool, bool, bool);

fn gen_endpoints() -> impl Strategy<Value = Vec<GenEndpoint>> {
    proptest::collection::vec(
        (
            proptest::bool::weighted(0.7),
            proptest::bool::weighted(0.3),
            proptest::bool::weighted(0.2),
        ),
        1..4,
    )
}

/// A message's services: each with its endpoints.
type GenSet = BTreeMap<u8, Vec<GenEndpoint>>;

fn gen_set() -> impl Strategy<Value = GenSet> {
    proptest::collection::btree_map(0..SERVICES, gen_endpoints(), 0..=SERVICES as usize)
}

/// Cluster `c`'s export of service `s` in its message `seq`: addresses
/// `10.c.seq.(s*8+e)`, or `10.200.s.e` when shared (the same address in
/// several clusters' parts: PTR names as a multiset).
fn export(c: usize, seq: usize, s: u8, endpoints: &[GenEndpoint]) -> ServiceExport {
    let endpoints = endpoints
        .iter()
        .enumerate()
        .map(|(e, (ready, hostname, shared))| {
            let address = if *shared {
                IpAddr::from([10, 200, s, e as u8 + 1])
            } else {
                IpAddr::from([10, c as u8, seq as u8, s * 8 + e as u8 + 1])
            };
            Endpoint {
                ready: *ready,
                // Unready but serving (terminating): counted only when no
                // endpoint of the service is ready, so readiness anywhere
                // changes every part's health.
                serving: true,
                hostname: hostname.then(|| Hostname::new(&format!("h{e}")).unwrap()),
                ..Endpoint::ready(address)
            }
        })
        .collect();
    fixtures::http_export(key(s), endpoints, Policy::default())
}

fn exports(c: usize, seq: usize, set: &GenSet) -> Vec<ServiceExport> {
    set.iter().map(|(s, eps)| export(c, seq, *s, eps)).collect()
}

/// Every address the tests can generate.
fn universe() -> Vec<IpAddr> {
    let mut all = Vec::new();
    for s in 0..SERVICES {
        for e in 0..4u8 {
            all.push(IpAddr::from([10, 200, s, e + 1]));
        }
    }
    all
}

/// What each cluster's part of each service is in `snapshot`:
/// (service, cluster) -> export.
fn published(snapshot: &Snapshot) -> BTreeMap<(String, String), ServiceExport> {
    let mut out = BTreeMap::new();
    for view in snapshot.services() {
        for part in view.clusters.iter() {
            out.insert(
                (view.key.name.to_string(), part.name().to_string()),
                ServiceExport::clone(&part.export),
            );
        }
    }
    out
}

/// The PTR index rebuilt from the published views, each address's names
/// sorted.
fn rebuilt_ptr(snapshot: &Snapshot) -> BTreeMap<IpAddr, Vec<PtrName>> {
    let mut map: BTreeMap<IpAddr, Vec<PtrName>> = BTreeMap::new();
    for view in snapshot.services() {
        for (address, name) in view.ptr_names() {
            map.entry(address).or_default().push(name);
        }
    }
    for names in map.values_mut() {
        names.sort();
    }
    map
}

/// The snapshot's PTR answers are those of an index rebuilt from its
/// views: every address, and ranges within a leaf, across leaves and
/// across the whole fleet.
fn check_ptr(snapshot: &Snapshot, addresses: &BTreeSet<IpAddr>) -> Result<(), TestCaseError> {
    let oracle = rebuilt_ptr(snapshot);
    for address in addresses.iter().chain(oracle.keys()) {
        prop_assert_eq!(
            snapshot.ptr(address),
            oracle.get(address).map(Vec::as_slice),
            "PTR {} at serial {}",
            address,
            snapshot.serial
        );
    }
    let mut ranges: Vec<(IpAddr, IpAddr)> = vec![
        ([10, 0, 0, 0].into(), [10, 255, 255, 255].into()),
        ([10, 200, 0, 0].into(), [10, 200, 255, 255].into()),
        ([11, 0, 0, 0].into(), [11, 255, 255, 255].into()),
    ];
    for address in addresses {
        if let IpAddr::V4(a) = address {
            let [x, y, z, _] = a.octets();
            ranges.push(([x, y, z, 0].into(), [x, y, z, 255].into()));
            ranges.push(([x, y, 0, 0].into(), [x, y, 255, 255].into()));
            ranges.push(((*address), (*address)));
        }
    }
    for (low, high) in ranges {
        prop_assert_eq!(
            snapshot.has_reverse_range(low, high),
            oracle.range(low..=high).next().is_some(),
            "range {}..={}",
            low,
            high
        );
    }
    Ok(())
}

#[derive(Debug, Clone)]
enum Op {
    Snapshot(usize, GenSet),
    /// Upserts and removals.
    Delta(usize, GenSet, Vec<u8>),
    /// Every cluster silent past its grace: purged with all it exported.
    PurgeAll,
}

fn op(clusters: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..clusters, gen_set()).prop_map(|(c, s)| Op::Snapshot(c, s)),
        6 => (0..clusters, gen_set(), proptest::collection::vec(0..SERVICES, 0..3))
            .prop_map(|(c, u, r)| Op::Delta(c, u, r)),
        1 => Just(Op::PurgeAll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// After every write (Snapshots, Deltas, readiness flips that rebuild
    /// every part of a service, clusters purged), the PTR index the
    /// registry keeps part by part answers exactly as one rebuilt from the
    /// published views; so does a snapshot built from those views at once.
    #[test]
    fn incremental_ptr_index_answers_as_a_rebuild(
        clusters in 1usize..80,
        ops in proptest::collection::vec(op(80), 1..40),
    ) {
        let registry = Registry::new(5, true, Arc::new(Metrics::new()));
        let mut sessions: BTreeMap<usize, (Session, bool)> = BTreeMap::new();
        let mut addresses: BTreeSet<IpAddr> = universe().into_iter().collect();
        for (seq, op) in ops.into_iter().enumerate() {
            match op {
                Op::PurgeAll => {
                    let later = Instant::now() + Duration::from_secs(3600);
                    registry.sweep(later, Liveness {
                        cluster_ttl: Duration::from_secs(60),
                        stale_grace: Duration::from_secs(120),
                    });
                    sessions.clear();
                }
                Op::Snapshot(c, set) | Op::Delta(c, set, _) if !sessions.get(&(c % clusters)).is_some_and(|s| s.1) => {
                    let c = c % clusters;
                    let session = match sessions.remove(&c) {
                        Some((s, _)) => s,
                        None => registry.hello(cluster(c), usize::MAX).0,
                    };
                    let sent = exports(c, seq, &set);
                    addresses.extend(sent.iter().flat_map(|e| e.endpoints().iter().flat_map(|ep| ep.addresses.iter().copied())));
                    registry.apply_snapshot(&session, sent, &BTreeSet::new()).unwrap();
                    sessions.insert(c, (session, true));
                }
                Op::Snapshot(c, set) => {
                    let c = c % clusters;
                    let sent = exports(c, seq, &set);
                    addresses.extend(sent.iter().flat_map(|e| e.endpoints().iter().flat_map(|ep| ep.addresses.iter().copied())));
                    registry.apply_snapshot(&sessions[&c].0, sent, &BTreeSet::new()).unwrap();
                }
                Op::Delta(c, set, removals) => {
                    let c = c % clusters;
                    let sent = exports(c, seq, &set);
                    addresses.extend(sent.iter().flat_map(|e| e.endpoints().iter().flat_map(|ep| ep.addresses.iter().copied())));
                    let removals = removals.into_iter().filter(|r| !set.contains_key(r)).map(key).collect();
                    registry.apply_delta(&sessions[&c].0, sent, removals).unwrap();
                }
            }
            let snapshot = registry.snapshot();
            check_ptr(&snapshot, &addresses)?;
        }
        // The same views indexed in one step, from an empty snapshot.
        let snapshot = registry.snapshot();
        let views = snapshot.services().map(|v| (v.key.clone(), Some(v.clone())));
        let fresh = Snapshot::new(true).with_changes(1, None, views);
        for address in &addresses {
            prop_assert_eq!(fresh.ptr(address), snapshot.ptr(address));
        }
    }
}

/// Which message of cluster `c` a part comes from: the third octet of
/// its first own (not shared) address; `None` when every address is shared.
fn seq_of(export: &ServiceExport) -> Option<u8> {
    export
        .endpoints()
        .iter()
        .find_map(|e| match e.addresses.iter().next() {
            Some(IpAddr::V4(a)) if a.octets()[1] != 200 => Some(a.octets()[2]),
            _ => None,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(6))]

    /// A reconnect storm: every cluster (enough for several chunks of
    /// parts) connects at once and sends its Snapshots through the writer.
    /// Every acknowledgement finds its own message published; a reader
    /// never sees a cluster's parts from two messages, or fewer services
    /// than its message had; the end state is each cluster's last message
    /// in every view, and the PTR index is a rebuild's.
    #[test]
    fn a_storm_ends_with_each_clusters_last_message(
        messages in proptest::collection::vec(
            proptest::collection::vec(gen_set(), 1..5),
            65..150,
        ),
    ) {
        let registry = Arc::new(Registry::new(5, true, Arc::new(Metrics::new())));
        let writer = Writer::spawn(registry.clone()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(messages.clone());
        let reader = {
            let (registry, stop, shared) = (registry.clone(), stop.clone(), shared.clone());
            std::thread::spawn(move || -> Result<u64, String> {
                let mut checked = 0;
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = registry.snapshot();
                    let mut by_cluster: BTreeMap<String, Vec<(String, Option<u8>)>> = BTreeMap::new();
                    for ((service, cluster), export) in published(&snapshot) {
                        by_cluster.entry(cluster).or_default().push((service, seq_of(&export)));
                    }
                    for (cluster, parts) in by_cluster {
                        let c: usize = cluster[1..].parse().unwrap();
                        let seqs: BTreeSet<u8> = parts.iter().filter_map(|(_, s)| *s).collect();
                        if seqs.len() > 1 {
                            return Err(format!("{cluster} shows messages {seqs:?} at once"));
                        }
                        if let Some(seq) = seqs.first() {
                            let want = shared[c][*seq as usize].len();
                            if parts.len() != want {
                                return Err(format!("{cluster} shows {} of message {seq}'s {want} services", parts.len()));
                            }
                        }
                    }
                    checked += 1;
                }
                Ok(checked)
            })
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let acks: Result<(), String> = runtime.block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for (c, sets) in messages.iter().cloned().enumerate() {
                let (writer, registry) = (writer.clone(), registry.clone());
                tasks.spawn(async move {
                    let (session, _) = writer.hello(cluster(c), usize::MAX).await.unwrap();
                    let session = Arc::new(session);
                    for (seq, set) in sets.iter().enumerate() {
                        let sent = exports(c, seq, set);
                        writer
                            .apply_snapshot(session.clone(), sent.clone(), BTreeSet::new())
                            .await
                            .unwrap();
                        // Only this task writes cluster c: the snapshot
                        // published now holds exactly this message.
                        let name = format!("c{c:03}");
                        let shown: Vec<ServiceExport> = published(&registry.snapshot())
                            .into_iter()
                            .filter(|((_, cl), _)| *cl == name)
                            .map(|(_, e)| e)
                            .collect();
                        if shown != sent {
                            return Err(format!("{name}'s message {seq} acknowledged before it was published"));
                        }
                    }
                    Ok(())
                });
            }
            while let Some(done) = tasks.join_next().await {
                done.unwrap()?;
            }
            Ok(())
        });
        stop.store(true, Ordering::Relaxed);
        let checked = reader.join().unwrap();
        prop_assert!(acks.is_ok(), "{:?}", acks);
        prop_assert!(checked.is_ok(), "{:?}", checked);
        let snapshot = registry.snapshot();
        let mut model = BTreeMap::new();
        let mut addresses = BTreeSet::new();
        for (c, sets) in messages.iter().enumerate() {
            let last = sets.len() - 1;
            for export in exports(c, last, &sets[last]) {
                addresses.extend(export.endpoints().iter().flat_map(|e| e.addresses.iter().copied()));
                model.insert((export.key().name.to_string(), format!("c{c:03}")), export);
            }
        }
        prop_assert_eq!(published(&snapshot), model);
        check_ptr(&snapshot, &addresses)?;
    }
}

/// The published cluster list (what `status` and ListClusters read)
/// follows each cluster's counts through Deltas, including one that
/// changes a service but none of the counts, and a cluster that comes
/// later.
#[test]
fn the_cluster_list_follows_every_delta() {
    use meshdns_proto::fixtures::{endpoint, http_export};
    let registry = Registry::new(5, true, Arc::new(Metrics::new()));
    let listed = |r: &Registry| -> Vec<(String, usize, usize)> {
        r.clusters()
            .iter()
            .map(|s| (s.cluster.name.to_string(), s.services, s.endpoints))
            .collect()
    };
    let export = |s: u8, addresses: &[&str]| {
        let endpoints = addresses
            .iter()
            .map(|a| endpoint(a.parse().unwrap()))
            .collect();
        http_export(key(s), endpoints, Default::default())
    };
    let (first, _) = registry.hello(cluster(0), usize::MAX);
    registry
        .apply_snapshot(&first, vec![], &BTreeSet::new())
        .unwrap();
    registry
        .apply_delta(&first, vec![export(0, &["10.0.0.1"])], BTreeSet::new())
        .unwrap();
    assert_eq!(listed(&registry), [("c000".to_owned(), 1, 1)]);
    // Another address, the same counts: the list is as it was.
    registry
        .apply_delta(&first, vec![export(0, &["10.0.0.2"])], BTreeSet::new())
        .unwrap();
    assert_eq!(listed(&registry), [("c000".to_owned(), 1, 1)]);
    registry
        .apply_delta(
            &first,
            vec![export(1, &["10.0.1.1", "10.0.1.2"])],
            BTreeSet::new(),
        )
        .unwrap();
    assert_eq!(listed(&registry), [("c000".to_owned(), 2, 3)]);
    let (second, _) = registry.hello(cluster(1), usize::MAX);
    registry
        .apply_snapshot(&second, vec![export(0, &["10.1.0.1"])], &BTreeSet::new())
        .unwrap();
    registry
        .apply_delta(&first, vec![], [key(0)].into_iter().collect())
        .unwrap();
    assert_eq!(
        listed(&registry),
        [("c000".to_owned(), 1, 2), ("c001".to_owned(), 1, 1)]
    );
}
