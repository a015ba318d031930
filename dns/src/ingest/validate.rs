//! Export messages checked before they reach the registry (and before its
//! lock is taken): each service on its own, so one bad item never takes
//! the rest down. Everything here is O(n) in the message.

use std::collections::{BTreeSet, HashSet};

use meshdns_proto::convert::{Interner, service_export};
use meshdns_proto::error::{Echo, Problem};
use meshdns_proto::model::{ServiceExport, ServiceKey};
use meshdns_proto::{InvalidField, wire};

/// A refused item: what goes back to the syncer, and its kind for metrics.
pub(super) type Refused = (wire::Refusal, &'static str);

/// Longest name part repeated back in a refusal's key: the longest valid
/// DNS name; a longer one is invalid anyway and is cut.
const KEY_ECHO_BYTES: usize = 253;

fn cut(text: &str) -> String {
    let mut end = text.len().min(KEY_ECHO_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// The key as the sender gave it, cut to a bounded size.
pub(super) fn echo_key(key: &wire::ServiceKey) -> wire::ServiceKey {
    wire::ServiceKey {
        namespace: cut(&key.namespace),
        name: cut(&key.name),
    }
}

fn refusal(key: Option<&wire::ServiceKey>, reason: String) -> wire::Refusal {
    wire::Refusal {
        key: key.map(echo_key),
        reason,
    }
}

/// Refuses `service` for `reason` (counted under `kind`); its previous
/// version, if its key is readable, is kept.
fn refuse(
    service: &wire::ServiceExport,
    reason: String,
    kind: &'static str,
    refusals: &mut Vec<Refused>,
    keep: &mut BTreeSet<ServiceKey>,
) {
    if let Some(key) = service
        .key
        .as_ref()
        .and_then(|k| ServiceKey::try_from(k).ok())
    {
        keep.insert(key);
    }
    refusals.push((refusal(service.key.as_ref(), reason), kind));
}

/// What a Snapshot (all its parts) or a Delta brings, checked.
#[derive(Default)]
pub(super) struct Checked {
    pub valid: Vec<ServiceExport>,
    pub refusals: Vec<Refused>,
    /// Refused services whose previous version stays.
    pub keep: BTreeSet<ServiceKey>,
    /// Services the fleet file does not allow: their previous version
    /// leaves too (what the file stops allowing is not answered).
    pub disallowed: BTreeSet<ServiceKey>,
    /// Every key seen so far (across a Snapshot's parts), to refuse
    /// duplicates.
    seen: HashSet<ServiceKey>,
    /// Zone and node names, shared by every endpoint naming them: the
    /// stream's, lent for this message.
    pub names: Interner,
}

impl Checked {
    /// Nothing checked yet; zone and node names shared through `names`.
    pub fn with_names(names: Interner) -> Self {
        Checked {
            names,
            ..Checked::default()
        }
    }

    /// Validates each service on its own, adding the valid ones and a
    /// refusal for each invalid one; `max_endpoints` is checked on the
    /// wire count before anything is converted.
    pub fn add(&mut self, services: &[wire::ServiceExport], max_endpoints: usize) {
        self.valid.reserve_exact(services.len());
        for (i, service) in services.iter().enumerate() {
            if service.endpoints.len() > max_endpoints {
                let reason = format!(
                    "services[{i}]: {} endpoints is over the --max-endpoints-per-service limit ({max_endpoints})",
                    service.endpoints.len()
                );
                refuse(
                    service,
                    reason,
                    "limit_endpoints",
                    &mut self.refusals,
                    &mut self.keep,
                );
                continue;
            }
            let result = service_export(service, &mut self.names).and_then(|s| {
                if self.seen.insert(s.key().clone()) {
                    Ok(s)
                } else {
                    Err(InvalidField::new(
                        "key",
                        Problem::DuplicateService(s.key().to_string()),
                    ))
                }
            });
            match result {
                Ok(s) => self.valid.push(s),
                Err(e) => refuse(
                    service,
                    format!("services[{i}]: {e}"),
                    e.problem.kind(),
                    &mut self.refusals,
                    &mut self.keep,
                ),
            }
        }
    }
}

/// A Delta's removals as a set (a key named twice is removed once), at
/// most `max` of them; the invalid and the excess are refused.
pub(super) fn removals(
    keys: &[wire::ServiceKey],
    max: usize,
) -> (BTreeSet<ServiceKey>, Vec<Refused>) {
    let mut valid = BTreeSet::new();
    let mut refusals = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        match ServiceKey::try_from(key) {
            Ok(k) if valid.contains(&k) => {}
            Ok(_) if valid.len() >= max => refusals.push((
                refusal(
                    Some(key),
                    format!("removals[{i}]: a Delta may remove at most {max} services (--max-services-per-cluster)"),
                ),
                "limit_removals",
            )),
            Ok(k) => {
                valid.insert(k);
            }
            Err(e) => refusals.push((
                refusal(Some(key), format!("removals[{i}]: {e}")),
                e.problem.kind(),
            )),
        }
    }
    (valid, refusals)
}

/// Refusals for services over the cluster's services limit.
pub(super) fn over_limit(keys: Vec<ServiceKey>, max: usize) -> Vec<Refused> {
    keys.iter()
        .map(|k| {
            let refusal = wire::Refusal {
                key: Some(k.into()),
                reason: format!("{k}: the cluster already exports {max} services, the --max-services-per-cluster limit"),
            };
            (refusal, "limit_services")
        })
        .collect()
}

/// Most refusals sent back in full for one message; the rest are counted
/// in one more refusal, so a response stays small whatever was sent.
pub const MAX_REFUSALS_SHOWN: usize = 20;

/// The refusals a response carries: the first [`MAX_REFUSALS_SHOWN`] in
/// full, then one (with no key) saying how many more there were.
pub(super) fn summarize(mut refusals: Vec<wire::Refusal>) -> Vec<wire::Refusal> {
    if refusals.len() > MAX_REFUSALS_SHOWN {
        let more = refusals.len() - MAX_REFUSALS_SHOWN;
        refusals.truncate(MAX_REFUSALS_SHOWN);
        refusals.push(wire::Refusal {
            key: None,
            reason: format!("... and {more} more items refused (the registry sends the first {MAX_REFUSALS_SHOWN} in full)"),
        });
    }
    refusals
}

/// A one-line account of a message's refusals for the log: how many,
/// by kind, and the first reason (its values already bounded).
pub(super) fn log_line(refusals: &[Refused]) -> String {
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for (_, kind) in refusals {
        match kinds.iter_mut().find(|(k, _)| k == kind) {
            Some((_, n)) => *n += 1,
            None => kinds.push((kind, 1)),
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}={n}")).collect();
    let first = refusals
        .first()
        .map(|(r, _)| format!("; first: {}", Echo(&r.reason)))
        .unwrap_or_default();
    format!("{} refused ({}){first}", refusals.len(), kinds.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> wire::ServiceKey {
        wire::ServiceKey {
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn removals_are_a_bounded_set() {
        let keys = vec![key("a", "x"); 9];
        let (set, refused) = removals(&keys, 5);
        assert_eq!(set.len(), 1);
        assert!(refused.is_empty());
        let keys: Vec<_> = (0..8).map(|i| key("a", &format!("s{i}"))).collect();
        let (set, refused) = removals(&keys, 5);
        assert_eq!(set.len(), 5);
        assert_eq!(refused.len(), 3);
        assert!(
            refused[0].0.reason.contains("at most 5"),
            "{}",
            refused[0].0.reason
        );
    }

    #[test]
    fn refusals_and_echoes_are_bounded() {
        let huge = "x".repeat(1 << 20);
        let service = wire::ServiceExport {
            key: Some(key(&huge, &huge)),
            ..Default::default()
        };
        let mut checked = Checked::default();
        checked.add(&vec![service; 1000], 10);
        assert_eq!(checked.refusals.len(), 1000);
        let (r, _) = &checked.refusals[0];
        assert!(r.reason.len() < 200, "{}", r.reason.len());
        assert!(r.key.as_ref().unwrap().namespace.len() <= KEY_ECHO_BYTES);
        let shown = summarize(checked.refusals.iter().map(|(r, _)| r.clone()).collect());
        assert_eq!(shown.len(), MAX_REFUSALS_SHOWN + 1);
        assert!(shown[MAX_REFUSALS_SHOWN].reason.contains("980 more"));
        let line = log_line(&checked.refusals);
        assert!(line.len() < 300, "{line}");
        assert!(line.starts_with("1000 refused (bad_label=1000)"), "{line}");
    }
}
