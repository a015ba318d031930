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
//! name may not export. The file is re-read when its content changes
//! (once two polls a second apart read the same bytes); a file over
//! [`MAX_FILE_BYTES`] or that does not parse keeps the last good one.
//!
//! The rules bind open streams too: when a reload changes a connected
//! cluster's rules (or drops the cluster), its Export stream ends, what
//! it holds that the new rules refuse leaves the answers at once (all of
//! it, for a dropped cluster), and its syncer reconnects under the new
//! rules (or is refused at Hello).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;
use meshdns_proto::model::{ClusterName, ServiceExport};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bounded;
use crate::metrics::Metrics;
use crate::registry::{Allowed, Writer};

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

/// Largest fleet file read (ample: a cluster's rules take ~150 bytes).
/// A bigger file is refused naming the cap, and the rules in force stay.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// How often the file is polled for new content.
const POLL: Duration = Duration::from_secs(1);

/// Reads (bounded) and parses the fleet file; the error names the file.
fn read(path: &Path) -> Result<([u8; 32], Rules), String> {
    let bytes =
        bounded::read(path, MAX_FILE_BYTES).map_err(|e| format!("{}: {e}", path.display()))?;
    let digest = bounded::digest(&bytes);
    Ok((
        digest,
        parse_bytes(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
    ))
}

fn parse_bytes(bytes: &[u8]) -> Result<Rules, String> {
    std::str::from_utf8(bytes)
        .map_err(|e| e.to_string())
        .and_then(parse)
}

/// When new content is applied: once two polls in a row read it (a file
/// being written is not applied half-way), and never the content in
/// force or content already rejected (so it is reported once).
#[derive(Debug, Default)]
struct Settle {
    applied: Option<[u8; 32]>,
    rejected: Option<[u8; 32]>,
    pending: Option<[u8; 32]>,
}

impl Settle {
    /// Whether content with `digest`, just read, is to be parsed now.
    fn ready(&mut self, digest: [u8; 32]) -> bool {
        if Some(digest) == self.applied || Some(digest) == self.rejected {
            self.pending = None;
            return false;
        }
        if self.pending != Some(digest) {
            self.pending = Some(digest);
            return false;
        }
        self.pending = None;
        true
    }
}

/// Why a stream's cluster no longer has the rules it opened with.
#[derive(Debug)]
pub enum Withdrawn {
    /// The file gives the cluster other rules now.
    Changed,
    /// The file no longer names the cluster.
    Removed,
}

/// The fleet file in force, if any.
#[derive(Debug)]
pub struct Fleet {
    path: Option<PathBuf>,
    rules: ArcSwap<Option<Rules>>,
    /// The digest of the content in force.
    loaded: Option<[u8; 32]>,
    /// Counts the reloads: open streams watch it, to end when their
    /// cluster's rules change ([`Fleet::withdrawn`]).
    reloads: watch::Sender<u64>,
}

impl Fleet {
    /// Reads `path` (if given); a file that does not read or parse is an
    /// error at start, naming it.
    pub fn load(path: Option<PathBuf>) -> Result<Self, String> {
        let (loaded, rules) = match &path {
            None => (None, None),
            Some(p) => {
                let (digest, rules) = read(p)?;
                (Some(digest), Some(rules))
            }
        };
        Ok(Fleet {
            path,
            rules: ArcSwap::from_pointee(rules),
            loaded,
            reloads: watch::Sender::new(0),
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

    /// The reloads to come; taken before a stream reads its rules, so
    /// that no reload falls between.
    pub fn reloads(&self) -> watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// The fleet file named in messages.
    pub fn path(&self) -> String {
        self.path
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string())
    }

    /// Resolves when the file no longer gives `cluster` the rules `held`
    /// (other rules, or none): its stream must end, and what it holds
    /// follow the new rules. Never, without a fleet file.
    pub async fn withdrawn(
        &self,
        cluster: &ClusterName,
        held: Option<&ClusterRules>,
        reloads: &mut watch::Receiver<u64>,
    ) -> Withdrawn {
        loop {
            if reloads.changed().await.is_err() {
                return std::future::pending().await;
            }
            match self.rules(cluster) {
                Ok(now) if now.as_deref() == held => {}
                Ok(Some(_)) => return Withdrawn::Changed,
                // No fleet file now: not after one was loaded.
                Ok(None) => {}
                Err(_) => return Withdrawn::Removed,
            }
        }
    }

    /// Brings what the registry holds under the rules in force, at start
    /// (a restored state file's clusters) and after each reload, until
    /// `shutdown`: every service the rules refuse leaves (every service
    /// of a cluster the file does not name), connected cluster or not.
    /// Without a fleet file, nothing.
    pub async fn enforce(self: Arc<Self>, writer: Writer, shutdown: CancellationToken) {
        if self.path.is_none() {
            return;
        }
        let mut reloads = self.reloads();
        reloads.mark_changed();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = reloads.changed() => if changed.is_err() { return },
            }
            if self.enforce_once(&writer).await.is_err() {
                return;
            }
        }
    }

    /// Removes from the registry every service the rules in force refuse.
    pub async fn enforce_once(&self, writer: &Writer) -> Result<(), crate::Error> {
        let Some(rules) = Option::clone(&self.rules.load()) else {
            return Ok(());
        };
        let allowed: Allowed = Box::new(move |cluster, service| {
            rules
                .get(cluster)
                .is_some_and(|r| r.refuse(service).is_none())
        });
        let withdrawn = writer.enforce(allowed).await?;
        if withdrawn > 0 {
            info!(
                services = withdrawn,
                "withdrew the services the fleet file no longer allows"
            );
        }
        Ok(())
    }

    /// Re-reads the file when its content changes, until `shutdown`: new
    /// content is applied once two polls in a row read it; a file over
    /// [`MAX_FILE_BYTES`] or that does not parse keeps the rules in force
    /// and is reported once. Reading and parsing run off the runtime.
    pub async fn follow(self: Arc<Self>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let mut settle = Settle {
            applied: self.loaded,
            ..Settle::default()
        };
        let mut failing: Option<String> = None;
        let mut ticker = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let p = path.clone();
            let read = tokio::task::spawn_blocking(move || {
                crate::priority::control_plane_thread();
                bounded::read(&p, MAX_FILE_BYTES).map(|bytes| (bounded::digest(&bytes), bytes))
            })
            .await;
            let (digest, bytes) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    let e = e.to_string();
                    if failing.as_ref() != Some(&e) {
                        metrics.fleet_file_reload("rejected");
                        warn!(path = %path.display(), error = %e, "fleet file rejected; keeping the previous one");
                        failing = Some(e);
                    }
                    settle.pending = None;
                    continue;
                }
                Err(_) => continue,
            };
            failing = None;
            if !settle.ready(digest) {
                continue;
            }
            let parsed = tokio::task::spawn_blocking(move || {
                crate::priority::control_plane_thread();
                parse_bytes(&bytes)
            })
            .await;
            match parsed {
                Ok(Ok(rules)) => {
                    settle.applied = Some(digest);
                    settle.rejected = None;
                    metrics.fleet_file_reload("applied");
                    self.replace(rules, &path);
                }
                Ok(Err(e)) => {
                    settle.rejected = Some(digest);
                    metrics.fleet_file_reload("rejected");
                    warn!(path = %path.display(), error = %e, "fleet file rejected; keeping the previous one");
                }
                Err(_) => {}
            }
        }
    }

    /// Puts `rules` in force and wakes the streams, which end if their
    /// cluster's rules changed.
    fn replace(&self, rules: Rules, path: &Path) {
        let old = self.rules.load_full();
        let changed = match &*old {
            Some(old) => old
                .iter()
                .filter(|(name, r)| rules.get(*name) != Some(*r))
                .count(),
            None => 0,
        };
        let clusters = rules.len();
        self.rules.store(Arc::new(Some(rules)));
        self.reloads.send_modify(|n| *n += 1);
        info!(path = %path.display(), clusters, changed_or_removed = changed, "fleet file reloaded");
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

    #[test]
    fn new_content_is_applied_once_two_reads_agree() {
        let mut settle = Settle {
            applied: Some([0; 32]),
            ..Settle::default()
        };
        assert!(!settle.ready([0; 32]), "the content in force");
        assert!(!settle.ready([1; 32]), "read once");
        assert!(!settle.ready([2; 32]), "still being written");
        assert!(settle.ready([2; 32]), "the same twice");
        settle.rejected = Some([2; 32]);
        assert!(
            !settle.ready([2; 32]) && !settle.ready([2; 32]),
            "rejected once"
        );
        assert!(!settle.ready([3; 32]));
        assert!(settle.ready([3; 32]));
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshdns-fleet-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("clusters.yaml")
    }

    #[test]
    fn a_file_over_the_cap_is_refused_at_start_naming_it() {
        let path = temp("cap");
        let mut text = String::from("clusters:\n  east-1:\n");
        text.push_str(&"#".repeat(MAX_FILE_BYTES));
        std::fs::write(&path, &text).unwrap();
        let err = Fleet::load(Some(path.clone())).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("over the limit of 1048576 bytes"), "{err}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    #[tokio::test]
    async fn reloads_wake_the_streams_whose_rules_changed() {
        let path = temp("reload");
        let east = ClusterName::new("east-1").unwrap();
        std::fs::write(
            &path,
            "clusters:\n  east-1:\n    namespaces: [shop]\n  west-1:\n",
        )
        .unwrap();
        let fleet = Arc::new(Fleet::load(Some(path.clone())).unwrap());
        let stop = CancellationToken::new();
        let metrics = Arc::new(Metrics::new());
        tokio::spawn(fleet.clone().follow(metrics.clone(), stop.clone()));
        let counted = |result: &str| {
            let registry = crate::registry::Registry::new(5, false, Arc::new(Metrics::new()));
            let text = metrics.render(&registry);
            let line = format!("meshdns_fleet_file_reloads_total{{result=\"{result}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(line.as_str()))
                .map_or(0, |n| n.trim().parse::<u64>().unwrap())
        };
        let mut reloads = fleet.reloads();
        let held = fleet.rules(&east).unwrap();
        let withdrawn = |held: Option<Arc<ClusterRules>>, mut reloads: watch::Receiver<u64>| {
            let fleet = fleet.clone();
            let east = east.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(5),
                    fleet.withdrawn(&east, held.as_deref(), &mut reloads),
                )
                .await
            }
        };
        // Another cluster's change, and a file over the cap: east-1 stays.
        std::fs::write(&path, "clusters:\n  east-1:\n    namespaces: [shop]\n").unwrap();
        let mut big = String::from("clusters:\n  west-1:\n");
        big.push_str(&"#".repeat(MAX_FILE_BYTES));
        tokio::time::sleep(POLL * 3).await;
        std::fs::write(&path, &big).unwrap();
        assert!(
            tokio::time::timeout(
                POLL * 4,
                fleet.withdrawn(&east, held.as_deref(), &mut reloads)
            )
            .await
            .is_err()
        );
        assert!(fleet.rules(&east).is_ok());
        // Counted as logged: the other cluster's change applied, the file
        // over the cap rejected once however many polls read it.
        assert_eq!((counted("applied"), counted("rejected")), (1, 1));
        // Narrowed: woken, with the new rules in force.
        std::fs::write(&path, "clusters:\n  east-1:\n    namespaces: [data]\n").unwrap();
        let changed = withdrawn(held, fleet.reloads()).await;
        assert!(matches!(changed, Ok(Withdrawn::Changed)), "{changed:?}");
        let now = fleet.rules(&east).unwrap().unwrap();
        assert!(now.namespaces.as_ref().unwrap().contains("data"));
        // Dropped: woken as removed.
        let held = fleet.rules(&east).unwrap();
        std::fs::write(&path, "clusters:\n  west-1:\n").unwrap();
        assert!(matches!(
            withdrawn(held, fleet.reloads()).await,
            Ok(Withdrawn::Removed)
        ));
        stop.cancel();
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
