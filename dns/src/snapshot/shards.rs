//! A map from service name to view that a new snapshot copies cheaply:
//! [`SHARDS`] hash maps, each behind an `Arc`. Cloning the map clones
//! the `Arc`s; changing a key copies only its shard. So publishing one
//! changed service costs one shard (`services / SHARDS` entries), not
//! the whole map.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

/// foldhash, randomly seeded per process: every query hashes its name
/// here, and SipHash was a visible share of the answer path. Keys come
/// from authenticated syncers, never from queries, and the seed is random,
/// so a crafted set of service names cannot aim at one bucket.
type Hasher = foldhash::fast::RandomState;

/// Shard count: a power of two.
const SHARDS: usize = 256;

type Map<V> = HashMap<Arc<str>, V, Hasher>;

#[derive(Debug, Clone)]
pub struct Shards<V> {
    shards: Vec<Arc<Map<V>>>,
    len: usize,
    /// Picks a key's shard; seeded apart from the maps' own hashers, so
    /// the keys of one shard do not share their in-map hash bits.
    shard_hasher: Hasher,
}

impl<V> Default for Shards<V> {
    fn default() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Arc::new(Map::default())).collect(),
            len: 0,
            shard_hasher: Hasher::default(),
        }
    }
}

impl<V: Clone> Shards<V> {
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a hash, masked to the shard count"
    )]
    fn shard_of(&self, key: &str) -> usize {
        self.shard_hasher.hash_one(key) as usize & (SHARDS - 1)
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.shards[self.shard_of(key)].get(key)
    }

    /// Inserts or replaces; true when the key was there.
    pub fn insert(&mut self, key: Arc<str>, value: V) -> bool {
        let index = self.shard_of(&key);
        let shard = Arc::make_mut(&mut self.shards[index]);
        let existed = shard.insert(key, value).is_some();
        if !existed {
            self.len += 1;
        }
        existed
    }

    /// Removes; true when the key was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let index = self.shard_of(key);
        if !self.shards[index].contains_key(key) {
            return false;
        }
        Arc::make_mut(&mut self.shards[index]).remove(key);
        self.len -= 1;
        true
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.shards.iter().flat_map(|s| s.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_share_untouched_shards() {
        let mut a: Shards<u32> = Shards::default();
        for i in 0..1000 {
            assert!(!a.insert(Arc::from(format!("k{i}")), i));
        }
        let mut b = a.clone();
        assert!(b.insert(Arc::from("k1"), 7));
        assert!(b.remove("k2"));
        assert!(!b.remove("k2"));
        assert_eq!((a.len(), b.len()), (1000, 999));
        assert_eq!((a.get("k1"), b.get("k1")), (Some(&1), Some(&7)));
        assert_eq!(a.get("k2"), Some(&2));
        let shared = a
            .shards
            .iter()
            .zip(&b.shards)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= SHARDS - 2, "{shared} shards shared");
        assert_eq!(b.values().count(), 999);
    }
}
