//! A chunk's runs: each segment kept as where it is placed, with the
//! run's running ends, in one allocation per run ([`Runs`]), and the
//! segments read back from them.

// The answer path: every narrowing cast is written out.
#![warn(clippy::cast_possible_truncation)]

use std::sync::Arc;

use super::{Ends, KINDS, Kind, Running, Segment, Span, slot};
use crate::snapshot::parts::CHUNK;

/// A segment as a chunk's run keeps it (16 bytes, where a [`Segment`] is
/// 72): its cluster and where its items of each kind start in that
/// cluster's lists. Its item counts, weights, exported and healthy
/// endpoints are not kept: they are what the run's running ends add at
/// it; its heaviest item is its entry's `heaviest` (`segment_at`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placed {
    pub cluster: u32,
    /// Where its targets, IPv4 and IPv6 addresses start, by `slot`.
    pub start: [u32; 3],
}

// With a 16-byte `Placed` a run's entry is 72 bytes: no padding.
const _: () = assert!(std::mem::size_of::<(Placed, RunEnds)>() == 72);

impl Placed {
    pub(super) fn of(s: &Segment) -> Placed {
        Placed {
            cluster: s.cluster,
            start: KINDS.map(|kind| s.span(kind).start),
        }
    }
}

/// The most segments a run holds: one per part of its chunk (a part's
/// whole run, its reserve, its run of one zone: one segment each, its
/// zones distinct), asserted as a run is built (`RunsBuilder::fill`).
pub(in crate::snapshot) const MAX_SEGMENTS: usize = CHUNK;

// A running weight over `MAX_SEGMENTS` segments of below 2⁶⁴ each is
// below 2⁷²: its low 64 bits and one high byte hold it (`RunEnds`).
const _: () = assert!(MAX_SEGMENTS <= 1 << 8);

/// A run's running ends: [`Ends`] narrowed to what one run can hold (56
/// bytes, where `Ends` is 80: a run's entry is 72, not 96).
///
/// A segment's weight of any kind is below 2⁶⁴ (a `u64`: see `Ends` for
/// why one part's sum fits) and a run holds at most [`MAX_SEGMENTS`] of
/// them, so a run's running weight is below 2⁷⁰: it is kept as its low
/// 64 bits and a high byte, read back as a `u128` ([`weight`](Self::weight)).
/// Counts are `u32`s as in `Ends`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunEnds {
    pub n: [u32; 3],
    pub exported: u32,
    pub healthy: u32,
    /// Bits 64 and up of each running weight, by `slot`; the fourth byte
    /// is always 0 (it fills what would be padding, so entries compare as
    /// plain bytes: a rebuilt run is compared with the old one).
    high: [u8; 4],
    /// The low 64 bits of each running weight, by `slot`.
    low: [u64; 3],
    /// The entry's own segment's heaviest item, not a running maximum
    /// (see [`Runs`]).
    pub heaviest: u64,
}

impl RunEnds {
    /// `total`, running ends over at most [`MAX_SEGMENTS`] segments (the
    /// caller asserts it), with `heaviest` as the entry's own.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "split in two exactly: a run's running weight is below 2⁷⁰ (`MAX_SEGMENTS`)"
    )]
    fn narrow(total: &Ends, heaviest: u64) -> RunEnds {
        let high = |k: usize| (total.w[k] >> 64) as u8;
        RunEnds {
            n: total.n,
            exported: total.exported,
            healthy: total.healthy,
            high: [high(0), high(1), high(2), 0],
            low: total.w.map(|w| w as u64),
            heaviest,
        }
    }

    /// These running ends as a chain's, with `heaviest` for theirs.
    pub(super) fn widen(&self, heaviest: u64) -> Ends {
        Ends {
            n: self.n,
            w: std::array::from_fn(|k| self.weight(k)),
            exported: self.exported,
            heaviest,
            healthy: self.healthy,
        }
    }

    /// The running weight of `slot` `k`.
    pub fn weight(&self, k: usize) -> u128 {
        u128::from(self.high[k]) << 64 | u128::from(self.low[k])
    }
}

