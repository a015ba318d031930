//! Traffic policy through the registry and the selection: weighted shares
//! over 100,000 answers, weight 0 as the last resort, drains, the failover
//! order from each region, primary pinning and fail-back, per-service
//! min-healthy, the node and provider tiers, and export-to answered
//! NXDOMAIN (with an ECS scope) through the full handler.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meshdns::authority::rules;
use meshdns::authority::{self, Authority, Transport};
use meshdns::metrics::Metrics;
use meshdns::qname::Domain;
use meshdns::registry::{Registry, Session};
use meshdns::select::{self, Tier};
use meshdns::snapshot::{Kind, Snapshot};
use meshdns_proto::fixtures::{self, label};
use meshdns_proto::model::{
    Affinity, Cluster, ClusterName, ClusterPolicy, Endpoint, FleetPolicy, MinHealthy, Mode,
    NodeName, Policy, RegionPolicy, Scope, ServiceExport, ServiceKey, ServicePolicy,
};

/// One cluster: (name, region, provider, client CIDR, nodes as (name, address)).
struct Place<'a> {
    name: &'a str,
    region: &'a str,
    provider: Option<&'a str>,
    cidr: &'a str,
    nodes: &'a [(&'a str, &'a str)],
}

fn key() -> ServiceKey {
    fixtures::key("shop", "web")
}

/// An endpoint: (address, weight, ready, node).
fn endpoint(address: &str, weight: u32, ready: bool, node: Option<&str>) -> Endpoint {
    Endpoint {
        ready,
        serving: ready,
        weight,
        node: node.map(|n| NodeName::new(n).unwrap()),
        ..Endpoint::ready(address.parse().unwrap())
    }
}

fn export(endpoints: Vec<Endpoint>, policy: Policy) -> ServiceExport {
    fixtures::http_export(key(), endpoints, policy)
}

struct Fleet {
    registry: Registry,
    sessions: HashMap<String, Session>,
}

impl Fleet {
    fn new(places: &[Place<'_>]) -> Self {
        let registry = Registry::new(5, false, Arc::new(Metrics::new()));
        let mut sessions = HashMap::new();
        for p in places {
            let (session, refused) = registry.hello(
                Cluster {
                    provider: p.provider.map(label),
                    nodes: fixtures::nodes(p.nodes),
                    ..fixtures::located_cluster(
                        p.name,
                        p.region,
                        &format!("{}-a", p.region),
                        p.cidr,
                    )
                },
                usize::MAX,
            );
            assert!(refused.is_empty());
            registry
                .apply_snapshot(&session, vec![], &Default::default())
                .unwrap();
            sessions.insert(p.name.to_owned(), session);
        }
        Fleet { registry, sessions }
    }

    /// `cluster` exports the service with `endpoints` (none: not at all).
    fn export(&self, cluster: &str, endpoints: Vec<Endpoint>, policy: &Policy) {
        let services = if endpoints.is_empty() {
            vec![]
        } else {
            vec![export(endpoints, policy.clone())]
        };
        self.registry
            .apply_snapshot(&self.sessions[cluster], services, &Default::default())
            .unwrap();
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.registry.snapshot().clone()
    }
}

/// The answers to `n` queries from `source` (`None`: an unknown asker),
/// `max` addresses each: how often each address came, and the tiers.
fn answers(
    snapshot: &Snapshot,
    source: Option<&str>,
    min_healthy: usize,
    max: usize,
    n: usize,
) -> (BTreeMap<String, usize>, Vec<Tier>) {
    let view = snapshot.service("web", "shop").unwrap();
    let place = source.and_then(|s| rules::asker(snapshot, s.parse().unwrap(), None));
    let mut counts = BTreeMap::new();
    let mut tiers = Vec::new();
    for _ in 0..n {
        let pick = select::select(view, place.as_ref(), min_healthy);
        if !tiers.contains(&pick.tier) {
            tiers.push(pick.tier);
        }
        let start = select::next_rotation();
        let got: Vec<_> = pick.v4(start, max).collect();
        // The answer path's forms agree with the iterator: the count it
        // encodes without walking, and the walk it encodes from.
        assert_eq!(pick.count(Kind::V4, max), got.len(), "count of {got:?}");
        let mut each = Vec::new();
        pick.each_v4(start, max, |_, a| each.push(a));
        assert_eq!(each, got, "each_v4 against v4");
        let mut distinct = got.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), got.len(), "an address twice in {got:?}");
        for a in got {
            *counts.entry(a.to_string()).or_default() += 1;
        }
    }
    (counts, tiers)
}

/// Each address's share of answer slots is its weight's share, ±3%.
fn assert_shares(counts: &BTreeMap<String, usize>, weights: &[(&str, u64)]) {
    let slots: usize = counts.values().sum();
    let total: u64 = weights.iter().map(|(_, w)| w).sum();
    for (address, weight) in weights {
        let share = *counts.get(*address).unwrap_or(&0) as f64 / slots as f64;
        let expected = *weight as f64 / total as f64;
        assert!(
            (share - expected).abs() <= 0.03 * expected,
            "{address}: share {share:.4}, expected {expected:.4} ({counts:?})"
        );
    }
    for address in counts.keys() {
        assert!(
            weights.iter().any(|(a, w)| a == address && *w > 0),
            "{address} answered: {counts:?}"
        );
    }
}

