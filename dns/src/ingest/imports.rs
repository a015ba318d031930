//! WatchImports: the clusterset's view ([`crate::registry::imports`]) as
//! a stream: the whole view (a `reset`, in parts of at most
//! [`PART_SERVICES`] services), then the services that changed.
//!
//! Open to readers and to cluster principals: a syncer keeps its
//! cluster's ServiceImports and ServiceExport conditions from it. It
//! carries service names, ports, types, the exporting clusters' names and
//! conflicts; never an address. A watcher takes a `--max-watch-streams`
//! slot, holds at most [`QUEUED`] events, and is cut off like a Watch
//! reader when it does not read within `--watch-stall-timeout`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::model::ServiceKey;
use meshdns_proto::wire;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use crate::auth::Credential;
use crate::registry::conflicts::Resolved;
use crate::registry::imports::Imports;

/// Services per event: a ServiceImport is a few hundred bytes.
pub const PART_SERVICES: usize = 500;
/// Events queued for one watcher.
const QUEUED: usize = 4;

type Sent = BTreeMap<ServiceKey, Arc<Resolved>>;

/// The events that turn `old` into `new`, in parts; `reset` on the first.
fn events(old: &Sent, new: &Sent, reset: bool) -> Vec<wire::ImportsEvent> {
    let upserts: Vec<wire::ServiceImport> = new
        .iter()
        .filter(|(k, v)| old.get(*k).is_none_or(|o| !Arc::ptr_eq(o, v)))
        .map(|(_, v)| v.as_ref().into())
        .collect();
    let removals: Vec<wire::ServiceKey> = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(Into::into)
        .collect();
    if !reset && upserts.is_empty() && removals.is_empty() {
        return Vec::new();
    }
    let mut parts = Vec::new();
    let mut upserts = upserts.into_iter().peekable();
    let mut removals = removals.into_iter().peekable();
    loop {
        let mut part = wire::ImportsEvent {
            reset,
            ..Default::default()
        };
        part.upserts.extend(upserts.by_ref().take(PART_SERVICES));
        let room = PART_SERVICES - part.upserts.len();
        part.removals.extend(removals.by_ref().take(room));
        let more = upserts.peek().is_some() || removals.peek().is_some();
        part.more = more;
        parts.push(part);
        if !more {
            return parts;
        }
    }
}

/// Starts a watcher; `on_end` runs when it ends (giving back its slot).
pub fn start(
    mut imports: Imports,
    stall: Duration,
    shutdown: CancellationToken,
    credential: Credential,
    on_end: impl FnOnce() + Send + 'static,
) -> ReceiverStream<Result<wire::ImportsEvent, Status>> {
    let (tx, rx) = mpsc::channel(QUEUED);
    tokio::spawn(async move {
        let mut sent = Sent::new();
        let mut reset = true;
        loop {
            let view = imports.borrow_and_update().clone();
            for event in events(&sent, &view.services, reset) {
                let end = tokio::select! {
                    _ = shutdown.cancelled() => Some(Status::unavailable("the registry is shutting down")),
                    revoked = credential.revoked() => Some(revoked.into()),
                    queued = tokio::time::timeout(stall, tx.send(Ok(event))) => match queued {
                        Ok(Ok(())) => None,
                        Ok(Err(_)) => break,
                        Err(_) => {
                            warn!(timeout = ?stall, "imports watcher cut off: it did not read within --watch-stall-timeout");
                            Some(Status::resource_exhausted(format!(
                                "imports watcher cut off: an event waited longer than --watch-stall-timeout ({stall:?}) to be read; reconnect and read faster"
                            )))
                        }
                    },
                };
                if let Some(status) = end {
                    let _ = tx.try_send(Err(status));
                    on_end();
                    return;
                }
            }
            sent = view.services.clone();
            reset = false;
            tokio::select! {
                _ = tx.closed() => break,
                _ = shutdown.cancelled() => break,
                revoked = credential.revoked() => {
                    let _ = tx.try_send(Err(revoked.into()));
                    break;
                }
                changed = imports.changed() => if changed.is_err() { break },
            }
        }
        on_end();
    });
    ReceiverStream::new(rx)
}
