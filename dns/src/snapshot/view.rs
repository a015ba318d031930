//! A global service as DNS answers it: every cluster's export of one key,
//! grouped by locality, with health decided.
//!
//! Built incrementally. Each cluster's part ([`ClusterView`]) is built
//! from that cluster's export and place alone and shared (`Arc`) between
//! successive views. Parts come in chunks of 64; beside each chunk the view
//! keeps the parts' metadata and the chunk's runs of the service-wide
//! lists (all, by zone, by region), shared while the chunk stands. When
//! one cluster's export changes, its part and its chunk are rebuilt, and
//! the service-wide [`Chain`]s are lists of the chunks' runs: O(chunks ×
//! zones) to make, with no endpoint copied and no other part visited.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use meshdns_proto::model::{
    Affinity, ClusterName, Endpoint, Mode, Port, ServiceExport, ServiceKey,
};

use super::chain::{Chain, RunRef, Runs, RunsBuilder, Segment, Span};
use super::parts::{CHUNK, Parts, PartsBuilder};
use crate::locality::{ClusterId, Place, RegionId, ZoneId};

/// One cluster's export of a service, with the cluster's place: the input
/// of [`ServiceView::build`].
#[derive(Debug, Clone, Copy)]
pub struct ExportInput<'a> {
    pub place: &'a Arc<Place>,
    pub export: &'a Arc<ServiceExport>,
}

/// A change to one cluster's part of a service, for [`ServiceView::update`].
#[derive(Debug, Clone, Copy)]
pub enum PartChange<'a> {
    /// The cluster exports the service (anew, or changed, or its place
    /// changed).
    Set(ExportInput<'a>),
    /// The cluster no longer exports it.
    Remove(&'a ClusterName),
}

impl PartChange<'_> {
    fn cluster(&self) -> &ClusterName {
        match self {
            PartChange::Set(input) => &input.place.name,
            PartChange::Remove(name) => name,
        }
    }
}

/// A global service: every cluster's export of one key, grouped for
/// answering by locality.
#[derive(Debug)]
pub struct ServiceView {
    pub key: ServiceKey,
    /// Answer TTL: the service's own, else the server default.
    pub ttl: u32,
    pub affinity: Affinity,
    /// Sorted by cluster name, for name lookups.
    pub clusters: Parts,
    /// What the view keeps of each chunk of `clusters`, chunk for chunk.
    chunks: Vec<Arc<ChunkMeta>>,
    /// (cluster id, index into `clusters`), sorted by id, for askers.
    by_id: Arc<[(ClusterId, u32)]>,
    /// Healthy targets by (region, zone): the endpoint's own zone where its
    /// slice says, else its cluster's.
    zones: Vec<(ZoneId, Chain)>,
    /// Healthy targets by their cluster's region.
    regions: Vec<(RegionId, Chain)>,
    /// Every healthy target: the answer for an asker of no known place.
    pub all: Chain,
    /// Every cluster holding the service is stale, so their last known
    /// endpoints are served rather than nothing.
    pub fail_open: bool,
    /// Some counted (live, or any when failing open) part has a ready
    /// endpoint: then serving-but-unready endpoints stay out.
    any_ready: bool,
}

/// What a cluster's part was built under: health depends on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Health {
    /// The cluster's endpoints are served (it is live, or the service fails open).
    serving: bool,
    /// Some serving endpoint of the service is ready: serving-but-unready
    /// (terminating) endpoints stay out.
    any_ready: bool,
}

/// What a view needs of each cluster part to rebuild itself, kept in flat
/// arrays beside `clusters` so that a rebuild reads them instead of
/// visiting every part.
#[derive(Debug, Clone, Copy)]
struct PartMeta {
    id: ClusterId,
    stale: bool,
    has_ready: bool,
    health: Health,
    region: Option<RegionId>,
    affinity: Affinity,
    ttl: Option<u32>,
    /// The part's whole run, as this cluster's index.
    whole: Segment,
    /// Its zone runs: a range of its chunk's `groups`.
    groups: Span,
}

