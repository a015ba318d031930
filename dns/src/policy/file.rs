//! The policy file's YAML → [`FleetPolicy`], validated: every error names
//! the field it is about (`clusters.east-1.drain: 120 is above 100`).
//!
//! ```yaml
//! clusters:
//!   east-1:
//!     weight: 100          # percent of the weights the cluster exports (0-1000; default 100)
//!     drain: 50            # percent taken out of its answers (0-100; 100: last resort only)
//!     provider: aws        # overrides what its syncer announced
//! services:
//!   shop/web:              # namespace/name
//!     weight: {west-1: 200}            # per cluster, this service only (percent)
//!     drain: {east-1: 100}             # per cluster, this service only (the larger drain applies)
//!     failover: [us-west, provider:gcp]  # overrides meshdns.io/failover
//!                                      # ([]: none, not even the region default)
//!     primary: region:us-east          # overrides meshdns.io/primary
//!     minHealthy: 50%                  # overrides meshdns.io/min-healthy
//! regions:
//!   eu-central:
//!     failover: [us-east, us-west]     # default order for askers in eu-central
//! ```
//!
//! Unknown keys are refused (a typo must not silently mean "no drain").
//! An empty file is refused too: a file being rewritten in place can be
//! read empty, and that must not undo every drain; `{}` is the empty
//! policy.

use std::collections::BTreeMap;
use std::path::Path;

use meshdns_proto::error::{InvalidField, Problem};
use meshdns_proto::model::traffic::{check_failover, parse_scopes};
use meshdns_proto::model::{
    Bare, ClusterName, ClusterPolicy, FleetPolicy, LabelValue, MAX_SCOPES, MinHealthy, Namespace,
    RegionPolicy, Scope, ServiceKey, ServiceName, ServicePolicy,
};
use meshdns_proto::wire;
use serde::Deserialize;

use super::yaml::{Entries, Order, Scalar, within_budget};

/// The largest policy file read: it travels whole in a Watch Reset's first
/// part and in `ListClusters` (a client decodes 4 MiB by default).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The largest policy on the wire: a Watch Reset's first part carries it
/// beside up to a part's worth (1 MiB) of clusters, and a follower decodes
/// 4 MiB by default.
pub const MAX_WIRE_BYTES: usize = 2 * 1024 * 1024;

/// The largest weight percentage (10×), as the domain model caps it.
pub const MAX_WEIGHT_PERCENT: u32 = 1_000;

