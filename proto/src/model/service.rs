//! What a cluster exports: services with their ports, endpoints and policy.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroU16;
use std::sync::Arc;

use super::health_check::CheckPort;
use super::traffic::{
    DEFAULT_WEIGHT, MAX_SCOPES, MAX_WEIGHT, MinHealthy, Scope, TrafficDistribution, check_failover,
};
use super::{
    Addresses, Cluster, Health, HealthCheck, Hostname, LabelValue, Namespace, NodeName, PortName,
    ServiceName,
};
use crate::error::{InvalidField, Problem};

/// The largest TTL a service may ask for (one day).
pub const MAX_TTL_SECONDS: u32 = 86_400;
/// Most ports of one service: an EndpointSlice holds at most 100.
pub const MAX_PORTS: usize = 100;
/// Most addresses of one endpoint (a pod has one per family; a VM a few).
pub const MAX_ADDRESSES_PER_ENDPOINT: usize = 16;
/// Most cluster IPs of one service (Kubernetes allows one per family).
pub const MAX_CLUSTER_IPS: usize = 8;
/// Most distinct endpoint zone names in one service export.
pub const MAX_ZONES_PER_SERVICE: usize = 64;

/// Why no pod or VM can have `address`: the classes of address that must
/// never be served as an endpoint (answers would send every pod of the
/// fleet to itself, to a cloud metadata service, or to a group).
pub fn reserved_class(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => {
            let [first, second, ..] = v4.octets();
            if v4.is_unspecified() || first == 0 {
                Some("unspecified")
            } else if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() || (first == 169 && second == 254) {
                Some("link-local")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() {
                Some("broadcast")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return reserved_class(IpAddr::V4(v4));
            }
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unicast_link_local() {
                Some("link-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

fn routable(address: IpAddr, field: impl FnOnce() -> String) -> Result<(), InvalidField> {
    match reserved_class(address) {
        None => Ok(()),
        Some(class) => Err(InvalidField::new(
            field(),
            Problem::ReservedAddress { address, class },
        )),
    }
}

fn at_most(
    what: &'static str,
    count: usize,
    max: usize,
    field: impl FnOnce() -> String,
) -> Result<(), InvalidField> {
    if count > max {
        return Err(InvalidField::new(
            field(),
            Problem::TooMany { what, count, max },
        ));
    }
    Ok(())
}

/// The policy's lists: failover and primary name regions and providers
/// only; at most [`MAX_SCOPES`] places each.
fn check_policy(policy: &Policy) -> Result<(), InvalidField> {
    at_most("places", policy.failover.len(), MAX_SCOPES, || {
        "policy.failover".into()
    })?;
    at_most("places", policy.export_to.len(), MAX_SCOPES, || {
        "policy.export_to".into()
    })?;
    check_failover(&policy.failover).map_err(|mut e| {
        e.field = format!("policy.failover{}", e.field);
        e
    })?;
    if let Some(primary) = &policy.primary {
        check_failover(std::slice::from_ref(primary)).map_err(|mut e| {
            e.field = "policy.primary".into();
            e
        })?;
    }
    if let Some(MinHealthy::Count(0) | MinHealthy::Percent(0 | 101..)) = policy.min_healthy {
        return Err(InvalidField::new(
            "policy.min_healthy",
            Problem::OutOfRange("must be at least 1 (or 1%-100%)".into()),
        ));
    }
    Ok(())
}

/// A service's identity across the fleet: the same key in two clusters is
/// the same global service.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// The Service's namespace (the `<ns>` of `<svc>.<ns>.global`).
    pub namespace: Namespace,
    /// The Service's name (the `<svc>`).
    pub name: ServiceName,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl fmt::Debug for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A port's transport protocol, as Kubernetes names it; SRV names carry
/// it as `_tcp`, `_udp`, `_sctp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP (Kubernetes' default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The SRV label without its underscore: `tcp`, `udp`, `sctp`.
    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// Parses `TCP`, `udp`, ... (any case).
    pub fn parse(value: &str) -> Option<Self> {
        match value.to_ascii_lowercase().as_str() {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "sctp" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label().to_ascii_uppercase())
    }
}

/// A port clients connect to. In `endpoints` mode it is the endpoints'
/// (target) port, since clients dial pod addresses directly; in `clusterip`
/// mode it is the Service's port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Port {
    /// The port's name, unique within the service: the `_<name>` of
    /// SRV queries. `None`: an unnamed port, which has no SRV name.
    pub name: Option<PortName>,
    /// Its protocol; (number, protocol) is unique within the service.
    pub protocol: Protocol,
    /// The port number (1-65535).
    pub port: NonZeroU16,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({}/{})", self.port, self.protocol),
            None => write!(f, "{}/{}", self.port, self.protocol),
        }
    }
}

/// What addresses the answers carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The endpoints' own (pod) addresses: pod IPs are routable fleet-wide.
    #[default]
    Endpoints,
    /// Each cluster's ClusterIP, while that cluster has a ready endpoint.
    ClusterIp,
}

