//! The hub's traffic policy (`--policy FILE`), as a domain type: per
//! cluster weight, drain and provider; per service weight and drain
//! overrides, failover order, primary and min-healthy; a default failover
//! order per asker region. How a service's own annotations and this file
//! combine is decided here, once, for the DNS server, `status` and
//! `drill`.

use std::collections::BTreeMap;

use super::traffic::{MinHealthy, Scope};
use super::{ClusterName, LabelValue, ServiceKey};

/// The largest weight percentage (10×): keeps the product of an
/// endpoint's factors well inside `u64` summed over a million endpoints.
pub const MAX_WEIGHT_PERCENT: u32 = 1_000;

/// The policy in force. `Default` is the empty policy: every weight as
/// exported, nothing drained, each service's annotations as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetPolicy {
    /// Per cluster weight, drain and provider; a cluster not listed is
    /// as its syncer announced it ([`ClusterPolicy::default`]).
    pub clusters: BTreeMap<ClusterName, ClusterPolicy>,
    /// Per service overrides of its annotations; a service not listed
    /// keeps its own policy.
    pub services: BTreeMap<ServiceKey, ServicePolicy>,
    /// A default failover order for askers in a region (a service's own
    /// order wins).
    pub regions: BTreeMap<LabelValue, RegionPolicy>,
}

/// What the hub says of one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterPolicy {
    /// Scales every endpoint weight of the cluster, in percent (100: as
    /// exported; 0 ..= [`MAX_WEIGHT_PERCENT`]).
    pub weight_percent: u32,
    /// 0–100: 50 halves the cluster's share of answers; 100 answers from it
    /// only as a last resort (weight 0).
    pub drain_percent: u8,
    /// Overrides the provider the cluster's syncer announced.
    pub provider: Option<LabelValue>,
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        Self {
            weight_percent: 100,
            drain_percent: 0,
            provider: None,
        }
    }
}

/// What the hub says of one service (namespace/name), over its
/// annotations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServicePolicy {
    /// Per cluster weight percentage for this service only.
    pub weight_percent: BTreeMap<ClusterName, u32>,
    /// Per cluster drain for this service only; the larger of this and the
    /// cluster's drain applies.
    pub drain_percent: BTreeMap<ClusterName, u8>,
    /// Overrides the `meshdns.io/failover` annotation.
    pub failover: Option<Box<[Scope]>>,
    /// Overrides the `meshdns.io/primary` annotation.
    pub primary: Option<Scope>,
    /// Overrides the `meshdns.io/min-healthy` annotation.
    pub min_healthy: Option<MinHealthy>,
}

/// A region's default failover order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionPolicy {
    /// Regions and providers to spill to, in order, after the asker's own
    /// tiers (at most [`MAX_SCOPES`](super::MAX_SCOPES)); "any" stays the
    /// last resort.
    pub failover: Box<[Scope]>,
}

