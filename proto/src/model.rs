//! The validated domain model: what a cluster exports, independent of the
//! wire (prost) and of Kubernetes (k8s-openapi) types.

mod addresses;
mod cluster;
mod fleet_policy;
mod health;
pub mod health_check;
mod name;
mod service;
pub mod traffic;

pub use addresses::Addresses;
pub use cluster::{Cluster, MAX_ADDRESSES_PER_NODE, MAX_NODES, NodeAddresses, parse_cidr};
pub use fleet_policy::{ClusterPolicy, FleetPolicy, RegionPolicy, ServicePolicy};
pub use health::{Failure, Health};
pub use health_check::HealthCheck;
pub use name::{
    ClusterName, Hostname, LabelValue, Namespace, NodeName, PortName, ServiceName, check_label,
};
pub use service::{
    Affinity, Endpoint, ExportSet, MAX_ADDRESSES_PER_ENDPOINT, MAX_CLUSTER_IPS, MAX_PORTS,
    MAX_TTL_SECONDS, MAX_ZONES_PER_SERVICE, Mode, Policy, Port, Protocol, ServiceExport,
    ServiceKey, reserved_class,
};
pub use traffic::{
    Bare, DEFAULT_WEIGHT, MAX_SCOPES, MAX_WEIGHT, MinHealthy, Scope, TrafficDistribution,
};
