//! Service-wide answer lists without copying endpoints. A [`Segment`] is
//! a run of one cluster part's targets and addresses; each chunk of 64
//! parts lays its segments out as runs ([`Runs`]: every healthy target's,
//! each zone's, each region's) with running totals; a [`Chain`] — a
//! service's "every healthy target", "targets in zone Z", "targets in
//! region R" — is a list of chunk runs ([`Link`]s) with running totals
//! over them, so a rotated answer starts with two binary searches. A link
//! names its run by two small integers, the chunk and the run's slot in
//! the chunk's table of runs ([`Table`]: the view's chunks), not by a
//! reference count: a relink copies integers. When one cluster changes,
//! its chunk's runs are rebuilt (each run one allocation; a run whose
//! segments are unchanged keeps the previous chunk's allocation and
//! slot) and only the chains whose run changed are relinked
//! ([`Chain::relink`]: the other chunks' links are copied, not looked up);
//! every other chain is shared with the previous view.

// The answer path: every narrowing cast is written out.
#![warn(clippy::cast_possible_truncation)]

use std::ops::Deref;
use std::sync::Arc;

use super::parts::Parts;
use super::view::{ChunkMeta, ClusterView};

mod run;

use run::run_heaviest;
pub use run::{Placed, Run, RunEnds, Runs, RunsBuilder};
pub(super) use run::{segment_at, span_at};

/// A half-open range of indices into one cluster part's flat lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: u32, end: u32) -> Self {
        Span { start, end }
    }

    pub fn len(self) -> u32 {
        self.end - self.start
    }

    pub fn is_empty(self) -> bool {
        self.start == self.end
    }
}

/// Which flat list of a cluster part a walk reads.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Targets,
    V4,
    V6,
}

/// A run of cluster `cluster`'s targets (an index into the service's
/// clusters) and the addresses of exactly those targets, with their
/// effective weight per kind, how many exported endpoints (healthy or
/// not, of positive weight) the run stands for — what a percentage
/// `min-healthy` is a percentage of — and how many of them are healthy:
/// what `min-healthy` counts. An endpoint target is one endpoint; a
/// ClusterIp target stands for the endpoints behind it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub cluster: u32,
    pub targets: Span,
    pub v4: Span,
    pub v6: Span,
    pub weight: [u64; 3],
    pub exported: u32,
    /// The effective weight of the segment's heaviest target (an address
    /// weighs what its target does, so no item of any kind weighs more):
    /// when no item can weigh more than its share of one answer point, a
    /// weighted sample skips its search for certain items.
    pub heaviest: u64,
    pub healthy: u32,
}

impl Segment {
    pub fn span(&self, kind: Kind) -> Span {
        match kind {
            Kind::Targets => self.targets,
            Kind::V4 => self.v4,
            Kind::V6 => self.v6,
        }
    }

    /// The summed effective weight of the segment's items of `kind`.
    pub fn weight(&self, kind: Kind) -> u64 {
        self.weight[slot(kind)]
    }

    /// Whether the segment holds anything a chain counts: a healthy
    /// target, or an exported endpoint (for a percentage threshold).
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty() && self.exported == 0
    }
}

/// Running ends over a list of segments: items and weight of each kind,
/// and exported endpoints.
///
/// Weights cannot overflow, by construction: an endpoint's effective
/// weight is at most `MAX_WEIGHT × MAX_WEIGHT_PERCENT² × 100` = 10¹², a
/// part (one cluster's export) holds at most `MAX_ENDPOINTS_PER_SERVICE`
/// (config.rs) endpoints of
/// at most 16 addresses each (or one ClusterIp target standing for them,
/// with at most 8 addresses), so a part's (a segment's) weight of any
/// kind is below 1.6·10¹⁹ < 2⁶⁴; a chain counts fewer than 2³² items, so
/// running weights over parts, summed here in u128, stay below 2⁹⁶, and a
/// sample's scaled circle (at most 64 times that) below 2¹⁰³. A chunk's
/// run, at most 64 parts' segments, keeps its running weights narrower
/// ([`RunEnds`]: below 2⁷⁰, 72 bits each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ends {
    pub n: [u32; 3],
    pub w: [u128; 3],
    pub exported: u32,
    /// The heaviest item so far (a running maximum, not a sum); in a
    /// run's entry, its segment's own (see [`Runs`]).
    pub heaviest: u64,
    pub healthy: u32,
}

