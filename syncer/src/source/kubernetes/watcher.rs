//! One watcher task per kind of object: kube-runtime's watcher with its
//! default backoff, each object reduced ([`super::objects`]) and sent to
//! the state task as an [`Update`]; failures classified ([`WatchFailure`])
//! and, after an outage, probed for its end.

use std::time::Duration;

use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::objects::{Key, NodeObj, SliceObj, SvcObj};
use super::relist::Update;
use super::{Resource, WatchFailure};

/// A watcher's update, by kind.
pub(super) enum Msg {
    Services(Update<SvcObj>),
    Slices(Update<SliceObj>),
    Nodes(Update<NodeObj>),
    Namespaces(Update<String>),
    Exports(Update<Key>),
}

pub(super) fn key_of<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Runs one watcher, reducing its objects with `reduce` and sending them.
pub(super) fn spawn_watcher<K, T>(
    resource: Resource,
    api: Api<K>,
    config: watcher::Config,
    reduce: impl Fn(&K) -> T + Send + 'static,
    wrap: impl Fn(Update<T>) -> Msg + Send + 'static,
    tx: mpsc::Sender<Msg>,
    shutdown: CancellationToken,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    T: Send + 'static,
{
    let name = resource.plural;
    tokio::spawn(async move {
        let mut stream = Box::pin(watcher::watcher(api.clone(), config).default_backoff());
        let (mut failing, mut listed) = (false, false);
        let mut probe = tokio::time::interval(Duration::from_secs(1));
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => return,
                item = stream.next() => item,
                // Only a watcher that has listed resumes silently; one that
                // never did reports its next attempt itself (kube-runtime's
                // backoff, up to 30 s, so a missing API is not hammered).
                _ = probe.tick(), if failing && listed => {
                    // A resumed watch says nothing until something changes:
                    // ask the same resource, with the same rights, directly.
                    if api.list_metadata(&kube::api::ListParams::default().limit(1)).await.is_ok() {
                        failing = false;
                        info!(watcher = name, "API server reachable again");
                        if tx.send(wrap(Update::Recovered)).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            failing = false;
            let update = match item {
                None => return,
                Some(Ok(Event::Init)) => Update::Init,
                Some(Ok(Event::InitApply(obj))) => Update::InitApply(reduce(&obj)),
                Some(Ok(Event::InitDone)) => {
                    listed = true;
                    Update::InitDone
                }
                Some(Ok(Event::Apply(obj))) => Update::Apply(reduce(&obj)),
                Some(Ok(Event::Delete(obj))) => Update::Delete(key_of(&obj)),
                Some(Err(e)) => {
                    let failure = WatchFailure::classify(&resource, &e);
                    // An outage is probed for its end; a refusal (403, 404)
                    // is not: a probe by LIST would pass where WATCH fails.
                    failing = !failure.is_lasting();
                    match &failure {
                        WatchFailure::Expired => {
                            info!(watcher = name, "watch expired (410); relisting");
                        }
                        WatchFailure::NotServed { .. } | WatchFailure::Forbidden { .. }
                            if !listed =>
                        {
                            warn!(watcher = name, problem = %failure, "watcher cannot list; retrying with backoff");
                        }
                        _ => {
                            warn!(watcher = name, error = %failure, "watch failed; retrying with backoff, serving the last known state");
                        }
                    }
                    Update::Failed(failure)
                }
            };
            if tx.send(wrap(update)).await.is_err() {
                return;
            }
        }
    });
}
