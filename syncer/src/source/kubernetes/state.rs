//! The state task: the reduced objects of every kind, which Services a
//! change makes dirty, and the export set it publishes — coalesced, and
//! never before every required watcher has listed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use meshdns_proto::model::{Cluster, ExportSet, Namespace, ServiceExport, ServiceKey, ServiceName};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::objects::{self, EXPORT_TO, Key, NodeObj, SliceObj, SvcObj};
use super::relist::{Kind, Touched, Update};
use super::watcher::Msg;
use super::{Health, KubeSource, cluster};
use crate::source::fields;

pub(super) struct State {
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
    /// What the Nodes said that could not be used, last logged (logged
    /// again only when it changes).
    cluster_notes: Vec<String>,
    /// When node addresses last changed in what was published; a change
    /// before `--node-announce-interval` has passed waits for it.
    nodes_announced: Option<tokio::time::Instant>,
    /// When the node addresses held back are due.
    nodes_due: Option<tokio::time::Instant>,
}

impl State {
    pub(super) fn new(
        source: KubeSource,
        cluster_name: String,
        health: Arc<Health>,
        tx: watch::Sender<Option<Arc<ExportSet>>>,
    ) -> Self {
        State {
            source,
            cluster_name,
            health,
            services: Kind::default(),
            slices: Kind::default(),
            nodes: Kind::default(),
            namespaces: Kind::default(),
            exports: Kind::default(),
            slices_by_service: HashMap::new(),
            dirty: HashSet::new(),
            full: true,
            current: None,
            tx,
            cluster_notes: Vec::new(),
            nodes_announced: None,
            nodes_due: None,
        }
    }