const ANSWERS: usize = 100_000;

fn one_cluster() -> Fleet {
    Fleet::new(&[Place {
        name: "east-1",
        region: "us-east",
        provider: Some("aws"),
        cidr: "10.1.0.0/16",
        nodes: &[],
    }])
}

#[test]
fn shares_follow_weights() {
    let fleet = one_cluster();
    // Equal weights, two answers of five: the plain rotation.
    let equal: Vec<_> = (1..=5)
        .map(|i| endpoint(&format!("100.0.0.{i}"), 10, true, None))
        .collect();
    fleet.export("east-1", equal, &Policy::default());
    let snapshot = fleet.snapshot();
    assert!(!snapshot.service("web", "shop").unwrap().weighted);
    let (counts, _) = answers(&snapshot, None, 1, 2, ANSWERS);
    let weights: Vec<(String, u64)> = (1..=5).map(|i| (format!("100.0.0.{i}"), 10)).collect();
    let weights: Vec<(&str, u64)> = weights.iter().map(|(a, w)| (a.as_str(), *w)).collect();
    assert_shares(&counts, &weights);
    // Unequal weights, two and three answers of five.
    let unequal = [10, 20, 30, 40, 50];
    fleet.export(
        "east-1",
        unequal
            .iter()
            .enumerate()
            .map(|(i, w)| endpoint(&format!("100.0.0.{}", i + 1), *w, true, None))
            .collect(),
        &Policy::default(),
    );
    let snapshot = fleet.snapshot();
    assert!(snapshot.service("web", "shop").unwrap().weighted);
    let expected: Vec<(String, u64)> = unequal
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("100.0.0.{}", i + 1), u64::from(*w)))
        .collect();
    let expected: Vec<(&str, u64)> = expected.iter().map(|(a, w)| (a.as_str(), *w)).collect();
    for max in [2, 3] {
        let (counts, _) = answers(&snapshot, None, 1, max, ANSWERS);
        assert_eq!(
            counts.values().sum::<usize>(),
            ANSWERS * max,
            "{max} per answer"
        );
        assert_shares(&counts, &expected);
    }
}

#[test]
fn weight_zero_answers_only_when_nothing_else_is_healthy() {
    let fleet = one_cluster();
    let eps = |ready: bool| {
        vec![
            endpoint("100.0.0.1", 10, ready, None),
            endpoint("100.0.0.2", 10, ready, None),
            endpoint("100.0.0.3", 0, true, None),
        ]
    };
    fleet.export("east-1", eps(true), &Policy::default());
    let (counts, tiers) = answers(&fleet.snapshot(), Some("10.1.0.9"), 1, 8, 1000);
    assert_shares(&counts, &[("100.0.0.1", 1), ("100.0.0.2", 1)]);
    assert_eq!(tiers, [Tier::Cluster]);
    fleet.export("east-1", eps(false), &Policy::default());
    let (counts, tiers) = answers(&fleet.snapshot(), Some("10.1.0.9"), 1, 8, 1000);
    assert_eq!(counts.keys().collect::<Vec<_>>(), ["100.0.0.3"]);
    assert_eq!(tiers, [Tier::LastResort]);
}

fn two_clusters() -> Fleet {
    Fleet::new(&[
        Place {
            name: "east-1",
            region: "us-east",
            provider: Some("aws"),
            cidr: "10.1.0.0/16",
            nodes: &[],
        },
        Place {
            name: "east-2",
            region: "us-east",
            provider: Some("aws"),
            cidr: "10.2.0.0/16",
            nodes: &[],
        },
    ])
}

fn four(cluster: u8, ready: bool) -> Vec<Endpoint> {
    (1..=4)
        .map(|i| endpoint(&format!("100.{cluster}.0.{i}"), 10, ready, None))
        .collect()
}

fn drain(fleet: &Fleet, cluster: &str, percent: u8) {
    let mut policy = FleetPolicy::default();
    policy.clusters.insert(
        ClusterName::new(cluster).unwrap(),
        ClusterPolicy {
            drain_percent: percent,
            ..ClusterPolicy::default()
        },
    );
    fleet.registry.set_policy(Arc::new(policy));
}

#[test]
fn drains_halve_and_remove_a_clusters_share() {
    let fleet = two_clusters();
    fleet.export("east-1", four(1, true), &Policy::default());
    fleet.export("east-2", four(2, true), &Policy::default());
    let share = |counts: &BTreeMap<String, usize>, prefix: &str| {
        counts
            .iter()
            .filter(|(a, _)| a.starts_with(prefix))
            .map(|(_, n)| *n)
            .sum::<usize>() as f64
            / counts.values().sum::<usize>() as f64
    };
    let (before, _) = answers(&fleet.snapshot(), None, 1, 2, ANSWERS);
    assert!((share(&before, "100.1.") - 0.5).abs() < 0.015, "{before:?}");
    // 50%: east-1 weighs half what east-2 does: a third of the answers.
    drain(&fleet, "east-1", 50);
    let (half, _) = answers(&fleet.snapshot(), None, 1, 2, ANSWERS);
    let mut weights: Vec<(String, u64)> = (1..=4).map(|i| (format!("100.1.0.{i}"), 5)).collect();
    weights.extend((1..=4).map(|i| (format!("100.2.0.{i}"), 10)));
    let weights: Vec<(&str, u64)> = weights.iter().map(|(a, w)| (a.as_str(), *w)).collect();
    assert_shares(&half, &weights);
    // 100%: none, unless nothing else is healthy.
    drain(&fleet, "east-1", 100);
    let (gone, _) = answers(&fleet.snapshot(), None, 1, 2, 1000);
    assert_eq!(share(&gone, "100.1."), 0.0, "{gone:?}");
    fleet.export("east-2", four(2, false), &Policy::default());
    let (last, tiers) = answers(&fleet.snapshot(), None, 1, 8, 10);
    assert_eq!(share(&last, "100.1."), 1.0, "{last:?}");
    assert_eq!(tiers, [Tier::LastResort]);
    // Undrained: back to half.
    fleet.export("east-2", four(2, true), &Policy::default());
    drain(&fleet, "east-1", 0);
    let (after, _) = answers(&fleet.snapshot(), None, 1, 2, ANSWERS);
    assert!((share(&after, "100.1.") - 0.5).abs() < 0.015, "{after:?}");
}

