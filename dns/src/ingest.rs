//! The gRPC `Registry` service: wire messages in, validated model into the
//! registry, refusals and state out.

use std::pin::Pin;
use std::sync::Arc;

use meshdns_proto::model::ServiceKey;
use meshdns_proto::wire;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::warn;

use crate::auth::Auth;
use crate::config::Limits;
use crate::metrics::Metrics;
use crate::registry::Registry;

mod export;
mod validate;
mod watch;

pub use watch::{PART_BYTES, full_state};

/// The tonic service over a shared [`Registry`].
#[derive(Debug, Clone)]
pub struct Ingest {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    auth: Arc<Auth>,
    limits: Limits,
    /// Export streams open now, against `--max-export-streams`.
    streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Watch streams open now, against `--max-watch-streams`.
    watch_streams: Arc<std::sync::atomic::AtomicUsize>,
    /// Ends every open stream when the server shuts down.
    shutdown: CancellationToken,
    /// On a follower, the upstream it mirrors: exports go there.
    following: Option<String>,
}

impl Ingest {
    pub fn new(
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Self {
        Ingest {
            registry,
            metrics,
            auth,
            limits,
            streams: Arc::default(),
            watch_streams: Arc::default(),
            shutdown,
            following: None,
        }
    }

    fn read_access<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let who = self.auth.authenticate(request)?;
        self.auth
            .may_read(&who)
            .inspect_err(|_| warn!(caller = %who, "refused a read without a reader credential"))
    }

    /// Marks this replica a follower of `upstream`: it refuses exports.
    pub fn following(mut self, upstream: Option<String>) -> Self {
        self.following = upstream;
        self
    }

    pub fn into_server(self) -> wire::registry_server::RegistryServer<Self> {
        let max = self.limits.max_grpc_message_bytes;
        wire::registry_server::RegistryServer::new(self).max_decoding_message_size(max)
    }
}

/// One of the `--max-export-streams` slots, given back on drop.
struct StreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl StreamSlot {
    fn take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| StreamSlot(count.clone()))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl wire::registry_server::Registry for Ingest {
    type ExportStream = BoxStream<wire::ExportResponse>;
    type WatchStream = BoxStream<wire::WatchEvent>;

    async fn export(
        &self,
        request: Request<Streaming<wire::ExportRequest>>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        if let Some(upstream) = &self.following {
            return Err(Status::failed_precondition(format!(
                "this replica follows {upstream}; export to that registry instead"
            )));
        }
        let who = self.auth.authenticate(&request)?;
        let guard =
            StreamSlot::take(&self.streams, self.limits.max_export_streams).ok_or_else(|| {
                self.metrics.export_event("over_limit");
                warn!(
                    limit = self.limits.max_export_streams,
                    "export stream refused: --max-export-streams reached"
                );
                Status::resource_exhausted(format!(
                    "the registry has {} export streams open, the --max-export-streams limit",
                    self.limits.max_export_streams
                ))
            })?;
        let (tx, rx) = mpsc::channel(64);
        let stream = export::export_stream(
            self.registry.clone(),
            self.metrics.clone(),
            self.limits,
            (self.auth.clone(), who),
            self.shutdown.clone(),
            request.into_inner(),
            tx,
        );
        tokio::spawn(async move {
            stream.await;
            drop(guard);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn watch(
        &self,
        request: Request<wire::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.read_access(&request)?;
        // Only an authorized reader takes a slot.
        let max = self.limits.max_watch_streams;
        let slot = StreamSlot::take(&self.watch_streams, max).ok_or_else(|| {
            self.metrics.watch_event("over_limit");
            warn!(
                limit = max,
                "watch stream refused: --max-watch-streams reached"
            );
            Status::resource_exhausted(format!(
                "the registry has {max} watch streams open, the --max-watch-streams limit"
            ))
        })?;
        let events = watch::start(
            self.registry.clone(),
            self.metrics.clone(),
            self.limits.watch_stall_timeout,
            self.shutdown.clone(),
            move || drop(slot),
        );
        Ok(Response::new(Box::pin(events)))
    }

    async fn list_clusters(
        &self,
        request: Request<wire::ListClustersRequest>,
    ) -> Result<Response<wire::ListClustersResponse>, Status> {
        self.read_access(&request)?;
        let clusters = self
            .registry
            .clusters()
            .iter()
            .map(watch::cluster_info)
            .collect();
        Ok(Response::new(wire::ListClustersResponse { clusters }))
    }

    async fn get_service(
        &self,
        request: Request<wire::GetServiceRequest>,
    ) -> Result<Response<wire::GetServiceResponse>, Status> {
        self.read_access(&request)?;
        let key = request
            .get_ref()
            .key
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("key: is required"))?;
        let key =
            ServiceKey::try_from(key).map_err(|e| Status::invalid_argument(format!("key.{e}")))?;
        let exports = self
            .registry
            .service(&key)
            .into_iter()
            .map(|(cluster, service)| wire::ClusterService {
                cluster: cluster.to_string(),
                service: Some(service.as_ref().into()),
            })
            .collect();
        Ok(Response::new(wire::GetServiceResponse { exports }))
    }
}
