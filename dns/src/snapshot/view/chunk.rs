//! What a view keeps beside each chunk of its cluster parts: their
//! metadata and the chunk's runs of the service-wide chains (made of the
//! parts' own segments).

#![warn(clippy::cast_possible_truncation)]

use std::sync::Arc;

use meshdns_proto::model::Affinity;

use super::ClusterView;
use super::cluster::Health;
use super::counts::Counts;
use super::targets::position;
use crate::locality::{ClusterId, ProviderId, RegionId, ZoneId};
use crate::snapshot::chain::{Placed, Run, RunEnds, Runs, RunsBuilder, Segment, segment_at};
use crate::snapshot::parts::CHUNK;

/// What a view needs of each cluster part to rebuild itself, kept in flat
/// arrays beside `clusters`. The part's segments (its whole run, its
/// reserve, its zone runs) are not here: they are the part's own, read
/// from it with its index stamped ([`ClusterView::whole`]) when a run
/// they are in is rebuilt: only the rebuilt parts (old and new) when a
/// chunk is patched in place, every part of the chunk when it is grouped
/// anew.
#[derive(Debug, Clone, Copy)]
pub(super) struct PartMeta {
    pub(super) id: ClusterId,
    pub(super) stale: bool,
    pub(super) has_ready: bool,
    pub(super) health: Health,
    pub(super) region: Option<RegionId>,
    pub(super) provider: Option<ProviderId>,
    /// Whether the part's positive-weight targets all weigh the same.
    pub(super) uniform: Uniformity,
    pub(super) affinity: Affinity,
    pub(super) ttl: Option<u32>,
    /// Its export sets a failover order, primary, min-healthy or export-to.
    pub(super) traffic: bool,
}

/// What a view keeps of one chunk of its parts (the clusters of the
/// `Parts` chunk at the same position): their metadata and the chunk's
/// runs of the service-wide chains. Shared with the next view
/// while the chunk stands, so a view over a thousand clusters where one
/// changed copies one chunk's worth, not a thousand parts'.
///
/// The chunk's runs are in a table by slot (what a chain's link names,
/// with the chunk's position): a rebuilt chunk keeps the slot of every
/// list whose run it keeps, puts a changed list's new run in the list's
/// old slot, and a new list's in the first free one, so a chain whose
/// run did not change links the same (chunk, slot) in either view.
#[derive(Debug)]
pub(in crate::snapshot) struct ChunkMeta {
    pub(super) metas: Vec<PartMeta>,
    /// The chunk's runs by slot; `None`: a free slot (a list the chunk
    /// held before and holds no more), filled by the next new list.
    slots: Box<[Option<Runs>]>,
    /// The slot of the chunk's run of every healthy target of positive
    /// weight.
    pub(super) all: u32,
    /// Its runs' slots by key, each kind keys ascending: regions, then
    /// providers from `keys_at[0]`, then zones from `keys_at[1]` (one
    /// list, not three).
    keys: Box<[(u32, u32)]>,
    keys_at: [usize; 2],
    /// The slot of the weight-0 targets' run: the service's last resort.
    pub(super) reserve: u32,
    /// Whether every positive-weight target of the chunk weighs the same.
    pub(super) uniform: Uniformity,
    /// The first affinity other than `Nearest`, and the shortest TTL, of
    /// the chunk's exports.
    pub(super) affinity: Affinity,
    pub(super) ttl: Option<u32>,
    /// The first part (in the chunk) whose export sets a traffic policy.
    pub(super) traffic_from: Option<u32>,
    pub(super) counts: Counts,
}

/// The previous view's chunk at a sealed chunk's position, and what
/// changed there.
#[derive(Debug, Clone, Copy)]
pub(super) enum Before<'a> {
    /// No chunk there (the view grew, or is new).
    Nothing,
    /// A chunk of other parts, or of parts at other positions: each run is
    /// rebuilt, keeping the old run's allocation where its segments are
    /// the same.
    Chunk(&'a ChunkMeta),
    /// The same clusters at the same positions (the previous chunk and
    /// its parts), the parts at the positions set in the mask rebuilt (a
    /// bit per position in the chunk), every other as it was: only the
    /// runs the rebuilt parts are in, or were in, are rebuilt, from the
    /// old runs; every other run is the old one.
    Patch(&'a ChunkMeta, &'a [Arc<ClusterView>], u64),
}

