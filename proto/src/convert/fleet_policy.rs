//! The hub's traffic policy on the wire, both ways. From the wire (a
//! follower's upstream, `status` and `drill` reading a registry) every
//! value is checked as the policy file's are, and the error names the
//! field (`clusters[2].drain_percent`).

use std::collections::BTreeMap;

use crate::error::{InvalidField, Problem};
use crate::model::traffic::{Bare, MinHealthy, Scope, check_failover, parse_scopes};
use crate::model::{
    ClusterName, ClusterPolicy, FleetPolicy, LabelValue, MAX_SCOPES, MAX_WEIGHT_PERCENT,
    RegionPolicy, ServiceKey, ServicePolicy,
};
use crate::wire;

/// Most entries of one list of a policy (clusters, services, regions, a
/// service's per-cluster percentages).
pub const MAX_POLICY_ENTRIES: usize = 100_000;

fn bounded<T>(items: &[T], field: &str) -> Result<(), InvalidField> {
    if items.len() > MAX_POLICY_ENTRIES {
        return Err(InvalidField::new(
            field,
            Problem::TooMany {
                what: "entries",
                count: items.len(),
                max: MAX_POLICY_ENTRIES,
            },
        ));
    }
    Ok(())
}

fn percent(value: u32, max: u32, field: impl Into<String>) -> Result<u32, InvalidField> {
    if value > max {
        return Err(InvalidField::new(
            field,
            Problem::OutOfRange(format!("{value} is above {max}")),
        ));
    }
    Ok(value)
}

fn cluster(name: &str, field: String) -> Result<ClusterName, InvalidField> {
    ClusterName::new(name).map_err(|e| InvalidField::new(field, e.problem))
}

/// `inner` (whose field may be `[2]` or empty) seen from `outer`.
fn under(outer: String, inner: InvalidField) -> InvalidField {
    let field = if inner.field.is_empty() {
        outer
    } else if inner.field.starts_with('[') {
        format!("{outer}{}", inner.field)
    } else {
        format!("{outer}.{}", inner.field)
    };
    InvalidField::new(field, inner.problem)
}

fn order(places: &[String], field: String) -> Result<Box<[Scope]>, InvalidField> {
    if places.len() > MAX_SCOPES {
        return Err(InvalidField::new(
            field,
            Problem::TooMany {
                what: "places",
                count: places.len(),
                max: MAX_SCOPES,
            },
        ));
    }
    let scopes =
        parse_scopes(&places.join(","), Bare::Region).map_err(|e| under(field.clone(), e))?;
    if scopes.len() != places.iter().filter(|p| !p.trim().is_empty()).count() {
        return Err(InvalidField::new(
            field,
            Problem::OutOfRange("a place is not one place".into()),
        ));
    }
    check_failover(&scopes).map_err(|e| under(field, e))?;
    Ok(scopes.into())
}

fn per_cluster(
    list: &[wire::ClusterPercent],
    max: u32,
    field: &str,
) -> Result<BTreeMap<ClusterName, u32>, InvalidField> {
    bounded(list, field)?;
    let mut out = BTreeMap::new();
    for (i, entry) in list.iter().enumerate() {
        let name = cluster(&entry.cluster, format!("{field}[{i}].cluster"))?;
        let value = percent(entry.percent, max, format!("{field}[{i}].percent"))?;
        if out.insert(name, value).is_some() {
            return Err(InvalidField::new(
                format!("{field}[{i}].cluster"),
                Problem::OutOfRange(format!("{} is listed twice", entry.cluster)),
            ));
        }
    }
    Ok(out)
}

