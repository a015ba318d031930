//! A cluster of the fleet as its syncer describes it in Hello.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{ClusterName, LabelValue, NodeName};
use crate::error::{InvalidField, Problem};

/// Who exports: the identity and locality a syncer announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// The cluster's name in the fleet (`--cluster-name`): one syncer
    /// session at a time holds it.
    pub name: ClusterName,
    /// Its region (`topology.kubernetes.io/region`), the tier beyond the
    /// zone. `None`: unknown; the cluster is then in no region tier.
    pub region: Option<LabelValue>,
    /// Its default zone (`topology.kubernetes.io/zone`) for endpoints
    /// whose EndpointSlice names none. `None`: unknown.
    pub zone: Option<LabelValue>,
    /// Addresses asking from inside this cluster (pod CIDRs, node addresses):
    /// how the DNS server tells which cluster an asker is in.
    pub client_cidrs: Vec<IpNet>,
    /// The syncer's version string, for display only.
    pub version: String,
    /// The cloud provider (or on-premises site) the cluster runs in: the
    /// tier between region and anywhere. `None`: unknown.
    pub provider: Option<LabelValue>,
    /// Its nodes' own addresses, for the opt-in node tier (NodeLocal
    /// DNSCache asks from the node's address).
    pub nodes: Vec<NodeAddresses>,
}

/// Most nodes one cluster may announce (Kubernetes' own scale limit).
pub const MAX_NODES: usize = 5_000;
/// Most addresses of one node.
pub const MAX_ADDRESSES_PER_NODE: usize = 8;

/// A node's own addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddresses {
    /// The node, as endpoints name it (`Endpoint::node`).
    pub name: NodeName,
    /// The addresses the node asks DNS from (its InternalIPs); 1 to
    /// [`MAX_ADDRESSES_PER_NODE`].
    pub addresses: Vec<IpAddr>,
}

/// Parses `10.1.0.0/16` or a bare address (taken as a host route). Host bits
/// are cleared so `10.1.2.3/16` means `10.1.0.0/16`.
pub fn parse_cidr(value: &str) -> Result<IpNet, InvalidField> {
    let bad = || {
        InvalidField::new(
            "",
            Problem::BadCidr {
                value: value.to_owned(),
            },
        )
    };
    let text = value.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<std::net::IpAddr>()
        .map(IpNet::from)
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.1.2.3/16").unwrap().to_string(),
            "10.1.0.0/16"
        );
        assert_eq!(parse_cidr("127.0.0.2").unwrap().to_string(), "127.0.0.2/32");
        assert_eq!(parse_cidr("fd00::/8").unwrap().to_string(), "fd00::/8");
        assert!(parse_cidr("10.1.0.0/33").is_err());
        assert!(parse_cidr("ten").is_err());
    }
}
