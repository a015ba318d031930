//! The clusterset's conflicts ([`crate::registry::conflicts`]) as gauges:
//! `meshdns_service_conflicts` (exports whose ports or mode disagree with
//! the resolved service, by field) and `meshdns_service_imports`
//! (services in the clusterset's view).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as PromRegistry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FieldLabels {
    field: &'static str,
}

/// The fields a conflict can name.
pub const CONFLICT_FIELDS: [&str; 2] = ["ports", "mode"];

/// Gauges set by the imports task after each change it resolves.
#[derive(Debug, Clone, Default)]
pub struct ConflictGauges {
    conflicts: Family<FieldLabels, Gauge>,
    imports: Gauge,
}

impl ConflictGauges {
    pub fn register(registry: &mut PromRegistry) -> Self {
        let gauges = ConflictGauges::default();
        registry.register(
            "service_conflicts",
            "Exports whose value of a field (ports, mode) differs from the clusterset's resolved one (the oldest export's)",
            gauges.conflicts.clone(),
        );
        registry.register(
            "service_imports",
            "Services in the clusterset's view (ServiceImports the syncers keep)",
            gauges.imports.clone(),
        );
        for field in CONFLICT_FIELDS {
            let _ = gauges.conflicts.get_or_create(&FieldLabels { field });
        }
        gauges
    }

    /// Sets the gauges: `conflicts` per field, `imports` services.
    pub fn set(&self, conflicts: [usize; 2], imports: usize) {
        for (field, count) in CONFLICT_FIELDS.iter().zip(conflicts) {
            self.conflicts
                .get_or_create(&FieldLabels { field })
                .set(count as i64);
        }
        self.imports.set(imports as i64);
    }
}
