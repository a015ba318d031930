//! A hub restarted from its saved state, then reconnected to, against a
//! model: a fresh hub given the same Hellos and Snapshots.
//!
//! - each cluster is restored live when it was heard within the cluster
//!   TTL before the restart (by its saved time, against an injected
//!   clock), stale otherwise (heard too long ago, a saved time ahead of
//!   the clock, or no clock: the old rule);
//! - a service whose Snapshot equals what was restored keeps the restored
//!   export (no new one held) and answers exactly as on the fresh hub; a
//!   service whose reconnecting clusters were all restored live and sent
//!   equal Snapshots keeps its restored view (no view is built);
//! - one whose Snapshot differs is replaced, one the Snapshot omits is
//!   gone, and one of a cluster that never reconnects stays as restored,
//!   live or stale, and is stale one TTL after it was last heard;
//! - a follower that mirrored the restored hub converges to it.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshdns::metrics::Metrics;
use meshdns::registry::{Change, Liveness, MirroredCluster, Registry, RestoreClock};
use meshdns::select;
use meshdns::snapshot::Snapshot;
use meshdns::state_wire;
use meshdns_proto::fixtures;
use meshdns_proto::model::{Endpoint, Policy, ServiceExport};
use proptest::prelude::*;

mod common;
use common::{SERVICES, cluster, key};

/// A service's endpoints: (ready, own address byte).
type GenSet = BTreeMap<u8, Vec<(bool, u8)>>;

fn gen_set() -> impl Strategy<Value = GenSet> {
    proptest::collection::btree_map(
        0..SERVICES,
        proptest::collection::vec((proptest::bool::weighted(0.8), 1..4u8), 1..4),
        0..=SERVICES as usize,
    )
}

fn exports(c: usize, set: &GenSet) -> Vec<ServiceExport> {
    set.iter()
        .map(|(s, endpoints)| {
            let endpoints: BTreeMap<u8, bool> =
                endpoints.iter().map(|(ready, a)| (*a, *ready)).collect();
            let endpoints = endpoints
                .into_iter()
                .map(|(a, ready)| Endpoint {
                    ready,
                    ..Endpoint::ready(IpAddr::from([10, c as u8, *s, a]))
                })
                .collect();
            fixtures::http_export(key(*s), endpoints, Policy::default())
        })
        .collect()
}

/// What each cluster does after the restart.
#[derive(Debug, Clone)]
enum Back {
    /// Sends a Snapshot equal to what was saved.
    Same,
    /// Sends another Snapshot (services changed, added, omitted).
    Other(GenSet),
    /// Never reconnects.
    Away,
}

fn back() -> impl Strategy<Value = Back> {
    prop_oneof![
        4 => Just(Back::Same),
        2 => gen_set().prop_map(Back::Other),
        1 => Just(Back::Away),
    ]
}

/// When the hub last heard from a cluster, before the restart.
#[derive(Debug, Clone, Copy)]
enum Heard {
    /// This many seconds ago, within the TTL.
    Recent(u64),
    /// This many seconds ago, the TTL or more.
    Old(u64),
    /// This many seconds after the restart's clock (it went back).
    Ahead(u64),
}

fn heard() -> impl Strategy<Value = Heard> {
    prop_oneof![
        3 => (1..15u64).prop_map(Heard::Recent),
        2 => (15..120u64).prop_map(Heard::Old),
        1 => (2..100u64).prop_map(Heard::Ahead),
    ]
}

const TTL: Duration = Duration::from_secs(15);
/// The restart's wall clock, Unix ms.
const NOW_MS: u64 = 1_900_000_000_000;

impl Heard {
    fn unix_ms(self) -> u64 {
        match self {
            Heard::Recent(s) | Heard::Old(s) => NOW_MS - s * 1000,
            Heard::Ahead(s) => NOW_MS + s * 1000,
        }
    }
}

fn registry() -> Registry {
    Registry::new(5, false, Arc::new(Metrics::new()))
}

/// Each (service, cluster) part: its export and whether it is stale.
fn parts(snapshot: &Snapshot) -> BTreeMap<(String, String), (Arc<ServiceExport>, bool)> {
    let mut out = BTreeMap::new();
    for view in snapshot.services() {
        for part in view.clusters.iter() {
            out.insert(
                (view.key.name.to_string(), part.name().to_string()),
                (part.export.clone(), part.stale()),
            );
        }
    }
    out
}

