//! What a view is built under besides the exports: the server's default
//! TTL, the fleet policy, and the registry's interned names. Everything a
//! view precomputes from the policy — effective weights, the failover
//! order and primary resolved to the view's chains, the spill-over
//! threshold, `export-to` — is read from here when the view is built,
//! never per query.

use std::collections::BTreeMap;

use meshdns_proto::model::{FleetPolicy, Scope};

use crate::locality::{ProviderId, RegionId, ZoneId};

/// The registry's interned names, as a view build needs them.
pub trait Interner {
    /// The id of a (region, zone), interned if new.
    fn zone(&mut self, region: Option<&str>, zone: &str) -> ZoneId;
    /// The id of a region some cluster is in (none: no cluster is).
    fn region(&self, region: &str) -> Option<RegionId>;
    /// The id of a provider some cluster is placed in.
    fn provider(&self, provider: &str) -> Option<ProviderId>;
}

/// The policy nobody set: weights as exported, nothing drained.
pub static NO_POLICY: FleetPolicy = FleetPolicy {
    clusters: BTreeMap::new(),
    services: BTreeMap::new(),
    regions: BTreeMap::new(),
};

/// Everything a view build reads besides the exports.
pub struct Context<'a> {
    pub default_ttl: u32,
    pub policy: &'a FleetPolicy,
    pub names: &'a mut dyn Interner,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("default_ttl", &self.default_ttl)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// A failover step or primary: the place as named, and the view's chain
/// it resolves to (`None`: no cluster is there, the step is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub scope: Scope,
    pub chain: Option<StepChain>,
}

/// Which of a view's chains a step reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepChain {
    Region(RegionId),
    Provider(ProviderId),
}

impl Step {
    /// `scope` resolved against the interned names (zones and clusters
    /// are not failover places: they resolve to nothing).
    pub fn resolve(scope: &Scope, names: &dyn Interner) -> Step {
        let chain = match scope {
            Scope::Region(r) => names.region(r.as_str()).map(StepChain::Region),
            Scope::Provider(p) => names.provider(p.as_str()).map(StepChain::Provider),
            Scope::Cluster(_) | Scope::Zone(_) => None,
        };
        Step {
            scope: scope.clone(),
            chain,
        }
    }
}

/// Names of a fixed (region, zone) → id function, for builds outside a
/// registry (tests, benches): regions and providers resolve to nothing.
pub struct ZoneIds<'a>(pub &'a mut dyn FnMut(Option<&str>, &str) -> ZoneId);

impl std::fmt::Debug for ZoneIds<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ZoneIds")
    }
}

impl Interner for ZoneIds<'_> {
    fn zone(&mut self, region: Option<&str>, zone: &str) -> ZoneId {
        (self.0)(region, zone)
    }

    fn region(&self, _: &str) -> Option<RegionId> {
        None
    }

    fn provider(&self, _: &str) -> Option<ProviderId> {
        None
    }
}
