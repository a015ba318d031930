//! Answer targets: what an SRV record points at, and the flattened
//! address lists an A or AAAA answer is a slice of.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What one SRV record points at: an index into the service's clusters,
/// and into that cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Endpoint { cluster: u32, endpoint: u32 },
    ClusterIp { cluster: u32 },
}

impl Target {
    pub fn cluster(self) -> usize {
        match self {
            Target::Endpoint { cluster, .. } | Target::ClusterIp { cluster } => cluster as usize,
        }
    }

    /// The same target as cluster `index`'s.
    pub fn in_cluster(self, index: u32) -> Self {
        match self {
            Target::Endpoint { endpoint, .. } => Target::Endpoint {
                cluster: index,
                endpoint,
            },
            Target::ClusterIp { .. } => Target::ClusterIp { cluster: index },
        }
    }
}

/// A set of answer targets with their addresses flattened per family, so an
/// A or AAAA answer is a slice.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    pub targets: Vec<Target>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl Targets {
    pub(super) fn push(&mut self, target: Target, addresses: &[IpAddr]) {
        self.targets.push(target);
        for address in addresses {
            match address {
                IpAddr::V4(a) => self.v4.push(*a),
                IpAddr::V6(a) => self.v6.push(*a),
            }
        }
    }

    /// Lengths of the three lists.
    pub(super) fn spans(&self) -> [u32; 3] {
        [
            self.targets.len() as u32,
            self.v4.len() as u32,
            self.v6.len() as u32,
        ]
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// How many healthy targets: what `--min-healthy` counts.
    pub fn len(&self) -> usize {
        self.targets.len()
    }
}
