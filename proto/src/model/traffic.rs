//! Traffic policy values a service's export carries: weights, per-service
//! spill-over thresholds, and the places (`cluster:…`, `zone:…`,
//! `region:…`, `provider:…`) that failover orders, primaries and
//! `export-to` name. Their text form is the annotation syntax, so the file
//! source, the Kubernetes source, the wire and `meshdns status` agree.

use std::fmt;

use super::{ClusterName, LabelValue};
use crate::error::{InvalidField, Problem};

/// An endpoint's weight when nothing says otherwise: one pod, one VM.
pub const DEFAULT_WEIGHT: u32 = 10;
/// The largest weight of one endpoint (a gateway in front of a thousand
/// backends).
pub const MAX_WEIGHT: u32 = 10_000;
/// Most places one policy list (failover, export-to) may name.
pub const MAX_SCOPES: usize = 32;

/// `meshdns.io/min-healthy`: how many healthy targets a tier needs before
/// it answers, as a count (`3`) or a share of the tier's targets (`50%`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MinHealthy {
    /// At least this many (1 or more).
    Count(u32),
    /// At least this percentage (1–100) of the tier's targets, rounded up.
    Percent(u8),
}

impl MinHealthy {
    /// Parses `3` or `50%`; `0`, `0%` and over `100%` are refused.
    pub fn parse(value: &str) -> Result<Self, InvalidField> {
        let bad = || {
            InvalidField::new(
                "",
                Problem::OutOfRange(format!(
                    "{value:?} is not a count (1 or more) or a percentage (1%-100%)"
                )),
            )
        };
        let text = value.trim();
        if let Some(percent) = text.strip_suffix('%') {
            match percent.trim().parse::<u8>() {
                Ok(p @ 1..=100) => Ok(MinHealthy::Percent(p)),
                _ => Err(bad()),
            }
        } else {
            match text.parse::<u32>() {
                Ok(n @ 1..) => Ok(MinHealthy::Count(n)),
                _ => Err(bad()),
            }
        }
    }

    /// The threshold for a tier of `tier_len` healthy targets: the count,
    /// or the percentage of `tier_len` rounded up; never below 1.
    pub fn of(self, tier_len: usize) -> usize {
        match self {
            MinHealthy::Count(n) => (n as usize).max(1),
            MinHealthy::Percent(p) => (tier_len * p as usize).div_ceil(100).max(1),
        }
    }
}

impl fmt::Display for MinHealthy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinHealthy::Count(n) => write!(f, "{n}"),
            MinHealthy::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// A place of the fleet a policy names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// One cluster, by name.
    Cluster(ClusterName),
    /// A topology zone, as `topology.kubernetes.io/zone` names it.
    Zone(LabelValue),
    /// A region, as `topology.kubernetes.io/region` names it.
    Region(LabelValue),
    /// A cloud provider (or on-premises site) as the syncer announces it.
    Provider(LabelValue),
}

impl Scope {
    /// Parses `kind:name` (`cluster:east-1`, `zone:us-east-1a`,
    /// `region:us-east`, `provider:aws`); a bare name is handed to `bare`
    /// (a region in failover orders, a cluster in `export-to`).
    pub fn parse(value: &str, bare: Bare) -> Result<Self, InvalidField> {
        let text = value.trim();
        let (kind, name) = match text.split_once(':') {
            Some((kind, name)) => (kind.trim(), name.trim()),
            None => (
                match bare {
                    Bare::Region => "region",
                    Bare::Cluster => "cluster",
                },
                text,
            ),
        };
        let label =
            |name: &str| LabelValue::new(name).map_err(|e| InvalidField::new("", e.problem));
        match kind {
            "cluster" => ClusterName::new(name).map(Scope::Cluster),
            "zone" => label(name).map(Scope::Zone),
            "region" => label(name).map(Scope::Region),
            "provider" => label(name).map(Scope::Provider),
            _ => Err(InvalidField::new(
                "",
                Problem::OutOfRange(format!(
                    "{text:?}: a place is cluster:NAME, zone:NAME, region:NAME or provider:NAME"
                )),
            )),
        }
    }

    /// Region or provider: what a failover order or a primary may name.
    pub fn is_region_or_provider(&self) -> bool {
        matches!(self, Scope::Region(_) | Scope::Provider(_))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Cluster(name) => write!(f, "cluster:{name}"),
            Scope::Zone(name) => write!(f, "zone:{name}"),
            Scope::Region(name) => write!(f, "region:{name}"),
            Scope::Provider(name) => write!(f, "provider:{name}"),
        }
    }
}

/// What a name without `kind:` means in a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bare {
    /// Failover orders and primaries name regions.
    Region,
    /// `export-to` names clusters.
    Cluster,
}

