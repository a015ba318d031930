//! Which cluster holds which client CIDR. On a flat network two clusters'
//! pod CIDRs never overlap, so an overlap is a misconfiguration or an
//! attempt to take over another cluster's askers: the first holder keeps
//! its CIDR and the newcomer's overlapping one is refused.
//!
//! CIDRs are nested or disjoint, so a new CIDR overlaps a held one when
//! a held one contains its first address (one hash probe per prefix length
//! in use) or a held one starts inside it (one ordered range query).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use meshdns_proto::model::ClusterName;

/// An address as a number in one space for both families: IPv4 is kept
/// apart from IPv6 by the family bit.
fn key(addr: IpAddr) -> (bool, u128) {
    match addr {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

/// The client CIDRs every cluster holds.
#[derive(Debug, Default)]
pub struct Claims {
    /// (family, prefix length, network) -> holder.
    exact: HashMap<(bool, u8, u128), ClusterName>,
    /// Prefix lengths in use per family, with how many CIDRs use each.
    lengths: BTreeMap<(bool, u8), usize>,
    /// (family, network start, prefix length) -> holder, ordered.
    starts: BTreeMap<(bool, u128, u8), ClusterName>,
}

impl Claims {
    /// The holder (other than `who`) of a CIDR overlapping `net`.
    pub fn overlapping(&self, net: &IpNet, who: &ClusterName) -> Option<(IpNet, &ClusterName)> {
        let (family, first) = key(net.network());
        let (_, last) = key(net.broadcast());
        // A held CIDR containing our first address.
        for (&(fam, len), _) in self.lengths.range((family, 0)..=(family, net.prefix_len())) {
            debug_assert_eq!(fam, family);
            let held = IpNet::new(net.network(), len).ok()?.trunc();
            let (_, start) = key(held.network());
            if let Some(holder) = self.exact.get(&(family, len, start))
                && holder != who
            {
                return Some((held, holder));
            }
        }
        // A held CIDR starting inside ours.
        self.starts
            .range((family, first, 0)..=(family, last, u8::MAX))
            .find(|(_, holder)| *holder != who)
            .and_then(|(&(_, start, len), holder)| {
                let addr = if family {
                    IpAddr::V6(start.into())
                } else {
                    IpAddr::V4(u32::try_from(start).ok()?.into())
                };
                Some((IpNet::new(addr, len).ok()?, holder))
            })
    }

    pub fn insert(&mut self, net: &IpNet, who: &ClusterName) {
        let (family, start) = key(net.network());
        let len = net.prefix_len();
        if self
            .exact
            .insert((family, len, start), who.clone())
            .is_none()
        {
            *self.lengths.entry((family, len)).or_default() += 1;
        }
        self.starts.insert((family, start, len), who.clone());
    }

    /// Forgets `net` if `who` holds it.
    pub fn remove(&mut self, net: &IpNet, who: &ClusterName) {
        let (family, start) = key(net.network());
        let len = net.prefix_len();
        if self.exact.get(&(family, len, start)) != Some(who) {
            return;
        }
        self.exact.remove(&(family, len, start));
        self.starts.remove(&(family, start, len));
        if let Some(n) = self.lengths.get_mut(&(family, len)) {
            *n -= 1;
            if *n == 0 {
                self.lengths.remove(&(family, len));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ClusterName {
        ClusterName::new(n).unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn overlaps_are_found_both_ways_and_only_against_others() {
        let (east, west) = (name("east"), name("west"));
        let mut claims = Claims::default();
        claims.insert(&net("10.1.0.0/16"), &east);
        claims.insert(&net("fd00:1::/64"), &east);
        let check = |c: &Claims, s: &str, who: &ClusterName| {
            c.overlapping(&net(s), who)
                .map(|(n, h)| (n.to_string(), h.to_string()))
        };
        let held = Some(("10.1.0.0/16".to_string(), "east".to_string()));
        assert_eq!(check(&claims, "10.1.2.0/24", &west), held);
        assert_eq!(check(&claims, "10.0.0.0/8", &west), held);
        assert_eq!(check(&claims, "10.1.0.0/16", &west), held);
        assert_eq!(check(&claims, "10.1.255.255/32", &west), held);
        assert_eq!(check(&claims, "10.2.0.0/16", &west), None);
        assert_eq!(check(&claims, "10.1.2.0/24", &east), None);
        assert_eq!(
            check(&claims, "fd00:1::1/128", &west),
            Some(("fd00:1::/64".to_string(), "east".to_string()))
        );
        assert_eq!(check(&claims, "fd00:2::/64", &west), None);
        // IPv4 and IPv6 never meet, even where the numbers would.
        assert_eq!(
            check(&claims, "::/0", &west).map(|x| x.1),
            Some("east".into())
        );
        assert_eq!(check(&claims, "::a01:0/112", &west), None);
        claims.remove(&net("10.1.0.0/16"), &west);
        assert!(check(&claims, "10.1.2.0/24", &west).is_some());
        claims.remove(&net("10.1.0.0/16"), &east);
        assert_eq!(check(&claims, "10.1.2.0/24", &west), None);
        assert_eq!(check(&claims, "0.0.0.0/0", &west), None);
    }
}
