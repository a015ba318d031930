//! Interned region and zone names: a view keys its zone and region lists
//! by small ids, not strings.

use std::collections::{BTreeMap, HashMap};

use meshdns_proto::model::ClusterName;
use tracing::info;

use super::ClusterEntry;

/// Interned region and (region, zone) names. An id is never reused, so a
/// view built earlier stays valid; names no cluster or export uses any
/// more are forgotten by [`Names::collect`], so a member cannot grow the
/// table without bound by cycling through zone names.
pub(super) struct Names {
    /// foldhash, seeded per process (as the service map): a member names
    /// zones, and every endpoint's zone is looked up per view build.
    pub(super) ids: HashMap<String, u32, foldhash::fast::RandomState>,
    pub(super) next: u32,
    /// Collect when the table grows past this.
    pub(super) collect_at: usize,
    /// The regions the policy in force names a default failover order
    /// for: interned whether or not a cluster is there yet, and kept
    /// while the policy names them, so a view built before a region's
    /// first cluster arrives already holds its order under the id that
    /// cluster gets ([`Names::pin_regions`]).
    pub(super) pinned: std::collections::HashSet<String>,
    /// The last key looked up, kept so that a name already interned (all
    /// but the first of a storm's million zone lookups) costs no
    /// allocation (perf: formatting a new key per endpoint was 5% of a
    /// restart storm, benches/README.md).
    scratch: String,
}

/// The table is collected when it holds this many names, or twice what
/// the last collection kept.
pub(super) const NAMES_COLLECT_MIN: usize = 4096;

impl Default for Names {
    fn default() -> Self {
        Names {
            ids: HashMap::default(),
            next: 0,
            collect_at: NAMES_COLLECT_MIN,
            pinned: std::collections::HashSet::new(),
            scratch: String::new(),
        }
    }
}

impl Names {
    pub(super) fn id(&mut self, key: String) -> u32 {
        let next = &mut self.next;
        *self.ids.entry(key).or_insert_with(|| {
            let id = *next;
            *next = next.wrapping_add(1);
            id
        })
    }

    pub(super) fn region_key(region: &str) -> String {
        format!("r\0{region}")
    }

    pub(super) fn zone_key(region: Option<&str>, zone: &str) -> String {
        let mut key = String::new();
        Self::zone_key_into(&mut key, region, zone);
        key
    }

    fn zone_key_into(key: &mut String, region: Option<&str>, zone: &str) {
        key.clear();
        key.push_str("z\0");
        key.push_str(region.unwrap_or(""));
        key.push('\0');
        key.push_str(zone);
    }

    pub(super) fn provider_key(provider: &str) -> String {
        format!("p\0{provider}")
    }

    pub(super) fn provider(&mut self, provider: &str) -> u32 {
        self.id(Self::provider_key(provider))
    }

    pub(super) fn region(&mut self, region: &str) -> u32 {
        self.id(Self::region_key(region))
    }

    pub(super) fn zone(&mut self, region: Option<&str>, zone: &str) -> u32 {
        let mut key = std::mem::take(&mut self.scratch);
        Self::zone_key_into(&mut key, region, zone);
        let id = match self.ids.get(key.as_str()) {
            Some(id) => *id,
            None => self.id(key.clone()),
        };
        self.scratch = key;
        id
    }

    /// Interns `regions` (the policy's region defaults) and keeps them
    /// until the next call, in place of the ones pinned before.
    pub(super) fn pin_regions<'a>(&mut self, regions: impl IntoIterator<Item = &'a str>) {
        self.pinned = regions.into_iter().map(Self::region_key).collect();
        for key in self.pinned.clone() {
            self.id(key);
        }
    }

    /// Forgets the names no cluster and no export of `clusters` uses, once
    /// the table has grown enough to be worth the walk (O(endpoints)).
    pub(super) fn collect(&mut self, clusters: &BTreeMap<ClusterName, ClusterEntry>) {
        if self.ids.len() < self.collect_at {
            return;
        }
        let mut used = self.pinned.clone();
        for entry in clusters.values() {
            let region = entry.cluster.region.as_ref().map(|r| r.as_str());
            if let Some(r) = region {
                used.insert(Self::region_key(r));
            }
            if let Some(z) = &entry.cluster.zone {
                used.insert(Self::zone_key(region, z.as_str()));
            }
            if let Some((_, p)) = &entry.place.provider {
                used.insert(Self::provider_key(p));
            }
            for export in entry.services.values() {
                for ep in export.endpoints() {
                    if let Some(z) = &ep.zone {
                        used.insert(Self::zone_key(region, z.as_str()));
                    }
                }
            }
        }
        let before = self.ids.len();
        self.ids.retain(|k, _| used.contains(k));
        self.collect_at = (self.ids.len() * 2).max(NAMES_COLLECT_MIN);
        info!(
            before,
            after = self.ids.len(),
            "interned zone and region names collected"
        );
    }
}

/// What a view build looks up: zones interned as they come; regions and
/// providers only as clusters placed them, or (regions) as the policy
/// names a default failover order for them (a failover step naming a
/// region no cluster is in resolves to nothing).
impl crate::snapshot::Interner for Names {
    fn zone(&mut self, region: Option<&str>, zone: &str) -> u32 {
        Names::zone(self, region, zone)
    }

    fn region(&self, region: &str) -> Option<u32> {
        self.ids.get(&Self::region_key(region)).copied()
    }

    fn provider(&self, provider: &str) -> Option<u32> {
        self.ids.get(&Self::provider_key(provider)).copied()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meshdns_proto::model::Cluster;

    use super::*;
    use crate::metrics::Metrics;
    use crate::registry::Registry;

    #[test]
    fn unused_names_are_collected_and_ids_never_reused() {
        let mut names = Names::default();
        let kept = names.zone(Some("r"), "kept");
        for i in 0..NAMES_COLLECT_MIN {
            names.zone(Some("r"), &format!("z{i}"));
        }
        let metrics = Arc::new(Metrics::new());
        let registry = Registry::new(5, false, metrics);
        let cluster = Cluster {
            name: ClusterName::new("c").unwrap(),
            region: Some(meshdns_proto::model::LabelValue::new("r").unwrap()),
            zone: Some(meshdns_proto::model::LabelValue::new("kept").unwrap()),
            client_cidrs: vec![],
            version: String::new(),
            provider: None,
            nodes: Vec::new(),
        };
        registry.hello(cluster, usize::MAX);
        let state = registry.lock();
        names.collect(&state.clusters);
        assert_eq!(names.ids.len(), 1, "only the cluster's zone is in use");
        assert_eq!(names.zone(Some("r"), "kept"), kept);
        let fresh = names.zone(Some("r"), "z0");
        assert!(fresh > kept + NAMES_COLLECT_MIN as u32 - 1, "{fresh}");
    }

    #[test]
    fn regions_the_policy_names_keep_their_ids_through_a_collection() {
        let mut names = Names::default();
        names.pin_regions(["eu-central"]);
        let pinned = names.region("eu-central");
        for i in 0..NAMES_COLLECT_MIN {
            names.region(&format!("r{i}"));
        }
        names.collect(&BTreeMap::new());
        assert_eq!(names.ids.len(), 1, "only the pinned region is kept");
        assert_eq!(names.region("eu-central"), pinned);
        // Unpinned by the next policy: collected like any other name.
        names.pin_regions([]);
        names.collect_at = 0;
        names.collect(&BTreeMap::new());
        assert!(names.ids.is_empty());
    }
}
