//! One cluster part's effective weights: one number when every target
//! weighs the same (the common case, and no memory per target), else the
//! running sums of each flat list, so the item holding a weight point is
//! one binary search away.

#![warn(clippy::cast_possible_truncation)]

use super::targets::position;
use crate::snapshot::chain::{Kind, Span, slot};

#[derive(Debug, Clone, Default)]
pub struct Weights {
    /// Every target's weight, when they are all alike.
    uniform: u64,
    /// When they are not: each list's (targets, v4, v6) running sums,
    /// `sums[k][i]` the weight of items `0..=i`.
    sums: Option<Box<[Box<[u64]>; 3]>>,
}

impl Weights {
    /// The weights of each list's items, in list order.
    pub(super) fn new(items: [Vec<u64>; 3]) -> Self {
        let first = items[0].first().copied().unwrap_or(0);
        if items.iter().all(|list| list.iter().all(|w| *w == first)) {
            return Weights {
                uniform: first,
                sums: None,
            };
        }
        let running = |list: Vec<u64>| -> Box<[u64]> {
            let mut total = 0u64;
            list.into_iter()
                .map(|w| {
                    total = total.saturating_add(w);
                    total
                })
                .collect()
        };
        let [t, v4, v6] = items;
        Weights {
            uniform: 0,
            sums: Some(Box::new([running(t), running(v4), running(v6)])),
        }
    }

    /// The one weight every item has, when they are all alike.
    pub fn uniform(&self) -> Option<u64> {
        self.sums.is_none().then_some(self.uniform)
    }

    /// The weight of items `0..pos` of `kind`.
    fn before(&self, kind: Kind, pos: u32) -> u64 {
        match &self.sums {
            None => self.uniform * u64::from(pos),
            Some(_) if pos == 0 => 0,
            Some(sums) => sums[slot(kind)][pos as usize - 1],
        }
    }

    /// The summed weight of `span` of `kind`.
    pub fn sum(&self, kind: Kind, span: Span) -> u64 {
        self.before(kind, span.end) - self.before(kind, span.start)
    }

    /// One item's weight.
    pub fn of(&self, kind: Kind, pos: u32) -> u64 {
        self.before(kind, pos + 1) - self.before(kind, pos)
    }

    /// The weight of the heaviest item of `span` (0 for an empty span).
    /// Walks the span when the weights vary: for view builds, not
    /// queries.
    pub fn heaviest(&self, kind: Kind, span: Span) -> u64 {
        match &self.sums {
            _ if span.is_empty() => 0,
            None => self.uniform,
            Some(_) => (span.start..span.end)
                .map(|pos| self.of(kind, pos))
                .max()
                .unwrap_or(0),
        }
    }

    /// The item of `span` holding weight point `offset` (counted from the
    /// span's start; less than its summed weight).
    pub fn find(&self, kind: Kind, span: Span, offset: u64) -> u32 {
        match &self.sums {
            None => {
                // Less than the span's length: `offset` is below its
                // summed weight, `uniform` times that length.
                let steps = offset / self.uniform.max(1);
                debug_assert!(steps < u64::from(span.end - span.start));
                #[allow(clippy::cast_possible_truncation, reason = "bounded, as said above")]
                let steps = steps as u32;
                span.start + steps
            }
            Some(sums) => {
                let point = self.before(kind, span.start) + offset;
                let list = &sums[slot(kind)][span.start as usize..span.end as usize];
                span.start + position(list.partition_point(|end| *end <= point))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_and_varied() {
        let span = |start, end| Span { start, end };
        let w = Weights::new([vec![10, 10], vec![10, 10], vec![]]);
        assert_eq!(w.uniform(), Some(10));
        assert_eq!(w.sum(Kind::V4, span(0, 2)), 20);
        assert_eq!(w.find(Kind::V4, span(1, 2), 9), 1);
        let w = Weights::new([vec![10, 0, 30], vec![10, 0, 30], vec![5]]);
        assert_eq!(w.uniform(), None);
        assert_eq!(w.sum(Kind::Targets, span(0, 3)), 40);
        assert_eq!(w.sum(Kind::Targets, span(1, 3)), 30);
        assert_eq!(w.of(Kind::V4, 2), 30);
        assert_eq!(w.find(Kind::Targets, span(0, 3), 0), 0);
        assert_eq!(w.find(Kind::Targets, span(0, 3), 9), 0);
        assert_eq!(w.find(Kind::Targets, span(0, 3), 10), 2);
        assert_eq!(w.find(Kind::Targets, span(1, 3), 29), 2);
        assert_eq!(w.sum(Kind::V6, span(0, 1)), 5);
        assert_eq!(w.heaviest(Kind::Targets, span(0, 3)), 30);
        assert_eq!(w.heaviest(Kind::Targets, span(0, 2)), 10);
        assert_eq!(w.heaviest(Kind::Targets, span(1, 1)), 0);
        let w = Weights::new([vec![7, 7], vec![7], vec![]]);
        assert_eq!(w.heaviest(Kind::V4, span(0, 1)), 7);
        assert_eq!(w.heaviest(Kind::V6, span(0, 0)), 0);
    }
}
