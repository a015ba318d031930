//! The `file:PATH` source: the export model as YAML, followed as it changes
//! (edits in place and rewrites by rename alike).
//!
//! A file that does not parse keeps the last good state exported. A service
//! that does not validate is reported and keeps its last good version; the
//! rest of the file applies.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshdns_proto::InvalidField;
use meshdns_proto::error::Problem;
use meshdns_proto::model::{
    Affinity, Cluster, ClusterName, Endpoint, ExportSet, Health, HealthCheck, Hostname, LabelValue,
    MAX_ADDRESSES_PER_NODE, MAX_NODES, Mode, Namespace, NodeAddresses, NodeName, Policy, Scope,
    ServiceExport, ServiceKey, ServiceName, parse_cidr,
};
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::{Exports, Overrides, fields};
use crate::error::Error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileDoc {
    cluster: Option<String>,
    region: Option<String>,
    zone: Option<String>,
    /// The cloud provider (`--provider` wins).
    provider: Option<String>,
    #[serde(rename = "clientCIDRs", default)]
    client_cidrs: Vec<String>,
    /// The nodes' own addresses, for the node tier.
    #[serde(default)]
    nodes: Vec<FileNode>,
    #[serde(default)]
    services: Vec<FileService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    name: String,
    addresses: Vec<String>,
}

/// Scopes as one string in the annotation's syntax, or as a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileScopes {
    Text(String),
    List(Vec<String>),
}

impl FileScopes {
    fn text(&self) -> String {
        match self {
            FileScopes::Text(t) => t.clone(),
            FileScopes::List(items) => items.join(","),
        }
    }
}

