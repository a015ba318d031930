//! Writes to the cluster's API server, one token each from the
//! `--mcs-writes-per-second` bucket, counted. Every update carries the
//! resourceVersion it was computed from (optimistic concurrency): a 409
//! means someone wrote in between, and the writers compute again from the
//! fresh object on their next pass ([`Outcome::Conflict`]). A write that
//! fails otherwise (403, 422, a Terminating namespace) backs off per
//! object, from [`BACKOFF_MIN`] doubling to [`BACKOFF_MAX`]: until then
//! the same write is not sent again ([`Outcome::Failed`] at once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{DeleteParams, PostParams, Preconditions};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;
use tracing::warn;

use super::metrics::McsMetrics;
use super::rate::Bucket;

/// The field manager our writes are recorded under.
pub const FIELD_MANAGER: &str = "meshdns-syncer";

/// How a write went.
#[derive(Debug)]
pub enum Outcome<K> {
    Done(K),
    /// Deleted (or already gone).
    Gone,
    /// 409: the object changed since it was read (or already exists);
    /// try again from a fresh read.
    Conflict,
    /// Anything else: logged; tried again on a later pass.
    Failed,
}

/// A failed write waits at least this long before it is sent again.
pub const BACKOFF_MIN: Duration = Duration::from_millis(500);
/// And at most this long.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Backoffs remembered at most (the oldest are forgotten first).
const BACKOFF_KEYS: usize = 10_000;

/// Rate-limited, counted writes.
#[derive(Debug, Clone)]
pub struct Writes {
    bucket: Arc<Mutex<Bucket>>,
    metrics: McsMetrics,
    /// By object (its URL and verb): the next try, and the delay after it.
    backoff: Arc<std::sync::Mutex<HashMap<String, (Instant, Duration)>>>,
}

fn params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.into()),
    }
}

fn outcome<K>(what: &str, name: &str, result: Result<K, kube::Error>) -> Outcome<K> {
    match result {
        Ok(obj) => Outcome::Done(obj),
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => Outcome::Conflict,
        Err(kube::Error::Api(s)) if s.is_not_found() => Outcome::Gone,
        Err(e) => {
            warn!(what, name, error = %e, "mcs write failed; it is tried again later");
            Outcome::Failed
        }
    }
}

impl Writes {
    pub fn new(rate: f64, burst: u32, metrics: McsMetrics) -> Self {
        Writes {
            bucket: Arc::new(Mutex::new(Bucket::new(rate, burst))),
            metrics,
            backoff: Arc::default(),
        }
    }

    fn key<K: Resource>(api: &Api<K>, verb: &str, name: &str) -> String {
        format!("{verb} {}/{name}", api.resource_url())
    }

    /// Is the write still backing off from a failure?
    fn backing_off(&self, key: &str) -> bool {
        let backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        backoff
            .get(key)
            .is_some_and(|(next, _)| Instant::now() < *next)
    }

    /// Remembers how the write went: a failure doubles its delay, anything
    /// else forgets it.
    fn settle<K>(&self, key: String, outcome: &Outcome<K>) {
        let mut backoff = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(outcome, Outcome::Failed) {
            backoff.remove(&key);
            return;
        }
        if backoff.len() >= BACKOFF_KEYS && !backoff.contains_key(&key) {
            let oldest = backoff
                .iter()
                .min_by_key(|(_, (next, _))| *next)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                backoff.remove(&k);
            }
        }
        let delay = backoff
            .get(&key)
            .map_or(BACKOFF_MIN, |(_, d)| (*d * 2).min(BACKOFF_MAX));
        backoff.insert(key, (Instant::now() + delay, delay));
    }

    /// Waits for a token; counts the write by verb and resource.
    async fn token<K: Resource>(&self, api: &Api<K>, verb: &'static str) {
        self.bucket.lock().await.take().await;
        let url = api.resource_url();
        self.metrics
            .wrote(verb, url.rsplit('/').next().unwrap_or(url));
    }

    pub async fn create<K>(&self, api: &Api<K>, obj: &K) -> Outcome<K>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let key = Self::key(api, "create", &name);
        if self.backing_off(&key) {
            return Outcome::Failed;
        }
        self.token(api, "create").await;
        let done = outcome("create", &name, api.create(&params(), obj).await);
        self.settle(key, &done);
        done
    }

    /// PUT with `obj`'s resourceVersion.
    pub async fn replace<K>(&self, api: &Api<K>, obj: &K) -> Outcome<K>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let key = Self::key(api, "update", &name);
        if self.backing_off(&key) {
            return Outcome::Failed;
        }
        self.token(api, "update").await;
        let done = outcome("update", &name, api.replace(&name, &params(), obj).await);
        self.settle(key, &done);
        done
    }

    /// PUT to the status subresource with `obj`'s resourceVersion.
    pub async fn replace_status<K>(&self, api: &Api<K>, obj: &K) -> Outcome<K>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        let name = obj.meta().name.clone().unwrap_or_default();
        let key = Self::key(api, "update_status", &name);
        if self.backing_off(&key) {
            return Outcome::Failed;
        }
        self.token(api, "update_status").await;
        let done = outcome(
            "update status",
            &name,
            api.replace_status(&name, &params(), obj).await,
        );
        self.settle(key, &done);
        done
    }

    /// DELETE, only if the object is still at `resource_version`.
    pub async fn delete<K>(
        &self,
        api: &Api<K>,
        name: &str,
        resource_version: Option<String>,
    ) -> Outcome<K>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let key = Self::key(api, "delete", name);
        if self.backing_off(&key) {
            return Outcome::Failed;
        }
        self.token(api, "delete").await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version,
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let done = match outcome("delete", name, api.delete(name, &dp).await) {
            Outcome::Done(_) | Outcome::Gone => Outcome::Gone,
            Outcome::Conflict => Outcome::Conflict,
            Outcome::Failed => Outcome::Failed,
        };
        self.settle(key, &done);
        done
    }
}
