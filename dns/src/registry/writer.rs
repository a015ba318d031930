//! The registry's one writer: a thread that owns the write path, fed by a
//! bounded queue of jobs. It takes every job queued (up to a batch),
//! applies them in order, publishes one snapshot for the whole batch and
//! only then answers each job, so an acknowledged write is visible in DNS
//! answers. A storm of a thousand Snapshots is a handful of publishes,
//! and nothing on the async runtime ever waits for the registry's lock:
//! handlers await their answer, readers load published state.

use std::sync::Arc;
use std::time::Instant;

use meshdns_proto::model::{Cluster, ClusterName, ServiceExport, ServiceKey};
use std::collections::BTreeSet;
use tokio::sync::{mpsc, oneshot};

use super::{
    ChangeReceiver, Dirty, FullState, Liveness, MirroredCluster, Registry, Session, State,
};
use crate::error::Error;

/// Jobs waiting at most; a handler's `send` waits for room beyond it.
const QUEUE: usize = 4096;
/// Most jobs applied under one publish.
const BATCH: usize = 1024;

type Reply = Box<dyn FnOnce() + Send>;
type Apply = Box<dyn FnOnce(&Registry, &mut State, &mut Dirty) -> Reply + Send>;

/// One queued write (or consistent read).
struct Job {
    apply: Apply,
    /// Reads that must see everything before them published (a Watch's
    /// subscription: its Reset and its change feed must meet exactly).
    barrier: bool,
}

/// The writer's queue: clone it freely, every clone feeds the one thread.
#[derive(Clone, Debug)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("barrier", &self.barrier)
            .finish()
    }
}

/// Which of a cluster's services may stay ([`Writer::enforce`]).
pub type Allowed = Box<dyn Fn(&ClusterName, &ServiceExport) -> bool + Send>;

impl Writer {
    /// Starts the writer thread for `registry`. It ends when every
    /// `Writer` clone is dropped.
    pub fn spawn(registry: Arc<Registry>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("meshdns-writer".into())
            .spawn(move || {
                crate::priority::control_plane_thread();
                run(&registry, queue)
            })?;
        Ok(Writer { jobs })
    }