/// eu-central, us-east, us-west, ap-south: one cluster each, each with
/// its own provider (us-west's is `gcp`).
fn four_regions() -> Fleet {
    Fleet::new(&[
        Place {
            name: "eu-1",
            region: "eu-central",
            provider: Some("p-eu"),
            cidr: "10.1.0.0/16",
            nodes: &[],
        },
        Place {
            name: "use-1",
            region: "us-east",
            provider: Some("p-use"),
            cidr: "10.2.0.0/16",
            nodes: &[],
        },
        Place {
            name: "usw-1",
            region: "us-west",
            provider: Some("gcp"),
            cidr: "10.3.0.0/16",
            nodes: &[],
        },
        Place {
            name: "ap-1",
            region: "ap-south",
            provider: Some("p-ap"),
            cidr: "10.4.0.0/16",
            nodes: &[],
        },
    ])
}

fn region(r: &str) -> Scope {
    Scope::Region(label(r))
}

/// The clusters (by address) answering an asker in cluster `c`.
fn served(fleet: &Fleet, c: u8, min_healthy: usize) -> (Vec<u8>, Tier) {
    let (counts, tiers) = answers(
        &fleet.snapshot(),
        Some(&format!("10.{c}.0.9")),
        min_healthy,
        8,
        20,
    );
    let mut clusters: Vec<u8> = counts
        .keys()
        .map(|a| a.split('.').nth(1).unwrap().parse().unwrap())
        .collect();
    clusters.dedup();
    assert_eq!(tiers.len(), 1, "{tiers:?}");
    (clusters, tiers[0])
}

#[test]
fn failover_order_from_each_region() {
    let fleet = four_regions();
    // Exported everywhere but the asker's own region would do; min-healthy
    // 5 puts every own tier short (each cluster has four).
    let names = ["eu-1", "use-1", "usw-1", "ap-1"];
    for c in 1..=4u8 {
        fleet.export(names[c as usize - 1], four(c, true), &Policy::default());
    }
    // Without an order: anywhere.
    assert_eq!(served(&fleet, 1, 5), (vec![1, 2, 3, 4], Tier::Any));
    // Region defaults from the policy file, one per asker region.
    let mut policy = FleetPolicy::default();
    for (asker, first) in [
        ("eu-central", "us-east"),
        ("us-east", "us-west"),
        ("us-west", "ap-south"),
        ("ap-south", "eu-central"),
    ] {
        policy.regions.insert(
            label(asker),
            RegionPolicy {
                failover: vec![region(first)].into(),
            },
        );
    }
    fleet.registry.set_policy(Arc::new(policy.clone()));
    // The step answers alone when it has min-healthy: 4 here.
    assert_eq!(served(&fleet, 1, 4), (vec![1], Tier::Cluster));
    for (asker, expected) in [(1u8, 2u8), (2, 3), (3, 4), (4, 1)] {
        // Own cluster drained away (last resort only): the order decides.
        let mut drained = policy.clone();
        drained.clusters.insert(
            ClusterName::new(names[asker as usize - 1]).unwrap(),
            ClusterPolicy {
                drain_percent: 100,
                ..ClusterPolicy::default()
            },
        );
        fleet.registry.set_policy(Arc::new(drained));
        assert_eq!(
            served(&fleet, asker, 1),
            (vec![expected], Tier::Failover),
            "asker in {asker}"
        );
    }
    // The service's annotation wins over the region default, and the
    // policy file's for the service over both.
    let mut drained = policy.clone();
    drained.clusters.insert(
        ClusterName::new("eu-1").unwrap(),
        ClusterPolicy {
            drain_percent: 100,
            ..ClusterPolicy::default()
        },
    );
    fleet.registry.set_policy(Arc::new(drained.clone()));
    let annotated = Policy {
        failover: vec![Scope::Provider(label("gcp")), region("us-east")].into(),
        ..Policy::default()
    };
    fleet.export("ap-1", four(4, true), &annotated);
    assert_eq!(served(&fleet, 1, 1), (vec![3], Tier::Failover));
    drained.services.insert(
        key(),
        ServicePolicy {
            failover: Some(vec![region("ap-south")].into()),
            ..ServicePolicy::default()
        },
    );
    fleet.registry.set_policy(Arc::new(drained));
    assert_eq!(served(&fleet, 1, 1), (vec![4], Tier::Failover));
}

