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

use std::sync::atomic::AtomicUsize;

use crate::auth::{Auth, Caller, Credential};
use crate::config::Limits;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::registry::{Registry, Writer};

mod budget;
mod export;
mod frames;
mod imports;
mod route;
mod validate;
mod watch;

pub use budget::MAX_BYTES as MAX_BUDGET_BYTES;
pub use imports::PER_CLUSTER as IMPORTS_PER_CLUSTER;
pub use route::RegistryService;
pub use watch::{PART_BYTES, full_state};

/// Largest request decoded for Watch, ListClusters, GetService and
/// WatchImports: their requests are empty or one service key (two names
/// of at most 253 bytes each), so 16 KiB leaves ample room.
pub const SMALL_REQUEST_BYTES: usize = 16 * 1024;
/// The tonic service over a shared [`Registry`].
#[derive(Clone)]
pub struct Ingest {
    export: Arc<export::Context>,
    /// Export streams with an authorized Hello, against `--max-export-streams`.
    streams: Arc<AtomicUsize>,
    /// Export streams waiting for their Hello, against `--max-pending-hellos`.
    pending: Arc<AtomicUsize>,
    /// Watch streams open now, against `--max-watch-streams`.
    watch_streams: Arc<AtomicUsize>,
    /// On a follower, the upstream it mirrors: exports go there.
    following: Option<String>,
    /// `--max-answers` and `--min-healthy`, for `ListClusters` (drills).
    answer_settings: Option<wire::AnswerSettings>,
    /// The clusterset's view (WatchImports, GetService's `resolved`).
    imports: crate::registry::imports::Imports,
    /// WatchImports streams open now, against `--max-import-streams`.
    import_streams: Arc<imports::Slots>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("streams", &self.streams)
            .field("pending", &self.pending)
            .field("watch_streams", &self.watch_streams)
            .finish_non_exhaustive()
    }
}

impl Ingest {
    pub fn new(
        registry: Arc<Registry>,
        writer: Writer,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
        fleet: Arc<Fleet>,
        limits: Limits,
        shutdown: CancellationToken,
    ) -> Self {
        Self::with_imports(
            registry,
            writer,
            metrics,
            auth,
            fleet,
            limits,
            shutdown,
            None,
            std::time::Duration::ZERO,
        )
    }

