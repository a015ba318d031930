//! Kubernetes objects for the fake API server: the resources it serves and
//! builders of k8s-openapi objects (as JSON) for tests to apply.

use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Res {
    Services,
    EndpointSlices,
    Nodes,
    Namespaces,
    ServiceExports,
    ServiceImports,
    Events,
}

impl Res {
    pub fn api_version(self) -> &'static str {
        match self {
            Res::Services | Res::Nodes | Res::Namespaces | Res::Events => "v1",
            Res::EndpointSlices => "discovery.k8s.io/v1",
            Res::ServiceExports | Res::ServiceImports => "multicluster.x-k8s.io/v1alpha1",
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Res::Services => "Service",
            Res::EndpointSlices => "EndpointSlice",
            Res::Nodes => "Node",
            Res::Namespaces => "Namespace",
            Res::ServiceExports => "ServiceExport",
            Res::ServiceImports => "ServiceImport",
            Res::Events => "Event",
        }
    }

    /// The resource and namespace a request path names.
    pub fn from_path(path: &str) -> Option<(Res, Option<String>)> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match parts.as_slice() {
            ["api", "v1", rest @ ..] => ("v1", rest),
            ["apis", "discovery.k8s.io", "v1", rest @ ..] => ("discovery.k8s.io/v1", rest),
            ["apis", "multicluster.x-k8s.io", "v1alpha1", rest @ ..] => {
                ("multicluster.x-k8s.io/v1alpha1", rest)
            }
            _ => return None,
        };
        let (ns, plural) = match rest {
            [plural] => (None, *plural),
            ["namespaces", ns, plural] => (Some(ns.to_string()), *plural),
            _ => return None,
        };
        let res = match (prefix, plural) {
            ("v1", "services") => Res::Services,
            ("v1", "nodes") => Res::Nodes,
            ("v1", "namespaces") => Res::Namespaces,
            ("discovery.k8s.io/v1", "endpointslices") => Res::EndpointSlices,
            ("multicluster.x-k8s.io/v1alpha1", "serviceexports") => Res::ServiceExports,
            ("multicluster.x-k8s.io/v1alpha1", "serviceimports") => Res::ServiceImports,
            ("v1", "events") => Res::Events,
            _ => return None,
        };
        Some((res, ns))
    }
}

impl Res {
    /// The plural in request paths (and in RBAC rules).
    pub fn plural(self) -> &'static str {
        match self {
            Res::Services => "services",
            Res::EndpointSlices => "endpointslices",
            Res::Nodes => "nodes",
            Res::Namespaces => "namespaces",
            Res::ServiceExports => "serviceexports",
            Res::ServiceImports => "serviceimports",
            Res::Events => "events",
        }
    }

    /// Whether the resource has a status subresource (its main resource
    /// ignores status writes, `/status` ignores everything else).
    pub fn has_status(self) -> bool {
        !matches!(self, Res::Events | Res::EndpointSlices)
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Res::Nodes | Res::Namespaces)
    }

    /// Custom resources: served only while the MCS CRDs are installed.
    pub fn mcs(self) -> bool {
        matches!(self, Res::ServiceExports | Res::ServiceImports)
    }

    /// The API group (`""`: core).
    pub fn group(self) -> &'static str {
        match self.api_version().split_once('/') {
            Some((group, _)) => group,
            None => "",
        }
    }

    /// Whether the API server's list items carry `kind`/`apiVersion`:
    /// typed lists of built-in resources leave them out, custom resources
    /// (unstructured) keep them.
    pub fn typed_in_lists(self) -> bool {
        self.mcs()
    }
}

fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

