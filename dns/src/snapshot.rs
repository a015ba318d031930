//! The read side: an immutable view of the registry, shaped for answering.
//!
//! Everything that depends only on registry state is worked out here, when
//! a snapshot is built: which endpoints are healthy, the flattened address
//! lists, the lookup keys. A DNS query then does one hash lookup and slices.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use meshdns_proto::model::{Affinity, ClusterName, Mode, Port, ServiceExport, ServiceKey};

use crate::locality::{ClusterId, Locality, Place, RegionId, ZoneId};

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
    /// The fleet's clusters and where askers are.
    pub locality: Arc<Locality>,
    /// Address -> the names that own it, when reverse zones are served.
    reverse: Option<Arc<BTreeMap<IpAddr, Vec<PtrName>>>>,
}

/// What a PTR record points at: an endpoint's own name when it has a
/// hostname, else its service's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtrName {
    pub namespace: Arc<str>,
    pub service: Arc<str>,
    /// (hostname, cluster)
    pub host: Option<(Arc<str>, Arc<str>)>,
}

impl Snapshot {
    /// An empty snapshot; with `reverse`, PTR data is kept.
    pub fn new(reverse: bool) -> Self {
        Snapshot {
            reverse: reverse.then(Default::default),
            ..Snapshot::default()
        }
    }

    /// The names owning `address`, when reverse zones are served.
    pub fn ptr(&self, address: &IpAddr) -> Option<&[PtrName]> {
        self.reverse.as_ref()?.get(address).map(Vec::as_slice)
    }

    /// Whether any exported address lies in `low..=high` (a reverse empty
    /// non-terminal).
    pub fn has_reverse_range(&self, low: IpAddr, high: IpAddr) -> bool {
        self.reverse
            .as_ref()
            .is_some_and(|r| r.range(low..=high).next().is_some())
    }

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

    /// How many global services.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceView>> {
        self.services.values()
    }

    /// A copy with `views` replacing (or, for `None`, removing) the services
    /// they name, and a new serial. Untouched services are shared, not copied.
    pub fn with_changes(
        &self,
        serial: u32,
        locality: Option<Arc<Locality>>,
        views: impl IntoIterator<Item = (ServiceKey, Option<Arc<ServiceView>>)>,
    ) -> Snapshot {
        let mut next = self.clone();
        next.serial = serial;
        if let Some(locality) = locality {
            next.locality = locality;
        }
        let views: Vec<(ServiceKey, Option<Arc<ServiceView>>)> = views.into_iter().collect();
        if let Some(reverse) = &self.reverse {
            let mut map = BTreeMap::clone(reverse);
            for (key, view) in &views {
                let id = format!("{}.{}", key.name, key.namespace);
                if let Some(old) = self.services.get(id.as_str()) {
                    for (address, _) in old.ptr_names() {
                        if let Some(names) = map.get_mut(&address) {
                            names.retain(|n| {
                                !(&*n.service == key.name.as_str()
                                    && &*n.namespace == key.namespace.as_str())
                            });
                            if names.is_empty() {
                                map.remove(&address);
                            }
                        }
                    }
                }
                if let Some(view) = view {
                    for (address, name) in view.ptr_names() {
                        map.entry(address).or_default().push(name);
                    }
                }
            }
            next.reverse = Some(Arc::new(map));
        }
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

/// One cluster's export of a service, with the cluster's place: the input
/// of [`ServiceView::build`].
#[derive(Debug, Clone, Copy)]
pub struct ExportInput<'a> {
    pub place: &'a Place,
    pub export: &'a ServiceExport,
}

/// A global service: every cluster's export of one key, grouped for
/// answering by locality.
#[derive(Debug)]
pub struct ServiceView {
    pub key: ServiceKey,
    /// Answer TTL: the service's own, else the server default.
    pub ttl: u32,
    pub affinity: Affinity,
    /// Sorted by cluster name, for name lookups.
    pub clusters: Vec<ClusterView>,
    /// (cluster id, index into `clusters`), sorted by id, for askers.
    by_id: Vec<(ClusterId, usize)>,
    /// Healthy targets by (region, zone): the endpoint's own zone where its
    /// slice says, else its cluster's.
    zones: Vec<(ZoneId, Targets)>,
    /// Healthy targets by their cluster's region.
    regions: Vec<(RegionId, Targets)>,
    /// Every healthy target: the answer for an asker of no known place.
    pub all: Targets,
    /// Every cluster holding the service is stale, so their last known
    /// endpoints are served rather than nothing.
    pub fail_open: bool,
}