#[test]
fn primary_pins_every_asker_and_fails_back() {
    let fleet = four_regions();
    let pinned = Policy {
        primary: Some(region("us-east")),
        min_healthy: Some(MinHealthy::Count(2)),
        ..Policy::default()
    };
    let names = ["eu-1", "use-1", "usw-1", "ap-1"];
    for c in 1..=4u8 {
        fleet.export(names[c as usize - 1], four(c, true), &pinned);
    }
    for asker in 1..=4 {
        assert_eq!(served(&fleet, asker, 1), (vec![2], Tier::Primary));
    }
    // us-east down to one healthy: below min-healthy 2, everyone nearest.
    let mut one = four(2, false);
    one[0].ready = true;
    one[0].serving = true;
    fleet.export("use-1", one, &pinned);
    assert_eq!(served(&fleet, 1, 1), (vec![1], Tier::Cluster));
    assert_eq!(served(&fleet, 3, 1), (vec![3], Tier::Cluster));
    // Recovered: fail-back.
    fleet.export("use-1", four(2, true), &pinned);
    assert_eq!(served(&fleet, 1, 1), (vec![2], Tier::Primary));
}

#[test]
fn per_service_min_healthy_count_and_percent() {
    let fleet = two_clusters();
    let with = |m: MinHealthy| Policy {
        min_healthy: Some(m),
        ..Policy::default()
    };
    // Two of four ready in east-1.
    let mut half = four(1, true);
    half[2].ready = false;
    half[2].serving = false;
    half[3].ready = false;
    half[3].serving = false;
    for (policy, stays) in [
        (with(MinHealthy::Count(2)), true),
        (with(MinHealthy::Count(3)), false),
        (with(MinHealthy::Percent(50)), true),
        (with(MinHealthy::Percent(60)), false),
    ] {
        fleet.export("east-1", half.clone(), &policy);
        fleet.export("east-2", four(2, true), &policy);
        // The server's --min-healthy (1) is overridden either way.
        let (clusters, tier) = served(&fleet, 1, 1);
        if stays {
            assert_eq!((clusters, tier), (vec![1], Tier::Cluster), "{policy:?}");
        } else {
            assert_eq!(tier, Tier::Zone, "{policy:?}");
            assert_eq!(clusters, vec![1, 2], "{policy:?}");
        }
    }
    // The policy file's threshold wins over the annotation.
    let mut policy = FleetPolicy::default();
    policy.services.insert(
        key(),
        ServicePolicy {
            min_healthy: Some(MinHealthy::Count(3)),
            ..ServicePolicy::default()
        },
    );
    fleet.registry.set_policy(Arc::new(policy));
    fleet.export("east-1", half, &with(MinHealthy::Count(1)));
    assert_eq!(served(&fleet, 1, 1).1, Tier::Zone);
}

#[test]
fn node_and_provider_tiers() {
    let fleet = Fleet::new(&[
        Place {
            name: "gcp-1",
            region: "r1",
            provider: Some("gcp"),
            cidr: "10.1.0.0/16",
            nodes: &[("node-a", "10.1.0.5"), ("node-b", "10.1.0.6")],
        },
        Place {
            name: "gcp-2",
            region: "r2",
            provider: Some("gcp"),
            cidr: "10.2.0.0/16",
            nodes: &[],
        },
        Place {
            name: "aws-1",
            region: "r3",
            provider: Some("aws"),
            cidr: "10.3.0.0/16",
            nodes: &[],
        },
    ]);
    let node = Policy {
        affinity: Affinity::Node,
        ..Policy::default()
    };
    fleet.export(
        "gcp-1",
        vec![
            endpoint("100.1.0.1", 10, true, Some("node-a")),
            endpoint("100.1.0.2", 10, true, Some("node-b")),
            endpoint("100.1.0.3", 10, true, Some("node-b")),
        ],
        &node,
    );
    fleet.export("gcp-2", four(2, true), &node);
    fleet.export("aws-1", four(3, true), &node);
    let from = |source: &str, min: usize| {
        let (counts, tiers) = answers(&fleet.snapshot(), Some(source), min, 8, 10);
        (counts.into_keys().collect::<Vec<_>>(), tiers)
    };
    // A node asking from its own address: its own node's endpoints.
    assert_eq!(
        from("10.1.0.5", 1),
        (vec!["100.1.0.1".into()], vec![Tier::Node])
    );
    assert_eq!(
        from("10.1.0.6", 1),
        (
            vec!["100.1.0.2".into(), "100.1.0.3".into()],
            vec![Tier::Node]
        )
    );
    // A pod of the cluster: its cluster.
    assert_eq!(from("10.1.7.7", 1).1, vec![Tier::Cluster]);
    // Short of min-healthy in the region: the provider (gcp-2), not aws.
    let (addresses, tiers) = from("10.1.7.7", 5);
    assert_eq!(tiers, vec![Tier::Provider]);
    assert!(
        addresses.iter().all(|a| !a.starts_with("100.3.")),
        "{addresses:?}"
    );
    assert_eq!(addresses.len(), 7);
    // The policy file places aws-1 with gcp: it joins the provider tier.
    let mut policy = FleetPolicy::default();
    policy.clusters.insert(
        ClusterName::new("aws-1").unwrap(),
        ClusterPolicy {
            provider: Some(label("gcp")),
            ..ClusterPolicy::default()
        },
    );
    fleet.registry.set_policy(Arc::new(policy));
    let (addresses, tiers) = from("10.1.7.7", 9);
    assert_eq!(tiers, vec![Tier::Provider]);
    assert_eq!(addresses.len(), 11);
    // Without affinity node, a node asking is a pod like any other.
    fleet.export(
        "gcp-1",
        vec![
            endpoint("100.1.0.1", 10, true, Some("node-a")),
            endpoint("100.1.0.2", 10, true, Some("node-b")),
        ],
        &Policy::default(),
    );
    assert_eq!(from("10.1.0.5", 1).1, vec![Tier::Cluster]);
}

