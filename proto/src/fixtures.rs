//! Test fixtures, written once (feature `fixtures`, for tests and benches
//! only): the service keys, ports, endpoints and exports that unit tests,
//! property tests, e2e tests and benches build, in model and wire form.
//!
//! They panic on a name that does not validate: a fixture is a constant
//! of the test that uses it.

use std::net::IpAddr;
use std::num::NonZeroU16;

use crate::model::{
    Cluster, ClusterName, Endpoint, LabelValue, Mode, Namespace, NodeAddresses, NodeName, Policy,
    Port, PortName, Protocol, ServiceExport, ServiceKey, ServiceName,
};
use crate::wire;

/// `ns/name` as a model key.
pub fn key(ns: &str, name: &str) -> ServiceKey {
    ServiceKey {
        namespace: Namespace::new(ns).expect("fixture namespace"),
        name: ServiceName::new(name).expect("fixture name"),
    }
}

/// The port most fixtures export: unnamed, TCP 80.
pub fn http_port() -> Port {
    Port {
        name: None,
        protocol: Protocol::Tcp,
        port: NonZeroU16::new(80).expect("non-zero"),
    }
}

/// TCP 80 named `http` (SRV names `_http._tcp`).
pub fn named_http_port() -> Port {
    Port {
        name: Some(PortName::new("http").expect("fixture port name")),
        ..http_port()
    }
}

/// A ready, serving endpoint at `address`.
pub fn endpoint(address: IpAddr) -> Endpoint {
    Endpoint::ready(address)
}

/// `key` exporting [`http_port`] in endpoints mode, no cluster IPs.
pub fn http_export(key: ServiceKey, endpoints: Vec<Endpoint>, policy: Policy) -> ServiceExport {
    ServiceExport::new(
        key,
        vec![http_port()],
        Mode::Endpoints,
        vec![],
        endpoints,
        policy,
    )
    .expect("valid fixture export")
}

/// A cluster named `name` with no locality, no client CIDRs and no
/// nodes: enough for tests about what it exports.
pub fn cluster(name: &str) -> Cluster {
    Cluster {
        name: ClusterName::new(name).expect("fixture cluster name"),
        region: None,
        zone: None,
        client_cidrs: vec![],
        version: "test".into(),
        provider: None,
        nodes: vec![],
    }
}

/// A label value (region, zone, provider).
pub fn label(value: &str) -> LabelValue {
    LabelValue::new(value).expect("fixture label")
}

/// A cluster named `name` in `region` with default zone `zone`, asked
/// from `cidr`: the usual place of a locality test. Add a provider or
/// nodes with struct update syntax (`nodes: fixtures::nodes(..)`).
pub fn located_cluster(name: &str, region: &str, zone: &str, cidr: &str) -> Cluster {
    Cluster {
        region: Some(label(region)),
        zone: Some(label(zone)),
        client_cidrs: vec![cidr.parse().expect("fixture cidr")],
        ..cluster(name)
    }
}

/// Nodes with one address each, as `(node, address)` pairs.
pub fn nodes(pairs: &[(&str, &str)]) -> Vec<NodeAddresses> {
    pairs
        .iter()
        .map(|(node, address)| NodeAddresses {
            name: NodeName::new(node).expect("fixture node name"),
            addresses: vec![address.parse().expect("fixture node address")],
        })
        .collect()
}

/// `ns/name` as a wire key.
pub fn wire_key(ns: &str, name: &str) -> wire::ServiceKey {
    wire::ServiceKey {
        namespace: ns.into(),
        name: name.into(),
    }
}

/// The wire port most fixtures export: `http`, TCP 80.
pub fn wire_http_port() -> wire::Port {
    wire::Port {
        name: "http".into(),
        protocol: wire::Protocol::Tcp.into(),
        port: 80,
    }
}

/// A ready endpoint at `address` (`serving` left unset).
pub fn wire_endpoint(address: impl Into<String>) -> wire::Endpoint {
    wire::Endpoint {
        addresses: vec![address.into()],
        ready: true,
        ..Default::default()
    }
}

/// `ns/name` exporting [`wire_http_port`] in endpoints mode with
/// `endpoints`, no cluster IPs, the default policy.
pub fn wire_service(
    ns: &str,
    name: &str,
    endpoints: impl IntoIterator<Item = wire::Endpoint>,
) -> wire::ServiceExport {
    wire::ServiceExport {
        key: Some(wire_key(ns, name)),
        ports: vec![wire_http_port()],
        mode: wire::Mode::Endpoints.into(),
        cluster_ips: vec![],
        endpoints: endpoints.into_iter().collect(),
        policy: None,
    }
}