impl FleetPolicy {
    /// Whether the policy changes nothing at all.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty() && self.services.is_empty() && self.regions.is_empty()
    }

    /// The drain (0–100) of `cluster`'s export of `service`: the larger of
    /// the cluster's and the service's.
    pub fn drain_percent(&self, cluster: &ClusterName, service: &ServiceKey) -> u8 {
        let of_cluster = self.clusters.get(cluster).map_or(0, |c| c.drain_percent);
        let of_service = self
            .services
            .get(service)
            .and_then(|s| s.drain_percent.get(cluster))
            .copied()
            .unwrap_or(0);
        of_cluster.max(of_service).min(100)
    }

    /// The weight an endpoint of `cluster`'s export of `service` answers
    /// with: its own weight × the cluster's weight percentage × the
    /// service's × what the drain leaves (100 − drain). Only ratios
    /// between endpoints matter; 0 means last resort only.
    pub fn effective_weight(
        &self,
        cluster: &ClusterName,
        service: &ServiceKey,
        endpoint_weight: u32,
    ) -> u64 {
        let cluster_percent = self
            .clusters
            .get(cluster)
            .map_or(100, |c| c.weight_percent)
            .min(MAX_WEIGHT_PERCENT);
        let service_percent = self
            .services
            .get(service)
            .and_then(|s| s.weight_percent.get(cluster))
            .copied()
            .unwrap_or(100)
            .min(MAX_WEIGHT_PERCENT);
        let left = 100 - u64::from(self.drain_percent(cluster, service));
        u64::from(endpoint_weight) * u64::from(cluster_percent) * u64::from(service_percent) * left
    }

    /// The provider a cluster is placed in: the policy's, else what its
    /// syncer announced.
    pub fn provider<'a>(
        &'a self,
        cluster: &ClusterName,
        announced: Option<&'a LabelValue>,
    ) -> Option<&'a LabelValue> {
        self.clusters
            .get(cluster)
            .and_then(|c| c.provider.as_ref())
            .or(announced)
    }

    /// The failover order for `service` asked from `asker_region`: the
    /// policy file's for the service, else the service's annotation, else
    /// the asker region's default, else none.
    pub fn failover<'a>(
        &'a self,
        service: &ServiceKey,
        annotation: &'a [Scope],
        asker_region: Option<&LabelValue>,
    ) -> &'a [Scope] {
        if let Some(order) = self.services.get(service).and_then(|s| s.failover.as_ref()) {
            return order;
        }
        if !annotation.is_empty() {
            return annotation;
        }
        asker_region
            .and_then(|r| self.regions.get(r))
            .map_or(&[], |r| &r.failover)
    }

    /// The primary for `service`: the policy file's, else the annotation's.
    pub fn primary<'a>(
        &'a self,
        service: &ServiceKey,
        annotation: Option<&'a Scope>,
    ) -> Option<&'a Scope> {
        self.services
            .get(service)
            .and_then(|s| s.primary.as_ref())
            .or(annotation)
    }

    /// The spill-over threshold for `service`: the policy file's, else the
    /// annotation's (`None`: the server's `--min-healthy`).
    pub fn min_healthy(
        &self,
        service: &ServiceKey,
        annotation: Option<MinHealthy>,
    ) -> Option<MinHealthy> {
        self.services
            .get(service)
            .and_then(|s| s.min_healthy)
            .or(annotation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ServiceKey {
        crate::fixtures::key("shop", "web")
    }

    #[test]
    fn weights_and_drains_compose() {
        let east = ClusterName::new("east-1").unwrap();
        let west = ClusterName::new("west-1").unwrap();
        let mut policy = FleetPolicy::default();
        let base = policy.effective_weight(&east, &key(), 10);
        assert_eq!(base, 10 * 100 * 100 * 100);
        policy.clusters.insert(
            east.clone(),
            ClusterPolicy {
                drain_percent: 50,
                ..ClusterPolicy::default()
            },
        );
        assert_eq!(policy.effective_weight(&east, &key(), 10), base / 2);
        assert_eq!(policy.effective_weight(&west, &key(), 10), base);
        let mut service = ServicePolicy::default();
        service.drain_percent.insert(east.clone(), 100);
        service.weight_percent.insert(west.clone(), 200);
        policy.services.insert(key(), service);
        assert_eq!(policy.effective_weight(&east, &key(), 10), 0);
        assert_eq!(policy.effective_weight(&west, &key(), 10), 2 * base);
        assert_eq!(policy.effective_weight(&west, &key(), 0), 0);
        // No overflow at the bounds, a million times over.
        let max = u64::from(crate::model::MAX_WEIGHT)
            * u64::from(MAX_WEIGHT_PERCENT)
            * u64::from(MAX_WEIGHT_PERCENT)
            * 100;
        assert!(max.checked_mul(1_000_000).is_some());
    }

    #[test]
    fn precedence() {
        let region = LabelValue::new("eu-central").unwrap();
        let mut policy = FleetPolicy::default();
        let annotation = [Scope::Region(LabelValue::new("us-east").unwrap())];
        assert!(policy.failover(&key(), &[], Some(&region)).is_empty());
        policy.regions.insert(
            region.clone(),
            RegionPolicy {
                failover: vec![Scope::Region(LabelValue::new("us-west").unwrap())].into(),
            },
        );
        assert_eq!(
            policy.failover(&key(), &[], Some(&region))[0].to_string(),
            "region:us-west"
        );
        assert_eq!(
            policy.failover(&key(), &annotation, Some(&region))[0].to_string(),
            "region:us-east"
        );
        policy.services.insert(
            key(),
            ServicePolicy {
                failover: Some(vec![Scope::Provider(LabelValue::new("aws").unwrap())].into()),
                min_healthy: Some(MinHealthy::Percent(50)),
                ..ServicePolicy::default()
            },
        );
        assert_eq!(
            policy.failover(&key(), &annotation, Some(&region))[0].to_string(),
            "provider:aws"
        );
        assert_eq!(
            policy.min_healthy(&key(), Some(MinHealthy::Count(2))),
            Some(MinHealthy::Percent(50))
        );
    }
}
