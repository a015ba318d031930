//! Every version of every service a registry applied, read from its Watch
//! stream (which carries each change, not a sample): an atomicity check
//! reads this instead of polling DNS, so a state that was published for a
//! millisecond is seen as surely as one that stayed.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use meshdns_proto::wire::{self, watch_event::Event};
use tokio_stream::StreamExt;

/// One version of a service as applied: its ready addresses, sorted;
/// `None` when it was removed.
pub type Version = Option<Vec<String>>;

/// The versions of each `namespace/name`, in the order they were applied.
#[derive(Debug, Clone, Default)]
pub struct History(Arc<Mutex<BTreeMap<String, Vec<Version>>>>);

fn ready(service: &wire::ServiceExport) -> (String, Vec<String>) {
    let key = service
        .key
        .as_ref()
        .map(|k| format!("{}/{}", k.namespace, k.name))
        .unwrap_or_default();
    let mut addresses: Vec<String> = service
        .endpoints
        .iter()
        .filter(|e| e.ready)
        .flat_map(|e| e.addresses.iter().cloned())
        .collect();
    addresses.sort();
    (key, addresses)
}

impl History {
    /// Follows the registry at `url` (plaintext, no credentials) until it
    /// ends; returns once the first state (the Reset) has been read.
    pub async fn follow(url: String) -> History {
        let history = History::default();
        let mut client = wire::registry_client::RegistryClient::connect(url)
            .await
            .expect("connect to Watch");
        let mut stream = client
            .watch(wire::WatchRequest {})
            .await
            .expect("Watch")
            .into_inner();
        let (first_tx, first_rx) = tokio::sync::oneshot::channel();
        let versions = history.0.clone();
        tokio::spawn(async move {
            let mut first = Some(first_tx);
            let mut pending: Vec<wire::ServicesChanged> = Vec::new();
            while let Some(Ok(event)) = stream.next().await {
                let mut record = |service: &wire::ServiceExport| {
                    let (key, addresses) = ready(service);
                    versions
                        .lock()
                        .unwrap()
                        .entry(key)
                        .or_default()
                        .push(Some(addresses));
                };
                match event.event {
                    Some(Event::Reset(reset)) => {
                        for c in &reset.clusters {
                            c.services.iter().for_each(&mut record);
                        }
                        if !reset.more
                            && let Some(tx) = first.take()
                        {
                            let _ = tx.send(());
                        }
                    }
                    Some(Event::Services(change)) => {
                        let more = change.more;
                        pending.push(change);
                        if more {
                            continue;
                        }
                        for change in pending.drain(..) {
                            change.upserts.iter().for_each(&mut record);
                            for k in &change.removals {
                                versions
                                    .lock()
                                    .unwrap()
                                    .entry(format!("{}/{}", k.namespace, k.name))
                                    .or_default()
                                    .push(None);
                            }
                        }
                    }
                    _ => {}
                }
            }
        });
        let _ = first_rx.await;
        history
    }

    /// The versions of `namespace/name` applied so far.
    pub fn versions(&self, key: &str) -> Vec<Version> {
        self.0.lock().unwrap().get(key).cloned().unwrap_or_default()
    }
}