const _: () = assert!(CHUNK <= 64, "a chunk's rebuilt parts are a u64 mask");
// What `in_place` copies per kept part: no segment (they are the part's).
const _: () = assert!(std::mem::size_of::<PartMeta>() == 56);

impl ChunkMeta {
    /// The chunk of `parts` (with their `metas`), its first part the
    /// view's `first`.
    pub(super) fn seal(
        metas: Vec<PartMeta>,
        parts: &[Arc<ClusterView>],
        first: u32,
        before: Before<'_>,
    ) -> Self {
        debug_assert_eq!(metas.len(), parts.len());
        let mut runs = RunsBuilder::default();
        let new = Chunk { parts, first };
        let (previous, (all, reserve, keys, keys_at)) = match before {
            Before::Patch(previous, old, fresh) => {
                let old = Chunk { parts: old, first };
                (
                    Some(previous),
                    patched(&mut runs, &metas, new, previous, old, fresh),
                )
            }
            Before::Chunk(previous) => (
                Some(previous),
                grouped(&mut runs, &metas, new, Some(previous)),
            ),
            Before::Nothing => (None, grouped(&mut runs, &metas, new, None)),
        };
        let (slots, all, reserve, keys) = slotted(previous, all, reserve, keys);
        ChunkMeta {
            affinity: metas
                .iter()
                .map(|m| m.affinity)
                .find(|a| *a != Affinity::Nearest)
                .unwrap_or_default(),
            ttl: metas.iter().filter_map(|m| m.ttl).min(),
            traffic_from: metas.iter().position(|m| m.traffic).map(position),
            uniform: metas
                .iter()
                .fold(Uniformity::Empty, |u, m| u.join(m.uniform)),
            counts: metas.iter().fold(Counts::default(), |mut all, m| {
                all.add(Counts::of(m.stale, m.has_ready));
                all
            }),
            metas,
            slots,
            all,
            keys,
            keys_at,
            reserve,
        }
    }

    /// The run in `slot`, each segment with the run's running ends (none
    /// for a free slot).
    pub(in crate::snapshot) fn run(&self, slot: u32) -> &[(Placed, RunEnds)] {
        self.slots
            .get(slot as usize)
            .and_then(Option::as_deref)
            .unwrap_or(&[])
    }

    /// The run in `slot` as the chunk holds it (`None`: a free slot).
    pub(super) fn runs_at(&self, slot: u32) -> Option<&Runs> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// The run in `slot` with its slot: what a rebuilt chunk may keep.
    fn reusable(&self, slot: u32) -> Option<(u32, &Runs)> {
        self.runs_at(slot).map(|run| (slot, run))
    }

    /// How many slots the chunk's table has, and how many hold a run.
    #[cfg(test)]
    pub(super) fn slot_use(&self) -> (usize, usize) {
        (self.slots.len(), self.slots.iter().flatten().count())
    }
}

/// A chunk's runs: every healthy target's, the reserve's, and by key
/// (with where providers and zones start).
type Sealed = (Run, Run, Vec<(u32, Run)>, [usize; 2]);

/// A chunk's table of runs, the slots of its every-healthy-target run and
/// reserve run, and each key's slot.
type Slots = (Box<[Option<Runs>]>, u32, u32, Box<[(u32, u32)]>);