impl Running for RunEnds {
    fn count(&self, k: usize) -> u32 {
        self.n[k]
    }

    fn weight(&self, k: usize) -> u128 {
        RunEnds::weight(self, k)
    }
}

/// The running ends before item `index` of a run (none before the first).
fn ends_before(run: &[(Placed, RunEnds)], index: usize) -> RunEnds {
    index
        .checked_sub(1)
        .map_or_else(RunEnds::default, |i| run[i].1)
}

/// The span of `kind` of a run's segment `index`: from its start, as many
/// items as the running ends add there.
pub(in crate::snapshot) fn span_at(run: &[(Placed, RunEnds)], index: usize, kind: Kind) -> Span {
    let k = slot(kind);
    let (placed, ends) = &run[index];
    let start = placed.start[k];
    Span::new(start, start + (ends.n[k] - ends_before(run, index).n[k]))
}

/// A run's segment `index` whole, as it was built: its placement and what
/// the run's running ends add at it.
#[allow(
    clippy::cast_possible_truncation,
    reason = "a segment's weight of any kind is below 2⁶⁴ (see `Ends`)"
)]
pub(in crate::snapshot) fn segment_at(run: &[(Placed, RunEnds)], index: usize) -> Segment {
    let (placed, ends) = &run[index];
    let before = ends_before(run, index).widen(0);
    let own = ends.widen(ends.heaviest).since(before, ends.heaviest);
    let span = |k: usize| Span::new(placed.start[k], placed.start[k] + own.n[k]);
    Segment {
        cluster: placed.cluster,
        targets: span(0),
        v4: span(1),
        v6: span(2),
        weight: own.w.map(|w| w as u64),
        exported: own.exported,
        heaviest: own.heaviest,
        healthy: own.healthy,
    }
}

/// One run of a chunk of cluster parts' (its run of every healthy
/// target, or of one zone's, region's or provider's), each segment (as
/// [`Placed`]) with the run's running end of each kind, in one shared
/// allocation. In a run, an entry's `heaviest` is its own segment's, not
/// a running maximum: a walk never reads it, a rebuilt run needs each
/// kept segment's own, and a chain needs only the run's maximum
/// (`run_heaviest`, kept in its link). A chain links a run by its chunk
/// and slot, so a lookup reads one allocation per run; a chunk rebuilt
/// with a run unchanged keeps the run's allocation, and the chains
/// linking it stand.
pub type Runs = Arc<[(Placed, RunEnds)]>;

/// A chunk's run of one list as built: the previous chunk's run of the
/// same list, kept in its slot (a chain linking it stands), or a new
/// allocation, in the slot of the previous chunk's run of the same list
/// when it had one.
#[derive(Debug)]
pub enum Run {
    Kept(u32),
    New(Runs, Option<u32>),
}

/// Builds a chunk's runs, one allocation each, keeping the previous
/// chunk's run (its allocation and slot) where the segments did not
/// change (so a chain that links it stands, shared, and nothing is
/// copied).
#[derive(Debug, Default)]
pub struct RunsBuilder(Vec<(Placed, RunEnds)>);

impl RunsBuilder {
    /// The run of `segments`, each with the run's running ends: `reuse`
    /// (the previous chunk's run of the same list, with its slot) when it
    /// holds exactly these, else a new allocation.
    pub fn run(
        &mut self,
        segments: impl IntoIterator<Item = Segment>,
        reuse: Option<(u32, &Runs)>,
    ) -> Run {
        self.fill(segments);
        self.finish(reuse)
    }

    /// [`run`](Self::run), or `None` when `segments` is empty (no
    /// allocation).
    pub fn nonempty_run(
        &mut self,
        segments: impl IntoIterator<Item = Segment>,
        reuse: Option<(u32, &Runs)>,
    ) -> Option<Run> {
        self.fill(segments);
        (!self.0.is_empty()).then(|| self.finish(reuse))
    }