impl Ends {
    fn add(&mut self, other: Ends) {
        for k in 0..3 {
            self.n[k] += other.n[k];
            self.w[k] += other.w[k];
        }
        self.exported += other.exported;
        self.heaviest = self.heaviest.max(other.heaviest);
        self.healthy += other.healthy;
    }

    /// What lies between running ends `before` and `self`: the counts
    /// and weights of the items in between; `heaviest` is theirs (a
    /// running maximum cannot be taken apart).
    fn since(self, before: Ends, heaviest: u64) -> Ends {
        Ends {
            n: std::array::from_fn(|k| self.n[k] - before.n[k]),
            w: std::array::from_fn(|k| self.w[k] - before.w[k]),
            exported: self.exported - before.exported,
            heaviest,
            healthy: self.healthy - before.healthy,
        }
    }

    fn of(s: &Segment) -> Ends {
        let mut e = Ends {
            exported: s.exported,
            healthy: s.healthy,
            w: s.weight.map(u128::from),
            heaviest: s.heaviest,
            ..Ends::default()
        };
        for kind in KINDS {
            e.n[slot(kind)] = s.span(kind).len();
        }
        e
    }
}

/// One run of a chain: which chunk of the view it is (a relink replaces
/// the links of the chunks that changed), the run's slot in that chunk's
/// table of runs, and the run's heaviest item (so that running ends after
/// a replaced link are recomputed from the chain's own entries, without
/// reading the run). Plain integers: copying a link touches no reference
/// count, and dropping a chain frees one allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub(super) chunk: u32,
    pub(super) slot: u32,
    pub(super) heaviest: u64,
}

/// The runs a view's chains link: its chunks, each with its table of runs
/// by slot. A chain is read with the table of the view it belongs to (a
/// chain shared between two views links runs both tables hold at the same
/// chunk and slot).
#[derive(Debug, Clone, Copy)]
pub struct Table<'a>(pub(super) &'a [Arc<ChunkMeta>]);

impl<'a> Table<'a> {
    /// A table with no run: what a chain with no link is read with.
    pub const EMPTY: Table<'static> = Table(&[]);

    /// The run `link` names, each segment with the run's running ends.
    fn run(self, link: &Link) -> &'a [(Placed, RunEnds)] {
        self.0[link.chunk as usize].run(link.slot)
    }
}

/// A chain's links, each with the running ends over the links so far: one
/// allocation, shared by every view in which none of the chain's runs
/// changed.
#[derive(Debug, Clone, Default)]
pub struct Links(pub(super) Option<Arc<[(Link, Ends)]>>);

impl Deref for Links {
    type Target = [(Link, Ends)];

    fn deref(&self) -> &[(Link, Ends)] {
        self.0.as_deref().unwrap_or(&[])
    }
}

pub(super) fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Targets => 0,
        Kind::V4 => 1,
        Kind::V6 => 2,
    }
}

const KINDS: [Kind; 3] = [Kind::Targets, Kind::V4, Kind::V6];

/// Running ends a search reads: a chain's over its runs ([`Ends`]) or a
/// run's over its segments ([`RunEnds`]).
pub(super) trait Running: Copy + Default {
    /// The running count of `slot` `k`.
    fn count(&self, k: usize) -> u32;
    /// The running weight of `slot` `k`.
    fn weight(&self, k: usize) -> u128;
}

impl Running for Ends {
    fn count(&self, k: usize) -> u32 {
        self.n[k]
    }

    fn weight(&self, k: usize) -> u128 {
        self.w[k]
    }
}

/// Where item `offset` of `kind` falls in `items`, each with the running
/// end of each kind: the item's index and how many come before it.
fn find<T, E: Running>(items: &[(T, E)], kind: Kind, offset: u32) -> (usize, u32) {
    let k = slot(kind);
    let index = items.partition_point(|(_, ends)| ends.count(k) <= offset);
    let before = if index == 0 {
        0
    } else {
        items[index - 1].1.count(k)
    };
    (index, before)
}

/// Where weight point `point` of `kind` falls in `items`: the item's
/// index and the running ends before it.
pub(super) fn find_weight<T, E: Running>(items: &[(T, E)], kind: Kind, point: u128) -> (usize, E) {
    let k = slot(kind);
    let index = items.partition_point(|(_, ends)| ends.weight(k) <= point);
    let before = if index == 0 {
        E::default()
    } else {
        items[index - 1].1
    };
    (index, before)
}

