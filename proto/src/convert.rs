//! Wire <-> model conversions, in one place. Wire data is untrusted:
//! `TryFrom` checks everything and names the field that is wrong.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU16;

use crate::error::{InvalidField, Problem};
use crate::model::traffic::{self, Bare, MinHealthy, Scope, TrafficDistribution};
use crate::model::{
    Addresses, Affinity, Cluster, ClusterName, DEFAULT_WEIGHT, Endpoint, Failure, Health, Hostname,
    LabelValue, MAX_ADDRESSES_PER_NODE, MAX_NODES, Mode, Namespace, NodeAddresses, NodeName,
    Policy, Port, PortName, Protocol, ServiceExport, ServiceKey, ServiceName, parse_cidr,
};
use crate::wire;

fn at(field: &str) -> impl FnOnce(InvalidField) -> InvalidField + '_ {
    move |e| e.within(field)
}

fn address(value: &str, field: String) -> Result<IpAddr, InvalidField> {
    value.parse().map_err(|_| {
        InvalidField::new(
            field,
            Problem::BadAddress {
                value: value.to_owned(),
            },
        )
    })
}

impl TryFrom<&wire::Hello> for Cluster {
    type Error = InvalidField;

    fn try_from(hello: &wire::Hello) -> Result<Self, InvalidField> {
        if hello.cluster.is_empty() {
            return Err(InvalidField::new("cluster", Problem::Missing));
        }
        let client_cidrs = hello
            .client_cidrs
            .iter()
            .enumerate()
            .map(|(i, c)| parse_cidr(c).map_err(|e| e.within(format!("client_cidrs[{i}]"))))
            .collect::<Result<_, _>>()?;
        Ok(Cluster {
            name: ClusterName::new(&hello.cluster).map_err(at("cluster"))?,
            region: LabelValue::optional(&hello.region).map_err(at("region"))?,
            zone: LabelValue::optional(&hello.zone).map_err(at("zone"))?,
            client_cidrs,
            version: hello.version.chars().take(128).collect(),
            provider: LabelValue::optional(&hello.provider).map_err(at("provider"))?,
            nodes: nodes_from_wire(&hello.nodes)?,
        })
    }
}

/// A cluster's announced nodes: at most [`MAX_NODES`], each named once,
/// with 1 to [`MAX_ADDRESSES_PER_NODE`] addresses.
pub fn nodes_from_wire(nodes: &[wire::NodeAddresses]) -> Result<Vec<NodeAddresses>, InvalidField> {
    if nodes.len() > MAX_NODES {
        return Err(InvalidField::new(
            "nodes",
            Problem::TooMany {
                what: "nodes",
                count: nodes.len(),
                max: MAX_NODES,
            },
        ));
    }
    let mut names = std::collections::HashSet::with_capacity(nodes.len());
    exact(nodes, |i, node| {
        let field = || format!("nodes[{i}]");
        let name = NodeName::new(&node.name).map_err(|e| e.within(format!("nodes[{i}].name")))?;
        if !names.insert(name.clone()) {
            return Err(InvalidField::new(
                format!("nodes[{i}].name"),
                Problem::OutOfRange(format!("node {name} is listed twice")),
            ));
        }
        if node.addresses.is_empty() {
            return Err(InvalidField::new(
                format!("{}.addresses", field()),
                Problem::NoAddresses,
            ));
        }
        if node.addresses.len() > MAX_ADDRESSES_PER_NODE {
            return Err(InvalidField::new(
                format!("{}.addresses", field()),
                Problem::TooMany {
                    what: "addresses",
                    count: node.addresses.len(),
                    max: MAX_ADDRESSES_PER_NODE,
                },
            ));
        }
        let addresses = exact(&node.addresses, |j, a| {
            address(a, format!("{}.addresses[{j}]", field()))
        })?;
        Ok(NodeAddresses { name, addresses })
    })
}

