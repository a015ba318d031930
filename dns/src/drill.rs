//! `meshdns drill`: a disaster-recovery drill without an outage. It reads
//! the live registry and its traffic policy (a Watch Reset, with the
//! reader credential), loses the places `--lose` names on paper — the
//! clusters located there drained 100%, exactly what the policy file
//! would say to apply the loss for real — and reports, changing no
//! answer: per service, where each asker cluster would be served from
//! before and after, which services would have no healthy endpoint left
//! (and fail open), and how each surviving cluster's share of answers
//! would grow.
//!
//! - [`loss`]: `--lose` places → clusters → the drained policy.
//! - [`measure`]: the state in a registry of the drill's own; answers
//!   from the DNS server's own answer path, counted per cluster.
//! - [`report`]: text and JSON.

pub mod loss;
pub mod measure;
pub mod report;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use clap::Args;
use meshdns_proto::model::{ClusterName, ServiceExport, ServiceKey};
use meshdns_proto::wire;

use crate::authority::Authority;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::registry::{Registry, Writer};

/// `meshdns drill` flags.
#[derive(Debug, Clone, Args)]
pub struct DrillArgs {
    /// The registry to read, as http://HOST:PORT (https:// with --tls-ca).
    #[arg(
        long,
        env = "MESHDNS_REGISTRY",
        default_value = "http://127.0.0.1:7443"
    )]
    pub registry: String,
    /// Places to lose (repeatable, or comma-separated): cluster:NAME, zone:NAME, region:NAME, provider:NAME; a bare name is a cluster. Each must hold a cluster the registry knows.
    #[arg(long, env = "MESHDNS_DRILL_LOSE", required = true)]
    pub lose: Vec<String>,
    /// Only these services, as NAME.NAMESPACE (repeatable); every service a lost cluster exports by default.
    #[arg(long = "service", env = "MESHDNS_DRILL_SERVICE")]
    pub services: Vec<String>,
    /// Queries (of each address type) per service and asker cluster that shares are counted over.
    #[arg(long, env = "MESHDNS_DRILL_ANSWERS", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub answers: u32,
    /// Answer with this many addresses at most instead of the registry's --max-answers (which the registry reports; 8 from registries that do not).
    #[arg(long = "max-answers", env = "MESHDNS_DRILL_MAX_ANSWERS")]
    pub max_answers: Option<usize>,
    /// Spill over below this many healthy targets instead of the registry's --min-healthy (which the registry reports; 1 from registries that do not).
    #[arg(long = "min-healthy", env = "MESHDNS_DRILL_MIN_HEALTHY")]
    pub min_healthy: Option<usize>,
    /// Output format: text or json.
    #[arg(long, env = "MESHDNS_DRILL_OUTPUT", default_value = "text")]
    pub output: String,
    /// Client credentials (a reader's): --tls-ca, --tls-cert, --tls-key, --token-file, --insecure.
    #[command(flatten)]
    pub client: meshdns_cli::ClientFlags,
}

/// The registry's whole state (and policy) read through Watch, into a
/// registry of the drill's own, as a follower would mirror it; its URL
/// and how its DNS server answers (ListClusters).
async fn read_state(
    args: &DrillArgs,
    writer: &Writer,
) -> Result<(String, Option<wire::AnswerSettings>), Error> {
    let (url, client) = crate::reader::connect(&args.client, &args.registry).await?;
    let mut client = client.max_decoding_message_size(64 * 1024 * 1024);
    let call = crate::reader::call_failed(&url);
    let settings = client
        .list_clusters(wire::ListClustersRequest {})
        .await
        .map_err(call)?
        .into_inner()
        .answer_settings;
    let mut events = client
        .watch(wire::WatchRequest {})
        .await
        .map_err(call)?
        .into_inner();
    let mut assembly = crate::follow::Assembly::default();
    loop {
        match events.message().await.map_err(call)? {
            Some(wire::WatchEvent { event: Some(event) }) => {
                let last = matches!(&event, wire::watch_event::Event::Reset(r) if !r.more);
                assembly
                    .apply(writer, event)
                    .await
                    .map_err(|e| Error::config("--registry", format!("{url}: {e}")))?;
                if last {
                    return Ok((url, settings));
                }
            }
            Some(_) => {}
            None => {
                return Err(Error::config(
                    "--registry",
                    format!("{url}: the Watch stream ended before its state"),
                ));
            }
        }
    }
}