impl Mode {
    /// Parses `endpoints` or `clusterip` (the annotation and file
    /// spelling, lowercase).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "endpoints" => Some(Mode::Endpoints),
            "clusterip" => Some(Mode::ClusterIp),
            _ => None,
        }
    }

    /// The spelling [`Mode::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Endpoints => "endpoints",
            Mode::ClusterIp => "clusterip",
        }
    }
}

/// How far from the asker answers may come.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Affinity {
    /// Nearest tier first, spilling over as far as needed.
    #[default]
    Nearest,
    /// The asker's own node first (opt-in: NodeLocal DNSCache asks from
    /// the node's address), then as `cluster`.
    Node,
    /// The asker's own cluster while it has a healthy target; else
    /// spill as `nearest` does.
    Cluster,
    /// The asker's zone (the cluster tier included) while it has a healthy
    /// target; else spill.
    Zone,
    /// The asker's region (nearer tiers included) while it has a healthy
    /// target; else spill.
    Region,
    /// The asker's cloud provider (or site).
    Provider,
    /// Every tier at once.
    None,
}

impl Affinity {
    /// Parses the `meshdns.io/affinity` annotation value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "node" => Some(Affinity::Node),
            "cluster" => Some(Affinity::Cluster),
            "zone" => Some(Affinity::Zone),
            "region" => Some(Affinity::Region),
            "provider" => Some(Affinity::Provider),
            "none" => Some(Affinity::None),
            "nearest" => Some(Affinity::Nearest),
            _ => None,
        }
    }

    /// The spelling [`Affinity::parse`] reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Affinity::Nearest => "nearest",
            Affinity::Node => "node",
            Affinity::Cluster => "cluster",
            Affinity::Zone => "zone",
            Affinity::Region => "region",
            Affinity::Provider => "provider",
            Affinity::None => "none",
        }
    }
}

/// Per-service answer policy, from the exported Service's annotations.
/// The hub's policy file (`--policy`) may override parts of it
/// ([`FleetPolicy`](super::FleetPolicy)).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Policy {
    /// `meshdns.io/affinity` (else from `spec.trafficDistribution`): the
    /// tier answers stop at while it has anything.
    pub affinity: Affinity,
    /// Answer TTL in seconds; `None` means the server's `--ttl`.
    pub ttl: Option<u32>,
    /// `meshdns.io/failover`: after the asker's own tiers, spill follows
    /// these regions and providers in order; "any" stays the last resort.
    pub failover: Box<[Scope]>,
    /// `meshdns.io/primary`: a region or provider every asker is served
    /// from while it has at least min-healthy targets (fail-back is
    /// automatic when it recovers).
    pub primary: Option<Scope>,
    /// `meshdns.io/min-healthy`; `None` means the server's `--min-healthy`.
    pub min_healthy: Option<MinHealthy>,
    /// `meshdns.io/export-to`: askers outside every listed place get
    /// NXDOMAIN (unknown askers too). Empty: every asker.
    pub export_to: Box<[Scope]>,
    /// The Service's `spec.trafficDistribution`, for display: the syncer
    /// already mapped it into `affinity` when no annotation was set.
    pub traffic_distribution: Option<TrafficDistribution>,
}

