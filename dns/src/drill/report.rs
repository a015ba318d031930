//! A drill's report, as text or JSON: what was lost, the policy change
//! that applies the loss for real, and per affected service each asker's
//! answers before and after, the services left without a healthy
//! endpoint, and each cluster's share of answers before → after.

use std::collections::{BTreeMap, BTreeSet};

use meshdns_proto::model::{ClusterName, Scope, ServiceKey};
use serde_json::{Value, json};

use super::measure::Served;

/// One asker's answers for one service.
#[derive(Debug, Clone)]
pub struct Asker {
    pub cluster: String,
    /// The asker's cluster is one of those lost.
    pub lost: bool,
    pub before: Served,
    pub after: Served,
}

/// One service the loss touches (it has an export in a lost cluster).
#[derive(Debug, Clone)]
pub struct ServiceDrill {
    pub key: ServiceKey,
    pub askers: Vec<Asker>,
    /// No healthy endpoint outside the lost clusters: answers fail open
    /// (last known endpoints of the lost clusters, as a last resort).
    pub no_healthy_left: bool,
    /// Each serving cluster's share of answers, averaged over askers.
    pub before: BTreeMap<String, f64>,
    pub after: BTreeMap<String, f64>,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    pub registry: String,
    pub scopes: Vec<Scope>,
    pub lost: BTreeSet<ClusterName>,
    pub policy_sha256: String,
    pub answers: u32,
    pub services: Vec<ServiceDrill>,
    /// Services none of whose exports is in a lost cluster.
    pub unaffected: usize,
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn served_text(s: &Served) -> String {
    if s.shares.is_empty() {
        return s.rcode.unwrap_or("no answer").to_owned();
    }
    let shares: Vec<String> = s
        .shares
        .iter()
        .map(|(cluster, share)| format!("{cluster} {}", percent(*share)))
        .collect();
    match s.tier {
        Some(tier) => format!("{} ({tier})", shares.join(", ")),
        None => shares.join(", "),
    }
}

fn served_json(s: &Served) -> Value {
    json!({
        "tier": s.tier,
        "rcode": s.rcode,
        "shares": s.shares,
    })
}

impl Report {
    /// The policy-file lines that apply the same loss for real.
    fn for_real(&self) -> Vec<String> {
        self.lost
            .iter()
            .map(|c| format!("clusters.{c}.drain: 100"))
            .collect()
    }

    pub fn json(&self) -> Value {
        json!({
            "registry": self.registry,
            "lose": self.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "lost_clusters": self.lost.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "policy_sha256": self.policy_sha256,
            "for_real": self.for_real(),
            "answers_per_asker": self.answers,
            "unaffected_services": self.unaffected,
            "services": self.services.iter().map(|s| json!({
                "namespace": s.key.namespace.as_str(),
                "name": s.key.name.as_str(),
                "no_healthy_left": s.no_healthy_left,
                "shares": { "before": s.before, "after": s.after },
                "askers": s.askers.iter().map(|a| json!({
                    "cluster": a.cluster,
                    "lost": a.lost,
                    "before": served_json(&a.before),
                    "after": served_json(&a.after),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })
    }

    pub fn text(&self) -> String {
        let lost: Vec<String> = self.lost.iter().map(ToString::to_string).collect();
        let scopes: Vec<String> = self.scopes.iter().map(ToString::to_string).collect();
        let mut out = format!(
            "drill against {}: losing {} = clusters {}\nno answer changes; to apply the same loss for real, set in the policy file: {}\n",
            self.registry,
            scopes.join(", "),
            lost.join(", "),
            self.for_real().join(", ")
        );
        let stranded: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.no_healthy_left)
            .map(|s| s.key.to_string())
            .collect();
        out.push_str(&format!(
            "{} services affected, {} unaffected; left without a healthy endpoint (fail open): {}\n",
            self.services.len(),
            self.unaffected,
            if stranded.is_empty() {
                "none".to_owned()
            } else {
                stranded.join(", ")
            }
        ));
        for s in &self.services {
            out.push_str(&format!("\n{}", s.key));
            if s.no_healthy_left {
                out.push_str(": no healthy endpoint left; answers fail open");
            }
            out.push('\n');
            let rows: Vec<Vec<String>> = s
                .askers
                .iter()
                .map(|a| {
                    vec![
                        if a.lost {
                            format!("{} (lost)", a.cluster)
                        } else {
                            a.cluster.clone()
                        },
                        served_text(&a.before),
                        served_text(&a.after),
                    ]
                })
                .collect();
            out.push_str(&crate::status::table(&["ASKER", "BEFORE", "AFTER"], &rows));
            let clusters: BTreeSet<&String> = s.before.keys().chain(s.after.keys()).collect();
            let rows: Vec<Vec<String>> = clusters
                .into_iter()
                .map(|c| {
                    let of = |m: &BTreeMap<String, f64>| percent(m.get(c).copied().unwrap_or(0.0));
                    vec![c.clone(), format!("{} → {}", of(&s.before), of(&s.after))]
                })
                .collect();
            out.push_str(&crate::status::table(&["SERVED FROM", "SHARE"], &rows));
        }
        out
    }
}
