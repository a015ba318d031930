//! A weighted answer: systematic sampling with probability proportional
//! to weight, without replacement, over a [`Cursor`]'s items.
//!
//! The items, in chain order with their effective weights, cover
//! `[0, W)`. When the cursor holds no more items than the answer, every
//! item is answered, from the one holding the origin on (rotated).
//! Otherwise an answer of `k` items is PPS with certainty items: an item
//! heavier than `W'/k'` (the light weight over the points left for light
//! items) is in every answer, found by iterating until no new one; the
//! rest are sampled systematically. In a scaled circle each certain item
//! is exactly one step (`W'`) wide and a light item `k'·w`, so the `k`
//! points `o, o + W', …` (mod `k·W'`), the origin `o` from the rotation,
//! take each certain item once and a light item with probability exactly
//! `k'·w / W'` — never one item twice, never a short answer, with no
//! state between queries. Starting at `o` also rotates which item comes
//! first.
//!
//! Each point is two binary searches (the chain's runs, then a run's
//! segments) and one into the part's running sums when its weights vary;
//! finding the certain items is about `k` such lookups a pass (a walk in
//! steps of `W'/k'` that jumps over the known ones), and certain items
//! are few (fewer than `k`): O(k log n) a pass, nothing allocated. The
//! search runs only when the list's heaviest item, kept by the view as
//! it is built, weighs more than `W/k`; otherwise no item is certain and
//! a sample is `k` lookups.

use super::chain::{Cursor, Kind, find_weight, slot, span_at};
use super::parts::Parts;
use super::view::ClusterView;

/// Most points in one weighted answer (and so most certain items): a
/// DNS answer of more addresses would not fit a UDP response anyway.
pub const MAX_POINTS: usize = 64;

/// Up to `max` items of `kind` from a cursor, sampled by weight.
/// Yields (cluster index, item).
#[derive(Debug)]
pub struct Sample<'a, T> {
    clusters: &'a Parts,
    cursor: Cursor<'a>,
    kind: Kind,
    data: fn(&ClusterView) -> &[T],
    /// Items of `kind`, and their summed weight.
    n: usize,
    total: u128,
    /// Points in the answer, and the next one.
    k: usize,
    j: usize,
    /// Every item is answered (`n ≤ k`): from the origin's item on, in
    /// list order.
    every: bool,
    first: usize,
    /// The certain items (heavier than their share of one point), as
    /// (first weight point, weight), in chain order; their summed weight.
    heavy: [(u128, u128); MAX_POINTS],
    certain: usize,
    heavy_weight: u128,
    /// The origin in the scaled circle (see the module doc).
    origin: u128,
}

impl<'a, T: Copy> Sample<'a, T> {
    pub(super) fn new(
        clusters: &'a Parts,
        cursor: Cursor<'a>,
        kind: Kind,
        data: fn(&ClusterView) -> &[T],
        start: usize,
        max: usize,
    ) -> Self {
        let (n, total, plan) = plan(&cursor, kind, max);
        let mut sample = Sample {
            clusters,
            cursor,
            kind,
            data,
            n,
            total,
            k: 0,
            j: 0,
            every: plan == Plan::Every,
            first: 0,
            heavy: [(0, 0); MAX_POINTS],
            certain: 0,
            heavy_weight: 0,
            origin: 0,
        };
        match plan {
            Plan::Empty => return sample,
            Plan::Every => {
                sample.k = n;
                sample.first = sample.at_weight(origin_wide(start, total)).2;
                return sample;
            }
            Plan::Points { k, search } => {
                sample.k = k;
                if search {
                    sample.find_certain();
                }
            }
        }
        let light = total - sample.heavy_weight;
        if light == 0 {
            // Only the certain items weigh anything (the rest weigh 0).
            sample.k = sample.certain;
            sample.origin = origin_wide(start, sample.certain as u128);
        } else {
            sample.origin = origin_wide(start, sample.k as u128 * light);
        }
        sample
    }

    /// Items the sample has left to yield.
    pub fn len(&self) -> usize {
        self.k - self.j
    }

    /// Whether the sample has nothing left.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds the certain items: each item heavier than `cap`, the light
    /// weight over the points left for light items, until no new one.
    /// A walk over the circle in steps of `cap` meets every item wider
    /// than `cap` and jumps over the ones already known: about `k`
    /// lookups a pass, and each pass but the last finds one at least.
    fn find_certain(&mut self) {
        loop {
            let points = (self.k - self.certain) as u128;
            let light = self.total - self.heavy_weight;
            let cap = (light / points).max(1);
            let mut found = false;
            let mut point = 0;
            while point < self.total {
                let (_, _, _, from, weight) = self.at_weight(point);
                let known = self.heavy[..self.certain].iter().any(|h| h.0 == from);
                if known || weight * points > light {
                    if !known && self.certain < self.k - 1 {
                        let at = self.heavy[..self.certain].partition_point(|h| h.0 < from);
                        self.heavy.copy_within(at..self.certain, at + 1);
                        self.heavy[at] = (from, weight);
                        self.certain += 1;
                        self.heavy_weight += weight;
                        found = true;
                    }
                    point = from + weight;
                } else {
                    point += cap;
                }
            }
            if !found {
                return;
            }
        }
    }