    pub(super) async fn run(mut self, mut rx: mpsc::Receiver<Msg>, shutdown: CancellationToken) {
        let mut deadline: Option<tokio::time::Instant> = None;
        loop {
            let msg = tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)).await }, if deadline.is_some() => {
                    deadline = None;
                    self.publish();
                    continue;
                }
                _ = async { tokio::time::sleep_until(self.nodes_due.unwrap_or_else(tokio::time::Instant::now)).await }, if self.nodes_due.is_some() => {
                    self.nodes_due = None;
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

    fn publish(&mut self) {
        if !self.health.with(|h| h.publishable()) {
            // Never publish a partial first state: it would withdraw
            // services that simply were not listed yet. An optional
            // watcher found unavailable withholds only its own part.
            return;
        }
        let cluster = match cluster::describe(
            &self.cluster_name,
            &self.source.overrides,
            self.nodes.live.values(),
        ) {
            Ok((c, notes)) => {
                if notes != self.cluster_notes {
                    for note in &notes {
                        warn!(note = %note, "cluster description");
                    }
                    self.cluster_notes = notes;
                }
                self.pace_nodes(c, tokio::time::Instant::now())
            }
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
            let (result, mut found) = objects::export(svc, &slices, self.source.overrides.weight);
            match result {
                Ok(export) => {
                    services.insert(export.key().clone(), objects::shared(export));
                }
                Err(e) => {
                    let old = model_key
                        .as_ref()
                        .and_then(|k| self.current.as_ref().and_then(|c| c.services.get(k)));
                    let update = objects::export_to_update(svc);
                    match (model_key, old) {
                        (Some(k), Some(old))
                            if fields::last_good_within(
                                &old.policy().export_to,
                                update.as_deref(),
                            ) =>
                        {
                            warn!(service = %shown, error = %e, "cannot export service; its last good version stays exported");
                            found.push(format!("not exported: {e}"));
                            services.insert(k, old.clone());
                        }
                        (Some(k), Some(_)) => {
                            // The last good version would reach askers the
                            // new (or unreadable) export-to keeps out.
                            warn!(service = %shown, error = %e, "cannot export service, and its meshdns.io/export-to is new, narrower or bad: withdrawn until fixed rather than left exported more widely (fail closed)");
                            found.push(format!("not exported: {e}; withdrawn (fail closed): the last good version is exported more widely than {EXPORT_TO} now says"));
                            services.remove(&k);
                        }
                        _ => found.push(format!("not exported: {e}")),
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

impl State {
    /// `cluster` with the node addresses last published while they may
    /// not change yet: a new export stream announces them (a full
    /// snapshot at the hub), so in a churning cluster they change at most
    /// once per `--node-announce-interval`, with what the Nodes say then.
    /// The first change after a quiet interval goes out at once; the first
    /// state published counts as an announcement.
    fn pace_nodes(&mut self, mut cluster: Cluster, now: tokio::time::Instant) -> Cluster {
        let Some(published) = self.current.as_ref().map(|c| &c.cluster) else {
            // The first Hello announces them.
            self.nodes_announced = Some(now);
            return cluster;
        };
        if cluster.nodes == published.nodes {
            // Back to what was announced: nothing held back any more.
            self.nodes_due = None;
            return cluster;
        }
        let due = self
            .nodes_announced
            .map(|at| at + self.source.node_announce_interval);
        // Other news (client CIDRs, topology) reconnects anyway: the node
        // addresses ride along.
        let only_nodes = Cluster {
            nodes: published.nodes.clone(),
            ..cluster.clone()
        } == *published;
        match due {
            Some(due) if now < due && only_nodes => {
                debug!(
                    in_ms = (due - now).as_millis() as u64,
                    "node addresses changed; announcing them with the next interval"
                );
                self.nodes_due = Some(due);
                cluster.nodes = published.nodes.clone();
            }
            _ => {
                self.nodes_announced = Some(now);
                self.nodes_due = None;
            }
        }
        cluster
    }
}

/// The model key of an API key, if its names are valid labels.
fn model_key(key: &Key) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: Namespace::new(&key.0).ok()?,
        name: ServiceName::new(&key.1).ok()?,
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::Duration;

    use meshdns_proto::model::{ClusterName, NodeAddresses, NodeName, parse_cidr};

    use super::*;
    use crate::source::Overrides;
    use crate::source::selector::Selector;

    fn state() -> State {
        let source = KubeSource {
            kubeconfig: None,
            overrides: Overrides::default(),
            selector: Selector::parse("").unwrap(),
            namespaces: Vec::new(),
            namespace_selector: None,
            mcs: false,
            coalesce: Duration::from_millis(50),
            node_announce_interval: Duration::from_secs(60),
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let health = Arc::new(Health::new(BTreeSet::new(), BTreeSet::new(), metrics));
        State::new(source, "east-1".into(), health, watch::channel(None).0)
    }

    fn cluster(nodes: usize, cidr: &str) -> Cluster {
        Cluster {
            name: ClusterName::new("east-1").unwrap(),
            region: None,
            zone: None,
            provider: None,
            client_cidrs: vec![parse_cidr(cidr).unwrap()],
            version: String::new(),
            nodes: (0..nodes)
                .map(|i| NodeAddresses {
                    name: NodeName::new(&format!("node-{i}")).unwrap(),
                    addresses: vec![IpAddr::from([10, 0, 0, i as u8])],
                })
                .collect(),
        }
    }

    /// What `publish` does with the paced cluster.
    fn published(state: &mut State, next: Cluster, at: Duration) -> usize {
        let paced = state.pace_nodes(next, *START + at);
        let nodes = paced.nodes.len();
        state.current = Some(Arc::new(ExportSet {
            cluster: paced,
            services: BTreeMap::new(),
        }));
        nodes
    }

    /// Node changes go out at most once per interval, the last one then;
    /// other news takes them along at once.
    static START: std::sync::LazyLock<tokio::time::Instant> =
        std::sync::LazyLock::new(tokio::time::Instant::now);

    #[test]
    fn node_changes_are_paced() {
        let mut s = state();
        assert_eq!(
            published(&mut s, cluster(1, "10.0.0.0/16"), Duration::from_secs(0)),
            1
        );
        assert_eq!(
            published(&mut s, cluster(2, "10.0.0.0/16"), Duration::from_secs(1)),
            1,
            "held"
        );
        assert!(s.nodes_due.is_some());
        assert_eq!(
            published(&mut s, cluster(3, "10.0.0.0/16"), Duration::from_secs(1)),
            1,
            "held"
        );
        assert_eq!(
            published(&mut s, cluster(3, "10.0.0.0/16"), Duration::from_secs(60)),
            3,
            "due"
        );
        assert_eq!(s.nodes_due, None);
        assert_eq!(
            published(&mut s, cluster(4, "10.0.0.0/16"), Duration::from_secs(61)),
            3,
            "held"
        );
        assert_eq!(
            published(&mut s, cluster(4, "10.1.0.0/16"), Duration::from_secs(61)),
            4,
            "new client CIDRs reconnect anyway"
        );
        assert_eq!(
            published(&mut s, cluster(5, "10.1.0.0/16"), Duration::from_secs(181)),
            5,
            "after a quiet interval, at once"
        );
    }
}
