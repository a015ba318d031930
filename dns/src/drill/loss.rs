//! What a drill loses: `--lose` places (`cluster:east-1`, `zone:…`,
//! `region:…`, `provider:…`; a bare name is a cluster) turned into the
//! clusters located there, and the policy that applies the same loss for
//! real: those clusters drained 100%.
//!
//! A place selects clusters by where each cluster is (its syncer's region
//! and zone, the policy's provider or the announced one), so that the
//! loss is exactly a set of drains an operator can write in the policy
//! file; an endpoint in zone B of a cluster located in zone A goes with
//! its cluster.

use std::collections::BTreeSet;

use meshdns_proto::error::{InvalidField, Problem};
use meshdns_proto::model::traffic::parse_scopes;
use meshdns_proto::model::{Bare, Cluster, ClusterName, FleetPolicy, Scope};

/// Parses the `--lose` values (each may hold a comma-separated list).
pub fn parse(values: &[String]) -> Result<Vec<Scope>, InvalidField> {
    let mut scopes: Vec<Scope> = Vec::new();
    for value in values {
        for scope in parse_scopes(value, Bare::Cluster)? {
            if !scopes.contains(&scope) {
                scopes.push(scope);
            }
        }
    }
    if scopes.is_empty() {
        return Err(InvalidField::new("", Problem::Missing));
    }
    Ok(scopes)
}

/// Whether `cluster` is located in `scope` (provider as `policy` says).
fn within(scope: &Scope, cluster: &Cluster, policy: &FleetPolicy) -> bool {
    match scope {
        Scope::Cluster(name) => &cluster.name == name,
        Scope::Zone(zone) => cluster.zone.as_ref() == Some(zone),
        Scope::Region(region) => cluster.region.as_ref() == Some(region),
        Scope::Provider(provider) => {
            policy.provider(&cluster.name, cluster.provider.as_ref()) == Some(provider)
        }
    }
}

/// The clusters each place holds; a place that holds no cluster of the
/// fleet is an error naming it (a typo must not read as "nothing lost").
pub fn clusters<'a>(
    scopes: &[Scope],
    fleet: impl IntoIterator<Item = &'a Cluster> + Clone,
    policy: &FleetPolicy,
) -> Result<BTreeSet<ClusterName>, InvalidField> {
    let mut lost = BTreeSet::new();
    for (i, scope) in scopes.iter().enumerate() {
        let mut matched = false;
        for cluster in fleet.clone() {
            if within(scope, cluster, policy) {
                matched = true;
                lost.insert(cluster.name.clone());
            }
        }
        if !matched {
            return Err(InvalidField::new(
                format!("[{i}]"),
                Problem::OutOfRange(format!("{scope} holds no cluster the registry knows")),
            ));
        }
    }
    Ok(lost)
}

/// `policy` with every lost cluster drained 100%: what answers become
/// when the loss is applied for real in the policy file.
pub fn drained(policy: &FleetPolicy, lost: &BTreeSet<ClusterName>) -> FleetPolicy {
    let mut after = policy.clone();
    for name in lost {
        after
            .clusters
            .entry(name.clone())
            .or_default()
            .drain_percent = 100;
    }
    after
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::model::{ClusterPolicy, LabelValue};

    fn cluster(name: &str, region: &str, zone: &str, provider: Option<&str>) -> Cluster {
        Cluster {
            name: ClusterName::new(name).unwrap(),
            region: Some(LabelValue::new(region).unwrap()),
            zone: Some(LabelValue::new(zone).unwrap()),
            client_cidrs: vec![],
            version: String::new(),
            provider: provider.map(|p| LabelValue::new(p).unwrap()),
            nodes: vec![],
        }
    }

    #[test]
    fn places_select_clusters() {
        let fleet = [
            cluster("east-1", "us-east", "us-east-1a", Some("aws")),
            cluster("east-2", "us-east", "us-east-1b", None),
            cluster("west-1", "us-west", "us-west-1a", Some("gcp")),
        ];
        let mut policy = FleetPolicy::default();
        let names = |scopes: &str, policy: &FleetPolicy| {
            let scopes = parse(&[scopes.to_owned()]).unwrap();
            clusters(&scopes, fleet.iter(), policy)
                .map(|set| set.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        assert_eq!(names("east-1", &policy).unwrap(), ["east-1"]);
        assert_eq!(
            names("region:us-east", &policy).unwrap(),
            ["east-1", "east-2"]
        );
        assert_eq!(names("zone:us-west-1a", &policy).unwrap(), ["west-1"]);
        assert_eq!(names("provider:aws", &policy).unwrap(), ["east-1"]);
        // The policy's provider wins over the announced one.
        policy.clusters.insert(
            ClusterName::new("east-2").unwrap(),
            ClusterPolicy {
                provider: Some(LabelValue::new("aws").unwrap()),
                ..ClusterPolicy::default()
            },
        );
        assert_eq!(
            names("provider:aws", &policy).unwrap(),
            ["east-1", "east-2"]
        );
        let err = names("east-1,zone:nowhere", &policy).unwrap_err();
        assert_eq!(err.field, "[1]");
        assert!(err.to_string().contains("zone:nowhere holds no cluster"));
        assert!(parse(&[String::new()]).is_err());
        assert!(parse(&["planet:mars".into()]).is_err());
        let lost = clusters(
            &parse(&["region:us-east".into()]).unwrap(),
            fleet.iter(),
            &policy,
        )
        .unwrap();
        let after = drained(&policy, &lost);
        assert_eq!(
            after.clusters[&ClusterName::new("east-1").unwrap()].drain_percent,
            100
        );
        let east2 = &after.clusters[&ClusterName::new("east-2").unwrap()];
        assert_eq!(east2.drain_percent, 100);
        assert_eq!(east2.provider.as_ref().unwrap().as_str(), "aws");
        assert!(
            !after
                .clusters
                .contains_key(&ClusterName::new("west-1").unwrap())
        );
    }
}