    async fn job<R: Send + 'static>(
        &self,
        barrier: bool,
        f: impl FnOnce(&Registry, &mut State, &mut Dirty) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = oneshot::channel();
        let apply: Apply = Box::new(move |registry, state, dirty| {
            let result = f(registry, state, dirty);
            Box::new(move || {
                let _ = tx.send(result);
            })
        });
        self.jobs
            .send(Job { apply, barrier })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)
    }

    /// [`Registry::hello`], through the writer.
    pub async fn hello(
        &self,
        cluster: Cluster,
        max_services: usize,
    ) -> Result<(Session, Vec<String>), Error> {
        self.job(false, move |r, s, d| {
            r.hello_in(s, d, cluster, max_services)
        })
        .await
    }

    /// [`Registry::apply_snapshot`], through the writer.
    pub async fn apply_snapshot(
        &self,
        session: Arc<Session>,
        services: Vec<ServiceExport>,
        keep: BTreeSet<ServiceKey>,
    ) -> Result<Vec<ServiceKey>, Error> {
        self.job(false, move |r, s, d| {
            r.apply_snapshot_in(s, d, &session, services, &keep)
        })
        .await?
    }

    /// [`Registry::apply_delta`], through the writer.
    pub async fn apply_delta(
        &self,
        session: Arc<Session>,
        upserts: Vec<ServiceExport>,
        removals: BTreeSet<ServiceKey>,
    ) -> Result<Vec<ServiceKey>, Error> {
        self.job(false, move |r, s, d| {
            r.apply_delta_in(s, d, &session, upserts, removals)
        })
        .await?
    }

    /// [`Registry::enforce_in`], through the writer: removes every
    /// service `allowed` refuses (the fleet file changed); how many left.
    pub async fn enforce(&self, allowed: Allowed) -> Result<usize, Error> {
        self.job(false, move |_, s, d| Registry::enforce_in(s, d, &allowed))
            .await
    }

    /// [`Registry::heartbeat`], through the writer.
    pub async fn heartbeat(&self, session: Arc<Session>) -> Result<(), Error> {
        self.job(false, move |_, s, d| Registry::heartbeat_in(s, d, &session))
            .await?
    }

    /// [`Registry::disconnect`], through the writer.
    pub async fn disconnect(&self, session: Arc<Session>) {
        let _ = self
            .job(false, move |_, s, d| {
                Registry::disconnect_in(s, d, &session)
            })
            .await;
    }

    /// [`Registry::sweep`], through the writer.
    pub async fn sweep(&self, now: Instant, liveness: Liveness) {
        let _ = self
            .job(false, move |_, s, d| {
                Registry::sweep_in(s, d, now, liveness)
            })
            .await;
    }

    /// [`Registry::mirror_reset`], through the writer.
    pub async fn mirror_reset(&self, clusters: Vec<(MirroredCluster, Vec<ServiceExport>)>) {
        let _ = self
            .job(false, move |_, s, d| {
                Registry::mirror_reset_in(s, d, clusters)
            })
            .await;
    }

    /// [`Registry::mirror_reset`] and, when given, `policy` (unless it is
    /// the one in force) in one job, so one snapshot publishes both: a
    /// follower never answers its upstream's new state under the old
    /// policy, and every view is built once.
    pub async fn mirror_reset_with_policy(
        &self,
        clusters: Vec<(MirroredCluster, Vec<ServiceExport>)>,
        policy: Option<Arc<meshdns_proto::model::FleetPolicy>>,
    ) {
        let _ = self
            .job(false, move |_, s, d| {
                if let Some(policy) = policy.filter(|p| **p != *s.policy) {
                    Registry::set_policy_in(s, d, policy);
                }
                Registry::mirror_reset_in(s, d, clusters)
            })
            .await;
    }

    /// [`Registry::mirror_cluster`], through the writer.
    pub async fn mirror_cluster(&self, m: MirroredCluster) {
        let _ = self
            .job(false, move |_, s, d| Registry::mirror_cluster_in(s, d, m))
            .await;
    }

    /// [`Registry::mirror_services`], through the writer.
    pub async fn mirror_services(
        &self,
        cluster: ClusterName,
        upserts: Vec<ServiceExport>,
        removals: Vec<ServiceKey>,
    ) {
        let _ = self
            .job(false, move |_, s, d| {
                Registry::mirror_services_in(s, d, &cluster, upserts, removals)
            })
            .await;
    }

    /// [`Registry::mirror_remove`], through the writer.
    pub async fn mirror_remove(&self, cluster: ClusterName) {
        let _ = self
            .job(false, move |_, s, d| {
                Registry::mirror_remove_in(s, d, &cluster)
            })
            .await;
    }

    /// [`Registry::set_policy`], through the writer: answered once the
    /// snapshot built under the policy is published.
    pub async fn set_policy(&self, policy: Arc<meshdns_proto::model::FleetPolicy>) {
        let _ = self
            .job(false, move |_, s, d| Registry::set_policy_in(s, d, policy))
            .await;
    }

    /// [`Writer::set_policy`] unless `policy` is already in force: a
    /// follower's every Reset restates its upstream's policy, and
    /// rebuilding every view for an unchanged one would cost a full
    /// rebuild per reconnect.
    pub async fn renew_policy(&self, policy: Arc<meshdns_proto::model::FleetPolicy>) {
        let _ = self
            .job(false, move |_, s, d| {
                if *s.policy != *policy {
                    Registry::set_policy_in(s, d, policy);
                }
            })
            .await;
    }

    /// The full state and a receiver of every change after it, taken
    /// between two publishes so nothing falls between them or is seen twice.
    pub async fn subscribe(&self) -> Result<(FullState, ChangeReceiver), Error> {
        self.job(true, |r, s, _| {
            (Registry::full_state_of(s), r.changes.subscribe())
        })
        .await
    }

    /// Every cluster's status and exports.
    pub async fn full_state(&self) -> Result<FullState, Error> {
        self.job(true, |_, s, _| Registry::full_state_of(s)).await
    }

    /// The full state with the serial of the snapshot it matches (taken
    /// together, after everything before it was published).
    pub async fn full_state_at(&self) -> Result<(u32, FullState), Error> {
        self.job(true, |r, s, _| {
            (r.snapshot.load().serial, Registry::full_state_of(s))
        })
        .await
    }

    /// Every cluster's export of `key`.
    pub async fn service(
        &self,
        key: ServiceKey,
    ) -> Result<Vec<(ClusterName, Arc<ServiceExport>)>, Error> {
        self.job(false, move |_, s, _| Registry::service_of(s, &key))
            .await
    }
}