/// One backend of a service in one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// IPv4 and/or IPv6 addresses; never empty.
    pub addresses: Addresses,
    /// Its hostname (StatefulSet pods, headless services): answers
    /// `<host>.<cluster>.<svc>.<ns>.global`; unique within the export.
    pub hostname: Option<Hostname>,
    /// The endpoint's own zone when its EndpointSlice says; else the cluster's.
    pub zone: Option<LabelValue>,
    /// The node it runs on, for the node tier (affinity `node`).
    pub node: Option<NodeName>,
    /// The EndpointSlice's `ready` condition: answered while its cluster
    /// serves.
    pub ready: bool,
    /// The `serving` condition: an endpoint that is serving but not ready
    /// (shutting down gracefully) is answered only while its cluster's
    /// export has no ready endpoint.
    pub serving: bool,
    /// The `terminating` condition: the pod is going away; for display
    /// (`status` shows a serving, terminating endpoint as draining).
    pub terminating: bool,
    /// The syncer's health check's last verdict; a failing endpoint is
    /// also neither `ready` nor `serving`.
    pub health: Health,
    /// Its share of answers relative to the service's other endpoints
    /// ([`DEFAULT_WEIGHT`] for a pod or a VM); 0: answered only when
    /// nothing else is healthy.
    pub weight: u32,
}

impl Endpoint {
    /// A ready, serving endpoint with one address: the common case.
    pub fn ready(address: IpAddr) -> Self {
        Self {
            addresses: Addresses::one(address),
            hostname: None,
            zone: None,
            node: None,
            ready: true,
            serving: true,
            terminating: false,
            health: Health::Unchecked,
            weight: DEFAULT_WEIGHT,
        }
    }
}

/// One cluster's export of one service. Built only by [`ServiceExport::new`],
/// so every value holds the invariants listed there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceExport {
    key: ServiceKey,
    ports: Box<[Port]>,
    mode: Mode,
    cluster_ips: Box<[IpAddr]>,
    endpoints: Box<[Endpoint]>,
    policy: Policy,
    /// The syncer's check of this service's endpoints; never on the wire.
    health_check: Option<Arc<HealthCheck>>,
}

impl ServiceExport {
    /// Validates and builds an export:
    /// at least one port, no two ports with the same name or the same
    /// number and protocol; every endpoint has an address; no address or
    /// hostname appears twice; `clusterip` mode has a cluster IP; the TTL is
    /// at most [`MAX_TTL_SECONDS`].
    pub fn new(
        key: ServiceKey,
        ports: Vec<Port>,
        mode: Mode,
        cluster_ips: Vec<IpAddr>,
        endpoints: Vec<Endpoint>,
        policy: Policy,
    ) -> Result<Self, InvalidField> {
        if ports.is_empty() {
            return Err(InvalidField::new("ports", Problem::NoPorts));
        }
        at_most("ports", ports.len(), MAX_PORTS, || "ports".into())?;
        let mut port_names = HashSet::with_capacity(ports.len());
        let mut port_numbers = HashSet::with_capacity(ports.len());
        for (i, port) in ports.iter().enumerate() {
            let name_clash = port.name.as_ref().is_some_and(|n| !port_names.insert(n));
            if name_clash || !port_numbers.insert((port.port, port.protocol)) {
                return Err(InvalidField::new(
                    format!("ports[{i}]"),
                    Problem::DuplicatePort(port.to_string()),
                ));
            }
        }
        if mode == Mode::ClusterIp && cluster_ips.is_empty() {
            return Err(InvalidField::new("cluster_ips", Problem::NoClusterIp));
        }
        at_most("cluster IPs", cluster_ips.len(), MAX_CLUSTER_IPS, || {
            "cluster_ips".into()
        })?;
        for (i, ip) in cluster_ips.iter().enumerate() {
            routable(*ip, || format!("cluster_ips[{i}]"))?;
        }
        if let Some(ttl) = policy.ttl.filter(|t| *t > MAX_TTL_SECONDS) {
            return Err(InvalidField::new("policy.ttl", Problem::TtlRange(ttl)));
        }
        check_policy(&policy)?;
        let mut addresses = HashSet::with_capacity(endpoints.len());
        let mut hostnames = HashSet::new();
        let mut zones = HashSet::new();
        for (i, endpoint) in endpoints.iter().enumerate() {
            if endpoint.addresses.is_empty() {
                return Err(InvalidField::new(
                    format!("endpoints[{i}].addresses"),
                    Problem::NoAddresses,
                ));
            }
            at_most(
                "addresses",
                endpoint.addresses.len(),
                MAX_ADDRESSES_PER_ENDPOINT,
                || format!("endpoints[{i}].addresses"),
            )?;
            for (j, address) in endpoint.addresses.iter().enumerate() {
                routable(*address, || format!("endpoints[{i}].addresses[{j}]"))?;
                if !addresses.insert(*address) {
                    return Err(InvalidField::new(
                        format!("endpoints[{i}].addresses[{j}]"),
                        Problem::DuplicateAddress(*address),
                    ));
                }
            }
            if endpoint.weight > MAX_WEIGHT {
                return Err(InvalidField::new(
                    format!("endpoints[{i}].weight"),
                    Problem::OutOfRange(format!(
                        "weight {} is over the maximum of {MAX_WEIGHT}",
                        endpoint.weight
                    )),
                ));
            }
            if let Some(hostname) = &endpoint.hostname
                && !hostnames.insert(hostname)
            {
                return Err(InvalidField::new(
                    format!("endpoints[{i}].hostname"),
                    Problem::DuplicateHostname(hostname.to_string()),
                ));
            }
            if let Some(zone) = &endpoint.zone
                && zones.insert(zone)
            {
                at_most("zone names", zones.len(), MAX_ZONES_PER_SERVICE, || {
                    format!("endpoints[{i}].zone")
                })?;
            }
        }
        Ok(Self {
            key,
            ports: ports.into_boxed_slice(),
            mode,
            cluster_ips: cluster_ips.into_boxed_slice(),
            endpoints: endpoints.into_boxed_slice(),
            policy,
            health_check: None,
        })
    }

