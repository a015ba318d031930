//! The read side: an immutable view of the registry, shaped for answering.
//!
//! Everything that depends only on registry state is worked out here, when
//! a snapshot is built: which endpoints are healthy, the flattened address
//! lists, the lookup keys. A DNS query then does one hash lookup and slices.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use meshdns_proto::model::{Affinity, ClusterName, Mode, Port, ServiceExport, ServiceKey};

/// One published state of the registry. Never mutated: the registry builds
/// the next one and swaps it in.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// SOA serial: grows with every published change.
    pub serial: u32,
    /// Keyed `"<name>.<namespace>"`, the order a query name carries them.
    services: HashMap<Arc<str>, Arc<ServiceView>>,
    /// How many services each namespace holds, so `<ns>.global` is an empty
    /// non-terminal exactly while it has one.
    namespaces: HashMap<Arc<str>, usize>,
}

impl Snapshot {
    /// The service named by the query labels `name` and `namespace`.
    pub fn service(&self, name: &str, namespace: &str) -> Option<&Arc<ServiceView>> {
        let mut key = String::with_capacity(name.len() + namespace.len() + 1);
        key.push_str(name);
        key.push('.');
        key.push_str(namespace);
        self.services.get(key.as_str())
    }

    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceView>> {
        self.services.values()
    }

    /// A copy with `views` replacing (or, for `None`, removing) the services
    /// they name, and a new serial. Untouched services are shared, not copied.
    pub fn with_changes(
        &self,
        serial: u32,
        views: impl IntoIterator<Item = (ServiceKey, Option<Arc<ServiceView>>)>,
    ) -> Snapshot {
        let mut next = self.clone();
        next.serial = serial;
        for (key, view) in views {
            let id: Arc<str> = Arc::from(format!("{}.{}", key.name, key.namespace));
            let namespace: Arc<str> = Arc::from(key.namespace.as_str());
            let existed = match view {
                Some(view) => next.services.insert(id, view).is_some(),
                None => {
                    if next.services.remove(&id).is_none() {
                        continue;
                    }
                    let count = next.namespaces.entry(namespace.clone()).or_default();
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        next.namespaces.remove(&namespace);
                    }
                    continue;
                }
            };
            if !existed {
                *next.namespaces.entry(namespace).or_default() += 1;
            }
        }
        next
    }
}

/// A global service: every cluster's export of one key, ready to answer.
#[derive(Debug)]
pub struct ServiceView {
    pub key: ServiceKey,
    /// Answer TTL: the service's own, else the server default.
    pub ttl: u32,
    pub affinity: Affinity,
    /// Sorted by cluster name, for binary search.
    pub clusters: Vec<ClusterView>,
    /// Every healthy target of every cluster: the answer when the asker has
    /// no preference.
    pub all: Targets,
}

impl ServiceView {
    /// Builds the view of one service from every cluster exporting it.
    ///
    /// Health: an endpoint counts when ready; serving (terminating)
    /// endpoints count only when no endpoint of the service is ready.
    pub fn build(
        key: ServiceKey,
        exports: &[(ClusterName, Arc<ServiceExport>)],
        default_ttl: u32,
    ) -> Self {
        let any_ready = exports
            .iter()
            .any(|(_, e)| e.endpoints().iter().any(|ep| ep.ready));
        let mut clusters: Vec<ClusterView> = exports
            .iter()
            .map(|(name, export)| ClusterView::build(name.clone(), export, any_ready))
            .collect();
        clusters.sort_by(|a, b| a.name.cmp(&b.name));
        let mut all = Targets::default();
        for (index, cluster) in clusters.iter().enumerate() {
            all.extend_from(&cluster.targets, index);
        }
        // Nearest-first policy wins when clusters disagree: a stricter
        // affinity from one cluster applies to the whole service.
        let (ttl, affinity) = exports.iter().map(|(_, e)| e.policy()).fold(
            (None, Affinity::Nearest),
            |(ttl, aff), p| {
                let ttl = match (ttl, p.ttl) {
                    (Some(a), Some(b)) => Some(std::cmp::min(a, b)),
                    (a, b) => a.or(b),
                };
                let aff = if aff == Affinity::Nearest {
                    p.affinity
                } else {
                    aff
                };
                (ttl, aff)
            },
        );
        ServiceView {
            key,
            ttl: ttl.unwrap_or(default_ttl),
            affinity,
            clusters,
            all,
        }
    }