/// Every service's answer (tier and sorted addresses) for an asker in
/// each cluster that exports something, by name, and for an unknown one.
type Answers = BTreeMap<(String, Option<String>), (select::Tier, Vec<std::net::Ipv4Addr>)>;

fn answers(snapshot: &Snapshot) -> Answers {
    let mut askers = BTreeMap::new();
    for view in snapshot.services() {
        for part in view.clusters.iter() {
            let p = &part.place;
            askers.insert(Some(p.name.to_string()), Some(p.asker(None, 32)));
        }
    }
    askers.insert(None, None);
    let mut out = BTreeMap::new();
    for view in snapshot.services() {
        for (name, asker) in &askers {
            let pick = select::select(view, asker.as_ref(), 1);
            let mut v: Vec<_> = pick.v4(0, usize::MAX).collect();
            v.sort();
            out.insert((view.key.name.to_string(), name.clone()), (pick.tier, v));
        }
    }
    out
}

/// A follower's registry given `change`, as its Watch stream would.
fn mirror(follower: &Registry, change: &Change) {
    match change {
        Change::Cluster(status) => follower.mirror_cluster(MirroredCluster {
            cluster: status.cluster.clone(),
            stale: status.stale,
            connected: status.connected,
            last_heartbeat_unix_ms: status.last_heartbeat_unix_ms,
        }),
        Change::Services {
            cluster,
            upserts,
            removals,
        } => follower.mirror_services(
            cluster,
            upserts.iter().map(|s| ServiceExport::clone(s)).collect(),
            removals.clone(),
        ),
        Change::ClusterRemoved(name) => follower.mirror_remove(name),
        Change::Policy(policy) => follower.set_policy(policy.clone()),
    }
}

