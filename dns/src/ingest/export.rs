//! One Export stream: Hello, then Snapshots, Deltas and Heartbeats applied
//! to the registry in order, each answered with its refusals.

use std::sync::Arc;

use meshdns_proto::model::Cluster;
use meshdns_proto::wire::{self, export_request::Message as Req};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::{info, warn};

use super::validate::{over_limit, removals, validate};
use crate::auth::{Auth, Credential, Principal};
use crate::config::Limits;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::{Registry, Session};

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

pub(super) async fn export_stream(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    limits: Limits,
    auth: (Arc<Auth>, Principal, Credential),
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
            revoked = auth.2.revoked() => {
                metrics.stream_revoked();
                break Some(Error::Revoked(revoked));
            }
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