    /// The same export with `check` run against its endpoints. The check's
    /// port must be one of the service's TCP ports (by number or name), so
    /// a check only ever reaches what the service exports; a named port is
    /// resolved to its number here.
    pub fn with_health_check(mut self, check: HealthCheck) -> Result<Self, InvalidField> {
        let number = {
            let found = self.ports.iter().find(|p| {
                p.protocol == Protocol::Tcp
                    && match check.port() {
                        CheckPort::Number(n) => p.port == *n,
                        CheckPort::Name(name) => p.name.as_ref() == Some(name),
                    }
            });
            match found {
                Some(port) => port.port,
                None => {
                    return Err(InvalidField::new(
                        "port",
                        Problem::BadHealthCheck(format!(
                            "{} is not one of the service's TCP ports",
                            check.port()
                        )),
                    ));
                }
            }
        };
        self.health_check = Some(Arc::new(check.with_port(number)));
        Ok(self)
    }

    /// The health check the syncer runs, with its port resolved.
    pub fn health_check(&self) -> Option<&Arc<HealthCheck>> {
        self.health_check.as_ref()
    }

    /// The same export with each endpoint's health set by `health`; a
    /// failing endpoint is made neither ready nor serving, as Kubernetes
    /// marks a pod whose readiness probe fails (`terminating` stays as it
    /// is; a serving-but-unready endpoint would otherwise still be
    /// answered when no endpoint is ready). Addresses are untouched, so
    /// the export stays valid.
    #[must_use]
    pub fn with_endpoint_health(&self, mut health: impl FnMut(&Endpoint) -> Health) -> Self {
        let mut out = self.clone();
        for endpoint in out.endpoints.iter_mut() {
            endpoint.health = health(endpoint);
            if endpoint.health.is_failing() {
                endpoint.ready = false;
                endpoint.serving = false;
            }
        }
        out
    }

    /// Which service this is (namespace and name).
    pub fn key(&self) -> &ServiceKey {
        &self.key
    }

    /// Holds `key`'s strings instead of its own when the two are equal, so
    /// a key exported by a thousand clusters is stored once.
    pub fn share_key(&mut self, key: &ServiceKey) {
        if self.key == *key {
            self.key = key.clone();
        }
    }
    /// Its ports: 1 to [`MAX_PORTS`], names and (number, protocol) unique.
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }
    /// What addresses its answers carry.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// The Service's cluster IPs (at most [`MAX_CLUSTER_IPS`]; at least
    /// one in `clusterip` mode).
    pub fn cluster_ips(&self) -> &[IpAddr] {
        &self.cluster_ips
    }
    /// Its endpoints in this cluster, addresses and hostnames unique; a
    /// failing health check already made an endpoint not ready.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }
    /// Its answer policy, from its annotations.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
}