/// `minHealthy: 3` or `minHealthy: 50%`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileMinHealthy {
    Count(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileService {
    name: String,
    namespace: String,
    mode: Option<String>,
    affinity: Option<String>,
    /// Answer TTL in seconds.
    ttl: Option<u32>,
    /// Each endpoint's weight unless it says (`--weight` when absent).
    weight: Option<u64>,
    /// Regions (or `provider:` scopes) spill follows, in order.
    failover: Option<FileScopes>,
    /// The region (or `provider:`) every asker is served from while healthy.
    primary: Option<String>,
    min_healthy: Option<FileMinHealthy>,
    /// Who may resolve it: clusters (bare), `zone:`, `region:`, `provider:`.
    export_to: Option<FileScopes>,
    #[serde(rename = "clusterIPs", default)]
    cluster_ips: Vec<String>,
    #[serde(default)]
    ports: Vec<FilePort>,
    #[serde(default)]
    endpoints: Vec<FileEndpoint>,
    /// The service's health check, in the `meshdns.io/health-check` syntax.
    health_check: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePort {
    name: Option<String>,
    protocol: Option<String>,
    port: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEndpoint {
    ip: Option<String>,
    #[serde(default)]
    ips: Vec<String>,
    hostname: Option<String>,
    zone: Option<String>,
    node: Option<String>,
    ready: Option<bool>,
    serving: Option<bool>,
    #[serde(default)]
    terminating: bool,
    /// This endpoint's weight (0: only when nothing else is healthy).
    weight: Option<u64>,
}

fn invalid(field: &str, problem: Problem) -> InvalidField {
    InvalidField::new(field, problem)
}

fn label<T>(
    field: &str,
    value: &str,
    parse: impl FnOnce(&str) -> Result<T, InvalidField>,
) -> Result<T, InvalidField> {
    parse(value).map_err(|e| e.within(field))
}

fn address(field: String, value: &str) -> Result<IpAddr, InvalidField> {
    value.trim().parse().map_err(|_| {
        invalid(
            &field,
            Problem::BadAddress {
                value: value.to_owned(),
            },
        )
    })
}

impl FileService {
    fn key(&self) -> Result<ServiceKey, InvalidField> {
        Ok(ServiceKey {
            namespace: label("namespace", &self.namespace, Namespace::new)?,
            name: label("name", &self.name, ServiceName::new)?,
        })
    }

    /// The export; endpoints weigh their own `weight`, else the service's,
    /// else `default_weight` (`--weight`).
    /// Its `exportTo` (empty when it has none), `None` when that is bad.
    fn export_to_update(&self) -> Option<Box<[Scope]>> {
        match &self.export_to {
            None => Some(Box::default()),
            Some(e) => fields::export_to("exportTo", &e.text()).ok(),
        }
    }

    fn to_model(&self, default_weight: u32) -> Result<ServiceExport, InvalidField> {
        let key = self.key()?;
        let mut ports = Vec::with_capacity(self.ports.len());
        for (i, p) in self.ports.iter().enumerate() {
            ports.push(fields::port(
                &format!("ports[{i}]"),
                p.name.as_deref(),
                p.protocol.as_deref(),
                i64::from(p.port),
            )?);
        }
        let mode = match &self.mode {
            None => Mode::Endpoints,
            Some(m) => fields::mode("mode", m)?,
        };
        let affinity = match &self.affinity {
            None => Affinity::Nearest,
            Some(a) => fields::affinity("affinity", a)?,
        };
        let weight = match self.weight {
            None => default_weight,
            Some(w) => fields::weight_number("weight", w)?,
        };
        let failover = self
            .failover
            .as_ref()
            .map(|f| fields::failover("failover", &f.text()))
            .transpose()?
            .unwrap_or_default();
        let primary = self
            .primary
            .as_deref()
            .map(|p| fields::primary("primary", p))
            .transpose()?;
        let min_healthy = self
            .min_healthy
            .as_ref()
            .map(|m| match m {
                FileMinHealthy::Count(n) => fields::min_healthy("minHealthy", &n.to_string()),
                FileMinHealthy::Text(t) => fields::min_healthy("minHealthy", t.trim()),
            })
            .transpose()?;
        let export_to = self
            .export_to
            .as_ref()
            .map(|e| fields::export_to("exportTo", &e.text()))
            .transpose()?
            .unwrap_or_default();
        let cluster_ips = self
            .cluster_ips
            .iter()
            .enumerate()
            .map(|(i, a)| address(format!("clusterIPs[{i}]"), a))
            .collect::<Result<_, _>>()?;
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for (i, e) in self.endpoints.iter().enumerate() {
            let field = format!("endpoints[{i}]");
            let mut addresses = Vec::new();
            if let Some(ip) = &e.ip {
                addresses.push(address(format!("{field}.ip"), ip)?);
            }
            for (j, ip) in e.ips.iter().enumerate() {
                addresses.push(address(format!("{field}.ips[{j}]"), ip)?);
            }
            if addresses.is_empty() {
                return Err(invalid(&format!("{field}.ip"), Problem::Missing));
            }
            let ready = e.ready.unwrap_or(!e.terminating);
            let weight = match e.weight {
                None => weight,
                Some(w) => fields::weight_number(&format!("{field}.weight"), w)?,
            };
            endpoints.push(Endpoint {
                addresses: addresses.into(),
                hostname: e
                    .hostname
                    .as_deref()
                    .map(|h| label(&format!("{field}.hostname"), h, Hostname::new))
                    .transpose()?,
                zone: e
                    .zone
                    .as_deref()
                    .map(|z| label(&format!("{field}.zone"), z, LabelValue::new))
                    .transpose()?,
                node: e
                    .node
                    .as_deref()
                    .map(|n| label(&format!("{field}.node"), n, NodeName::new))
                    .transpose()?,
                ready,
                serving: e.serving.unwrap_or(ready),
                terminating: e.terminating,
                health: Health::Unchecked,
                weight,
            });
        }
        let export = ServiceExport::new(
            key,
            ports,
            mode,
            cluster_ips,
            endpoints,
            Policy {
                affinity,
                ttl: self.ttl,
                failover,
                primary,
                min_healthy,
                export_to,
                traffic_distribution: None,
            },
        )?;
        match &self.health_check {
            None => Ok(export),
            Some(text) => HealthCheck::parse(text)
                .and_then(|check| export.with_health_check(check))
                .map_err(|e| e.within("healthCheck")),
        }
    }
}

/// Parses the file's text. `previous` is the last good state: a service
/// that fails validation keeps its version from there. Returns the export
/// set and one message per refused service.
pub fn parse(
    text: &str,
    overrides: &Overrides,
    previous: Option<&ExportSet>,
) -> Result<(ExportSet, Vec<String>), Error> {
    let cfg = |field: &str, e: InvalidField| {
        let e = e.within(field);
        Error::Config {
            field: e.field,
            problem: e.problem.to_string(),
        }
    };
    let doc: FileDoc = serde_yaml_ng::from_str(text).map_err(|e| Error::Parse {
        path: String::new(),
        message: e.to_string(),
    })?;
    let name = overrides
        .cluster
        .clone()
        .or(doc.cluster)
        .ok_or_else(|| Error::Config {
            field: "cluster".into(),
            problem: "is required (in the file or as --cluster)".into(),
        })?;
    let optional = |field: &str, v: Option<String>| -> Result<Option<LabelValue>, Error> {
        v.filter(|s| !s.is_empty())
            .map(|s| LabelValue::new(&s).map_err(|e| cfg(field, e)))
            .transpose()
    };
    let cidrs = if overrides.client_cidrs.is_empty() {
        doc.client_cidrs
    } else {
        overrides.client_cidrs.clone()
    };
    let client_cidrs = cidrs
        .iter()
        .enumerate()
        .map(|(i, c)| parse_cidr(c).map_err(|e| cfg(&format!("clientCIDRs[{i}]"), e)))
        .collect::<Result<_, _>>()?;
    let cluster = Cluster {
        name: ClusterName::new(&name).map_err(|e| cfg("cluster", e))?,
        region: optional("region", overrides.region.clone().or(doc.region))?,
        zone: optional("zone", overrides.zone.clone().or(doc.zone))?,
        provider: optional("provider", overrides.provider.clone().or(doc.provider))?,
        client_cidrs,
        version: overrides.version.clone(),
        nodes: nodes(&doc.nodes).map_err(|e| Error::Config {
            field: e.field,
            problem: e.problem.to_string(),
        })?,
    };
    let mut services = BTreeMap::new();
    let mut refused = Vec::new();
    for (i, service) in doc.services.iter().enumerate() {
        let result = service.to_model(overrides.weight).and_then(|s| {
            if services.contains_key(s.key()) {
                Err(invalid("", Problem::DuplicateService(s.key().to_string())))
            } else {
                Ok(s)
            }
        });
        match result {
            Ok(s) => {
                services.insert(s.key().clone(), Arc::new(s));
            }
            Err(e) => {
                let shown = format!("{}/{}", service.namespace, service.name);
                let last_good = service.key().ok().and_then(|k| {
                    previous
                        .and_then(|p| p.services.get(&k))
                        .map(|s| (k, s.clone()))
                });
                // Fail closed: a last good version that reaches askers the
                // new (or unreadable) exportTo keeps out is withdrawn.
                let update = service.export_to_update();
                let (kept, note) = match last_good {
                    Some((k, s))
                        if fields::last_good_within(&s.policy().export_to, update.as_deref()) =>
                    {
                        (Some((k, s)), "; its last good version stays exported")
                    }
                    Some(_) => (
                        None,
                        "; withdrawn (fail closed): its last good version is exported more widely than exportTo now says",
                    ),
                    None => (None, ""),
                };
                refused.push(format!("services[{i}] ({shown}): {}{note}", describe(&e)));
                if let Some((k, s)) = kept {
                    services.entry(k).or_insert(s);
                }
            }
        }
    }
    Ok((ExportSet { cluster, services }, refused))
}

/// The file's `nodes`, each checked, at most [`MAX_NODES`] with at most
/// [`MAX_ADDRESSES_PER_NODE`] addresses each (what the registry accepts).
fn nodes(nodes: &[FileNode]) -> Result<Vec<NodeAddresses>, InvalidField> {
    if nodes.len() > MAX_NODES {
        return Err(invalid(
            "nodes",
            Problem::TooMany {
                what: "nodes",
                count: nodes.len(),
                max: MAX_NODES,
            },
        ));
    }
    let mut seen = std::collections::HashSet::new();
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let field = format!("nodes[{i}]");
            let name = label(&format!("{field}.name"), &n.name, NodeName::new)?;
            if !seen.insert(name.clone()) {
                return Err(invalid(
                    &format!("{field}.name"),
                    Problem::OutOfRange(format!("node {name} is listed twice")),
                ));
            }
            if n.addresses.is_empty() {
                return Err(invalid(&format!("{field}.addresses"), Problem::NoAddresses));
            }
            if n.addresses.len() > MAX_ADDRESSES_PER_NODE {
                return Err(invalid(
                    &format!("{field}.addresses"),
                    Problem::TooMany {
                        what: "addresses",
                        count: n.addresses.len(),
                        max: MAX_ADDRESSES_PER_NODE,
                    },
                ));
            }
            let addresses = n
                .addresses
                .iter()
                .enumerate()
                .map(|(j, a)| address(format!("{field}.addresses[{j}]"), a))
                .collect::<Result<_, _>>()?;
            Ok(NodeAddresses { name, addresses })
        })
        .collect()
}

/// The error with its field path, or just the problem when it concerns
/// the service as a whole.
fn describe(e: &InvalidField) -> String {
    if e.field.is_empty() {
        e.problem.to_string()
    } else {
        e.to_string()
    }
}

/// What identifies one version of the file on disk; a rename gives a new inode.
fn stamp(path: &Path) -> std::io::Result<(SystemTime, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.modified()?, meta.len(), meta.ino()))
}

