//! Which healthy targets answer a given asker. Pure.
//!
//! Health is settled when the snapshot is built ([`ServiceView::build`]);
//! this module picks among healthy targets and rotates them so successive
//! answers spread load. Locality tiers (same cluster, zone, region) come in
//! here, keyed by the asker's address.

use std::cell::Cell;
use std::net::IpAddr;

use crate::snapshot::{ServiceView, Targets};

/// Who is asking: the query's source address (or, later, its ECS subnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    pub address: IpAddr,
}

/// The targets that answer `asker`. With no locality known for the asker,
/// every healthy target of every cluster.
pub fn select<'a>(view: &'a ServiceView, _asker: &Asker) -> &'a Targets {
    &view.all
}

thread_local! {
    /// Per-thread rotation counter: no shared mutable state on the answer
    /// path, and successive queries on a worker start at successive offsets.
    static ROTATION: Cell<usize> = const { Cell::new(0) };
}

/// A new rotation offset for one answer.
pub fn next_rotation() -> usize {
    ROTATION.with(|r| {
        let n = r.get().wrapping_add(1);
        r.set(n);
        n
    })
}

/// Up to `max` items of `items`, starting at `start` (mod len) and wrapping.
pub fn rotated<T: Copy>(items: &[T], start: usize, max: usize) -> impl Iterator<Item = T> + '_ {
    let len = items.len();
    let offset = if len == 0 { 0 } else { start % len };
    items[offset..]
        .iter()
        .chain(&items[..offset])
        .take(max)
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(items: &[u8], start: usize, max: usize, expected: &[u8]) {
        let got: Vec<u8> = rotated(items, start, max).collect();
        assert_eq!(got, expected, "items {items:?} start {start} max {max}");
    }

    #[test]
    fn rotation() {
        check(&[], 3, 8, &[]);
        check(&[1, 2, 3], 0, 8, &[1, 2, 3]);
        check(&[1, 2, 3], 1, 8, &[2, 3, 1]);
        check(&[1, 2, 3], 5, 2, &[3, 1]);
        check(&[1, 2, 3, 4], 2, 0, &[]);
    }
}
