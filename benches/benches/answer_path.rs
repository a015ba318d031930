//! Micro-benchmarks of the answer path's pieces: name parsing, locality
//! lookup, answer selection (with and without locality), response
//! encoding (the full handler and the UDP fast path), and applying a
//! one-service Delta to a large registry; and a UDP receive batch of
//! queries over the load benchmark's fleet (cold views).
//!
//! `cargo bench -p meshdns-benches --bench answer_path`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use meshdns::authority::{self, Authority, Transport};
use meshdns::fast;
use meshdns::qname::{self, Domain};
use meshdns::select;
use meshdns_benches::shape::Shape;
use meshdns_benches::{Fleet, asker, export, service_key};

fn query_bytes(name: &str) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    m.to_vec().expect("encode")
}

/// Up to 8 addresses of a pick, walked as the answer path walks them
/// (`Pick::each_v4`, rotated by a fixed offset): how many.
fn walk_v4(pick: &select::Pick<'_>) -> usize {
    let mut n = 0;
    pick.each_v4(7, 8, |_, _| n += 1);
    n
}

fn benches(c: &mut Criterion) {
    // 1,000 clusters × 10 services × 10 endpoints: every service is
    // exported by all 1,000 clusters (10,000 endpoints a service).
    let fleet = Fleet::new(1_000, 10, 10);
    let snapshot = fleet.registry.snapshot();
    let domains = vec![Domain::parse("global").expect("domain")];
    let key = service_key(3);
    let (svc, ns) = (key.name.to_string(), key.namespace.to_string());
    let name = format!("{svc}.{ns}.global");
    let located: IpAddr = asker(517);
    let unknown: IpAddr = "192.0.2.1".parse().expect("ip");

    c.bench_function("qname_parse", |b| {
        let labels: Vec<&str> = name.split('.').collect();
        b.iter(|| black_box(qname::parse(black_box(&labels), &domains)))
    });
    c.bench_function("locality_lookup_1000_clusters", |b| {
        b.iter(|| black_box(snapshot.locality.lookup(black_box(located), 128)))
    });
    // The reference: find the service and take its answer with no preference.
    c.bench_function("select_without_locality", |b| {
        b.iter(|| {
            let view = snapshot
                .service(black_box(&svc), black_box(&ns))
                .expect("service");
            let pick = select::select(view, None, 1);
            black_box(walk_v4(&pick))
        })
    });
    // The same with the asker placed and its tier chosen.
    c.bench_function("select_with_locality", |b| {
        b.iter(|| {
            let place = snapshot.locality.lookup(black_box(located), 128);
            let view = snapshot
                .service(black_box(&svc), black_box(&ns))
                .expect("service");
            let pick = select::select(view, place.as_ref(), 1);
            black_box(walk_v4(&pick))
        })
    });
    let zone = Authority::new(domains.clone(), 5, 5, 8, 1).expect("zone");
    let packet = query_bytes(&name);
    c.bench_function("respond_unknown_asker", |b| {
        b.iter(|| {
            black_box(authority::respond(
                &snapshot,
                &zone,
                black_box(&packet),
                unknown,
                Transport::Udp,
            ))
        })
    });
    c.bench_function("respond_located_asker", |b| {
        b.iter(|| {
            black_box(authority::respond(
                &snapshot,
                &zone,
                black_box(&packet),
                located,
                Transport::Udp,
            ))
        })
    });
    // The UDP fast path: the same query, answered without decoding it.
    let mut out = Vec::with_capacity(512);
    c.bench_function("fast_path_unknown_asker", |b| {
        b.iter(|| {
            black_box(fast::answer(
                &snapshot,
                &zone,
                black_box(&packet),
                unknown,
                &mut out,
            ))
        })
    });
    c.bench_function("fast_path_located_asker", |b| {
        b.iter(|| {
            black_box(fast::answer(
                &snapshot,
                &zone,
                black_box(&packet),
                located,
                &mut out,
            ))
        })
    });
    // What a worker records per answer besides the reply: the (qtype,
    // rcode) counter, latency, the tier and each serving cluster (atomics).
    let metrics = meshdns::metrics::Metrics::new();
    metrics.served.reserve(snapshot.locality.max_id());
    let outcome = fast::answer(&snapshot, &zone, &packet, unknown, &mut out).expect("fast path");
    c.bench_function("metrics_answered", |b| {
        b.iter(|| {
            metrics.answered(
                black_box(&outcome),
                black_box(std::time::Duration::from_micros(3)),
            )
        })
    });
    let missing = query_bytes(&format!("nope.{ns}.global"));
    c.bench_function("fast_path_nxdomain", |b| {
        b.iter(|| {
            black_box(fast::answer(
                &snapshot,
                &zone,
                black_box(&missing),
                located,
                &mut out,
            ))
        })
    });
    // DNS Cookies: the query with a client cookie (a fresh server cookie
    // is made for every reply: the dearest case) through the fast path
    // and through the full handler, which it would go to otherwise.
    let cookie_packet = {
        let mut m = Message::from_vec(&packet).expect("decode");
        let mut edns = hickory_proto::op::Edns::new();
        edns.set_max_payload(1232);
        edns.options_mut()
            .insert(hickory_proto::rr::rdata::opt::EdnsOption::Unknown(
                10,
                vec![7; 8],
            ));
        m.edns = Some(edns);
        m.to_vec().expect("encode")
    };
    c.bench_function("fast_path_cookie", |b| {
        b.iter(|| {
            black_box(fast::answer(
                &snapshot,
                &zone,
                black_box(&cookie_packet),
                located,
                &mut out,
            ))
        })
    });
    c.bench_function("respond_cookie", |b| {
        b.iter(|| {
            black_box(authority::respond(
                &snapshot,
                &zone,
                black_box(&cookie_packet),
                located,
                Transport::Udp,
            ))
        })
    });
    // The same queries with a traffic policy in force: every cluster's
    // weight scaled differently (so answers are weighted samples) and a
    // failover order for every region. Measured in the same run as the
    // plain ones above (benches/README.md: the budget is 100 ns).
    fleet
        .registry
        .set_policy(std::sync::Arc::new(weighted_policy(fleet.clusters)));
    let weighted = fleet.registry.snapshot();
    assert!(weighted.service(&svc, &ns).expect("service").weighted);
    c.bench_function("select_with_locality_weighted", |b| {
        b.iter(|| {
            let place = weighted.locality.lookup(black_box(located), 128);
            let view = weighted
                .service(black_box(&svc), black_box(&ns))
                .expect("service");
            let pick = select::select(view, place.as_ref(), 1);
            black_box(walk_v4(&pick))
        })
    });
    // Every own tier short (min-healthy 200 of 10 a cluster): the region
    // (100 clusters) answers, a weighted sample of 8 from 1,000 targets.
    c.bench_function("select_spill_weighted", |b| {
        b.iter(|| {
            let place = weighted.locality.lookup(black_box(located), 128);
            let view = weighted
                .service(black_box(&svc), black_box(&ns))
                .expect("service");
            let pick = select::select(view, place.as_ref(), 200);
            black_box(walk_v4(&pick))
        })
    });
    c.bench_function("fast_path_located_asker_weighted", |b| {
        b.iter(|| {
            black_box(fast::answer(
                &weighted,
                &zone,
                black_box(&packet),
                located,
                &mut out,
            ))
        })
    });
    fleet.registry.set_policy(std::sync::Arc::new(
        meshdns_proto::model::FleetPolicy::default(),
    ));
    // RRL's per-reply check: one hash, one load, one compare-and-swap.
    let limiter = meshdns::rrl::RateLimiter::new(1_000_000, 2);
    c.bench_function("rrl_allow", |b| {
        b.iter(|| black_box(limiter.allow(black_box(located), limiter.now())))
    });
    let mut version = 0;
    c.bench_function("delta_apply_one_service_1000_clusters", |b| {
        b.iter(|| {
            version += 1;
            let update = export(42, 3, fleet.endpoints, version);
            fleet
                .registry
                .apply_delta(&fleet.sessions[42], vec![update], Default::default())
                .expect("applied");
        })
    });
}