    pub fn cluster(&self, name: &str) -> Option<(usize, &ClusterView)> {
        self.clusters
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .map(|i| (i, &self.clusters[i]))
    }
}

/// One cluster's part of a global service.
#[derive(Debug)]
pub struct ClusterView {
    pub name: ClusterName,
    pub mode: Mode,
    pub ports: Vec<Port>,
    pub cluster_ips: Vec<IpAddr>,
    pub endpoints: Vec<EndpointView>,
    /// This cluster's healthy targets, cluster index 0 standing for itself.
    pub targets: Targets,
}

impl ClusterView {
    fn build(name: ClusterName, export: &ServiceExport, any_ready: bool) -> Self {
        let endpoints: Vec<EndpointView> = export
            .endpoints()
            .iter()
            .map(|ep| EndpointView {
                label: match &ep.hostname {
                    Some(h) => Arc::from(h.as_str()),
                    None => Arc::from(dashed(ep.addresses[0]).as_str()),
                },
                addresses: ep.addresses.clone(),
                healthy: ep.ready || (!any_ready && ep.serving),
            })
            .collect();
        let mut targets = Targets::default();
        match export.mode() {
            Mode::Endpoints => {
                for (index, ep) in endpoints.iter().enumerate() {
                    if ep.healthy {
                        targets.push(
                            Target::Endpoint {
                                cluster: 0,
                                endpoint: index,
                            },
                            &ep.addresses,
                        );
                    }
                }
            }
            Mode::ClusterIp => {
                if endpoints.iter().any(|ep| ep.healthy) {
                    targets.push(Target::ClusterIp { cluster: 0 }, export.cluster_ips());
                }
            }
        }
        ClusterView {
            name,
            mode: export.mode(),
            ports: export.ports().to_vec(),
            cluster_ips: export.cluster_ips().to_vec(),
            endpoints,
            targets,
        }
    }

    /// The endpoint a hostname label names: its hostname, or for an endpoint
    /// without one, its first address written with dashes (`10-1-0-11`).
    pub fn endpoint(&self, label: &str) -> Option<&EndpointView> {
        self.endpoints.iter().find(|e| &*e.label == label)
    }
}

#[derive(Debug)]
pub struct EndpointView {
    /// The first label of this endpoint's own name.
    pub label: Arc<str>,
    pub addresses: Vec<IpAddr>,
    pub healthy: bool,
}

/// What one SRV record points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Endpoint { cluster: usize, endpoint: usize },
    ClusterIp { cluster: usize },
}

impl Target {
    pub fn cluster(self) -> usize {
        match self {
            Target::Endpoint { cluster, .. } | Target::ClusterIp { cluster } => cluster,
        }
    }

    fn in_cluster(self, cluster: usize) -> Self {
        match self {
            Target::Endpoint { endpoint, .. } => Target::Endpoint { cluster, endpoint },
            Target::ClusterIp { .. } => Target::ClusterIp { cluster },
        }
    }
}

/// A set of answer targets with their addresses flattened per family, so an
/// A or AAAA answer is a slice.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    pub targets: Vec<Target>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl Targets {
    fn push(&mut self, target: Target, addresses: &[IpAddr]) {
        self.targets.push(target);
        for address in addresses {
            match address {
                IpAddr::V4(a) => self.v4.push(*a),
                IpAddr::V6(a) => self.v6.push(*a),
            }
        }
    }

    fn extend_from(&mut self, other: &Targets, cluster: usize) {
        self.targets
            .extend(other.targets.iter().map(|t| t.in_cluster(cluster)));
        self.v4.extend_from_slice(&other.v4);
        self.v6.extend_from_slice(&other.v6);
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

/// `10.1.0.11` -> `10-1-0-11`; `fd00::1` -> `fd00--1`: a DNS label naming an
/// endpoint that has no hostname, as CoreDNS names them.
pub fn dashed(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => a.to_string().replace('.', "-"),
        IpAddr::V6(a) => a.to_string().replace(':', "-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashed_labels() {
        assert_eq!(dashed("10.1.0.11".parse().unwrap()), "10-1-0-11");
        assert_eq!(dashed("fd00::1".parse().unwrap()), "fd00--1");
    }
}
