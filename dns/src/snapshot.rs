//! The read side: an immutable view of the registry, shaped for answering.
//!
//! Everything that depends only on registry state is worked out here, when
//! a snapshot is built: which endpoints are healthy, the flattened address
//! lists per cluster part and the chains over them, the lookup keys. A DNS
//! query then does one hash lookup and walks at most `--max-answers`
//! addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use meshdns_proto::model::ServiceKey;

use crate::locality::Locality;

pub mod chain;
mod parts;
mod reverse;
mod sample;
mod shards;
mod view;

pub use chain::{Chain, Cursor, Kind, Segment, Span, Table, Walk};
pub use parts::Parts;
pub use reverse::PtrIndex;
pub use sample::Sample;
use shards::Shards;
pub use view::{
    ClusterView, Context, EndpointView, ExportInput, Interner, NO_POLICY, PartChange, PartTarget,
    PtrService, ServiceView, Step, StepChain, Target, Targets, Weights, ZoneIds, changed_parts,
    ptr_names,
};

/// One published state of the registry. Never mutated: the registry builds
/// the next one and swaps it in.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// SOA serial: grows with every published change.
    pub serial: u32,
    /// Keyed `"<name>.<namespace>"`, the order a query name carries them.
    services: Shards<Arc<ServiceView>>,
    /// How many services each namespace holds, so `<ns>.global` is an empty
    /// non-terminal exactly while it has one.
    namespaces: HashMap<Arc<str>, usize>,
    /// The fleet's clusters and where askers are.
    pub locality: Arc<Locality>,
    /// The fleet policy every view of this snapshot was built under.
    pub policy: Arc<meshdns_proto::model::FleetPolicy>,
    /// Address -> the names that own it, when reverse zones are served.
    /// Shared between snapshots, copied only where a publish changes it.
    reverse: Option<PtrIndex>,
}

/// What a PTR record points at: an endpoint's own name when it has a
/// hostname, else its service's name.
/// Ordered (namespace, service, host), so an address lists its names
/// the same way however they came.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
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
        self.reverse.as_ref()?.get(address)
    }

    /// Whether any exported address lies in `low..=high` (a reverse empty
    /// non-terminal).
    pub fn has_reverse_range(&self, low: IpAddr, high: IpAddr) -> bool {
        self.reverse.as_ref().is_some_and(|r| r.any_in(low, high))
    }

    /// The service named by the query labels `name` and `namespace`.
    pub fn service(&self, name: &str, namespace: &str) -> Option<&Arc<ServiceView>> {
        let mut key = String::with_capacity(name.len() + namespace.len() + 1);
        key.push_str(name);
        key.push('.');
        key.push_str(namespace);
        self.services.get(key.as_str())
    }

    /// The previous view of `key`, for an update.
    pub fn view(&self, key: &ServiceKey) -> Option<&Arc<ServiceView>> {
        self.service(key.name.as_str(), key.namespace.as_str())
    }

    /// The service keyed `"<name>.<namespace>"`.
    pub fn service_by_key(&self, key: &str) -> Option<&Arc<ServiceView>> {
        self.services.get(key)
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
    /// they name, and a new serial. Untouched services are shared, not
    /// copied, and so are the shards of the service map they live in.
    /// A copy under a new fleet policy: the caller replaces every view.
    pub fn with_policy(&self, policy: Arc<meshdns_proto::model::FleetPolicy>) -> Snapshot {
        Snapshot {
            policy,
            ..self.clone()
        }
    }

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
        if let Some(reverse) = &mut next.reverse {
            // Only the parts that changed: the index is updated, not rebuilt.
            for (key, view) in &views {
                let old = self.view(key);
                let (gone, came) =
                    changed_parts(old.map(|v| &v.clusters), view.as_ref().map(|v| &v.clusters));
                if gone.is_empty() && came.is_empty() {
                    continue;
                }
                let service = PtrService::of(key);
                for part in gone {
                    for (address, name) in ptr_names(&service, part) {
                        reverse.remove(&address, &name);
                    }
                }
                for part in came {
                    for (address, name) in ptr_names(&service, part) {
                        reverse.insert(address, name);
                    }
                }
            }
        }
        for (key, view) in views {
            let id: Arc<str> = Arc::from(format!("{}.{}", key.name, key.namespace));
            let namespace: Arc<str> = Arc::from(key.namespace.as_str());
            let existed = match view {
                Some(view) => next.services.insert(id, view),
                None => {
                    if !next.services.remove(&id) {
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

/// The first label of an endpoint's own name: its hostname, or its first
/// address with dashes.
pub fn endpoint_label(endpoint: &meshdns_proto::model::Endpoint) -> std::borrow::Cow<'_, str> {
    match &endpoint.hostname {
        Some(h) => std::borrow::Cow::Borrowed(h.as_str()),
        None => std::borrow::Cow::Owned(dashed(endpoint.addresses[0])),
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