/// A cluster's nodes, for the wire.
pub fn nodes_to_wire(nodes: &[NodeAddresses]) -> Vec<wire::NodeAddresses> {
    nodes
        .iter()
        .map(|n| wire::NodeAddresses {
            name: n.name.to_string(),
            addresses: n.addresses.iter().map(ToString::to_string).collect(),
        })
        .collect()
}

impl From<&Cluster> for wire::Hello {
    fn from(c: &Cluster) -> Self {
        wire::Hello {
            cluster: c.name.to_string(),
            region: c
                .region
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            zone: c.zone.as_ref().map(ToString::to_string).unwrap_or_default(),
            client_cidrs: c.client_cidrs.iter().map(ToString::to_string).collect(),
            version: c.version.clone(),
            provider: c
                .provider
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            nodes: nodes_to_wire(&c.nodes),
        }
    }
}

impl TryFrom<&wire::ServiceKey> for ServiceKey {
    type Error = InvalidField;

    fn try_from(key: &wire::ServiceKey) -> Result<Self, InvalidField> {
        if key.namespace.is_empty() {
            return Err(InvalidField::new("namespace", Problem::Missing));
        }
        if key.name.is_empty() {
            return Err(InvalidField::new("name", Problem::Missing));
        }
        Ok(ServiceKey {
            namespace: Namespace::new(&key.namespace).map_err(at("namespace"))?,
            name: ServiceName::new(&key.name).map_err(at("name"))?,
        })
    }
}

impl From<&ServiceKey> for wire::ServiceKey {
    fn from(key: &ServiceKey) -> Self {
        wire::ServiceKey {
            namespace: key.namespace.to_string(),
            name: key.name.to_string(),
        }
    }
}

/// `namespace/name`, as a service is named in logs, errors and JSON.
impl std::fmt::Display for wire::ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl TryFrom<&wire::Port> for Port {
    type Error = InvalidField;

    fn try_from(port: &wire::Port) -> Result<Self, InvalidField> {
        let protocol = match wire::Protocol::try_from(port.protocol) {
            // Kubernetes' default protocol.
            Ok(wire::Protocol::Unspecified | wire::Protocol::Tcp) => Protocol::Tcp,
            Ok(wire::Protocol::Udp) => Protocol::Udp,
            Ok(wire::Protocol::Sctp) => Protocol::Sctp,
            Err(_) => {
                return Err(InvalidField::new(
                    "protocol",
                    Problem::UnknownEnum {
                        value: port.protocol,
                    },
                ));
            }
        };
        let number = u16::try_from(port.port)
            .ok()
            .and_then(NonZeroU16::new)
            .ok_or_else(|| {
                let problem = if port.port == 0 {
                    Problem::ZeroPort
                } else {
                    Problem::PortRange {
                        value: i64::from(port.port),
                    }
                };
                InvalidField::new("port", problem)
            })?;
        let name = if port.name.is_empty() {
            None
        } else {
            Some(PortName::new(&port.name).map_err(at("name"))?)
        };
        Ok(Port {
            name,
            protocol,
            port: number,
        })
    }
}

impl From<&Port> for wire::Port {
    fn from(port: &Port) -> Self {
        let protocol = match port.protocol {
            Protocol::Tcp => wire::Protocol::Tcp,
            Protocol::Udp => wire::Protocol::Udp,
            Protocol::Sctp => wire::Protocol::Sctp,
        };
        wire::Port {
            name: port
                .name
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            protocol: protocol.into(),
            port: port.port.get().into(),
        }
    }
}

/// Zone and node names already converted, so that every endpoint naming
/// the same zone or node shares one allocation: within a message (a
/// thousand endpoints on a handful of zones and nodes) and, kept by the
/// caller, across the messages of one stream. Bounded: each table is
/// emptied when it reaches [`Interner::MAX`] names.
#[derive(Debug, Default)]
pub struct Interner {
    zones: HashMap<Box<str>, LabelValue>,
    nodes: HashMap<Box<str>, NodeName>,
}

impl Interner {
    /// Most names each table holds.
    pub const MAX: usize = 16_384;

