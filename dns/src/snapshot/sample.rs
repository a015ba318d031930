//! A weighted answer: systematic sampling with probability proportional
//! to weight, without replacement, over a [`Cursor`]'s items.
//!
//! The items, in chain order with their effective weights, cover
//! `[0, W)`. An answer of `k` items takes the items holding the points
//! `o, o + W/k, …, o + (k−1)·W/k` (mod `W`), the origin `o` from the
//! rotation. With `o` uniform, an item of weight `w ≤ W/k` is in an
//! answer with probability exactly `k·w/W`, so its share of answer slots
//! is `w/W` — whatever `k`, and with no state between queries. An item
//! heavier than `W/k` holds more than one point: it is in every answer
//! (a share cannot exceed one slot per answer) and each extra point goes
//! to the next item after the last one taken, so an answer still carries
//! `k` distinct items unless heavy items sit at the very end of the
//! circle. Starting at `o` also rotates which item comes first.
//!
//! Each point is two binary searches (the chain's runs, then a run's
//! segments) and one into the part's running sums when its weights vary:
//! O(k log n), nothing allocated.

use super::chain::{Cursor, Kind, find_weight, slot};
use super::parts::Parts;
use super::view::ClusterView;

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
    total: u64,
    /// Points in the answer, and the next one.
    k: usize,
    j: usize,
    origin: u64,
    /// The first item taken (an ordinal in the cursor's list), and the
    /// last one, counted from it.
    first: usize,
    last: usize,
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
        let n = cursor.total(kind);
        let total = cursor.weight(kind);
        Sample {
            clusters,
            cursor,
            kind,
            data,
            n,
            total,
            k: if total == 0 { 0 } else { n.min(max) },
            j: 0,
            origin: origin(start, total),
            first: 0,
            last: 0,
        }
    }

    /// The cluster, position in its list and ordinal in the cursor's list
    /// of the item holding weight point `point`.
    fn at_weight(&self, point: u64) -> (u32, u32, usize) {
        let k = slot(self.kind);
        let chain = self.cursor.chain;
        let in_chain = chain.weight(self.kind);
        if point < in_chain {
            let (run, before_run) = find_weight(&chain.runs, self.kind, point);
            let rest = point - before_run.w[k];
            let segments = chain.run(run);
            let (index, before) = find_weight(segments, self.kind, rest);
            let segment = segments[index].0;
            let span = segment.span(self.kind);
            let part = &self.clusters[segment.cluster as usize];
            let pos = part.weights.find(self.kind, span, rest - before.w[k]);
            let ordinal = (before_run.n[k] + before.n[k] + (pos - span.start)) as usize;
            return (segment.cluster, pos, ordinal);
        }
        let mut rest = point - in_chain;
        let mut ordinal = chain.total(self.kind);
        let mut last = (0, 0, 0);
        for segment in &self.cursor.extra[..self.cursor.extras] {
            let span = segment.span(self.kind);
            let weight = segment.weight(self.kind);
            if span.is_empty() {
                continue;
            }
            let part = &self.clusters[segment.cluster as usize];
            if rest < weight {
                let pos = part.weights.find(self.kind, span, rest);
                return (segment.cluster, pos, ordinal + (pos - span.start) as usize);
            }
            rest -= weight;
            ordinal += span.len() as usize;
            last = (segment.cluster, span.end - 1, ordinal - 1);
        }
        // Only for a point past the total, which `next` never asks.
        last
    }

    /// The cluster and position of the item at `ordinal`.
    fn at_ordinal(&self, ordinal: usize) -> (u32, u32) {
        let chain = self.cursor.chain;
        if ordinal < chain.total(self.kind) {
            let (run, index, pos) = chain.locate(self.kind, ordinal);
            return (chain.run(run)[index].0.cluster, pos);
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

impl<T: Copy> Iterator for Sample<'_, T> {
    type Item = (u32, T);

    fn next(&mut self) -> Option<(u32, T)> {
        if self.j >= self.k {
            return None;
        }
        let j = self.j as u128;
        let offset = (j * u128::from(self.total) / self.k as u128) as u64;
        let point = (self.origin + offset) % self.total;
        self.j += 1;
        let (cluster, pos, ordinal) = self.at_weight(point);
        if j == 0 {
            self.first = ordinal;
            self.last = 0;
            return Some(self.item((cluster, pos)));
        }
        let from_first = (ordinal + self.n - self.first) % self.n;
        if from_first > self.last {
            self.last = from_first;
            return Some(self.item((cluster, pos)));
        }
        // A heavy item (or the one the origin falls in, met again at the
        // end of the circle) holds this point too: the next item instead.
        let next = self.last + 1;
        if next >= self.n {
            self.k = self.j;
            return None;
        }
        self.last = next;
        Some(self.item(self.at_ordinal((self.first + next) % self.n)))
    }
}
