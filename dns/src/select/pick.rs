//! A selection's result: the chosen targets as a cursor over the view's
//! chains, and the walk that answers from them — the plain rotation when
//! every target weighs the same (in the service, or in the chosen tier),
//! a weighted sample when not.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::snapshot::{
    Chain, ClusterView, Cursor, Kind, Sample, Segment, ServiceView, Table, Target, Walk, chain,
};

/// The locality tiers, nearest first, then the policy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// The asker's own node (affinity `node`, askers that are nodes).
    Node,
    Cluster,
    Zone,
    Region,
    /// Clusters with the asker's cloud provider.
    Provider,
    /// A step of the failover order.
    Failover,
    /// The primary every asker is pinned to while it is healthy enough.
    Primary,
    Any,
    /// Only weight-0 targets are healthy: they answer.
    LastResort,
}

/// The chosen targets: a chain of clusters' runs, plus up to two runs of
/// the asker's own cluster (the zone tier is the zone's chain plus the
/// asker's cluster's targets outside that zone; the node tier is a node's
/// runs).
#[derive(Debug, Clone, Copy)]
pub struct Pick<'a> {
    pub tier: Tier,
    view: &'a ServiceView,
    targets: Cursor<'a>,
    /// Answers are weighted samples (the targets weigh differently).
    weighted: bool,
}

impl<'a> Pick<'a> {
    /// A pick of one service-wide chain.
    pub fn one(tier: Tier, view: &'a ServiceView, chain: &'a Chain) -> Self {
        Pick {
            tier,
            view,
            targets: Cursor::of(view.table(), chain),
            // Weight-0 targets all weigh the same: nothing to sample by.
            weighted: view.weighted && tier != Tier::LastResort,
        }
    }

    /// The cluster tier: cluster `index`'s own targets of positive weight
    /// (its weight-0 ones are no tier: the last resort is).
    pub fn cluster(view: &'a ServiceView, index: usize) -> Self {
        let whole = view.clusters[index].whole(index as u32);
        Self::extra(
            Tier::Cluster,
            view,
            [whole, Segment::default()],
            1,
            view.weighted,
        )
    }

    /// The answer to the `<cluster>.<svc>.<ns>` name: cluster `index`'s
    /// own targets, or its weight-0 ones when it has nothing else healthy
    /// (the name asks for that cluster, whatever else is healthy).
    pub fn cluster_name(view: &'a ServiceView, index: usize) -> Self {
        let part = &view.clusters[index];
        let whole = part.whole(index as u32);
        let (segment, weighted) = if whole.targets.is_empty() {
            (part.reserve(index as u32), false)
        } else {
            (whole, view.weighted)
        };
        Self::extra(
            Tier::Cluster,
            view,
            [segment, Segment::default()],
            1,
            weighted,
        )
    }

    /// Cluster `index`'s targets on node `node`.
    pub fn node(view: &'a ServiceView, index: usize, node: u32) -> Self {
        let (segments, n) = view.clusters[index].on_node(node, index as u32);
        Self::extra(Tier::Node, view, segments, n, view.weighted)
    }

    /// A zone's chain and the asker's cluster's targets outside it.
    pub fn zone(view: &'a ServiceView, zone: &'a Chain, extra: [Segment; 2], n: usize) -> Self {
        Pick {
            tier: Tier::Zone,
            view,
            targets: Cursor::with_extra(view.table(), zone, extra, n),
            weighted: view.weighted,
        }
    }

    fn extra(
        tier: Tier,
        view: &'a ServiceView,
        extra: [Segment; 2],
        n: usize,
        weighted: bool,
    ) -> Self {
        Pick {
            tier,
            view,
            targets: Cursor::with_extra(Table::EMPTY, &chain::EMPTY, extra, n),
            weighted,
        }
    }

    /// The same targets as another tier.
    pub fn as_tier(self, tier: Tier) -> Self {
        Pick { tier, ..self }
    }

    /// Healthy targets in the pick.
    pub fn len(&self) -> usize {
        self.targets.total(Kind::Targets)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Exported endpoints (healthy or not, of positive weight) the pick's
    /// places hold: what a percentage min-healthy is a percentage of.
    pub fn exported(&self) -> usize {
        self.targets.exported()
    }

    /// Healthy endpoints of positive weight in the pick's targets (a
    /// ClusterIp target counts those behind it): what min-healthy counts.
    pub fn healthy(&self) -> usize {
        self.targets.healthy()
    }

    /// The summed effective weight of the pick's targets.
    pub fn weight(&self) -> u128 {
        self.targets.weight(Kind::Targets)
    }

    /// Whether answers are weighted samples.
    pub fn weighted(&self) -> bool {
        self.weighted
    }

    fn walk<T: Copy>(
        &self,
        kind: Kind,
        data: fn(&ClusterView) -> &[T],
        start: usize,
        max: usize,
    ) -> Picked<'a, T> {
        let clusters = &self.view.clusters;
        if self.sampled(kind) {
            Picked::Sample(self.targets.sample(clusters, kind, data, start, max))
        } else {
            Picked::Walk(self.targets.walk(clusters, kind, data, start, max))
        }
    }