    /// `value` as an optional zone label, shared with earlier ones.
    pub fn zone(&mut self, value: &str) -> Result<Option<LabelValue>, InvalidField> {
        intern(&mut self.zones, value, LabelValue::new)
    }

    /// `value` as an optional node name, shared with earlier ones.
    pub fn node(&mut self, value: &str) -> Result<Option<NodeName>, InvalidField> {
        intern(&mut self.nodes, value, NodeName::new)
    }
}

fn intern<T: Clone>(
    table: &mut HashMap<Box<str>, T>,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, InvalidField>,
) -> Result<Option<T>, InvalidField> {
    if value.is_empty() {
        return Ok(None);
    }
    if let Some(known) = table.get(value) {
        return Ok(Some(known.clone()));
    }
    let parsed = parse(value)?;
    if table.len() >= Interner::MAX {
        table.clear();
    }
    table.insert(Box::from(value), parsed.clone());
    Ok(Some(parsed))
}

impl TryFrom<&wire::Endpoint> for Endpoint {
    type Error = InvalidField;

    fn try_from(ep: &wire::Endpoint) -> Result<Self, InvalidField> {
        endpoint(ep, &mut Interner::default())
    }
}

/// [`Endpoint::try_from`], with zone and node names shared through `names`.
pub fn endpoint(ep: &wire::Endpoint, names: &mut Interner) -> Result<Endpoint, InvalidField> {
    let addresses = ep
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| address(a, format!("addresses[{i}]")))
        .collect::<Result<Addresses, _>>()?;
    if addresses.is_empty() {
        return Err(InvalidField::new("addresses", Problem::NoAddresses));
    }
    Ok(Endpoint {
        addresses,
        hostname: optional(&ep.hostname, Hostname::new).map_err(at("hostname"))?,
        zone: names.zone(&ep.zone).map_err(at("zone"))?,
        node: names.node(&ep.node).map_err(at("node"))?,
        ready: ep.ready,
        serving: ep.serving,
        terminating: ep.terminating,
        health: health_from_wire(ep.health),
        weight: ep.weight.unwrap_or(DEFAULT_WEIGHT),
    })
}

/// An unknown state (a newer syncer's) reads as unchecked: it only
/// explains, `ready` decides.
fn health_from_wire(value: i32) -> Health {
    match wire::HealthState::try_from(value) {
        Ok(wire::HealthState::HealthPassing) => Health::Passing,
        Ok(wire::HealthState::HealthRefused) => Health::Failing(Failure::Refused),
        Ok(wire::HealthState::HealthTimeout) => Health::Failing(Failure::Timeout),
        Ok(wire::HealthState::HealthBadStatus) => Health::Failing(Failure::BadStatus),
        Ok(wire::HealthState::HealthError) => Health::Failing(Failure::Error),
        Ok(wire::HealthState::HealthUnchecked) | Err(_) => Health::Unchecked,
    }
}

impl From<Health> for wire::HealthState {
    fn from(health: Health) -> Self {
        match health {
            Health::Unchecked => wire::HealthState::HealthUnchecked,
            Health::Passing => wire::HealthState::HealthPassing,
            Health::Failing(Failure::Refused) => wire::HealthState::HealthRefused,
            Health::Failing(Failure::Timeout) => wire::HealthState::HealthTimeout,
            Health::Failing(Failure::BadStatus) => wire::HealthState::HealthBadStatus,
            Health::Failing(Failure::Error) => wire::HealthState::HealthError,
        }
    }
}

/// What a wire endpoint's health state says, in the words of
/// [`Health::as_str`] (for `meshdns status`, which reads the wire).
pub fn health_text(value: i32) -> &'static str {
    health_from_wire(value).as_str()
}

fn optional<T>(
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, InvalidField>,
) -> Result<Option<T>, InvalidField> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

