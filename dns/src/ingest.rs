//! The gRPC `Registry` service: wire messages in, validated model into the
//! registry, refusals and state out.

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;

use meshdns_proto::model::{Cluster, ServiceExport, ServiceKey};
use meshdns_proto::wire::{self, export_request::Message as Req, watch_event::Event};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::auth::{Auth, Principal};
use crate::config::Limits;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::{Change, ClusterStatus, FullState, Registry, Session};

/// The tonic service over a shared [`Registry`].
#[derive(Debug, Clone)]
pub struct Ingest {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    auth: Arc<Auth>,
    limits: Limits,
    /// Export streams open now, against `--max-export-streams`.
    streams: Arc<std::sync::atomic::AtomicUsize>,
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

/// A refused item: what goes back to the syncer, and its kind for metrics.
type Refused = (wire::Refusal, &'static str);

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Validates each service on its own: the valid ones, and a refusal for
/// each invalid one. A refused service whose key is valid is also returned
/// in `keep`, so a Snapshot does not withdraw its last good version.
/// Refuses `service` for `reason` (counted under `kind`); its previous
/// version, if its key is readable, is kept.
fn refuse(
    service: &wire::ServiceExport,
    reason: String,
    kind: &'static str,
    refusals: &mut Vec<Refused>,
    keep: &mut BTreeSet<ServiceKey>,
) {
    if let Some(key) = service
        .key
        .as_ref()
        .and_then(|k| ServiceKey::try_from(k).ok())
    {
        keep.insert(key);
    }
    let refusal = wire::Refusal {
        key: service.key.clone(),
        reason,
    };
    refusals.push((refusal, kind));
}

fn validate(
    services: &[wire::ServiceExport],
    max_endpoints: usize,
) -> (Vec<ServiceExport>, Vec<Refused>, BTreeSet<ServiceKey>) {
    let mut valid = Vec::with_capacity(services.len());
    let mut refusals = Vec::new();
    let mut keep = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for (i, service) in services.iter().enumerate() {
        if service.endpoints.len() > max_endpoints {
            let reason = format!(
                "services[{i}]: {} endpoints is over the --max-endpoints-per-service limit ({max_endpoints})",
                service.endpoints.len()
            );
            refuse(service, reason, "limit_endpoints", &mut refusals, &mut keep);
            continue;
        }
        let result = ServiceExport::try_from(service).and_then(|s| {
            if seen.insert(s.key().clone()) {
                Ok(s)
            } else {
                Err(meshdns_proto::InvalidField::new(
                    "key",
                    meshdns_proto::error::Problem::DuplicateService(s.key().to_string()),
                ))
            }
        });
        match result {
            Ok(s) => valid.push(s),
            Err(e) => refuse(
                service,
                format!("services[{i}]: {e}"),
                e.problem.kind(),
                &mut refusals,
                &mut keep,
            ),
        }
    }
    (valid, refusals, keep)
}

fn removals(keys: &[wire::ServiceKey]) -> (Vec<ServiceKey>, Vec<Refused>) {
    let mut valid = Vec::new();
    let mut refusals = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match ServiceKey::try_from(key) {
            Ok(k) => valid.push(k),
            Err(e) => refusals.push((
                wire::Refusal {
                    key: Some(key.clone()),
                    reason: format!("removals[{i}]: {e}"),
                },
                e.problem.kind(),
            )),
        }
    }
    (valid, refusals)
}

/// Refusals for services over `--max-services-per-cluster`.
fn over_limit(keys: Vec<ServiceKey>, max: usize) -> Vec<Refused> {
    keys.iter()
        .map(|k| {
            let refusal = wire::Refusal {
                key: Some(k.into()),
                reason: format!("{k}: the cluster already exports {max} services, the --max-services-per-cluster limit"),
            };
            (refusal, "limit_services")
        })
        .collect()
}

/// Applies one request of an open session.
fn apply(
    registry: &Registry,
    metrics: &Metrics,
    limits: &Limits,
    session: &Session,
    request: wire::ExportRequest,
) -> Result<wire::ExportResponse, Error> {
    let refusals = match request.message {
        Some(Req::Hello(_)) => {
            return Err(Error::SecondHello);
        }
        Some(Req::Snapshot(snapshot)) => {
            let (valid, mut refusals, keep) =
                validate(&snapshot.services, limits.max_endpoints_per_service);
            let over = registry.apply_snapshot(session, valid, &keep)?;
            refusals.extend(over_limit(over, limits.max_services_per_cluster));
            refusals
        }
        Some(Req::Delta(delta)) => {
            let (valid, mut refusals, _) =
                validate(&delta.upserts, limits.max_endpoints_per_service);
            let (gone, refused) = removals(&delta.removals);
            refusals.extend(refused);
            let over = registry.apply_delta(session, valid, gone)?;
            refusals.extend(over_limit(over, limits.max_services_per_cluster));
            refusals
        }
        Some(Req::Heartbeat(_)) | None => {
            registry.heartbeat(session)?;
            Vec::new()
        }
    };
    for (refusal, kind) in &refusals {
        metrics.refused(kind);
        let service = refusal
            .key
            .as_ref()
            .map(|k| format!("{}/{}", k.namespace, k.name))
            .unwrap_or_default();
        warn!(cluster = %session.cluster, %service, reason = %refusal.reason, "refused export item");
    }
    Ok(wire::ExportResponse {
        generation: request.generation,
        refusals: refusals.into_iter().map(|(r, _)| r).collect(),
    })
}

async fn export_stream(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    limits: Limits,
    auth: (Arc<Auth>, Principal),
    shutdown: CancellationToken,
    mut requests: Streaming<wire::ExportRequest>,
    responses: mpsc::Sender<Result<wire::ExportResponse, Status>>,
) {
    let first = match requests.message().await {
        Ok(Some(first)) => first,
        Ok(None) => return,
        Err(status) => {
            warn!(error = %status, "export stream failed before hello");
            return;
        }
    };
    let generation = first.generation;
    let cluster = match first.message {
        Some(Req::Hello(hello)) => match Cluster::try_from(&hello) {
            Ok(cluster) => cluster,
            Err(e) => {
                warn!(cluster = %hello.cluster, error = %e, "refused hello");
                metrics.export_event("hello_refused");
                let _ = responses.send(Err(Error::InvalidHello(e).into())).await;
                return;
            }
        },
        _ => {
            let _ = responses.send(Err(Error::HelloFirst.into())).await;
            return;
        }
    };
    if let Err(status) = auth.0.may_export(&auth.1, cluster.name.as_str()) {
        warn!(cluster = %cluster.name, caller = %auth.1, "refused hello: a cluster may only speak for itself");
        metrics.export_event("hello_refused");
        let _ = responses.send(Err(status)).await;
        return;
    }
    info!(cluster = %cluster.name, version = %cluster.version, cidrs = cluster.client_cidrs.len(), "export stream opened");
    metrics.export_event("opened");
    let session = registry.hello(cluster);
    let _ = responses
        .send(Ok(wire::ExportResponse {
            generation,
            refusals: Vec::new(),
        }))
        .await;
    let end = loop {
        let request = tokio::select! {
            _ = session.superseded.cancelled() => {
                metrics.export_event("superseded");
                break Some(Error::Superseded(session.cluster.to_string()));
            }
            _ = shutdown.cancelled() => break Some(Error::ShuttingDown),
            request = requests.message() => request,
        };
        match request {
            Ok(Some(request)) => match apply(&registry, &metrics, &limits, &session, request) {
                Ok(response) => {
                    if responses.send(Ok(response)).await.is_err() {
                        break None;
                    }
                }
                Err(e) => break Some(e),
            },
            Ok(None) => break None,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                ) =>
            {
                metrics.export_event("message_too_large");
                break Some(Error::MessageTooLarge(status.message().to_owned()));
            }
            Err(status) => {
                info!(cluster = %session.cluster, error = %status, "export stream broke");
                break None;
            }
        }
    };
    registry.disconnect(&session);
    metrics.export_event("closed");
    match end {
        Some(e) => {
            warn!(cluster = %session.cluster, error = %e, "export stream closed by the registry");
            let _ = responses.send(Err(e.into())).await;
        }
        None => info!(cluster = %session.cluster, "export stream closed"),
    }
}

