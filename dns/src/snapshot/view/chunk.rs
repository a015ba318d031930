//! What a view keeps beside each chunk of its cluster parts: their
//! metadata, zone runs and the chunk's runs of the service-wide chains.

#![warn(clippy::cast_possible_truncation)]

use meshdns_proto::model::Affinity;

use super::ServiceView;
use super::cluster::Health;
use super::counts::Counts;
use super::targets::position;
use crate::locality::{ClusterId, ProviderId, RegionId, ZoneId};
use crate::snapshot::chain::{Runs, RunsBuilder, Segment, Span};
use crate::snapshot::parts::CHUNK;

/// What a view needs of each cluster part to rebuild itself, kept in flat
/// arrays beside `clusters` so that a rebuild reads them instead of
/// visiting every part.
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
    /// Its weight-0 targets, as this cluster's index.
    pub(super) reserve: Segment,
    pub(super) affinity: Affinity,
    pub(super) ttl: Option<u32>,
    /// Its export sets a failover order, primary, min-healthy or export-to.
    pub(super) traffic: bool,
    /// The part's whole run, as this cluster's index.
    pub(super) whole: Segment,
    /// Its zone runs: a range of its chunk's `groups`.
    pub(super) groups: Span,
}

/// What a view keeps of one chunk of its parts (the clusters of the
/// `Parts` chunk at the same position): their metadata and zone runs, and
/// the chunk's runs of the service-wide chains. Shared with the next view
/// while the chunk stands, so a view over a thousand clusters where one
/// changed copies one chunk's worth, not a thousand parts'.
#[derive(Debug)]
pub(super) struct ChunkMeta {
    pub(super) metas: Vec<PartMeta>,
    /// The parts' zone runs, part after part.
    pub(super) groups: Vec<(Option<ZoneId>, Segment)>,
    /// The chunk's run of every healthy target of positive weight.
    pub(super) all: Runs,
    /// Its runs by key, each kind keys ascending: regions, then
    /// providers from `keys_at[0]`, then zones from `keys_at[1]` (one
    /// list, not three).
    keys: Box<[(u32, Runs)]>,
    keys_at: [usize; 2],
    /// The weight-0 targets' run: the service's last resort.
    pub(super) reserve: Runs,
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
    /// The same clusters at the same positions, the parts at the
    /// positions set in the mask rebuilt (a bit per position in the
    /// chunk), every other as it was: only the runs the rebuilt parts are
    /// in, or were in, are rebuilt, from the old runs; every other run is
    /// the old one.
    Patch(&'a ChunkMeta, u64),
}

const _: () = assert!(CHUNK <= 64, "a chunk's rebuilt parts are a u64 mask");

impl ChunkMeta {
    /// The chunk of `metas` (and their zone runs, `groups`), its first
    /// part the view's `first`.
    pub(super) fn seal(
        metas: Vec<PartMeta>,
        groups: Vec<(Option<ZoneId>, Segment)>,
        first: u32,
        before: Before<'_>,
    ) -> Self {
        let mut runs = RunsBuilder::default();
        let (all, reserve, keys, keys_at) = match before {
            Before::Patch(previous, fresh) => {
                patched(&mut runs, &metas, &groups, previous, first, fresh)
            }
            Before::Chunk(previous) => grouped(&mut runs, &metas, &groups, Some(previous)),
            Before::Nothing => grouped(&mut runs, &metas, &groups, None),
        };
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
            groups,
            all,
            keys: keys.into(),
            keys_at,
            reserve,
        }
    }
}

/// A chunk's runs: every healthy target's, the reserve's, and by key
/// (with where providers and zones start).
type Sealed = (Runs, Runs, Vec<(u32, Runs)>, [usize; 2]);

/// A part's whole run counts (is in the chunk's runs of every target, its
/// region's and provider's) when it holds a healthy target or an
/// exported endpoint.
fn live(m: &&PartMeta) -> bool {
    !m.whole.is_empty()
}

