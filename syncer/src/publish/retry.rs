//! Services the registry refused, kept pending and sent again in a later
//! Delta after a growing, capped delay, instead of being taken as sent.
//!
//! A refusal may go away without any change at the source (another
//! service was removed under `--max-services-per-cluster`, the hub's fleet
//! file changed), so the syncer asks again. A service that changes at the
//! source in the meantime goes out with the change and leaves the pending
//! set; a new stream's Snapshot sends everything and starts it empty.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshdns_proto::model::{ServiceExport, ServiceKey};
use meshdns_proto::wire;
use tokio::time::Instant;

use super::Backoff;

/// The refused services of one stream and when to try them again.
#[derive(Debug)]
pub struct Refused {
    keys: BTreeSet<ServiceKey>,
    due: Option<Instant>,
    backoff: Backoff,
    /// The generation of the last retry sent: a response to it (or a later
    /// request) without refusals lets the delay start small again.
    retried: Option<u64>,
}

impl Refused {
    pub fn new(backoff: Backoff) -> Self {
        Refused {
            keys: BTreeSet::new(),
            due: None,
            backoff,
            retried: None,
        }
    }

    /// When the pending services are due again, if any are pending.
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// Takes the registry's answer to request `generation` and the keys it
    /// refused; a key that does not parse names nothing this syncer sent.
    pub fn answered(&mut self, generation: u64, refusals: &[wire::Refusal]) {
        let before = self.keys.len();
        self.keys.extend(
            refusals
                .iter()
                .filter_map(|r| ServiceKey::try_from(r.key.as_ref()?).ok()),
        );
        let answers_retry = self.retried.is_some_and(|g| generation >= g);
        if refusals.is_empty() && answers_retry && self.keys.is_empty() {
            // The last retry went through: the next refusal starts over.
            self.backoff.reset();
            self.retried = None;
        }
        if self.keys.len() > before && self.due.is_none() {
            self.due = Some(Instant::now() + self.backoff.next_delay());
        }
    }

    /// Services about to be sent anyway (they changed at the source) are
    /// pending no more.
    pub fn sending(&mut self, changed: impl Fn(&ServiceKey) -> bool) {
        self.keys.retain(|k| !changed(k));
        if self.keys.is_empty() {
            self.due = None;
        }
    }

    /// Takes the pending services for a retry Delta, as `current` has them:
    /// an upsert of those it holds, a removal of those it does not.
    pub fn take(
        &mut self,
        current: &BTreeMap<ServiceKey, Arc<ServiceExport>>,
    ) -> (Vec<wire::ServiceExport>, Vec<wire::ServiceKey>) {
        self.due = None;
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for key in std::mem::take(&mut self.keys) {
            match current.get(&key) {
                Some(service) => upserts.push(service.as_ref().into()),
                None => removals.push((&key).into()),
            }
        }
        (upserts, removals)
    }

    /// The retry went out as requests up to `generation`.
    pub fn retried(&mut self, generation: u64) {
        self.retried = Some(generation);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn refusal(name: &str) -> wire::Refusal {
        wire::Refusal {
            key: Some(wire::ServiceKey {
                namespace: "shop".into(),
                name: name.into(),
            }),
            reason: "over the limit".into(),
        }
    }

    #[tokio::test]
    async fn refusals_are_due_later_and_the_delay_grows_until_a_retry_lands() {
        let min = Duration::from_millis(100);
        let mut refused = Refused::new(Backoff::new(min, Duration::from_secs(10)));
        refused.answered(3, &[]);
        assert!(refused.due().is_none(), "nothing refused, nothing due");
        let mut delays = Vec::new();
        let mut generation = 3;
        for _ in 0..8 {
            let before = Instant::now();
            refused.answered(generation, &[refusal("web")]);
            let due = refused.due().expect("a refused service is due again");
            delays.push(due - before);
            generation += 1;
            let set = BTreeMap::new();
            let (upserts, removals) = refused.take(&set);
            assert_eq!((upserts.len(), removals.len()), (0, 1));
            refused.retried(generation);
        }
        assert!(delays.iter().all(|d| *d >= min));
        // Full jitter: the ceiling doubles, so later delays reach far above the first.
        assert!(delays.iter().any(|d| *d > min * 4), "{delays:?}");
        // The retry is accepted: the next refusal is due soon again.
        refused.answered(generation, &[]);
        refused.answered(generation + 1, &[refusal("web")]);
        let due = refused.due().unwrap() - Instant::now();
        assert!(due <= min, "{due:?}");
        // Sent again with a source change: no longer pending.
        refused.sending(|k| k.name.as_str() == "web");
        assert!(refused.due().is_none());
        assert_eq!(refused.take(&BTreeMap::new()), (vec![], vec![]));
    }
}
