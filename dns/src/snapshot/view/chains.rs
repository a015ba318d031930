//! A view's service-wide chains after an update: only the chains the
//! changed chunks hold, or held, are relinked; every other chain is the
//! previous view's, shared. The cost is the changed chunks' keys times
//! their chains' links, not every chunk's keys.

use std::sync::Arc;

use super::chunk::ChunkMeta;
use crate::snapshot::chain::{Chain, EMPTY, Span};

/// The positions at which `new`'s chunks differ from `old`'s (rebuilt, or
/// in one only), ascending. A chunk shared with the previous view has
/// the same runs at the same position, so its links stand.
#[allow(
    clippy::cast_possible_truncation,
    reason = "a view holds fewer than 2^32 / 64 chunks (a part per cluster)"
)]
pub(super) fn changed(old: &[Arc<ChunkMeta>], new: &[Arc<ChunkMeta>]) -> Vec<u32> {
    (0..old.len().max(new.len()))
        .filter(|&k| match (old.get(k), new.get(k)) {
            (Some(a), Some(b)) => !Arc::ptr_eq(a, b),
            _ => true,
        })
        .map(|k| k as u32)
        .collect()
}

/// The chains by key (zone, region or provider; `keys` reads a chunk's
/// runs of them, keys ascending) after the chunks at `changed` became
/// `new`'s: a key that a changed chunk holds now or held in `old` is
/// relinked (dropped when no chunk holds it any more), every other key's
/// chain is shared.
pub(super) fn keyed(
    previous: &[(u32, Chain)],
    old: &[Arc<ChunkMeta>],
    new: &[Arc<ChunkMeta>],
    changed: &[u32],
    keys: fn(&ChunkMeta) -> &[(u32, Span)],
) -> Vec<(u32, Chain)> {
    // (key, chunk, the chunk's run of the key now: `None` when only the
    // old chunk held it).
    let mut touched: Vec<(u32, u32, Option<Span>)> = Vec::new();
    for &k in changed {
        if let Some(chunk) = new.get(k as usize) {
            touched.extend(keys(chunk).iter().map(|(key, span)| (*key, k, Some(*span))));
        }
        if let Some(chunk) = old.get(k as usize) {
            touched.extend(keys(chunk).iter().map(|(key, _)| (*key, k, None)));
        }
    }
    // Per (key, chunk), the new run first, then the old chunk's mention.
    touched.sort_unstable_by_key(|(key, k, run)| (*key, *k, run.is_none()));
    touched.dedup_by_key(|(key, k, _)| (*key, *k));
    let mut out = Vec::with_capacity(previous.len() + touched.len());
    let mut kept = previous.iter().peekable();
    for group in touched.chunk_by(|a, b| a.0 == b.0) {
        let key = group[0].0;
        while let Some((k, chain)) = kept.next_if(|(k, _)| *k < key) {
            out.push((*k, chain.clone()));
        }
        let before = kept.next_if(|(k, _)| *k == key).map_or(&EMPTY, |(_, c)| c);
        let chain = before.relink(
            group
                .iter()
                .map(|(_, k, run)| (*k, run.map(|span| (&new[*k as usize].runs, span)))),
        );
        if !chain.is_empty() {
            out.push((key, chain));
        }
    }
    out.extend(kept.map(|(k, c)| (*k, c.clone())));
    out
}

/// A chain every chunk has a run of (`run` reads it: every healthy
/// target's, the reserve's) after the chunks at `changed` became `new`'s.
pub(super) fn single(
    previous: &Chain,
    new: &[Arc<ChunkMeta>],
    changed: &[u32],
    run: fn(&ChunkMeta) -> Span,
) -> Chain {
    previous.relink(changed.iter().map(|&k| {
        let now = new.get(k as usize).map(|c| (&c.runs, run(c)));
        (k, now)
    }))
}
