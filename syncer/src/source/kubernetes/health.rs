//! What `/readyz`, `/status` and `/metrics` report about the Kubernetes
//! source: which watchers have listed, which are failing and why, which
//! optional ones are unavailable, and services with problems.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::failure::WatchFailure;
use crate::metrics::Metrics;

/// The source's health, as `/status` shows it.
#[derive(Debug, Default, Serialize)]
pub struct HealthState {
    /// Every watcher the source runs.
    pub watchers: BTreeSet<&'static str>,
    /// Watchers whose absence blocks only what they add (ServiceExports:
    /// the Services they name; Nodes: client CIDRs and topology).
    pub optional: BTreeSet<&'static str>,
    /// Watchers that have listed at least once.
    pub synced: BTreeSet<&'static str>,
    /// Watchers whose last attempt failed, with the error.
    pub degraded: BTreeMap<&'static str, String>,
    /// Optional watchers that never listed and fail in a way that lasts
    /// (API not served, forbidden): exports go ahead without them, and
    /// they are retried with backoff.
    pub unavailable: BTreeMap<&'static str, String>,
    /// Services exported with defaults because of bad annotations, or not
    /// exported because they are invalid: `namespace/name` -> problems.
    pub problems: BTreeMap<String, Vec<String>>,
    pub exported_services: usize,
    pub exported_endpoints: usize,
}

impl HealthState {
    /// Whether a complete export set can be published: every watcher has
    /// listed, or is optional and unavailable.
    pub fn publishable(&self) -> bool {
        self.watchers
            .iter()
            .all(|w| self.synced.contains(w) || self.unavailable.contains_key(w))
    }
}

/// Shared source health, and the metrics that mirror it.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<HealthState>,
    metrics: Arc<Metrics>,
}

impl Health {
    /// Health of a source running `watchers`, `optional` among them.
    pub fn new(
        watchers: BTreeSet<&'static str>,
        optional: BTreeSet<&'static str>,
        metrics: Arc<Metrics>,
    ) -> Self {
        for w in &watchers {
            metrics.watcher(w);
        }
        Health {
            state: Mutex::new(HealthState {
                watchers,
                optional,
                ..HealthState::default()
            }),
            metrics,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut HealthState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A watcher failed; whether this made the set publishable (an
    /// optional watcher found unavailable before it ever listed).
    pub fn failed(&self, watcher: &'static str, failure: &WatchFailure) -> bool {
        self.metrics.watch_failed(watcher, failure.reason());
        if *failure == WatchFailure::Expired {
            // kube-runtime relists at once: not a degradation.
            return false;
        }
        self.with(|h| {
            h.degraded.insert(watcher, failure.to_string());
            let unavailable =
                !h.synced.contains(watcher) && h.optional.contains(watcher) && failure.is_lasting();
            if !unavailable {
                return false;
            }
            let before = h.publishable();
            h.unavailable.insert(watcher, failure.to_string());
            self.metrics.set_unavailable(watcher, true);
            !before && h.publishable()
        })
    }

    /// A watcher listed: synced, available, not degraded.
    pub fn listed(&self, watcher: &'static str) {
        self.with(|h| {
            h.synced.insert(watcher);
            h.degraded.remove(watcher);
            h.unavailable.remove(watcher);
        });
        self.metrics.set_synced(watcher);
        self.metrics.set_unavailable(watcher, false);
    }

    /// A watcher saw an event or reached the API server again.
    pub fn working(&self, watcher: &'static str) {
        self.with(|h| {
            // An unavailable watcher stays so until it lists.
            if !h.unavailable.contains_key(watcher) {
                h.degraded.remove(watcher);
            }
        });
    }

    /// Ready (with notes on what is unavailable), or why not: a watcher
    /// still to list (with its last error), or one failing now.
    pub fn ready(&self) -> Result<Vec<String>, String> {
        self.with(|h| {
            let missing: Vec<String> = h
                .watchers
                .iter()
                .filter(|w| !h.synced.contains(*w) && !h.unavailable.contains_key(*w))
                .map(|w| match h.degraded.get(w) {
                    Some(e) => format!("{w} ({e})"),
                    None => w.to_string(),
                })
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "waiting for the first list of {}",
                    missing.join(", ")
                ));
            }
            let failing: Vec<String> = h
                .degraded
                .iter()
                .filter(|(w, _)| !h.unavailable.contains_key(*w))
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            if !failing.is_empty() {
                return Err(format!(
                    "degraded, serving the last known state: {}",
                    failing.join("; ")
                ));
            }
            Ok(h.unavailable
                .iter()
                .map(|(w, e)| format!("{w} unavailable, exporting without it: {e}"))
                .collect())
        })
    }

    pub fn json(&self) -> serde_json::Value {
        self.with(|h| serde_json::to_value(&*h).unwrap_or_default())
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health::new(
            ["services", "endpointslices", "serviceexports"].into(),
            ["serviceexports"].into(),
            Arc::new(Metrics::new()),
        )
    }

    fn not_served() -> WatchFailure {
        WatchFailure::NotServed {
            plural: "serviceexports",
            api_version: "multicluster.x-k8s.io/v1alpha1".into(),
        }
    }

    #[test]
    fn an_optional_watcher_unavailable_blocks_nothing_else() {
        let h = health();
        h.listed("services");
        assert!(!h.failed("serviceexports", &not_served()), "still waiting");
        assert!(!h.with(|s| s.publishable()));
        h.listed("endpointslices");
        let ready = h.ready().expect("ready without the optional watcher");
        assert_eq!(ready.len(), 1);
        assert!(
            ready[0].starts_with("serviceexports unavailable"),
            "{ready:?}"
        );
        assert!(h.with(|s| s.publishable()));
        // It lists later: available again.
        h.listed("serviceexports");
        assert_eq!(h.ready(), Ok(vec![]));
        let text = h.metrics().encode();
        assert!(
            text.contains(
                "meshdns_syncer_watch_failures_total{watcher=\"serviceexports\",reason=\"not_served\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_required_watcher_blocks_and_says_why() {
        let h = health();
        h.listed("endpointslices");
        h.listed("serviceexports");
        let forbidden = WatchFailure::Forbidden {
            verb: "list",
            plural: "services",
            group: "",
        };
        assert!(!h.failed("services", &forbidden));
        assert!(!h.with(|s| s.publishable()));
        let why = h.ready().unwrap_err();
        assert!(why.contains("may not list services"), "{why}");
        // A lasting failure after the first list is a degradation.
        assert!(!h.failed("serviceexports", &not_served()));
        h.listed("services");
        assert!(h.ready().unwrap_err().starts_with("degraded"));
    }
}
