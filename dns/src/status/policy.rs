//! `meshdns status`: the traffic policy in force, as the registry reports
//! it in `ListClusters` — per cluster weight, drain and provider (every
//! cluster the registry knows or the policy names), per service the
//! overrides, per region the default failover order.

use std::collections::BTreeMap;

use meshdns_proto::model::traffic::format_scopes;
use meshdns_proto::model::{FleetPolicy, ServiceKey, ServicePolicy};
use meshdns_proto::wire;

use super::table;

fn per_cluster<T: std::fmt::Display>(
    map: &BTreeMap<meshdns_proto::model::ClusterName, T>,
) -> String {
    if map.is_empty() {
        return "-".into();
    }
    map.iter()
        .map(|(cluster, v)| format!("{cluster}={v}%"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One service's overrides in a line (`--service`), or `None` when the
/// policy says nothing of it.
pub fn service_line(policy: &FleetPolicy, key: &ServiceKey) -> Option<String> {
    let s = policy.services.get(key)?;
    let mut parts = Vec::new();
    if !s.weight_percent.is_empty() {
        parts.push(format!("weight {}", per_cluster(&s.weight_percent)));
    }
    if !s.drain_percent.is_empty() {
        parts.push(format!("drain {}", per_cluster(&s.drain_percent)));
    }
    if let Some(order) = &s.failover {
        parts.push(format!("failover {}", service_order_text(order)));
    }
    if let Some(primary) = &s.primary {
        parts.push(format!("primary {primary}"));
    }
    if let Some(m) = s.min_healthy {
        parts.push(format!("min-healthy {m}"));
    }
    Some(format!("policy: {}\n", parts.join("; ")))
}

fn order_text(order: &[meshdns_proto::model::Scope]) -> String {
    if order.is_empty() {
        "(none)".into()
    } else {
        format_scopes(order)
    }
}

/// A service's own order: empty is explicitly none, not even the asker
/// region's default.
fn service_order_text(order: &[meshdns_proto::model::Scope]) -> String {
    if order.is_empty() {
        crate::policy::diff::NO_FAILOVER.into()
    } else {
        format_scopes(order)
    }
}

fn service_row(key: &ServiceKey, s: &ServicePolicy) -> Vec<String> {
    vec![
        key.to_string(),
        per_cluster(&s.weight_percent),
        per_cluster(&s.drain_percent),
        s.failover
            .as_deref()
            .map_or_else(|| "-".into(), service_order_text),
        s.primary
            .as_ref()
            .map_or_else(|| "-".into(), ToString::to_string),
        s.min_healthy.map_or_else(|| "-".into(), |m| m.to_string()),
    ]
}

/// The policy section under the cluster table.
pub fn text(policy: &FleetPolicy, clusters: &[wire::ClusterInfo]) -> String {
    let hash = crate::policy::sha256(policy);
    let mut out = format!("\npolicy {}", &hash[..16]);
    if policy.is_empty() {
        out.push_str(": none (weights as exported, nothing drained)\n");
        return out;
    }
    out.push_str(&format!(
        " ({} clusters, {} services, {} regions)\n",
        policy.clusters.len(),
        policy.services.len(),
        policy.regions.len()
    ));
    // Every cluster the registry knows, and those only the policy names.
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in clusters {
        let name = meshdns_proto::model::ClusterName::new(&c.name).ok();
        let p = name.as_ref().and_then(|n| policy.clusters.get(n));
        let provider = match (p.and_then(|p| p.provider.as_ref()), c.provider.as_str()) {
            (Some(p), _) => p.to_string(),
            (None, "") => "-".into(),
            (None, announced) => format!("{announced} (announced)"),
        };
        rows.insert(
            c.name.clone(),
            vec![
                c.name.clone(),
                format!("{}%", p.map_or(100, |p| p.weight_percent)),
                format!("{}%", p.map_or(0, |p| p.drain_percent)),
                provider,
            ],
        );
    }
    for (name, p) in &policy.clusters {
        rows.entry(name.to_string()).or_insert_with(|| {
            vec![
                format!("{name} (not in the registry)"),
                format!("{}%", p.weight_percent),
                format!("{}%", p.drain_percent),
                p.provider
                    .as_ref()
                    .map_or_else(|| "-".into(), ToString::to_string),
            ]
        });
    }
    let rows: Vec<Vec<String>> = rows.into_values().collect();
    out.push_str(&table(&["CLUSTER", "WEIGHT", "DRAIN", "PROVIDER"], &rows));
    if !policy.services.is_empty() {
        let rows: Vec<Vec<String>> = policy
            .services
            .iter()
            .map(|(key, s)| service_row(key, s))
            .collect();
        out.push_str(&table(
            &[
                "SERVICE",
                "WEIGHT",
                "DRAIN",
                "FAILOVER",
                "PRIMARY",
                "MIN-HEALTHY",
            ],
            &rows,
        ));
    }
    if !policy.regions.is_empty() {
        let rows: Vec<Vec<String>> = policy
            .regions
            .iter()
            .map(|(region, r)| vec![region.to_string(), order_text(&r.failover)])
            .collect();
        out.push_str(&table(&["REGION", "FAILOVER"], &rows));
    }
    out
}