/// A service-wide list (every healthy target, a zone's, a region's): the
/// runs of its chunks, each with the running end of each kind over the
/// runs. A rotated answer starts with two binary searches. Cloning a chain
/// shares it (one reference count): a view shares every chain none of
/// whose chunks changed with the previous view.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// (a chunk's run, the running end of each kind over the runs), in
    /// chunk order: never an empty run, at most one per chunk.
    pub(super) runs: Links,
}

/// A chain with nothing in it.
pub static EMPTY: Chain = Chain { runs: Links(None) };

impl Chain {
    /// Whether the chain has no run.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// This chain with the runs of the chunks in `changes` replaced:
    /// `changes` gives, in ascending chunk order, each changed chunk's
    /// position and its run of this chain now with the run's slot there
    /// (`None`, or an empty run: it holds none). The links of every other chunk are kept, their
    /// running ends recomputed from the chain's own entries after the
    /// first change. O(links + changes), one allocation of the exact
    /// size; no run of an unchanged chunk is read.
    pub fn relink<'r, I>(&self, changes: I) -> Chain
    where
        I: IntoIterator<Item = (u32, Option<(u32, &'r Runs)>)>,
        I::IntoIter: Clone,
    {
        let old: &[(Link, Ends)] = &self.runs;
        let changes = changes.into_iter();
        let len = changes.clone().fold(old.len(), |n, (chunk, run)| {
            let had = old.binary_search_by_key(&chunk, |(l, _)| l.chunk).is_ok();
            let has = run.is_some_and(|(_, runs)| !runs.is_empty());
            n - usize::from(had) + usize::from(has)
        });
        if len == 0 {
            return Chain::default();
        }
        let mut merge = Relink {
            old,
            changes: changes.peekable(),
            i: 0,
            total: Ends::default(),
            before: Ends::default(),
            changed: false,
        };
        // An exact-size iterator: `Arc<[_]>` is allocated once, filled in
        // place.
        #[allow(
            clippy::expect_used,
            reason = "the relink yields exactly the `len` links it counted above"
        )]
        let runs: Arc<[(Link, Ends)]> = (0..len)
            .map(|_| {
                merge
                    .next()
                    .expect("the relink yields the links it counted")
            })
            .collect();
        Chain {
            runs: Links(Some(runs)),
        }
    }

    /// Run `i`'s segments, each with the run's running ends, read from
    /// `table` (the chain's view's).
    pub(super) fn run<'t>(&self, table: Table<'t>, i: usize) -> &'t [(Placed, RunEnds)] {
        table.run(&self.runs[i].0)
    }

    /// How many items of `kind`.
    pub fn total(&self, kind: Kind) -> usize {
        self.runs
            .last()
            .map_or(0, |(_, ends)| ends.n[slot(kind)] as usize)
    }

    /// The summed effective weight of the items of `kind`.
    pub fn weight(&self, kind: Kind) -> u128 {
        self.runs.last().map_or(0, |(_, ends)| ends.w[slot(kind)])
    }

    /// Exported endpoints (healthy or not, of positive weight) the chain
    /// stands for.
    pub fn exported(&self) -> usize {
        self.runs
            .last()
            .map_or(0, |(_, ends)| ends.exported as usize)
    }

    /// The effective weight of the chain's heaviest item (any kind).
    pub fn heaviest(&self) -> u64 {
        self.runs.last().map_or(0, |(_, ends)| ends.heaviest)
    }

    /// Healthy endpoints of positive weight the chain stands for.
    pub fn healthy(&self) -> usize {
        self.runs
            .last()
            .map_or(0, |(_, ends)| ends.healthy as usize)
    }

    /// The run and segment holding item `offset` of `kind`, and the
    /// item's index in that segment's cluster list.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "`offset` is below the chain's item count, a u32 (see `Ends`)"
    )]
    pub(super) fn locate(
        &self,
        table: Table<'_>,
        kind: Kind,
        offset: usize,
    ) -> (usize, usize, u32) {
        let (run, before) = find(&self.runs, kind, offset as u32);
        let rest = offset as u32 - before;
        let segments = self.run(table, run);
        let (index, before) = find(segments, kind, rest);
        let pos = segments[index].0.start[slot(kind)] + (rest - before);
        (run, index, pos)
    }
}