impl From<&Endpoint> for wire::Endpoint {
    fn from(ep: &Endpoint) -> Self {
        wire::Endpoint {
            addresses: ep.addresses.iter().map(ToString::to_string).collect(),
            hostname: ep
                .hostname
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            zone: ep
                .zone
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            node: ep
                .node
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            ready: ep.ready,
            serving: ep.serving,
            terminating: ep.terminating,
            health: wire::HealthState::from(ep.health).into(),
            weight: (ep.weight != DEFAULT_WEIGHT).then_some(ep.weight),
        }
    }
}

impl TryFrom<&wire::ServiceExport> for ServiceExport {
    type Error = InvalidField;

    fn try_from(svc: &wire::ServiceExport) -> Result<Self, InvalidField> {
        service_export(svc, &mut Interner::default())
    }
}

/// [`ServiceExport::try_from`], with zone and node names shared through
/// `names` (pass the same one for every service of a message, and of a
/// stream).
pub fn service_export(
    svc: &wire::ServiceExport,
    names: &mut Interner,
) -> Result<ServiceExport, InvalidField> {
    let key = svc
        .key
        .as_ref()
        .ok_or_else(|| InvalidField::new("key", Problem::Missing))
        .and_then(|k| ServiceKey::try_from(k).map_err(at("key")))?;
    let ports = exact(&svc.ports, |i, p| {
        Port::try_from(p).map_err(|e| e.within(format!("ports[{i}]")))
    })?;
    let mode = match wire::Mode::try_from(svc.mode) {
        Ok(wire::Mode::Unspecified | wire::Mode::Endpoints) => Mode::Endpoints,
        Ok(wire::Mode::ClusterIp) => Mode::ClusterIp,
        Err(_) => {
            return Err(InvalidField::new(
                "mode",
                Problem::UnknownEnum { value: svc.mode },
            ));
        }
    };
    let cluster_ips = exact(&svc.cluster_ips, |i, a| {
        address(a, format!("cluster_ips[{i}]"))
    })?;
    let endpoints = exact(&svc.endpoints, |i, e| {
        endpoint(e, names).map_err(|err| err.within(format!("endpoints[{i}]")))
    })?;
    let policy = match &svc.policy {
        None => Policy::default(),
        Some(p) => policy(p).map_err(at("policy"))?,
    };
    ServiceExport::new(key, ports, mode, cluster_ips, endpoints, policy)
}

/// A wire policy: enums checked, places and thresholds parsed.
pub fn policy(p: &wire::Policy) -> Result<Policy, InvalidField> {
    let scopes = |items: &[String], bare: Bare, field: &str| {
        if items.len() > traffic::MAX_SCOPES {
            return Err(InvalidField::new(
                field,
                Problem::TooMany {
                    what: "places",
                    count: items.len(),
                    max: traffic::MAX_SCOPES,
                },
            ));
        }
        exact(items, |i, item| {
            Scope::parse(item, bare).map_err(|e| e.within(format!("{field}[{i}]")))
        })
        .map(Vec::into_boxed_slice)
    };
    Ok(Policy {
        affinity: match wire::Affinity::try_from(p.affinity) {
            Ok(wire::Affinity::Unspecified) => Affinity::Nearest,
            Ok(wire::Affinity::Node) => Affinity::Node,
            Ok(wire::Affinity::Cluster) => Affinity::Cluster,
            Ok(wire::Affinity::Zone) => Affinity::Zone,
            Ok(wire::Affinity::Region) => Affinity::Region,
            Ok(wire::Affinity::Provider) => Affinity::Provider,
            Ok(wire::Affinity::None) => Affinity::None,
            Err(_) => {
                return Err(InvalidField::new(
                    "affinity",
                    Problem::UnknownEnum { value: p.affinity },
                ));
            }
        },
        ttl: (p.ttl_seconds != 0).then_some(p.ttl_seconds),
        failover: scopes(&p.failover, Bare::Region, "failover")?,
        primary: optional(&p.primary, |v| Scope::parse(v, Bare::Region)).map_err(at("primary"))?,
        min_healthy: optional(&p.min_healthy, MinHealthy::parse).map_err(at("min_healthy"))?,
        export_to: scopes(&p.export_to, Bare::Cluster, "export_to")?,
        // An unknown value (a newer syncer's) is display only: dropped.
        traffic_distribution: match wire::TrafficDistribution::try_from(p.traffic_distribution) {
            Ok(wire::TrafficDistribution::PreferClose) => Some(TrafficDistribution::PreferClose),
            Ok(wire::TrafficDistribution::PreferSameZone) => {
                Some(TrafficDistribution::PreferSameZone)
            }
            Ok(wire::TrafficDistribution::PreferSameNode) => {
                Some(TrafficDistribution::PreferSameNode)
            }
            Ok(wire::TrafficDistribution::Unspecified) | Err(_) => None,
        },
    })
}

