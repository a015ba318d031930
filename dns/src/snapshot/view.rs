//! A global service as DNS answers it: every cluster's export of one key,
//! grouped by locality, with health decided.
//!
//! Built incrementally. Each cluster's part ([`ClusterView`]) is built
//! from that cluster's export and place alone and shared (`Arc`) between
//! successive views. Parts come in chunks of 64; beside each chunk the view
//! keeps the parts' metadata and the chunk's runs of the service-wide
//! lists (all, by zone, by region), shared while the chunk stands. When
//! one cluster's export changes, its part and its chunk are rebuilt (only
//! the chunk's runs the part is or was in: the others keep their
//! allocation), and of the service-wide [`Chain`]s (lists of the chunks'
//! runs) only those whose run changed are relinked, O(chunks) each; the
//! rest are shared with the previous view. No endpoint is copied and no other
//! part visited.

use std::net::IpAddr;
use std::sync::Arc;

use meshdns_proto::model::{
    Affinity, ClusterName, Endpoint, MinHealthy, Scope, ServiceExport, ServiceKey,
};

use super::chain::{Chain, Table};
use super::parts::{CHUNK, Parts, PartsBuilder};
use crate::locality::{ClusterId, Place, ProviderId, RegionId, ZoneId};

mod chains;
mod chunk;
mod cluster;
mod context;
mod counts;
mod targets;
mod weights;

pub(super) use chunk::ChunkMeta;
use chunk::{Before, PartMeta, Uniformity, in_place};
pub(crate) use cluster::PartPolicy;
pub use cluster::{ClusterView, EndpointView};
use cluster::{Health, has_ready};
pub use context::{Context, Interner, NO_POLICY, Step, StepChain, ZoneIds};
use counts::Counts;
pub use targets::{PartTarget, Target, Targets};
pub use weights::Weights;

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
    /// Healthy targets by their cluster's cloud provider.
    providers: Vec<(ProviderId, Chain)>,
    /// Every healthy target of positive weight: the answer for an asker
    /// of no known place.
    pub all: Chain,
    /// Every healthy target of weight 0: answered only when `all` is empty.
    pub reserve: Chain,
    /// Whether targets weigh differently: answers are then weighted
    /// samples, else the plain rotation.
    pub weighted: bool,
    /// The failover order after the asker's own tiers: the policy file's
    /// for the service (`failover: []` there is `Some` empty: explicitly
    /// none), else its annotation; `None`: see `region_failover`.
    pub failover: Option<Box<[Step]>>,
    /// Without a service order (`failover` is `None`): the policy file's
    /// default per asker region, sorted by region.
    pub region_failover: Box<[(RegionId, Box<[Step]>)]>,
    /// Every asker is served from here while it has min-healthy targets.
    pub primary: Option<Step>,
    /// The spill-over threshold (`None`: the server's `--min-healthy`).
    pub min_healthy: Option<MinHealthy>,
    /// Each exporting cluster's export-to list (the non-empty ones,
    /// distinct): an asker must be in a place of every list (fail-closed:
    /// one cluster's restriction is never widened by another's silence);
    /// outside, NXDOMAIN. Empty: everyone.
    pub export_to: Box<[Box<[Scope]>]>,
    /// The exporting clusters disagree on failover, primary or
    /// min-healthy (the first cluster by name that sets each wins).
    pub policy_disagrees: bool,
    /// Every cluster holding the service is stale, so their last known
    /// endpoints are served rather than nothing.
    pub fail_open: bool,
    /// Some counted (live, or any when failing open) part has a ready
    /// endpoint: then serving-but-unready endpoints stay out.
    any_ready: bool,
    /// The parts' health counts: the sum of the chunks', kept so that an
    /// update adjusts them by its changes instead of summing every chunk.
    counts: Counts,
}