/// The links of a relinked chain, in order: the old chain's and the
/// changes' merged by chunk (see [`Chain::relink`]).
struct Relink<'a, I: Iterator> {
    old: &'a [(Link, Ends)],
    changes: std::iter::Peekable<I>,
    /// The next old link.
    i: usize,
    /// The running ends over the links yielded.
    total: Ends,
    /// The old running ends before `old[i]`.
    before: Ends,
    /// Whether a change was merged: from there on running ends are
    /// recomputed.
    changed: bool,
}

impl<'r, I> Iterator for Relink<'_, I>
where
    I: Iterator<Item = (u32, Option<(u32, &'r Runs)>)>,
{
    type Item = (Link, Ends);

    fn next(&mut self) -> Option<(Link, Ends)> {
        loop {
            let take_old = match (self.old.get(self.i), self.changes.peek()) {
                (None, None) => return None,
                (Some((link, _)), Some((chunk, _))) => link.chunk < *chunk,
                (Some(_), None) => true,
                (None, Some(_)) => false,
            };
            if take_old {
                // A kept link: its own ends are what it added.
                let (link, ends) = &self.old[self.i];
                if self.changed {
                    self.total.add(ends.since(self.before, link.heaviest));
                } else {
                    self.total = *ends;
                }
                self.before = *ends;
                self.i += 1;
                return Some((*link, self.total));
            }
            let (chunk, run) = self.changes.next()?;
            self.changed = true;
            if let Some((link, ends)) = self.old.get(self.i)
                && link.chunk == chunk
            {
                // The chunk's old link is replaced.
                self.before = *ends;
                self.i += 1;
            }
            if let Some((slot, runs)) = run
                && let Some((_, last)) = runs.last()
            {
                let heaviest = run_heaviest(runs);
                self.total.add(last.widen(heaviest));
                let link = Link {
                    chunk,
                    slot,
                    heaviest,
                };
                return Some((link, self.total));
            }
        }
    }
}

/// What a selection hands to a walk: a chain, then up to two extra
/// segments (a cluster's own targets, or its targets outside a zone),
/// walked as one list. The chain's internals stay here.
#[derive(Debug, Clone, Copy)]
pub struct Cursor<'a> {
    /// The runs `chain` links: its view's.
    pub(super) table: Table<'a>,
    pub(super) chain: &'a Chain,
    pub(super) extra: [Segment; 2],
    pub(super) extras: usize,
}

impl<'a> Cursor<'a> {
    /// A chain alone, read with `table`, its view's runs.
    pub fn of(table: Table<'a>, chain: &'a Chain) -> Self {
        Cursor {
            table,
            chain,
            extra: [Segment::default(); 2],
            extras: 0,
        }
    }

    /// A chain (read with `table`, its view's runs) followed by the
    /// first `extras` of `extra`.
    pub fn with_extra(
        table: Table<'a>,
        chain: &'a Chain,
        extra: [Segment; 2],
        extras: usize,
    ) -> Self {
        Cursor {
            table,
            chain,
            extra,
            extras,
        }
    }

    /// Items of `kind` in the list.
    pub fn total(&self, kind: Kind) -> usize {
        self.chain.total(kind)
            + self.extra[..self.extras]
                .iter()
                .map(|s| s.span(kind).len() as usize)
                .sum::<usize>()
    }

    /// The summed effective weight of the items of `kind`.
    pub fn weight(&self, kind: Kind) -> u128 {
        self.chain.weight(kind)
            + self.extra[..self.extras]
                .iter()
                .map(|s| u128::from(s.weight(kind)))
                .sum::<u128>()
    }

    /// The effective weight of the list's heaviest item (any kind).
    pub fn heaviest(&self) -> u64 {
        self.extra[..self.extras]
            .iter()
            .map(|s| s.heaviest)
            .fold(self.chain.heaviest(), u64::max)
    }

    /// Whether every item of `kind` weighs the same (the heaviest times
    /// their count is their sum): then the plain rotation gives each item
    /// its weight's share of answers exactly, as a weighted sample would,
    /// at a fraction of the cost — the usual case for a cluster's own
    /// tier when weights differ only between clusters.
    pub fn uniform(&self, kind: Kind) -> bool {
        u128::from(self.heaviest()) * self.total(kind) as u128 == self.weight(kind)
    }

    /// Exported endpoints (healthy or not, of positive weight) in the list.
    pub fn exported(&self) -> usize {
        self.chain.exported()
            + self.extra[..self.extras]
                .iter()
                .map(|s| s.exported as usize)
                .sum::<usize>()
    }

    /// Healthy endpoints of positive weight in the list.
    pub fn healthy(&self) -> usize {
        self.chain.healthy()
            + self.extra[..self.extras]
                .iter()
                .map(|s| s.healthy as usize)
                .sum::<usize>()
    }

    /// Up to `max` items of `kind`, sampled by weight
    /// ([`Sample`](super::Sample)), the origin from `start`.
    pub fn sample<T: Copy>(
        self,
        clusters: &'a Parts,
        kind: Kind,
        data: fn(&ClusterView) -> &[T],
        start: usize,
        max: usize,
    ) -> super::Sample<'a, T> {
        super::Sample::new(clusters, self, kind, data, start, max)
    }

    /// How many items [`sample`](Self::sample) would yield, without
    /// sampling ([`super::sample::points`]).
    pub fn points(self, clusters: &Parts, kind: Kind, max: usize) -> usize {
        super::sample::points(clusters, self, kind, max)
    }

    /// Up to `max` items of `kind` (`data` reads a cluster's list of
    /// them), from `start` (mod the list's length), wrapping.
    pub fn walk<T: Copy>(
        self,
        clusters: &'a Parts,
        kind: Kind,
        data: fn(&ClusterView) -> &[T],
        start: usize,
        max: usize,
    ) -> Walk<'a, T> {
        Walk::new(clusters, self, kind, data, start, max)
    }
}