/// A query for `web.shop.global` from `source`, with an ECS subnet.
fn query(subnet: Option<(&str, u8)>) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Query, OpCode::Query);
    m.queries.push(Query::query(
        Name::from_ascii("web.shop.global.").unwrap(),
        RecordType::A,
    ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some((address, prefix)) = subnet {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                address.parse::<IpAddr>().unwrap(),
                prefix,
                0,
            )));
    }
    m.edns = Some(edns);
    m.to_vec().unwrap()
}

#[test]
fn export_to_answers_outsiders_nxdomain() {
    let fleet = four_regions();
    let only = Policy {
        export_to: vec![
            Scope::Cluster(ClusterName::new("eu-1").unwrap()),
            region("us-west"),
        ]
        .into(),
        ..Policy::default()
    };
    fleet.export("use-1", four(2, true), &only);
    let snapshot = fleet.snapshot();
    // The askers' resolver, 127.0.0.1, is trusted with ECS.
    let zone = Authority::new(vec![Domain::parse("global").unwrap()], 5, 5, 8, 1)
        .unwrap()
        .with_ecs_trusted(vec!["127.0.0.1/32".parse().unwrap()]);
    let ask = |source: &str, subnet: Option<(&str, u8)>| {
        let (reply, _) = authority::respond(
            &snapshot,
            &zone,
            &query(subnet),
            source.parse().unwrap(),
            Transport::Udp,
        )
        .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        let scope = m
            .edns
            .as_ref()
            .and_then(|e| match e.option(EdnsCode::Subnet) {
                Some(EdnsOption::Subnet(s)) => Some(s.scope_prefix()),
                _ => None,
            });
        (m.metadata.response_code, m.answers.len(), scope)
    };
    // Listed: eu-1 by name, usw-1 by region.
    assert_eq!(ask("10.1.0.9", None), (ResponseCode::NoError, 4, None));
    assert_eq!(ask("10.3.0.9", None), (ResponseCode::NoError, 4, None));
    // Outsiders, and unknown askers: NXDOMAIN, even the exporting cluster's own.
    for outsider in ["10.2.0.9", "10.4.0.9", "192.0.2.1"] {
        assert_eq!(
            ask(outsider, None),
            (ResponseCode::NXDomain, 0, None),
            "{outsider}"
        );
    }
    // Through a resolver with ECS: the scope is the subnet's prefix, never 0.
    assert_eq!(
        ask("127.0.0.1", Some(("10.4.0.0", 24))),
        (ResponseCode::NXDomain, 0, Some(24))
    );
    assert_eq!(
        ask("127.0.0.1", Some(("10.1.0.0", 24))),
        (ResponseCode::NoError, 4, Some(24))
    );
    // The same subnet from a source not trusted with ECS, of no cluster:
    // the source's place must be inside too.
    assert_eq!(
        ask("127.0.0.2", Some(("10.1.0.0", 24))),
        (ResponseCode::NXDomain, 0, Some(24))
    );
}

/// The demo's fleet and migration (README "a migration in steps"): two
/// endpoints in east-1, two in east-2, one in west-1, `--max-answers 1`,
/// east-1 drained 0, 10, 50 and 100%. The origin comes from the real
/// rotation (`next_rotation`, as each server thread steps it from 0 and
/// from elsewhere), so shares over 1,000 answers are what `dig` counts.
#[test]
fn demo_drain_shares_through_the_real_rotation() {
    let fleet = Fleet::new(&[
        Place {
            name: "east-1",
            region: "us-east",
            provider: None,
            cidr: "10.1.0.0/16",
            nodes: &[],
        },
        Place {
            name: "east-2",
            region: "us-east",
            provider: None,
            cidr: "10.2.0.0/16",
            nodes: &[],
        },
        Place {
            name: "west-1",
            region: "us-west",
            provider: None,
            cidr: "10.3.0.0/16",
            nodes: &[],
        },
    ]);
    for (cluster, c, n) in [("east-1", 1, 2), ("east-2", 2, 2), ("west-1", 3, 1)] {
        let eps = (1..=n)
            .map(|i| endpoint(&format!("100.{c}.0.{i}"), 10, true, None))
            .collect();
        fleet.export(cluster, eps, &Policy::default());
    }
    // Expected weights per cluster at each drain of east-1.
    for (percent, weights) in [
        (0, [20.0, 20.0, 10.0]),
        (10, [18.0, 20.0, 10.0]),
        (50, [10.0, 20.0, 10.0]),
        (100, [0.0, 20.0, 10.0]),
    ] {
        drain(&fleet, "east-1", percent);
        let snapshot = fleet.snapshot();
        let total: f64 = weights.iter().sum();
        for (from, n) in [(0, 1000), (0, ANSWERS), (0x1234_5678_9abc_def0, 1000)] {
            select::set_rotation(from);
            let (counts, _) = answers(&snapshot, None, 1, 1, n);
            for (c, weight) in weights.iter().enumerate() {
                let got = counts
                    .iter()
                    .filter(|(a, _)| a.starts_with(&format!("100.{}.", c + 1)))
                    .map(|(_, n)| *n)
                    .sum::<usize>() as f64;
                let expected = weight / total * n as f64;
                assert!(
                    (got - expected).abs() <= 0.03 * n as f64 / 3.0 + 0.03 * expected,
                    "drain {percent}%, {n} answers from {from:#x}: cluster {} got {got}, \
                     expected {expected} ({counts:?})",
                    c + 1
                );
            }
        }
    }
}