/// Why a policy file was not taken. Never retryable as it stands: the same
/// bytes fail the same way until the file changes.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    /// A FIFO, a device or a directory: never read (it could block or
    /// never end).
    #[error("not a regular file")]
    NotAFile,
    #[error("the file is over the limit of {MAX_FILE_BYTES} bytes")]
    TooBig,
    #[error("the file is not UTF-8 text")]
    NotText,
    #[error("the file is empty (write {{}} for no policy)")]
    Empty,
    /// Anchors and aliases replayed past [`super::yaml::MAX_VALUES`].
    #[error("{0}")]
    Expands(String),
    /// YAML that does not parse, an unknown key or a value of the wrong
    /// shape; serde's message names the field path.
    #[error("{0}")]
    Syntax(String),
    /// A value out of range or not a valid name.
    #[error(transparent)]
    Field(#[from] InvalidField),
    /// Valid here, but too big for a Watch Reset's part: followers could
    /// not take it.
    #[error("the policy encodes to {len} bytes, over the {MAX_WIRE_BYTES} followers take")]
    TooBigOnWire { len: usize },
    /// Valid here, but the wire form followers check refuses it (too many
    /// entries in a list): the hub refuses what followers would.
    #[error("followers would refuse this policy: {0}")]
    Followers(#[source] InvalidField),
}

/// Reads at most [`MAX_FILE_BYTES`] of the regular file at `path`
/// ([`crate::bounded::read`], as every operator's file is read).
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, PolicyFileError> {
    use crate::bounded::{ReadError, read};
    read(path, MAX_FILE_BYTES).map_err(|e| match e {
        ReadError::Io(e) => PolicyFileError::Read(e),
        ReadError::NotAFile => PolicyFileError::NotAFile,
        ReadError::TooBig { .. } => PolicyFileError::TooBig,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    clusters: Option<Entries<Option<RawCluster>>>,
    #[serde(default)]
    services: Option<Entries<Option<RawService>>>,
    #[serde(default)]
    regions: Option<Entries<Option<RawRegion>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    weight: Option<Scalar>,
    #[serde(default)]
    drain: Option<Scalar>,
    #[serde(default)]
    provider: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawService {
    #[serde(default)]
    weight: Option<Entries<Scalar>>,
    #[serde(default)]
    drain: Option<Entries<Scalar>>,
    /// `None` (absent or null): the annotation's; `[]`: explicitly none,
    /// not even the asker region's default.
    #[serde(default)]
    failover: Option<Order>,
    #[serde(default)]
    primary: Option<Scalar>,
    #[serde(default)]
    min_healthy: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    #[serde(default)]
    failover: Option<Order>,
}

fn bad(field: &str, why: impl Into<String>) -> InvalidField {
    InvalidField::new(field, Problem::OutOfRange(why.into()))
}

/// `inner` (whose field is relative, possibly `[2]`) seen from `path`.
fn at(path: &str, inner: InvalidField) -> InvalidField {
    let field = if inner.field.is_empty() {
        path.to_owned()
    } else if inner.field.starts_with('[') {
        format!("{path}{}", inner.field)
    } else {
        format!("{path}.{}", inner.field)
    };
    InvalidField::new(field, inner.problem)
}

/// A whole percentage in `0..=max`: `50` or `"50%"`.
fn percent(path: &str, value: &Scalar, max: u32) -> Result<u32, InvalidField> {
    let number = match value {
        Scalar::Int(n) if *n < 0 => return Err(bad(path, format!("{n} is below 0"))),
        Scalar::Int(n) => *n,
        Scalar::Float(f) => return Err(bad(path, format!("{f} is not a whole percentage"))),
        Scalar::Text(s) => {
            let digits = s.trim().strip_suffix('%').unwrap_or(s.trim()).trim();
            digits
                .parse::<u64>()
                .map_err(|_| {
                    bad(
                        path,
                        format!("{s:?} is not a whole percentage (write e.g. 50 or 50%)"),
                    )
                })?
                .into()
        }
    };
    if number > i128::from(max) {
        return Err(bad(path, format!("{number} is above {max}")));
    }
    Ok(number as u32)
}

fn cluster_name(path: &str, name: &str) -> Result<ClusterName, InvalidField> {
    ClusterName::new(name).map_err(|e| InvalidField::new(path, e.problem))
}

fn label(path: &str, name: &str) -> Result<LabelValue, InvalidField> {
    LabelValue::new(name).map_err(|e| InvalidField::new(path, e.problem))
}

fn service_key(path: &str, name: &str) -> Result<ServiceKey, InvalidField> {
    let (namespace, service) = name.split_once('/').ok_or_else(|| {
        bad(
            path,
            format!("{name:?}: write NAMESPACE/NAME, e.g. shop/web"),
        )
    })?;
    Ok(ServiceKey {
        namespace: Namespace::new(namespace).map_err(|e| InvalidField::new(path, e.problem))?,
        name: ServiceName::new(service).map_err(|e| InvalidField::new(path, e.problem))?,
    })
}

/// A failover order: a list (`[us-west, provider:gcp]`) or the
/// annotation's comma-separated text; bare names are regions; regions and
/// providers only, each once, at most [`MAX_SCOPES`]. `[]` (or `""`) is
/// an order of no place.
fn failover(path: &str, value: &Order) -> Result<Box<[Scope]>, InvalidField> {
    let scopes = match value {
        Order::List(items) => {
            if items.len() > MAX_SCOPES {
                return Err(InvalidField::new(
                    path,
                    Problem::TooMany {
                        what: "places",
                        count: items.len(),
                        max: MAX_SCOPES,
                    },
                ));
            }
            let mut scopes: Vec<Scope> = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let item_path = format!("{path}[{i}]");
                let scope =
                    Scope::parse(&item.text(), Bare::Region).map_err(|e| at(&item_path, e))?;
                if scopes.contains(&scope) {
                    return Err(bad(&item_path, format!("{scope} is listed twice")));
                }
                scopes.push(scope);
            }
            scopes
        }
        Order::Text(text) => parse_scopes(text, Bare::Region).map_err(|e| at(path, e))?,
    };
    check_failover(&scopes).map_err(|e| at(path, e))?;
    Ok(scopes.into())
}

fn primary(path: &str, value: &Scalar) -> Result<Scope, InvalidField> {
    let scope = Scope::parse(&value.text(), Bare::Region).map_err(|e| at(path, e))?;
    if !scope.is_region_or_provider() {
        return Err(bad(
            path,
            format!("{scope}: a primary is a region or a provider"),
        ));
    }
    Ok(scope)
}

fn min_healthy(path: &str, value: &Scalar) -> Result<MinHealthy, InvalidField> {
    MinHealthy::parse(&value.text()).map_err(|e| at(path, e))
}

fn cluster_policy(path: &str, raw: RawCluster) -> Result<ClusterPolicy, InvalidField> {
    let mut policy = ClusterPolicy::default();
    if let Some(v) = &raw.weight {
        policy.weight_percent = percent(&format!("{path}.weight"), v, MAX_WEIGHT_PERCENT)?;
    }
    if let Some(v) = &raw.drain {
        policy.drain_percent = percent(&format!("{path}.drain"), v, 100)? as u8;
    }
    if let Some(v) = &raw.provider {
        let field = format!("{path}.provider");
        policy.provider = Some(label(&field, &v.text())?);
    }
    Ok(policy)
}

/// A per-cluster map of percentages (a service's `weight` or `drain`).
fn per_cluster(
    path: &str,
    raw: Option<Entries<Scalar>>,
    max: u32,
) -> Result<BTreeMap<ClusterName, u32>, InvalidField> {
    let mut out = BTreeMap::new();
    for (name, value) in raw.unwrap_or_default().0 {
        let field = format!("{path}.{name}");
        let cluster = cluster_name(&field, &name)?;
        if out.insert(cluster, percent(&field, &value, max)?).is_some() {
            return Err(bad(&field, format!("{name} is listed twice")));
        }
    }
    Ok(out)
}

fn service_policy(path: &str, raw: RawService) -> Result<ServicePolicy, InvalidField> {
    Ok(ServicePolicy {
        weight_percent: per_cluster(&format!("{path}.weight"), raw.weight, MAX_WEIGHT_PERCENT)?,
        drain_percent: per_cluster(&format!("{path}.drain"), raw.drain, 100)?
            .into_iter()
            .map(|(cluster, drain)| (cluster, drain as u8))
            .collect(),
        failover: raw
            .failover
            .as_ref()
            .map(|v| failover(&format!("{path}.failover"), v))
            .transpose()?,
        primary: raw
            .primary
            .as_ref()
            .map(|v| primary(&format!("{path}.primary"), v))
            .transpose()?,
        min_healthy: raw
            .min_healthy
            .as_ref()
            .map(|v| min_healthy(&format!("{path}.minHealthy"), v))
            .transpose()?,
    })
}

/// Parses and validates a policy file's bytes.
pub fn parse(bytes: &[u8]) -> Result<FleetPolicy, PolicyFileError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(PolicyFileError::TooBig);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| PolicyFileError::NotText)?;
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(PolicyFileError::Empty);
    }
    let (doc, spent) = within_budget(|| serde_yaml_ng::from_str::<Doc>(text));
    let doc = doc.map_err(|e| {
        if spent {
            PolicyFileError::Expands(e.to_string())
        } else {
            PolicyFileError::Syntax(e.to_string())
        }
    })?;
    let mut policy = FleetPolicy::default();
    for (name, raw) in doc.clusters.unwrap_or_default().0 {
        let path = format!("clusters.{name}");
        let cluster = cluster_name(&path, &name)?;
        if policy.clusters.contains_key(&cluster) {
            return Err(bad(&path, format!("{cluster} is listed twice")).into());
        }
        policy
            .clusters
            .insert(cluster, cluster_policy(&path, raw.unwrap_or_default())?);
    }
    for (name, raw) in doc.services.unwrap_or_default().0 {
        let path = format!("services.{name}");
        let key = service_key(&path, &name)?;
        if policy.services.contains_key(&key) {
            return Err(bad(&path, format!("{key} is listed twice")).into());
        }
        policy
            .services
            .insert(key, service_policy(&path, raw.unwrap_or_default())?);
    }
    for (name, raw) in doc.regions.unwrap_or_default().0 {
        let path = format!("regions.{name}");
        let region = label(&path, &name)?;
        if policy.regions.contains_key(&region) {
            return Err(bad(&path, format!("{region} is listed twice")).into());
        }
        let raw = raw.unwrap_or_default();
        let order = match &raw.failover {
            Some(v) => failover(&format!("{path}.failover"), v)?,
            None => Box::default(),
        };
        policy
            .regions
            .insert(region, RegionPolicy { failover: order });
    }
    followers_take(&policy)?;
    Ok(policy)
}

