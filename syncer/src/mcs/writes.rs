//! Writes to the cluster's API server, one token each from the
//! `--mcs-writes-per-second` bucket, counted. Every update carries the
//! resourceVersion it was computed from (optimistic concurrency): a 409
//! means someone wrote in between, and the writers compute again from the
//! fresh object on their next pass ([`Outcome::Conflict`]).

use std::sync::Arc;

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

/// Rate-limited, counted writes.
#[derive(Debug, Clone)]
pub struct Writes {
    bucket: Arc<Mutex<Bucket>>,
    metrics: McsMetrics,
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
        }
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
        self.token(api, "create").await;
        let name = obj.meta().name.clone().unwrap_or_default();
        outcome("create", &name, api.create(&params(), obj).await)
    }

    /// PUT with `obj`'s resourceVersion.
    pub async fn replace<K>(&self, api: &Api<K>, obj: &K) -> Outcome<K>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        self.token(api, "update").await;
        let name = obj.meta().name.clone().unwrap_or_default();
        outcome("update", &name, api.replace(&name, &params(), obj).await)
    }

    /// PUT to the status subresource with `obj`'s resourceVersion.
    pub async fn replace_status<K>(&self, api: &Api<K>, obj: &K) -> Outcome<K>
    where
        K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    {
        self.token(api, "update_status").await;
        let name = obj.meta().name.clone().unwrap_or_default();
        outcome(
            "update status",
            &name,
            api.replace_status(&name, &params(), obj).await,
        )
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
        self.token(api, "delete").await;
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version,
                uid: None,
            }),
            ..DeleteParams::default()
        };
        match outcome("delete", name, api.delete(name, &dp).await) {
            Outcome::Done(_) | Outcome::Gone => Outcome::Gone,
            Outcome::Conflict => Outcome::Conflict,
            Outcome::Failed => Outcome::Failed,
        }
    }
}
