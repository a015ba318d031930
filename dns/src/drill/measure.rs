//! A drill's answers: the registry's state and policy loaded into a
//! [`Registry`] of its own (the snapshot the DNS server builds, through
//! the same code), then each asker's answers taken from the DNS server's
//! own answer path ([`authority::respond`]) over many queries, and
//! counted by the cluster each address belongs to. Nothing is
//! re-implemented: weights, drains, tiers, failover and thresholds decide
//! here exactly as they do on the hub. Shares are over `answers` queries
//! (A and AAAA) with the answer path's own rotation.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use meshdns_proto::model::{ClusterName, ServiceExport, ServiceKey};

use crate::authority::{self, Authority, Transport};
use crate::check::probe;
use crate::snapshot::Snapshot;

/// Which cluster exported each address (endpoint or cluster IP).
pub type Owners = HashMap<IpAddr, ClusterName>;

/// Every address of `exports` with its cluster.
pub fn owners<'a>(
    exports: impl IntoIterator<Item = (&'a ClusterName, &'a ServiceExport)>,
) -> Owners {
    let mut owners = Owners::new();
    for (cluster, export) in exports {
        let addresses = export
            .endpoints()
            .iter()
            .flat_map(|e| e.addresses.iter().copied())
            .chain(export.cluster_ips().iter().copied());
        for address in addresses {
            owners.entry(address).or_insert_with(|| cluster.clone());
        }
    }
    owners
}

/// Where one asker's answers for one service came from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Served {
    /// The tier the answers were chosen from (`cluster`, `zone`, …,
    /// `fail_open`), the most frequent one; `None` when nothing answered.
    pub tier: Option<&'static str>,
    /// The response code when no address came back (`NXDOMAIN` for an
    /// asker outside export-to).
    pub rcode: Option<&'static str>,
    /// Each serving cluster's share of the addresses answered (0–1).
    pub shares: BTreeMap<String, f64>,
}

/// The first address of a client CIDR: an address the asker's cluster
/// owns, as the DNS server's locality sees it.
pub fn asker_address(cidr: &ipnet::IpNet) -> IpAddr {
    match cidr {
        ipnet::IpNet::V4(net) if net.prefix_len() < 31 => {
            IpAddr::V4((u32::from(net.network()) + 1).into())
        }
        ipnet::IpNet::V6(net) if net.prefix_len() < 127 => {
            IpAddr::V6((u128::from(net.network()) + 1).into())
        }
        net => net.network(),
    }
}

/// The query name of `key` under the drill's served domain.
fn name(key: &ServiceKey) -> String {
    format!("{}.{}.global", key.name, key.namespace)
}

/// The answers `source` gets for `key` over `answers` queries of each
/// address type.
pub fn served(
    snapshot: &Snapshot,
    authority: &Authority,
    key: &ServiceKey,
    source: Option<IpAddr>,
    answers: u32,
    owners: &Owners,
) -> Served {
    // An asker of no known place: an address no cluster claims.
    let source = source.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut tiers: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut rcode = None;
    let mut total = 0u64;
    for i in 0..answers {
        for qtype in [probe::TYPE_A, probe::TYPE_AAAA] {
            let id = (i as u16) ^ qtype;
            let Ok(query) = probe::query(id, &name(key), qtype) else {
                return Served::default();
            };
            let Some((reply, outcome)) =
                authority::respond(snapshot, authority, &query, source, Transport::Tcp)
            else {
                continue;
            };
            let Ok(reply) = probe::parse(id, &reply) else {
                continue;
            };
            if reply.rcode != 0 {
                rcode = Some(reply.rcode_name());
            }
            if let Some(tier) = outcome.tier {
                *tiers.entry(tier.name()).or_default() += 1;
            }
            for address in &reply.addresses {
                let cluster = owners
                    .get(address)
                    .map_or_else(|| format!("(unknown {address})"), ToString::to_string);
                *counts.entry(cluster).or_default() += 1;
                total += 1;
            }
        }
    }
    Served {
        tier: tiers.iter().max_by_key(|(_, n)| **n).map(|(tier, _)| *tier),
        rcode: if total == 0 { rcode } else { None },
        shares: counts
            .into_iter()
            .map(|(cluster, n)| (cluster, n as f64 / total as f64))
            .collect(),
    }
}

/// The mean of several askers' shares (every asker counted alike).
pub fn mean<'a>(served: impl IntoIterator<Item = &'a Served>) -> BTreeMap<String, f64> {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    let mut askers = 0usize;
    for s in served {
        askers += 1;
        for (cluster, share) in &s.shares {
            *sum.entry(cluster.clone()).or_default() += share;
        }
    }
    for share in sum.values_mut() {
        *share /= askers.max(1) as f64;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn askers_ask_from_inside_their_cidr() {
        for (cidr, want) in [
            ("10.1.0.0/16", "10.1.0.1"),
            ("127.0.0.2/32", "127.0.0.2"),
            ("fd00::/64", "fd00::1"),
            ("fd00::7/128", "fd00::7"),
        ] {
            let net: ipnet::IpNet = cidr.parse().unwrap();
            assert_eq!(asker_address(&net).to_string(), want);
            assert!(net.contains(&asker_address(&net)));
        }
    }

    #[test]
    fn shares_average_over_askers() {
        let a = Served {
            shares: [("east-1".to_owned(), 1.0)].into(),
            ..Served::default()
        };
        let b = Served {
            shares: [("east-1".to_owned(), 0.5), ("west-1".to_owned(), 0.5)].into(),
            ..Served::default()
        };
        let m = mean([&a, &b]);
        assert_eq!(m["east-1"], 0.75);
        assert_eq!(m["west-1"], 0.25);
    }
}
