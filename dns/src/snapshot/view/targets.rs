//! Answer targets: what an SRV record points at, and the flattened
//! address lists an A or AAAA answer is a slice of.

#![warn(clippy::cast_possible_truncation)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What one SRV record points at: an index into the service's clusters,
/// and into that cluster's endpoints. What a walk yields: a part stores
/// its targets without the cluster ([`PartTarget`], 4 bytes) and the
/// walk stamps it on read ([`PartTarget::in_cluster`]).
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
}

/// A target as its part stores it: the index of one of the part's
/// endpoints, or the part's ClusterIp. The part is its cluster, so the
/// cluster is not stored (4 bytes a target, not 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartTarget(u32);

impl PartTarget {
    /// The ClusterIp: no endpoint index is `u32::MAX` (a part holds at
    /// most [`crate::config::MAX_ENDPOINTS_PER_SERVICE`] endpoints).
    const CLUSTER_IP: u32 = u32::MAX;

    /// Endpoint `index` of the part.
    pub(super) fn endpoint(index: u32) -> Self {
        debug_assert_ne!(index, Self::CLUSTER_IP, "an endpoint index past the bound");
        PartTarget(index)
    }

    /// The part's ClusterIp.
    pub(super) fn cluster_ip() -> Self {
        PartTarget(Self::CLUSTER_IP)
    }

    /// The endpoint index, or `None` for the ClusterIp.
    pub fn endpoint_index(self) -> Option<u32> {
        (self.0 != Self::CLUSTER_IP).then_some(self.0)
    }

    /// The target as cluster `index`'s (the part's index in its view).
    pub fn in_cluster(self, index: u32) -> Target {
        match self.endpoint_index() {
            Some(endpoint) => Target::Endpoint {
                cluster: index,
                endpoint,
            },
            None => Target::ClusterIp { cluster: index },
        }
    }
}

/// A set of answer targets with their addresses flattened per family, so an
/// A or AAAA answer is a slice.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    pub targets: Vec<PartTarget>,
    pub v4: Vec<Ipv4Addr>,
    pub v6: Vec<Ipv6Addr>,
}

impl Targets {
    pub(super) fn push(&mut self, target: PartTarget, addresses: &[IpAddr]) {
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
            position(self.targets.len()),
            position(self.v4.len()),
            position(self.v6.len()),
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

/// `n`, a position in or the length of one part's lists (or of a chunk's
/// zone runs), as the `u32` spans and targets hold. Every such list is
/// far shorter than `u32::MAX`: a part has at most
/// [`crate::config::MAX_ENDPOINTS_PER_SERVICE`] endpoints of at most
/// [`meshdns_proto::model::MAX_ADDRESSES_PER_ENDPOINT`] addresses each
/// (16 million items), a chunk the zone runs of
/// [`CHUNK`](crate::snapshot::parts::CHUNK) parts. Debug builds check it.
pub(super) fn position(n: usize) -> u32 {
    debug_assert!(u32::try_from(n).is_ok(), "{n}: past a view list's bound");
    #[allow(
        clippy::cast_possible_truncation,
        reason = "bounded by the service's endpoint limit, as said above"
    )]
    let n = n as u32;
    n
}
