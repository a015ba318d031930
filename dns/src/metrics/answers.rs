//! What answers were made of: the locality tier chosen, and the clusters
//! whose endpoints were served. Counted on both answer paths with atomics
//! indexed by small integers: a tier's index, and a cluster's registry id
//! ([`ClusterId`], assigned once per registry lifetime) into a segmented
//! array that never moves, so an increment is a bounds check and an
//! atomic add — no map, no string, no lock, no allocation.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::locality::ClusterId;
use crate::select::Tier;

/// The `tier` label of `meshdns_dns_answers_by_tier_total`: the
/// locality tiers, an asker that maps to no cluster (no preference: every
/// healthy endpoint), an answer served from stale clusters only; then the
/// traffic policy's: the node tier, the provider tier, a failover step,
/// the primary, and weight-0 targets as the last resort.
pub const TIERS: [&str; 11] = [
    "cluster",
    "zone",
    "region",
    "any",
    "unknown_asker",
    "fail_open",
    "node",
    "provider",
    "failover",
    "primary",
    "last_resort",
];

/// An index into [`TIERS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerTier(u8);

impl AnswerTier {
    /// The tier an answer came from: `fail_open` wins (those answers are
    /// what an operator must see), then an asker of no known place.
    pub fn of(tier: Tier, located: bool, fail_open: bool) -> Self {
        AnswerTier(if fail_open {
            5
        } else {
            match tier {
                // Whoever asks: the policy chose these, not the place.
                Tier::Primary => 9,
                Tier::LastResort => 10,
                _ if !located => 4,
                Tier::Cluster => 0,
                Tier::Zone => 1,
                Tier::Region => 2,
                Tier::Any => 3,
                Tier::Node => 6,
                Tier::Provider => 7,
                Tier::Failover => 8,
            }
        })
    }

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn name(self) -> &'static str {
        TIERS[self.index()]
    }
}

/// Most distinct serving clusters one answer records. An answer holds at
/// most `--max-answers` records; past this many clusters the rest of an
/// answer's clusters go uncounted (`MAX_SERVED` is well above what a
/// resolver takes from one answer).
pub const MAX_SERVED: usize = 16;

/// The distinct clusters whose endpoints one answer carried, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Served {
    ids: [ClusterId; MAX_SERVED],
    len: u8,
}

impl Served {
    /// Notes a record from cluster `id`. A walk yields a cluster's
    /// records together, so the last one is checked first.
    pub fn add(&mut self, id: ClusterId) {
        let len = usize::from(self.len);
        if len > 0 && self.ids[len - 1] == id {
            return;
        }
        if len == MAX_SERVED || self.ids[..len].contains(&id) {
            return;
        }
        self.ids[len] = id;
        self.len += 1;
    }

    pub fn ids(&self) -> &[ClusterId] {
        &self.ids[..usize::from(self.len)]
    }
}

/// Ids below this have their counters allocated up front.
const FIRST_SEGMENT: usize = 1024;
/// Segment `k > 0` holds ids `[1024 << (k - 1), 1024 << k)`: 23 segments
/// cover every `u32`.
const SEGMENTS: usize = 23;

/// Where id `id` lives: (segment, offset).
fn slot(id: ClusterId) -> (usize, usize) {
    let id = id as usize;
    if id < FIRST_SEGMENT {
        return (0, id);
    }
    let k = (usize::BITS - (id / FIRST_SEGMENT).leading_zeros()) as usize;
    (k, id - (FIRST_SEGMENT << (k - 1)))
}

fn segment_len(k: usize) -> usize {
    if k == 0 {
        FIRST_SEGMENT
    } else {
        FIRST_SEGMENT << (k - 1)
    }
}

/// Answers that carried each cluster's endpoints, indexed by cluster id.
/// Segments are allocated by [`ServedByCluster::reserve`], called where
/// a new snapshot is loaded (once per UDP batch or TCP query: a load and
/// a compare) and at scrape time; an id beyond the reserved segments
/// (impossible once its snapshot was loaded) is counted in `unreserved`
/// rather than allocate on the answer path.
#[derive(Debug)]
struct ClusterCounters {
    segments: [OnceLock<Box<[AtomicU64]>>; SEGMENTS],
    /// Every id below this has its counter.
    capacity: AtomicU64,
    unreserved: AtomicU64,
}

impl ClusterCounters {
    fn new() -> Self {
        let counters = ClusterCounters {
            segments: std::array::from_fn(|_| OnceLock::new()),
            capacity: AtomicU64::new(0),
            unreserved: AtomicU64::new(0),
        };
        counters.reserve(0);
        counters
    }

