//! The cluster as the Hello announces it: the flags first, else what its
//! Nodes say (the most common region and zone labels, the provider label
//! they all agree on, the pod CIDRs and internal IPs as client CIDRs), and
//! each Node's own addresses for the node tier.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use meshdns_proto::InvalidField;
use meshdns_proto::model::{
    Cluster, ClusterName, LabelValue, MAX_ADDRESSES_PER_NODE, MAX_NODES, NodeAddresses, NodeName,
    parse_cidr,
};

use super::objects::{NodeObj, PROVIDER_LABEL};
use crate::source::Overrides;

/// The cluster named `name`, described by `o` where the flags say, else by
/// `nodes`, and what the Nodes said that could not be used (a note to
/// log, e.g. Nodes disagreeing on their provider); the error names the
/// field (`region`, `zone`, `provider`, the name).
pub(super) fn describe<'a>(
    name: &str,
    o: &Overrides,
    nodes: impl Iterator<Item = &'a NodeObj> + Clone,
) -> Result<(Cluster, Vec<String>), InvalidField> {
    let mut notes = Vec::new();
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
    let provider = match &o.provider {
        Some(p) => Some(p.clone()),
        None => agreed_provider(nodes.clone(), &mut notes),
    };
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
    let cluster = Cluster {
        name: ClusterName::new(name)?,
        region: label("region", region)?,
        zone: label("zone", zone)?,
        provider: label("provider", provider)?,
        client_cidrs,
        version: o.version.clone(),
        // The node tier is opt-in: without it, Node churn changes nothing
        // the Hello carries but client CIDRs.
        nodes: if o.announce_nodes {
            node_addresses(nodes, &mut notes)
        } else {
            Vec::new()
        },
    };
    Ok((cluster, notes))
}

/// The `meshdns.io/provider` label the labelled Nodes agree on. Nodes
/// without it are left out (one just joining may not be labelled yet);
/// two values mean no provider, and a note.
pub(super) fn agreed_provider<'a>(
    nodes: impl Iterator<Item = &'a NodeObj>,
    notes: &mut Vec<String>,
) -> Option<String> {
    let values: BTreeSet<&str> = nodes
        .filter_map(|n| n.provider.as_deref())
        .filter(|p| !p.is_empty())
        .collect();
    match values.len() {
        0 => None,
        1 => {
            let value = values.into_iter().next()?;
            match LabelValue::new(value) {
                Ok(_) => Some(value.to_owned()),
                Err(e) => {
                    notes.push(format!(
                        "the Nodes' {PROVIDER_LABEL} label: {}; announcing no provider",
                        e.problem
                    ));
                    None
                }
            }
        }
        _ => {
            let shown: Vec<&str> = values.into_iter().take(4).collect();
            notes.push(format!(
                "Nodes disagree on their {PROVIDER_LABEL} label ({}); announcing no provider (set --provider)",
                shown.join(", ")
            ));
            None
        }
    }
}