/// Every run from the parts' segments: one stable sort per kind of key;
/// each run keeps `previous`'s allocation when its segments are the same.
fn grouped(
    runs: &mut RunsBuilder,
    metas: &[PartMeta],
    groups: &[(Option<ZoneId>, Segment)],
    previous: Option<&ChunkMeta>,
) -> Sealed {
    let all = runs.run(
        metas.iter().filter(live).map(|m| m.whole),
        previous.map(|p| &p.all),
    );
    let reserve = runs.run(
        metas
            .iter()
            .filter(|m| !m.reserve.targets.is_empty())
            .map(|m| m.reserve),
        previous.map(|p| &p.reserve),
    );
    let mut keys = Vec::new();
    runs_by_key(
        runs,
        &mut keys,
        metas
            .iter()
            .filter(live)
            .filter_map(|m| m.region.map(|r: RegionId| (r, m.whole))),
        previous.map_or(&[], ChunkMeta::region_runs),
    );
    let providers_at = keys.len();
    runs_by_key(
        runs,
        &mut keys,
        metas
            .iter()
            .filter(live)
            .filter_map(|m| m.provider.map(|p: ProviderId| (p, m.whole))),
        previous.map_or(&[], ChunkMeta::provider_runs),
    );
    let zones_at = keys.len();
    runs_by_key(
        runs,
        &mut keys,
        groups
            .iter()
            .filter_map(|(z, g)| z.map(|z: ZoneId| (z, *g))),
        previous.map_or(&[], ChunkMeta::zone_runs),
    );
    (all, reserve, keys, [providers_at, zones_at])
}

/// The runs of `previous` (the same clusters at the same positions, the
/// view's `first` the first) after the parts set in `fresh` were rebuilt:
/// a run the rebuilt parts are not in, and were not in, is the old one;
/// the others are the old run without the rebuilt parts' segments,
/// merged with their new ones. What [`grouped`] would build, in the
/// changed runs' length rather than a sort of every segment.
fn patched(
    runs: &mut RunsBuilder,
    metas: &[PartMeta],
    groups: &[(Option<ZoneId>, Segment)],
    previous: &ChunkMeta,
    first: u32,
    fresh: u64,
) -> Sealed {
    let is_fresh = move |cluster: u32| (fresh >> (cluster - first)) & 1 == 1;
    let rebuilt = || {
        (0..metas.len())
            .filter(move |&p| (fresh >> p) & 1 == 1)
            .map(|p| (&metas[p], &previous.metas[p]))
    };
    let zones_of = |m: &PartMeta, groups: &'_ [(Option<ZoneId>, Segment)]| {
        groups[m.groups.start as usize..m.groups.end as usize]
            .iter()
            .filter_map(|(z, g)| z.map(|z: ZoneId| (z, *g)))
            .collect::<Vec<_>>()
    };
    let all = runs.run(
        merged(
            kept(&previous.all, is_fresh),
            rebuilt().map(|(m, _)| m).filter(live).map(|m| m.whole),
        ),
        Some(&previous.all),
    );
    let reserve = runs.run(
        merged(
            kept(&previous.reserve, is_fresh),
            rebuilt()
                .map(|(m, _)| m)
                .filter(|m| !m.reserve.targets.is_empty())
                .map(|m| m.reserve),
        ),
        Some(&previous.reserve),
    );
    let mut keys = Vec::with_capacity(previous.keys.len() + 4);
    patch_keyed(
        runs,
        &mut keys,
        previous.region_runs(),
        rebuilt().filter_map(|(_, was)| was.region),
        rebuilt()
            .map(|(m, _)| m)
            .filter(live)
            .filter_map(|m| m.region.map(|r: RegionId| (r, m.whole))),
        is_fresh,
    );
    let providers_at = keys.len();
    patch_keyed(
        runs,
        &mut keys,
        previous.provider_runs(),
        rebuilt().filter_map(|(_, was)| was.provider),
        rebuilt()
            .map(|(m, _)| m)
            .filter(live)
            .filter_map(|m| m.provider.map(|p: ProviderId| (p, m.whole))),
        is_fresh,
    );
    let zones_at = keys.len();
    patch_keyed(
        runs,
        &mut keys,
        previous.zone_runs(),
        rebuilt().flat_map(|(_, was)| zones_of(was, &previous.groups).into_iter().map(|(z, _)| z)),
        rebuilt().flat_map(|(m, _)| zones_of(m, groups)),
        is_fresh,
    );
    (all, reserve, keys, [providers_at, zones_at])
}

