//! `--clusters FILE`: the fleet file, what each cluster may claim.
//!
//! ```yaml
//! clusters:
//!   east-1:
//!     clientCIDRs: [10.1.0.0/16]      # its Hello may announce only these (or inside them)
//!     endpointCIDRs: [10.1.0.0/16]    # its endpoints' and cluster IPs' addresses
//!     namespaces: [shop, data]        # the namespaces it may export from
//!     maxServices: 200                # below --max-services-per-cluster
//! ```
//!
//! Every key but the cluster's name is optional (absent: no restriction
//! beyond the registry's flags). With a fleet file, a cluster it does not
//! name may not export. The file is re-read when its content changes; a
//! file that does not parse keeps the last good one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use meshdns_proto::model::{ClusterName, ServiceExport};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What one cluster may claim.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ClusterRules {
    #[serde(default, rename = "clientCIDRs")]
    pub client_cidrs: Option<Vec<IpNet>>,
    #[serde(default, rename = "endpointCIDRs")]
    pub endpoint_cidrs: Option<Vec<IpNet>>,
    #[serde(default)]
    pub namespaces: Option<BTreeSet<String>>,
    #[serde(default)]
    pub max_services: Option<usize>,
}

fn within(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&addr))
}

impl ClusterRules {
    /// Whether the cluster may announce `cidr` as its askers'.
    pub fn may_claim(&self, cidr: &IpNet) -> bool {
        self.client_cidrs
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|a| a.contains(cidr)))
    }

    /// Why the cluster may not export `service`, if it may not.
    pub fn refuse(&self, service: &ServiceExport) -> Option<String> {
        if let Some(namespaces) = &self.namespaces
            && !namespaces.contains(service.key().namespace.as_str())
        {
            return Some(format!(
                "{}: namespace {} is not one the fleet file (--clusters) lets this cluster export from",
                service.key(),
                service.key().namespace
            ));
        }
        let nets = self.endpoint_cidrs.as_ref()?;
        let stray = service
            .cluster_ips()
            .iter()
            .copied()
            .chain(
                service
                    .endpoints()
                    .iter()
                    .flat_map(|e| e.addresses.iter().copied()),
            )
            .find(|a| !within(nets, *a))?;
        Some(format!(
            "{}: address {stray} is outside the endpoint CIDRs the fleet file (--clusters) gives this cluster",
            service.key()
        ))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    clusters: BTreeMap<String, Option<ClusterRules>>,
}

/// The rules of every cluster the fleet file names.
pub type Rules = BTreeMap<ClusterName, Arc<ClusterRules>>;

/// Parses a fleet file; the error says what is wrong and where.
pub fn parse(text: &str) -> Result<Rules, String> {
    let file: FleetFile = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
    let mut rules = Rules::new();
    for (name, r) in file.clusters {
        let cluster = ClusterName::new(&name).map_err(|e| format!("clusters.{name}: {e}"))?;
        if r.as_ref().and_then(|r| r.max_services) == Some(0) {
            return Err(format!("clusters.{name}.maxServices: must be at least 1"));
        }
        rules.insert(cluster, Arc::new(r.unwrap_or_default()));
    }
    Ok(rules)
}

/// The fleet file in force, if any.
#[derive(Debug)]
pub struct Fleet {
    path: Option<PathBuf>,
    rules: ArcSwap<Option<Rules>>,
}

impl Fleet {
    /// Reads `path` (if given); a file that does not parse is an error
    /// at start, naming it.
    pub fn load(path: Option<PathBuf>) -> Result<Self, String> {
        let rules = match &path {
            None => None,
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
                Some(parse(&text).map_err(|e| format!("{}: {e}", p.display()))?)
            }
        };
        Ok(Fleet {
            path,
            rules: ArcSwap::from_pointee(rules),
        })
    }

    /// `Ok(None)`: no fleet file, no rules beyond the flags. `Err`: the
    /// fleet file does not name `cluster`.
    pub fn rules(&self, cluster: &ClusterName) -> Result<Option<Arc<ClusterRules>>, String> {
        match &**self.rules.load() {
            None => Ok(None),
            Some(rules) => rules.get(cluster).cloned().map(Some).ok_or_else(|| {
                format!(
                    "cluster {cluster} is not in the fleet file (--clusters), so it may not export"
                )
            }),
        }
    }

    /// Re-reads the file when its content changes, until `shutdown`.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut last = std::fs::read(&path).ok();
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            if last.as_ref() == Some(&bytes) {
                continue;
            }
            last = Some(bytes.clone());
            match std::str::from_utf8(&bytes)
                .map_err(|e| e.to_string())
                .and_then(parse)
            {
                Ok(rules) => {
                    info!(path = %path.display(), clusters = rules.len(), "fleet file reloaded");
                    self.rules.store(Arc::new(Some(rules)));
                }
                Err(e) => {
                    warn!(path = %path.display(), error = %e, "fleet file rejected; keeping the previous one")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fleet_files() {
        let rules = parse(
            "clusters:\n  east-1:\n    clientCIDRs: [10.1.0.0/16]\n    endpointCIDRs: [10.1.0.0/16]\n    namespaces: [shop]\n    maxServices: 3\n  west-1:\n",
        )
        .unwrap();
        let east = &rules[&ClusterName::new("east-1").unwrap()];
        assert!(east.may_claim(&"10.1.2.0/24".parse().unwrap()));
        assert!(!east.may_claim(&"10.0.0.0/8".parse().unwrap()));
        assert_eq!(east.max_services, Some(3));
        let west = &rules[&ClusterName::new("west-1").unwrap()];
        assert!(west.may_claim(&"0.0.0.0/0".parse().unwrap()));
        for bad in [
            "clusters:\n  east-1:\n    clientCIDR: [10.1.0.0/16]\n",
            "clusters:\n  East_1: {}\n",
            "clusters:\n  east-1:\n    clientCIDRs: [10.1.0.300/16]\n",
            "clusters:\n  east-1:\n    maxServices: 0\n",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
