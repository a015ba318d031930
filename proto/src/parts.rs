//! Splitting a message's repeated items into parts under a byte budget,
//! for the messages that may come in parts (`Snapshot`, `Reset`,
//! `ServicesChanged`) and for Deltas sent as several messages.

use std::iter::Peekable;

use prost::Message;

use crate::wire;

/// Bytes `item` adds to a repeated message field numbered below 16: one
/// tag byte, the length prefix and the item itself.
pub fn field_len(item: &impl Message) -> usize {
    let len = item.encoded_len();
    1 + prost::length_delimiter_len(len) + len
}

/// Groups items into runs whose sizes (as `size` measures them) add up to
/// at most a budget. An item bigger than the budget on its own goes alone
/// in its run, so every item is in exactly one run, in order; the receiver
/// refuses it if it is over its own limit.
pub struct Split<I: Iterator, F> {
    items: Peekable<I>,
    budget: usize,
    size: F,
}

impl<I: Iterator, F> std::fmt::Debug for Split<I, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Split")
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

impl<I: Iterator, F: Fn(&I::Item) -> usize> Split<I, F> {
    /// Splits `items` into parts of at most `budget` bytes, an item
    /// weighing `size(item)`.
    pub fn new(items: I, budget: usize, size: F) -> Self {
        Split {
            items: items.peekable(),
            budget,
            size,
        }
    }
}

impl<I: Iterator, F: Fn(&I::Item) -> usize> Iterator for Split<I, F> {
    type Item = Vec<I::Item>;

    fn next(&mut self) -> Option<Vec<I::Item>> {
        let first = self.items.next()?;
        let mut used = (self.size)(&first);
        let mut run = vec![first];
        let (budget, size) = (self.budget, &self.size);
        while let Some(item) = self.items.next_if(|item| {
            let len = size(item);
            let fits = used.saturating_add(len) <= budget;
            if fits {
                used += len;
            }
            fits
        }) {
            run.push(item);
        }
        Some(run)
    }
}

/// Marks every part but the last: `mark(part, more)` is called once per
/// part as it is taken, with `more` false only on the last. Lazy: it holds
/// at most the part it gives and the next one.
pub fn mark_more<T>(
    parts: impl Iterator<Item = T>,
    mark: impl Fn(&mut T, bool),
) -> impl Iterator<Item = T> {
    let mut parts = parts.peekable();
    std::iter::from_fn(move || {
        let mut part = parts.next()?;
        let more = parts.peek().is_some();
        mark(&mut part, more);
        Some(part)
    })
}

/// A run of changes to one cluster's services, as one message carries
/// them (a Delta, a ServicesChanged).
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// The services removed.
    pub removals: Vec<wire::ServiceKey>,
    /// The services added or replaced.
    pub upserts: Vec<wire::ServiceExport>,
}

/// One change, weighed as its message's field.
enum Change {
    Removal(wire::ServiceKey),
    Upsert(wire::ServiceExport),
}

impl Change {
    fn size(&self) -> usize {
        match self {
            Change::Removal(key) => field_len(key),
            Change::Upsert(service) => field_len(service),
        }
    }
}

/// `removals` then `upserts` in runs of at most `budget` bytes of fields
/// each (a service bigger than the budget goes alone); none when there is
/// no change. Removals go first, so a cluster at its services limit makes
/// room before it adds.
pub fn split_changes(
    removals: impl Iterator<Item = wire::ServiceKey>,
    upserts: impl Iterator<Item = wire::ServiceExport>,
    budget: usize,
) -> impl Iterator<Item = Changes> {
    let items = removals
        .map(Change::Removal)
        .chain(upserts.map(Change::Upsert));
    Split::new(items, budget, Change::size).map(|items| {
        let mut run = Changes::default();
        for item in items {
            match item {
                Change::Removal(key) => run.removals.push(key),
                Change::Upsert(service) => run.upserts.push(service),
            }
        }
        run
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(sizes: &[usize], budget: usize) -> Vec<Vec<usize>> {
        Split::new(sizes.iter().copied(), budget, |s| *s).collect()
    }

    #[test]
    fn runs_stay_under_the_budget_and_keep_every_item_once() {
        assert_eq!(runs(&[], 10), Vec::<Vec<usize>>::new());
        assert_eq!(runs(&[3, 3, 3, 3], 10), vec![vec![3, 3, 3], vec![3]]);
        assert_eq!(runs(&[5, 5, 5], 10), vec![vec![5, 5], vec![5]]);
        // Bigger than the budget: alone, neither dropped nor merged.
        assert_eq!(runs(&[2, 25, 2], 10), vec![vec![2], vec![25], vec![2]]);
        assert_eq!(runs(&[25], 10), vec![vec![25]]);
    }

    #[test]
    fn changes_split_removals_first_and_none_when_nothing_changed() {
        let key = |name: &str| wire::ServiceKey {
            namespace: "shop".into(),
            name: name.into(),
        };
        let upsert = |name: &str| wire::ServiceExport {
            key: Some(key(name)),
            ..Default::default()
        };
        let none = split_changes(std::iter::empty(), std::iter::empty(), 100);
        assert_eq!(none.count(), 0);
        let budget = field_len(&key("a")) * 2;
        let runs: Vec<Changes> = split_changes(
            ["a", "b", "c"].into_iter().map(key),
            ["d"].into_iter().map(upsert),
            budget,
        )
        .collect();
        let names = |run: &Changes| {
            let removed = run.removals.iter().map(|k| format!("-{}", k.name));
            let upserted = run
                .upserts
                .iter()
                .map(|s| format!("+{}", s.key.as_ref().unwrap().name));
            removed.chain(upserted).collect::<Vec<_>>()
        };
        assert_eq!(
            runs.iter().map(names).collect::<Vec<_>>(),
            [vec!["-a", "-b"], vec!["-c"], vec!["+d"]]
        );
    }

    #[test]
    fn field_len_is_what_a_repeated_field_costs() {
        let key = crate::wire::ServiceKey {
            namespace: "shop".into(),
            name: "web".into(),
        };
        let delta = crate::wire::Delta {
            upserts: vec![],
            removals: vec![key.clone(), key.clone()],
            observed_unix_ms: 0,
        };
        assert_eq!(delta.encoded_len(), 2 * field_len(&key));
    }

    #[test]
    fn more_on_all_but_the_last() {
        let marked: Vec<_> = mark_more([1, 2, 3].into_iter().map(|n| (n, false)), |p, more| {
            p.1 = more
        })
        .collect();
        assert_eq!(marked, vec![(1, true), (2, true), (3, false)]);
        let none = mark_more(std::iter::empty::<(u8, bool)>(), |p, m| p.1 = m);
        assert_eq!(none.count(), 0);
    }
}
