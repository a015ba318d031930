//! A view's service-wide chains after an update: only the chains whose
//! run in a changed chunk changed are relinked; every other chain is the
//! previous view's, shared. The cost is the changed runs times their
//! chains' links, not every chunk's keys.

use std::sync::Arc;

use super::chunk::ChunkMeta;
use crate::snapshot::chain::{Chain, EMPTY, Runs};

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

/// A chunk's run with its slot in the chunk's table.
type Slotted<'r> = (u32, &'r Runs);

/// Chunk `k`'s run in `slot` of `chunks`, with its slot.
fn run_in(chunks: &[Arc<ChunkMeta>], k: u32, slot: u32) -> Option<Slotted<'_>> {
    let run = chunks.get(k as usize)?.runs_at(slot)?;
    Some((slot, run))
}

/// Whether chunk `k` links the same run at the same slot in `old` and
/// `new` (then a chain linking it stands).
fn same_run(old: &[Arc<ChunkMeta>], new: &[Arc<ChunkMeta>], k: u32, was: u32, now: u32) -> bool {
    match (run_in(old, k, was), run_in(new, k, now)) {
        (Some((a, run_a)), Some((b, run_b))) => a == b && Arc::ptr_eq(run_a, run_b),
        _ => false,
    }
}

/// The chains by key (zone, region or provider; `keys` reads the slots
/// of a chunk's runs of them, keys ascending) after the chunks at
/// `changed` became `new`'s: a key whose run a changed chunk holds now
/// and did not hold (the same allocation in the same slot) in `old`, or
/// held and holds no more, is relinked (dropped when no chunk holds it
/// any more); every other key's chain is shared. A changed chunk's runs
/// that did not change keep their allocation and slot
/// ([`ChunkMeta::seal`]), so a cluster's change relinks the chains of its
/// own zones and region, not every chain of its chunk.
pub(super) fn keyed<'r>(
    previous: &[(u32, Chain)],
    old: &[Arc<ChunkMeta>],
    new: &'r [Arc<ChunkMeta>],
    changed: &[u32],
    keys: fn(&ChunkMeta) -> &[(u32, u32)],
) -> Vec<(u32, Chain)> {
    // (key, chunk, the chunk's run of the key now and its slot: `None`
    // when only the old chunk held it).
    let mut touched: Vec<(u32, u32, Option<Slotted<'r>>)> = Vec::new();
    for &k in changed {
        let now = new.get(k as usize).map_or(&[][..], |c| keys(c));
        let was = old.get(k as usize).map_or(&[][..], |c| keys(c));
        let (mut i, mut j) = (0, 0);
        while i < now.len() || j < was.len() {
            match (now.get(i), was.get(j)) {
                (Some((key, slot)), Some((old_key, old_slot))) if key == old_key => {
                    if !same_run(old, new, k, *old_slot, *slot) {
                        touched.push((*key, k, run_in(new, k, *slot)));
                    }
                    i += 1;
                    j += 1;
                }
                (Some((key, slot)), Some((old_key, _))) if key < old_key => {
                    touched.push((*key, k, run_in(new, k, *slot)));
                    i += 1;
                }
                (Some((key, slot)), None) => {
                    touched.push((*key, k, run_in(new, k, *slot)));
                    i += 1;
                }
                (_, Some((old_key, _))) => {
                    touched.push((*old_key, k, None));
                    j += 1;
                }
                (None, None) => break,
            }
        }
    }
    touched.sort_unstable_by_key(|(key, k, _)| (*key, *k));
    let mut out = Vec::with_capacity(previous.len() + touched.len());
    let mut kept = previous.iter().peekable();
    for group in touched.chunk_by(|a, b| a.0 == b.0) {
        let key = group[0].0;
        while let Some((k, chain)) = kept.next_if(|(k, _)| *k < key) {
            out.push((*k, chain.clone()));
        }
        let before = kept.next_if(|(k, _)| *k == key).map_or(&EMPTY, |(_, c)| c);
        let chain = before.relink(group.iter().map(|(_, k, run)| (*k, *run)));
        if !chain.is_empty() {
            out.push((key, chain));
        }
    }
    out.extend(kept.map(|(k, c)| (*k, c.clone())));
    out
}

/// A chain every chunk has a run of (`slot` reads its slot: every
/// healthy target's, the reserve's) after the chunks at `changed` became
/// `new`'s: relinked where a changed chunk's run is not its old run's
/// allocation in the same slot.
pub(super) fn single(
    previous: &Chain,
    old: &[Arc<ChunkMeta>],
    new: &[Arc<ChunkMeta>],
    changed: &[u32],
    slot: fn(&ChunkMeta) -> u32,
) -> Chain {
    let relinked = |k: &&u32| match (old.get(**k as usize), new.get(**k as usize)) {
        (Some(a), Some(b)) => !same_run(old, new, **k, slot(a), slot(b)),
        _ => true,
    };
    if !changed.iter().any(|k| relinked(&k)) {
        return previous.clone();
    }
    previous.relink(
        changed
            .iter()
            .filter(relinked)
            .map(|&k| (k, new.get(k as usize).and_then(|c| run_in(new, k, slot(c))))),
    )
}