/// The chunk's table of runs after `previous`'s (`None`: a new chunk),
/// and the slots of every healthy target's run, the reserve's and each
/// key's: a kept run stays in its slot, a changed list's new run takes
/// its old slot, the slots of lists the chunk no longer holds are freed,
/// and each new list's run takes the first free slot (else one past the
/// end). The table never holds more slots than the most runs the chunk
/// held at once.
fn slotted(previous: Option<&ChunkMeta>, all: Run, reserve: Run, keys: Vec<(u32, Run)>) -> Slots {
    let mut slots: Vec<Option<Runs>> =
        previous.map_or_else(|| Vec::with_capacity(keys.len() + 2), |p| p.slots.to_vec());
    // Which of the previous slots a run of this chunk is in.
    let mut held = vec![false; slots.len()];
    let mut placed: Vec<u32> = vec![0; keys.len() + 2];
    let mut fresh: Vec<(usize, Runs)> = Vec::new();
    let mut place = |i: usize, run: Run, slots: &mut Vec<Option<Runs>>| match run {
        Run::Kept(slot) => {
            held[slot as usize] = true;
            placed[i] = slot;
        }
        Run::New(run, Some(slot)) => {
            held[slot as usize] = true;
            slots[slot as usize] = Some(run);
            placed[i] = slot;
        }
        Run::New(run, None) => fresh.push((i, run)),
    };
    let mut key_names = Vec::with_capacity(keys.len());
    place(0, all, &mut slots);
    place(1, reserve, &mut slots);
    for (i, (key, run)) in keys.into_iter().enumerate() {
        key_names.push(key);
        place(i + 2, run, &mut slots);
    }
    for (slot, held) in slots.iter_mut().zip(&held) {
        if !held {
            *slot = None;
        }
    }
    let mut free = 0;
    for (i, run) in fresh {
        while free < slots.len() && slots[free].is_some() {
            free += 1;
        }
        if free == slots.len() {
            slots.push(None);
        }
        slots[free] = Some(run);
        placed[i] = position(free);
    }
    while slots.last().is_some_and(Option::is_none) {
        slots.pop();
    }
    let keys = key_names
        .into_iter()
        .zip(placed[2..].iter().copied())
        .collect();
    (slots.into(), placed[0], placed[1], keys)
}

/// A chunk's parts, the first the view's `first`: where a run's segments
/// are read, each stamped with its part's index in the view.
#[derive(Clone, Copy)]
struct Chunk<'a> {
    parts: &'a [Arc<ClusterView>],
    first: u32,
}

impl<'a> Chunk<'a> {
    /// Part `p`'s whole run, as the view's cluster.
    fn whole(self, p: usize) -> Segment {
        self.parts[p].whole(self.first + position(p))
    }

    /// Part `p`'s weight-0 targets, as the view's cluster.
    fn reserve(self, p: usize) -> Segment {
        self.parts[p].reserve(self.first + position(p))
    }

    /// Part `p`'s zone runs of a known zone, as the view's cluster.
    fn zones(self, p: usize) -> impl Iterator<Item = (ZoneId, Segment)> + 'a {
        self.parts[p].zones(self.first + position(p))
    }

    /// Every part's whole run that counts, with its position
    /// ([`live_of`](Self::live_of) every part).
    fn live(self) -> impl Iterator<Item = (usize, Segment)> + 'a {
        self.live_of(0..self.parts.len())
    }

    /// The whole runs of the parts at `positions` that count (are in the
    /// chunk's runs of every target, their region's and provider's: they
    /// hold a healthy target or an exported endpoint), with their
    /// positions.
    fn live_of(
        self,
        positions: impl Iterator<Item = usize> + 'a,
    ) -> impl Iterator<Item = (usize, Segment)> + 'a {
        positions
            .map(move |p| (p, self.whole(p)))
            .filter(|(_, s)| !s.is_empty())
    }
}

/// Every run from the parts' segments: one stable sort per kind of key;
/// each run keeps `previous`'s allocation when its segments are the same.
fn grouped(
    runs: &mut RunsBuilder,
    metas: &[PartMeta],
    chunk: Chunk<'_>,
    previous: Option<&ChunkMeta>,
) -> Sealed {
    let live: Vec<(usize, Segment)> = chunk.live().collect();
    let all = runs.run(
        live.iter().map(|(_, s)| *s),
        previous.and_then(|p| p.reusable(p.all)),
    );
    let reserve = runs.run(
        (0..metas.len())
            .map(|p| chunk.reserve(p))
            .filter(|s| !s.targets.is_empty()),
        previous.and_then(|p| p.reusable(p.reserve)),
    );
    let mut keys = Vec::new();
    runs_by_key(
        runs,
        &mut keys,
        live.iter()
            .filter_map(|(p, s)| metas[*p].region.map(|r: RegionId| (r, *s))),
        previous,
        previous.map_or(&[], ChunkMeta::region_runs),
    );
    let providers_at = keys.len();
    runs_by_key(
        runs,
        &mut keys,
        live.iter()
            .filter_map(|(p, s)| metas[*p].provider.map(|r: ProviderId| (r, *s))),
        previous,
        previous.map_or(&[], ChunkMeta::provider_runs),
    );
    let zones_at = keys.len();
    runs_by_key(
        runs,
        &mut keys,
        (0..metas.len()).flat_map(|p| chunk.zones(p)),
        previous,
        previous.map_or(&[], ChunkMeta::zone_runs),
    );
    (all, reserve, keys, [providers_at, zones_at])
}