fn cluster_info(status: &ClusterStatus) -> wire::ClusterInfo {
    let hello = wire::Hello::from(&status.cluster);
    wire::ClusterInfo {
        name: hello.cluster,
        region: hello.region,
        zone: hello.zone,
        client_cidrs: hello.client_cidrs,
        version: hello.version,
        last_heartbeat_unix_ms: status.last_heartbeat_unix_ms,
        state: if status.stale {
            wire::ClusterState::Stale.into()
        } else {
            wire::ClusterState::Live.into()
        },
        connected: status.connected,
        services: status.services as u32,
        endpoints: status.endpoints as u64,
    }
}

/// The whole registry state in wire form: Watch's Reset, and the state file.
pub fn full_state(state: &FullState) -> wire::Reset {
    wire::Reset {
        clusters: state
            .clusters
            .iter()
            .map(|(status, services)| wire::ClusterExports {
                cluster: Some(cluster_info(status)),
                services: services.iter().map(|s| s.as_ref().into()).collect(),
            })
            .collect(),
    }
}

fn reset(state: &FullState) -> wire::WatchEvent {
    wire::WatchEvent {
        event: Some(Event::Reset(full_state(state))),
    }
}

fn change(change: &Change) -> wire::WatchEvent {
    let event = match change {
        Change::Cluster(status) => Event::Cluster(cluster_info(status)),
        Change::Services {
            cluster,
            upserts,
            removals,
        } => Event::Services(wire::ServicesChanged {
            cluster: cluster.to_string(),
            upserts: upserts.iter().map(|s| s.as_ref().into()).collect(),
            removals: removals.iter().map(Into::into).collect(),
        }),
        Change::ClusterRemoved(name) => Event::ClusterRemoved(name.to_string()),
    };
    wire::WatchEvent { event: Some(event) }
}

async fn watch_stream(
    registry: Arc<Registry>,
    shutdown: CancellationToken,
    events: mpsc::Sender<Result<wire::WatchEvent, Status>>,
) {
    let (state, mut changes) = registry.subscribe();
    if events.send(Ok(reset(&state))).await.is_err() {
        return;
    }
    loop {
        let event = tokio::select! {
            _ = events.closed() => return,
            _ = shutdown.cancelled() => {
                let _ = events.send(Err(Error::ShuttingDown.into())).await;
                return;
            }
            received = changes.recv() => match received {
                Ok(c) => change(&c),
                // Too slow to keep up: start it over from the whole state.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let (state, fresh) = registry.subscribe();
                    changes = fresh;
                    reset(&state)
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        };
        if events.send(Ok(event)).await.is_err() {
            return;
        }
    }
}

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
        let stream = export_stream(
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
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(watch_stream(
            self.registry.clone(),
            self.shutdown.clone(),
            tx,
        ));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_clusters(
        &self,
        request: Request<wire::ListClustersRequest>,
    ) -> Result<Response<wire::ListClustersResponse>, Status> {
        self.read_access(&request)?;
        let clusters = self.registry.clusters().iter().map(cluster_info).collect();
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