fn service(s: &wire::ServicePolicy, i: usize) -> Result<(ServiceKey, ServicePolicy), InvalidField> {
    let field = format!("services[{i}]");
    let key = s
        .key
        .as_ref()
        .ok_or_else(|| InvalidField::new(format!("{field}.key"), Problem::Missing))?;
    let key = ServiceKey::try_from(key).map_err(|e| e.within(format!("{field}.key")))?;
    let primary = match s.primary.trim() {
        "" => None,
        text => {
            let scope = Scope::parse(text, Bare::Region)
                .map_err(|e| under(format!("{field}.primary"), e))?;
            check_failover(std::slice::from_ref(&scope))
                .map_err(|e| InvalidField::new(format!("{field}.primary"), e.problem))?;
            Some(scope)
        }
    };
    let min_healthy = match s.min_healthy.trim() {
        "" => None,
        text => {
            Some(MinHealthy::parse(text).map_err(|e| under(format!("{field}.min_healthy"), e))?)
        }
    };
    Ok((
        key,
        ServicePolicy {
            weight_percent: per_cluster(
                &s.weight_percent,
                MAX_WEIGHT_PERCENT,
                &format!("{field}.weight_percent"),
            )?,
            drain_percent: per_cluster(&s.drain_percent, 100, &format!("{field}.drain_percent"))?
                .into_iter()
                .map(|(c, d)| (c, d as u8))
                .collect(),
            failover: s
                .failover
                .as_ref()
                .map(|p| order(&p.places, format!("{field}.failover")))
                .transpose()?,
            primary,
            min_healthy,
        },
    ))
}

impl TryFrom<&wire::FleetPolicy> for FleetPolicy {
    type Error = InvalidField;

    fn try_from(w: &wire::FleetPolicy) -> Result<Self, InvalidField> {
        bounded(&w.clusters, "clusters")?;
        bounded(&w.services, "services")?;
        bounded(&w.regions, "regions")?;
        let mut policy = FleetPolicy::default();
        for (i, c) in w.clusters.iter().enumerate() {
            let field = format!("clusters[{i}]");
            let name = cluster(&c.cluster, format!("{field}.cluster"))?;
            let entry = ClusterPolicy {
                weight_percent: percent(
                    c.weight_percent.unwrap_or(100),
                    MAX_WEIGHT_PERCENT,
                    format!("{field}.weight_percent"),
                )?,
                drain_percent: percent(c.drain_percent, 100, format!("{field}.drain_percent"))?
                    as u8,
                provider: LabelValue::optional(&c.provider)
                    .map_err(|e| e.within(format!("{field}.provider")))?,
            };
            if policy.clusters.insert(name, entry).is_some() {
                return Err(InvalidField::new(
                    format!("{field}.cluster"),
                    Problem::OutOfRange(format!("{} is listed twice", c.cluster)),
                ));
            }
        }
        for (i, s) in w.services.iter().enumerate() {
            let (key, entry) = service(s, i)?;
            if policy.services.insert(key.clone(), entry).is_some() {
                return Err(InvalidField::new(
                    format!("services[{i}].key"),
                    Problem::OutOfRange(format!("{key} is listed twice")),
                ));
            }
        }
        for (i, r) in w.regions.iter().enumerate() {
            let field = format!("regions[{i}]");
            let region =
                LabelValue::new(&r.region).map_err(|e| e.within(format!("{field}.region")))?;
            let failover = order(&r.failover, format!("{field}.failover"))?;
            if policy
                .regions
                .insert(region, RegionPolicy { failover })
                .is_some()
            {
                return Err(InvalidField::new(
                    format!("{field}.region"),
                    Problem::OutOfRange(format!("{} is listed twice", r.region)),
                ));
            }
        }
        Ok(policy)
    }
}

fn places(scopes: &[Scope]) -> Vec<String> {
    scopes.iter().map(ToString::to_string).collect()
}

fn percents<T: Copy + Into<u32>>(map: &BTreeMap<ClusterName, T>) -> Vec<wire::ClusterPercent> {
    map.iter()
        .map(|(cluster, p)| wire::ClusterPercent {
            cluster: cluster.to_string(),
            percent: (*p).into(),
        })
        .collect()
}

