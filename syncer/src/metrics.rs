//! The syncer's Prometheus metrics, served on the admin endpoint's
//! `/metrics`: watcher failures by reason, which watchers have listed and
//! which are unavailable, and what is exported (read at scrape time).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    watcher: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatcherLabels {
    watcher: &'static str,
}

/// The syncer's metrics; cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    watch_failures: Family<FailureLabels, Counter>,
    synced: Family<WatcherLabels, Gauge>,
    unavailable: Family<WatcherLabels, Gauge>,
    exported_services: Gauge,
    exported_endpoints: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("meshdns_syncer");
        let watch_failures = Family::<FailureLabels, Counter>::default();
        registry.register(
            "watch_failures",
            "Kubernetes watcher failures, by watcher and reason (not_served, forbidden, unauthorized, expired, other)",
            watch_failures.clone(),
        );
        let synced = Family::<WatcherLabels, Gauge>::default();
        registry.register(
            "watcher_synced",
            "1 once the watcher has listed its resource",
            synced.clone(),
        );
        let unavailable = Family::<WatcherLabels, Gauge>::default();
        registry.register(
            "watcher_unavailable",
            "1 while an optional watcher cannot list (its API not served, or forbidden) and exports go ahead without it",
            unavailable.clone(),
        );
        let exported_services = Gauge::default();
        registry.register(
            "exported_services",
            "Services in the export set",
            exported_services.clone(),
        );
        let exported_endpoints = Gauge::default();
        registry.register(
            "exported_endpoints",
            "Endpoints in the export set",
            exported_endpoints.clone(),
        );
        Metrics {
            registry,
            watch_failures,
            synced,
            unavailable,
            exported_services,
            exported_endpoints,
        }
    }

    /// A watcher starts: its gauges exist (at 0) from the first scrape.
    pub fn watcher(&self, watcher: &'static str) {
        self.synced.get_or_create(&WatcherLabels { watcher }).set(0);
        self.unavailable
            .get_or_create(&WatcherLabels { watcher })
            .set(0);
    }

    pub fn watch_failed(&self, watcher: &'static str, reason: &'static str) {
        self.watch_failures
            .get_or_create(&FailureLabels { watcher, reason })
            .inc();
    }

    pub fn set_synced(&self, watcher: &'static str) {
        self.synced.get_or_create(&WatcherLabels { watcher }).set(1);
    }

    pub fn set_unavailable(&self, watcher: &'static str, unavailable: bool) {
        self.unavailable
            .get_or_create(&WatcherLabels { watcher })
            .set(i64::from(unavailable));
    }

    pub fn set_exported(&self, services: usize, endpoints: usize) {
        self.exported_services
            .set(i64::try_from(services).unwrap_or(i64::MAX));
        self.exported_endpoints
            .set(i64::try_from(endpoints).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
