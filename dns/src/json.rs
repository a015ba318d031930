//! Registry state as JSON, one schema for every view of it: the admin
//! endpoint `/debug/registry` and `meshdns status --output json` build
//! their objects here, so a field (a port's
//! protocol, say) cannot be in one and missing from the other. The schema
//! is in README.md ("The JSON of `status` and `/debug`").

use meshdns_proto::model::{Mode, ServiceExport};
use serde_json::{Value, json};

use crate::registry::ClusterStatus;

/// A cluster and its liveness.
pub fn cluster(status: &ClusterStatus) -> Value {
    let c = &status.cluster;
    json!({
        "name": c.name.as_str(),
        "region": c.region.as_ref().map(|r| r.as_str()),
        "zone": c.zone.as_ref().map(|z| z.as_str()),
        "provider": c.provider.as_ref().map(|p| p.as_str()),
        "nodes": c.nodes.len(),
        "client_cidrs": c.client_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "version": c.version,
        "state": if status.stale { "stale" } else { "live" },
        "connected": status.connected,
        "last_heartbeat_unix_ms": status.last_heartbeat_unix_ms,
        "services": status.services,
        "endpoints": status.endpoints,
    })
}

/// One export as JSON, with at most `max_endpoints` of its endpoints.
pub fn service(s: &ServiceExport, max_endpoints: usize) -> Value {
    json!({
        "namespace": s.key().namespace.as_str(),
        "name": s.key().name.as_str(),
        "mode": s.mode().as_str(),
        "affinity": s.policy().affinity.as_str(),
        "ttl": s.policy().ttl,
        "failover": s.policy().failover.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "primary": s.policy().primary.as_ref().map(ToString::to_string),
        "min_healthy": s.policy().min_healthy.map(|m| m.to_string()),
        "export_to": s.policy().export_to.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "traffic_distribution": s.policy().traffic_distribution.map(|t| t.as_str()),
        "ports": s.ports().iter().map(|p| json!({
            "name": p.name.as_ref().map(|n| n.as_str()),
            "protocol": p.protocol.to_string(),
            "port": p.port.get(),
        })).collect::<Vec<_>>(),
        "cluster_ips": if s.mode() == Mode::ClusterIp { s.cluster_ips().iter().map(ToString::to_string).collect::<Vec<_>>() } else { vec![] },
        "endpoints": s.endpoints().iter().take(max_endpoints).map(|e| json!({
            "addresses": e.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "hostname": e.hostname.as_ref().map(|h| h.as_str()),
            "zone": e.zone.as_ref().map(|z| z.as_str()),
            "node": e.node.as_ref().map(|n| n.as_str()),
            "ready": e.ready,
            "serving": e.serving,
            "terminating": e.terminating,
            "health_check": e.health.as_str(),
            "weight": e.weight,
        })).collect::<Vec<_>>(),
    })
}

/// Places as their text (`region:us-east`).
fn places(list: &[meshdns_proto::model::Scope]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// One service's entry of the traffic policy.
pub fn service_policy(
    key: &meshdns_proto::model::ServiceKey,
    s: &meshdns_proto::model::ServicePolicy,
) -> Value {
    json!({
        "namespace": key.namespace.as_str(),
        "name": key.name.as_str(),
        "weight_percent": s.weight_percent.iter().map(|(c, w)| (c.to_string(), json!(w))).collect::<serde_json::Map<_, _>>(),
        "drain_percent": s.drain_percent.iter().map(|(c, d)| (c.to_string(), json!(d))).collect::<serde_json::Map<_, _>>(),
        "failover": s.failover.as_deref().map(places),
        "primary": s.primary.as_ref().map(ToString::to_string),
        "min_healthy": s.min_healthy.map(|m| m.to_string()),
    })
}

/// The traffic policy in force (`--policy`), with its hash: one schema
/// for `meshdns status --output json` and `meshdns drill`.
pub fn policy(policy: &meshdns_proto::model::FleetPolicy) -> Value {
    json!({
        "sha256": crate::policy::sha256(policy),
        "clusters": policy.clusters.iter().map(|(name, c)| json!({
            "cluster": name.as_str(),
            "weight_percent": c.weight_percent,
            "drain_percent": c.drain_percent,
            "provider": c.provider.as_ref().map(|p| p.as_str()),
        })).collect::<Vec<_>>(),
        "services": policy.services.iter().map(|(key, s)| service_policy(key, s)).collect::<Vec<_>>(),
        "regions": policy.regions.iter().map(|(region, r)| json!({
            "region": region.as_str(),
            "failover": places(&r.failover),
        })).collect::<Vec<_>>(),
    })
}
