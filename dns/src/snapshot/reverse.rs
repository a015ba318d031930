//! The reverse index: each exported address and the names that own it,
//! for PTR answers (`--reverse`).
//!
//! Kept like the service map: successive snapshots share it, and a
//! publish copies only what it touches. Addresses are grouped in leaves
//! of one /24 (IPv4) or /120 (IPv6), 256 addresses at most; leaves are
//! spread over 256 shards by a hash of their prefix. A change to one
//! cluster's part of a service copies the leaves of its addresses and
//! the shards holding them, never the whole index, and a publish updates
//! only the parts that changed (see [`super::Snapshot::with_changes`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use super::PtrName;

/// Shard count: a power of two.
const SHARDS: usize = 256;

/// A leaf's prefix: the family (IPv4 first, as `IpAddr` orders them) and
/// the address without its last 8 bits. Ordered as the addresses are.
type Prefix = (u8, u128);

/// One /24 or /120: each address with its names, sorted.
type Leaf = BTreeMap<IpAddr, Vec<PtrName>>;

type Shard = BTreeMap<Prefix, Arc<Leaf>>;

/// Address -> the names that own it. Every address's names are kept
/// sorted, so the index is the same whatever order parts came in.
#[derive(Debug, Clone)]
pub struct PtrIndex {
    shards: Vec<Arc<Shard>>,
}

impl Default for PtrIndex {
    fn default() -> Self {
        PtrIndex {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
        }
    }
}

fn prefix(address: &IpAddr) -> Prefix {
    match address {
        IpAddr::V4(a) => (0, u128::from(u32::from(*a) >> 8)),
        IpAddr::V6(a) => (1, u128::from(*a) >> 8),
    }
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "a hash: the address's halves folded, the top 8 bits kept"
)]
fn shard_of((family, bits): Prefix) -> usize {
    let folded = (bits as u64) ^ ((bits >> 64) as u64) ^ u64::from(family);
    (folded.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % SHARDS
}

impl PtrIndex {
    /// The names owning `address`.
    pub fn get(&self, address: &IpAddr) -> Option<&[PtrName]> {
        let p = prefix(address);
        self.shards[shard_of(p)]
            .get(&p)?
            .get(address)
            .map(Vec::as_slice)
    }

    /// Whether any address lies in `low..=high`.
    pub fn any_in(&self, low: IpAddr, high: IpAddr) -> bool {
        if low > high {
            return false;
        }
        let (from, to) = (prefix(&low), prefix(&high));
        let hit = |shard: &Shard| {
            shard
                .range(from..=to)
                .any(|(_, leaf)| leaf.range(low..=high).next().is_some())
        };
        if from == to {
            return hit(&self.shards[shard_of(from)]);
        }
        self.shards.iter().any(|s| hit(s))
    }

    /// Adds `name` to `address`'s names.
    pub fn insert(&mut self, address: IpAddr, name: PtrName) {
        let p = prefix(&address);
        let shard = Arc::make_mut(&mut self.shards[shard_of(p)]);
        let leaf = Arc::make_mut(shard.entry(p).or_default());
        let names = leaf.entry(address).or_default();
        let at = names.partition_point(|n| *n <= name);
        names.insert(at, name);
    }

    /// Removes one `name` from `address`'s names (each part adds its own
    /// copy, so two parts naming the same address each remove theirs).
    pub fn remove(&mut self, address: &IpAddr, name: &PtrName) {
        let p = prefix(address);
        let index = shard_of(p);
        let held = self.shards[index]
            .get(&p)
            .and_then(|leaf| leaf.get(address))
            .is_some_and(|names| names.binary_search(name).is_ok());
        if !held {
            return;
        }
        let shard = Arc::make_mut(&mut self.shards[index]);
        let Some(leaf) = shard.get_mut(&p) else {
            return;
        };
        let leaf = Arc::make_mut(leaf);
        if let Some(names) = leaf.get_mut(address)
            && let Ok(at) = names.binary_search(name)
        {
            names.remove(at);
            if names.is_empty() {
                leaf.remove(address);
            }
        }
        if leaf.is_empty() {
            shard.remove(&p);
        }
    }

    /// How many addresses have names.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.values())
            .map(|leaf| leaf.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(service: &str) -> PtrName {
        PtrName {
            namespace: Arc::from("ns"),
            service: Arc::from(service),
            host: None,
        }
    }

    #[test]
    fn names_are_a_sorted_multiset_and_ranges_cross_leaves() {
        let mut index = PtrIndex::default();
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "10.1.9.1".parse().unwrap();
        index.insert(a, name("web"));
        index.insert(a, name("api"));
        index.insert(a, name("web"));
        index.insert(b, name("db"));
        assert_eq!(
            index.get(&a).unwrap(),
            &[name("api"), name("web"), name("web")]
        );
        index.remove(&a, &name("web"));
        assert_eq!(index.get(&a).unwrap(), &[name("api"), name("web")]);
        assert!(index.any_in("10.1.0.0".parse().unwrap(), "10.1.255.255".parse().unwrap()));
        assert!(index.any_in("10.1.9.0".parse().unwrap(), "10.1.9.255".parse().unwrap()));
        assert!(!index.any_in("10.1.3.0".parse().unwrap(), "10.1.8.255".parse().unwrap()));
        assert!(!index.any_in("10.2.0.0".parse().unwrap(), "10.2.255.255".parse().unwrap()));
        index.remove(&b, &name("db"));
        index.remove(&b, &name("db"));
        assert!(!index.any_in("10.1.9.0".parse().unwrap(), "10.1.9.255".parse().unwrap()));
        assert_eq!(index.len(), 1);
        let copy = index.clone();
        index.remove(&a, &name("api"));
        index.remove(&a, &name("web"));
        assert!(index.is_empty());
        assert_eq!(copy.len(), 1, "a copy keeps what it had");
    }
}
