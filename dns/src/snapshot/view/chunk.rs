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

impl ChunkMeta {
    /// The chunk of `metas` (and their zone runs, `groups`). `previous`
    /// is the previous view's chunk at the same position, if any: each
    /// run whose segments are the same as its run there is its
    /// allocation, shared (and the chains linking it stand).
    pub(super) fn seal(
        metas: Vec<PartMeta>,
        groups: Vec<(Option<ZoneId>, Segment)>,
        previous: Option<&ChunkMeta>,
    ) -> Self {
        let live = metas.iter().filter(|m| !m.whole.is_empty());
        let mut runs = RunsBuilder::default();
        let all = runs.run(live.clone().map(|m| m.whole), previous.map(|p| &p.all));
        let reserve = runs.run(
            metas
                .iter()
                .filter(|m| !m.reserve.targets.is_empty())
                .map(|m| m.reserve),
            previous.map(|p| &p.reserve),
        );
        let mut keys = Vec::new();
        runs_by_key(
            &mut runs,
            &mut keys,
            live.clone()
                .filter_map(|m| m.region.map(|r: RegionId| (r, m.whole))),
            previous.map_or(&[], ChunkMeta::region_runs),
        );
        let providers_at = keys.len();
        runs_by_key(
            &mut runs,
            &mut keys,
            live.filter_map(|m| m.provider.map(|p: ProviderId| (p, m.whole))),
            previous.map_or(&[], ChunkMeta::provider_runs),
        );
        let zones_at = keys.len();
        runs_by_key(
            &mut runs,
            &mut keys,
            groups
                .iter()
                .filter_map(|(z, g)| z.map(|z: ZoneId| (z, *g))),
            previous.map_or(&[], ChunkMeta::zone_runs),
        );
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
            keys_at: [providers_at, zones_at],
            reserve,
        }
    }
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
