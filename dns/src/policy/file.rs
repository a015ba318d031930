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

use meshdns_proto::error::{InvalidField, Problem};
use meshdns_proto::model::traffic::{check_failover, parse_scopes};
use meshdns_proto::model::{
    Bare, ClusterName, ClusterPolicy, FleetPolicy, LabelValue, MAX_SCOPES, MinHealthy, Namespace,
    RegionPolicy, Scope, ServiceKey, ServiceName, ServicePolicy,
};
use serde::Deserialize;
use serde_yaml_ng::Value;

/// The largest policy file read: it travels whole in a Watch Reset's first
/// part and in `ListClusters` (a client decodes 4 MiB by default).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The largest weight percentage (10×), as the domain model caps it.
pub const MAX_WEIGHT_PERCENT: u32 = 1_000;

/// Why a policy file was not taken. Never retryable as it stands: the same
/// bytes fail the same way until the file changes.
#[derive(Debug, thiserror::Error)]
pub enum PolicyFileError {
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    #[error("the file is {size} bytes, over the limit of {MAX_FILE_BYTES}")]
    TooBig { size: usize },
    #[error("the file is not UTF-8 text")]
    NotText,
    #[error("the file is empty (write {{}} for no policy)")]
    Empty,
    /// YAML that does not parse, an unknown key or a value of the wrong
    /// shape; serde's message names the field path.
    #[error("{0}")]
    Syntax(String),
    /// A value out of range or not a valid name.
    #[error(transparent)]
    Field(#[from] InvalidField),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    clusters: Option<BTreeMap<String, Option<RawCluster>>>,
    #[serde(default)]
    services: Option<BTreeMap<String, Option<RawService>>>,
    #[serde(default)]
    regions: Option<BTreeMap<String, Option<RawRegion>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    #[serde(default)]
    weight: Option<Value>,
    #[serde(default)]
    drain: Option<Value>,
    #[serde(default)]
    provider: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawService {
    #[serde(default)]
    weight: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    drain: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    failover: Option<Value>,
    #[serde(default)]
    primary: Option<Value>,
    #[serde(default)]
    min_healthy: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    #[serde(default)]
    failover: Option<Value>,
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

/// A YAML scalar as text, for names and lists.
fn text<'a>(path: &str, value: &'a Value) -> Result<std::borrow::Cow<'a, str>, InvalidField> {
    match value {
        Value::String(s) => Ok(s.as_str().into()),
        Value::Number(n) => Ok(n.to_string().into()),
        _ => Err(bad(path, "want a string")),
    }
}

/// A whole percentage in `0..=max`: `50` or `"50%"`.
fn percent(path: &str, value: &Value, max: u32) -> Result<u32, InvalidField> {
    let number = match value {
        Value::Number(n) => {
            if let Some(v) = n.as_u64() {
                v
            } else if n.as_i64().is_some() {
                return Err(bad(path, format!("{n} is below 0")));
            } else {
                return Err(bad(path, format!("{n} is not a whole percentage")));
            }
        }
        Value::String(s) => {
            let digits = s.trim().strip_suffix('%').unwrap_or(s.trim()).trim();
            digits.parse::<u64>().map_err(|_| {
                bad(
                    path,
                    format!("{s:?} is not a whole percentage (write e.g. 50 or 50%)"),
                )
            })?
        }
        _ => return Err(bad(path, "want a whole percentage, e.g. 50")),
    };
    if number > u64::from(max) {
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
/// providers only, each once, at most [`MAX_SCOPES`].
fn failover(path: &str, value: &Value) -> Result<Box<[Scope]>, InvalidField> {
    let scopes = match value {
        Value::Sequence(items) => {
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
                let scope = Scope::parse(&text(&item_path, item)?, Bare::Region)
                    .map_err(|e| at(&item_path, e))?;
                if scopes.contains(&scope) {
                    return Err(bad(&item_path, format!("{scope} is listed twice")));
                }
                scopes.push(scope);
            }
            scopes
        }
        Value::Null => Vec::new(),
        other => parse_scopes(&text(path, other)?, Bare::Region).map_err(|e| at(path, e))?,
    };
    check_failover(&scopes).map_err(|e| at(path, e))?;
    Ok(scopes.into())
}

fn primary(path: &str, value: &Value) -> Result<Scope, InvalidField> {
    let scope = Scope::parse(&text(path, value)?, Bare::Region).map_err(|e| at(path, e))?;
    if !scope.is_region_or_provider() {
        return Err(bad(
            path,
            format!("{scope}: a primary is a region or a provider"),
        ));
    }
    Ok(scope)
}

fn min_healthy(path: &str, value: &Value) -> Result<MinHealthy, InvalidField> {
    MinHealthy::parse(&text(path, value)?).map_err(|e| at(path, e))
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
        policy.provider = Some(label(&field, &text(&field, v)?)?);
    }
    Ok(policy)
}

/// A per-cluster map of percentages (a service's `weight` or `drain`).
fn per_cluster(
    path: &str,
    raw: Option<BTreeMap<String, Value>>,
    max: u32,
) -> Result<BTreeMap<ClusterName, u32>, InvalidField> {
    let mut out = BTreeMap::new();
    for (name, value) in raw.unwrap_or_default() {
        let field = format!("{path}.{name}");
        out.insert(cluster_name(&field, &name)?, percent(&field, &value, max)?);
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
            .filter(|v| !v.is_null())
            .map(|v| primary(&format!("{path}.primary"), v))
            .transpose()?,
        min_healthy: raw
            .min_healthy
            .as_ref()
            .filter(|v| !v.is_null())
            .map(|v| min_healthy(&format!("{path}.minHealthy"), v))
            .transpose()?,
    })
}

/// Parses and validates a policy file's bytes.
pub fn parse(bytes: &[u8]) -> Result<FleetPolicy, PolicyFileError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(PolicyFileError::TooBig { size: bytes.len() });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| PolicyFileError::NotText)?;
    if text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(PolicyFileError::Empty);
    }
    let doc: Doc =
        serde_yaml_ng::from_str(text).map_err(|e| PolicyFileError::Syntax(e.to_string()))?;
    let mut policy = FleetPolicy::default();
    for (name, raw) in doc.clusters.unwrap_or_default() {
        let path = format!("clusters.{name}");
        let cluster = cluster_name(&path, &name)?;
        policy
            .clusters
            .insert(cluster, cluster_policy(&path, raw.unwrap_or_default())?);
    }
    for (name, raw) in doc.services.unwrap_or_default() {
        let path = format!("services.{name}");
        let key = service_key(&path, &name)?;
        if policy.services.contains_key(&key) {
            return Err(bad(&path, format!("{key} is listed twice")).into());
        }
        policy
            .services
            .insert(key, service_policy(&path, raw.unwrap_or_default())?);
    }
    for (name, raw) in doc.regions.unwrap_or_default() {
        let path = format!("regions.{name}");
        let region = label(&path, &name)?;
        let raw = raw.unwrap_or_default();
        let order = match &raw.failover {
            Some(v) => failover(&format!("{path}.failover"), v)?,
            None => Box::default(),
        };
        policy
            .regions
            .insert(region, RegionPolicy { failover: order });
    }
    Ok(policy)
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
        assert!(matches!(parse(&big), Err(PolicyFileError::TooBig { .. })));
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
}