/// What a view keeps of one chunk of its parts (the clusters of the
/// `Parts` chunk at the same position): their metadata and zone runs, and
/// the chunk's runs of the service-wide chains. Shared with the next view
/// while the chunk stands, so a view over a thousand clusters where one
/// changed copies one chunk's worth, not a thousand parts'.
#[derive(Debug)]
struct ChunkMeta {
    metas: Vec<PartMeta>,
    /// The parts' zone runs, part after part.
    groups: Vec<(Option<ZoneId>, Segment)>,
    /// The chunk's runs of the chains: every healthy target's, and each
    /// zone's and region's (ranges of `runs`).
    runs: Runs,
    all: Span,
    zones: Vec<(ZoneId, Span)>,
    regions: Vec<(RegionId, Span)>,
    /// The first affinity other than `Nearest`, and the shortest TTL, of
    /// the chunk's exports.
    affinity: Affinity,
    ttl: Option<u32>,
    counts: Counts,
}

impl ChunkMeta {
    fn seal(metas: Vec<PartMeta>, groups: Vec<(Option<ZoneId>, Segment)>) -> Self {
        let live = metas.iter().filter(|m| !m.whole.targets.is_empty());
        let mut runs = RunsBuilder::default();
        let all = runs.push(live.clone().map(|m| m.whole));
        let mut add = |buckets: Vec<(u32, Vec<Segment>)>| -> Vec<(u32, Span)> {
            buckets
                .into_iter()
                .map(|(k, segments)| (k, runs.push(segments)))
                .collect()
        };
        let regions = add(bucket(live.filter_map(|m| m.region.map(|r| (r, m.whole)))));
        let zones = add(bucket(
            groups.iter().filter_map(|(z, g)| z.map(|z| (z, *g))),
        ));
        let runs = runs.finish();
        ChunkMeta {
            affinity: metas
                .iter()
                .map(|m| m.affinity)
                .find(|a| *a != Affinity::Nearest)
                .unwrap_or_default(),
            ttl: metas.iter().filter_map(|m| m.ttl).min(),
            counts: metas.iter().fold(Counts::default(), |mut all, m| {
                all.add(Counts::of(m.stale, m.has_ready));
                all
            }),
            metas,
            groups,
            runs,
            all,
            zones,
            regions,
        }
    }
}

/// Part `i` of `prev` kept as part `index`: its meta, with its zone runs
/// copied to `groups` (its new chunk's).
fn keep(
    prev: &ServiceView,
    i: usize,
    index: u32,
    groups: &mut Vec<(Option<ZoneId>, Segment)>,
) -> PartMeta {
    let chunk = &prev.chunks[i / CHUNK];
    let mut meta = chunk.metas[i % CHUNK];
    let start = groups.len() as u32;
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
        end: groups.len() as u32,
    };
    meta.whole.cluster = index;
    meta
}

/// Whether any endpoint of `export` is ready.
fn has_ready(export: &ServiceExport) -> bool {
    export.endpoints().iter().any(|e| e.ready)
}

/// How many parts are live, live with a ready endpoint, and with a ready
/// endpoint at all: what a service's health is decided from.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    live: u32,
    ready_live: u32,
    ready: u32,
}

impl Counts {
    fn of(stale: bool, has_ready: bool) -> Self {
        Counts {
            live: u32::from(!stale),
            ready_live: u32::from(!stale && has_ready),
            ready: u32::from(has_ready),
        }
    }

    fn add(&mut self, other: Counts) {
        self.live += other.live;
        self.ready_live += other.ready_live;
        self.ready += other.ready;
    }

    fn remove(&mut self, other: Counts) {
        self.live -= other.live;
        self.ready_live -= other.ready_live;
        self.ready -= other.ready;
    }
}

/// `items` grouped by key, keys ascending, each group in the items'
/// order. Two bucket passes rather than a sort: a service spans a handful
/// of zones and regions but may span a thousand clusters.
fn bucket<K: Copy + Ord, T>(items: impl Iterator<Item = (K, T)> + Clone) -> Vec<(K, Vec<T>)> {
    let mut counts: Vec<(K, usize)> = Vec::new();
    for (key, _) in items.clone() {
        match counts.binary_search_by_key(&key, |(k, _)| *k) {
            Ok(i) => counts[i].1 += 1,
            Err(i) => counts.insert(i, (key, 1)),
        }
    }
    let mut buckets: Vec<(K, Vec<T>)> = counts
        .iter()
        .map(|(k, n)| (*k, Vec::with_capacity(*n)))
        .collect();
    for (key, item) in items {
        if let Ok(i) = counts.binary_search_by_key(&key, |(k, _)| *k) {
            buckets[i].1.push(item);
        }
    }
    buckets
}

