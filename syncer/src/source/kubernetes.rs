//! The `kubernetes` source: watches Services (by label selector, and with
//! `--mcs` those named by a `ServiceExport`), their EndpointSlices, and
//! Nodes (client CIDRs, region and zone), and turns them into the
//! cluster's export set.
//!
//! One watcher task per kind reduces objects ([`objects`]) and sends them to
//! one state task. A relist (`Init` .. `InitDone`, after a 410 or a
//! restart) is buffered and swapped in one step. Changes are coalesced for
//! up to `coalesce` (50 ms) so a rollout becomes a few Deltas, and nothing
//! is published until every watcher has listed once, so the first Snapshot
//! is never partial — except that an optional watcher (ServiceExports,
//! Nodes) that cannot list because its API is not served or forbidden
//! ([`failure`]) holds back only what it adds: the rest exports, and it is
//! picked up when it lists. A watcher error never ends the syncer:
//! kube-runtime backs off and retries, the last known state keeps being
//! streamed, and [`Health`] reports the degraded or unavailable watcher.

pub mod failure;
pub mod health;
pub mod objects;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use meshdns_proto::model::{
    Cluster, ClusterName, ExportSet, LabelValue, Namespace, ServiceExport, ServiceKey, ServiceName,
    parse_cidr,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use self::failure::{Resource, WatchFailure};
pub use self::health::{Health, HealthState};
use self::objects::{Key, NodeObj, SERVICE_NAME_LABEL, SliceObj, SvcObj};
use super::selector::Selector;
use super::{Exports, Overrides};
use crate::error::Error;
use crate::metrics::Metrics;

/// Settings of the Kubernetes source.
#[derive(Debug, Clone)]
pub struct KubeSource {
    pub kubeconfig: Option<PathBuf>,
    pub overrides: Overrides,
    pub selector: Selector,
    pub namespaces: Vec<String>,
    pub namespace_selector: Option<Selector>,
    pub mcs: bool,
    /// Longest a change waits to be coalesced with others.
    pub coalesce: Duration,
}

/// A watcher's news, reduced.
enum Update<T> {
    Init,
    InitApply(T),
    InitDone,
    Apply(T),
    Delete(Key),
    Failed(WatchFailure),
    /// A probe of the failed watcher's resource succeeded: the API server
    /// is back (the watch itself resumes without an event).
    Recovered,
}

enum Msg {
    Services(Update<SvcObj>),
    Slices(Update<SliceObj>),
    Nodes(Update<NodeObj>),
    Namespaces(Update<String>),
    Exports(Update<Key>),
}

/// One kind of object: the live set, and a relist being buffered.
struct Kind<T> {
    live: HashMap<Key, T>,
    buffer: Option<HashMap<Key, T>>,
}

impl<T> Default for Kind<T> {
    fn default() -> Self {
        Kind {
            live: HashMap::new(),
            buffer: None,
        }
    }
}

/// What an update did to a kind: keys whose object changed, or all of them.
enum Touched {
    Keys(Vec<Key>),
    All,
    Nothing,
}

impl<T: PartialEq> Kind<T> {
    fn apply(&mut self, update: Update<T>, key_of: impl Fn(&T) -> Key) -> Touched {
        match update {
            Update::Init => {
                self.buffer = Some(HashMap::new());
                Touched::Nothing
            }
            Update::InitApply(obj) => {
                self.buffer
                    .get_or_insert_with(HashMap::new)
                    .insert(key_of(&obj), obj);
                Touched::Nothing
            }
            Update::InitDone => {
                // The relisted state replaces the old in one step.
                self.live = self.buffer.take().unwrap_or_default();
                Touched::All
            }
            Update::Apply(obj) => {
                let key = key_of(&obj);
                if self.live.get(&key) == Some(&obj) {
                    return Touched::Nothing;
                }
                self.live.insert(key.clone(), obj);
                Touched::Keys(vec![key])
            }
            Update::Delete(key) => {
                if self.live.remove(&key).is_some() {
                    Touched::Keys(vec![key])
                } else {
                    Touched::Nothing
                }
            }
            Update::Failed(_) | Update::Recovered => Touched::Nothing,
        }
    }
}

fn key_of<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs one watcher, reducing its objects with `reduce` and sending them.
fn spawn_watcher<K, T>(
    resource: Resource,
    api: Api<K>,
    config: watcher::Config,
    reduce: impl Fn(&K) -> T + Send + 'static,
    wrap: impl Fn(Update<T>) -> Msg + Send + 'static,
    tx: mpsc::Sender<Msg>,
    shutdown: CancellationToken,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: Send + 'static,
{
    let name = resource.plural;
    tokio::spawn(async move {
        let mut stream = Box::pin(watcher::watcher(api.clone(), config).default_backoff());
        let (mut failing, mut listed) = (false, false);
        let mut probe = tokio::time::interval(Duration::from_secs(1));
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => item,
                // Only a watcher that has listed resumes silently; one that
                // never did reports its next attempt itself (kube-runtime's
                // backoff, up to 30 s, so a missing API is not hammered).
                _ = probe.tick(), if failing && listed => {
                    // A resumed watch says nothing until something changes:
                    // ask the same resource, with the same rights, directly.
                    if api.list_metadata(&kube::api::ListParams::default().limit(1)).await.is_ok() {
                        failing = false;
                        info!(watcher = name, "API server reachable again");
                        if tx.send(wrap(Update::Recovered)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            failing = false;
            let update = match item {
                None => return,
                Some(Ok(Event::Init)) => Update::Init,
                Some(Ok(Event::InitApply(obj))) => Update::InitApply(reduce(&obj)),
                Some(Ok(Event::InitDone)) => {
                    listed = true;
                    Update::InitDone
                }
                Some(Ok(Event::Apply(obj))) => Update::Apply(reduce(&obj)),
                Some(Ok(Event::Delete(obj))) => Update::Delete(key_of(&obj)),
                Some(Err(e)) => {
                    let failure = WatchFailure::classify(&resource, &e);
                    // An outage is probed for its end; a refusal (403, 404)
                    // is not: a probe by LIST would pass where WATCH fails.
                    failing = !failure.is_lasting();
                    match &failure {
                        WatchFailure::Expired => {
                            info!(watcher = name, "watch expired (410); relisting");
                        }
                        WatchFailure::NotServed { .. } | WatchFailure::Forbidden { .. }
                            if !listed =>
                        {
                            warn!(watcher = name, problem = %failure, "watcher cannot list; retrying with backoff");
                        }
                        _ => {
                            warn!(watcher = name, error = %failure, "watch failed; retrying with backoff, serving the last known state");
                        }
                    }
                    Update::Failed(failure)
                }
            };
            if tx.send(wrap(update)).await.is_err() {
                return;
            }
        }
    });
}

pub async fn client(kubeconfig: Option<&PathBuf>) -> Result<Client, Error> {
    let fail = |problem: String| Error::Config {
        field: "--kubeconfig".into(),
        problem,
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| fail(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| fail(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            fail(format!(
                "no in-cluster config and no usable KUBECONFIG: {e}"
            ))
        })?,
    };
    Client::try_from(config).map_err(|e| fail(e.to_string()))
}

/// Starts the watchers and the state task; the export set appears on the
/// returned channel once every watcher has listed, or (an optional one:
/// ServiceExports, Nodes) has been found unavailable.
pub async fn start(
    source: KubeSource,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(Exports, Arc<Health>), Error> {
    let cluster_name = source
        .overrides
        .cluster
        .clone()
        .ok_or_else(|| Error::Config {
            field: "--cluster".into(),
            problem: "is required with the kubernetes source".into(),
        })?;
    ClusterName::new(&cluster_name).map_err(|e| Error::Config {
        field: "--cluster".into(),
        problem: e.problem.to_string(),
    })?;
    let client = client(source.kubeconfig.as_ref()).await?;
    let (tx, rx) = mpsc::channel(1024);
    let o = &source.overrides;
    let watch_nodes = o.client_cidrs.is_empty() || o.region.is_none() || o.zone.is_none();
    let mut watchers =
        BTreeSet::from([Resource::SERVICES.plural, Resource::ENDPOINT_SLICES.plural]);
    let mut optional = BTreeSet::new();
    if watch_nodes {
        // Without Nodes the cluster is announced without client CIDRs and
        // topology; its Services still export.
        watchers.insert(Resource::NODES.plural);
        optional.insert(Resource::NODES.plural);
    }
    if source.namespace_selector.is_some() {
        // Every Service depends on its namespace being selected.
        watchers.insert(Resource::NAMESPACES.plural);
    }
    if source.mcs {
        // Only the Services no label selects depend on ServiceExports.
        watchers.insert(Resource::SERVICE_EXPORTS.plural);
        optional.insert(Resource::SERVICE_EXPORTS.plural);
    }
    let health = Arc::new(Health::new(watchers.clone(), optional, metrics));
    // With --mcs, Services named by a ServiceExport need no label, so all
    // Services are watched and the selector applies here.
    let service_config = if source.mcs || source.selector.is_empty() {
        watcher::Config::default()
    } else {
        watcher::Config::default().labels(source.selector.as_str())
    };
    spawn_watcher(
        Resource::SERVICES,
        Api::<Service>::all(client.clone()),
        service_config,
        SvcObj::from_api,
        Msg::Services,
        tx.clone(),
        shutdown.clone(),
    );
    spawn_watcher(
        Resource::ENDPOINT_SLICES,
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(SERVICE_NAME_LABEL),
        SliceObj::from_api,
        Msg::Slices,
        tx.clone(),
        shutdown.clone(),
    );
    if watch_nodes {
        spawn_watcher(
            Resource::NODES,
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            NodeObj::from_api,
            Msg::Nodes,
            tx.clone(),
            shutdown.clone(),
        );
    }
    if let Some(selector) = &source.namespace_selector {
        let config = watcher::Config::default().labels(selector.as_str());
        spawn_watcher(
            Resource::NAMESPACES,
            Api::<K8sNamespace>::all(client.clone()),
            config,
            |n: &K8sNamespace| n.name_any(),
            Msg::Namespaces,
            tx.clone(),
            shutdown.clone(),
        );
    }
    if source.mcs {
        let r = Resource::SERVICE_EXPORTS;
        let gvk = GroupVersionKind::gvk(r.group, r.version, "ServiceExport");
        let resource = ApiResource::from_gvk_with_plural(&gvk, r.plural);
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        spawn_watcher(
            r,
            api,
            watcher::Config::default(),
            key_of,
            Msg::Exports,
            tx.clone(),
            shutdown.clone(),
        );
    }
    let (exports_tx, exports_rx) = watch::channel(None);
    let state = State {
        source,
        cluster_name,
        health: health.clone(),
        services: Kind::default(),
        slices: Kind::default(),
        nodes: Kind::default(),
        namespaces: Kind::default(),
        exports: Kind::default(),
        slices_by_service: HashMap::new(),
        dirty: HashSet::new(),
        full: true,
        current: None,
        tx: exports_tx,
    };
    tokio::spawn(state.run(rx, shutdown));
    Ok((exports_rx, health))
}

struct State {
    source: KubeSource,
    cluster_name: String,
    health: Arc<Health>,
    services: Kind<SvcObj>,
    slices: Kind<SliceObj>,
    nodes: Kind<NodeObj>,
    namespaces: Kind<String>,
    exports: Kind<Key>,
    /// (namespace, service) -> its slices' names.
    slices_by_service: HashMap<Key, BTreeSet<String>>,
    /// Services whose export must be recomputed.
    dirty: HashSet<Key>,
    /// Everything must be recomputed (a relist, a namespace change).
    full: bool,
    current: Option<Arc<ExportSet>>,
    tx: watch::Sender<Option<Arc<ExportSet>>>,
}

impl State {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, shutdown: CancellationToken) {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                    deadline = None;
                    self.publish();
                    continue;
                }
                msg = rx.recv() => match msg { Some(m) => m, None => return },
            };
            if self.handle(msg) && deadline.is_none() {
                deadline = Some(tokio::time::Instant::now() + self.source.coalesce);
            }
        }
    }

    /// Records a watcher's health; whether the update opened the way to
    /// publishing (an optional watcher found unavailable).
    fn mark(&mut self, watcher: &'static str, update: &Update<impl Sized>) -> bool {
        match update {
            Update::Failed(failure) => self.health.failed(watcher, failure),
            Update::InitDone => {
                self.health.listed(watcher);
                false
            }
            _ => {
                self.health.working(watcher);
                false
            }
        }
    }

    /// Applies one update; whether something must be republished.
    fn handle(&mut self, msg: Msg) -> bool {
        let mut opened = false;
        let touched = match msg {
            Msg::Services(u) => {
                opened |= self.mark("services", &u);
                let t = self.services.apply(u, |s| s.key.clone());
                if let Touched::Keys(keys) = &t {
                    self.dirty.extend(keys.iter().cloned());
                }
                t
            }
            Msg::Slices(u) => {
                opened |= self.mark("endpointslices", &u);
                // The slice's service before and after the change.
                let before = match &u {
                    Update::Apply(s) | Update::InitApply(s) => {
                        self.slices.live.get(&s.key).and_then(|o| o.service.clone())
                    }
                    Update::Delete(k) => self.slices.live.get(k).and_then(|o| o.service.clone()),
                    _ => None,
                };
                let after = match &u {
                    Update::Apply(s) => s.service.clone(),
                    _ => None,
                };
                let t = self.slices.apply(u, |s| s.key.clone());
                match &t {
                    Touched::Keys(keys) => {
                        for (ns, slice) in keys {
                            for service in before.iter().chain(after.iter()) {
                                self.dirty.insert((ns.clone(), service.clone()));
                            }
                            self.index_slice(ns, slice, before.as_deref(), after.as_deref());
                        }
                    }
                    Touched::All => self.reindex_slices(),
                    Touched::Nothing => {}
                }
                t
            }
            Msg::Nodes(u) => {
                opened |= self.mark("nodes", &u);
                match self.nodes.apply(u, |n| (String::new(), n.name.clone())) {
                    Touched::Nothing => Touched::Nothing,
                    _ => Touched::All,
                }
            }
            Msg::Namespaces(u) => {
                opened |= self.mark("namespaces", &u);
                match self.namespaces.apply(u, |n| (String::new(), n.clone())) {
                    Touched::Nothing => Touched::Nothing,
                    _ => Touched::All,
                }
            }
            Msg::Exports(u) => {
                opened |= self.mark("serviceexports", &u);
                let t = self.exports.apply(u, |k| k.clone());
                if let Touched::Keys(keys) = &t {
                    self.dirty.extend(keys.iter().cloned());
                }
                t
            }
        };
        if opened {
            // The first publish, without the unavailable watcher's part.
            self.full = true;
            return true;
        }
        match touched {
            Touched::All => {
                self.full = true;
                true
            }
            Touched::Keys(_) => true,
            Touched::Nothing => false,
        }
    }

    fn index_slice(&mut self, ns: &str, slice: &str, before: Option<&str>, after: Option<&str>) {
        if let Some(service) = before
            && let Some(set) = self
                .slices_by_service
                .get_mut(&(ns.to_owned(), service.to_owned()))
        {
            set.remove(slice);
        }
        if let Some(service) = after {
            self.slices_by_service
                .entry((ns.to_owned(), service.to_owned()))
                .or_default()
                .insert(slice.to_owned());
        }
    }

    fn reindex_slices(&mut self) {
        self.slices_by_service.clear();
        for (key, slice) in &self.slices.live {
            if let Some(service) = &slice.service {
                self.slices_by_service
                    .entry((key.0.clone(), service.clone()))
                    .or_default()
                    .insert(key.1.clone());
            }
        }
    }

    fn namespace_allowed(&self, ns: &str) -> bool {
        (self.source.namespaces.is_empty() || self.source.namespaces.iter().any(|n| n == ns))
            && (self.source.namespace_selector.is_none()
                || self
                    .namespaces
                    .live
                    .contains_key(&(String::new(), ns.to_owned())))
    }

    fn selected(&self, svc: &SvcObj) -> bool {
        self.namespace_allowed(&svc.key.0)
            && (self.source.selector.matches(Some(&svc.labels))
                || (self.source.mcs && self.exports.live.contains_key(&svc.key)))
    }

    /// The cluster as the Hello announces it: flags first, else the nodes.
    fn cluster(&self) -> Result<Cluster, String> {
        let o = &self.source.overrides;
        let most_common = |f: &dyn Fn(&NodeObj) -> Option<String>| {
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for n in self.nodes.live.values() {
                if let Some(v) = f(n) {
                    *counts.entry(v).or_default() += 1;
                }
            }
            counts.into_iter().max_by_key(|(_, c)| *c).map(|(v, _)| v)
        };
        let region = o
            .region
            .clone()
            .or_else(|| most_common(&|n| n.region.clone()));
        let zone = o.zone.clone().or_else(|| most_common(&|n| n.zone.clone()));
        let texts: Vec<String> = if o.client_cidrs.is_empty() {
            let mut set: BTreeSet<String> = BTreeSet::new();
            for n in self.nodes.live.values() {
                set.extend(n.pod_cidrs.iter().cloned());
                set.extend(n.internal_ips.iter().cloned());
            }
            set.into_iter().collect()
        } else {
            o.client_cidrs.clone()
        };
        let client_cidrs = texts.iter().filter_map(|t| parse_cidr(t).ok()).collect();
        let label = |field: &str, v: Option<String>| {
            v.filter(|v| !v.is_empty())
                .map(|v| LabelValue::new(&v).map_err(|e| format!("{field}: {}", e.problem)))
                .transpose()
        };
        Ok(Cluster {
            name: ClusterName::new(&self.cluster_name).map_err(|e| e.to_string())?,
            region: label("region", region)?,
            zone: label("zone", zone)?,
            client_cidrs,
            version: o.version.clone(),
        })
    }

    fn publish(&mut self) {
        if !self.health.with(|h| h.publishable()) {
            // Never publish a partial first state: it would withdraw
            // services that simply were not listed yet. An optional
            // watcher found unavailable withholds only its own part.
            return;
        }
        let cluster = match self.cluster() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot describe the cluster; keeping the last state");
                return;
            }
        };
        let started = Instant::now();
        let mut services: BTreeMap<ServiceKey, Arc<ServiceExport>> = self
            .current
            .as_ref()
            .map(|c| c.services.clone())
            .unwrap_or_default();
        let keys: Vec<Key> = if std::mem::take(&mut self.full) {
            services.clear();
            self.services.live.keys().cloned().collect()
        } else {
            self.dirty.iter().cloned().collect()
        };
        self.dirty.clear();
        let mut problems = self.health.with(|h| std::mem::take(&mut h.problems));
        for key in keys {
            let shown = format!("{}/{}", key.0, key.1);
            let svc = self.services.live.get(&key).filter(|s| self.selected(s));
            let model_key = model_key(&key);
            let Some(svc) = svc else {
                if let Some(k) = model_key {
                    services.remove(&k);
                }
                problems.remove(&shown);
                continue;
            };
            let slices: Vec<&SliceObj> = self
                .slices_by_service
                .get(&key)
                .into_iter()
                .flatten()
                .filter_map(|name| self.slices.live.get(&(key.0.clone(), name.clone())))
                .collect();
            let (result, mut found) = objects::export(svc, &slices);
            match result {
                Ok(export) => {
                    services.insert(export.key().clone(), objects::shared(export));
                }
                Err(e) => {
                    warn!(service = %shown, error = %e, "cannot export service; its last good version stays exported");
                    found.push(format!("not exported: {e}"));
                    if let Some(k) = model_key
                        && let Some(old) = self.current.as_ref().and_then(|c| c.services.get(&k))
                    {
                        services.insert(k, old.clone());
                    }
                }
            }
            let before = problems.get(&shown);
            if !found.is_empty() && before != Some(&found) {
                for p in &found {
                    warn!(service = %shown, problem = %p, "service annotation or shape problem");
                }
            }
            if found.is_empty() {
                problems.remove(&shown);
            } else {
                problems.insert(shown, found);
            }
        }
        let set = ExportSet { cluster, services };
        self.health.with(|h| {
            h.problems = problems;
            h.exported_services = set.services.len();
            h.exported_endpoints = set.services.values().map(|s| s.endpoints().len()).sum();
        });
        if self.current.as_deref() == Some(&set) {
            return;
        }
        info!(
            services = set.services.len(),
            took_us = started.elapsed().as_micros() as u64,
            "export set updated"
        );
        let set = Arc::new(set);
        self.current = Some(set.clone());
        let _ = self.tx.send(Some(set));
    }
}

/// The model key of an API key, if its names are valid labels.
fn model_key(key: &Key) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: Namespace::new(&key.0).ok()?,
        name: ServiceName::new(&key.1).ok()?,
    })
}