/// Refuses what a follower would: a policy over [`MAX_WIRE_BYTES`]
/// encoded, or one its wire check refuses.
fn followers_take(policy: &FleetPolicy) -> Result<(), PolicyFileError> {
    let on_wire = wire::FleetPolicy::from(policy);
    let len = prost::Message::encoded_len(&on_wire);
    if len > MAX_WIRE_BYTES {
        return Err(PolicyFileError::TooBigOnWire { len });
    }
    FleetPolicy::try_from(&on_wire).map_err(PolicyFileError::Followers)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> FleetPolicy {
        parse(yaml.as_bytes()).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn error(yaml: &str) -> String {
        match parse(yaml.as_bytes()) {
            Ok(p) => panic!("{yaml} parsed: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_full_file_parses() {
        let policy = check(
            "clusters:\n  east-1:\n    weight: 200\n    drain: 50\n    provider: aws\n  west-1:\n    drain: 10%\n  south-1:\nservices:\n  shop/web:\n    weight: {west-1: 300}\n    drain: {east-1: 100}\n    failover: [us-west, provider:gcp]\n    primary: region:us-east\n    minHealthy: 50%\n  shop/db:\n    failover: \"us-east, us-west\"\n    minHealthy: 3\nregions:\n  eu-central:\n    failover: [region:us-east, us-west]\n",
        );
        let east = ClusterName::new("east-1").unwrap();
        let west = ClusterName::new("west-1").unwrap();
        let c = &policy.clusters[&east];
        assert_eq!(
            (
                c.weight_percent,
                c.drain_percent,
                c.provider.as_ref().map(|p| p.as_str())
            ),
            (200, 50, Some("aws"))
        );
        assert_eq!(policy.clusters[&west].drain_percent, 10);
        assert_eq!(
            policy.clusters[&ClusterName::new("south-1").unwrap()],
            ClusterPolicy::default()
        );
        let web = &policy.services[&service_key("", "shop/web").unwrap()];
        assert_eq!(web.weight_percent[&west], 300);
        assert_eq!(web.drain_percent[&east], 100);
        assert_eq!(
            meshdns_proto::model::traffic::format_scopes(web.failover.as_deref().unwrap()),
            "region:us-west,provider:gcp"
        );
        assert_eq!(web.primary.as_ref().unwrap().to_string(), "region:us-east");
        assert_eq!(web.min_healthy, Some(MinHealthy::Percent(50)));
        let db = &policy.services[&service_key("", "shop/db").unwrap()];
        assert_eq!(db.failover.as_ref().unwrap().len(), 2);
        assert_eq!(db.min_healthy, Some(MinHealthy::Count(3)));
        assert_eq!(policy.regions.len(), 1);
        // The composed weight: drain 50 halves, weight 200 doubles.
        let key = service_key("", "shop/other").unwrap();
        assert_eq!(
            policy.effective_weight(&east, &key, 10),
            FleetPolicy::default().effective_weight(&east, &key, 10)
        );
        assert!(check("{}").is_empty());
        assert!(check("# no policy\nclusters: {}\n").is_empty());
    }

    /// Every bad value is refused with the path of its field.
    #[test]
    fn every_bad_field_is_named() {
        for (yaml, want) in [
            (
                "clusters:\n  east-1:\n    drain: 120\n",
                "clusters.east-1.drain: 120 is above 100",
            ),
            (
                "clusters:\n  east-1:\n    drain: -5\n",
                "clusters.east-1.drain: -5 is below 0",
            ),
            (
                "clusters:\n  east-1:\n    drain: 12.5\n",
                "clusters.east-1.drain: 12.5 is not a whole percentage",
            ),
            (
                "clusters:\n  east-1:\n    drain: lots\n",
                "clusters.east-1.drain: \"lots\" is not a whole percentage",
            ),
            (
                "clusters:\n  east-1:\n    weight: 1001\n",
                "clusters.east-1.weight: 1001 is above 1000",
            ),
            (
                "clusters:\n  east-1:\n    provider: Not_A_Label!\n",
                "clusters.east-1.provider:",
            ),
            ("clusters:\n  East_1: {}\n", "clusters.East_1:"),
            ("clusters:\n  east-1:\n    drian: 10\n", "drian"),
            (
                "services:\n  web: {}\n",
                "services.web: \"web\": write NAMESPACE/NAME",
            ),
            ("services:\n  shop/Web: {}\n", "services.shop/Web:"),
            (
                "services:\n  shop/web:\n    drain: {east-1: 101}\n",
                "services.shop/web.drain.east-1: 101 is above 100",
            ),
            (
                "services:\n  shop/web:\n    weight: {bad_name: 10}\n",
                "services.shop/web.weight.bad_name:",
            ),
            (
                "services:\n  shop/web:\n    failover: [us-west, zone:us-west-1a]\n",
                "services.shop/web.failover[1]: zone:us-west-1a: a failover order names regions and providers only",
            ),
            (
                "services:\n  shop/web:\n    failover: [us-west, planet:mars]\n",
                "services.shop/web.failover[1]:",
            ),
            (
                "services:\n  shop/web:\n    failover: [us-west, us-west]\n",
                "services.shop/web.failover[1]: region:us-west is listed twice",
            ),
            (
                "services:\n  shop/web:\n    failover: \"us-west, cluster:east-1\"\n",
                "services.shop/web.failover[1]:",
            ),
            (
                "services:\n  shop/web:\n    primary: cluster:east-1\n",
                "services.shop/web.primary: cluster:east-1: a primary is a region or a provider",
            ),
            (
                "services:\n  shop/web:\n    minHealthy: 0\n",
                "services.shop/web.minHealthy:",
            ),
            (
                "services:\n  shop/web:\n    minHealthy: 150%\n",
                "services.shop/web.minHealthy:",
            ),
            (
                "services:\n  shop/web:\n    min_healthy: 3\n",
                "min_healthy",
            ),
            (
                "regions:\n  eu-central:\n    failover: [cluster:east-1]\n",
                "regions.eu-central.failover[0]:",
            ),
            ("regions:\n  Bad Region: {}\n", "regions.Bad Region:"),
            ("clusterz: {}\n", "clusterz"),
            ("", "empty"),
            ("# only a comment\n", "empty"),
            ("clusters: [", ""),
        ] {
            let got = error(yaml);
            assert!(got.contains(want), "{yaml:?}: got {got:?}, want {want:?}");
        }
        let many = format!(
            "services:\n  shop/web:\n    failover: [{}]\n",
            (0..=MAX_SCOPES)
                .map(|i| format!("r{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert!(error(&many).contains("services.shop/web.failover:"));
        let big = vec![b'#'; MAX_FILE_BYTES + 1];
        assert!(matches!(parse(&big), Err(PolicyFileError::TooBig)));
        assert!(matches!(
            parse(&[0xff, 0xfe]),
            Err(PolicyFileError::NotText)
        ));
    }

    /// serde's own errors (unknown keys, wrong shapes) name the path too.
    #[test]
    fn unknown_keys_name_their_place() {
        let got = error("clusters:\n  east-1:\n    drian: 10\n");
        assert!(got.contains("clusters.east-1"), "{got}");
        let got = error("services:\n  shop/web:\n    weight: 10\n");
        assert!(got.contains("services.shop/web.weight"), "{got}");
    }

    /// `n` services, the first anchoring a per-cluster weight map of
    /// `entries`, every other one aliasing it.
    fn aliased(n: usize, entries: usize) -> String {
        let map = (0..entries)
            .map(|i| format!("c{i}: 1"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut yaml = format!("services:\n  s/s0: {{weight: &m {{{map}}}}}\n");
        for i in 1..n {
            yaml.push_str(&format!("  s/s{i}: {{weight: *m}}\n"));
        }
        yaml
    }

    /// Anchors and aliases cannot expand a small file into a huge policy:
    /// the parse stops at its budget of values and says why; a value of
    /// the wrong shape is refused before it is built.
    #[test]
    fn aliases_cannot_multiply_the_file() {
        let yaml = aliased(700, 1_000);
        assert!(yaml.len() < 64 * 1024);
        match parse(yaml.as_bytes()) {
            Err(PolicyFileError::Expands(e)) => {
                assert!(e.contains("anchors and aliases"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        // The review's shape: a list where a percentage goes.
        let list = format!(
            "clusters:\n  a: {{weight: &x [{}]}}\n  b: {{weight: [*x, *x]}}\n",
            vec!["1"; 1_000].join(",")
        );
        let got = error(&list);
        assert!(got.contains("clusters.a.weight"), "{got}");
    }

    /// The hub refuses what its followers would: a policy too big for a
    /// Watch Reset's part, or a list over the wire's entry limit.
    #[test]
    fn what_followers_refuse_is_refused() {
        match parse(aliased(500, 900).as_bytes()) {
            Err(PolicyFileError::TooBigOnWire { len }) => assert!(len > MAX_WIRE_BYTES),
            other => panic!("{other:?}"),
        }
        let name = |mut i: usize| {
            let mut s = String::from("c");
            loop {
                s.push(char::from_digit((i % 36) as u32, 36).unwrap());
                i /= 36;
                if i == 0 {
                    return s;
                }
            }
        };
        let max = meshdns_proto::convert::MAX_POLICY_ENTRIES;
        let drains = (0..=max)
            .map(|i| format!("{}: 1", name(i)))
            .collect::<Vec<_>>()
            .join(",");
        let yaml = format!("services:\n  s/s: {{drain: {{{drains}}}}}\n");
        assert!(yaml.len() <= MAX_FILE_BYTES);
        let got = error(&yaml);
        assert!(
            got.contains("services.s/s.drain") && got.contains(&format!("more than {max} entries")),
            "{got}"
        );
    }

    /// `failover: []` is carried as explicitly none (`Some([])`), which
    /// the model answers ahead of the asker region's default, through the
    /// wire too; left out or `null`, the annotation's order (then the
    /// region's default) applies.
    #[test]
    fn an_empty_failover_cancels_the_region_default() {
        let policy = check(
            "services:\n  shop/web:\n    failover: []\n  shop/db:\n    failover: ~\n  shop/api:\n    minHealthy: 2\nregions:\n  eu:\n    failover: [us-east]\n",
        );
        let eu = LabelValue::new("eu").unwrap();
        let web = service_key("", "shop/web").unwrap();
        assert_eq!(policy.services[&web].failover.as_deref(), Some(&[][..]));
        assert!(policy.failover(&web, &[], Some(&eu)).is_empty());
        for other in ["shop/db", "shop/api"] {
            let key = service_key("", other).unwrap();
            assert_eq!(policy.services[&key].failover, None, "{other}");
            assert_eq!(
                meshdns_proto::model::traffic::format_scopes(policy.failover(&key, &[], Some(&eu))),
                "region:us-east"
            );
        }
        let back = FleetPolicy::try_from(&wire::FleetPolicy::from(&policy)).unwrap();
        assert_eq!(back, policy);
        assert!(
            super::super::diff::changes(&FleetPolicy::default(), &policy).contains(&format!(
                "service shop/web failover (annotation) → {}",
                super::super::diff::NO_FAILOVER
            ))
        );
    }
}