/// Each item's probability of being in an answer of `k` under PPS with
/// certainty items: every item heavier than its share of the points
/// left is in every answer; the rest in proportion to weight.
fn pps_with_certainty(weights: &[u64], k: usize) -> Vec<f64> {
    let mut certain = vec![false; weights.len()];
    loop {
        let points = (k - certain.iter().filter(|c| **c).count()) as f64;
        let light: u64 = weights
            .iter()
            .zip(&certain)
            .filter(|(_, c)| !**c)
            .map(|(w, _)| w)
            .sum();
        let mut found = false;
        for (w, c) in weights.iter().zip(certain.iter_mut()) {
            if !*c && *w as f64 * points > light as f64 {
                *c = true;
                found = true;
            }
        }
        if !found {
            return weights
                .iter()
                .zip(&certain)
                .map(|(w, c)| {
                    if *c {
                        1.0
                    } else {
                        *w as f64 * points / light as f64
                    }
                })
                .collect();
        }
    }
}

/// The review's cases with items heavier than their share of one point
/// (a VM among pods; one very heavy target; fewer targets than answers):
/// every answer carries min(n, k) distinct targets, and each target is in
/// answers as often as PPS with certainty prescribes, ±3%. Asked from
/// nowhere (the service-wide chain) and from inside the cluster (its own
/// segment): both lists must know their heaviest target, or the sample
/// skips the search for certain items.
#[test]
fn heavy_targets_are_certain_and_the_rest_follow_their_weights() {
    let fleet = one_cluster();
    let cases: [(Vec<u64>, usize); 3] = [
        (std::iter::once(100).chain([10; 9]).collect(), 8),
        (std::iter::once(1000).chain([10; 20]).collect(), 5),
        (vec![10, 10, 10, 10, 50], 8),
    ];
    for (weights, k) in cases {
        let eps = weights
            .iter()
            .enumerate()
            .map(|(i, w)| endpoint(&format!("100.0.0.{}", i + 1), *w as u32, true, None))
            .collect();
        fleet.export("east-1", eps, &Policy::default());
        for asker in [None, Some("10.1.0.9")] {
            let (counts, _) = answers(&fleet.snapshot(), asker, 1, k, ANSWERS);
            let per_answer = weights.len().min(k);
            assert_eq!(
                counts.values().sum::<usize>(),
                ANSWERS * per_answer,
                "{weights:?}, {k} per answer, asker {asker:?}: short answers ({counts:?})"
            );
            for (i, expected) in pps_with_certainty(&weights, k).iter().enumerate() {
                let got = *counts.get(&format!("100.0.0.{}", i + 1)).unwrap_or(&0) as f64
                    / ANSWERS as f64;
                assert!(
                    (got - expected).abs() <= 0.03 * expected,
                    "{weights:?}, {k} per answer, asker {asker:?}: 100.0.0.{} in {got:.4} of \
                     answers, expected {expected:.4} ({counts:?})",
                    i + 1
                );
            }
        }
    }
}

/// A weighted answer asked for more addresses than a sample has points
/// (`--max-answers` above 64, fewer than the service has) holds 64, and
/// the count the encoders size the reply by (without building the
/// sample) agrees with the walk they write ([`answers`] checks both).
#[test]
fn weighted_answers_past_the_sample_bound_are_counted_as_walked() {
    let fleet = one_cluster();
    // 100 endpoints weighing 10 to 12: none is certain, so the count
    // is taken without a sample.
    let eps = (0..100)
        .map(|i| {
            endpoint(
                &format!("100.0.{}.{}", i / 200, i % 200 + 1),
                10 + i % 3,
                true,
                None,
            )
        })
        .collect();
    fleet.export("east-1", eps, &Policy::default());
    let snapshot = fleet.snapshot();
    assert!(snapshot.service("web", "shop").unwrap().weighted);
    for max in [8, 64, 65, 80, 100, 101] {
        let (counts, _) = answers(&snapshot, None, 1, max, 200);
        let per_answer = if max >= 100 { 100 } else { max.min(64) };
        assert_eq!(
            counts.values().sum::<usize>(),
            200 * per_answer,
            "max {max}"
        );
    }
}

/// The asker's cluster has a positive-weight endpoint that is not ready
/// and a ready weight-0 one: the weight-0 one is no "cluster" tier while
/// the next tier has healthy endpoints of positive weight.
#[test]
fn weight_zero_in_the_askers_cluster_is_no_cluster_tier() {
    let fleet = two_clusters();
    fleet.export(
        "east-1",
        vec![
            endpoint("100.1.0.1", 10, false, None),
            endpoint("100.1.0.2", 0, true, None),
        ],
        &Policy::default(),
    );
    fleet.export("east-2", four(2, true), &Policy::default());
    let (counts, tiers) = answers(&fleet.snapshot(), Some("10.1.0.9"), 1, 8, 1000);
    assert!(
        counts.keys().all(|a| a.starts_with("100.2.")),
        "{counts:?} ({tiers:?})"
    );
    assert!(!tiers.contains(&Tier::Cluster), "{tiers:?}");
}