    /// The raw weight point of scaled point `x`. Scaled, each certain
    /// item is exactly one step (the light weight) wide and each light
    /// item `k'` times its weight, so `k` points one step apart take
    /// each certain item once and a light item with probability
    /// `k'·w / light`: PPS with certainty items, never one item twice.
    fn raw(&self, x: u128) -> u128 {
        let step = self.total - self.heavy_weight;
        let points = (self.k - self.certain) as u128;
        let mut before = 0u128;
        for (i, (from, weight)) in self.heavy[..self.certain].iter().enumerate() {
            let at = (from - before) * points + i as u128 * step;
            if x < at {
                return div(x - i as u128 * step, points) + before;
            }
            if x < at + step {
                return *from;
            }
            before += weight;
        }
        div(x - self.certain as u128 * step, points) + before
    }

    /// The cluster, position in its list and ordinal in the cursor's list
    /// of the item holding weight point `point`, and the item's first
    /// weight point and weight.
    fn at_weight(&self, point: u128) -> (u32, u32, usize, u128, u128) {
        let k = slot(self.kind);
        let chain = self.cursor.chain;
        let in_chain = chain.weight(self.kind);
        if point < in_chain {
            let (run, before_run) = find_weight(&chain.runs, self.kind, point);
            let rest = point - before_run.w[k];
            let segments = chain.run(self.cursor.table, run);
            let (index, before) = find_weight(segments, self.kind, rest);
            // Within one part: below its weight, a u64 (see `Ends`).
            let cluster = segments[index].0.cluster;
            let span = span_at(segments, index, self.kind);
            let part = &self.clusters[cluster as usize];
            let within = (rest - before.weight(k)) as u64;
            let pos = part.weights.find(self.kind, span, within);
            let ordinal = (before_run.n[k] + before.n[k] + (pos - span.start)) as usize;
            let (from, weight) = item_at(part, self.kind, span, pos, point, within);
            return (cluster, pos, ordinal, from, weight);
        }
        let mut rest = point - in_chain;
        let mut ordinal = chain.total(self.kind);
        let mut last = (0, 0, 0, point, 1);
        for segment in &self.cursor.extra[..self.cursor.extras] {
            let span = segment.span(self.kind);
            let weight = u128::from(segment.weight(self.kind));
            if span.is_empty() {
                continue;
            }
            let part = &self.clusters[segment.cluster as usize];
            if rest < weight {
                let pos = part.weights.find(self.kind, span, rest as u64);
                let (from, w) = item_at(part, self.kind, span, pos, point, rest as u64);
                return (
                    segment.cluster,
                    pos,
                    ordinal + (pos - span.start) as usize,
                    from,
                    w,
                );
            }
            rest -= weight;
            ordinal += span.len() as usize;
            last = (segment.cluster, span.end - 1, ordinal - 1, point, 1);
        }
        // Only for a point past the total, which nothing asks.
        last
    }

    /// The cluster and position of the item at `ordinal`.
    fn at_ordinal(&self, ordinal: usize) -> (u32, u32) {
        let chain = self.cursor.chain;
        if ordinal < chain.total(self.kind) {
            let table = self.cursor.table;
            let (run, index, pos) = chain.locate(table, self.kind, ordinal);
            return (chain.run(table, run)[index].0.cluster, pos);
        }
        let mut rest = (ordinal - chain.total(self.kind)) as u32;
        let mut last = (0, 0);
        for segment in &self.cursor.extra[..self.cursor.extras] {
            let span = segment.span(self.kind);
            if rest < span.len() {
                return (segment.cluster, span.start + rest);
            }
            rest -= span.len();
            if !span.is_empty() {
                last = (segment.cluster, span.end - 1);
            }
        }
        last
    }

    fn item(&self, (cluster, pos): (u32, u32)) -> (u32, T) {
        let items = (self.data)(&self.clusters[cluster as usize]);
        (cluster, items[pos as usize])
    }
}

/// How many items a sample of up to `max` items of `kind` from `cursor`
/// holds — its [`len`](Sample::len) when new — without building one
/// (about 2 KiB): what an encoder sizes its answer by before it walks.
/// Only when an item may be certain (one heavier than its share of a
/// point: rare) is the sample built to find out.
pub(super) fn points(clusters: &Parts, cursor: Cursor<'_>, kind: Kind, max: usize) -> usize {
    match plan(&cursor, kind, max) {
        (_, _, Plan::Empty) => 0,
        (n, _, Plan::Every) => n,
        (_, _, Plan::Points { k, search: false }) => k,
        (_, _, Plan::Points { search: true, .. }) => {
            let nothing: fn(&ClusterView) -> &[()] = |_| &[];
            Sample::new(clusters, cursor, kind, nothing, 0, max).len()
        }
    }
}

