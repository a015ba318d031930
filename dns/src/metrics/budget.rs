//! The Export byte budget ([`crate::ingest`]'s `budget.rs`) as metrics:
//! `meshdns_export_bytes_reserved` (bytes of Export messages reserved
//! now, at most `--max-export-bytes-in-flight`), and how often and how
//! long streams waited for their reservation.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry as PromRegistry;

/// Atomics, shared by every Export stream.
#[derive(Debug, Clone, Default)]
pub struct BudgetMetrics {
    /// Bytes reserved now.
    pub reserved: Gauge,
    /// Messages whose reservation could not be had at once.
    pub waits: Counter,
    /// Seconds those messages waited, summed.
    pub wait_seconds: Counter<f64, AtomicU64>,
}

impl BudgetMetrics {
    pub fn register(registry: &mut PromRegistry) -> Self {
        let metrics = BudgetMetrics::default();
        registry.register(
            "export_bytes_reserved",
            "Bytes of Export messages being received now, reserved from --max-export-bytes-in-flight when each message's header arrived",
            metrics.reserved.clone(),
        );
        registry.register(
            "export_budget_waits",
            "Export messages whose bytes could not be reserved at once (--max-export-bytes-in-flight was taken): the stream stopped reading until they could",
            metrics.waits.clone(),
        );
        registry.register(
            "export_budget_wait_seconds",
            "Time Export messages waited for their reservation from --max-export-bytes-in-flight, summed",
            metrics.wait_seconds.clone(),
        );
        metrics
    }
}
