//! What the cluster holds now, as a watch keeps it: the MCS writers
//! compare what they want with this before writing, so a relist that
//! changes nothing writes nothing. A relist (`Init` .. `InitDone`) is
//! buffered and swapped in one step; `ready` once the first list is in.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// (namespace, name); the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

pub fn key_of<K: ResourceExt>(obj: &K) -> Key {
    (obj.namespace().unwrap_or_default(), obj.name_any())
}

struct Inner<K> {
    live: BTreeMap<Key, K>,
    buffer: Option<BTreeMap<Key, K>>,
    ready: bool,
}

/// A watched kind's live objects.
pub struct Observed<K> {
    inner: Arc<Mutex<Inner<K>>>,
}

impl<K> std::fmt::Debug for Observed<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

impl<K> Clone for Observed<K> {
    fn clone(&self) -> Self {
        Observed {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Clone> Observed<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<K>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Listed at least once.
    pub fn ready(&self) -> bool {
        self.lock().ready
    }

    pub fn get(&self, key: &Key) -> Option<K> {
        self.lock().live.get(key).cloned()
    }

    pub fn all(&self) -> BTreeMap<Key, K> {
        self.lock().live.clone()
    }

    /// Takes what a write returned, before its watch event comes.
    pub fn wrote(&self, key: Key, obj: Option<K>) {
        let mut inner = self.lock();
        match obj {
            Some(obj) => inner.live.insert(key, obj),
            None => inner.live.remove(&key),
        };
    }
}

/// Watches `api` with `config`; `notify` wakes the writers on each change.
pub fn watch<K>(
    api: Api<K>,
    config: watcher::Config,
    what: &'static str,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) -> Observed<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let observed = Observed {
        inner: Arc::new(Mutex::new(Inner {
            live: BTreeMap::new(),
            buffer: None,
            ready: false,
        })),
    };
    let state = observed.clone();
    tokio::spawn(async move {
        let mut stream = Box::pin(watcher::watcher(api, config).default_backoff());
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = stream.next() => match e {
                    Some(e) => e,
                    None => return,
                },
            };
            let mut inner = state.lock();
            match event {
                Ok(Event::Init) => inner.buffer = Some(BTreeMap::new()),
                Ok(Event::InitApply(obj)) => {
                    inner
                        .buffer
                        .get_or_insert_with(BTreeMap::new)
                        .insert(key_of(&obj), obj);
                }
                Ok(Event::InitDone) => {
                    inner.live = inner.buffer.take().unwrap_or_default();
                    inner.ready = true;
                }
                Ok(Event::Apply(obj)) => {
                    inner.live.insert(key_of(&obj), obj);
                }
                Ok(Event::Delete(obj)) => {
                    inner.live.remove(&key_of(&obj));
                }
                Err(e) => {
                    drop(inner);
                    warn!(kind = what, error = %e, "mcs writers: watch failed; retrying");
                    continue;
                }
            }
            drop(inner);
            notify.notify_one();
        }
    });
    observed
}