/// What a sample of up to `max` items is, before its origin is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// No item of the kind, or none weighs anything: an empty answer.
    Empty,
    /// No more items than the answer: every one, rotated.
    Every,
    /// `k` points, after a search for certain items when `search`.
    Points { k: usize, search: bool },
}

/// The items of `kind` in `cursor`, their summed weight and the plan of
/// a sample of up to `max` of them.
fn plan(cursor: &Cursor<'_>, kind: Kind, max: usize) -> (usize, u128, Plan) {
    let n = cursor.total(kind);
    let total = cursor.weight(kind);
    if total == 0 || n == 0 {
        return (n, total, Plan::Empty);
    }
    if n <= max {
        return (n, total, Plan::Every);
    }
    let k = max.min(MAX_POINTS);
    // An item is certain when it weighs more than its share of one point
    // (`W/k`); the view keeps each list's heaviest item, so the usual
    // sample (no such item) skips the search. Without certain items
    // every point is a light one: `k` of them.
    let search = u128::from(cursor.heaviest()) * k as u128 > total;
    (n, total, Plan::Points { k, search })
}

/// A sample's origin (or a walk's first item) in `[0, total)` from a
/// rotation offset: the
/// offset's low 48 bits read as a fraction of the circle, scaled by the
/// total. The rotation is a Weyl sequence shifted right by 16 bits, so
/// its high bits are the well-spread ones; `start % total` would read
/// its low bits, which form a lattice (with a total of 40, one of the
/// demo's five targets was never the origin).
pub(super) fn origin(start: usize, total: u64) -> u64 {
    const BITS: u32 = 48;
    let fraction = (start as u64) & ((1 << BITS) - 1);
    ((u128::from(fraction) * u128::from(total)) >> BITS) as u64
}

/// The first weight point and the weight of item `pos` of `span`, which
/// holds `point`, `within` past the span's first weight point.
fn item_at(
    part: &ClusterView,
    kind: Kind,
    span: super::chain::Span,
    pos: u32,
    point: u128,
    within: u64,
) -> (u128, u128) {
    let before = part.weights.sum(
        kind,
        super::chain::Span {
            start: span.start,
            end: pos,
        },
    );
    (
        point - u128::from(within - before),
        u128::from(part.weights.of(kind, pos)),
    )
}

/// `x / d` (`d` at most [`MAX_POINTS`]): in 64 bits when `x` fits, the
/// usual case, as a 128-bit division is a library call several times
/// slower.
fn div(x: u128, d: u128) -> u128 {
    match (u64::try_from(x), u64::try_from(d)) {
        (Ok(x), Ok(d)) => u128::from(x / d),
        _ => x / d,
    }
}

/// [`origin`] over a weight circle or a scaled one (below 2¹⁰³, see
/// `Ends`): the high and low halves of the total apart, so nothing
/// overflows.
fn origin_wide(start: usize, total: u128) -> u128 {
    const BITS: u32 = 48;
    let fraction = u128::from((start as u64) & ((1 << BITS) - 1));
    (total >> BITS) * fraction + (((total & ((1 << BITS) - 1)) * fraction) >> BITS)
}

impl<T: Copy> Iterator for Sample<'_, T> {
    type Item = (u32, T);

    fn next(&mut self) -> Option<(u32, T)> {
        if self.j >= self.k {
            return None;
        }
        let j = self.j;
        self.j += 1;
        if self.every {
            return Some(self.item(self.at_ordinal((self.first + j) % self.n)));
        }
        let step = self.total - self.heavy_weight;
        if step == 0 {
            let from = self.heavy[(self.origin as usize + j) % self.certain].0;
            let (cluster, pos, ..) = self.at_weight(from);
            return Some(self.item((cluster, pos)));
        }
        // Below twice the circle (the origin and `j` steps are each within
        // it): one subtraction rather than a 128-bit remainder.
        let circle = self.k as u128 * step;
        let mut x = self.origin + j as u128 * step;
        if x >= circle {
            x -= circle;
        }
        let (cluster, pos, ..) = self.at_weight(self.raw(x));
        Some(self.item((cluster, pos)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The origin over circles up to the largest a sample can have
    /// (below 2¹⁰³): in range, and spread like the rotation's fraction.
    #[test]
    fn origin_at_the_bounds() {
        for total in [1u128, 40, u128::from(u64::MAX) * 3, 1 << 102] {
            for start in [0usize, 1 << 47, (1 << 48) - 1, usize::MAX] {
                let o = origin_wide(start, total);
                assert!(o < total, "{start:#x} of {total}: {o}");
            }
            // Half the circle's fraction: half the total (rounded down).
            assert_eq!(origin_wide(1 << 47, total), total / 2);
        }
    }
}