/// Where a cluster's part comes from in an update.
enum Slot<'a> {
    /// Unchanged: index in the previous view.
    Kept(usize),
    New(ExportInput<'a>),
}

impl ServiceView {
    /// Builds the view of one service from every cluster exporting it.
    ///
    /// Health: an endpoint counts when ready; serving (terminating)
    /// endpoints count only when no endpoint of the service is ready.
    /// Stale clusters are left out, unless every cluster holding the
    /// service is stale (fail open). `zone_id` interns a (region, zone).
    pub fn build(
        key: ServiceKey,
        inputs: &[ExportInput<'_>],
        default_ttl: u32,
        zone_id: &mut dyn FnMut(Option<&str>, &str) -> ZoneId,
    ) -> Self {
        let changes: Vec<PartChange<'_>> = inputs.iter().map(|i| PartChange::Set(*i)).collect();
        Self::update(key, None, &changes, default_ttl, zone_id)
    }

    /// The view after `changes` to `previous` (every cluster not named in
    /// `changes` exports what it did). Parts of unchanged clusters are
    /// shared with `previous`, whole chunks of them with what the view
    /// keeps of them; service-wide health comes from per-chunk counts. The
    /// cost is the changed chunks, O(clusters) slot bookkeeping, and
    /// O(chunks × zones) for the chains.
    pub fn update(
        key: ServiceKey,
        previous: Option<&ServiceView>,
        changes: &[PartChange<'_>],
        default_ttl: u32,
        zone_id: &mut dyn FnMut(Option<&str>, &str) -> ZoneId,
    ) -> Self {
        let empty = Parts::default();
        let old = previous.map_or(&empty, |p| &p.clusters);
        // Place each change: (position in `old`, whether it replaces that
        // cluster, the change). Binary search per change, not a walk.
        let mut placed: Vec<(usize, bool, &PartChange<'_>)> = changes
            .iter()
            .map(|c| {
                match old.binary_search_by(|o| o.place.name.as_str().cmp(c.cluster().as_str())) {
                    Ok(i) => (i, true, c),
                    Err(i) => (i, false, c),
                }
            })
            .collect();
        placed.sort_by(|a, b| (a.0, a.1, a.2.cluster()).cmp(&(b.0, b.1, b.2.cluster())));
        placed.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1 && a.2.cluster() == b.2.cluster());
        let mut slots: Vec<Slot<'_>> = Vec::with_capacity(old.len() + changes.len());
        let mut next = placed.iter().peekable();
        for i in 0..=old.len() {
            let mut replaced = false;
            while let Some((_, replaces, change)) = next.next_if(|(at, _, _)| *at == i) {
                replaced |= *replaces;
                if let PartChange::Set(input) = change {
                    slots.push(Slot::New(*input));
                }
            }
            if i < old.len() && !replaced {
                slots.push(Slot::Kept(i));
            }
        }
        let meta = |i: usize| -> &PartMeta {
            let Some(prev) = previous else {
                unreachable!("kept parts come from a previous view")
            };
            &prev.chunks[i / CHUNK].metas[i % CHUNK]
        };
        // Service-wide health from counts: the previous view's, per chunk,
        // less the replaced parts, plus the new ones; no visit to the rest.
        let mut counts = Counts::default();
        if let Some(prev) = previous {
            for chunk in &prev.chunks {
                counts.add(chunk.counts);
            }
        }
        for (i, replaces, change) in &placed {
            if *replaces {
                let m = meta(*i);
                counts.remove(Counts::of(m.stale, m.has_ready));
            }
            if let PartChange::Set(input) = change {
                counts.add(Counts::of(input.place.stale, has_ready(input.export)));
            }
        }
        let fail_open = counts.live == 0;
        let any_ready = if fail_open {
            counts.ready > 0
        } else {
            counts.ready_live > 0
        };
        // Kept parts keep their own staleness (a cluster turning stale
        // comes as a change), so their health stands unless the service's did.
        let same_health =
            previous.is_some_and(|p| p.fail_open == fail_open && p.any_ready == any_ready);
        let health = |stale: bool| Health {
            serving: fail_open || !stale,
            any_ready,
        };
        // A kept part whose health is as it was is taken as it is.
        let as_was = |i: usize| same_health || meta(i).health == health(meta(i).stale);
        let unchanged =
            |slot: &Slot<'_>, at: usize| matches!(slot, Slot::Kept(i) if *i == at && as_was(*i));
        let mut clusters = PartsBuilder::default();
        let mut chunks: Vec<Arc<ChunkMeta>> = Vec::with_capacity(slots.len().div_ceil(CHUNK));
        let mut metas = Vec::with_capacity(CHUNK.min(slots.len()));
        let mut groups = Vec::new();
        let mut n = 0;
        while n < slots.len() {
            // A whole chunk of unchanged, unmoved parts is shared, with
            // what the view keeps of it.
            if n % CHUNK == 0
                && let Some(chunk) = old.chunk(n / CHUNK)
                && (chunk.len() == CHUNK || n + chunk.len() == slots.len())
                && n + chunk.len() <= slots.len()
                && slots[n..n + chunk.len()]
                    .iter()
                    .enumerate()
                    .all(|(j, slot)| unchanged(slot, n + j))
                && let Some(prev) = previous
            {
                clusters.share(chunk);
                chunks.push(prev.chunks[n / CHUNK].clone());
                n += chunk.len();
                continue;
            }
            let index = n as u32;
            let part_meta = match slots[n] {
                Slot::Kept(i) if as_was(i) => {
                    let Some(prev) = previous else {
                        unreachable!("kept parts come from a previous view")
                    };
                    clusters.push(old[i].clone());
                    keep(prev, i, index, &mut groups)
                }
                Slot::Kept(i) => {
                    let c = &old[i];
                    let part =
                        ClusterView::build(&c.place, &c.export, health(c.place.stale), zone_id);
                    let m = part.meta(index, &mut groups);
                    clusters.push(Arc::new(part));
                    m
                }
                Slot::New(input) => {
                    let part = ClusterView::build(
                        input.place,
                        input.export,
                        health(input.place.stale),
                        zone_id,
                    );
                    let m = part.meta(index, &mut groups);
                    clusters.push(Arc::new(part));
                    m
                }
            };
            metas.push(part_meta);
            n += 1;
            if n % CHUNK == 0 || n == slots.len() {
                let sealed = ChunkMeta::seal(
                    std::mem::replace(&mut metas, Vec::with_capacity(CHUNK)),
                    std::mem::take(&mut groups),
                );
                chunks.push(Arc::new(sealed));
            }
        }
        let clusters = clusters.finish();
        // The same clusters in the same places: the id index stands.
        let by_id = previous
            .filter(|p| {
                p.clusters.len() == clusters.len()
                    && p.chunks.iter().zip(&chunks).all(|(a, b)| {
                        Arc::ptr_eq(a, b)
                            || a.metas
                                .iter()
                                .map(|m| m.id)
                                .eq(b.metas.iter().map(|m| m.id))
                    })
            })
            .map(|p| p.by_id.clone())
            .unwrap_or_else(|| {
                let mut by_id: Vec<(ClusterId, u32)> = chunks
                    .iter()
                    .flat_map(|c| c.metas.iter().map(|m| m.id))
                    .enumerate()
                    .map(|(i, id)| (id, i as u32))
                    .collect();
                by_id.sort_unstable();
                by_id.into()
            });
        Self::assemble(
            key,
            clusters,
            chunks,
            by_id,
            [fail_open, any_ready],
            default_ttl,
        )
    }

    /// The service-wide lists: chains of the chunks' runs.
    fn assemble(
        key: ServiceKey,
        clusters: Parts,
        chunks: Vec<Arc<ChunkMeta>>,
        by_id: Arc<[(ClusterId, u32)]>,
        [fail_open, any_ready]: [bool; 2],
        default_ttl: u32,
    ) -> Self {
        let chains = |buckets: Vec<(u32, Vec<RunRef>)>| -> Vec<(u32, Chain)> {
            buckets
                .into_iter()
                .map(|(k, runs)| (k, Chain::of_runs(runs)))
                .collect()
        };
        let zones =
            chains(bucket(chunks.iter().flat_map(|c| {
                c.zones.iter().map(|(z, i)| (*z, (c.runs.clone(), *i)))
            })));
        let regions =
            chains(bucket(chunks.iter().flat_map(|c| {
                c.regions.iter().map(|(r, i)| (*r, (c.runs.clone(), *i)))
            })));
        let all = Chain::of_runs(chunks.iter().map(|c| (c.runs.clone(), c.all)).collect());
        // A stricter affinity from any cluster applies to the whole
        // service; the shortest TTL wins.
        let affinity = chunks
            .iter()
            .map(|c| c.affinity)
            .find(|a| *a != Affinity::Nearest)
            .unwrap_or_default();
        let ttl = chunks
            .iter()
            .filter_map(|c| c.ttl)
            .min()
            .unwrap_or(default_ttl);
        ServiceView {
            key,
            ttl,
            affinity,
            clusters,
            chunks,
            by_id,
            zones,
            regions,
            all,
            fail_open,
            any_ready,
        }
    }

    /// The addresses this service answers with, and the PTR name of each.
    pub fn ptr_names(&self) -> Vec<(IpAddr, super::PtrName)> {
        let namespace: Arc<str> = Arc::from(self.key.namespace.as_str());
        let service: Arc<str> = Arc::from(self.key.name.as_str());
        let name = |host| super::PtrName {
            namespace: namespace.clone(),
            service: service.clone(),
            host,
        };
        let mut out = Vec::new();
        for c in self.clusters.iter() {
            for target in &c.targets.targets {
                match *target {
                    Target::Endpoint { endpoint, .. } => {
                        let ep = c.endpoint_model(endpoint);
                        let host = ep
                            .hostname
                            .as_ref()
                            .map(|h| (Arc::from(h.as_str()), Arc::from(c.name().as_str())));
                        out.extend(ep.addresses.iter().map(|a| (*a, name(host.clone()))));
                    }
                    Target::ClusterIp { .. } => {
                        out.extend(c.cluster_ips().iter().map(|a| (*a, name(None))))
                    }
                }
            }
        }
        out
    }

    pub fn cluster(&self, name: &str) -> Option<(usize, &ClusterView)> {
        self.clusters
            .binary_search_by(|c| c.name().as_str().cmp(name))
            .ok()
            .map(|i| (i, &*self.clusters[i]))
    }

    /// The asker's own cluster's part, if it exports the service.
    pub fn cluster_by_id(&self, id: ClusterId) -> Option<(usize, &ClusterView)> {
        self.by_id
            .binary_search_by_key(&id, |(i, _)| *i)
            .ok()
            .map(|i| {
                let index = self.by_id[i].1 as usize;
                (index, &*self.clusters[index])
            })
    }

    /// Healthy targets in a (region, zone).
    pub fn zone(&self, id: ZoneId) -> Option<&Chain> {
        self.zones
            .binary_search_by_key(&id, |(z, _)| *z)
            .ok()
            .map(|i| &self.zones[i].1)
    }

    /// Healthy targets in a region.
    pub fn region(&self, id: RegionId) -> Option<&Chain> {
        self.regions
            .binary_search_by_key(&id, |(r, _)| *r)
            .ok()
            .map(|i| &self.regions[i].1)
    }
}

/// One cluster's part of a global service. Its targets name the cluster
/// as index 0; the service-wide lists carry the real index.
#[derive(Debug)]
pub struct ClusterView {
    /// The cluster's place when this part was built (stale: left out of
    /// answers unless the service fails open).
    pub place: Arc<Place>,
    /// The export this part was built from; endpoint data is read from it.
    pub export: Arc<ServiceExport>,
    /// Health of each endpoint of `export`, in its order.
    pub endpoints: Vec<EndpointView>,
    /// This cluster's healthy targets, grouped by zone.
    pub targets: Targets,
    /// Each zone's run of `targets` (`None`: endpoints of no known zone),
    /// in zone order.
    groups: Vec<(Option<ZoneId>, Segment)>,
    health: Health,
    /// Whether any endpoint is ready (live or not).
    has_ready: bool,
    /// `place.id`, inline: the answer path counts answers by serving
    /// cluster without a pointer chase to the place.
    id: ClusterId,
}

impl ClusterView {
    fn build(
        place: &Arc<Place>,
        export: &Arc<ServiceExport>,
        health: Health,
        zone_id: &mut dyn FnMut(Option<&str>, &str) -> ZoneId,
    ) -> Self {
        let region_name = place.region.as_ref().map(|r| r.1.as_str());
        let endpoints: Vec<EndpointView> = export
            .endpoints()
            .iter()
            .map(|ep| EndpointView {
                healthy: health.serving && (ep.ready || (!health.any_ready && ep.serving)),
                zone: ep.zone.as_ref().map(|z| zone_id(region_name, z.as_str())),
            })
            .collect();
        let own_zone = place.zone.as_ref().map(|z| z.0);
        // (zone, target, its addresses), grouped by zone: the order within
        // a zone is the export's. Sized exactly: a million endpoints'
        // worth of these live as long as the snapshot.
        let mut healthy: Vec<(Option<ZoneId>, Target, &[IpAddr])> = match export.mode() {
            Mode::Endpoints => endpoints
                .iter()
                .zip(export.endpoints())
                .enumerate()
                .filter(|(_, (view, _))| view.healthy)
                .map(|(e, (view, model))| {
                    let target = Target::Endpoint {
                        cluster: 0,
                        endpoint: e as u32,
                    };
                    (view.zone.or(own_zone), target, &model.addresses[..])
                })
                .collect(),
            Mode::ClusterIp if endpoints.iter().any(|ep| ep.healthy) => {
                vec![(
                    own_zone,
                    Target::ClusterIp { cluster: 0 },
                    export.cluster_ips(),
                )]
            }
            Mode::ClusterIp => Vec::new(),
        };
        healthy.sort_by_key(|(zone, _, _)| *zone);
        let v4 = healthy
            .iter()
            .flat_map(|(_, _, a)| a.iter())
            .filter(|a| a.is_ipv4())
            .count();
        let mut targets = Targets {
            targets: Vec::with_capacity(healthy.len()),
            v4: Vec::with_capacity(v4),
            v6: Vec::with_capacity(healthy.iter().map(|(_, _, a)| a.len()).sum::<usize>() - v4),
        };
        // One flat list, zone after zone, and each zone's run of it.
        let zones = healthy.chunk_by(|a, b| a.0 == b.0);
        let mut groups = Vec::with_capacity(zones.clone().count());
        for run in zones {
            let before = targets.spans();
            for (_, target, addresses) in run {
                targets.push(*target, addresses);
            }
            let after = targets.spans();
            let span = |k: usize| Span {
                start: before[k],
                end: after[k],
            };
            groups.push((
                run[0].0,
                Segment {
                    cluster: 0,
                    targets: span(0),
                    v4: span(1),
                    v6: span(2),
                },
            ));
        }
        ClusterView {
            id: place.id,
            place: place.clone(),
            export: export.clone(),
            has_ready: has_ready(export),
            endpoints,
            targets,
            groups,
            health,
        }
    }

    pub fn id(&self) -> ClusterId {
        self.id
    }

    /// What a view keeps of this part as cluster `index`; its zone runs
    /// are appended to `groups`.
    fn meta(&self, index: u32, groups: &mut Vec<(Option<ZoneId>, Segment)>) -> PartMeta {
        let start = groups.len() as u32;
        groups.extend(self.groups.iter().map(|(z, g)| {
            (
                *z,
                Segment {
                    cluster: index,
                    ..*g
                },
            )
        }));
        PartMeta {
            id: self.place.id,
            stale: self.place.stale,
            has_ready: self.has_ready,
            health: self.health,
            region: self.place.region.as_ref().map(|r| r.0),
            affinity: self.export.policy().affinity,
            ttl: self.export.policy().ttl,
            whole: self.whole(index),
            groups: Span {
                start,
                end: groups.len() as u32,
            },
        }
    }

    /// All of this part's targets, as cluster `index`'s.
    pub fn whole(&self, index: u32) -> Segment {
        let [t, v4, v6] = self.targets.spans();
        Segment {
            cluster: index,
            targets: Span { start: 0, end: t },
            v4: Span { start: 0, end: v4 },
            v6: Span { start: 0, end: v6 },
        }
    }

    /// The targets outside the cluster's own zone, as cluster `index`'s:
    /// with the asker's zone, they make up the zone tier. At most two runs
    /// (before and after the own zone's).
    pub fn off_zone(&self, index: u32) -> ([Segment; 2], usize) {
        let own = self
            .groups
            .iter()
            .find(|(z, _)| z.is_some() && *z == self.place.zone.as_ref().map(|z| z.0))
            .map(|(_, g)| *g);
        let whole = self.whole(index);
        let Some(own) = own else {
            return (
                [whole, Segment::default()],
                usize::from(!whole.targets.is_empty()),
            );
        };
        let before = Segment {
            cluster: index,
            targets: Span {
                start: 0,
                end: own.targets.start,
            },
            v4: Span {
                start: 0,
                end: own.v4.start,
            },
            v6: Span {
                start: 0,
                end: own.v6.start,
            },
        };
        let after = Segment {
            cluster: index,
            targets: Span {
                start: own.targets.end,
                end: whole.targets.end,
            },
            v4: Span {
                start: own.v4.end,
                end: whole.v4.end,
            },
            v6: Span {
                start: own.v6.end,
                end: whole.v6.end,
            },
        };
        let mut out = [Segment::default(); 2];
        let mut n = 0;
        for s in [before, after] {
            if !s.targets.is_empty() {
                out[n] = s;
                n += 1;
            }
        }
        (out, n)
    }

    pub fn name(&self) -> &ClusterName {
        &self.place.name
    }

    /// Left out of answers (unless the service fails open).
    pub fn stale(&self) -> bool {
        self.place.stale
    }

    pub fn mode(&self) -> Mode {
        self.export.mode()
    }

    pub fn ports(&self) -> &[Port] {
        self.export.ports()
    }

    pub fn cluster_ips(&self) -> &[IpAddr] {
        self.export.cluster_ips()
    }

    /// The exported endpoint at `index` (a [`Target::Endpoint`]'s).
    pub fn endpoint_model(&self, index: u32) -> &Endpoint {
        &self.export.endpoints()[index as usize]
    }

    /// The endpoint a hostname label names: its hostname, or for an endpoint
    /// without one, its first address written with dashes (`10-1-0-11`),
    /// with whether it is healthy.
    pub fn endpoint(&self, label: &str) -> Option<(&Endpoint, bool)> {
        let address = super::undashed(label);
        self.export
            .endpoints()
            .iter()
            .zip(&self.endpoints)
            .find(|(e, _)| match &e.hostname {
                Some(h) => h.as_str() == label,
                None => address == Some(e.addresses[0]),
            })
            .map(|(e, v)| (e, v.healthy))
    }
}

/// An endpoint's health and place, beside its exported data.
#[derive(Debug, Clone, Copy)]
pub struct EndpointView {
    pub healthy: bool,
    /// The endpoint's own (region, zone), when its slice names one.
    pub zone: Option<ZoneId>,
}

/// What one SRV record points at: an index into the service's clusters,
/// and into that cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Endpoint { cluster: u32, endpoint: u32 },
    ClusterIp { cluster: u32 },
}

impl Target {
    pub fn cluster(self) -> usize {
        match self {
            Target::Endpoint { cluster, .. } | Target::ClusterIp { cluster } => cluster as usize,
        }
    }

    /// The same target as cluster `index`'s.
    pub fn in_cluster(self, index: u32) -> Self {
        match self {
            Target::Endpoint { endpoint, .. } => Target::Endpoint {
                cluster: index,
                endpoint,
            },
            Target::ClusterIp { .. } => Target::ClusterIp { cluster: index },
        }
    }
}

/// A set of answer targets with their addresses flattened per family, so an
/// A or AAAA answer is a slice.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    pub targets: Vec<Target>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl Targets {
    fn push(&mut self, target: Target, addresses: &[IpAddr]) {
        self.targets.push(target);
        for address in addresses {
            match address {
                IpAddr::V4(a) => self.v4.push(*a),
                IpAddr::V6(a) => self.v6.push(*a),
            }
        }
    }

    /// Lengths of the three lists.
    fn spans(&self) -> [u32; 3] {
        [
            self.targets.len() as u32,
            self.v4.len() as u32,
            self.v6.len() as u32,
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// How many healthy targets: what `--min-healthy` counts.
    pub fn len(&self) -> usize {
        self.targets.len()
    }
}