/// A ClusterIP Service (headless when `cluster_ip` is `None`) with one
/// named TCP port.
pub fn service(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    cluster_ip: Option<&str>,
) -> Value {
    let mut m = meta(Some(ns), name, labels);
    if !annotations.is_empty() {
        m.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    let svc = Service {
        metadata: m,
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.unwrap_or("None").to_owned()),
            cluster_ips: Some(vec![cluster_ip.unwrap_or("None").to_owned()]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    serde_json::to_value(svc).unwrap()
}

/// The `spec.trafficDistribution` values kube-apiserver 1.37 accepts
/// (`PreferClose` since 1.31; `PreferSameZone`, `PreferSameNode` since
/// 1.33): anything else it refuses with 422.
pub const TRAFFIC_DISTRIBUTIONS: [&str; 3] = ["PreferClose", "PreferSameZone", "PreferSameNode"];

/// `svc` with `spec.trafficDistribution` set.
pub fn with_traffic_distribution(mut svc: Value, value: &str) -> Value {
    svc["spec"]["trafficDistribution"] = json!(value);
    svc
}

/// `object` with more labels (a Node's `meshdns.io/provider`, say).
pub fn labelled(mut object: Value, labels: &[(&str, &str)]) -> Value {
    for (k, v) in labels {
        object["metadata"]["labels"][*k] = json!(v);
    }
    object
}

/// Why kube-apiserver would refuse `object` of `res`, for the checks the
/// fake makes of what tests apply (so no test passes on an object a real
/// server would never hold).
pub fn refused(res: Res, object: &Value) -> Option<String> {
    if res == Res::Services
        && let Some(value) = object["spec"].get("trafficDistribution")
        && !value.is_null()
        && !value
            .as_str()
            .is_some_and(|v| TRAFFIC_DISTRIBUTIONS.contains(&v))
    {
        return Some(format!(
            "spec.trafficDistribution: Unsupported value: {value}: supported values: \"PreferClose\", \"PreferSameNode\", \"PreferSameZone\""
        ));
    }
    None
}

/// One endpoint of a slice: (address, ready, hostname, zone).
pub type Ep<'a> = (&'a str, bool, Option<&'a str>, Option<&'a str>);

/// Ready endpoints at `addresses`, no hostname, no zone.
pub fn ready<'a>(addresses: &[&'a str]) -> Vec<Ep<'a>> {
    addresses.iter().map(|a| (*a, true, None, None)).collect()
}

/// An IPv4 EndpointSlice of `service` with target port 8080 named `http`.
pub fn slice(ns: &str, name: &str, service: &str, endpoints: &[Ep<'_>]) -> Value {
    let slice = EndpointSlice {
        metadata: meta(
            Some(ns),
            name,
            &[
                ("kubernetes.io/service-name", service),
                (
                    "endpointslice.kubernetes.io/managed-by",
                    "endpointslice-controller.k8s.io",
                ),
            ],
        ),
        address_type: "IPv4".into(),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(ip, ready, hostname, zone)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*ready),
                        terminating: Some(false),
                    }),
                    hostname: hostname.map(str::to_owned),
                    zone: zone.map(str::to_owned),
                    node_name: Some("node-1".into()),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    };
    serde_json::to_value(slice).unwrap()
}

/// `service`'s first slice (`<service>-a`) with one ready endpoint at
/// `address`: the usual slice of a test about Services, not endpoints.
pub fn one_ready_slice(ns: &str, service: &str, address: &str) -> Value {
    slice(
        ns,
        &format!("{service}-a"),
        service,
        &[(address, true, None, None)],
    )
}

/// A Node with a pod CIDR, an InternalIP and topology labels.
pub fn node(name: &str, pod_cidr: &str, internal_ip: &str, region: &str, zone: &str) -> Value {
    let node = Node {
        metadata: meta(
            None,
            name,
            &[
                ("topology.kubernetes.io/region", region),
                ("topology.kubernetes.io/zone", zone),
            ],
        ),
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr.into()),
            pod_cidrs: Some(vec![pod_cidr.into()]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                address: internal_ip.into(),
                type_: "InternalIP".into(),
            }]),
            ..NodeStatus::default()
        }),
    };
    serde_json::to_value(node).unwrap()
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    serde_json::to_value(Namespace {
        metadata: meta(None, name, labels),
        ..Namespace::default()
    })
    .unwrap()
}

/// An MCS ServiceExport naming `ns/name`.
pub fn service_export(ns: &str, name: &str) -> Value {
    json!({"metadata": serde_json::to_value(meta(Some(ns), name, &[])).unwrap(), "spec": {}})
}
