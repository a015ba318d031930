//! WatchImports: the clusterset's view ([`crate::registry::imports`]) as
//! a stream: the whole view (a `reset`, in parts of at most
//! [`PART_BYTES`] encoded, built as the stream takes them), then the
//! services that changed.
//!
//! Open to readers and to cluster principals: a syncer keeps its
//! cluster's ServiceImports and ServiceExport conditions from it. It
//! carries service names, ports, types, the exporting clusters' names and
//! conflicts; never an address. A watcher takes a `--max-import-streams`
//! slot ([`Slots`]: a pool of its own, so members cannot starve the
//! followers' `--max-watch-streams`; a cluster principal holds at most
//! [`PER_CLUSTER`] of them), holds at most [`QUEUED`] events, and is cut
//! off like a Watch reader when it does not read within
//! `--watch-stall-timeout`. Nothing is sent before the view is warm
//! ([`crate::registry::imports::ImportsView::warm`]): a cold view would
//! read as the deletion of every service not yet back.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshdns_proto::model::ServiceKey;
use meshdns_proto::wire;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::warn;

use crate::auth::{Credential, Principal};
use crate::registry::conflicts::Resolved;
use crate::registry::imports::Imports;

/// WatchImports streams one cluster principal may hold at once (a syncer
/// needs one; a second covers a reconnect racing the old stream's end).
pub const PER_CLUSTER: usize = 2;

/// The WatchImports streams open now: in all, and by cluster principal.
#[derive(Debug, Default)]
pub struct Slots {
    open: Mutex<(usize, HashMap<String, usize>)>,
}

/// One stream's place in [`Slots`], given back when dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    cluster: Option<String>,
}

impl Slots {
    /// Takes a slot for `who`, or says which limit is reached.
    pub fn take(self: &Arc<Self>, who: &Principal, max: usize) -> Result<Slot, Status> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.0 >= max {
            return Err(Status::resource_exhausted(format!(
                "the registry has {max} imports streams open, the --max-import-streams limit"
            )));
        }
        let cluster = match who {
            Principal::Cluster(name) => {
                let held = open.1.entry(name.clone()).or_default();
                if *held >= PER_CLUSTER {
                    return Err(Status::resource_exhausted(format!(
                        "{who} already holds {PER_CLUSTER} imports streams, the most one cluster may hold of --max-import-streams; close one first"
                    )));
                }
                *held += 1;
                Some(name.clone())
            }
            _ => None,
        };
        open.0 += 1;
        Ok(Slot {
            slots: self.clone(),
            cluster,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|e| e.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(name) = &self.cluster
            && let Some(held) = open.1.get_mut(name)
        {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.1.remove(name);
            }
        }
    }
}

/// The budget of one event, encoded: a quarter of the 4 MiB a tonic
/// client decodes by default, as Watch's parts ([`super::PART_BYTES`]).
pub const PART_BYTES: usize = super::PART_BYTES;
/// Events queued for one watcher.
const QUEUED: usize = 4;
/// Bytes kept for an event's own fields (`reset`, `more`).
const ENVELOPE: usize = 8;

type Sent = BTreeMap<ServiceKey, Arc<Resolved>>;

/// The events that turn `old` into `new`, built one part at a time as
/// the channel takes them: each at most [`PART_BYTES`] encoded (a service
/// bigger than that alone goes alone), `reset` on every part of a reset,
/// `more` on all but the last.
struct Parts<'a> {
    upserts: std::iter::Peekable<Box<dyn Iterator<Item = &'a Arc<Resolved>> + Send + 'a>>,
    removals: std::iter::Peekable<Box<dyn Iterator<Item = &'a ServiceKey> + Send + 'a>>,
    reset: bool,
    /// A reset is sent even when empty; a change only when it has items.
    pending_empty: bool,
}

impl<'a> Parts<'a> {
    fn new(old: &'a Sent, new: &'a Sent, reset: bool) -> Self {
        let upserts: Box<dyn Iterator<Item = &'a Arc<Resolved>> + Send + 'a> = Box::new(
            new.iter()
                .filter(move |(k, v)| old.get(*k).is_none_or(|o| !Arc::ptr_eq(o, v)))
                .map(|(_, v)| v),
        );
        let removals: Box<dyn Iterator<Item = &'a ServiceKey> + Send + 'a> =
            Box::new(old.keys().filter(move |k| !new.contains_key(*k)));
        Parts {
            upserts: upserts.peekable(),
            removals: removals.peekable(),
            reset,
            pending_empty: reset,
        }
    }
}

/// An item's cost in a part: its bytes, tag and length prefix.
fn item_len(len: usize) -> usize {
    1 + prost::length_delimiter_len(len) + len
}