/// Each Node's name and InternalIP addresses, by name, at most
/// [`MAX_NODES`] of them with at most [`MAX_ADDRESSES_PER_NODE`] each
/// (what the registry accepts); a Node without a usable address is left
/// out.
fn node_addresses<'a>(
    nodes: impl Iterator<Item = &'a NodeObj>,
    notes: &mut Vec<String>,
) -> Vec<NodeAddresses> {
    let mut sorted: Vec<&NodeObj> = nodes.collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = Vec::new();
    for n in &sorted {
        let Ok(name) = NodeName::new(&n.name) else {
            continue;
        };
        let mut addresses: Vec<IpAddr> = Vec::new();
        for a in n.internal_ips.iter().filter_map(|a| a.trim().parse().ok()) {
            if !addresses.contains(&a) {
                addresses.push(a);
            }
        }
        addresses.truncate(MAX_ADDRESSES_PER_NODE);
        if addresses.is_empty() {
            continue;
        }
        if out.len() == MAX_NODES {
            notes.push(format!(
                "{} Nodes is over the limit of {MAX_NODES}; the node tier knows the first {MAX_NODES} by name",
                sorted.len()
            ));
            break;
        }
        out.push(NodeAddresses { name, addresses });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ips: &[&str], provider: Option<&str>) -> NodeObj {
        NodeObj {
            name: name.into(),
            pod_cidrs: vec![],
            internal_ips: ips.iter().map(|s| s.to_string()).collect(),
            region: Some("us-east".into()),
            zone: Some("us-east-1a".into()),
            provider: provider.map(str::to_owned),
        }
    }

    fn describe_nodes(o: &Overrides, nodes: &[NodeObj]) -> (Cluster, Vec<String>) {
        describe("east-1", o, nodes.iter()).unwrap()
    }

    #[test]
    fn the_provider_from_the_flag_or_the_nodes() {
        let agree = [
            node("b", &["10.0.0.2"], Some("aws")),
            node("a", &["10.0.0.1"], Some("aws")),
            node("new", &["10.0.0.3"], None),
        ];
        let (c, notes) = describe_nodes(&Overrides::default(), &agree);
        assert_eq!(c.provider.unwrap().as_str(), "aws");
        assert!(notes.is_empty(), "{notes:?}");
        let flag = Overrides {
            provider: Some("gcp".into()),
            ..Overrides::default()
        };
        let (c, _) = describe_nodes(&flag, &agree);
        assert_eq!(c.provider.unwrap().as_str(), "gcp", "the flag wins");
        let disagree = [
            node("a", &["10.0.0.1"], Some("aws")),
            node("b", &["10.0.0.2"], Some("gcp")),
        ];
        let (c, notes) = describe_nodes(&Overrides::default(), &disagree);
        assert_eq!(c.provider, None);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("disagree") && notes[0].contains("aws, gcp"));
        let (c, notes) = describe_nodes(&flag, &disagree);
        assert_eq!(c.provider.unwrap().as_str(), "gcp");
        assert!(notes.is_empty(), "the flag settles it: {notes:?}");
        let (c, notes) = describe_nodes(&Overrides::default(), &[node("a", &[], None)]);
        assert_eq!((c.provider, notes.len()), (None, 0), "unknown by default");
        let bad = [node("a", &["10.0.0.1"], Some("-x-"))];
        let (c, notes) = describe_nodes(&Overrides::default(), &bad);
        assert_eq!((c.provider, notes.len()), (None, 1), "{notes:?}");
    }

    /// Node addresses go out only with `--announce-nodes`.
    #[test]
    fn node_addresses_are_opt_in() {
        let nodes = [node("a", &["10.0.0.1"], None)];
        let (c, _) = describe_nodes(&Overrides::default(), &nodes);
        assert!(c.nodes.is_empty(), "{:?}", c.nodes);
        assert_eq!(c.client_cidrs.len(), 1, "still a client CIDR");
        let (c, _) = describe_nodes(&announce(), &nodes);
        assert_eq!(c.nodes.len(), 1);
    }

    fn announce() -> Overrides {
        Overrides {
            announce_nodes: true,
            ..Overrides::default()
        }
    }

    #[test]
    fn node_addresses_by_name_and_bounded() {
        let nodes = [
            node("b", &["10.0.0.2", "fd00::2", "10.0.0.2"], None),
            node("a", &["10.0.0.1"], None),
            node("no-address", &[], None),
            node("bad", &["nope"], None),
        ];
        let (c, notes) = describe_nodes(&announce(), &nodes);
        assert!(notes.is_empty());
        let shown: Vec<(String, Vec<String>)> = c
            .nodes
            .iter()
            .map(|n| {
                (
                    n.name.to_string(),
                    n.addresses.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            vec![
                ("a".to_owned(), vec!["10.0.0.1".to_owned()]),
                (
                    "b".to_owned(),
                    vec!["10.0.0.2".to_owned(), "fd00::2".to_owned()]
                ),
            ]
        );
        let many: Vec<String> = (0..20).map(|i| format!("10.1.0.{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let (c, _) = describe_nodes(&announce(), &[node("a", &refs, None)]);
        assert_eq!(c.nodes[0].addresses.len(), MAX_ADDRESSES_PER_NODE);
        let fleet: Vec<NodeObj> = (0..MAX_NODES + 3)
            .map(|i| node(&format!("n{i:05}"), &["10.2.0.1"], None))
            .collect();
        let (c, notes) = describe_nodes(&announce(), &fleet);
        assert_eq!(c.nodes.len(), MAX_NODES);
        assert_eq!(
            c.nodes.last().unwrap().name.as_str(),
            format!("n{:05}", MAX_NODES - 1)
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
    }
}
