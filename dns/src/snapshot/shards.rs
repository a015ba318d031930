//! A map from service name to view that a new snapshot copies cheaply:
//! [`SHARDS`] hash maps, each behind an `Arc`. Cloning the map clones
//! the `Arc`s; changing a key copies only its shard. So publishing one
//! changed service costs one shard (`services / SHARDS` entries), not
//! the whole map.
//!
//! A key of up to [`INLINE`] bytes is held in the map's entry itself
//! ([`Key`]), next to its value: a lookup then reads the shard's control
//! bytes and one entry, not also a string elsewhere on the heap (each
//! one a likely cache miss on the answer path).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

/// foldhash, randomly seeded per process: every query hashes its name
/// here, and SipHash was a visible share of the answer path. Keys come
/// from authenticated syncers, never from queries, and the seed is random,
/// so a crafted set of service names cannot aim at one bucket.
type Hasher = foldhash::fast::RandomState;

/// Shard count: a power of two.
const SHARDS: usize = 256;

type Map<V> = HashMap<Key, V, Hasher>;

/// Longest key held inline: `<svc>.<ns>` of most fleets' names; an entry
/// is then 32 bytes of key and the value.
const INLINE: usize = 30;

/// A map key: its bytes inline when short, else the shared string. Looked
/// up by its bytes (`[u8]`: hashed and compared as the bytes of a `str`).
#[derive(Debug, Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<str>),
}

impl Key {
    fn new(key: Arc<str>) -> Self {
        let len = key.len();
        match u8::try_from(len) {
            Ok(short) if len <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..len].copy_from_slice(key.as_bytes());
                Key::Inline { len: short, bytes }
            }
            _ => Key::Shared(key),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Shared(key) => key.as_bytes(),
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.bytes()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Key {}

/// As `[u8]` hashes, so a lookup by bytes finds its key (`Borrow`'s rule).
impl Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.bytes().hash(state);
    }
}

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
        self.shards[self.shard_of(key)].get(key.as_bytes())
    }

    /// Inserts or replaces; true when the key was there.
    pub fn insert(&mut self, key: Arc<str>, value: V) -> bool {
        let index = self.shard_of(&key);
        let shard = Arc::make_mut(&mut self.shards[index]);
        let existed = shard.insert(Key::new(key), value).is_some();
        if !existed {
            self.len += 1;
        }
        existed
    }

    /// Removes; true when the key was there.
    pub fn remove(&mut self, key: &str) -> bool {
        let index = self.shard_of(key);
        if !self.shards[index].contains_key(key.as_bytes()) {
            return false;
        }
        Arc::make_mut(&mut self.shards[index]).remove(key.as_bytes());
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

    #[test]
    fn short_and_long_keys_are_found_by_their_bytes() {
        let mut map: Shards<usize> = Shards::default();
        // Around the inline bound, and keys one is a prefix of another.
        let keys: Vec<String> = (0..=INLINE + 2)
            .map(|n| "k".repeat(n))
            .chain(["svc-1.ns-1".into(), "a".repeat(200)])
            .collect();
        for (i, key) in keys.iter().enumerate() {
            assert!(!map.insert(Arc::from(key.as_str()), i), "{key}");
        }
        for (i, key) in keys.iter().enumerate() {
            assert_eq!(map.get(key), Some(&i), "{key}");
        }
        assert_eq!(map.get("k".repeat(INLINE + 3).as_str()), None);
        assert_eq!(map.get("svc-1.ns-2"), None);
        assert!(map.insert(Arc::from("k".repeat(INLINE + 1).as_str()), 0));
        assert_eq!(map.get(&"k".repeat(INLINE + 1)), Some(&0));
        assert!(map.remove(&"k".repeat(INLINE)));
        assert_eq!(map.get(&"k".repeat(INLINE)), None);
        assert_eq!(map.get(&"k".repeat(INLINE - 1)), Some(&(INLINE - 1)));
    }
}
