//! Watch: the registry's whole state (a Reset), then every change, in
//! wire form; also the state file's payload.

use std::sync::Arc;

use meshdns_proto::wire::{self, watch_event::Event};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::auth::Credential;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::{Change, ClusterStatus, FullState, Registry};

pub(super) fn cluster_info(status: &ClusterStatus) -> wire::ClusterInfo {
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
        refused_client_cidrs: status.refused_cidrs.clone(),
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
        more: false,
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
            more: false,
        }),
        Change::ClusterRemoved(name) => Event::ClusterRemoved(name.to_string()),
    };
    wire::WatchEvent { event: Some(event) }
}

pub(super) async fn watch_stream(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    credential: Credential,
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
            revoked = credential.revoked() => {
                metrics.stream_revoked();
                let _ = events.send(Err(revoked.into())).await;
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