impl From<&Policy> for wire::Policy {
    fn from(policy: &Policy) -> Self {
        let affinity = match policy.affinity {
            Affinity::Nearest => wire::Affinity::Unspecified,
            Affinity::Node => wire::Affinity::Node,
            Affinity::Cluster => wire::Affinity::Cluster,
            Affinity::Zone => wire::Affinity::Zone,
            Affinity::Region => wire::Affinity::Region,
            Affinity::Provider => wire::Affinity::Provider,
            Affinity::None => wire::Affinity::None,
        };
        let traffic_distribution = match policy.traffic_distribution {
            None => wire::TrafficDistribution::Unspecified,
            Some(TrafficDistribution::PreferClose) => wire::TrafficDistribution::PreferClose,
            Some(TrafficDistribution::PreferSameZone) => wire::TrafficDistribution::PreferSameZone,
            Some(TrafficDistribution::PreferSameNode) => wire::TrafficDistribution::PreferSameNode,
        };
        wire::Policy {
            affinity: affinity.into(),
            ttl_seconds: policy.ttl.unwrap_or(0),
            failover: policy.failover.iter().map(ToString::to_string).collect(),
            primary: policy
                .primary
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            min_healthy: policy
                .min_healthy
                .map(|m| m.to_string())
                .unwrap_or_default(),
            export_to: policy.export_to.iter().map(ToString::to_string).collect(),
            traffic_distribution: traffic_distribution.into(),
        }
    }
}

/// Converts every item, into a vector of exactly their number: a
/// collect through `Result` cannot know it and grows by doubling, and
/// what is converted here lives as long as the registry holds it.
fn exact<W, T>(
    items: &[W],
    mut convert: impl FnMut(usize, &W) -> Result<T, InvalidField>,
) -> Result<Vec<T>, InvalidField> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        out.push(convert(i, item)?);
    }
    Ok(out)
}

