//! The MCS writers' metrics: `meshdns_syncer_mcs_writes_total` (by verb
//! and resource: what `--mcs-writes-per-second` bounds) and
//! `meshdns_syncer_mcs_registry_up` (1 while the clusterset's view is
//! streaming; 0 during an outage).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    verb: &'static str,
    resource: String,
}

#[derive(Debug, Clone, Default)]
pub struct McsMetrics {
    writes: Family<WriteLabels, Counter>,
    registry_up: Gauge,
}

impl McsMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = McsMetrics::default();
        registry.register(
            "mcs_writes",
            "Writes to this cluster's API server by --mcs-status (verb: create, update, update_status, delete; resource)",
            m.writes.clone(),
        );
        registry.register(
            "mcs_registry_up",
            "1 while the registry's view of the clusterset streams (--mcs-status), 0 during an outage",
            m.registry_up.clone(),
        );
        m
    }

    pub fn wrote(&self, verb: &'static str, resource: &str) {
        let resource = resource.to_owned();
        self.writes
            .get_or_create(&WriteLabels { verb, resource })
            .inc();
    }

    pub fn registry_up(&self, up: bool) {
        self.registry_up.set(i64::from(up));
    }
}