/// A service's traffic policy is merged field by field over its
/// exporting clusters: one cluster's silence (or another field) never
/// drops another's export-to, and each other field comes from the first
/// cluster (by name) that sets it, disagreements flagged.
#[test]
fn traffic_policy_merges_field_by_field() {
    let fleet = four_regions();
    // ap-1 sorts first and sets only min-healthy and a primary.
    let first = Policy {
        min_healthy: Some(MinHealthy::Count(2)),
        primary: Some(region("ap-south")),
        ..Policy::default()
    };
    fleet.export("ap-1", four(4, true), &first);
    let restricted = Policy {
        export_to: vec![region("us-west"), region("ap-south")].into(),
        primary: Some(region("us-west")),
        ..Policy::default()
    };
    fleet.export("usw-1", four(3, true), &restricted);
    let snapshot = fleet.snapshot();
    let view = snapshot.service("web", "shop").unwrap();
    assert_eq!(view.min_healthy, Some(MinHealthy::Count(2)));
    assert!(view.policy_disagrees);
    let zone = Authority::new(vec![Domain::parse("global").unwrap()], 5, 5, 8, 1).unwrap();
    let ask = |source: &str| {
        let (reply, _) = authority::respond(
            &snapshot,
            &zone,
            &query(None),
            source.parse().unwrap(),
            Transport::Udp,
        )
        .unwrap();
        Message::from_vec(&reply).unwrap().metadata.response_code
    };
    // usw-1's export-to holds though ap-1 (first by name) sets none.
    assert_eq!(ask("10.1.0.9"), ResponseCode::NXDomain);
    assert_eq!(ask("10.2.0.9"), ResponseCode::NXDomain);
    assert_eq!(ask("10.3.0.9"), ResponseCode::NoError);
    assert_eq!(ask("10.4.0.9"), ResponseCode::NoError);
}

/// A region's default failover order holds for askers of a region whose
/// first cluster registers after the policy and the service's view: the
/// view is not rebuilt then (the service's exports did not change), so
/// the order must already be there under the id that region gets.
#[test]
fn region_default_holds_for_a_region_first_seen_later() {
    let fleet = Fleet::new(&[
        Place {
            name: "use-1",
            region: "us-east",
            provider: None,
            cidr: "10.2.0.0/16",
            nodes: &[],
        },
        Place {
            name: "usw-1",
            region: "us-west",
            provider: None,
            cidr: "10.3.0.0/16",
            nodes: &[],
        },
    ]);
    fleet.export("use-1", four(2, true), &Policy::default());
    fleet.export("usw-1", four(3, true), &Policy::default());
    let mut policy = FleetPolicy::default();
    policy.regions.insert(
        label("eu-central"),
        RegionPolicy {
            failover: vec![region("us-west"), region("us-east")].into(),
        },
    );
    fleet.registry.set_policy(Arc::new(policy));
    // eu-central's first cluster, exporting nothing.
    let (session, refused) = fleet.registry.hello(
        fixtures::located_cluster("eu-1", "eu-central", "eu-central-a", "10.1.0.0/16"),
        usize::MAX,
    );
    assert!(refused.is_empty());
    fleet
        .registry
        .apply_snapshot(&session, vec![], &Default::default())
        .unwrap();
    assert_eq!(served(&fleet, 1, 1), (vec![3], Tier::Failover));
}

/// `failover: []` for the service in the policy file means no order at
/// all: it cancels the asker region's default (and the annotation's).
#[test]
fn explicit_empty_failover_cancels_the_region_default() {
    let fleet = four_regions();
    let names = ["eu-1", "use-1", "usw-1", "ap-1"];
    for c in 1..=4u8 {
        fleet.export(names[c as usize - 1], four(c, true), &Policy::default());
    }
    let mut policy = FleetPolicy::default();
    policy.regions.insert(
        label("eu-central"),
        RegionPolicy {
            failover: vec![region("us-east")].into(),
        },
    );
    fleet.registry.set_policy(Arc::new(policy.clone()));
    // min-healthy 5: eu-1 and the default (us-east) are both short.
    assert_eq!(served(&fleet, 1, 4), (vec![1], Tier::Cluster));
    assert_eq!(served(&fleet, 1, 5), (vec![1, 2, 3, 4], Tier::Any));
    // eu-1 drained away: the region default decides.
    policy.clusters.insert(
        ClusterName::new("eu-1").unwrap(),
        ClusterPolicy {
            drain_percent: 100,
            ..ClusterPolicy::default()
        },
    );
    fleet.registry.set_policy(Arc::new(policy.clone()));
    assert_eq!(served(&fleet, 1, 1), (vec![2], Tier::Failover));
    policy.services.insert(
        key(),
        ServicePolicy {
            failover: Some(Vec::new().into()),
            ..ServicePolicy::default()
        },
    );
    fleet.registry.set_policy(Arc::new(policy));
    assert_eq!(served(&fleet, 1, 1), (vec![2, 3, 4], Tier::Any));
}