    /// As [`Ingest::new`], keeping the first-exported times of the
    /// clusterset's view in `persist` (beside `--state-file`); WatchImports
    /// serves the view once restored or `warm_after` (the cluster TTL)
    /// after start.
    #[allow(clippy::too_many_arguments)]
    pub fn with_imports(
        registry: Arc<Registry>,
        writer: Writer,
        metrics: Arc<Metrics>,
        auth: Arc<Auth>,
        fleet: Arc<Fleet>,
        limits: Limits,
        shutdown: CancellationToken,
        persist: Option<std::path::PathBuf>,
        warm_after: std::time::Duration,
    ) -> Self {
        let imports = crate::registry::imports::start(
            writer.clone(),
            metrics.clone(),
            persist,
            warm_after,
            shutdown.clone(),
        );
        Ingest {
            imports,
            import_streams: Arc::default(),
            export: Arc::new(export::Context {
                registry,
                writer,
                validators: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                ),
                budget: budget::Budget::new(
                    limits.max_export_bytes_in_flight,
                    metrics.budget.clone(),
                ),
                metrics,
                limits,
                auth,
                fleet,
                shutdown,
            }),
            streams: Arc::default(),
            pending: Arc::default(),
            watch_streams: Arc::default(),
            following: None,
            answer_settings: None,
        }
    }

    fn registry(&self) -> &Arc<Registry> {
        &self.export.registry
    }

    /// The reader's credential, which its streams watch.
    fn read_access<T>(&self, request: &Request<T>) -> Result<Credential, Status> {
        let Caller {
            principal: who,
            credential,
        } = self.export.auth.authenticate(request)?;
        self.export
            .auth
            .may_read(&who)
            .inspect_err(|_| warn!(caller = %who, "refused a read without a reader credential"))?;
        Ok(credential)
    }

    /// Marks this replica a follower of `upstream`: it refuses exports.
    /// Reports how DNS answers (`--max-answers`, `--min-healthy`) in
    /// `ListClusters`, so a drill answers alike.
    pub fn answering(mut self, max_answers: usize, min_healthy: usize) -> Self {
        self.answer_settings = Some(wire::AnswerSettings {
            max_answers: u32::try_from(max_answers).unwrap_or(u32::MAX),
            min_healthy: u32::try_from(min_healthy).unwrap_or(u32::MAX),
        });
        self
    }

    pub fn following(mut self, upstream: Option<String>) -> Self {
        self.following = upstream;
        self
    }

    /// The service to serve: tonic's generated server, but Export streams
    /// read by [`route`] (no decode buffer kept per idle stream). The
    /// generated server serves only the RPCs whose request is empty or one
    /// service key, so it decodes at most [`SMALL_REQUEST_BYTES`]: a caller,
    /// authenticated only once its request is decoded, cannot make the
    /// registry buffer `--max-grpc-message-bytes` per stream.
    pub fn into_server(self) -> RegistryService {
        let generated = wire::registry_server::RegistryServer::new(self.clone())
            .max_decoding_message_size(SMALL_REQUEST_BYTES);
        RegistryService::new(self, generated)
    }

    /// Opens an Export stream over `request`'s messages: authenticated,
    /// within `--max-pending-hellos`, then run by its own task.
    fn open_export(
        &self,
        request: Request<impl export::Requests>,
    ) -> Result<Response<BoxStream<wire::ExportResponse>>, Status> {
        if let Some(upstream) = &self.following {
            return Err(Status::failed_precondition(format!(
                "this replica follows {upstream}; export to that registry instead"
            )));
        }
        let Caller {
            principal: who,
            credential,
        } = self.export.auth.authenticate(&request)?;
        let limits = &self.export.limits;
        let pending = export::Slot::take(&self.pending, limits.max_pending_hellos).ok_or_else(|| {
            self.export.metrics.export_event("over_limit");
            warn!(
                limit = limits.max_pending_hellos,
                "export stream refused: --max-pending-hellos reached"
            );
            Status::resource_exhausted(format!(
                "the registry has {} export streams waiting for their Hello, the --max-pending-hellos limit",
                limits.max_pending_hellos
            ))
        })?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(export::export_stream(
            self.export.clone(),
            who,
            credential,
            pending,
            self.streams.clone(),
            request.into_inner(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl wire::registry_server::Registry for Ingest {
    type ExportStream = BoxStream<wire::ExportResponse>;
    type WatchStream = BoxStream<wire::WatchEvent>;
    type WatchImportsStream = BoxStream<wire::ImportsEvent>;

    async fn watch_imports(
        &self,
        request: Request<wire::WatchImportsRequest>,
    ) -> Result<Response<Self::WatchImportsStream>, Status> {
        let Caller {
            principal: who,
            credential,
        } = self.export.auth.authenticate(&request)?;
        self.export.auth.may_watch_imports(&who)?;
        let max = self.export.limits.max_import_streams;
        let slot = self.import_streams.take(&who, max).inspect_err(|s| {
            self.export.metrics.watch_event("over_limit");
            warn!(caller = %who, reason = s.message(), "imports stream refused");
        })?;
        let events = imports::start(
            self.imports.clone(),
            self.export.limits.watch_stall_timeout,
            self.export.shutdown.clone(),
            credential,
            move || drop(slot),
        );
        Ok(Response::new(Box::pin(events)))
    }

    async fn export(
        &self,
        request: Request<Streaming<wire::ExportRequest>>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        self.open_export(request)
    }

    async fn watch(
        &self,
        request: Request<wire::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let credential = self.read_access(&request)?;
        // Only an authorized reader takes a slot.
        let max = self.export.limits.max_watch_streams;
        let slot = export::Slot::take(&self.watch_streams, max).ok_or_else(|| {
            self.export.metrics.watch_event("over_limit");
            warn!(
                limit = max,
                "watch stream refused: --max-watch-streams reached"
            );
            Status::resource_exhausted(format!(
                "the registry has {max} watch streams open, the --max-watch-streams limit"
            ))
        })?;
        let events = watch::start(
            self.export.writer.clone(),
            self.export.metrics.clone(),
            self.export.limits.watch_stall_timeout,
            self.export.shutdown.clone(),
            credential,
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
            .registry()
            .clusters()
            .iter()
            .map(watch::cluster_info)
            .collect();
        let mut response = Response::new(wire::ListClustersResponse {
            clusters,
            registry_version: env!("CARGO_PKG_VERSION").to_owned(),
            policy: Some(self.registry().policy().as_ref().into()),
            answer_settings: self.answer_settings,
        });
        // A follower says how fresh its mirror is (`meshdns status`).
        if let Some(link) = &self.export.metrics.follower {
            crate::follow::report(&link.view(), response.metadata_mut());
        }
        Ok(response)
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
            .export
            .writer
            .service(key.clone())
            .await
            .map_err(Status::from)?
            .into_iter()
            .map(|(cluster, service)| wire::ClusterService {
                cluster: cluster.to_string(),
                service: Some(service.as_ref().into()),
            })
            .collect();
        let resolved = self
            .imports
            .borrow()
            .services
            .get(&key)
            .map(|r| r.as_ref().into());
        Ok(Response::new(wire::GetServiceResponse {
            exports,
            resolved,
        }))
    }
}