    fn reserve(&self, max_id: ClusterId) {
        if u64::from(max_id) < self.capacity.load(Ordering::Acquire) {
            return;
        }
        let (last, _) = slot(max_id);
        for k in 0..=last {
            self.segments[k]
                .get_or_init(|| (0..segment_len(k)).map(|_| AtomicU64::new(0)).collect());
        }
        let capacity = (0..=last).map(segment_len).sum::<usize>() as u64;
        self.capacity.fetch_max(capacity, Ordering::AcqRel);
    }

    fn inc(&self, id: ClusterId) {
        let (k, offset) = slot(id);
        match self.segments[k].get() {
            Some(segment) => segment[offset].fetch_add(1, Ordering::Relaxed),
            None => self.unreserved.fetch_add(1, Ordering::Relaxed),
        };
    }

    fn get(&self, id: ClusterId) -> u64 {
        let (k, offset) = slot(id);
        self.segments[k]
            .get()
            .map_or(0, |s| s[offset].load(Ordering::Relaxed))
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabel {
    cluster: String,
}

/// `meshdns_dns_answers_by_cluster_total{cluster}`: answers that carried
/// at least one record from the cluster. The label is bounded by the
/// clusters the registry knows: the names are those of the snapshot's
/// places, set at scrape time ([`ServedByCluster::name_clusters`]).
#[derive(Debug, Clone)]
pub struct ServedByCluster {
    counters: std::sync::Arc<ClusterCounters>,
    names: std::sync::Arc<std::sync::Mutex<Vec<(ClusterId, String)>>>,
}

impl Default for ServedByCluster {
    fn default() -> Self {
        ServedByCluster {
            counters: std::sync::Arc::new(ClusterCounters::new()),
            names: Default::default(),
        }
    }
}

impl ServedByCluster {
    /// Makes sure ids up to `max_id` have counters. Cheap when they do.
    pub fn reserve(&self, max_id: ClusterId) {
        self.counters.reserve(max_id);
    }

    /// Counts one answer's serving clusters. Lock-free.
    pub fn record(&self, served: &Served) {
        for &id in served.ids() {
            self.counters.inc(id);
        }
    }

    /// The clusters to expose and their names (scrape time only).
    pub fn name_clusters(&self, mut names: Vec<(ClusterId, String)>) {
        names.sort();
        if let Some(max) = names.iter().map(|(id, _)| *id).max() {
            self.reserve(max);
        }
        if let Ok(mut held) = self.names.lock() {
            *held = names;
        }
    }

    /// Answers counted for cluster `id`.
    pub fn get(&self, id: ClusterId) -> u64 {
        self.counters.get(id)
    }

    /// Answers whose cluster had no counter yet.
    pub fn unreserved(&self) -> u64 {
        self.counters.unreserved.load(Ordering::Relaxed)
    }
}

impl TypedMetric for ServedByCluster {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ServedByCluster {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let names = match self.names.lock() {
            Ok(names) => names.clone(),
            Err(_) => return Ok(()),
        };
        for (id, name) in names {
            let label = ClusterLabel { cluster: name };
            let mut family = encoder.encode_family(&label)?;
            family.encode_counter::<NoLabelSet, _, u64>(&self.counters.get(id), None)?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_tile_every_id() {
        let mut expected = (0, 0);
        for id in (0..5000u32).chain([u32::MAX - 1, u32::MAX]) {
            let (k, offset) = slot(id);
            assert!(k < SEGMENTS, "{id}");
            assert!(offset < segment_len(k), "{id}: {k} {offset}");
            if id < 5000 {
                assert_eq!((k, offset), expected, "{id}");
                expected = if offset + 1 == segment_len(k) {
                    (k + 1, 0)
                } else {
                    (k, offset + 1)
                };
            }
        }
        assert_eq!(
            slot(u32::MAX),
            (SEGMENTS - 1, segment_len(SEGMENTS - 1) - 1)
        );
    }

    #[test]
    fn served_is_distinct_and_bounded() {
        let mut served = Served::default();
        for id in [3, 3, 4, 3, 5, 4] {
            served.add(id);
        }
        assert_eq!(served.ids(), &[3, 4, 5]);
        for id in 0..100 {
            served.add(id);
        }
        assert_eq!(served.ids().len(), MAX_SERVED);
    }

    #[test]
    fn counts_by_id_and_reserves_lazily() {
        let by_cluster = ServedByCluster::default();
        let mut served = Served::default();
        served.add(1);
        served.add(5000);
        by_cluster.record(&served);
        assert_eq!((by_cluster.get(1), by_cluster.get(5000)), (1, 0));
        assert_eq!(by_cluster.unreserved(), 1);
        by_cluster.reserve(5000);
        by_cluster.record(&served);
        assert_eq!((by_cluster.get(1), by_cluster.get(5000)), (2, 1));
    }
}