/// The writer thread: batch, apply, publish once, answer.
fn run(registry: &Registry, mut queue: mpsc::Receiver<Job>) {
    let mut replies: Vec<Reply> = Vec::with_capacity(BATCH);
    while let Some(first) = queue.blocking_recv() {
        let mut state = registry.lock();
        let mut dirty = Dirty::default();
        let mut next = Some(first);
        while let Some(job) = next.take() {
            if job.barrier && !dirty.is_empty() {
                registry.publish(&mut state, std::mem::take(&mut dirty));
                replies.drain(..).for_each(|reply| reply());
            }
            replies.push((job.apply)(registry, &mut state, &mut dirty));
            if replies.len() < BATCH {
                next = queue.try_recv().ok();
            }
        }
        registry.publish(&mut state, dirty);
        drop(state);
        registry.metrics.writer_batch(replies.len());
        replies.drain(..).for_each(|reply| reply());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use meshdns_proto::fixtures::{self, cluster};
    use meshdns_proto::model::Policy;
    use proptest::prelude::*;

    use super::*;
    use crate::metrics::Metrics;

    fn key(name: &str) -> ServiceKey {
        fixtures::key("ns", name)
    }

    fn export(name: &str, address: &str) -> ServiceExport {
        let endpoint = fixtures::endpoint(address.parse().unwrap());
        fixtures::http_export(key(name), vec![endpoint], Policy::default())
    }

    fn registry() -> (Arc<Registry>, Writer) {
        let registry = Arc::new(Registry::new(5, false, Arc::new(Metrics::new())));
        let writer = Writer::spawn(registry.clone()).unwrap();
        (registry, writer)
    }

    /// The answer a write's acknowledgement promises is in the snapshot
    /// the moment the acknowledgement arrives, for every write of a run.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_acknowledged_write_is_already_visible() {
        let (registry, writer) = registry();
        let (session, _) = writer.hello(cluster("c"), usize::MAX).await.unwrap();
        let session = Arc::new(session);
        writer
            .apply_snapshot(session.clone(), vec![], BTreeSet::new())
            .await
            .unwrap();
        for i in 0..500u32 {
            let name = format!("web-{i}");
            let address = format!("10.0.{}.{}", i / 250, i % 250 + 1);
            writer
                .apply_delta(
                    session.clone(),
                    vec![export(&name, &address)],
                    BTreeSet::new(),
                )
                .await
                .unwrap();
            assert!(
                registry.snapshot().view(&key(&name)).is_some(),
                "write {i} acknowledged before it was published"
            );
        }
    }

    /// Many clusters' Snapshots at once: coalesced into few publishes, and
    /// no snapshot ever shows part of a message (each cluster alternates
    /// between two whole sets; a reader checks every snapshot it sees).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_storm_coalesces_and_never_shows_half_a_message() {
        let (registry, writer) = registry();
        let clusters = 50;
        let names = |c: usize, set: char| -> Vec<String> {
            (0..10).map(|s| format!("c{c}-{set}-{s}")).collect()
        };
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (registry, stop) = (registry.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let snapshot = registry.snapshot();
                    for c in 0..clusters {
                        let count = |set| {
                            names(c, set)
                                .iter()
                                .filter(|n| snapshot.view(&key(n)).is_some())
                                .count()
                        };
                        let (a, b) = (count('a'), count('b'));
                        assert!(
                            (a, b) == (10, 0) || (a, b) == (0, 10) || (a, b) == (0, 0),
                            "cluster {c} shows a={a} b={b} at serial {}",
                            snapshot.serial
                        );
                    }
                    seen += 1;
                }
                seen
            })
        };
        let before = registry.metrics.render(&registry);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..clusters {
            let writer = writer.clone();
            tasks.spawn(async move {
                let (session, _) = writer
                    .hello(cluster(&format!("c{c}")), usize::MAX)
                    .await
                    .unwrap();
                let session = Arc::new(session);
                for round in 0..20 {
                    let set = if round % 2 == 0 { 'a' } else { 'b' };
                    let services = names(c, set)
                        .iter()
                        .enumerate()
                        .map(|(s, n)| export(n, &format!("10.{c}.{s}.1")))
                        .collect();
                    writer
                        .apply_snapshot(session.clone(), services, BTreeSet::new())
                        .await
                        .unwrap();
                }
            });
        }
        while tasks.join_next().await.is_some() {}
        stop.store(true, Ordering::Relaxed);
        let seen = reader.join().expect("no snapshot showed half a message");
        assert!(seen > 0);
        // Every cluster ends on its last set, 'b'.
        let snapshot = registry.snapshot();
        for c in 0..clusters {
            for n in names(c, 'b') {
                assert!(snapshot.view(&key(&n)).is_some(), "{n}");
            }
        }
        let after = registry.metrics.render(&registry);
        let count = |text: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix("meshdns_registry_writer_batch_size_count "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let publishes = count(&after) - count(&before);
        // 50 hellos + 1,000 Snapshots; coalesced into fewer publishes.
        println!("1,050 writes in {publishes} batches; the reader checked {seen} snapshots");
        assert!(publishes <= 1050.0);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Snapshot(Vec<u8>),
        Delta(Vec<u8>, Vec<u8>),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            proptest::collection::vec(0u8..12, 0..8).prop_map(Op::Snapshot),
            (
                proptest::collection::vec(0u8..12, 0..4),
                proptest::collection::vec(0u8..12, 0..4)
            )
                .prop_map(|(u, r)| Op::Delta(u, r)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// Concurrent streams of Snapshots and Deltas from several clusters
        /// end in exactly the state a sequential model of each cluster's
        /// messages gives, whatever the writer batched together.
        #[test]
        fn concurrent_writes_end_as_the_model_says(
            streams in proptest::collection::vec(proptest::collection::vec(op(), 1..12), 1..6)
        ) {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let (registry, writer) = registry();
            let mut model: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
            for (c, ops) in streams.iter().enumerate() {
                let held = model.entry(format!("c{c}")).or_default();
                for (i, op) in ops.iter().enumerate() {
                    let value = |s: &u8| (format!("s{s}"), format!("10.{c}.{s}.{}", i + 1));
                    match op {
                        Op::Snapshot(set) => *held = set.iter().map(value).collect(),
                        Op::Delta(upserts, removals) => {
                            held.extend(upserts.iter().map(value));
                            for r in removals {
                                held.remove(&format!("s{r}"));
                            }
                        }
                    }
                }
            }
            runtime.block_on(async {
                let mut tasks = tokio::task::JoinSet::new();
                for (c, ops) in streams.clone().into_iter().enumerate() {
                    let writer = writer.clone();
                    tasks.spawn(async move {
                        let (session, _) = writer.hello(cluster(&format!("c{c}")), usize::MAX).await.unwrap();
                        let session = Arc::new(session);
                        // The protocol starts with a Snapshot.
                        writer.apply_snapshot(session.clone(), vec![], BTreeSet::new()).await.unwrap();
                        for (i, op) in ops.into_iter().enumerate() {
                            let export_of = |s: u8| export(&format!("s{s}"), &format!("10.{c}.{s}.{}", i + 1));
                            match op {
                                Op::Snapshot(set) => {
                                    let mut set: Vec<u8> = set;
                                    set.sort_unstable();
                                    set.dedup();
                                    let services = set.into_iter().map(export_of).collect();
                                    writer.apply_snapshot(session.clone(), services, BTreeSet::new()).await.unwrap();
                                }
                                Op::Delta(upserts, removals) => {
                                    let mut upserts: Vec<u8> = upserts;
                                    upserts.sort_unstable();
                                    upserts.dedup();
                                    let upserts = upserts.into_iter().map(export_of).collect();
                                    let removals = removals.iter().map(|r| key(&format!("s{r}"))).collect();
                                    writer.apply_delta(session.clone(), upserts, removals).await.unwrap();
                                }
                            }
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            });
            let full = registry.full_state();
            let got: BTreeMap<String, BTreeMap<String, String>> = full
                .clusters
                .iter()
                .map(|(status, services)| {
                    let held = services
                        .iter()
                        .map(|s| {
                            let address = s.endpoints()[0].addresses.iter().next().map(ToString::to_string);
                            (s.key().name.to_string(), address.unwrap_or_default())
                        })
                        .collect();
                    (status.cluster.name.to_string(), held)
                })
                .collect();
            prop_assert_eq!(got, model);
        }
    }
}