/// The runs of `previous` (the chunk of `old`'s parts: the same clusters
/// at the same positions as `chunk`'s) after the parts set in `fresh`
/// were rebuilt: a run the rebuilt parts are not in, and were not in, is
/// the old one; the others are the old run without the rebuilt parts'
/// segments, merged with their new ones. What [`grouped`] would build,
/// in the changed runs' length rather than a sort of every segment; only
/// the rebuilt parts are read, new and old.
fn patched(
    runs: &mut RunsBuilder,
    metas: &[PartMeta],
    chunk: Chunk<'_>,
    previous: &ChunkMeta,
    old: Chunk<'_>,
    fresh: u64,
) -> Sealed {
    let first = chunk.first;
    let is_fresh = move |cluster: u32| (fresh >> (cluster - first)) & 1 == 1;
    let rebuilt = move || (0..metas.len()).filter(move |&p| (fresh >> p) & 1 == 1);
    let live = move || chunk.live_of(rebuilt());
    let all = runs.run(
        merged(
            kept(previous.run(previous.all), is_fresh),
            live().map(|(_, s)| s),
        ),
        previous.reusable(previous.all),
    );
    let reserve = runs.run(
        merged(
            kept(previous.run(previous.reserve), is_fresh),
            rebuilt()
                .map(|p| chunk.reserve(p))
                .filter(|s| !s.targets.is_empty()),
        ),
        previous.reusable(previous.reserve),
    );
    let mut keys = Vec::with_capacity(previous.keys.len() + 4);
    patch_keyed(
        runs,
        &mut keys,
        previous,
        previous.region_runs(),
        rebuilt().filter_map(|p| previous.metas[p].region),
        live().filter_map(|(p, s)| metas[p].region.map(|r: RegionId| (r, s))),
        is_fresh,
    );
    let providers_at = keys.len();
    patch_keyed(
        runs,
        &mut keys,
        previous,
        previous.provider_runs(),
        rebuilt().filter_map(|p| previous.metas[p].provider),
        live().filter_map(|(p, s)| metas[p].provider.map(|r: ProviderId| (r, s))),
        is_fresh,
    );
    let zones_at = keys.len();
    patch_keyed(
        runs,
        &mut keys,
        previous,
        previous.zone_runs(),
        rebuilt().flat_map(|p| old.zones(p).map(|(z, _)| z)),
        rebuilt().flat_map(|p| chunk.zones(p)),
        is_fresh,
    );
    (all, reserve, keys, [providers_at, zones_at])
}

/// `run`'s segments of the parts not rebuilt.
fn kept<'r>(
    run: &'r [(Placed, RunEnds)],
    is_fresh: impl Fn(u32) -> bool + 'r,
) -> impl Iterator<Item = Segment> + 'r {
    (0..run.len())
        .filter(move |&i| !is_fresh(run[i].0.cluster))
        .map(move |i| segment_at(run, i))
}

/// Two lists of segments of distinct clusters, each in cluster order,
/// merged in cluster order (a run's order: its parts').
fn merged(
    kept: impl Iterator<Item = Segment>,
    fresh: impl Iterator<Item = Segment>,
) -> impl Iterator<Item = Segment> {
    let (mut kept, mut fresh) = (kept.peekable(), fresh.peekable());
    std::iter::from_fn(move || match (kept.peek(), fresh.peek()) {
        (Some(a), Some(b)) if b.cluster < a.cluster => fresh.next(),
        (Some(_), _) => kept.next(),
        (None, _) => fresh.next(),
    })
}