/// A ClusterIp export counts for min-healthy as the endpoints of positive
/// weight behind its cluster IP, like an endpoints export: a percentage
/// is of those endpoints (healthy or not) and the threshold counts the
/// healthy ones, not one per cluster.
#[test]
fn min_healthy_counts_a_cluster_ips_endpoints() {
    let fleet = two_clusters();
    let behind = |cluster: u8, ready: usize| -> Vec<Endpoint> {
        (1..=4)
            .map(|i| endpoint(&format!("100.{cluster}.0.{i}"), 10, i <= ready, None))
            .collect()
    };
    let export_ip = |cluster: u8, ready: usize, min_healthy: MinHealthy| {
        let export = ServiceExport::new(
            key(),
            vec![fixtures::http_port()],
            Mode::ClusterIp,
            vec![format!("172.16.{cluster}.1").parse().unwrap()],
            behind(cluster, ready),
            Policy {
                min_healthy: Some(min_healthy),
                ..Policy::default()
            },
        )
        .unwrap();
        fleet
            .registry
            .apply_snapshot(
                &fleet.sessions[&format!("east-{cluster}")],
                vec![export],
                &Default::default(),
            )
            .unwrap();
    };
    let tier = |fleet: &Fleet| {
        let (counts, tiers) = answers(&fleet.snapshot(), Some("10.1.0.9"), 1, 8, 10);
        assert_eq!(tiers.len(), 1, "{tiers:?}");
        (counts.into_keys().collect::<Vec<_>>(), tiers[0])
    };
    let own = vec!["172.16.1.1".to_owned()];
    let both = vec!["172.16.1.1".to_owned(), "172.16.2.1".to_owned()];
    export_ip(2, 4, MinHealthy::Percent(50));
    // 50%: one of east-1's four endpoints is short of two; its zone
    // (both clusters: five of eight) is not.
    export_ip(1, 1, MinHealthy::Percent(50));
    assert_eq!(tier(&fleet), (both.clone(), Tier::Zone));
    export_ip(1, 2, MinHealthy::Percent(50));
    assert_eq!(tier(&fleet), (own.clone(), Tier::Cluster));
    // None ready: still four exported, so the zone needs four of eight.
    export_ip(1, 0, MinHealthy::Percent(50));
    assert_eq!(tier(&fleet), (vec!["172.16.2.1".to_owned()], Tier::Zone));
    // A count is of endpoints too: three ready behind east-1's IP do.
    export_ip(1, 3, MinHealthy::Count(3));
    assert_eq!(tier(&fleet), (own, Tier::Cluster));
    export_ip(1, 2, MinHealthy::Count(3));
    assert_eq!(tier(&fleet), (both, Tier::Zone));
}

/// A Hello that changes only the cluster's node list rebuilds the views
/// of its services with the node tier (their runs are keyed by node) and
/// leaves the others' views as they were (the same `Arc`); a placement
/// change rebuilds them all.
#[test]
fn a_node_list_change_rebuilds_only_node_tier_services() {
    let registry = Registry::new(5, false, Arc::new(Metrics::new()));
    let announce = |nodes: &[(&str, &str)], zone: &str| {
        let (session, refused) = registry.hello(
            Cluster {
                nodes: fixtures::nodes(nodes),
                ..fixtures::located_cluster("east-1", "us-east", zone, "10.1.0.0/16")
            },
            usize::MAX,
        );
        assert!(refused.is_empty());
        session
    };
    let session = announce(&[("n1", "10.1.255.1")], "us-east-a");
    let by_node = export(
        vec![
            endpoint("100.1.0.1", 10, true, Some("n1")),
            endpoint("100.1.0.2", 10, true, Some("n2")),
        ],
        Policy {
            affinity: Affinity::Node,
            ..Policy::default()
        },
    );
    let plain = fixtures::http_export(
        fixtures::key("shop", "plain"),
        vec![endpoint("100.1.1.1", 10, true, Some("n1"))],
        Policy::default(),
    );
    registry
        .apply_snapshot(&session, vec![by_node, plain], &Default::default())
        .unwrap();
    let before = registry.snapshot().clone();
    let view = |s: &Snapshot, name: &str| s.service(name, "shop").unwrap().clone();
    // n2 joins: only `web` (affinity node) is rebuilt, and n2 asks from
    // its node tier.
    announce(&[("n1", "10.1.255.1"), ("n2", "10.1.255.2")], "us-east-a");
    let after = registry.snapshot().clone();
    assert!(Arc::ptr_eq(&view(&before, "plain"), &view(&after, "plain")));
    assert!(!Arc::ptr_eq(&view(&before, "web"), &view(&after, "web")));
    let (counts, tiers) = answers(&after, Some("10.1.255.2"), 1, 8, 10);
    assert_eq!(tiers, [Tier::Node]);
    assert_eq!(counts.into_keys().collect::<Vec<_>>(), ["100.1.0.2"]);
    // A new zone: every service is rebuilt.
    announce(&[("n1", "10.1.255.1"), ("n2", "10.1.255.2")], "us-east-b");
    let moved = registry.snapshot().clone();
    assert!(!Arc::ptr_eq(&view(&after, "plain"), &view(&moved, "plain")));
    assert!(!Arc::ptr_eq(&view(&after, "web"), &view(&moved, "web")));
}
