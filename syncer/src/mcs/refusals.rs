//! The registries' per-service refusals, as the publishers learn them:
//! what ServiceExport `Valid=False` and the `ExportRefused` Event carry.
//!
//! A publisher marks every service it sends with the generation of the
//! request carrying it ([`Refusals::sent`]); the answer to that generation
//! either refuses it (the reason is kept) or not (a kept reason is
//! dropped). Reasons are kept per registry, so with several registries a
//! refusal by any of them shows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use meshdns_proto::model::ServiceKey;
use meshdns_proto::wire;
use tokio::sync::watch;

#[derive(Debug, Default)]
struct Board {
    /// Sent and not answered yet: the generation that carried it.
    pending: BTreeMap<ServiceKey, u64>,
    reasons: BTreeMap<ServiceKey, String>,
}

#[derive(Debug, Default)]
struct Shared {
    /// By registry URL.
    boards: BTreeMap<String, Board>,
}

/// Shared between the publishers (writers) and the MCS writers (readers).
#[derive(Debug, Clone)]
pub struct Refusals {
    shared: Arc<Mutex<Shared>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            shared: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl Refusals {
    fn with(&self, f: impl FnOnce(&mut Shared) -> bool) {
        let changed = f(&mut self.shared.lock().unwrap_or_else(|e| e.into_inner()));
        if changed {
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// A new stream to `registry`: what it refused before is asked again.
    pub fn restart(&self, registry: &str) {
        self.with(|s| {
            s.boards.get_mut(registry).is_some_and(|b| {
                b.pending.clear();
                false
            })
        });
    }

    /// `keys` went to `registry` in request `generation`.
    pub fn sent<'a>(
        &self,
        registry: &str,
        generation: u64,
        keys: impl Iterator<Item = &'a wire::ServiceKey>,
    ) {
        let keys: Vec<ServiceKey> = keys.filter_map(|k| ServiceKey::try_from(k).ok()).collect();
        if keys.is_empty() {
            return;
        }
        self.with(|s| {
            let board = s.boards.entry(registry.to_owned()).or_default();
            for key in keys {
                board.pending.insert(key, generation);
            }
            false
        });
    }

    /// `registry` answered request `generation`, refusing `refusals`:
    /// services sent up to that generation and not refused were taken.
    pub fn answered(&self, registry: &str, generation: u64, refusals: &[wire::Refusal]) {
        self.with(|s| {
            let board = s.boards.entry(registry.to_owned()).or_default();
            let mut changed = false;
            for r in refusals {
                let Some(key) = r.key.as_ref().and_then(|k| ServiceKey::try_from(k).ok()) else {
                    continue;
                };
                board.pending.remove(&key);
                if board.reasons.get(&key) != Some(&r.reason) {
                    board.reasons.insert(key, r.reason.clone());
                    changed = true;
                }
            }
            let taken: Vec<ServiceKey> = board
                .pending
                .iter()
                .filter(|(_, g)| **g <= generation)
                .map(|(k, _)| k.clone())
                .collect();
            for key in taken {
                board.pending.remove(&key);
                changed |= board.reasons.remove(&key).is_some();
            }
            changed
        });
    }

    /// Why a registry refuses `key` now, if one does.
    pub fn reason(&self, key: &ServiceKey) -> Option<String> {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        shared
            .boards
            .iter()
            .find_map(|(url, b)| b.reasons.get(key).map(|r| format!("registry {url}: {r}")))
    }

    /// Changes whenever a reason appears or goes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> wire::ServiceKey {
        wire::ServiceKey {
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_refusal_stays_until_an_answer_takes_the_service() {
        let r = Refusals::default();
        let web = ServiceKey::try_from(&key("web")).unwrap();
        r.sent("hub", 1, [key("web"), key("db")].iter());
        r.answered(
            "hub",
            1,
            &[wire::Refusal {
                key: Some(key("web")),
                reason: "reserved address".into(),
            }],
        );
        assert!(r.reason(&web).unwrap().contains("reserved address"));
        // Sent again, not answered yet: the reason stays.
        r.sent("hub", 2, [key("web")].iter());
        r.answered("hub", 1, &[]);
        assert!(r.reason(&web).is_some());
        // Answered without a refusal: taken.
        r.answered("hub", 2, &[]);
        assert!(r.reason(&web).is_none());
    }
}
