//! Where an asker is: longest-prefix match of its address against the
//! client CIDRs every cluster announces, built once per change of the
//! fleet's clusters and read lock-free with the snapshot.
//!
//! The match is a hash table per prefix length, probed from the longest
//! length present to the shortest: a handful of lookups whatever the number
//! of clusters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use meshdns_proto::model::ClusterName;

/// A cluster's registry-lifetime number; stable while the cluster exists,
/// so service views built earlier stay valid when the locality changes.
pub type ClusterId = u32;
/// An interned region name.
pub type RegionId = u32;
/// An interned (region, zone) pair: zones are grouped within their region.
pub type ZoneId = u32;
/// An interned cloud provider name.
pub type ProviderId = u32;

/// A node of a cluster and its own addresses (what NodeLocal DNSCache
/// asks from): the opt-in node tier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePlace {
    pub name: String,
    pub addresses: Vec<IpAddr>,
}

/// A cluster's place in the fleet.
#[derive(Debug, Clone)]
pub struct Place {
    pub id: ClusterId,
    pub name: ClusterName,
    pub region: Option<(RegionId, String)>,
    pub zone: Option<(ZoneId, String)>,
    /// The cloud provider: the policy file's, else the one the cluster
    /// announced.
    pub provider: Option<(ProviderId, String)>,
    /// The cluster's announced nodes, sorted by name: a node's index here
    /// is what an asker's place and a part's node runs name it by.
    pub nodes: Arc<[NodePlace]>,
    pub stale: bool,
}

impl Place {
    /// The index of the node named `name`, if the cluster announced it.
    pub fn node_index(&self, name: &str) -> Option<u32> {
        self.nodes
            .binary_search_by(|n| n.name.as_str().cmp(name))
            .ok()
            .map(|i| i as u32)
    }

    /// An asker in this cluster: on node `node` (its index, see
    /// [`Place::node_index`]) or none, matched by a client CIDR of
    /// `prefix` bits.
    pub fn asker(&self, node: Option<u32>, prefix: u8) -> AskerPlace {
        AskerPlace {
            cluster: self.id,
            region: self.region.as_ref().map(|r| r.0),
            zone: self.zone.as_ref().map(|z| z.0),
            provider: self.provider.as_ref().map(|p| p.0),
            node,
            prefix,
        }
    }
}

/// Who is asking, as far as locality goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AskerPlace {
    pub cluster: ClusterId,
    pub region: Option<RegionId>,
    pub zone: Option<ZoneId>,
    pub provider: Option<ProviderId>,
    /// The asker is one of its cluster's nodes (its address is one the
    /// node announced): the node's index in the cluster's nodes.
    pub node: Option<u32>,
    /// Prefix length of the client CIDR that matched.
    pub prefix: u8,
}

/// Prefix tables for one address family.
#[derive(Debug, Default, Clone)]
struct Table<K> {
    /// (prefix length, network -> cluster), longest length first.
    lengths: Vec<(u8, HashMap<K, ClusterId>)>,
}

impl<K: Copy + Eq + std::hash::Hash> Table<K> {
    fn insert(&mut self, len: u8, network: K, cluster: ClusterId) -> Option<ClusterId> {
        let index = match self.lengths.iter().position(|(l, _)| *l == len) {
            Some(i) => i,
            None => {
                self.lengths.push((len, HashMap::new()));
                self.lengths.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
                self.lengths
                    .iter()
                    .position(|(l, _)| *l == len)
                    .unwrap_or(0)
            }
        };
        let table = &mut self.lengths[index].1;
        match table.get(&network) {
            Some(existing) => Some(*existing),
            None => {
                table.insert(network, cluster);
                None
            }
        }
    }

    fn lookup(&self, max_len: u8, mask: impl Fn(u8) -> K) -> Option<(ClusterId, u8)> {
        self.lengths
            .iter()
            .filter(|(len, _)| *len <= max_len)
            .find_map(|(len, table)| table.get(&mask(*len)).map(|c| (*c, *len)))
    }
}

fn mask4(addr: u32, len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        addr & (u32::MAX << (32 - u32::from(len)))
    }
}

fn mask6(addr: u128, len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        addr & (u128::MAX << (128 - u32::from(len)))
    }
}

/// The fleet's clusters and the address -> cluster match.
#[derive(Debug, Default, Clone)]
pub struct Locality {
    places: HashMap<ClusterId, Place>,
    v4: Table<u32>,
    v6: Table<u128>,
    /// Node addresses -> (cluster, node index): exact matches only.
    nodes: HashMap<IpAddr, (ClusterId, u32)>,
    /// CIDRs announced by more than one cluster: (cidr, kept, ignored).
    pub conflicts: Vec<(IpNet, ClusterName, ClusterName)>,
    /// The highest cluster id of `places` (0: none): what the answers-by-
    /// cluster counters must reserve.
    max_id: ClusterId,
}