/// Cluster weights of 50% to 200% by cluster, and a failover order for
/// every region (the next region, then the one after).
fn weighted_policy(clusters: usize) -> meshdns_proto::model::FleetPolicy {
    use meshdns_proto::model::{
        ClusterName, ClusterPolicy, FleetPolicy, LabelValue, RegionPolicy, Scope,
    };
    let mut policy = FleetPolicy::default();
    for c in 0..clusters {
        policy.clusters.insert(
            ClusterName::new(&meshdns_benches::cluster_name(c)).expect("valid"),
            ClusterPolicy {
                weight_percent: 50 + 50 * (c % 4) as u32,
                ..ClusterPolicy::default()
            },
        );
    }
    let region = |r: usize| LabelValue::new(&format!("region-{}", r % 10)).expect("valid");
    for r in 0..10 {
        policy.regions.insert(
            region(r),
            RegionPolicy {
                failover: vec![Scope::Region(region(r + 1)), Scope::Region(region(r + 2))].into(),
            },
        );
    }
    policy
}

/// The load benchmark's fleet (`Shape::LOAD`: 10,000 services over 100
/// clusters) in process, and a ring of 4,096 A queries as `load.sh` asks
/// them (services spread over the fleet, one in twenty nonexistent, from
/// four clusters' client CIDRs): a batch of 32 from the ring, answered
/// one at a time as a UDP worker does. Each batch asks services the last
/// few did not, so the views are as cold as under load.
fn batches(c: &mut Criterion) {
    const RING: usize = 4_096;
    const BATCH: usize = 32;
    let shape = Shape::LOAD;
    let registry = meshdns::registry::Registry::new(
        5,
        false,
        std::sync::Arc::new(meshdns::metrics::Metrics::new()),
    );
    for set in shape.export_sets() {
        let (session, _) = registry.hello(set.cluster, usize::MAX);
        let services = set.services.values().map(|e| (**e).clone()).collect();
        registry
            .apply_snapshot(&session, services, &Default::default())
            .expect("applied");
    }
    let snapshot = registry.snapshot();
    let zone =
        Authority::new(vec![Domain::parse("global").expect("domain")], 5, 5, 8, 1).expect("zone");
    // A stride coprime with the service count walks the whole fleet.
    let packets: Vec<(Vec<u8>, IpAddr)> = (0..RING)
        .map(|i| {
            let s = i * 7_919 % shape.services;
            let name = if i % 20 == 19 {
                format!("nope-{s}.ns-{}.global", s % 100)
            } else {
                shape.name(s)
            };
            (query_bytes(&name), IpAddr::V4(shape.asker(i % 4 * 25)))
        })
        .collect();
    let queries: Vec<(&[u8], IpAddr)> = packets.iter().map(|(p, a)| (p.as_slice(), *a)).collect();
    let mut outs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut answered = vec![None; BATCH];
    let mut at = 0;
    c.bench_function("batch_of_32_one_at_a_time", |b| {
        b.iter(|| {
            at = (at + BATCH) % RING;
            for (i, &(packet, source)) in queries[at..at + BATCH].iter().enumerate() {
                answered[i] = authority::answer_into(
                    &snapshot,
                    &zone,
                    packet,
                    source,
                    Transport::Udp,
                    &mut outs[i],
                );
            }
            black_box(&answered);
        })
    });
}

criterion_group! {
    name = answer_path;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = benches, batches
}
criterion_main!(answer_path);
