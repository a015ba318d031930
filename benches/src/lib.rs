//! Synthetic fleets for the benchmarks: a real [`Registry`] filled through
//! its write API, as Export streams fill it; and [`shape::Shape`], the
//! fleets the load and scale benchmarks push over gRPC.

pub mod percentiles;
pub mod publishers;
pub mod shape;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use meshdns::metrics::Metrics;
use meshdns::registry::{Registry, Session};
use meshdns_proto::model::{
    Cluster, ClusterName, Endpoint, LabelValue, Namespace, Policy, ServiceExport, ServiceKey,
    ServiceName,
};

/// A fleet of `clusters` clusters (10 regions, 3 zones each), each
/// exporting the same `services` services with `endpoints` endpoints.
/// Cluster `c` announces `10.<c/256>.<c%256>.0/24`; its endpoints live in
/// `100.<c/256>.<c%256>.0/24`-style space.
#[derive(Debug)]
pub struct Fleet {
    pub registry: Arc<Registry>,
    pub sessions: Vec<Session>,
    pub clusters: usize,
    pub services: usize,
    pub endpoints: usize,
}

pub fn cluster_name(c: usize) -> String {
    format!("cluster-{c}")
}

pub fn service_key(s: usize) -> ServiceKey {
    ServiceKey {
        namespace: Namespace::new(&format!("ns-{}", s % 10)).expect("valid"),
        name: ServiceName::new(&format!("svc-{s}")).expect("valid"),
    }
}

/// An address inside cluster `c`'s client CIDR.
pub fn asker(c: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, (c / 256) as u8, (c % 256) as u8, 7))
}

/// Endpoint `e` of service `s` in cluster `c`: unique across the fleet.
pub fn endpoint_address(c: usize, s: usize, e: usize) -> IpAddr {
    let n = ((c * 1_000 + s) * 100 + e) as u32;
    IpAddr::V4(Ipv4Addr::from(0x6400_0000 + n))
}

pub fn export(c: usize, s: usize, endpoints: usize, version: usize) -> ServiceExport {
    let endpoints = (0..endpoints)
        .map(|e| {
            let mut ep = Endpoint::ready(endpoint_address(c, s, e));
            // A version bump moves one endpoint, as a rollout would.
            ep.ready = !(e == 0 && version % 2 == 1);
            ep
        })
        .collect();
    http_export(service_key(s), endpoints)
}

/// A service of endpoints on TCP port 80, default policy.
pub fn http_export(key: ServiceKey, endpoints: Vec<Endpoint>) -> ServiceExport {
    meshdns_proto::fixtures::http_export(key, endpoints, Policy::default())
}

impl Fleet {
    pub fn new(clusters: usize, services: usize, endpoints: usize) -> Self {
        let registry = Arc::new(Registry::new(5, false, Arc::new(Metrics::new())));
        let mut sessions = Vec::with_capacity(clusters);
        for c in 0..clusters {
            let region = c % 10;
            let cluster = Cluster {
                name: ClusterName::new(&cluster_name(c)).expect("valid"),
                region: Some(LabelValue::new(&format!("region-{region}")).expect("valid")),
                zone: Some(LabelValue::new(&format!("region-{region}-{}", c % 3)).expect("valid")),
                client_cidrs: vec![
                    format!("10.{}.{}.0/24", c / 256, c % 256)
                        .parse()
                        .expect("cidr"),
                ],
                version: "bench".into(),
                provider: None,
                nodes: Vec::new(),
            };
            let (session, _) = registry.hello(cluster, usize::MAX);
            let set = (0..services).map(|s| export(c, s, endpoints, 0)).collect();
            registry
                .apply_snapshot(&session, set, &Default::default())
                .expect("applied");
            sessions.push(session);
        }
        Fleet {
            registry,
            sessions,
            clusters,
            services,
            endpoints,
        }
    }
}