impl From<&ServiceExport> for wire::ServiceExport {
    fn from(svc: &ServiceExport) -> Self {
        let mode = match svc.mode() {
            Mode::Endpoints => wire::Mode::Endpoints,
            Mode::ClusterIp => wire::Mode::ClusterIp,
        };
        wire::ServiceExport {
            key: Some(svc.key().into()),
            ports: svc.ports().iter().map(Into::into).collect(),
            mode: mode.into(),
            cluster_ips: svc.cluster_ips().iter().map(ToString::to_string).collect(),
            endpoints: svc.endpoints().iter().map(Into::into).collect(),
            policy: Some(svc.policy().into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> wire::ServiceExport {
        wire::ServiceExport {
            key: Some(wire::ServiceKey {
                namespace: "shop".into(),
                name: "web".into(),
            }),
            ports: vec![wire::Port {
                name: "http".into(),
                protocol: wire::Protocol::Tcp.into(),
                port: 80,
            }],
            mode: wire::Mode::Endpoints.into(),
            cluster_ips: vec![],
            endpoints: vec![wire::Endpoint {
                addresses: vec!["10.1.0.1".into(), "fd00::1".into()],
                hostname: "web-0".into(),
                zone: "us-east-1a".into(),
                node: "node-1".into(),
                ready: true,
                serving: true,
                terminating: false,
                health: wire::HealthState::HealthTimeout.into(),
                weight: Some(25),
            }],
            policy: Some(wire::Policy {
                affinity: wire::Affinity::Zone.into(),
                ttl_seconds: 30,
                failover: vec!["region:us-west".into(), "provider:aws".into()],
                primary: "region:us-east".into(),
                min_healthy: "50%".into(),
                export_to: vec!["cluster:east-1".into(), "zone:us-east-1a".into()],
                traffic_distribution: wire::TrafficDistribution::PreferSameZone.into(),
            }),
        }
    }

    /// One table row: mutate a good export, expect this error (or success).
    fn check(mutate: impl FnOnce(&mut wire::ServiceExport), expected: Result<(), &str>) {
        let mut svc = good();
        mutate(&mut svc);
        let got = ServiceExport::try_from(&svc)
            .map(|_| ())
            .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn service_conversion_table() {
        check(|_| {}, Ok(()));
        check(|s| s.key = None, Err("key: is required"));
        check(
            |s| s.key.as_mut().unwrap().name = "Web".into(),
            Err(
                r#"key.name: "Web" is not a valid RFC 1123 label: only lowercase letters, digits and '-' are allowed"#,
            ),
        );
        check(
            |s| s.key.as_mut().unwrap().namespace.clear(),
            Err("key.namespace: is required"),
        );
        check(
            |s| s.ports.clear(),
            Err("ports: a service needs at least one port"),
        );
        check(
            |s| s.ports[0].port = 0,
            Err("ports[0].port: port 0 is not a port"),
        );
        check(
            |s| s.ports[0].port = 70000,
            Err("ports[0].port: port 70000 is out of range (1-65535)"),
        );
        check(
            |s| s.ports[0].protocol = 9,
            Err("ports[0].protocol: unknown value 9"),
        );
        check(
            |s| s.endpoints[0].addresses[1] = "10.0.0.300".into(),
            Err(r#"endpoints[0].addresses[1]: "10.0.0.300" is not an IP address"#),
        );
        check(
            |s| {
                let dup = s.endpoints[0].clone();
                s.endpoints.push(dup);
            },
            Err("endpoints[1].addresses[0]: duplicate endpoint address 10.1.0.1"),
        );
        check(
            |s| s.endpoints[0].hostname = "web_0".into(),
            Err(
                r#"endpoints[0].hostname: "web_0" is not a valid RFC 1123 label: only lowercase letters, digits and '-' are allowed"#,
            ),
        );
        check(|s| s.mode = 7, Err("mode: unknown value 7"));
        check(
            |s| s.mode = wire::Mode::ClusterIp.into(),
            Err("cluster_ips: clusterip mode needs at least one cluster IP"),
        );
        check(
            |s| s.policy.as_mut().unwrap().ttl_seconds = 100_000,
            Err("policy.ttl: ttl 100000s is over the maximum of 86400s"),
        );
        check(
            |s| s.endpoints[0].weight = Some(10_001),
            Err("endpoints[0].weight: weight 10001 is over the maximum of 10000"),
        );
        check(|s| s.endpoints[0].weight = Some(0), Ok(()));
        check(
            |s| s.policy.as_mut().unwrap().affinity = 99,
            Err("policy.affinity: unknown value 99"),
        );
        check(
            |s| s.policy.as_mut().unwrap().failover[1] = "zone:us-east-1a".into(),
            Err(
                "policy.failover[1]: zone:us-east-1a: a failover order names regions and providers only",
            ),
        );
        check(
            |s| s.policy.as_mut().unwrap().failover[0] = "moon:x".into(),
            Err(
                r#"policy.failover[0]: "moon:x": a place is cluster:NAME, zone:NAME, region:NAME or provider:NAME"#,
            ),
        );
        check(
            |s| s.policy.as_mut().unwrap().primary = "cluster:east-1".into(),
            Err(
                "policy.primary: cluster:east-1: a failover order names regions and providers only",
            ),
        );
        check(
            |s| s.policy.as_mut().unwrap().min_healthy = "0%".into(),
            Err(r#"policy.min_healthy: "0%" is not a count (1 or more) or a percentage (1%-100%)"#),
        );
        check(
            |s| s.policy.as_mut().unwrap().export_to = vec!["x".into(); 33],
            Err("policy.export_to: 33 places is over the limit of 32"),
        );
        check(
            |s| s.policy.as_mut().unwrap().traffic_distribution = 42,
            Ok(()),
        );
    }

    /// Endpoints naming the same zone or node share one allocation, within
    /// a service and across services converted with the same interner.
    #[test]
    fn zone_and_node_names_are_shared() {
        let mut names = Interner::default();
        let a = service_export(&good(), &mut names).unwrap();
        let b = service_export(&good(), &mut names).unwrap();
        let zone = |s: &ServiceExport| s.endpoints()[0].zone.as_ref().unwrap().as_str().as_ptr();
        let node = |s: &ServiceExport| s.endpoints()[0].node.as_ref().unwrap().as_str().as_ptr();
        assert_eq!(zone(&a), zone(&b));
        assert_eq!(node(&a), node(&b));
        let bad = wire::Endpoint {
            zone: "not a label".into(),
            ..good().endpoints[0].clone()
        };
        assert!(
            endpoint(&bad, &mut names).is_err(),
            "interned names are still checked"
        );
    }

    #[test]
    fn round_trip() {
        let model = ServiceExport::try_from(&good()).unwrap();
        let back = wire::ServiceExport::from(&model);
        assert_eq!(back, good());
        assert_eq!(model.policy().ttl, Some(30));
        assert_eq!(model.endpoints()[0].weight, 25);
        assert_eq!(model.policy().min_healthy, Some(MinHealthy::Percent(50)));
        let mut default_weight = good();
        default_weight.endpoints[0].weight = None;
        let model = ServiceExport::try_from(&default_weight).unwrap();
        assert_eq!(model.endpoints()[0].weight, DEFAULT_WEIGHT);
        assert_eq!(wire::ServiceExport::from(&model), default_weight);
    }

    #[test]
    fn hello() {
        let hello = wire::Hello {
            cluster: "east-1".into(),
            region: "us-east".into(),
            zone: String::new(),
            client_cidrs: vec!["127.0.0.2/32".into(), "fd00::/64".into()],
            version: "0.1.0".into(),
            provider: "aws".into(),
            nodes: vec![wire::NodeAddresses {
                name: "node-1".into(),
                addresses: vec!["10.1.255.1".into()],
            }],
        };
        let cluster = Cluster::try_from(&hello).unwrap();
        assert_eq!(cluster.zone, None);
        assert_eq!(wire::Hello::from(&cluster), hello);
        let bad = wire::Hello {
            client_cidrs: vec!["10.0.0.0/40".into()],
            ..hello.clone()
        };
        assert_eq!(
            Cluster::try_from(&bad).unwrap_err().to_string(),
            r#"client_cidrs[0]: "10.0.0.0/40" is not a CIDR (want e.g. 10.1.0.0/16)"#
        );
        for (nodes, error) in [
            (
                vec![wire::NodeAddresses {
                    name: "n1".into(),
                    addresses: vec![],
                }],
                "nodes[0].addresses: an endpoint needs at least one address",
            ),
            (
                vec![
                    wire::NodeAddresses {
                        name: "n1".into(),
                        addresses: vec!["10.0.0.1".into()],
                    };
                    2
                ],
                "nodes[1].name: node n1 is listed twice",
            ),
            (
                vec![wire::NodeAddresses {
                    name: "n1".into(),
                    addresses: vec!["x".into()],
                }],
                r#"nodes[0].addresses[0]: "x" is not an IP address"#,
            ),
        ] {
            let bad = wire::Hello {
                nodes,
                ..hello.clone()
            };
            assert_eq!(Cluster::try_from(&bad).unwrap_err().to_string(), error);
        }
        let bad = wire::Hello {
            provider: "not a label".into(),
            ..hello
        };
        assert!(Cluster::try_from(&bad).is_err());
    }
}
