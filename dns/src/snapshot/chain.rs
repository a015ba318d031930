//! Service-wide answer lists without copying endpoints: a [`Chain`] is a
//! list of [`Segment`]s, each a run of one cluster part's targets and
//! addresses, with running totals so a rotated answer starts with one
//! binary search. A service's "every healthy target", "targets in zone
//! Z" and "targets in region R" are chains over its clusters' parts; when
//! one cluster changes, the chains are rebuilt from segment counts
//! (O(clusters)), not from endpoints.

use super::parts::Parts;
use super::view::ClusterView;

/// A half-open range of indices into one cluster part's flat lists.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
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
/// clusters) and the addresses of exactly those targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub cluster: u32,
    pub targets: Span,
    pub v4: Span,
    pub v6: Span,
}

impl Segment {
    pub fn span(&self, kind: Kind) -> Span {
        match kind {
            Kind::Targets => self.targets,
            Kind::V4 => self.v4,
            Kind::V6 => self.v6,
        }
    }
}

/// Segments answered as one list, with the running end of each kind.
#[derive(Debug, Default)]
pub struct Chain {
    segments: Vec<Segment>,
    ends: [Vec<u32>; 3],
}

/// A chain with nothing in it.
pub static EMPTY: Chain = Chain {
    segments: Vec::new(),
    ends: [Vec::new(), Vec::new(), Vec::new()],
};

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Targets => 0,
        Kind::V4 => 1,
        Kind::V6 => 2,
    }
}

impl Chain {
    pub fn new(segments: Vec<Segment>) -> Self {
        let mut ends: [Vec<u32>; 3] = Default::default();
        for kind in [Kind::Targets, Kind::V4, Kind::V6] {
            let mut total = 0;
            ends[slot(kind)] = segments
                .iter()
                .map(|s| {
                    total += s.span(kind).len();
                    total
                })
                .collect();
        }
        Chain { segments, ends }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// How many items of `kind`.
    pub fn total(&self, kind: Kind) -> usize {
        self.ends[slot(kind)].last().copied().unwrap_or(0) as usize
    }

    /// The segment holding item `offset` of `kind`, and the item's index
    /// in that segment's cluster list.
    fn locate(&self, kind: Kind, offset: usize) -> (usize, u32) {
        let ends = &self.ends[slot(kind)];
        let index = ends.partition_point(|e| (*e as usize) <= offset);
        let before = if index == 0 { 0 } else { ends[index - 1] };
        (
            index,
            self.segments[index].span(kind).start + (offset as u32 - before),
        )
    }
}

/// Up to `max` items of `kind` from `chain` followed by up to two `extra`
/// segments, taken as one list starting at `start` (mod its length) and
/// wrapping. Yields (cluster index, item).
#[derive(Debug)]
pub struct Walk<'a, T> {
    clusters: &'a Parts,
    chain: &'a [Segment],
    extra: [Segment; 2],
    extras: usize,
    kind: Kind,
    data: fn(&ClusterView) -> &[T],
    /// In the chain (0) or the extras (1).
    part: usize,
    index: usize,
    pos: u32,
    left: usize,
}

impl<'a, T: Copy> Walk<'a, T> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        clusters: &'a Parts,
        chain: &'a Chain,
        extra: [Segment; 2],
        extras: usize,
        kind: Kind,
        data: fn(&ClusterView) -> &[T],
        start: usize,
        max: usize,
    ) -> Self {
        let in_chain = chain.total(kind);
        let in_extra: usize = extra[..extras]
            .iter()
            .map(|s| s.span(kind).len() as usize)
            .sum();
        let total = in_chain + in_extra;
        let mut walk = Walk {
            clusters,
            chain: chain.segments(),
            extra,
            extras,
            kind,
            data,
            part: 0,
            index: 0,
            pos: 0,
            left: total.min(max),
        };
        if total == 0 {
            return walk;
        }
        let offset = start % total;
        if offset < in_chain {
            let (index, pos) = chain.locate(kind, offset);
            walk.index = index;
            walk.pos = pos;
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
        walk
    }

    fn len_of(&self, part: usize) -> usize {
        if part == 0 {
            self.chain.len()
        } else {
            self.extras
        }
    }

    fn segment(&self, part: usize, index: usize) -> Segment {
        if part == 0 {
            self.chain[index]
        } else {
            self.extra[index]
        }
    }
}

impl<T: Copy> Iterator for Walk<'_, T> {
    type Item = (u32, T);

    fn next(&mut self) -> Option<(u32, T)> {
        if self.left == 0 {
            return None;
        }
        loop {
            let segment = self.segment(self.part, self.index);
            let span = segment.span(self.kind);
            if self.pos < span.end {
                let cluster = segment.cluster;
                let item = (self.data)(&self.clusters[cluster as usize])[self.pos as usize];
                self.pos += 1;
                self.left -= 1;
                return Some((cluster, item));
            }
            // Next non-empty segment, wrapping from the extras back to the
            // chain; some item remains, so one exists.
            loop {
                self.index += 1;
                while self.index >= self.len_of(self.part) {
                    self.part = 1 - self.part;
                    self.index = 0;
                    if self.len_of(self.part) > 0 {
                        break;
                    }
                }
                let next = self.segment(self.part, self.index).span(self.kind);
                if !next.is_empty() {
                    self.pos = next.start;
                    break;
                }
            }
        }
    }
}