/// In key order: equal policies encode to equal bytes (the policy's hash).
impl From<&FleetPolicy> for wire::FleetPolicy {
    fn from(p: &FleetPolicy) -> Self {
        wire::FleetPolicy {
            clusters: p
                .clusters
                .iter()
                .map(|(name, c)| wire::ClusterPolicy {
                    cluster: name.to_string(),
                    weight_percent: (c.weight_percent != 100).then_some(c.weight_percent),
                    drain_percent: c.drain_percent.into(),
                    provider: c
                        .provider
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                })
                .collect(),
            services: p
                .services
                .iter()
                .map(|(key, s)| wire::ServicePolicy {
                    key: Some(key.into()),
                    weight_percent: percents(&s.weight_percent),
                    drain_percent: percents(&s.drain_percent),
                    failover: s
                        .failover
                        .as_deref()
                        .map(|f| wire::Places { places: places(f) }),
                    primary: s
                        .primary
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    min_healthy: s.min_healthy.map(|m| m.to_string()).unwrap_or_default(),
                })
                .collect(),
            regions: p
                .regions
                .iter()
                .map(|(region, r)| wire::RegionPolicy {
                    region: region.to_string(),
                    failover: places(&r.failover),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Namespace, ServiceName};

    fn full() -> FleetPolicy {
        let east = ClusterName::new("east-1").unwrap();
        let mut policy = FleetPolicy::default();
        policy.clusters.insert(
            east.clone(),
            ClusterPolicy {
                weight_percent: 200,
                drain_percent: 50,
                provider: Some(LabelValue::new("aws").unwrap()),
            },
        );
        policy.clusters.insert(
            ClusterName::new("west-1").unwrap(),
            ClusterPolicy::default(),
        );
        let mut service = ServicePolicy::default();
        service.drain_percent.insert(east.clone(), 100);
        service.weight_percent.insert(east, 300);
        service.failover = Some(Box::default());
        service.primary = Some(Scope::Provider(LabelValue::new("gcp").unwrap()));
        service.min_healthy = Some(MinHealthy::Percent(50));
        policy.services.insert(
            ServiceKey {
                namespace: Namespace::new("shop").unwrap(),
                name: ServiceName::new("web").unwrap(),
            },
            service,
        );
        policy.regions.insert(
            LabelValue::new("eu").unwrap(),
            RegionPolicy {
                failover: vec![
                    Scope::Region(LabelValue::new("us-east").unwrap()),
                    Scope::Provider(LabelValue::new("aws").unwrap()),
                ]
                .into(),
            },
        );
        policy
    }

    #[test]
    fn round_trips() {
        for policy in [FleetPolicy::default(), full()] {
            let wire = wire::FleetPolicy::from(&policy);
            assert_eq!(FleetPolicy::try_from(&wire).unwrap(), policy);
        }
    }

    #[test]
    fn bad_values_name_their_field() {
        let good = wire::FleetPolicy::from(&full());
        let check = |edit: &dyn Fn(&mut wire::FleetPolicy), want: &str| {
            let mut w = good.clone();
            edit(&mut w);
            let err = FleetPolicy::try_from(&w).unwrap_err().to_string();
            assert!(err.starts_with(want), "{err} (want {want})");
        };
        check(
            &|w| w.clusters[0].drain_percent = 101,
            "clusters[0].drain_percent: 101 is above 100",
        );
        check(
            &|w| w.clusters[0].weight_percent = Some(1001),
            "clusters[0].weight_percent: 1001 is above 1000",
        );
        check(
            &|w| w.clusters[1].cluster = "Bad_Name".into(),
            "clusters[1].cluster:",
        );
        check(
            &|w| w.clusters[1].cluster = "east-1".into(),
            "clusters[1].cluster: east-1 is listed twice",
        );
        check(
            &|w| w.clusters[0].provider = "no way".into(),
            "clusters[0].provider",
        );
        check(
            &|w| w.services[0].drain_percent[0].percent = 200,
            "services[0].drain_percent[0].percent: 200 is above 100",
        );
        check(
            &|w| w.services[0].key = None,
            "services[0].key: is required",
        );
        check(
            &|w| w.services[0].primary = "zone:a".into(),
            "services[0].primary:",
        );
        check(
            &|w| w.services[0].min_healthy = "0".into(),
            "services[0].min_healthy",
        );
        check(
            &|w| {
                w.services[0].failover = Some(wire::Places {
                    places: vec!["cluster:x".into()],
                })
            },
            "services[0].failover[0]:",
        );
        check(
            &|w| w.regions[0].failover.push("a,b".into()),
            "regions[0].failover",
        );
        check(
            &|w| w.regions[0].region = String::new(),
            "regions[0].region",
        );
    }
}