impl Locality {
    /// Builds from every cluster with its announced CIDRs. Clusters are
    /// taken in name order, so when two announce the same CIDR the first
    /// name keeps it, whatever order they connected in.
    pub fn build<'a>(clusters: impl IntoIterator<Item = (Place, &'a [IpNet])>) -> Self {
        let mut locality = Locality::default();
        let mut all: Vec<(Place, &[IpNet])> = clusters.into_iter().collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        for (place, cidrs) in all {
            for cidr in cidrs {
                let existing = match cidr {
                    IpNet::V4(n) => {
                        locality
                            .v4
                            .insert(n.prefix_len(), u32::from(n.network()), place.id)
                    }
                    IpNet::V6(n) => {
                        locality
                            .v6
                            .insert(n.prefix_len(), u128::from(n.network()), place.id)
                    }
                };
                if let Some(kept) = existing.and_then(|id| locality.places.get(&id)) {
                    locality
                        .conflicts
                        .push((*cidr, kept.name.clone(), place.name.clone()));
                }
            }
            for (i, node) in place.nodes.iter().enumerate() {
                for address in &node.addresses {
                    locality
                        .nodes
                        .entry(*address)
                        .or_insert((place.id, i as u32));
                }
            }
            locality.max_id = locality.max_id.max(place.id);
            locality.places.insert(place.id, place);
        }
        locality
    }

    /// The highest cluster id known (0 when none).
    pub fn max_id(&self) -> ClusterId {
        self.max_id
    }

    pub fn place(&self, id: ClusterId) -> Option<&Place> {
        self.places.get(&id)
    }

    pub fn places(&self) -> impl Iterator<Item = &Place> {
        self.places.values()
    }

    /// The cluster `addr` asks from: the longest announced prefix of at
    /// most `max_len` bits containing it (`max_len` is the ECS source
    /// prefix; 128 for a plain source address).
    pub fn lookup(&self, addr: IpAddr, max_len: u8) -> Option<AskerPlace> {
        let (cluster, prefix) = match addr {
            IpAddr::V4(a) => self.v4.lookup(max_len.min(32), |l| mask4(u32::from(a), l)),
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => self.v4.lookup(max_len.saturating_sub(96).min(32), |l| {
                    mask4(u32::from(v4), l)
                }),
                None => self
                    .v6
                    .lookup(max_len.min(128), |l| mask6(u128::from(a), l)),
            },
        }?;
        let place = self.places.get(&cluster)?;
        // A node is told by its whole address, never by a shorter prefix;
        // an IPv4-mapped IPv6 address (a dual-stack socket, an ECS family-2
        // option) is its IPv4 address, whose whole is 96 bits shorter.
        let (canonical, len) = match addr {
            IpAddr::V6(a) => match a.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), max_len.saturating_sub(96)),
                None => (addr, max_len),
            },
            IpAddr::V4(_) => (addr, max_len),
        };
        let whole = if canonical.is_ipv4() { 32 } else { 128 };
        let node = (len >= whole)
            .then(|| self.nodes.get(&canonical))
            .flatten()
            .filter(|(c, _)| *c == cluster)
            .map(|(_, n)| *n);
        Some(place.asker(node, prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn place(id: ClusterId, name: &str) -> Place {
        Place {
            id,
            name: ClusterName::new(name).unwrap(),
            region: Some((1, "r".into())),
            zone: None,
            provider: None,
            nodes: Arc::from(Vec::new()),
            stale: false,
        }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn longest_prefix_wins() {
        let a = nets(&["10.0.0.0/8", "fd00::/16"]);
        let b = nets(&["10.1.0.0/16", "127.0.0.2/32"]);
        let c = nets(&["10.1.2.0/24", "fd00:1::/32"]);
        let l = Locality::build([
            (place(1, "a"), &a[..]),
            (place(2, "b"), &b[..]),
            (place(3, "c"), &c[..]),
        ]);
        let check = |ip: &str, max: u8, expected: Option<(ClusterId, u8)>| {
            let got = l
                .lookup(ip.parse().unwrap(), max)
                .map(|p| (p.cluster, p.prefix));
            assert_eq!(got, expected, "{ip}/{max}");
        };
        check("10.9.9.9", 128, Some((1, 8)));
        check("10.1.9.9", 128, Some((2, 16)));
        check("10.1.2.9", 128, Some((3, 24)));
        check("10.1.2.9", 20, Some((2, 16)));
        check("10.1.2.9", 4, None);
        check("127.0.0.2", 128, Some((2, 32)));
        check("127.0.0.3", 128, None);
        check("::ffff:10.1.2.9", 128, Some((3, 24)));
        check("fd00:1::5", 128, Some((3, 32)));
        check("fd00:2::5", 128, Some((1, 16)));
        check("2001:db8::1", 128, None);
        check("0.0.0.0", 0, None);
    }

    /// A node asking over a dual-stack socket (`::ffff:a.b.c.d`) is the
    /// node, as when it asks over IPv4; a shorter prefix never is.
    #[test]
    fn ipv4_mapped_node_is_the_node() {
        let mut p = place(1, "a");
        p.nodes = Arc::from(vec![NodePlace {
            name: "node-a".into(),
            addresses: vec!["10.1.255.1".parse().unwrap()],
        }]);
        let a = nets(&["10.1.0.0/16"]);
        let l = Locality::build([(p, &a[..])]);
        let node = |ip: &str, max: u8| l.lookup(ip.parse().unwrap(), max).and_then(|p| p.node);
        assert_eq!(node("10.1.255.1", 128), Some(0));
        assert_eq!(node("::ffff:10.1.255.1", 128), Some(0));
        assert_eq!(node("::ffff:10.1.255.1", 120), None);
        assert_eq!(node("10.1.255.1", 24), None);
        assert_eq!(node("10.1.255.2", 128), None);
    }

    #[test]
    fn conflicts_keep_the_first_name() {
        let a = nets(&["10.0.0.0/8"]);
        let b = nets(&["10.0.0.0/8"]);
        let l = Locality::build([(place(2, "zeta"), &b[..]), (place(1, "alpha"), &a[..])]);
        assert_eq!(
            l.lookup("10.0.0.1".parse().unwrap(), 128).unwrap().cluster,
            1
        );
        assert_eq!(l.conflicts.len(), 1);
    }
}