impl ServiceView {
    /// Builds the view of one service from every cluster exporting it.
    ///
    /// Health: an endpoint counts when ready; serving (terminating)
    /// endpoints count only when no endpoint of the service is ready.
    /// Stale clusters are left out, unless every cluster holding the
    /// service is stale (fail open). `zone_id` interns a (region, zone).
    pub fn build(
        key: ServiceKey,
        inputs: &[ExportInput<'_>],
        default_ttl: u32,
        zone_id: &mut dyn FnMut(Option<&str>, &str) -> ZoneId,
    ) -> Self {
        let fail_open = inputs.iter().all(|i| i.place.stale);
        let serving = |i: &ExportInput<'_>| fail_open || !i.place.stale;
        let any_ready = inputs
            .iter()
            .filter(|i| serving(i))
            .any(|i| i.export.endpoints().iter().any(|ep| ep.ready));
        let mut sorted: Vec<&ExportInput<'_>> = inputs.iter().collect();
        sorted.sort_by(|a, b| a.place.name.cmp(&b.place.name));
        let mut clusters = Vec::with_capacity(sorted.len());
        let mut all = Targets::default();
        let mut zones: BTreeMap<ZoneId, Targets> = BTreeMap::new();
        let mut regions: BTreeMap<RegionId, Targets> = BTreeMap::new();
        for (index, input) in sorted.iter().enumerate() {
            let place = input.place;
            let export = input.export;
            let region_name = place.region.as_ref().map(|r| r.1.as_str());
            let endpoints: Vec<EndpointView> = export
                .endpoints()
                .iter()
                .map(|ep| EndpointView {
                    hostname: ep.hostname.as_ref().map(|h| Arc::from(h.as_str())),
                    addresses: ep.addresses.clone(),
                    healthy: serving(input) && (ep.ready || (!any_ready && ep.serving)),
                    zone: ep.zone.as_ref().map(|z| zone_id(region_name, z.as_str())),
                })
                .collect();
            let own_zone = place.zone.as_ref().map(|z| z.0);
            let mut targets = Targets::default();
            let mut off_zone = Targets::default();
            let mut add = |target: Target, zone: Option<ZoneId>, addresses: &[IpAddr]| {
                targets.push(target, addresses);
                all.push(target, addresses);
                if let Some(zone) = zone {
                    zones.entry(zone).or_default().push(target, addresses);
                }
                if zone.is_none() || zone != own_zone {
                    off_zone.push(target, addresses);
                }
                if let Some((region, _)) = &place.region {
                    regions.entry(*region).or_default().push(target, addresses);
                }
            };
            match export.mode() {
                Mode::Endpoints => {
                    for (e, ep) in endpoints.iter().enumerate() {
                        if ep.healthy {
                            let target = Target::Endpoint {
                                cluster: index,
                                endpoint: e,
                            };
                            add(target, ep.zone.or(own_zone), &ep.addresses);
                        }
                    }
                }
                Mode::ClusterIp => {
                    if endpoints.iter().any(|ep| ep.healthy) {
                        add(
                            Target::ClusterIp { cluster: index },
                            own_zone,
                            export.cluster_ips(),
                        );
                    }
                }
            }
            clusters.push(ClusterView {
                id: place.id,
                name: place.name.clone(),
                stale: place.stale,
                mode: export.mode(),
                ports: export.ports().to_vec(),
                cluster_ips: export.cluster_ips().to_vec(),
                endpoints,
                targets,
                off_zone,
            });
        }
        let mut by_id: Vec<(ClusterId, usize)> = clusters
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        by_id.sort_unstable();
        // A stricter affinity from any cluster applies to the whole
        // service; the shortest TTL wins.
        let affinity = sorted
            .iter()
            .map(|i| i.export.policy().affinity)
            .find(|a| *a != Affinity::Nearest)
            .unwrap_or_default();
        let ttl = sorted
            .iter()
            .filter_map(|i| i.export.policy().ttl)
            .min()
            .unwrap_or(default_ttl);
        ServiceView {
            key,
            ttl,
            affinity,
            clusters,
            by_id,
            zones: zones.into_iter().collect(),
            regions: regions.into_iter().collect(),
            all,
            fail_open,
        }
    }

    /// The addresses this service answers with, and the PTR name of each.
    pub fn ptr_names(&self) -> Vec<(IpAddr, PtrName)> {
        let namespace: Arc<str> = Arc::from(self.key.namespace.as_str());
        let service: Arc<str> = Arc::from(self.key.name.as_str());
        let name = |host| PtrName {
            namespace: namespace.clone(),
            service: service.clone(),
            host,
        };
        let mut out = Vec::new();
        for c in &self.clusters {
            for target in &c.targets.targets {
                match *target {
                    Target::Endpoint { endpoint, .. } => {
                        let ep = &c.endpoints[endpoint];
                        let host = ep
                            .hostname
                            .as_ref()
                            .map(|h| (h.clone(), Arc::from(c.name.as_str())));
                        out.extend(ep.addresses.iter().map(|a| (*a, name(host.clone()))));
                    }
                    Target::ClusterIp { .. } => {
                        out.extend(c.cluster_ips.iter().map(|a| (*a, name(None))))
                    }
                }
            }
        }
        out
    }

    pub fn cluster(&self, name: &str) -> Option<(usize, &ClusterView)> {
        self.clusters
            .binary_search_by(|c| c.name.as_str().cmp(name))
            .ok()
            .map(|i| (i, &self.clusters[i]))
    }

    /// The asker's own cluster's part, if it exports the service.
    pub fn cluster_by_id(&self, id: ClusterId) -> Option<&ClusterView> {
        self.by_id
            .binary_search_by_key(&id, |(i, _)| *i)
            .ok()
            .map(|i| &self.clusters[self.by_id[i].1])
    }

    /// Healthy targets in a (region, zone).
    pub fn zone(&self, id: ZoneId) -> Option<&Targets> {
        self.zones
            .binary_search_by_key(&id, |(z, _)| *z)
            .ok()
            .map(|i| &self.zones[i].1)
    }

    /// Healthy targets in a region.
    pub fn region(&self, id: RegionId) -> Option<&Targets> {
        self.regions
            .binary_search_by_key(&id, |(r, _)| *r)
            .ok()
            .map(|i| &self.regions[i].1)
    }
}

/// One cluster's part of a global service.
#[derive(Debug)]
pub struct ClusterView {
    pub id: ClusterId,
    pub name: ClusterName,
    /// Left out of answers (unless the service fails open).
    pub stale: bool,
    pub mode: Mode,
    pub ports: Vec<Port>,
    pub cluster_ips: Vec<IpAddr>,
    pub endpoints: Vec<EndpointView>,
    /// This cluster's healthy targets.
    pub targets: Targets,
    /// Those of `targets` outside the cluster's own zone: with the asker's
    /// zone, they make up the zone tier.
    pub off_zone: Targets,
}

impl ClusterView {
    /// The endpoint a hostname label names: its hostname, or for an endpoint
    /// without one, its first address written with dashes (`10-1-0-11`).
    pub fn endpoint(&self, label: &str) -> Option<&EndpointView> {
        let address = undashed(label);
        self.endpoints.iter().find(|e| match &e.hostname {
            Some(h) => &**h == label,
            None => address == Some(e.addresses[0]),
        })
    }
}

#[derive(Debug)]
pub struct EndpointView {
    /// The endpoint's hostname (headless services), if it has one.
    pub hostname: Option<Arc<str>>,
    pub addresses: Vec<IpAddr>,
    pub healthy: bool,
    /// The endpoint's own (region, zone), when its slice names one.
    pub zone: Option<ZoneId>,
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

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// How many healthy targets: what `--min-healthy` counts.
    pub fn len(&self) -> usize {
        self.targets.len()
    }
}

impl EndpointView {
    /// The first label of this endpoint's own name: its hostname, or its
    /// first address with dashes.
    pub fn label(&self) -> std::borrow::Cow<'_, str> {
        match &self.hostname {
            Some(h) => std::borrow::Cow::Borrowed(h),
            None => std::borrow::Cow::Owned(dashed(self.addresses[0])),
        }
    }
}

/// The address a dashed label stands for (`10-1-0-11`, `fd00--1`).
pub fn undashed(label: &str) -> Option<IpAddr> {
    if label.len() > 39 || !label.contains('-') {
        return None;
    }
    let v4: String = label.replace('-', ".");
    v4.parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .or_else(|_| {
            label
                .replace('-', ":")
                .parse::<std::net::Ipv6Addr>()
                .map(IpAddr::V6)
        })
        .ok()
        // Only the canonical spelling names the endpoint.
        .filter(|a| dashed(*a) == label)
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
        assert_eq!(undashed("10-1-0-11"), Some("10.1.0.11".parse().unwrap()));
        assert_eq!(undashed("fd00--1"), Some("fd00::1".parse().unwrap()));
        assert_eq!(undashed("010-1-0-11"), None);
        assert_eq!(undashed("web-0"), None);
    }
}