/// Parses a comma-separated list of places (`us-east, provider:aws`);
/// empty items are skipped; at most [`MAX_SCOPES`]; no place twice.
/// The error names the item (`[2]`) that is wrong.
pub fn parse_scopes(value: &str, bare: Bare) -> Result<Vec<Scope>, InvalidField> {
    let mut scopes: Vec<Scope> = Vec::new();
    for (i, item) in value.split(',').map(str::trim).enumerate() {
        if item.is_empty() {
            continue;
        }
        let scope = Scope::parse(item, bare).map_err(|e| e.within(format!("[{i}]")))?;
        if scopes.contains(&scope) {
            return Err(InvalidField::new(
                format!("[{i}]"),
                Problem::OutOfRange(format!("{scope} is listed twice")),
            ));
        }
        scopes.push(scope);
    }
    if scopes.len() > MAX_SCOPES {
        return Err(InvalidField::new(
            "",
            Problem::TooMany {
                what: "places",
                count: scopes.len(),
                max: MAX_SCOPES,
            },
        ));
    }
    Ok(scopes)
}

/// Checks a failover order or primary: regions and providers only.
pub fn check_failover(scopes: &[Scope]) -> Result<(), InvalidField> {
    match scopes.iter().position(|s| !s.is_region_or_provider()) {
        None => Ok(()),
        Some(i) => Err(InvalidField::new(
            format!("[{i}]"),
            Problem::OutOfRange(format!(
                "{}: a failover order names regions and providers only",
                scopes[i]
            )),
        )),
    }
}

/// Formats a list of places in the syntax [`parse_scopes`] reads.
pub fn format_scopes(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A Service's `spec.trafficDistribution` (Kubernetes 1.31+), kept for
/// display: the syncer maps it to an [`Affinity`](super::Affinity) when no
/// `meshdns.io/affinity` annotation is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrafficDistribution {
    /// `PreferClose` (1.31+): read as affinity `zone`.
    PreferClose,
    /// `PreferSameZone` (1.34+, `PreferClose`'s new name): affinity `zone`.
    PreferSameZone,
    /// `PreferSameNode` (1.34+): affinity `node`.
    PreferSameNode,
}

impl TrafficDistribution {
    /// The Kubernetes spelling; unknown values are `None` (Kubernetes may
    /// add values: they are ignored, not refused).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "PreferClose" => Some(Self::PreferClose),
            "PreferSameZone" => Some(Self::PreferSameZone),
            "PreferSameNode" => Some(Self::PreferSameNode),
            _ => None,
        }
    }

    /// The Kubernetes spelling, as [`TrafficDistribution::parse`] reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreferClose => "PreferClose",
            Self::PreferSameZone => "PreferSameZone",
            Self::PreferSameNode => "PreferSameNode",
        }
    }

    /// The affinity it means when no annotation says otherwise: stay in
    /// the zone (or on the node) while it has a target, else spill, as
    /// Kubernetes' own routing does.
    pub fn affinity(self) -> super::Affinity {
        match self {
            Self::PreferClose | Self::PreferSameZone => super::Affinity::Zone,
            Self::PreferSameNode => super::Affinity::Node,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_healthy() {
        assert_eq!(MinHealthy::parse("3"), Ok(MinHealthy::Count(3)));
        assert_eq!(MinHealthy::parse(" 50% "), Ok(MinHealthy::Percent(50)));
        for bad in ["0", "0%", "101%", "-1", "x", "", "%", "1.5"] {
            assert!(MinHealthy::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(MinHealthy::Percent(50).of(5), 3);
        assert_eq!(MinHealthy::Percent(10).of(0), 1);
        assert_eq!(MinHealthy::Percent(100).of(7), 7);
        assert_eq!(MinHealthy::Count(4).of(2), 4);
        assert_eq!(MinHealthy::Percent(50).to_string(), "50%");
    }

    #[test]
    fn scopes() {
        let list = parse_scopes("us-east, provider:aws ,,zone:us-east-1a", Bare::Region).unwrap();
        assert_eq!(
            format_scopes(&list),
            "region:us-east,provider:aws,zone:us-east-1a"
        );
        assert!(check_failover(&list).is_err());
        let list = parse_scopes("east-1,region:eu", Bare::Cluster).unwrap();
        assert_eq!(format_scopes(&list), "cluster:east-1,region:eu");
        let err = parse_scopes("us-east,planet:mars", Bare::Region).unwrap_err();
        assert_eq!(err.field, "[1]");
        let err = parse_scopes("a,b,a", Bare::Region).unwrap_err();
        assert_eq!(err.field, "[2]");
        assert!(parse_scopes("cluster:Not_A_Label", Bare::Region).is_err());
        let many = (0..=MAX_SCOPES)
            .map(|i| format!("r{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_scopes(&many, Bare::Region).is_err());
        assert_eq!(parse_scopes("", Bare::Region).unwrap(), vec![]);
    }

    #[test]
    fn traffic_distribution() {
        assert_eq!(
            TrafficDistribution::parse("PreferSameNode").map(|t| t.affinity()),
            Some(super::super::Affinity::Node)
        );
        assert_eq!(TrafficDistribution::parse("Whatever"), None);
    }
}
