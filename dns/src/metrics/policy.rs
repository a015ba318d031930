//! The traffic policy as metrics: `meshdns_policy_reloads_total{result}`
//! (the policy file read after a change: ok, or error and the last good
//! one kept), `meshdns_policy_info{sha256}` (which policy is in force, the
//! same hash on the hub and its followers), and per cluster the policy
//! names `meshdns_policy_drain_percent` and `meshdns_policy_weight_percent`.
//! The policy is read from the registry at scrape time, so a follower
//! shows what its upstream sent.

use std::sync::{Arc, Mutex};

use meshdns_proto::model::FleetPolicy;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry as PromRegistry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HashLabels {
    sha256: String,
}

/// The policy last seen at a scrape, and its hash (computed once per
/// policy, not per scrape).
#[derive(Debug, Default)]
struct Seen {
    policy: Option<Arc<FleetPolicy>>,
    sha256: String,
}

/// The policy's metrics; clones share them.
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    reloads: Family<ResultLabels, Counter>,
    seen: Arc<Mutex<Seen>>,
}

impl PolicyMetrics {
    pub fn register(registry: &mut PromRegistry) -> Self {
        let metrics = PolicyMetrics::default();
        for result in ["ok", "error"] {
            let _ = metrics.reloads.get_or_create(&ResultLabels { result });
        }
        registry.register(
            "policy_reloads",
            "Policy file (--policy) reads after a change: ok (applied), or error (unreadable or invalid; the policy in force kept)",
            metrics.reloads.clone(),
        );
        registry.register_collector(Box::new(metrics.clone()));
        metrics
    }

    /// Counts one read of the policy file.
    pub fn reloaded(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// Reads of the policy file counted so far, taken (`ok`) or not.
    pub fn reloads(&self, ok: bool) -> u64 {
        let result = if ok { "ok" } else { "error" };
        self.reloads.get_or_create(&ResultLabels { result }).get()
    }

    /// Takes the policy in force (at scrape time).
    pub fn set(&self, policy: Arc<FleetPolicy>) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if seen
            .policy
            .as_ref()
            .is_some_and(|p| Arc::ptr_eq(p, &policy))
        {
            return;
        }
        seen.sha256 = crate::policy::sha256(&policy);
        seen.policy = Some(policy);
    }
}

impl Collector for PolicyMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (policy, sha256) = match self.seen.lock() {
            Ok(seen) => match &seen.policy {
                Some(policy) => (policy.clone(), seen.sha256.clone()),
                None => return Ok(()),
            },
            Err(_) => return Ok(()),
        };
        let mut info = encoder.encode_descriptor(
            "policy_info",
            "The traffic policy in force (value 1), by the SHA-256 of its canonical form (the same on the hub and its followers; the empty policy too)",
            None,
            MetricType::Gauge,
        )?;
        info.encode_family(&HashLabels { sha256 })?
            .encode_gauge(&1i64)?;
        type Column = (
            &'static str,
            &'static str,
            fn(&meshdns_proto::model::ClusterPolicy) -> i64,
        );
        let columns: [Column; 2] = [
            (
                "policy_drain_percent",
                "The policy's drain of the cluster (0-100; 100: answered only as a last resort), for clusters the policy names",
                |c| i64::from(c.drain_percent),
            ),
            (
                "policy_weight_percent",
                "The policy's weight of the cluster, in percent of its exported weights, for clusters the policy names",
                |c| i64::from(c.weight_percent),
            ),
        ];
        for (name, help, value) in columns {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (cluster, row) in &policy.clusters {
                let labels = ClusterLabels {
                    cluster: cluster.to_string(),
                };
                metric.encode_family(&labels)?.encode_gauge(&value(row))?;
            }
        }
        Ok(())
    }
}