/// Follows `path`, polling every `interval`, until `shutdown`. The first
/// read happens before this returns, so a bad file is reported at once.
pub fn follow(
    path: PathBuf,
    overrides: Overrides,
    interval: Duration,
    shutdown: CancellationToken,
) -> Exports {
    let (tx, rx) = watch::channel(None);
    let mut reader = Reader {
        path,
        overrides,
        last_stamp: None,
        last_text: None,
        tx,
    };
    reader.poll();
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => reader.poll(),
            }
        }
    });
    rx
}

struct Reader {
    path: PathBuf,
    overrides: Overrides,
    last_stamp: Option<(SystemTime, u64, u64)>,
    last_text: Option<String>,
    tx: watch::Sender<Option<Arc<ExportSet>>>,
}

impl Reader {
    fn poll(&mut self) {
        let shown = self.path.display().to_string();
        let stamp = match stamp(&self.path) {
            Ok(s) => s,
            Err(e) => {
                if self.last_stamp.take().is_some() || self.last_text.is_none() {
                    let err = Error::Read {
                        path: shown,
                        source: e,
                    };
                    error!(error = %err, source = ?std::error::Error::source(&err), "export file unreadable; keeping the last good state");
                    self.last_text = Some(String::new());
                }
                return;
            }
        };
        if self.last_stamp == Some(stamp) {
            return;
        }
        self.last_stamp = Some(stamp);
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                error!(path = %shown, error = %e, "cannot read export file; keeping the last good state");
                return;
            }
        };
        if self.last_text.as_deref() == Some(text.as_str()) {
            return;
        }
        self.last_text = Some(text.clone());
        let previous = self.tx.borrow().clone();
        match parse(&text, &self.overrides, previous.as_deref()) {
            Ok((set, refused)) => {
                for message in refused {
                    warn!(path = %shown, "refused service: {message}");
                }
                info!(path = %shown, cluster = %set.cluster.name, services = set.services.len(), "export file loaded");
                self.tx.send_if_modified(|current| {
                    if current.as_deref() == Some(&set) {
                        false
                    } else {
                        *current = Some(Arc::new(set));
                        true
                    }
                });
            }
            Err(e) => {
                let e = match e {
                    Error::Parse { message, .. } => Error::Parse {
                        path: shown,
                        message,
                    },
                    other => other,
                };
                error!(error = %e, "export file rejected; keeping the last good state");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cluster: east-1
region: us-east
zone: us-east-1a
clientCIDRs: [127.0.0.2/32, 10.1.0.0/16]
services:
  - name: web
    namespace: shop
    affinity: zone
    ports: [{name: http, protocol: TCP, port: 80}]
    endpoints:
      - {ip: 10.1.0.11, zone: us-east-1a}
      - {ip: 10.1.0.12, hostname: web-1, ready: false}
  - name: api
    namespace: shop
    mode: clusterip
    clusterIPs: [10.96.0.10]
    ports: [{name: grpc, port: 9090}]
    endpoints: [{ip: 10.1.0.20}]
"#;

    fn check(text: &str, expected: Result<(usize, Vec<&str>), &str>) {
        let got = parse(text, &Overrides::default(), None)
            .map(|(set, refused)| (set.services.len(), refused))
            .map_err(|e| e.to_string());
        match (got, expected) {
            (Ok((n, refused)), Ok((en, erefused))) => {
                assert_eq!(n, en);
                assert_eq!(refused, erefused);
            }
            (Err(e), Err(expected)) => {
                assert!(e.contains(expected), "{e:?} should contain {expected:?}")
            }
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn good_file() {
        let (set, refused) = parse(GOOD, &Overrides::default(), None).unwrap();
        assert!(refused.is_empty());
        assert_eq!(set.cluster.name.as_str(), "east-1");
        assert_eq!(set.cluster.client_cidrs.len(), 2);
        let web = set
            .services
            .values()
            .find(|s| s.key().name.as_str() == "web")
            .unwrap();
        assert_eq!(web.policy().affinity, Affinity::Zone);
        assert!(web.endpoints()[0].ready);
        assert!(!web.endpoints()[1].ready);
        assert!(!web.endpoints()[1].serving);
    }

    #[test]
    fn file_table() {
        check("cluster: a\nservices: []\n", Ok((0, vec![])));
        check("services: []\n", Err("cluster: is required"));
        check(
            "cluster: A\n",
            Err("cluster: \"A\" is not a valid RFC 1123 label"),
        );
        check("cluster: a\nclientCIDRs: [nope]\n", Err("clientCIDRs[0]"));
        check("cluster: a\nbogus: 1\n", Err("unknown field `bogus`"));
        check("cluster: a\nservices: [\n", Err("did not find expected"));
        check(
            "cluster: a\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.0.0.300}]}\n  - {name: ok, namespace: shop, ports: [{port: 80}]}\n",
            Ok((
                1,
                vec![
                    r#"services[0] (shop/web): endpoints[0].ip: "10.0.0.300" is not an IP address"#,
                ],
            )),
        );
        check(
            "cluster: a\nservices:\n  - {name: web, namespace: shop, ports: []}\n",
            Ok((
                0,
                vec!["services[0] (shop/web): ports: a service needs at least one port"],
            )),
        );
        check(
            "cluster: a\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}]}\n  - {name: web, namespace: shop, ports: [{port: 81}]}\n",
            Ok((
                1,
                vec!["services[1] (shop/web): duplicate service shop/web"],
            )),
        );
        check(
            "cluster: a\nservices:\n  - {name: web, namespace: shop, ports: [{name: http, port: 80}], healthCheck: 'http:http/healthz rise=1'}\n",
            Ok((1, vec![])),
        );
        check(
            "cluster: a\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], healthCheck: 'tcp:80 fall=0'}\n",
            Ok((
                0,
                vec![
                    r#"services[0] (shop/web): healthCheck.fall: "0" is not a count from 1 to 10"#,
                ],
            )),
        );
        check(
            "cluster: a\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], healthCheck: 'tcp:81'}\n",
            Ok((
                0,
                vec![
                    "services[0] (shop/web): healthCheck.port: 81 is not one of the service's TCP ports",
                ],
            )),
        );
    }

    #[test]
    fn weights_and_policy_fields() {
        let text = r#"
cluster: east-1
provider: aws
nodes:
  - {name: node-1, addresses: [10.1.0.1, "fd00::1"]}
services:
  - name: web
    namespace: shop
    weight: 30
    failover: [us-west, "provider:gcp"]
    primary: us-east
    minHealthy: 50%
    exportTo: "east-1, region:us-west"
    ports: [{port: 80}]
    endpoints:
      - {ip: 10.1.0.11}
      - {ip: 10.1.0.12, weight: 0}
      - {ip: 10.1.0.13, weight: 80}
  - name: api
    namespace: shop
    minHealthy: 3
    ports: [{port: 80}]
    endpoints: [{ip: 10.1.0.21}]
"#;
        let overrides = Overrides {
            weight: 20,
            ..Overrides::default()
        };
        let (set, refused) = parse(text, &overrides, None).unwrap();
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(set.cluster.provider.as_ref().unwrap().as_str(), "aws");
        assert_eq!(set.cluster.nodes.len(), 1);
        assert_eq!(set.cluster.nodes[0].addresses.len(), 2);
        let get = |name: &str| {
            set.services
                .values()
                .find(|s| s.key().name.as_str() == name)
                .unwrap()
                .clone()
        };
        let web = get("web");
        let weights: Vec<u32> = web.endpoints().iter().map(|e| e.weight).collect();
        assert_eq!(
            weights,
            vec![30, 0, 80],
            "the endpoint's, else the service's"
        );
        let policy = web.policy();
        assert_eq!(policy.failover.len(), 2);
        assert_eq!(
            policy.primary.as_ref().unwrap().to_string(),
            "region:us-east"
        );
        assert_eq!(
            policy.min_healthy,
            Some(meshdns_proto::model::MinHealthy::Percent(50))
        );
        assert_eq!(policy.export_to.len(), 2);
        let api = get("api");
        assert_eq!(api.endpoints()[0].weight, 20, "--weight when nothing says");
        assert_eq!(
            api.policy().min_healthy,
            Some(meshdns_proto::model::MinHealthy::Count(3))
        );
        let flag = Overrides {
            provider: Some("gcp".into()),
            ..Overrides::default()
        };
        let (set, _) = parse(text, &flag, None).unwrap();
        assert_eq!(
            set.cluster.provider.unwrap().as_str(),
            "gcp",
            "--provider wins"
        );
    }

    #[test]
    fn bad_weights_and_policy_fields_name_the_field() {
        let one = |fields: &str| {
            format!(
                "cluster: a\nservices:\n  - {{name: web, namespace: shop, ports: [{{port: 80}}], {fields}}}\n"
            )
        };
        for (fields, want) in [
            (
                "weight: 10001",
                "services[0] (shop/web): weight: weight 10001 is over",
            ),
            (
                "endpoints: [{ip: 10.0.0.1, weight: 20000}]",
                "services[0] (shop/web): endpoints[0].weight: weight 20000 is over",
            ),
            ("failover: [zone:z1]", "services[0] (shop/web): failover"),
            (
                "primary: 'us-east,us-west'",
                "services[0] (shop/web): primary",
            ),
            ("minHealthy: 0%", "services[0] (shop/web): minHealthy"),
            (
                "exportTo: [planet:earth]",
                "services[0] (shop/web): exportTo",
            ),
        ] {
            let (set, refused) = parse(&one(fields), &Overrides::default(), None).unwrap();
            assert!(set.services.is_empty(), "{fields}");
            assert_eq!(refused.len(), 1, "{fields}: {refused:?}");
            assert!(refused[0].starts_with(want), "{fields}: {refused:?}");
        }
        check(
            "cluster: a\nprovider: -aws\n",
            Err("provider: \"-aws\" is not a valid label value"),
        );
        check(
            "cluster: a\nnodes: [{name: n1, addresses: [nope]}]\n",
            Err("nodes[0].addresses[0]: \"nope\" is not an IP address"),
        );
        check(
            "cluster: a\nnodes: [{name: n1, addresses: []}]\n",
            Err("nodes[0].addresses"),
        );
        check(
            "cluster: a\nnodes: [{name: n1, addresses: [10.0.0.1]}, {name: n1, addresses: [10.0.0.2]}]\n",
            Err("nodes[1].name"),
        );
    }

    #[test]
    fn refused_service_keeps_last_good_version() {
        let (first, _) = parse(GOOD, &Overrides::default(), None).unwrap();
        let broken = GOOD.replace("port: 80}", "port: 0}");
        let (second, refused) = parse(&broken, &Overrides::default(), Some(&first)).unwrap();
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert!(
            refused[0].contains("last good version stays"),
            "{refused:?}"
        );
        assert_eq!(first, second);
    }

    /// export-to fails closed: an empty one is refused, and a refused
    /// update that adds or narrows it (here with a typo) withdraws the
    /// service instead of leaving the wider last good version exported.
    #[test]
    fn a_refused_export_to_withdraws_the_wider_export() {
        let (first, _) = parse(GOOD, &Overrides::default(), None).unwrap();
        let web = ServiceKey {
            namespace: Namespace::new("shop").unwrap(),
            name: ServiceName::new("web").unwrap(),
        };
        let with = |export_to: &str| {
            GOOD.replacen(
                "    affinity: zone\n",
                &format!("    affinity: zone\n    exportTo: {export_to}\n"),
                1,
            )
        };
        for bad in ["\"regoin:us-west\"", "[]", "\" , \"", "\"\""] {
            let (second, refused) = parse(&with(bad), &Overrides::default(), Some(&first)).unwrap();
            assert!(!second.services.contains_key(&web), "{bad}: still exported");
            assert!(second.services.len() == 1, "{bad}: api stays");
            assert_eq!(refused.len(), 1, "{refused:?}");
            assert!(
                refused[0].contains("exportTo") && refused[0].contains("withdrawn"),
                "{refused:?}"
            );
        }
        // Restricted, then a bad port: the last good (restricted) version
        // stays while the new export-to is no narrower.
        let (west, _) = parse(&with("region:us-west"), &Overrides::default(), None).unwrap();
        let broken = with("\"region:us-west, east-1\"").replace("port: 80}", "port: 0}");
        let (second, refused) = parse(&broken, &Overrides::default(), Some(&west)).unwrap();
        assert_eq!(second, west, "{refused:?}");
        let narrower = with("east-1").replace("port: 80}", "port: 0}");
        let (second, _) = parse(&narrower, &Overrides::default(), Some(&west)).unwrap();
        assert!(!second.services.contains_key(&web), "narrowed: withdrawn");
    }

    #[test]
    fn overrides_win() {
        let overrides = Overrides {
            cluster: Some("west-9".into()),
            zone: Some("z9".into()),
            client_cidrs: vec!["10.9.0.0/16".into()],
            ..Overrides::default()
        };
        let (set, _) = parse(GOOD, &overrides, None).unwrap();
        assert_eq!(set.cluster.name.as_str(), "west-9");
        assert_eq!(set.cluster.zone.unwrap().as_str(), "z9");
        assert_eq!(set.cluster.region.unwrap().as_str(), "us-east");
        assert_eq!(set.cluster.client_cidrs[0].to_string(), "10.9.0.0/16");
    }
}