/// Up to `max` items of `kind` from `chain` followed by up to two `extra`
/// segments, taken as one list starting at `start` (mod its length) and
/// wrapping. Yields (cluster index, item).
#[derive(Debug)]
pub struct Walk<'a, T> {
    clusters: &'a Parts,
    table: Table<'a>,
    chain: &'a Chain,
    /// The chain's current run's segments (part 0): read from the table
    /// once per run.
    segments: &'a [(Placed, RunEnds)],
    /// The extras' cluster and span of `kind`: all a walk reads of them
    /// (a [`Segment`] is several times larger, and the walk is moved).
    extra: [(u32, Span); 2],
    extras: usize,
    kind: Kind,
    data: fn(&ClusterView) -> &[T],
    /// In the chain (0) or the extras (1).
    part: usize,
    /// The chain's run (part 0).
    run: usize,
    /// The segment, in the run or the extras.
    index: usize,
    /// The segment's cluster, its list of `kind`, and where in it the
    /// walk is and the segment ends: loaded once per segment.
    cluster: u32,
    items: &'a [T],
    pos: u32,
    end: u32,
    left: usize,
}

impl<'a, T: Copy> Walk<'a, T> {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the origin is below `total`, the chain's and the extras' items (u32 counts)"
    )]
    fn new(
        clusters: &'a Parts,
        cursor: Cursor<'a>,
        kind: Kind,
        data: fn(&ClusterView) -> &[T],
        start: usize,
        max: usize,
    ) -> Self {
        let Cursor {
            table,
            chain,
            extra,
            extras,
        } = cursor;
        let in_chain = chain.total(kind);
        let in_extra: usize = extra[..extras]
            .iter()
            .map(|s| s.span(kind).len() as usize)
            .sum();
        let total = in_chain + in_extra;
        let mut walk = Walk {
            clusters,
            table,
            chain,
            segments: &[],
            extra: extra.map(|s| (s.cluster, s.span(kind))),
            extras,
            kind,
            data,
            part: 0,
            run: 0,
            index: 0,
            cluster: 0,
            items: &[],
            pos: 0,
            end: 0,
            left: total.min(max),
        };
        if total == 0 {
            return walk;
        }
        let offset = super::sample::origin(start, total as u64) as usize;
        if offset < in_chain {
            (walk.run, walk.index, walk.pos) = chain.locate(table, kind, offset);
            walk.segments = chain.run(table, walk.run);
        } else {
            let mut rest = (offset - in_chain) as u32;
            walk.part = 1;
            for (i, s) in extra[..extras].iter().enumerate() {
                let span = s.span(kind);
                if rest < span.len() {
                    walk.index = i;
                    walk.pos = span.start + rest;
                    break;
                }
                rest -= span.len();
            }
        }
        let pos = walk.pos;
        walk.load();
        walk.pos = pos;
        walk
    }

    /// Reads the current segment: its cluster's list, from its start.
    fn load(&mut self) {
        let (cluster, span) = self.segment();
        self.cluster = cluster;
        self.items = (self.data)(&self.clusters[cluster as usize]);
        self.pos = span.start;
        self.end = span.end;
    }

    /// The current segment's cluster and span of the walk's kind.
    fn segment(&self) -> (u32, Span) {
        if self.part == 0 {
            (
                self.segments[self.index].0.cluster,
                span_at(self.segments, self.index, self.kind),
            )
        } else {
            self.extra[self.index]
        }
    }

    /// The next segment: through the chain's runs, then the extras, then
    /// back to the chain's start. Runs are never empty.
    fn step(&mut self) {
        self.index += 1;
        if self.part == 0 {
            if self.index < self.segments.len() {
                return;
            }
            self.index = 0;
            if self.run + 1 < self.chain.runs.len() {
                self.run += 1;
                self.segments = self.chain.run(self.table, self.run);
                return;
            }
            self.run = 0;
            if self.extras > 0 {
                self.part = 1;
            } else {
                self.segments = self.chain.run(self.table, 0);
            }
        } else if self.index >= self.extras {
            self.index = 0;
            if !self.chain.runs.is_empty() {
                self.part = 0;
                self.run = 0;
                self.segments = self.chain.run(self.table, 0);
            }
        }
    }
}