/// Everything one cluster exports: what a syncer source produces and a
/// Snapshot message carries. Services are shared, so a new set that
/// changes one service copies pointers, not endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSet {
    /// The cluster that exports them, as its Hello describes it.
    pub cluster: Cluster,
    /// Every service it exports, by key.
    pub services: BTreeMap<ServiceKey, Arc<ServiceExport>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServiceKey {
        crate::fixtures::key("shop", "web")
    }

    fn port(name: Option<&str>, number: u16) -> Port {
        Port {
            name: name.map(|n| PortName::new(n).unwrap()),
            protocol: Protocol::Tcp,
            port: NonZeroU16::new(number).unwrap(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_endpoint_is_compact() {
        // A million of them live in a registry: one address inline, each
        // optional name one pointer, three flags.
        assert!(std::mem::size_of::<Endpoint>() <= 56);
    }

    fn check(
        ports: Vec<Port>,
        mode: Mode,
        cluster_ips: Vec<IpAddr>,
        endpoints: Vec<Endpoint>,
        expected: Result<(), &str>,
    ) {
        let got = ServiceExport::new(
            key(),
            ports,
            mode,
            cluster_ips,
            endpoints,
            Policy::default(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_owned));
    }

    #[test]
    fn a_check_must_name_a_tcp_port_of_the_service() {
        let export = |ports| {
            ServiceExport::new(
                key(),
                ports,
                Mode::Endpoints,
                vec![],
                vec![Endpoint::ready(ip("10.0.0.1"))],
                Policy::default(),
            )
            .unwrap()
        };
        let web = export(vec![port(Some("http"), 8080)]);
        let by_name = web
            .clone()
            .with_health_check(HealthCheck::parse("http:http/healthz").unwrap())
            .unwrap();
        assert_eq!(by_name.health_check().unwrap().port().to_string(), "8080");
        let err = web
            .clone()
            .with_health_check(HealthCheck::parse("tcp:9090").unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "port: 9090 is not one of the service's TCP ports"
        );
        let mut udp = port(Some("dns"), 53);
        udp.protocol = Protocol::Udp;
        assert!(
            export(vec![udp])
                .with_health_check(HealthCheck::parse("tcp:53").unwrap())
                .is_err()
        );
        // A failing verdict takes an endpoint out as an unready pod is.
        let failing = web.with_endpoint_health(|_| Health::Failing(super::super::Failure::Refused));
        let ep = &failing.endpoints()[0];
        assert_eq!(
            (ep.ready, ep.serving, ep.terminating),
            (false, false, false)
        );
        assert!(ep.health.is_failing());
    }

    #[test]
    fn validation() {
        let ep = |s| Endpoint::ready(ip(s));
        check(
            vec![port(Some("http"), 80)],
            Mode::Endpoints,
            vec![],
            vec![ep("10.0.0.1")],
            Ok(()),
        );
        check(
            vec![],
            Mode::Endpoints,
            vec![],
            vec![],
            Err("ports: a service needs at least one port"),
        );
        check(
            vec![port(Some("http"), 80), port(Some("http"), 81)],
            Mode::Endpoints,
            vec![],
            vec![],
            Err("ports[1]: duplicate port http (81/TCP)"),
        );
        check(
            vec![port(None, 80), port(None, 80)],
            Mode::Endpoints,
            vec![],
            vec![],
            Err("ports[1]: duplicate port 80/TCP"),
        );
        check(
            vec![port(None, 80)],
            Mode::Endpoints,
            vec![],
            vec![ep("10.0.0.1"), ep("10.0.0.1")],
            Err("endpoints[1].addresses[0]: duplicate endpoint address 10.0.0.1"),
        );
        check(
            vec![port(None, 80)],
            Mode::ClusterIp,
            vec![],
            vec![],
            Err("cluster_ips: clusterip mode needs at least one cluster IP"),
        );
        let mut empty = ep("10.0.0.2");
        empty.addresses = Addresses::default();
        check(
            vec![port(None, 80)],
            Mode::Endpoints,
            vec![],
            vec![empty],
            Err("endpoints[0].addresses: an endpoint needs at least one address"),
        );
    }
}
