//! A watcher's relist, buffered and swapped in one step.
//!
//! **Why not kube-runtime's reflector store.** `reflector::Store<K>` keeps
//! whole API objects (`Arc<K>`: a Service's status and managedFields, an
//! EndpointSlice's every condition and hint, a Node's images and
//! conditions) and answers "what is there now". The state task needs two
//! other things: objects already reduced to the few fields an export uses
//! ([`super::objects`], a fraction of the memory on a large cluster), and,
//! for each update, *which keys changed* ([`Touched`]) so that only the
//! Services those keys belong to are recomputed — an `Apply` equal to what
//! is held changes nothing, and a relist (`Init` .. `InitDone`) replaces
//! the kind in one step and touches all. A `Store` gives neither (its
//! writer takes the full `K` and reports no difference), so this file
//! keeps the reduced objects itself, as a store of slim objects with the
//! same relist semantics (`Event::InitDone` swaps the buffered relist in).

use std::collections::HashMap;

use super::WatchFailure;
use super::objects::Key;

/// A watcher's news, reduced.
pub(super) enum Update<T> {
    Init,
    InitApply(T),
    InitDone,
    Apply(T),
    Delete(Key),
    Failed(WatchFailure),
    /// A probe of the failed watcher's resource succeeded: the API server
    /// is back (the watch itself resumes without an event).
    Recovered,
}

/// One kind of object: the live set, and a relist being buffered.
pub(super) struct Kind<T> {
    pub(super) live: HashMap<Key, T>,
    buffer: Option<HashMap<Key, T>>,
}

impl<T> Default for Kind<T> {
    fn default() -> Self {
        Kind {
            live: HashMap::new(),
            buffer: None,
        }
    }
}

/// What an update did to a kind: keys whose object changed, or all of them.
pub(super) enum Touched {
    Keys(Vec<Key>),
    All,
    Nothing,
}

impl<T: PartialEq> Kind<T> {
    pub(super) fn apply(&mut self, update: Update<T>, key_of: impl Fn(&T) -> Key) -> Touched {
        match update {
            Update::Init => {
                self.buffer = Some(HashMap::new());
                Touched::Nothing
            }
            Update::InitApply(obj) => {
                self.buffer
                    .get_or_insert_with(HashMap::new)
                    .insert(key_of(&obj), obj);
                Touched::Nothing
            }
            Update::InitDone => {
                // The relisted state replaces the old in one step.
                self.live = self.buffer.take().unwrap_or_default();
                Touched::All
            }
            Update::Apply(obj) => {
                let key = key_of(&obj);
                if self.live.get(&key) == Some(&obj) {
                    return Touched::Nothing;
                }
                self.live.insert(key.clone(), obj);
                Touched::Keys(vec![key])
            }
            Update::Delete(key) => {
                if self.live.remove(&key).is_some() {
                    Touched::Keys(vec![key])
                } else {
                    Touched::Nothing
                }
            }
            Update::Failed(_) | Update::Recovered => Touched::Nothing,
        }
    }
}
