//! The cluster as the Hello announces it: the flags first, else what its
//! Nodes say (the most common region and zone labels, the pod CIDRs and
//! internal IPs as client CIDRs).

use std::collections::{BTreeMap, BTreeSet};

use meshdns_proto::InvalidField;
use meshdns_proto::model::{Cluster, ClusterName, LabelValue, parse_cidr};

use super::objects::NodeObj;
use crate::source::Overrides;

/// The cluster named `name`, described by `o` where the flags say, else by
/// `nodes`; the error names the field (`region`, `zone`, the name).
pub(super) fn describe<'a>(
    name: &str,
    o: &Overrides,
    nodes: impl Iterator<Item = &'a NodeObj> + Clone,
) -> Result<Cluster, InvalidField> {
    let most_common = |f: &dyn Fn(&NodeObj) -> Option<String>| {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for n in nodes.clone() {
            if let Some(v) = f(n) {
                *counts.entry(v).or_default() += 1;
            }
        }
        counts.into_iter().max_by_key(|(_, c)| *c).map(|(v, _)| v)
    };
    let region = o
        .region
        .clone()
        .or_else(|| most_common(&|n| n.region.clone()));
    let zone = o.zone.clone().or_else(|| most_common(&|n| n.zone.clone()));
    let texts: Vec<String> = if o.client_cidrs.is_empty() {
        let mut set: BTreeSet<String> = BTreeSet::new();
        for n in nodes.clone() {
            set.extend(n.pod_cidrs.iter().cloned());
            set.extend(n.internal_ips.iter().cloned());
        }
        set.into_iter().collect()
    } else {
        o.client_cidrs.clone()
    };
    let client_cidrs = texts.iter().filter_map(|t| parse_cidr(t).ok()).collect();
    let label = |field: &str, v: Option<String>| {
        v.filter(|v| !v.is_empty())
            .map(|v| LabelValue::new(&v).map_err(|e| e.within(field)))
            .transpose()
    };
    Ok(Cluster {
        name: ClusterName::new(name)?,
        region: label("region", region)?,
        zone: label("zone", zone)?,
        client_cidrs,
        version: o.version.clone(),
        provider: None,
        nodes: Vec::new(),
    })
}
