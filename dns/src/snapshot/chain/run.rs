//! A chunk's runs: each segment kept as where it is placed, with the
//! run's running ends, in one allocation per run ([`Runs`]), and the
//! segments read back from them.

// The answer path: every narrowing cast is written out.
#![warn(clippy::cast_possible_truncation)]

use std::sync::Arc;

use super::{Ends, KINDS, Kind, Segment, Span, slot};

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

// With a 16-byte `Placed` a run's entry is 96 bytes: no padding.
const _: () = assert!(std::mem::size_of::<(Placed, Ends)>() == 96);

impl Placed {
    pub(super) fn of(s: &Segment) -> Placed {
        Placed {
            cluster: s.cluster,
            start: KINDS.map(|kind| s.span(kind).start),
        }
    }
}

/// The running ends before item `index` of a run (none before the first).
fn ends_before(run: &[(Placed, Ends)], index: usize) -> Ends {
    index
        .checked_sub(1)
        .map_or_else(Ends::default, |i| run[i].1)
}

/// The span of `kind` of a run's segment `index`: from its start, as many
/// items as the running ends add there.
pub(in crate::snapshot) fn span_at(run: &[(Placed, Ends)], index: usize, kind: Kind) -> Span {
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
pub(in crate::snapshot) fn segment_at(run: &[(Placed, Ends)], index: usize) -> Segment {
    let (placed, ends) = &run[index];
    let own = ends.since(ends_before(run, index), ends.heaviest);
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
pub type Runs = Arc<[(Placed, Ends)]>;

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
pub struct RunsBuilder(Vec<(Placed, Ends)>);

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

    fn fill(&mut self, segments: impl IntoIterator<Item = Segment>) {
        self.0.clear();
        let mut total = Ends::default();
        for s in segments {
            total.add(Ends::of(&s));
            // The segment's own heaviest: see `Runs`.
            self.0.push((
                Placed::of(&s),
                Ends {
                    heaviest: s.heaviest,
                    ..total
                },
            ));
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
pub(super) fn run_heaviest(run: &[(Placed, Ends)]) -> u64 {
    run.iter().map(|(_, ends)| ends.heaviest).max().unwrap_or(0)
}
