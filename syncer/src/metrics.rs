//! The syncer's Prometheus metrics, served on the admin endpoint's
//! `/metrics`: watcher failures by reason, which watchers have listed and
//! which are unavailable, what is exported, the running version and when
//! the client certificate expires (the last two as the hub names them:
//! `meshdns_build_info`, `meshdns_tls_certificate_expiry_timestamp_seconds`;
//! exports and expiry read at scrape time, so a rotated certificate shows
//! without a restart).

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

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    /// `passed` or `failed`.
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    /// The HTTP status code of the registration API's answer.
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
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
    certificate_expiry: Family<CertificateLabels, Gauge>,
    /// `--mcs-status` writers (src/mcs/metrics.rs).
    pub mcs: crate::mcs::metrics::McsMetrics,
    /// Health checks and registrations (issue 17).
    pub vms: VmMetrics,
}

/// The health checker's and the registration API's figures.
#[derive(Debug, Default)]
pub struct VmMetrics {
    checks: Family<CheckLabels, Counter>,
    flaps: Counter,
    checked_targets: Gauge,
    unchecked_targets: Gauge,
    registrations: Gauge,
    lapsed: Counter,
    requests: Family<RequestLabels, Counter>,
    rate_limited: Counter,
}

impl VmMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "health_checks",
            "Health checks run, by result (passed, failed)",
            self.checks.clone(),
        );
        registry.register(
            "health_check_flaps",
            "Endpoints whose check verdict changed (passing to failing or back)",
            self.flaps.clone(),
        );
        registry.register(
            "health_check_targets",
            "Endpoints being health-checked",
            self.checked_targets.clone(),
        );
        registry.register(
            "health_check_targets_unchecked",
            "Endpoints of checked services left unchecked by --max-health-checks",
            self.unchecked_targets.clone(),
        );
        registry.register(
            "registrations",
            "Live instance registrations",
            self.registrations.clone(),
        );
        registry.register(
            "registration_heartbeats_lapsed",
            "Registrations withdrawn because their TTL passed without a heartbeat",
            self.lapsed.clone(),
        );
        registry.register(
            "registration_requests",
            "Registration API requests, by HTTP status code",
            self.requests.clone(),
        );
        registry.register(
            "registration_rate_limited",
            "Registration API requests refused by the per-client rate limit",
            self.rate_limited.clone(),
        );
    }

    pub fn check_ran(&self, passed: bool) {
        let result = if passed { "passed" } else { "failed" };
        self.checks.get_or_create(&CheckLabels { result }).inc();
    }

    pub fn flapped(&self) {
        self.flaps.inc();
    }

    pub fn set_targets(&self, checked: usize, unchecked: usize) {
        self.checked_targets
            .set(i64::try_from(checked).unwrap_or(i64::MAX));
        self.unchecked_targets
            .set(i64::try_from(unchecked).unwrap_or(i64::MAX));
    }

    pub fn set_registrations(&self, count: usize) {
        self.registrations
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn lapsed(&self, count: usize) {
        self.lapsed.inc_by(count as u64);
    }

    pub fn answered(&self, code: u16) {
        self.requests.get_or_create(&RequestLabels { code }).inc();
    }

    pub fn rate_limited(&self) {
        self.rate_limited.inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut top = Registry::with_prefix("meshdns");
        let build_info = Family::<VersionLabels, Gauge>::default();
        build_info
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        top.register("build_info", "The running version (value 1)", build_info);
        let certificate_expiry = Family::<CertificateLabels, Gauge>::default();
        top.register(
            "tls_certificate_expiry_timestamp_seconds",
            "notAfter of a TLS certificate this process uses, as a Unix time (certificate: client)",
            certificate_expiry.clone(),
        );
        let registry = top.sub_registry_with_prefix("syncer");
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
        let mcs = crate::mcs::metrics::McsMetrics::register(registry);
        let vms = VmMetrics::default();
        vms.register(registry);
        Metrics {
            mcs,
            vms,
            registry: top,
            watch_failures,
            synced,
            unavailable,
            exported_services,
            exported_endpoints,
            certificate_expiry,
        }
    }

    /// Reads the client certificate's notAfter (at scrape time, so a
    /// rotated file shows at once); an unreadable file leaves no figure.
    pub fn read_client_certificate(&self, path: &std::path::Path) {
        let labels = CertificateLabels {
            certificate: "client",
        };
        match meshdns_proto::certificate::file_not_after(path) {
            Ok(not_after) => {
                self.certificate_expiry
                    .get_or_create(&labels)
                    .set(not_after);
            }
            Err(e) => {
                tracing::debug!(error = %e, "client certificate expiry unreadable");
                self.certificate_expiry.remove(&labels);
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_the_hub_and_the_rules_use_them() {
        let metrics = Metrics::new();
        metrics.watcher("services");
        metrics.set_exported(3, 7);
        let text = metrics.encode();
        for line in [
            "meshdns_build_info{version=\"",
            "meshdns_syncer_exported_services 3",
            "meshdns_syncer_exported_endpoints 7",
            "meshdns_syncer_watcher_synced{watcher=\"services\"} 0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("expiry_timestamp_seconds{"), "{text}");
        metrics.read_client_certificate(std::path::Path::new("/nonexistent"));
        assert!(!metrics.encode().contains("expiry_timestamp_seconds{"));
    }
}