    /// The entries of `segments`' run; panics past [`MAX_SEGMENTS`]
    /// segments (a part in a run twice), where the run's running weights
    /// could no longer be held (`RunEnds`).
    fn fill(&mut self, segments: impl IntoIterator<Item = Segment>) {
        self.0.clear();
        let mut total = Ends::default();
        for s in segments {
            assert!(
                self.0.len() < MAX_SEGMENTS,
                "a run past {MAX_SEGMENTS} segments: one part of its chunk in it twice"
            );
            total.add(Ends::of(&s));
            // The segment's own heaviest: see `Runs`.
            self.0
                .push((Placed::of(&s), RunEnds::narrow(&total, s.heaviest)));
        }
    }

    fn finish(&self, reuse: Option<(u32, &Runs)>) -> Run {
        match reuse {
            Some((slot, old)) if **old == self.0[..] => Run::Kept(slot),
            _ => Run::New(Arc::from(&self.0[..]), reuse.map(|(slot, _)| slot)),
        }
    }
}

/// The heaviest item of a run (each entry keeps its segment's own).
pub(super) fn run_heaviest(run: &[(Placed, RunEnds)]) -> u64 {
    run.iter().map(|(_, ends)| ends.heaviest).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::{Chain, Cursor, EMPTY, Table, find_weight};
    use super::*;

    /// `count` segments of distinct clusters, each weighing the most a
    /// `u64` holds of every kind (more than the model's limits allow).
    fn heaviest_segments(count: u32) -> impl Iterator<Item = Segment> {
        (0..count).map(|i| Segment {
            cluster: i,
            targets: Span::new(i, i + 1),
            v4: Span::new(0, 16),
            v6: Span::new(3, 4),
            weight: [u64::MAX; 3],
            exported: 1,
            heaviest: u64::MAX,
            healthy: 1,
        })
    }

    fn run_of(segments: impl Iterator<Item = Segment>) -> Runs {
        let Run::New(run, None) = RunsBuilder::default().run(segments, None) else {
            panic!("a new run")
        };
        run
    }

    /// A run at the bound, a chunk's every part at the heaviest weights:
    /// each running weight (past 2⁶⁴ after the first segment, up to
    /// 64·(2⁶⁴ − 1)) is kept exactly, every segment comes back whole, and
    /// a chain over three such runs sums them exactly and finds a point
    /// in the last run's last segment.
    #[test]
    fn a_full_run_at_the_heaviest_weights_sums_exactly() {
        let full = u32::try_from(MAX_SEGMENTS).unwrap();
        let segments: Vec<Segment> = heaviest_segments(full).collect();
        let run = run_of(segments.iter().copied());
        let heavy = u128::from(u64::MAX);
        for (i, s) in segments.iter().enumerate() {
            for k in 0..3 {
                assert_eq!(run[i].1.weight(k), (i as u128 + 1) * heavy);
            }
            assert_eq!(segment_at(&run, i), *s);
        }
        let chain: Chain = EMPTY.relink((0..3).map(|chunk| (chunk, Some((0, &run)))));
        let total = 3 * MAX_SEGMENTS as u128 * heavy;
        assert_eq!(chain.weight(Kind::V6), total);
        assert_eq!(Cursor::of(Table::EMPTY, &chain).weight(Kind::V4), total);
        let (link, before) = find_weight(&chain.runs, Kind::V4, total - 1);
        assert_eq!((link, before.w[1]), (2, total / 3 * 2));
        let (index, before) = find_weight(&run, Kind::V4, total / 3 - 1);
        assert_eq!(index, MAX_SEGMENTS - 1);
        assert_eq!(before.weight(1), (MAX_SEGMENTS as u128 - 1) * heavy);
    }

    /// One segment past the bound (a part twice in one run) is refused
    /// where the run is built, before its weights are narrowed.
    #[test]
    #[should_panic(expected = "a run past 64 segments")]
    fn a_run_past_its_chunk_is_refused() {
        let past = u32::try_from(MAX_SEGMENTS).unwrap() + 1;
        run_of(heaviest_segments(past));
    }
}