/// `run`'s segments of the parts not rebuilt.
fn kept(run: &Runs, is_fresh: impl Fn(u32) -> bool) -> impl Iterator<Item = Segment> {
    run.iter()
        .map(|(s, _)| *s)
        .filter(move |s| !is_fresh(s.cluster))
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
/// ones (dropped when empty); every other key's run is `previous`'s.
fn patch_keyed(
    runs: &mut RunsBuilder,
    keys: &mut Vec<(u32, Runs)>,
    previous: &[(u32, Runs)],
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
        while let Some((k, run)) = unchanged.next_if(|(k, _)| *k < key) {
            keys.push((*k, run.clone()));
        }
        let old = unchanged.next_if(|(k, _)| *k == key).map(|(_, run)| run);
        let at = items.partition_point(|(k, _)| *k < key);
        let end = items.partition_point(|(k, _)| *k <= key);
        let segments = merged(
            old.into_iter().flat_map(move |run| kept(run, is_fresh)),
            items[at..end].iter().map(|(_, s)| *s),
        );
        if let Some(run) = runs.nonempty_run(segments, old) {
            keys.push((key, run));
        }
    }
    keys.extend(unchanged.map(|(k, run)| (*k, run.clone())));
}

impl ChunkMeta {
    /// The chunk's zone runs, zones ascending.
    pub(super) fn zone_runs(&self) -> &[(ZoneId, Runs)] {
        &self.keys[self.keys_at[1]..]
    }

    /// Its region runs, regions ascending.
    pub(super) fn region_runs(&self) -> &[(RegionId, Runs)] {
        &self.keys[..self.keys_at[0]]
    }

    /// Its provider runs, providers ascending.
    pub(super) fn provider_runs(&self) -> &[(ProviderId, Runs)] {
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

/// Part `i` of `prev` kept as part `index`: its meta, with its zone runs
/// copied to `groups` (its new chunk's).
pub(super) fn keep(
    prev: &ServiceView,
    i: usize,
    index: u32,
    groups: &mut Vec<(Option<ZoneId>, Segment)>,
) -> PartMeta {
    let chunk = &prev.chunks[i / CHUNK];
    let mut meta = chunk.metas[i % CHUNK];
    let start = position(groups.len());
    groups.extend(
        chunk.groups[meta.groups.start as usize..meta.groups.end as usize]
            .iter()
            .map(|(z, g)| {
                (
                    *z,
                    Segment {
                        cluster: index,
                        ..*g
                    },
                )
            }),
    );
    meta.groups = Span {
        start,
        end: position(groups.len()),
    };
    meta.whole.cluster = index;
    meta.reserve.cluster = index;
    meta
}

/// A run of `items`' segments per key, keys ascending, each run in the
/// items' order, appended to `keys` with its key; `previous` is the
/// previous chunk's runs of the same kind, whose allocation a run that
/// did not change keeps. Once per sealed chunk (a view's chains link
/// these runs, they never regroup them): one stable sort of the chunk's
/// segments.
fn runs_by_key(
    runs: &mut RunsBuilder,
    keys: &mut Vec<(u32, Runs)>,
    items: impl Iterator<Item = (u32, Segment)>,
    previous: &[(u32, Runs)],
) {
    let mut items: Vec<(u32, Segment)> = items.collect();
    items.sort_by_key(|(key, _)| *key);
    keys.extend(items.chunk_by(|a, b| a.0 == b.0).map(|group| {
        let key = group[0].0;
        let reuse = previous
            .binary_search_by_key(&key, |(k, _)| *k)
            .ok()
            .map(|i| &previous[i].1);
        (key, runs.run(group.iter().map(|(_, s)| *s), reuse))
    }));
}
