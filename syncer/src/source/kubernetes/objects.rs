//! Kubernetes API objects reduced to the few fields exports use, and the
//! conversion of a Service with its EndpointSlices into a model export.
//! The only place (with `kubernetes.rs`) that knows k8s-openapi types.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use meshdns_proto::InvalidField;
use meshdns_proto::error::Echo;
use meshdns_proto::model::{
    Affinity, Endpoint, Health, HealthCheck, Hostname, LabelValue, MinHealthy, Mode, Namespace,
    NodeName, Policy, Port, Scope, ServiceExport, ServiceKey, ServiceName, TrafficDistribution,
};

use crate::source::fields;

/// The annotations that carry per-service policy.
pub const AFFINITY: &str = "meshdns.io/affinity";
pub const TTL: &str = "meshdns.io/ttl";
pub const MODE: &str = "meshdns.io/mode";
/// The service's health check ([`HealthCheck`]'s syntax).
pub const HEALTH_CHECK: &str = "meshdns.io/health-check";
/// The weight of each of this service's endpoints in this cluster
/// (the syncer's `--weight` when absent).
pub const WEIGHT: &str = "meshdns.io/weight";
/// Regions (or `provider:` scopes) spill follows, in order.
pub const FAILOVER: &str = "meshdns.io/failover";
/// The region (or provider) every asker is served from while it is healthy.
pub const PRIMARY: &str = "meshdns.io/primary";
/// The healthy endpoints a tier needs before answers stay in it: `3` or `50%`.
pub const MIN_HEALTHY: &str = "meshdns.io/min-healthy";
/// Who may resolve the service: `cluster:`, `zone:`, `region:`, `provider:` scopes.
pub const EXPORT_TO: &str = "meshdns.io/export-to";
/// The field `spec.trafficDistribution`, as problems name it.
pub const TRAFFIC_DISTRIBUTION: &str = "spec.trafficDistribution";
/// The Node label naming the cloud provider the cluster runs on.
pub const PROVIDER_LABEL: &str = "meshdns.io/provider";
/// The label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// (namespace, name)
pub type Key = (String, String);

#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    pub name: Option<String>,
    pub protocol: Option<String>,
    pub port: i32,
}

/// What an export needs of a Service.
#[derive(Debug, Clone, PartialEq)]
pub struct SvcObj {
    pub key: Key,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub cluster_ips: Vec<String>,
    pub ports: Vec<PortSpec>,
    /// `spec.trafficDistribution` (`PreferClose`, `PreferSameZone`,
    /// `PreferSameNode`; Kubernetes may add values).
    pub traffic_distribution: Option<String>,
}