/// Where a cluster's part comes from in an update.
enum Slot<'a> {
    /// Unchanged: index in the previous view.
    Kept(usize),
    /// A new export: in place of the previous view's part at this index,
    /// or (`None`) of no part.
    New(ExportInput<'a>, Option<usize>),
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
        Self::build_in(
            key,
            inputs,
            &mut Context {
                default_ttl,
                policy: &NO_POLICY,
                names: &mut ZoneIds(zone_id),
            },
        )
    }

    /// [`build`](Self::build) under a fleet policy.
    pub fn build_in(key: ServiceKey, inputs: &[ExportInput<'_>], ctx: &mut Context<'_>) -> Self {
        let changes: Vec<PartChange<'_>> = inputs.iter().map(|i| PartChange::Set(*i)).collect();
        Self::update_in(key, None, &changes, ctx)
    }

    /// [`update_in`](Self::update_in) with no fleet policy.
    pub fn update(
        key: ServiceKey,
        previous: Option<&ServiceView>,
        changes: &[PartChange<'_>],
        default_ttl: u32,
        zone_id: &mut dyn FnMut(Option<&str>, &str) -> ZoneId,
    ) -> Self {
        Self::update_in(
            key,
            previous,
            changes,
            &mut Context {
                default_ttl,
                policy: &NO_POLICY,
                names: &mut ZoneIds(zone_id),
            },
        )
    }

    /// The view after `changes` to `previous` (every cluster not named in
    /// `changes` exports what it did). Parts of unchanged clusters are
    /// shared with `previous`, whole chunks of them with what the view
    /// keeps of them; service-wide health comes from the view's counts,
    /// adjusted by the changes. The cost is the changed chunks, and
    /// O(chunks) for each chain whose run in a changed chunk changed; untouched
    /// chunks and chains are shared without visiting them (unless a
    /// cluster comes or goes: the parts after it move, and their chunks
    /// are rebuilt).
    ///
    /// `previous` must have been built under the same policy: a policy
    /// change rebuilds every view from scratch.
    pub fn update_in(
        key: ServiceKey,
        previous: Option<&ServiceView>,
        changes: &[PartChange<'_>],
        ctx: &mut Context<'_>,
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
        let meta = |i: usize| -> &PartMeta {
            let Some(prev) = previous else {
                unreachable!("kept parts come from a previous view")
            };
            &prev.chunks[i / CHUNK].metas[i % CHUNK]
        };
        // Service-wide health from counts: the previous view's, per chunk,
        // less the replaced parts, plus the new ones; no visit to the rest.
        let mut counts = previous.map_or(Counts::default(), |p| p.counts);
        for (i, replaces, change) in &placed {
            if *replaces {
                let m = meta(*i);
                counts.remove(Counts::of(m.stale, m.has_ready));
            }
            if let PartChange::Set(input) = change {
                counts.add(Counts::of(input.place.stale, has_ready(input.export)));
            }
        }
        let (fail_open, any_ready) = counts.health();
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
        // How many parts the view will have: each change that adds a
        // cluster adds one, each that removes one removes it.
        let total = placed.iter().fold(old.len(), |n, (_, replaces, change)| {
            match (replaces, change) {
                (false, PartChange::Set(_)) => n + 1,
                (true, PartChange::Remove(_)) => n - 1,
                _ => n,
            }
        });
        let mut clusters = PartsBuilder::default();
        let mut chunks: Vec<Arc<ChunkMeta>> = Vec::with_capacity(total.div_ceil(CHUNK));
        let mut metas = Vec::with_capacity(CHUNK.min(total));
        // Whether every part of the chunk being built is at its old index
        // (kept as it was, or rebuilt in place), and which were rebuilt: a
        // bit per position in the chunk (then its runs are patched).
        let mut aligned = true;
        let mut fresh = 0u64;
        // `n` counts the new view's parts, `i` walks the previous view's;
        // changes are consumed in position order. A chunk with no change
        // in it, at the same place as before, is shared without visiting
        // its parts: the cost is the changed chunks and O(chunks), not
        // O(clusters) (unless a cluster comes or goes, which moves every
        // part after it).
        let mut next = placed.iter().peekable();
        let mut n = 0;
        let mut i = 0;
        while i < old.len() || next.peek().is_some() {
            if n == i
                && n % CHUNK == 0
                && let Some(chunk) = old.chunk(n / CHUNK)
                && let Some(prev) = previous
                && next
                    .peek()
                    .is_none_or(|(at, _, _)| *at >= i + chunk.len() && chunk.len() == CHUNK)
                && (same_health || (i..i + chunk.len()).all(as_was))
            {
                clusters.share(chunk);
                chunks.push(prev.chunks[n / CHUNK].clone());
                n += chunk.len();
                i += chunk.len();
                continue;
            }
            // A chunk whose parts stay at their positions (its changes
            // set parts in place; none comes or goes in it or before it):
            // the previous chunk's metadata is copied whole and the
            // rebuilt parts' entries patched ([`in_place`]), its runs
            // patched ([`Before::Patch`]). A kept part is not visited.
            if n == i
                && n % CHUNK == 0
                && let Some(part_chunk) = old.chunk(n / CHUNK)
                && let Some(prev) = previous
                && (part_chunk.len() == CHUNK || total - n == part_chunk.len())
                && next
                    .clone()
                    .take_while(|(at, _, _)| *at < i + part_chunk.len())
                    .all(|(_, replaces, change)| *replaces && matches!(change, PartChange::Set(_)))
            {
                let before = &prev.chunks[n / CHUNK];
                let mut rebuilt = Vec::new();
                let mut fresh = 0u64;
                for (p, kept) in part_chunk.iter().enumerate() {
                    let part = match next.next_if(|(at, _, _)| *at == i + p) {
                        Some((_, _, PartChange::Set(input))) => Some(build_part(
                            &key,
                            input.place,
                            input.export,
                            health(input.place.stale),
                            ctx,
                        )),
                        _ if as_was(i + p) => None,
                        _ => Some(build_part(
                            &key,
                            &kept.place,
                            &kept.export,
                            health(kept.place.stale),
                            ctx,
                        )),
                    };
                    match part {
                        Some(part) => {
                            rebuilt.push((p, part.meta()));
                            fresh |= 1 << p;
                            clusters.push(Arc::new(part));
                        }
                        None => clusters.push(kept.clone()),
                    }
                }
                chunks.push(Arc::new(ChunkMeta::seal(
                    in_place(before, &rebuilt),
                    clusters.last_chunk(),
                    n as u32,
                    Before::Patch(before, part_chunk, fresh),
                )));
                n += part_chunk.len();
                i += part_chunk.len();
                continue;
            }
            // The parts at old position `i`: the clusters the changes put
            // before it (and in its place), then its own unless replaced.
            let mut replaced = false;
            let mut slots: Vec<Slot<'_>> = Vec::new();
            while let Some((_, replaces, change)) = next.next_if(|(at, _, _)| *at == i) {
                replaced |= *replaces;
                if let PartChange::Set(input) = change {
                    slots.push(Slot::New(*input, replaces.then_some(i)));
                }
            }
            if i < old.len() && !replaced {
                slots.push(Slot::Kept(i));
            }
            i += 1;
            for slot in slots {
                let (was, rebuilt) = match slot {
                    Slot::Kept(i) => (Some(i), !as_was(i)),
                    Slot::New(_, was) => (was, true),
                };
                aligned &= was == Some(n);
                if rebuilt {
                    fresh |= 1 << (n % CHUNK);
                }
                let part_meta = match slot {
                    Slot::Kept(i) if as_was(i) => {
                        let Some(prev) = previous else {
                            unreachable!("kept parts come from a previous view")
                        };
                        clusters.push(old[i].clone());
                        prev.chunks[i / CHUNK].metas[i % CHUNK]
                    }
                    Slot::Kept(i) => {
                        let c = &old[i];
                        let part =
                            build_part(&key, &c.place, &c.export, health(c.place.stale), ctx);
                        let m = part.meta();
                        clusters.push(Arc::new(part));
                        m
                    }
                    Slot::New(input, _) => {
                        let part = build_part(
                            &key,
                            input.place,
                            input.export,
                            health(input.place.stale),
                            ctx,
                        );
                        let m = part.meta();
                        clusters.push(Arc::new(part));
                        m
                    }
                };
                metas.push(part_meta);
                n += 1;
                if n % CHUNK == 0 || n == total {
                    let first = chunks.len() * CHUNK;
                    let before = match previous.and_then(|p| p.chunks.get(chunks.len())) {
                        Some(c)
                            if aligned
                                && c.metas.len() == metas.len()
                                && let Some(parts) = old.chunk(chunks.len()) =>
                        {
                            Before::Patch(c, parts, fresh)
                        }
                        Some(c) => Before::Chunk(c),
                        None => Before::Nothing,
                    };
                    let sealed = ChunkMeta::seal(
                        std::mem::replace(&mut metas, Vec::with_capacity(CHUNK)),
                        clusters.last_chunk(),
                        first as u32,
                        before,
                    );
                    (aligned, fresh) = (true, 0);
                    chunks.push(Arc::new(sealed));
                }
            }
        }
        debug_assert_eq!(n, total);
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
        Self::assemble(key, previous, clusters, chunks, by_id, counts, ctx)
    }

    /// The service-wide lists: chains of the chunks' runs, relinked only
    /// where a chunk changed (see [`chains`]).
    fn assemble(
        key: ServiceKey,
        previous: Option<&ServiceView>,
        clusters: Parts,
        chunks: Vec<Arc<ChunkMeta>>,
        by_id: Arc<[(ClusterId, u32)]>,
        counts: Counts,
        ctx: &mut Context<'_>,
    ) -> Self {
        debug_assert_eq!(
            chunks.iter().fold(Counts::default(), |mut sum, c| {
                sum.add(c.counts);
                sum
            }),
            counts,
            "the view's counts are its chunks'"
        );
        let (fail_open, any_ready) = counts.health();
        let old: &[Arc<ChunkMeta>] = previous.map_or(&[], |p| &p.chunks);
        let changed = chains::changed(old, &chunks);
        let keyed = |pick: fn(&ServiceView) -> &[(u32, Chain)],
                     keys: fn(&ChunkMeta) -> &[(u32, u32)]| {
            let before = previous.map_or(&[][..], pick);
            chains::keyed(before, old, &chunks, &changed, keys)
        };
        let zones = keyed(|v| &v.zones, ChunkMeta::zone_runs);
        let regions = keyed(|v| &v.regions, ChunkMeta::region_runs);
        let providers = keyed(|v| &v.providers, ChunkMeta::provider_runs);
        let single = |pick: fn(&ServiceView) -> &Chain, run| {
            let before = previous.map_or(&super::chain::EMPTY, pick);
            chains::single(before, old, &chunks, &changed, run)
        };
        let all = single(|v| &v.all, |c| c.all);
        let reserve = single(|v| &v.reserve, |c| c.reserve);
        let weighted = chunks
            .iter()
            .fold(Uniformity::Empty, |u, c| u.join(c.uniform))
            == Uniformity::Varied;
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
            .unwrap_or(ctx.default_ttl);
        // The traffic policy the service's exports carry, field by field:
        // failover, primary and min-healthy from the first cluster (by
        // name) that sets *that* field; export-to from every cluster that
        // sets it (all must allow an asker). The policy file's for the
        // service wins over the annotations.
        let mut annotated = meshdns_proto::model::Policy::default();
        let mut export_to: Vec<Box<[Scope]>> = Vec::new();
        let mut policy_disagrees = false;
        for (c, meta) in chunks.iter().enumerate() {
            let Some(from) = meta.traffic_from else {
                continue;
            };
            let end = clusters.len().min((c + 1) * CHUNK);
            for i in c * CHUNK + from as usize..end {
                let p = clusters[i].export.policy();
                if !p.failover.is_empty() {
                    if annotated.failover.is_empty() {
                        annotated.failover = p.failover.clone();
                    } else {
                        policy_disagrees |= annotated.failover != p.failover;
                    }
                }
                if p.primary.is_some() {
                    if annotated.primary.is_none() {
                        annotated.primary = p.primary.clone();
                    } else {
                        policy_disagrees |= annotated.primary != p.primary;
                    }
                }
                if p.min_healthy.is_some() {
                    if annotated.min_healthy.is_none() {
                        annotated.min_healthy = p.min_healthy;
                    } else {
                        policy_disagrees |= annotated.min_healthy != p.min_healthy;
                    }
                }
                if !p.export_to.is_empty() && !export_to.iter().any(|l| **l == p.export_to[..]) {
                    export_to.push(p.export_to.iter().cloned().collect());
                }
            }
        }
        let fleet = ctx.policy;
        let names = &*ctx.names;
        let resolve = |scopes: &[Scope]| -> Box<[Step]> {
            scopes.iter().map(|s| Step::resolve(s, names)).collect()
        };
        // The service's own order: the policy file's, even an explicit
        // empty one (which cancels the region defaults), else the
        // annotation's.
        let failover = fleet
            .services
            .get(&key)
            .and_then(|s| s.failover.as_deref())
            .or((!annotated.failover.is_empty()).then_some(&annotated.failover[..]))
            .map(resolve);
        let region_failover: Box<[(RegionId, Box<[Step]>)]> = if failover.is_none() {
            let mut orders: Vec<(RegionId, Box<[Step]>)> = fleet
                .regions
                .iter()
                .filter_map(|(r, p)| Some((names.region(r.as_str())?, resolve(&p.failover))))
                .collect();
            orders.sort_by_key(|(r, _)| *r);
            orders.into()
        } else {
            Box::default()
        };
        let primary = fleet
            .primary(&key, annotated.primary.as_ref())
            .map(|s| Step::resolve(s, names));
        let min_healthy = fleet.min_healthy(&key, annotated.min_healthy);
        ServiceView {
            key,
            ttl,
            affinity,
            clusters,
            chunks,
            by_id,
            zones,
            regions,
            providers,
            all,
            reserve,
            weighted,
            failover,
            region_failover,
            primary,
            min_healthy,
            export_to: export_to.into(),
            policy_disagrees,
            fail_open,
            any_ready,
            counts,
        }
    }

    /// The addresses this service answers with, and the PTR name of each:
    /// every part's [`ptr_names`].
    pub fn ptr_names(&self) -> Vec<(IpAddr, super::PtrName)> {
        let service = PtrService::of(&self.key);
        self.clusters
            .iter()
            .flat_map(|c| ptr_names(&service, c))
            .collect()
    }

    /// The runs the view's chains link: what a walk of them reads.
    pub fn table(&self) -> Table<'_> {
        Table(&self.chunks)
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

    /// The chain a failover step or primary reads.
    pub fn step(&self, step: &Step) -> &Chain {
        match step.chain {
            Some(StepChain::Region(r)) => self.region(r),
            Some(StepChain::Provider(p)) => self.provider(p),
            None => None,
        }
        .unwrap_or(&super::chain::EMPTY)
    }

    /// The failover order for an asker in `region`.
    pub fn failover_for(&self, region: Option<RegionId>) -> &[Step] {
        if let Some(order) = &self.failover {
            return order;
        }
        region
            .and_then(|r| {
                self.region_failover
                    .binary_search_by_key(&r, |(id, _)| *id)
                    .ok()
            })
            .map_or(&[], |i| &self.region_failover[i].1)
    }

    /// Healthy targets with a cloud provider.
    pub fn provider(&self, id: ProviderId) -> Option<&Chain> {
        self.providers
            .binary_search_by_key(&id, |(p, _)| *p)
            .ok()
            .map(|i| &self.providers[i].1)
    }
}

/// One cluster's part, weighed by the fleet policy.
fn build_part(
    key: &ServiceKey,
    place: &Arc<Place>,
    export: &Arc<ServiceExport>,
    health: cluster::Health,
    ctx: &mut Context<'_>,
) -> ClusterView {
    let fleet = ctx.policy;
    let weigh = |ep: &Endpoint| fleet.effective_weight(&place.name, key, ep.weight);
    let node_of = |ep: &Endpoint| ep.node.as_ref().and_then(|n| place.node_index(n.as_str()));
    let policy = PartPolicy {
        weigh: &weigh,
        node_of: (export.policy().affinity == Affinity::Node).then_some(&node_of as _),
    };
    let names = &mut *ctx.names;
    ClusterView::build(place, export, health, &mut |r, z| names.zone(r, z), &policy)
}

/// A service's names as PTR records carry them, made once per service.
#[derive(Debug, Clone)]
pub struct PtrService {
    namespace: Arc<str>,
    service: Arc<str>,
}

impl PtrService {
    pub fn of(key: &ServiceKey) -> Self {
        PtrService {
            namespace: Arc::from(key.namespace.as_str()),
            service: Arc::from(key.name.as_str()),
        }
    }
}

/// The addresses one cluster's part answers with (its healthy targets'),
/// and the PTR name of each.
pub fn ptr_names(service: &PtrService, part: &ClusterView) -> Vec<(IpAddr, super::PtrName)> {
    let name = |host| super::PtrName {
        namespace: service.namespace.clone(),
        service: service.service.clone(),
        host,
    };
    let cluster: Arc<str> = Arc::from(part.name().as_str());
    let mut out = Vec::new();
    for target in &part.targets.targets {
        match target.endpoint_index() {
            Some(endpoint) => {
                let ep = part.endpoint_model(endpoint);
                let host = ep
                    .hostname
                    .as_ref()
                    .map(|h| (Arc::from(h.as_str()), cluster.clone()));
                out.extend(ep.addresses.iter().map(|a| (*a, name(host.clone()))));
            }
            None => out.extend(part.cluster_ips().iter().map(|a| (*a, name(None)))),
        }
    }
    out
}

/// The parts of `old` that `new` no longer has as they were, and the
/// parts of `new` that `old` did not have: a cluster whose part was
/// rebuilt is in both. Chunks the two share are skipped whole, so the
/// cost is the changed chunks (and a walk by name where parts moved).
pub fn changed_parts<'a>(
    old: Option<&'a Parts>,
    new: Option<&'a Parts>,
) -> (Vec<&'a ClusterView>, Vec<&'a ClusterView>) {
    let empty = Parts::empty();
    let (old, new) = (old.unwrap_or(empty), new.unwrap_or(empty));
    let (mut gone, mut came) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i == j
            && i % CHUNK == 0
            && let (Some(a), Some(b)) = (old.chunk(i / CHUNK), new.chunk(j / CHUNK))
            && Arc::ptr_eq(a, b)
        {
            i += a.len();
            j += b.len();
            continue;
        }
        match (i < old.len(), j < new.len()) {
            (true, true) => match old[i].name().cmp(new[j].name()) {
                std::cmp::Ordering::Equal => {
                    if !Arc::ptr_eq(&old[i], &new[j]) {
                        gone.push(&*old[i]);
                        came.push(&*new[j]);
                    }
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    gone.push(&*old[i]);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    came.push(&*new[j]);
                    j += 1;
                }
            },
            (true, false) => {
                gone.push(&*old[i]);
                i += 1;
            }
            (false, _) => {
                came.push(&*new[j]);
                j += 1;
            }
        }
    }
    (gone, came)
}

#[cfg(test)]
mod tests;