impl<T: Copy> Iterator for Walk<'_, T> {
    type Item = (u32, T);

    fn next(&mut self) -> Option<(u32, T)> {
        if self.left == 0 {
            return None;
        }
        // On to the next non-empty segment; some item remains, so one
        // exists.
        while self.pos >= self.end {
            self.step();
            self.load();
        }
        let item = self.items[self.pos as usize];
        self.pos += 1;
        self.left -= 1;
        Some((self.cluster, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run keeps each segment as a [`Placed`] (16 bytes) and gives it
    /// back whole, spans, weights and counts read off its running ends,
    /// its heaviest item its own; a chain linking the run has the run's
    /// heaviest.
    #[test]
    fn a_run_gives_back_its_segments() {
        let segments: Vec<Segment> = (0..4u32)
            .map(|i| Segment {
                cluster: 3 * i,
                targets: Span::new(i, 2 * i + 1),
                v4: Span::new(10 * i, 10 * i + i),
                v6: Span::new(0, i % 2),
                weight: [u64::MAX - u64::from(i), 7 * u64::from(i), 1],
                exported: 5 + i,
                heaviest: u64::MAX / 2 + u64::from(i % 3),
                healthy: i,
            })
            .collect();
        let mut builder = RunsBuilder::default();
        let Run::New(run, None) = builder.run(segments.iter().copied(), None) else {
            panic!("a new run")
        };
        for (i, s) in segments.iter().enumerate() {
            assert_eq!(segment_at(&run, i), *s);
            for kind in KINDS {
                assert_eq!(span_at(&run, i, kind), s.span(kind));
            }
        }
        let chain = EMPTY.relink([(0, Some((0, &run)))]);
        assert_eq!(chain.runs[0].0.heaviest, u64::MAX / 2 + 2);
        assert_eq!(chain.heaviest(), u64::MAX / 2 + 2);
    }

    /// Parts that each weigh close to 2⁶⁴ (the bound `Ends` states):
    /// running weights over them are exact, and a point past 2⁶⁴ finds
    /// its run.
    #[test]
    fn weights_past_u64_sum_exactly() {
        let heavy = u64::MAX - 1;
        let one = Span { start: 0, end: 1 };
        let sets: Vec<Runs> = (0..3)
            .map(|cluster| {
                let s = Segment {
                    cluster,
                    targets: one,
                    v4: one,
                    v6: Span::default(),
                    weight: [heavy, heavy, 0],
                    exported: 1,
                    heaviest: heavy,
                    healthy: 1,
                };
                let Run::New(run, None) = RunsBuilder::default().run([s], None) else {
                    panic!("a new run")
                };
                run
            })
            .collect();
        let chain = EMPTY.relink((0..3).map(|k| (k, Some((0, &sets[k as usize])))));
        assert_eq!(chain.weight(Kind::V4), 3 * u128::from(heavy));
        let (run, before) = find_weight(&chain.runs, Kind::V4, 2 * u128::from(heavy) + 5);
        assert_eq!(run, 2);
        assert_eq!(before.w[slot(Kind::V4)], 2 * u128::from(heavy));
        // Totals and weights are the chain's own: no run is read.
        let cursor = Cursor::of(Table::EMPTY, &chain);
        assert_eq!(cursor.weight(Kind::Targets), 3 * u128::from(heavy));
        assert_eq!(cursor.heaviest(), heavy);
    }
}
