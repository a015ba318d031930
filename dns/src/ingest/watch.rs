//! Watch: the registry's whole state (a Reset), then every change, in
//! wire form and in parts of at most [`parts::PART_BYTES`]; also the state
//! file's payload.
//!
//! What one watcher may cost is bounded: its channel holds a few parts,
//! parts are built as the channel takes them, and a reader that does not
//! take its Reset (or a later part) within `--watch-stall-timeout` is cut
//! off with `RESOURCE_EXHAUSTED`, freeing its `--max-watch-streams` slot.
//! A reader that falls behind the registry's change feed is sent a fresh
//! Reset. Nobody waits for a watcher: changes are broadcast.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use meshdns_proto::wire::{self, watch_event::Event};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use crate::auth::Credential;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::{Change, FullState, Writer};

mod parts;

pub use parts::PART_BYTES;

/// Parts queued for one watcher: with [`PART_BYTES`] parts, at most a
/// few MiB per watcher besides what HTTP/2 holds.
const QUEUED_PARTS: usize = 2;

pub use crate::state_wire::{cluster_info, full_state};

fn event(event: Event) -> wire::WatchEvent {
    wire::WatchEvent { event: Some(event) }
}

/// Why a watch stream ended.
enum End {
    /// The reader went away.
    Closed,
    /// The reader did not take a part within the stall timeout.
    Stalled,
    ShuttingDown,
    /// The reader's credential was revoked or expired.
    Revoked(crate::auth::Revoked),
}

/// The sending side of one watcher.
struct Watcher {
    events: mpsc::Sender<Result<wire::WatchEvent, Status>>,
    stall: Duration,
    shutdown: CancellationToken,
    credential: Credential,
}

impl Watcher {
    /// Queues `event`, waiting at most until `deadline` for room.
    async fn send(&self, event: wire::WatchEvent, deadline: Instant) -> Result<(), End> {
        tokio::select! {
            biased;
            _ = self.shutdown.cancelled() => Err(End::ShuttingDown),
            revoked = self.credential.revoked() => Err(End::Revoked(revoked)),
            sent = tokio::time::timeout_at(deadline, self.events.send(Ok(event))) => match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(End::Closed),
                Err(_) => Err(End::Stalled),
            },
        }
    }

    /// Sends the whole state; every part within one stall timeout.
    async fn reset(&self, state: FullState) -> Result<(), End> {
        let deadline = Instant::now() + self.stall;
        // The policy rides in the first part (bounded: the policy file is
        // at most 1 MiB, so a part stays well under a client's 4 MiB).
        let mut policy = Some(wire::FleetPolicy::from(state.policy.as_ref()));
        for mut part in parts::reset_parts(&state.clusters, PART_BYTES) {
            part.policy = policy.take();
            self.send(event(Event::Reset(part)), deadline).await?;
        }
        Ok(())
    }

    /// Sends one change; each part within a stall timeout.
    async fn change(&self, change: &Change) -> Result<(), End> {
        match change {
            Change::Cluster(status) => {
                let info = Event::Cluster(cluster_info(status));
                self.send(event(info), Instant::now() + self.stall).await
            }
            Change::Services {
                cluster,
                upserts,
                removals,
            } => {
                let name = cluster.to_string();
                for part in parts::services_parts(&name, upserts, removals, PART_BYTES) {
                    self.send(event(Event::Services(part)), Instant::now() + self.stall)
                        .await?;
                }
                Ok(())
            }
            Change::ClusterRemoved(name) => {
                let removed = Event::ClusterRemoved(name.to_string());
                self.send(event(removed), Instant::now() + self.stall).await
            }
            Change::Policy(policy) => {
                let policy = Event::Policy(policy.as_ref().into());
                self.send(event(policy), Instant::now() + self.stall).await
            }
        }
    }
}

/// A watcher's response stream: its queued events, unless it was cut off,
/// in which case the status comes first and the queue is dropped.
pub(super) struct WatchEvents {
    events: mpsc::Receiver<Result<wire::WatchEvent, Status>>,
    cut: Option<oneshot::Receiver<Status>>,
}

impl std::fmt::Debug for WatchEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchEvents").finish_non_exhaustive()
    }
}

impl Stream for WatchEvents {
    type Item = Result<wire::WatchEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(cut) = self.cut.as_mut() {
            match Pin::new(cut).poll(cx) {
                Poll::Ready(Ok(status)) => {
                    self.cut = None;
                    self.events.close();
                    while self.events.try_recv().is_ok() {}
                    return Poll::Ready(Some(Err(status)));
                }
                // Ended without a cut: only the queue is left.
                Poll::Ready(Err(_)) => self.cut = None,
                Poll::Pending => {}
            }
        }
        self.events.poll_recv(cx)
    }
}

/// Starts a watcher's task; `on_end` runs when it ends (and gives back
/// its slot). The stream is what the reader reads.
pub(super) fn start(
    writer: Writer,
    metrics: Arc<Metrics>,
    stall: Duration,
    shutdown: CancellationToken,
    credential: Credential,
    on_end: impl FnOnce() + Send + 'static,
) -> WatchEvents {
    let (events, rx) = mpsc::channel(QUEUED_PARTS);
    let (cut_tx, cut) = oneshot::channel();
    let watcher = Watcher {
        events,
        stall,
        shutdown,
        credential,
    };
    tokio::spawn(async move {
        metrics.watch_event("opened");
        let end = watch_stream(&writer, &metrics, &watcher).await;
        let status = match end {
            End::Closed => None,
            End::Stalled => {
                metrics.watch_event("stalled");
                warn!(timeout = ?stall, "watch reader cut off: it did not read within --watch-stall-timeout");
                Some(Status::resource_exhausted(format!(
                    "watch reader cut off: a part waited longer than --watch-stall-timeout ({stall:?}) to be read; reconnect and read faster"
                )))
            }
            End::ShuttingDown => Some(Error::ShuttingDown.into()),
            End::Revoked(revoked) => {
                metrics.stream_revoked();
                Some(revoked.into())
            }
        };
        metrics.watch_event("closed");
        if let Some(status) = status {
            let _ = cut_tx.send(status);
        }
        on_end();
    });
    WatchEvents {
        events: rx,
        cut: Some(cut),
    }
}

async fn watch_stream(writer: &Writer, metrics: &Metrics, watcher: &Watcher) -> End {
    let Ok((state, mut changes)) = writer.subscribe().await else {
        return End::ShuttingDown;
    };
    if let Err(end) = watcher.reset(state).await {
        return end;
    }
    loop {
        let received = tokio::select! {
            _ = watcher.events.closed() => return End::Closed,
            _ = watcher.shutdown.cancelled() => return End::ShuttingDown,
            revoked = watcher.credential.revoked() => return End::Revoked(revoked),
            received = changes.recv() => received,
        };
        let sent = match received {
            Ok(change) => watcher.change(&change).await,
            // Too slow to keep up: start it over from the whole state.
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                info!(
                    missed,
                    "watch reader fell behind the changes; sending a fresh reset"
                );
                metrics.watch_event("resynced");
                let Ok((state, fresh)) = writer.subscribe().await else {
                    return End::ShuttingDown;
                };
                changes = fresh;
                watcher.reset(state).await
            }
            Err(broadcast::error::RecvError::Closed) => return End::Closed,
        };
        if let Err(end) = sent {
            return end;
        }
    }
}
