//! What changed between two policies, as lines an operator reads in the
//! log: `cluster east-1 drain 0% → 50%`. A cluster, service or region
//! absent from a policy has the defaults (weight 100%, drain 0%, the
//! announced provider, the annotations' orders), so adding or removing an
//! entry reads as the values it changes.

use std::collections::BTreeSet;
use std::fmt::Display;

use meshdns_proto::model::traffic::format_scopes;
use meshdns_proto::model::{ClusterPolicy, FleetPolicy, RegionPolicy, Scope, ServicePolicy};

/// `value`, or what its absence means.
fn or<T: Display>(value: Option<T>, absent: &str) -> String {
    value.map_or_else(|| absent.to_owned(), |v| v.to_string())
}

fn scopes(order: Option<&[Scope]>, absent: &str) -> String {
    match order {
        None => absent.to_owned(),
        Some([]) => "(none)".to_owned(),
        Some(list) => format_scopes(list),
    }
}

/// A service's own order: `[]` is explicitly none, the asker region's
/// default cancelled too.
pub fn service_order(order: Option<&[Scope]>) -> String {
    match order {
        Some([]) => NO_FAILOVER.to_owned(),
        other => scopes(other, "(annotation)"),
    }
}

/// How a service's explicitly empty failover order reads.
pub const NO_FAILOVER: &str = "(none, not the region default)";

fn push(out: &mut Vec<String>, what: impl Display, old: String, new: String) {
    if old != new {
        out.push(format!("{what} {old} → {new}"));
    }
}

/// Every change from `old` to `new`, one line each, in a stable order
/// (clusters, services, regions; by name).
pub fn changes(old: &FleetPolicy, new: &FleetPolicy) -> Vec<String> {
    let mut out = Vec::new();
    let default_cluster = ClusterPolicy::default();
    let names: BTreeSet<_> = old.clusters.keys().chain(new.clusters.keys()).collect();
    for name in names {
        let a = old.clusters.get(name).unwrap_or(&default_cluster);
        let b = new.clusters.get(name).unwrap_or(&default_cluster);
        let what = format!("cluster {name}");
        push(
            &mut out,
            format_args!("{what} weight"),
            format!("{}%", a.weight_percent),
            format!("{}%", b.weight_percent),
        );
        push(
            &mut out,
            format_args!("{what} drain"),
            format!("{}%", a.drain_percent),
            format!("{}%", b.drain_percent),
        );
        push(
            &mut out,
            format_args!("{what} provider"),
            or(a.provider.as_ref(), "(announced)"),
            or(b.provider.as_ref(), "(announced)"),
        );
    }
    let default_service = ServicePolicy::default();
    let keys: BTreeSet<_> = old.services.keys().chain(new.services.keys()).collect();
    for key in keys {
        let a = old.services.get(key).unwrap_or(&default_service);
        let b = new.services.get(key).unwrap_or(&default_service);
        let what = format!("service {key}");
        let clusters: BTreeSet<_> = a
            .weight_percent
            .keys()
            .chain(b.weight_percent.keys())
            .collect();
        for cluster in clusters {
            let of =
                |s: &ServicePolicy| format!("{}%", s.weight_percent.get(cluster).unwrap_or(&100));
            push(
                &mut out,
                format_args!("{what} weight in {cluster}"),
                of(a),
                of(b),
            );
        }
        let clusters: BTreeSet<_> = a
            .drain_percent
            .keys()
            .chain(b.drain_percent.keys())
            .collect();
        for cluster in clusters {
            let of = |s: &ServicePolicy| format!("{}%", s.drain_percent.get(cluster).unwrap_or(&0));
            push(
                &mut out,
                format_args!("{what} drain in {cluster}"),
                of(a),
                of(b),
            );
        }
        push(
            &mut out,
            format_args!("{what} failover"),
            service_order(a.failover.as_deref()),
            service_order(b.failover.as_deref()),
        );
        push(
            &mut out,
            format_args!("{what} primary"),
            or(a.primary.as_ref(), "(annotation)"),
            or(b.primary.as_ref(), "(annotation)"),
        );
        push(
            &mut out,
            format_args!("{what} min-healthy"),
            or(a.min_healthy, "(annotation)"),
            or(b.min_healthy, "(annotation)"),
        );
    }
    let default_region = RegionPolicy::default();
    let regions: BTreeSet<_> = old.regions.keys().chain(new.regions.keys()).collect();
    for region in regions {
        let a = old.regions.get(region).unwrap_or(&default_region);
        let b = new.regions.get(region).unwrap_or(&default_region);
        push(
            &mut out,
            format_args!("region {region} failover"),
            scopes(Some(&a.failover), ""),
            scopes(Some(&b.failover), ""),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::file::parse;

    fn changes_of(old: &str, new: &str) -> Vec<String> {
        changes(
            &parse(old.as_bytes()).unwrap(),
            &parse(new.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn each_change_is_one_line() {
        assert_eq!(
            changes_of("{}", "clusters:\n  east-1:\n    drain: 50\n"),
            ["cluster east-1 drain 0% → 50%"]
        );
        assert_eq!(
            changes_of(
                "clusters:\n  east-1:\n    drain: 50\n    provider: aws\n",
                "clusters:\n  east-1:\n    drain: 100\n    weight: 50\n"
            ),
            [
                "cluster east-1 weight 100% → 50%",
                "cluster east-1 drain 50% → 100%",
                "cluster east-1 provider aws → (announced)",
            ]
        );
        assert_eq!(
            changes_of(
                "services:\n  shop/web:\n    drain: {west-1: 20}\n",
                "services:\n  shop/web:\n    weight: {east-1: 300}\n    failover: [us-west]\n    minHealthy: 2\nregions:\n  eu:\n    failover: [us-east]\n"
            ),
            [
                "service shop/web weight in east-1 100% → 300%",
                "service shop/web drain in west-1 20% → 0%",
                "service shop/web failover (annotation) → region:us-west",
                "service shop/web min-healthy (annotation) → 2",
                "region eu failover (none) → region:us-east",
            ]
        );
        // Naming a cluster with its defaults changes nothing.
        assert!(changes_of("{}", "clusters:\n  east-1: {}\n").is_empty());
    }
}