impl SvcObj {
    pub fn from_api(svc: &Service) -> Self {
        let spec = svc.spec.as_ref();
        let mut cluster_ips: Vec<String> =
            spec.and_then(|s| s.cluster_ips.clone()).unwrap_or_default();
        if cluster_ips.is_empty()
            && let Some(ip) = spec.and_then(|s| s.cluster_ip.clone())
        {
            cluster_ips.push(ip);
        }
        cluster_ips.retain(|ip| !ip.is_empty() && ip != "None");
        SvcObj {
            key: (svc.namespace().unwrap_or_default(), svc.name_any()),
            labels: svc.labels().clone(),
            annotations: svc
                .annotations()
                .iter()
                .filter(|(k, _)| k.starts_with("meshdns.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            cluster_ips,
            ports: spec
                .and_then(|s| s.ports.as_ref())
                .map(|ports| {
                    ports
                        .iter()
                        .map(|p| PortSpec {
                            name: p.name.clone(),
                            protocol: p.protocol.clone(),
                            port: p.port,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            traffic_distribution: spec
                .and_then(|s| s.traffic_distribution.clone())
                .filter(|t| !t.is_empty()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EpObj {
    pub addresses: Vec<String>,
    pub hostname: Option<String>,
    pub zone: Option<String>,
    pub node: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// What an export needs of an EndpointSlice.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceObj {
    /// (namespace, slice name)
    pub key: Key,
    /// The Service it belongs to (`kubernetes.io/service-name`).
    pub service: Option<String>,
    pub ports: Vec<PortSpec>,
    pub endpoints: Vec<EpObj>,
}

impl SliceObj {
    pub fn from_api(slice: &EndpointSlice) -> Self {
        // FQDN slices name hosts, not addresses: nothing to answer with.
        let addresses_ok = slice.address_type == "IPv4" || slice.address_type == "IPv6";
        SliceObj {
            key: (slice.namespace().unwrap_or_default(), slice.name_any()),
            service: slice.labels().get(SERVICE_NAME_LABEL).cloned(),
            ports: slice
                .ports
                .as_ref()
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|p| {
                            Some(PortSpec {
                                name: p.name.clone().filter(|n| !n.is_empty()),
                                protocol: p.protocol.clone(),
                                port: p.port?,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default(),
            endpoints: if addresses_ok {
                slice
                    .endpoints
                    .iter()
                    .flatten()
                    .map(|e| {
                        let c = e.conditions.as_ref();
                        // API conventions: a nil `ready` is unknown and read
                        // as ready; `serving` defaults to `ready`.
                        let ready = c.and_then(|c| c.ready).unwrap_or(true);
                        EpObj {
                            addresses: e.addresses.clone(),
                            hostname: e.hostname.clone(),
                            zone: e.zone.clone(),
                            node: e.node_name.clone(),
                            ready,
                            serving: c.and_then(|c| c.serving).unwrap_or(ready),
                            terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                        }
                    })
                    .collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// What the Hello needs of a Node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeObj {
    pub name: String,
    pub pod_cidrs: Vec<String>,
    pub internal_ips: Vec<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
    /// The `meshdns.io/provider` label.
    pub provider: Option<String>,
}

impl NodeObj {
    pub fn from_api(node: &Node) -> Self {
        let spec = node.spec.as_ref();
        let mut pod_cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        if pod_cidrs.is_empty()
            && let Some(cidr) = spec.and_then(|s| s.pod_cidr.clone())
        {
            pod_cidrs.push(cidr);
        }
        NodeObj {
            name: node.name_any(),
            pod_cidrs,
            internal_ips: node
                .status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .map(|a| {
                    a.iter()
                        .filter(|a| a.type_ == "InternalIP")
                        .map(|a| a.address.clone())
                        .collect()
                })
                .unwrap_or_default(),
            region: node.labels().get(REGION_LABEL).cloned(),
            zone: node.labels().get(ZONE_LABEL).cloned(),
            provider: node.labels().get(PROVIDER_LABEL).cloned(),
        }
    }
}

fn model_ports(specs: &[PortSpec]) -> Result<Vec<Port>, InvalidField> {
    let mut ports: Vec<Port> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let port = fields::port(
            &format!("ports[{i}]"),
            spec.name.as_deref().filter(|n| !n.is_empty()),
            spec.protocol.as_deref(),
            i64::from(spec.port),
        )?;
        // Slices of one Service repeat its ports; keep each once.
        if !ports.iter().any(|p| p == &port) {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// The policy annotations that refuse the export when their value is bad:
/// a Service meant for some askers only, or weighed down on purpose, must
/// not be exported as if it said nothing.
struct Strict {
    weight: u32,
    failover: Box<[Scope]>,
    primary: Option<Scope>,
    min_healthy: Option<MinHealthy>,
    export_to: Box<[Scope]>,
}

impl Strict {
    fn parse(svc: &SvcObj, default_weight: u32) -> Result<Self, InvalidField> {
        let annotation = |name: &str| svc.annotations.get(name).map(|v| v.trim());
        Ok(Strict {
            weight: annotation(WEIGHT)
                .map(|v| fields::weight(WEIGHT, v))
                .transpose()?
                .unwrap_or(default_weight),
            failover: annotation(FAILOVER)
                .map(|v| fields::failover(FAILOVER, v))
                .transpose()?
                .unwrap_or_default(),
            primary: annotation(PRIMARY)
                .map(|v| fields::primary(PRIMARY, v))
                .transpose()?,
            min_healthy: annotation(MIN_HEALTHY)
                .map(|v| fields::min_healthy(MIN_HEALTHY, v))
                .transpose()?,
            export_to: annotation(EXPORT_TO)
                .map(|v| fields::export_to(EXPORT_TO, v))
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

/// The Service's `meshdns.io/export-to` (empty when it has none), `None`
/// when the annotation is bad: what decides whether a refused update may
/// leave its last good export in place ([`fields::last_good_within`]).
pub fn export_to_update(svc: &SvcObj) -> Option<Box<[Scope]>> {
    match svc.annotations.get(EXPORT_TO) {
        None => Some(Box::default()),
        Some(v) => fields::export_to(EXPORT_TO, v.trim()).ok(),
    }
}

/// The affinity a Service asks for: its `meshdns.io/affinity`, else what
/// its `spec.trafficDistribution` stands for (an unknown value noted and
/// ignored), and the distribution that chose it.
fn affinity(svc: &SvcObj, problems: &mut Vec<String>) -> (Affinity, Option<TrafficDistribution>) {
    if let Some(v) = svc.annotations.get(AFFINITY) {
        let affinity = fields::affinity(AFFINITY, v.trim()).unwrap_or_else(|e| {
            problems.push(format!("{e}; using the default"));
            Affinity::Nearest
        });
        return (affinity, None);
    }
    match svc.traffic_distribution.as_deref() {
        None => (Affinity::Nearest, None),
        Some(value) => match TrafficDistribution::parse(value) {
            Some(d) => (d.affinity(), Some(d)),
            None => {
                problems.push(format!(
                    "{TRAFFIC_DISTRIBUTION}: {} is not a value meshdns knows; ignored",
                    Echo(value)
                ));
                (Affinity::Nearest, None)
            }
        },
    }
}

/// The export of `svc` from its `slices`, and the problems found in its
/// annotations (each reported; the default is used instead). A bad
/// `meshdns.io/weight`, `failover`, `primary`, `min-healthy` or
/// `export-to` refuses the export, naming the annotation. Endpoints weigh
/// the `meshdns.io/weight` annotation, else `default_weight` (`--weight`).
pub fn export(
    svc: &SvcObj,
    slices: &[&SliceObj],
    default_weight: u32,
) -> (Result<ServiceExport, InvalidField>, Vec<String>) {
    let mut problems = Vec::new();
    let annotation = |name: &str| svc.annotations.get(name).map(|v| v.trim().to_owned());
    let mut mode = match annotation(MODE) {
        None => Mode::Endpoints,
        Some(v) => fields::mode(MODE, &v).unwrap_or_else(|e| {
            problems.push(format!("{e}; using endpoints"));
            Mode::Endpoints
        }),
    };
    let (affinity, traffic_distribution) = affinity(svc, &mut problems);
    let ttl = match annotation(TTL) {
        None => None,
        Some(v) => match fields::ttl(TTL, &v) {
            Ok(t) => Some(t),
            Err(e) => {
                problems.push(format!("{e}; using the default"));
                None
            }
        },
    };
    let strict = match Strict::parse(svc, default_weight) {
        Ok(s) => s,
        Err(e) => return (Err(e), problems),
    };
    let cluster_ips: Vec<IpAddr> = svc
        .cluster_ips
        .iter()
        .filter_map(|ip| ip.parse().ok())
        .collect();
    if mode == Mode::ClusterIp && cluster_ips.is_empty() {
        problems.push(format!(
            "{MODE}: clusterip, but the Service is headless; using endpoints"
        ));
        mode = Mode::Endpoints;
    }
    let check = annotation(HEALTH_CHECK).and_then(|v| {
        HealthCheck::parse(&v)
            .map_err(|e| problems.push(format!("{}; no health check", e.within(HEALTH_CHECK))))
            .ok()
    });
    let result = (|| {
        let key = ServiceKey {
            namespace: Namespace::new(&svc.key.0).map_err(|e| e.within("namespace"))?,
            name: ServiceName::new(&svc.key.1).map_err(|e| e.within("name"))?,
        };
        // Endpoints mode: clients dial pods, so the slices' (target) ports;
        // the Service's own ports before any slice has them.
        let slice_ports: Vec<PortSpec> = slices
            .iter()
            .flat_map(|s| s.ports.iter().cloned())
            .collect();
        let ports = match mode {
            Mode::Endpoints if !slice_ports.is_empty() => model_ports(&slice_ports)?,
            _ => model_ports(&svc.ports)?,
        };
        let mut merged: BTreeMap<IpAddr, Endpoint> = BTreeMap::new();
        for ep in slices.iter().flat_map(|s| s.endpoints.iter()) {
            let addresses: Vec<IpAddr> =
                ep.addresses.iter().filter_map(|a| a.parse().ok()).collect();
            let Some(first) = addresses.first().copied() else {
                continue;
            };
            let endpoint = Endpoint {
                addresses: addresses.into(),
                hostname: ep.hostname.as_deref().and_then(|h| Hostname::new(h).ok()),
                zone: ep.zone.as_deref().and_then(|z| LabelValue::new(z).ok()),
                node: ep.node.as_deref().and_then(|n| NodeName::new(n).ok()),
                ready: ep.ready,
                serving: ep.serving,
                terminating: ep.terminating,
                health: Health::Unchecked,
                weight: strict.weight,
            };
            // An endpoint moving between slices is in both for a moment:
            // keep one, the readier.
            match merged.get(&first) {
                Some(existing) if existing.ready || !endpoint.ready => {}
                _ => {
                    merged.insert(first, endpoint);
                }
            }
        }
        let mut endpoints: Vec<Endpoint> = merged.into_values().collect();
        // Later addresses of a multi-address endpoint, or a hostname, may
        // repeat across endpoints; keep the first holder.
        let mut seen_addresses = std::collections::HashSet::new();
        let mut seen_hosts = std::collections::HashSet::new();
        for ep in &mut endpoints {
            ep.addresses.retain(|a| seen_addresses.insert(*a));
            if let Some(h) = &ep.hostname
                && !seen_hosts.insert(h.clone())
            {
                ep.hostname = None;
            }
        }
        endpoints.retain(|e| !e.addresses.is_empty());
        ServiceExport::new(
            key,
            ports,
            mode,
            cluster_ips.clone(),
            endpoints,
            Policy {
                affinity,
                ttl,
                failover: strict.failover.clone(),
                primary: strict.primary.clone(),
                min_healthy: strict.min_healthy,
                export_to: strict.export_to.clone(),
                traffic_distribution,
            },
        )
    })();
    let result = result.map(|export| match check {
        None => export,
        Some(check) => match export.clone().with_health_check(check) {
            Ok(checked) => checked,
            Err(e) => {
                problems.push(format!("{}; no health check", e.within(HEALTH_CHECK)));
                export
            }
        },
    });
    (result, problems)
}

/// A shared export, for the export set.
pub fn shared(export: ServiceExport) -> Arc<ServiceExport> {
    Arc::new(export)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::model::DEFAULT_WEIGHT;

    fn svc(annotations: &[(&str, &str)], cluster_ips: &[&str]) -> SvcObj {
        SvcObj {
            key: ("shop".into(), "web".into()),
            labels: BTreeMap::new(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cluster_ips: cluster_ips.iter().map(|s| s.to_string()).collect(),
            ports: vec![PortSpec {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 80,
            }],
            traffic_distribution: None,
        }
    }

    fn ep(ip: &str, ready: bool) -> EpObj {
        EpObj {
            addresses: vec![ip.into()],
            hostname: None,
            zone: None,
            node: None,
            ready,
            serving: ready,
            terminating: false,
        }
    }

    fn slice(name: &str, eps: Vec<EpObj>) -> SliceObj {
        SliceObj {
            key: ("shop".into(), name.into()),
            service: Some("web".into()),
            ports: vec![PortSpec {
                name: Some("http".into()),
                protocol: Some("TCP".into()),
                port: 8080,
            }],
            endpoints: eps,
        }
    }

    #[test]
    fn merges_slices_and_uses_target_ports() {
        let a = slice("web-a", vec![ep("10.0.0.1", true), ep("10.0.0.2", false)]);
        let b = slice("web-b", vec![ep("10.0.0.2", true), ep("10.0.0.3", true)]);
        let (result, problems) = export(&svc(&[], &["10.96.0.1"]), &[&a, &b], DEFAULT_WEIGHT);
        let exported = result.unwrap();
        assert!(problems.is_empty());
        assert_eq!(
            exported.ports()[0].port.get(),
            8080,
            "endpoints mode answers the target port"
        );
        let ready: Vec<String> = exported
            .endpoints()
            .iter()
            .filter(|e| e.ready)
            .map(|e| e.addresses[0].to_string())
            .collect();
        assert_eq!(
            ready,
            vec!["10.0.0.1", "10.0.0.2", "10.0.0.3"],
            "deduplicated, the ready copy kept"
        );
        assert_eq!(exported.endpoints().len(), 3);
    }

    #[test]
    fn the_health_check_annotation() {
        let a = slice("web-a", vec![ep("10.0.0.1", true)]);
        let (result, problems) = export(
            &svc(&[(HEALTH_CHECK, "tcp:http interval=2s")], &["10.96.0.1"]),
            &[&a],
            DEFAULT_WEIGHT,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let check = result.unwrap().health_check().cloned().unwrap();
        assert_eq!(check.port().to_string(), "8080");
        assert_eq!(check.interval, std::time::Duration::from_secs(2));
        // Bad syntax or a port the Service lacks: reported, exported unchecked.
        for (value, want) in [
            ("tcp:8080 rise=99", "meshdns.io/health-check.rise: "),
            ("tcp:9090", "meshdns.io/health-check.port: 9090 is not one"),
        ] {
            let (result, problems) =
                export(&svc(&[(HEALTH_CHECK, value)], &[]), &[&a], DEFAULT_WEIGHT);
            assert!(result.unwrap().health_check().is_none());
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].starts_with(want), "{problems:?}");
        }
    }

    #[test]
    fn annotations_with_bad_values_fall_back_to_defaults() {
        let a = slice("web-a", vec![ep("10.0.0.1", true)]);
        let s = svc(
            &[(AFFINITY, "galaxy"), (TTL, "-3"), (MODE, "clusterip")],
            &["10.96.0.1"],
        );
        let (result, problems) = export(&s, &[&a], DEFAULT_WEIGHT);
        let exported = result.unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_eq!(exported.mode(), Mode::ClusterIp);
        assert_eq!(
            exported.ports()[0].port.get(),
            80,
            "clusterip mode answers the Service port"
        );
        assert_eq!(exported.policy(), &Policy::default());
        let headless = svc(&[(MODE, "clusterip"), (AFFINITY, "zone"), (TTL, "30")], &[]);
        let (result, problems) = export(&headless, &[&a], DEFAULT_WEIGHT);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let exported = result.unwrap();
        assert_eq!(exported.mode(), Mode::Endpoints);
        assert_eq!(
            exported.policy(),
            &Policy {
                affinity: Affinity::Zone,
                ttl: Some(30),
                ..Policy::default()
            }
        );
    }

    fn weights(export: &ServiceExport) -> Vec<u32> {
        export.endpoints().iter().map(|e| e.weight).collect()
    }

    #[test]
    fn the_policy_annotations() {
        let a = slice("web-a", vec![ep("10.0.0.1", true), ep("10.0.0.2", true)]);
        let s = svc(
            &[
                (WEIGHT, "30"),
                (FAILOVER, "us-west, provider:gcp"),
                (PRIMARY, "region:us-east"),
                (MIN_HEALTHY, "50%"),
                (EXPORT_TO, "east-1, region:us-west, provider:aws"),
            ],
            &["10.96.0.1"],
        );
        let (result, problems) = export(&s, &[&a], 20);
        assert!(problems.is_empty(), "{problems:?}");
        let exported = result.unwrap();
        assert_eq!(
            weights(&exported),
            vec![30, 30],
            "the annotation beats --weight"
        );
        let policy = exported.policy();
        let shown = |scopes: &[Scope]| scopes.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(shown(&policy.failover), ["region:us-west", "provider:gcp"]);
        assert_eq!(
            policy.primary.as_ref().unwrap().to_string(),
            "region:us-east"
        );
        assert_eq!(policy.min_healthy, Some(MinHealthy::Percent(50)));
        assert_eq!(
            shown(&policy.export_to),
            ["cluster:east-1", "region:us-west", "provider:aws"]
        );
        // Without annotations: --weight, and nothing else set.
        let (result, _) = export(&svc(&[], &[]), &[&a], 20);
        let exported = result.unwrap();
        assert_eq!(weights(&exported), vec![20, 20]);
        assert_eq!(exported.policy(), &Policy::default());
        let (result, _) = export(&svc(&[(WEIGHT, "0"), (MIN_HEALTHY, "3")], &[]), &[&a], 20);
        let exported = result.unwrap();
        assert_eq!(weights(&exported), vec![0, 0], "0: last resort only");
        assert_eq!(exported.policy().min_healthy, Some(MinHealthy::Count(3)));
    }

    /// A bad value refuses the export, the error naming the annotation.
    #[test]
    fn bad_policy_annotations_refuse_the_export() {
        let a = slice("web-a", vec![ep("10.0.0.1", true)]);
        for (annotation, value) in [
            (WEIGHT, "heavy"),
            (WEIGHT, "-1"),
            (WEIGHT, "10001"),
            (FAILOVER, "zone:us-east-1a"),
            (FAILOVER, "cluster:east-1"),
            (FAILOVER, "Not A Region"),
            (PRIMARY, "us-east, us-west"),
            (PRIMARY, "zone:us-east-1a"),
            (MIN_HEALTHY, "lots"),
            (MIN_HEALTHY, "150%"),
            (EXPORT_TO, "planet:earth"),
            (EXPORT_TO, "cluster:East_1"),
        ] {
            let (result, _) = export(&svc(&[(annotation, value)], &[]), &[&a], 10);
            let e = result.expect_err(value);
            assert!(e.field.starts_with(annotation), "{value}: {e}");
        }
    }

    #[test]
    fn traffic_distribution_is_the_default_affinity() {
        let a = slice("web-a", vec![ep("10.0.0.1", true)]);
        let with = |annotations: &[(&str, &str)], td: Option<&str>| {
            let mut s = svc(annotations, &[]);
            s.traffic_distribution = td.map(str::to_owned);
            let (result, problems) = export(&s, &[&a], 10);
            let policy = result.unwrap().policy().clone();
            (policy.affinity, policy.traffic_distribution, problems.len())
        };
        use TrafficDistribution::*;
        assert_eq!(with(&[], None), (Affinity::Nearest, None, 0));
        assert_eq!(
            with(&[], Some("PreferClose")),
            (Affinity::Zone, Some(PreferClose), 0)
        );
        assert_eq!(
            with(&[], Some("PreferSameZone")),
            (Affinity::Zone, Some(PreferSameZone), 0)
        );
        assert_eq!(
            with(&[], Some("PreferSameNode")),
            (Affinity::Node, Some(PreferSameNode), 0)
        );
        // The annotation wins; the distribution is then not the reason.
        assert_eq!(
            with(&[(AFFINITY, "region")], Some("PreferSameNode")),
            (Affinity::Region, None, 0)
        );
        // A value a later Kubernetes may add: noted, ignored, exported.
        assert_eq!(
            with(&[], Some("PreferSameRack")),
            (Affinity::Nearest, None, 1)
        );
    }
}
