//! How an answer was chosen, for `/debug/answer`: every tier the asker
//! was offered with its healthy targets, exported endpoints, threshold and
//! weight; which one answered and which fell short; the primary and the
//! failover order followed and where they came from.

use meshdns_proto::model::FleetPolicy;
use serde::Serialize;

use super::{Tier, boundary, enough, tiers};
use crate::locality::AskerPlace;
use crate::snapshot::{Kind, ServiceView};

/// One tier as the selection saw it.
#[derive(Debug, Clone, Serialize)]
pub struct TierCount {
    pub tier: Tier,
    /// The failover place or primary the tier stands for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    /// Healthy targets of positive weight.
    pub healthy: usize,
    /// Exported endpoints of positive weight, healthy or not.
    pub exported: usize,
    /// What it needed to answer (min-healthy).
    pub needed: usize,
    /// Its targets' summed effective weight.
    pub weight: u64,
}

/// How an answer was chosen.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub affinity: &'static str,
    /// The threshold in force: the service's (`3`, `50%`) or the server's.
    pub min_healthy: String,
    /// `service` (annotation or policy file) or `server` (`--min-healthy`).
    pub min_healthy_from: &'static str,
    /// Every tier offered, in order, up to the one that answered.
    pub tiers: Vec<TierCount>,
    pub chosen: Tier,
    /// The failover place or primary that answered.
    pub chosen_place: Option<String>,
    /// The tiers passed over, each with why (`cluster: 1 healthy, needs 2`).
    pub spilled_over: Vec<String>,
    pub primary: Option<String>,
    /// The failover order for this asker, and where it came from.
    pub failover: Vec<String>,
    pub failover_from: &'static str,
    /// Answers are weighted samples (targets weigh differently).
    pub weighted: bool,
    /// Only weight-0 targets are healthy: they answer.
    pub last_resort: bool,
    pub fail_open: bool,
    pub stale_clusters_excluded: Vec<String>,
}

/// [`select`](super::select), explained.
pub fn explain(
    view: &ServiceView,
    place: Option<&AskerPlace>,
    min_healthy: usize,
    policy: &FleetPolicy,
) -> Explanation {
    let stop = boundary(view.affinity);
    let mut offered = Vec::new();
    // The same offers `select` makes, each recorded.
    let chosen = tiers(view, place, min_healthy, |pick, needed, step| {
        offered.push(TierCount {
            tier: pick.tier,
            place: step.map(|s| s.scope.to_string()),
            healthy: pick.healthy(),
            exported: pick.exported(),
            needed,
            weight: shown(pick.weight()),
        });
        enough(pick, needed, stop)
    });
    if matches!(chosen.tier, Tier::Any | Tier::LastResort) {
        let chain = if chosen.tier == Tier::Any {
            &view.all
        } else {
            &view.reserve
        };
        offered.push(TierCount {
            tier: chosen.tier,
            place: None,
            healthy: chain.healthy(),
            exported: chain.exported(),
            needed: 0,
            weight: shown(chain.weight(Kind::Targets)),
        });
    }
    let chosen_place = offered
        .iter()
        .rev()
        .find(|t| t.tier == chosen.tier)
        .and_then(|t| t.place.clone());
    let spilled_over = offered
        .iter()
        .filter(|t| t.tier != chosen.tier || t.place != chosen_place)
        .map(|t| {
            let at = t.place.as_ref().map_or(String::new(), |p| format!(" {p}"));
            format!(
                "{:?}{at}: {} healthy, needs {}",
                t.tier, t.healthy, t.needed
            )
            .to_lowercase()
        })
        .collect();
    let key = &view.key;
    let from_file = policy.services.get(key);
    let failover = view.failover_for(place.and_then(|p| p.region));
    let failover_from = if failover.is_empty() {
        "none"
    } else if from_file.is_some_and(|s| s.failover.is_some()) {
        "policy file (service)"
    } else if view.failover.is_some() {
        "annotation"
    } else {
        "policy file (asker's region)"
    };
    Explanation {
        affinity: view.affinity.as_str(),
        min_healthy: view
            .min_healthy
            .map_or(min_healthy.max(1).to_string(), |m| m.to_string()),
        min_healthy_from: if view.min_healthy.is_some() {
            "service"
        } else {
            "server"
        },
        tiers: offered,
        chosen: chosen.tier,
        chosen_place,
        spilled_over,
        primary: view.primary.as_ref().map(|s| s.scope.to_string()),
        failover: failover.iter().map(|s| s.scope.to_string()).collect(),
        failover_from,
        weighted: view.weighted,
        last_resort: chosen.tier == Tier::LastResort,
        fail_open: view.fail_open,
        stale_clusters_excluded: if view.fail_open {
            Vec::new()
        } else {
            view.clusters
                .iter()
                .filter(|c| c.stale())
                .map(|c| c.name().to_string())
                .collect()
        },
    }
}

/// A summed weight as JSON shows it: past `u64::MAX` (only with
/// thousands of clusters at the largest weights) it reads as the maximum.
fn shown(weight: u128) -> u64 {
    u64::try_from(weight).unwrap_or(u64::MAX)
}