    /// Whether answers of `kind` are weighted samples, not the rotation.
    fn sampled(&self, kind: Kind) -> bool {
        self.weighted && !self.targets.uniform(kind)
    }

    /// How many items of `kind` an answer of at most `max` holds: what
    /// the walk yields, without walking (the rotation answers
    /// `min(total, max)`; a sample's points are counted without building
    /// it, [`Cursor::points`]).
    pub fn count(&self, kind: Kind, max: usize) -> usize {
        if self.sampled(kind) {
            self.targets.points(&self.view.clusters, kind, max)
        } else {
            self.targets.total(kind).min(max)
        }
    }

    /// Calls `f` with each of up to `max` items of `kind`, rotated (or
    /// sampled) by `start`, and its cluster's index. The answer path's
    /// form of [`walk`](Self::walk): the walk or sample is built where it
    /// is used and never moved (a sample carries its certain items
    /// inline, about 2 KiB, and the iterators' enum is that large).
    fn each<T: Copy>(
        &self,
        kind: Kind,
        data: fn(&ClusterView) -> &[T],
        start: usize,
        max: usize,
        mut f: impl FnMut(u32, T),
    ) {
        let clusters = &self.view.clusters;
        if self.sampled(kind) {
            let mut sample = self.targets.sample(clusters, kind, data, start, max);
            for (cluster, item) in &mut sample {
                f(cluster, item);
            }
        } else {
            let mut walk = self.targets.walk(clusters, kind, data, start, max);
            for (cluster, item) in &mut walk {
                f(cluster, item);
            }
        }
    }

    /// [`v4_by_cluster`](Self::v4_by_cluster) as calls to `f`: what the
    /// encoders use.
    pub fn each_v4(&self, start: usize, max: usize, f: impl FnMut(u32, Ipv4Addr)) {
        self.each(Kind::V4, |c| &c.targets.v4, start, max, f);
    }

    /// [`v6_by_cluster`](Self::v6_by_cluster) as calls to `f`.
    pub fn each_v6(&self, start: usize, max: usize, f: impl FnMut(u32, Ipv6Addr)) {
        self.each(Kind::V6, |c| &c.targets.v6, start, max, f);
    }

    /// [`targets`](Self::targets) as calls to `f`.
    pub fn each_target(&self, start: usize, max: usize, mut f: impl FnMut(Target)) {
        self.each(
            Kind::Targets,
            |c| &c.targets.targets,
            start,
            max,
            |cluster, t| f(t.in_cluster(cluster)),
        );
    }

    /// Up to `max` IPv4 addresses, rotated (or sampled) by `start`.
    pub fn v4(&self, start: usize, max: usize) -> impl Iterator<Item = Ipv4Addr> + 'a {
        self.walk(Kind::V4, |c| &c.targets.v4, start, max)
            .map(|(_, a)| a)
    }

    /// Up to `max` IPv6 addresses, rotated (or sampled) by `start`.
    pub fn v6(&self, start: usize, max: usize) -> impl Iterator<Item = Ipv6Addr> + 'a {
        self.walk(Kind::V6, |c| &c.targets.v6, start, max)
            .map(|(_, a)| a)
    }

    /// [`v4`](Self::v4), each address with its cluster's index in the
    /// view (for the answers-by-cluster counters).
    pub fn v4_by_cluster(
        &self,
        start: usize,
        max: usize,
    ) -> impl Iterator<Item = (u32, Ipv4Addr)> + 'a {
        self.walk(Kind::V4, |c| &c.targets.v4, start, max)
    }

    /// [`v6`](Self::v6), each address with its cluster's index in the view.
    pub fn v6_by_cluster(
        &self,
        start: usize,
        max: usize,
    ) -> impl Iterator<Item = (u32, Ipv6Addr)> + 'a {
        self.walk(Kind::V6, |c| &c.targets.v6, start, max)
    }

    /// Up to `max` targets (for SRV), rotated (or sampled) by `start`,
    /// each naming its index in the service's clusters.
    pub fn targets(&self, start: usize, max: usize) -> impl Iterator<Item = Target> + 'a {
        self.walk(Kind::Targets, |c| &c.targets.targets, start, max)
            .map(|(cluster, t)| t.in_cluster(cluster))
    }
}

/// The items of a pick: rotated, or sampled by weight.
// A sample carries its certain items inline (about 1 KiB): it lives on the
// stack for one answer, and boxing it would allocate on every query.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Picked<'a, T> {
    Walk(Walk<'a, T>),
    Sample(Sample<'a, T>),
}

impl<T: Copy> Iterator for Picked<'_, T> {
    type Item = (u32, T);

    fn next(&mut self) -> Option<(u32, T)> {
        match self {
            Picked::Walk(w) => w.next(),
            Picked::Sample(s) => s.next(),
        }
    }
}