/// Whether answers for `key` in `snapshot` would have no healthy
/// endpoint to choose on merit: no view, or none of positive weight
/// (weight-0 and drained-to-100% targets are only the last resort), or
/// every cluster holding it stale (fail open). The view decides, as the
/// answer path does: terminating endpoints count only while none is
/// ready, stale clusters not at all.
pub fn no_healthy_left(snapshot: &crate::snapshot::Snapshot, key: &ServiceKey) -> bool {
    snapshot
        .view(key)
        .is_none_or(|view| view.fail_open || view.all.total(crate::snapshot::Kind::Targets) == 0)
}

/// Runs the drill and returns its report, rendered.
pub async fn run(args: &DrillArgs) -> Result<String, Error> {
    let json_output = match args.output.as_str() {
        "text" | "table" => false,
        "json" => true,
        other => {
            return Err(Error::config(
                "--output",
                format!("{other:?} is not a format (use text or json)"),
            ));
        }
    };
    let scopes = loss::parse(&args.lose).map_err(|e| Error::config("--lose", e.to_string()))?;
    let mut only = BTreeSet::new();
    for s in &args.services {
        let (name, namespace) = s.split_once('.').ok_or_else(|| {
            Error::config(
                "--service",
                format!("{s:?}: write NAME.NAMESPACE, e.g. web.shop"),
            )
        })?;
        let key = ServiceKey::try_from(&wire::ServiceKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
        .map_err(|e| Error::config("--service", format!("{s:?}: {e}")))?;
        only.insert(key);
    }
    let registry = Arc::new(Registry::new(5, false, Arc::new(Metrics::new())));
    let writer = Writer::spawn(registry.clone()).map_err(|source| Error::Serve {
        what: "drill registry writer thread",
        source: Box::new(source),
    })?;
    let (url, settings) = read_state(args, &writer).await?;
    // Answers as the registry's DNS server gives them, unless told.
    let max_answers = args
        .max_answers
        .or(settings.map(|s| s.max_answers as usize))
        .unwrap_or(8);
    let min_healthy = args
        .min_healthy
        .or(settings.map(|s| s.min_healthy as usize))
        .unwrap_or(1);
    let authority = Authority::new(
        vec![crate::qname::Domain::parse("global").map_err(|e| Error::config("--domain", e))?],
        5,
        5,
        max_answers.max(1),
        min_healthy.max(1),
    )
    .map_err(|e| Error::config("--domain", e.to_string()))?;
    let policy = registry.policy();
    let statuses = registry.clusters();
    let lost = loss::clusters(&scopes, statuses.iter().map(|s| &s.cluster), &policy)
        .map_err(|e| Error::config("--lose", e.to_string()))?;
    let full = writer.full_state().await?;
    // Every service's exports, by cluster.
    let mut services: BTreeMap<ServiceKey, Vec<(ClusterName, Arc<ServiceExport>)>> =
        BTreeMap::new();
    for (status, exports) in &full.clusters {
        for export in exports {
            services
                .entry(export.key().clone())
                .or_default()
                .push((status.cluster.name.clone(), export.clone()));
        }
    }
    let in_scope = |key: &ServiceKey| only.is_empty() || only.contains(key);
    let affected: Vec<&ServiceKey> = services
        .iter()
        .filter(|(key, exports)| in_scope(key) && exports.iter().any(|(c, _)| lost.contains(c)))
        .map(|(key, _)| key)
        .collect();
    let unaffected = services.keys().filter(|k| in_scope(k)).count() - affected.len();
    // Askers: every cluster with a client CIDR, from inside it.
    let mut askers: Vec<(String, bool, std::net::IpAddr)> = statuses
        .iter()
        .filter_map(|s| {
            let cidr = s.cluster.client_cidrs.first()?;
            Some((
                s.cluster.name.to_string(),
                lost.contains(&s.cluster.name),
                measure::asker_address(cidr),
            ))
        })
        .collect();
    askers.sort();
    let measure_all = |snapshot: &crate::snapshot::Snapshot| -> Vec<Vec<measure::Served>> {
        affected
            .iter()
            .map(|key| {
                let owners = measure::owners(services[*key].iter().map(|(c, e)| (c, e.as_ref())));
                askers
                    .iter()
                    .map(|(_, _, source)| {
                        measure::served(
                            snapshot,
                            &authority,
                            key,
                            Some(*source),
                            args.answers,
                            &owners,
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let before = measure_all(&registry.snapshot());
    writer
        .set_policy(Arc::new(loss::drained(&policy, &lost)))
        .await;
    let drained = registry.snapshot();
    let after = measure_all(&drained);
    let services_report = affected
        .iter()
        .zip(before.into_iter().zip(after))
        .map(|(key, (before, after))| {
            let no_healthy_left = no_healthy_left(&drained, key);
            report::ServiceDrill {
                key: (*key).clone(),
                before: measure::mean(&before),
                after: measure::mean(&after),
                askers: askers
                    .iter()
                    .zip(before.into_iter().zip(after))
                    .map(|((cluster, lost, _), (before, after))| report::Asker {
                        cluster: cluster.clone(),
                        lost: *lost,
                        before,
                        after,
                    })
                    .collect(),
                no_healthy_left,
            }
        })
        .collect();
    let report = report::Report {
        registry: url,
        scopes,
        lost,
        policy_sha256: crate::policy::sha256(&policy),
        answers: args.answers,
        services: services_report,
        unaffected,
    };
    Ok(if json_output {
        serde_json::to_string_pretty(&report.json()).unwrap_or_default() + "\n"
    } else {
        report.text()
    })
}

#[cfg(test)]
mod tests {
    use meshdns_proto::fixtures;
    use meshdns_proto::model::{Cluster, ClusterPolicy, Endpoint, FleetPolicy, Policy};

    use super::*;

    fn key() -> ServiceKey {
        fixtures::key("shop", "web")
    }

    /// A registry where each (cluster, endpoints) exports shop/web.
    fn registry(exports: Vec<(&str, Vec<Endpoint>)>) -> Registry {
        let registry = Registry::new(5, false, Arc::new(Metrics::new()));
        for (i, (name, endpoints)) in exports.into_iter().enumerate() {
            let (session, _) = registry.hello(
                Cluster {
                    region: Some(fixtures::label("us-east")),
                    client_cidrs: vec![format!("10.{i}.0.0/16").parse().unwrap()],
                    ..fixtures::cluster(name)
                },
                usize::MAX,
            );
            let export = fixtures::http_export(key(), endpoints, Policy::default());
            registry
                .apply_snapshot(&session, vec![export], &Default::default())
                .unwrap();
        }
        registry
    }

    fn ready(address: &str, weight: u32) -> Endpoint {
        Endpoint {
            weight,
            ..Endpoint::ready(address.parse().unwrap())
        }
    }

    fn terminating(address: &str) -> Endpoint {
        Endpoint {
            ready: false,
            serving: true,
            terminating: true,
            ..Endpoint::ready(address.parse().unwrap())
        }
    }

    /// Losing east-1 for real: drained 100%.
    fn lose_east(registry: &Registry) -> bool {
        let mut policy = FleetPolicy::default();
        policy.clusters.insert(
            ClusterName::new("east-1").unwrap(),
            ClusterPolicy {
                drain_percent: 100,
                ..ClusterPolicy::default()
            },
        );
        registry.set_policy(Arc::new(policy));
        no_healthy_left(&registry.snapshot(), &key())
    }

    /// "No healthy endpoint left" agrees with what answers use: survivors
    /// of weight 0, or serving only while terminating beside the lost
    /// cluster's ready ones, are no healthy endpoints; a ready survivor
    /// of positive weight is.
    #[test]
    fn no_healthy_left_agrees_with_the_answers() {
        let east = || vec![ready("100.1.0.1", 10)];
        let weight_zero = registry(vec![
            ("east-1", east()),
            ("west-1", vec![ready("100.2.0.1", 0)]),
        ]);
        assert!(lose_east(&weight_zero));
        let only_terminating = registry(vec![
            ("east-1", east()),
            ("west-1", vec![terminating("100.2.0.1")]),
        ]);
        assert!(lose_east(&only_terminating));
        let healthy = registry(vec![
            ("east-1", east()),
            ("west-1", vec![ready("100.2.0.1", 10)]),
        ]);
        assert!(!lose_east(&healthy));
        assert!(no_healthy_left(
            &healthy.snapshot(),
            &fixtures::key("shop", "gone")
        ));
    }
}