/// The runs by key of one kind after the rebuilt parts (in `is_fresh`)
/// changed, appended to `keys`: the keys those parts held (`held`) or
/// hold (`items`, their segments now in part order) are rebuilt from
/// `previous`'s run without the rebuilt parts' segments and their new
/// ones (dropped when empty); every other key's run is `previous`'s
/// (`chunk`'s, whose runs of the kind `previous` gives by slot).
fn patch_keyed(
    runs: &mut RunsBuilder,
    keys: &mut Vec<(u32, Run)>,
    chunk: &ChunkMeta,
    previous: &[(u32, u32)],
    held: impl Iterator<Item = u32>,
    items: impl Iterator<Item = (u32, Segment)>,
    is_fresh: impl Fn(u32) -> bool + Copy,
) {
    let mut items: Vec<(u32, Segment)> = items.collect();
    items.sort_by_key(|(key, _)| *key);
    let mut touched: Vec<u32> = held.chain(items.iter().map(|(key, _)| *key)).collect();
    touched.sort_unstable();
    touched.dedup();
    let mut unchanged = previous.iter().peekable();
    for key in touched {
        while let Some((k, slot)) = unchanged.next_if(|(k, _)| *k < key) {
            keys.push((*k, Run::Kept(*slot)));
        }
        let old = unchanged
            .next_if(|(k, _)| *k == key)
            .and_then(|(_, slot)| chunk.reusable(*slot));
        let at = items.partition_point(|(k, _)| *k < key);
        let end = items.partition_point(|(k, _)| *k <= key);
        let segments = merged(
            old.into_iter()
                .flat_map(move |(_, run)| kept(run, is_fresh)),
            items[at..end].iter().map(|(_, s)| *s),
        );
        if let Some(run) = runs.nonempty_run(segments, old) {
            keys.push((key, run));
        }
    }
    keys.extend(unchanged.map(|(k, slot)| (*k, Run::Kept(*slot))));
}

impl ChunkMeta {
    /// The slots of the chunk's zone runs, zones ascending.
    pub(super) fn zone_runs(&self) -> &[(ZoneId, u32)] {
        &self.keys[self.keys_at[1]..]
    }

    /// Its region runs' slots, regions ascending.
    pub(super) fn region_runs(&self) -> &[(RegionId, u32)] {
        &self.keys[..self.keys_at[0]]
    }

    /// Its provider runs' slots, providers ascending.
    pub(super) fn provider_runs(&self) -> &[(ProviderId, u32)] {
        &self.keys[self.keys_at[0]..self.keys_at[1]]
    }
}

/// Whether a set of targets all weigh the same: then an answer is the
/// plain rotation, else a weighted sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Uniformity {
    /// No target of positive weight.
    Empty,
    /// Every one weighs this.
    All(u64),
    Varied,
}

impl Uniformity {
    pub(super) fn join(self, other: Uniformity) -> Uniformity {
        match (self, other) {
            (Uniformity::Empty, x) | (x, Uniformity::Empty) => x,
            (Uniformity::All(a), Uniformity::All(b)) if a == b => self,
            _ => Uniformity::Varied,
        }
    }
}

/// The metadata of a chunk whose parts are `previous`'s at the same
/// positions, those in `rebuilt` (positions in the chunk, each with its
/// new metadata) rebuilt: `previous`'s copied whole and the rebuilt
/// entries patched, so a kept part is not visited.
pub(super) fn in_place(previous: &ChunkMeta, rebuilt: &[(usize, PartMeta)]) -> Vec<PartMeta> {
    let mut metas = previous.metas.clone();
    for (p, m) in rebuilt {
        metas[*p] = *m;
    }
    metas
}

/// A run of `items`' segments per key, keys ascending, each run in the
/// items' order, appended to `keys` with its key; `previous` is the
/// previous chunk's (`chunk`'s) runs of the same kind by slot, whose
/// allocation and slot a run that did not change keeps. Once per sealed
/// chunk (a view's chains link these runs, they never regroup them): one
/// stable sort of the chunk's segments.
fn runs_by_key(
    runs: &mut RunsBuilder,
    keys: &mut Vec<(u32, Run)>,
    items: impl Iterator<Item = (u32, Segment)>,
    chunk: Option<&ChunkMeta>,
    previous: &[(u32, u32)],
) {
    let mut items: Vec<(u32, Segment)> = items.collect();
    items.sort_by_key(|(key, _)| *key);
    keys.extend(items.chunk_by(|a, b| a.0 == b.0).map(|group| {
        let key = group[0].0;
        let reuse = previous
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .and_then(|i| chunk?.reusable(previous[i].1));
        (key, runs.run(group.iter().map(|(_, s)| *s), reuse))
    }));
}
