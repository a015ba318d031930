//! A synthetic fleet described by four numbers, generated the same way
//! wherever it is needed: pushed to a registry over gRPC by `loadfleet
//! push`, written as a static Knot zone and dnsperf query files by
//! `loadfleet files`.
//!
//! `services` global services; each is exported by `spread` clusters
//! (spaced `clusters / spread` apart, so they fall in different regions)
//! with `endpoints` endpoints per cluster. Every fourth export has its
//! last endpoint unready, so health filtering has work to do. Cluster `c`
//! is in region `c % 5`, zone `c / 5 % 3`, and announces the client CIDR
//! `127.<1 + c / 256>.<c % 256>.0/24`: a load generator on loopback asks
//! "from inside" a cluster by binding one of those addresses.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use meshdns_proto::model::{
    Cluster, ClusterName, Endpoint, ExportSet, LabelValue, Namespace, NodeName, ServiceExport,
    ServiceKey, ServiceName,
};

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub clusters: usize,
    pub services: usize,
    pub spread: usize,
    pub endpoints: usize,
    /// Every endpoint carries a zone (one of its cluster's region's three)
    /// and a node name (one of 50 per cluster), as real EndpointSlices do.
    pub zone_node: bool,
}

impl Shape {
    /// The load benchmark's fleet: 10,000 services over 100 clusters,
    /// each service in 3 clusters with 3 endpoints.
    pub const LOAD: Shape = Shape {
        clusters: 100,
        services: 10_000,
        spread: 3,
        endpoints: 3,
        zone_node: false,
    };

    /// The scale target: 1,000 clusters each exporting the same 100
    /// services with 10 endpoints (1,000,000 endpoints; every service
    /// has 10,000).
    pub const MILLION: Shape = Shape {
        clusters: 1_000,
        services: 100,
        spread: 1_000,
        endpoints: 10,
        zone_node: true,
    };

    pub fn check(&self) -> Result<(), String> {
        if self.clusters == 0 || self.spread == 0 || self.spread > self.clusters {
            return Err(format!(
                "--spread must be 1..=--clusters ({}), got {}",
                self.clusters, self.spread
            ));
        }
        if self.services * self.spread * self.endpoints > 16_000_000 {
            return Err("more than 16,000,000 endpoints do not fit 10.0.0.0/8".into());
        }
        Ok(())
    }

    pub fn total_endpoints(&self) -> usize {
        self.services * self.spread * self.endpoints
    }

    /// The clusters exporting service `s`.
    pub fn exporters(&self, s: usize) -> impl Iterator<Item = usize> + '_ {
        let step = (self.clusters / self.spread).max(1);
        (0..self.spread).map(move |i| (s + i * step) % self.clusters)
    }

    pub fn key(&self, s: usize) -> ServiceKey {
        ServiceKey {
            namespace: Namespace::new(&format!("ns-{}", s % 100)).expect("valid"),
            name: ServiceName::new(&format!("svc-{s}")).expect("valid"),
        }
    }

    /// `svc-<s>.ns-<s % 100>.global`
    pub fn name(&self, s: usize) -> String {
        format!("svc-{s}.ns-{}.global", s % 100)
    }

    /// Address of endpoint `e` of the `i`th export of service `s`: unique.
    pub fn address(&self, s: usize, i: usize, e: usize) -> Ipv4Addr {
        let index = ((s * self.spread + i) * self.endpoints + e) as u32;
        Ipv4Addr::from(0x0a00_0000 + index)
    }

    pub fn ready(&self, s: usize, i: usize, e: usize) -> bool {
        !(e + 1 == self.endpoints && self.endpoints > 1 && (s + i).is_multiple_of(4))
    }

    /// An address inside cluster `c`'s client CIDR.
    pub fn asker(&self, c: usize) -> Ipv4Addr {
        Ipv4Addr::new(127, 1 + (c / 256) as u8, (c % 256) as u8, 1)
    }

    pub fn cluster(&self, c: usize) -> Cluster {
        let region = c % 5;
        Cluster {
            name: ClusterName::new(&format!("cluster-{c}")).expect("valid"),
            region: Some(LabelValue::new(&format!("region-{region}")).expect("valid")),
            zone: Some(LabelValue::new(&format!("region-{region}-{}", c / 5 % 3)).expect("valid")),
            client_cidrs: vec![
                format!("{}/24", Ipv4Addr::from(u32::from(self.asker(c)) & !0xff))
                    .parse()
                    .expect("cidr"),
            ],
            version: "loadfleet".into(),
            provider: None,
            nodes: Vec::new(),
        }
    }

    /// The `i`th export of service `s`; `version` flips which endpoint is
    /// ready, as a rollout would.
    pub fn export(&self, s: usize, i: usize, version: usize) -> ServiceExport {
        let endpoints = (0..self.endpoints)
            .map(|e| {
                let mut ep = Endpoint::ready(IpAddr::V4(self.address(s, i, e)));
                ep.ready = self.ready(s, i, e) && !(e == 0 && version % 2 == 1);
                ep.serving = ep.ready;
                if self.zone_node {
                    let c = self.exporters(s).nth(i).unwrap_or_default();
                    let n = s * self.endpoints + e;
                    let zone = format!("region-{}-{}", c % 5, n % 3);
                    let node = format!("cluster-{c}-node-{}", n % 50);
                    ep.zone = Some(LabelValue::new(&zone).expect("valid"));
                    ep.node = Some(NodeName::new(&node).expect("valid"));
                }
                ep
            })
            .collect();
        crate::http_export(self.key(s), endpoints)
    }

    /// Every cluster's export set.
    pub fn export_sets(&self) -> Vec<ExportSet> {
        let mut sets: Vec<ExportSet> = (0..self.clusters)
            .map(|c| ExportSet {
                cluster: self.cluster(c),
                services: BTreeMap::new(),
            })
            .collect();
        for s in 0..self.services {
            for (i, c) in self.exporters(s).enumerate() {
                let export = self.export(s, i, 0);
                sets[c]
                    .services
                    .insert(export.key().clone(), Arc::new(export));
            }
        }
        sets
    }

    /// The ready addresses of service `s` in every cluster: what a static
    /// zone would answer.
    pub fn ready_addresses(&self, s: usize) -> Vec<Ipv4Addr> {
        let mut out = Vec::new();
        for i in 0..self.spread {
            for e in 0..self.endpoints {
                if self.ready(s, i, e) {
                    out.push(self.address(s, i, e));
                }
            }
        }
        out
    }
}