impl Iterator for Parts<'_> {
    type Item = wire::ImportsEvent;

    fn next(&mut self) -> Option<wire::ImportsEvent> {
        if self.upserts.peek().is_none() && self.removals.peek().is_none() {
            return std::mem::take(&mut self.pending_empty).then(|| wire::ImportsEvent {
                reset: self.reset,
                ..Default::default()
            });
        }
        self.pending_empty = false;
        let mut part = wire::ImportsEvent {
            reset: self.reset,
            ..Default::default()
        };
        let mut used = ENVELOPE;
        while let Some(next) = self.upserts.peek() {
            let import = wire::ServiceImport::from(next.as_ref());
            let cost = item_len(prost::Message::encoded_len(&import));
            if used + cost > PART_BYTES && !(part.upserts.is_empty() && part.removals.is_empty()) {
                break;
            }
            self.upserts.next();
            used += cost;
            part.upserts.push(import);
        }
        while let Some(next) = self.removals.peek() {
            let key = wire::ServiceKey::from(*next);
            let cost = item_len(prost::Message::encoded_len(&key));
            if used + cost > PART_BYTES && !(part.upserts.is_empty() && part.removals.is_empty()) {
                break;
            }
            self.removals.next();
            used += cost;
            part.removals.push(key);
        }
        part.more = self.upserts.peek().is_some() || self.removals.peek().is_some();
        Some(part)
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
        // A cold view is not sent: its reset would delete what is not back.
        let warmed = tokio::select! {
            _ = tx.closed() => false,
            _ = shutdown.cancelled() => false,
            warm = imports.wait_for(|v| v.warm) => warm.is_ok(),
        };
        if !warmed {
            on_end();
            return;
        }
        let mut sent = Sent::new();
        let mut reset = true;
        loop {
            let view = imports.borrow_and_update().clone();
            for event in Parts::new(&sent, &view.services, reset) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::model::{ClusterName, Mode, Namespace, Port, Protocol, ServiceName};
    use std::num::NonZeroU16;

    /// A service exported by 50 clusters with 63-character names: some
    /// 4 KiB encoded.
    fn heavy(i: usize) -> (ServiceKey, Arc<Resolved>) {
        let key = ServiceKey {
            namespace: Namespace::new("shop").unwrap(),
            name: ServiceName::new(&format!("svc-{i}")).unwrap(),
        };
        let clusters = (0..50)
            .map(|c| {
                let name = format!("{c:02}-{}", "c".repeat(60));
                (ClusterName::new(&name).unwrap(), 1)
            })
            .collect();
        let resolved = Resolved {
            key: key.clone(),
            ports: vec![Port {
                name: None,
                protocol: Protocol::Tcp,
                port: NonZeroU16::new(80).unwrap(),
            }],
            mode: Mode::Endpoints,
            clusters,
            conflicts: vec![],
        };
        (key, Arc::new(resolved))
    }

    #[test]
    fn a_cluster_holds_at_most_its_share_of_the_pool() {
        let slots = Arc::new(Slots::default());
        let east = Principal::Cluster("east-1".into());
        let west = Principal::Cluster("west-1".into());
        let held: Vec<Slot> = (0..PER_CLUSTER)
            .map(|_| slots.take(&east, 10).unwrap())
            .collect();
        let refused = slots.take(&east, 10).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("--max-import-streams"),
            "{refused:?}"
        );
        // Others still have room; the pool's own limit holds for all.
        let w = slots.take(&west, 10).unwrap();
        let full = slots.take(&Principal::Reader("tool".into()), 3);
        assert!(full.is_err(), "a pool of 3 with 3 held");
        drop(w);
        drop(held);
        // Given back: the cluster may open again.
        assert!(slots.take(&east, 10).is_ok());
    }

    #[test]
    fn parts_are_capped_by_bytes_and_carry_everything() {
        let view: Sent = (0..1_000).map(heavy).collect();
        let parts: Vec<_> = Parts::new(&Sent::new(), &view, true).collect();
        assert!(parts.len() > 2, "{} parts", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert!(part.reset);
            assert_eq!(part.more, i + 1 < parts.len());
            let len = prost::Message::encoded_len(part);
            assert!(len <= PART_BYTES, "part {i}: {len} bytes");
        }
        let sent: usize = parts.iter().map(|p| p.upserts.len()).sum();
        assert_eq!(sent, 1_000);
        // Removing them all: removals only, in parts too.
        let parts: Vec<_> = Parts::new(&view, &Sent::new(), false).collect();
        let removed: usize = parts.iter().map(|p| p.removals.len()).sum();
        assert_eq!(removed, 1_000);
        assert!(parts.iter().all(|p| !p.reset && p.upserts.is_empty()));
        // No change, no event; an empty reset is one event.
        assert_eq!(Parts::new(&view, &view, false).count(), 0);
        let empty: Vec<_> = Parts::new(&Sent::new(), &Sent::new(), true).collect();
        assert_eq!(empty.len(), 1);
        assert!(empty[0].reset && !empty[0].more);
    }
}