/// The parts without the registry's own pointers: export values.
fn values(
    parts: BTreeMap<(String, String), (Arc<ServiceExport>, bool)>,
) -> BTreeMap<(String, String), (ServiceExport, bool)> {
    parts
        .into_iter()
        .map(|(k, (e, stale))| (k, (ServiceExport::clone(&e), stale)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_restarted_hub_answers_as_a_fresh_one_once_reconnected(
        fleet in proptest::collection::vec((gen_set(), back(), heard()), 1..6),
        order in any::<u64>(),
        clocked in proptest::bool::weighted(0.8),
    ) {
        let heards: Vec<Heard> = fleet.iter().map(|f| f.2).collect();
        let fleet: Vec<(GenSet, Back)> = fleet.into_iter().map(|(set, back, _)| (set, back)).collect();
        // Restored live: heard within the TTL, by a hub that judges (a
        // follower, with no clock, restores every cluster stale).
        let live = |c: usize| clocked && matches!(heards[c], Heard::Recent(_));
        // The hub before the restart, and the state it saves.
        let before = registry();
        for (c, (saved, _)) in fleet.iter().enumerate() {
            let (session, _) = before.hello(cluster(c), usize::MAX);
            before.apply_snapshot(&session, exports(c, saved), &BTreeSet::new()).unwrap();
        }
        let mut saved = state_wire::clusters_of(&state_wire::full_state(&before.full_state()));
        for (m, _) in &mut saved {
            let c: usize = m.cluster.name.as_str()[1..].parse().unwrap();
            prop_assert!(!m.stale, "saved live");
            m.last_heartbeat_unix_ms = heards[c].unix_ms();
        }
        let hub = registry();
        let clock = RestoreClock { cluster_ttl: TTL, now: Instant::now(), now_unix_ms: NOW_MS };
        let summary = hub.restore(saved, clocked.then_some(clock));
        prop_assert_eq!(summary.live, (0..fleet.len()).filter(|c| live(*c)).count());
        let restored = parts(&hub.snapshot());
        let restored_snapshot = Arc::clone(&*hub.snapshot());
        for ((_, cluster), (_, stale)) in &restored {
            let c: usize = cluster[1..].parse().unwrap();
            prop_assert_eq!(*stale, !live(c), "{} restored", cluster);
        }
        // A follower of the restarted hub: its state, then every change.
        let follower = registry();
        let (state, mut feed) = hub.subscribe();
        follower.mirror_reset(state_wire::clusters_of(&state_wire::full_state(&state)));
        let fresh = registry();
        // The reconnects, in a generated order.
        let mut back: Vec<usize> = (0..fleet.len()).filter(|c| !matches!(fleet[*c].1, Back::Away)).collect();
        let n = back.len().max(1) as u64;
        back.rotate_left((order % n) as usize);
        if order & 1 == 1 {
            back.reverse();
        }
        for &c in &back {
            let sent = match &fleet[c].1 {
                Back::Other(set) => set,
                _ => &fleet[c].0,
            };
            for registry in [&hub, &fresh] {
                let (session, _) = registry.hello(cluster(c), usize::MAX);
                registry.apply_snapshot(&session, exports(c, sent), &BTreeSet::new()).unwrap();
            }
            while let Ok(change) = feed.try_recv() {
                mirror(&follower, &change);
            }
        }
        let after = parts(&hub.snapshot());
        let model = parts(&fresh.snapshot());
        for (c, (saved, what)) in fleet.iter().enumerate() {
            let name = format!("c{c:03}");
            for s in 0..SERVICES {
                let at = (key(s).name.to_string(), name.clone());
                match what {
                    // Equal: the restored export itself, now live.
                    Back::Same => {
                        if let Some((held, stale)) = restored.get(&at) {
                            let (now, now_stale) = &after[&at];
                            prop_assert!(Arc::ptr_eq(held, now), "{:?}: the restored export was replaced by an equal one", at);
                            prop_assert!(*stale != live(c) && !now_stale, "{:?}: as restored before, live after", at);
                        }
                    }
                    // Away: as restored, stale.
                    Back::Away => {
                        prop_assert_eq!(restored.contains_key(&at), saved.contains_key(&s));
                        if let Some((held, _)) = restored.get(&at) {
                            prop_assert!(Arc::ptr_eq(held, &after[&at].0));
                            prop_assert_eq!(after[&at].1, !live(c), "{:?} as restored", at);
                        }
                    }
                    Back::Other(_) => {}
                }
                // Every reconnected cluster's part is the fresh hub's.
                if !matches!(what, Back::Away) {
                    prop_assert_eq!(
                        after.get(&at).map(|(e, stale)| (ServiceExport::clone(e), *stale)),
                        model.get(&at).map(|(e, stale)| (ServiceExport::clone(e), *stale)),
                        "{:?}", at
                    );
                }
            }
        }
        // With every cluster back, the restarted hub answers as the fresh one.
        if fleet.iter().all(|(_, b)| !matches!(b, Back::Away)) {
            prop_assert_eq!(values(after.clone()), values(model));
            prop_assert_eq!(answers(&hub.snapshot()), answers(&fresh.snapshot()));
        }
        // A service whose reconnecting clusters were all restored live and
        // sent what was saved keeps its restored view: nothing is built.
        for s in 0..SERVICES {
            let quiet = fleet.iter().enumerate().all(|(c, (set, what))| match what {
                Back::Away => true,
                Back::Same => live(c) || !set.contains_key(&s),
                Back::Other(other) => !set.contains_key(&s) && !other.contains_key(&s),
            });
            if quiet && let Some(view) = restored_snapshot.view(&key(s)) {
                let now = hub.snapshot().view(&key(s)).cloned();
                prop_assert!(now.is_some_and(|v| Arc::ptr_eq(view, &v)), "s{}: view rebuilt", s);
            }
        }
        // Liveness runs on: half a second after the restart nothing
        // changed; half a second before the TTL has passed since the
        // restart, every cluster restored live that never came back (heard
        // a second or more before the restart) is stale, and those that
        // came back are live.
        let liveness = Liveness { cluster_ttl: TTL, stale_grace: Duration::from_secs(3600) };
        hub.sweep(clock.now + Duration::from_millis(500), liveness);
        prop_assert_eq!(values(parts(&hub.snapshot())), values(after.clone()));
        hub.sweep(clock.now + TTL - Duration::from_millis(500), liveness);
        let swept = parts(&hub.snapshot());
        for ((_, cluster), (_, stale)) in &swept {
            let c: usize = cluster[1..].parse().unwrap();
            prop_assert_eq!(*stale, matches!(fleet[c].1, Back::Away), "{} after its TTL", cluster);
        }
        while let Ok(change) = feed.try_recv() {
            mirror(&follower, &change);
        }
        let after = swept;
        // The follower converged to the hub.
        prop_assert_eq!(values(parts(&follower.snapshot())), values(after));
        prop_assert_eq!(answers(&follower.snapshot()), answers(&hub.snapshot()));
    }
}
