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
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Change, Dirty, FullState, Liveness, MirroredCluster, Registry, Session, State};
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

impl Writer {
    /// Starts the writer thread for `registry`. It ends when every
    /// `Writer` clone is dropped.
    pub fn spawn(registry: Arc<Registry>) -> std::io::Result<Writer> {
        let (jobs, queue) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("meshdns-writer".into())
            .spawn(move || run(&registry, queue))?;
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

    /// The full state and a receiver of every change after it, taken
    /// between two publishes so nothing falls between them or is seen twice.
    pub async fn subscribe(&self) -> Result<(FullState, broadcast::Receiver<Arc<Change>>), Error> {
        self.job(true, |r, s, _| {
            (Registry::full_state_of(s), r.changes.subscribe())
        })
        .await
    }

    /// Every cluster's status and exports.
    pub async fn full_state(&self) -> Result<FullState, Error> {
        self.job(true, |_, s, _| Registry::full_state_of(s)).await
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
