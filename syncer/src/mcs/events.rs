//! Events on exported Services in label mode (a Service selected by its
//! label has no ServiceExport to carry conditions): `Exported`,
//! `ExportRefused` with the registry's reason, `ExportConflict` with the
//! hub's message.
//!
//! core/v1 Events with `count`, as kubelet and the controllers write
//! them: `kubectl describe service` shows "x3 over 10m" from `count`,
//! `firstTimestamp` and `lastTimestamp` on every server version, and
//! updating one object keeps a flapping export one Event, not one per
//! flap. (events.k8s.io/v1 `series` says the same with more ceremony, and
//! `kubectl describe` reads it back through the same core/v1 fields.) An
//! Event is written only when a Service's verdict changes: a reconnect
//! to the hub that changes nothing writes nothing. Its name is the
//! Service's and a hash of reason and message, so the same verdict again
//! counts up the same Event.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::ObjectMeta;
use meshdns_proto::model::ServiceKey;

use super::Context;
use super::conditions::{Local, Verdict, verdict};
use super::feed::Import;
use super::imports::MANAGED_BY;
use super::writes::Outcome;

/// An Event not counted up this long is forgotten.
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// What an Event says: (type, reason, message).
type Said = (&'static str, &'static str, String);

fn said(v: &Verdict) -> Option<Said> {
    match v {
        Verdict::Exported { .. } => {
            Some(("Normal", "Exported", "exported to the clusterset".into()))
        }
        Verdict::Refused(reason) => Some(("Warning", "ExportRefused", reason.clone())),
        Verdict::Conflict { message, .. } => Some(("Warning", "ExportConflict", message.clone())),
        Verdict::NoService | Verdict::InvalidServiceType | Verdict::Pending => None,
    }
}

fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now()))
}

/// The Events writer's memory: what each Service was last told, and the
/// Events written (to count them up).
#[derive(Debug, Default)]
pub struct Events {
    last: HashMap<ServiceKey, Said>,
    written: HashMap<(String, String), Event>,
}

impl Events {
    /// Emits an Event for each label-mode Service whose verdict changed;
    /// `true` when a write should be tried again soon.
    pub async fn reconcile(
        &mut self,
        cx: &Context,
        view: &BTreeMap<ServiceKey, Import>,
        exported: &[ServiceKey],
    ) -> bool {
        if !cx.services.ready() {
            // Its first list wakes the writers.
            return false;
        }
        let mut again = false;
        for key in exported {
            let k = (key.namespace.to_string(), key.name.to_string());
            if cx.exports.as_ref().is_some_and(|e| e.get(&k).is_some()) {
                continue; // a ServiceExport carries its conditions
            }
            let Some(service) = cx.services.get(&k) else {
                continue;
            };
            let v = verdict(
                &cx.cluster,
                Local::Present,
                cx.refusals.reason(key),
                view.get(key),
            );
            let Some(said) = said(&v) else { continue };
            if self.last.get(key) == Some(&said) {
                continue;
            }
            match self.emit(cx, &service, &said).await {
                true => {
                    self.last.insert(key.clone(), said);
                }
                false => again = true,
            }
        }
        let live: std::collections::HashSet<&ServiceKey> = exported.iter().collect();
        self.last.retain(|k, _| live.contains(k));
        self.prune(exported);
        again
    }

    /// Forgets the Events of Services no longer exported, and those not
    /// counted up for [`FORGET_AFTER`] (the API server expires Events
    /// after an hour by default; one that is still there is read again).
    fn prune(&mut self, exported: &[ServiceKey]) {
        let live: std::collections::HashSet<(String, String)> = exported
            .iter()
            .map(|k| (k.namespace.to_string(), k.name.to_string()))
            .collect();
        let cutoff = Timestamp::now()
            .checked_sub(FORGET_AFTER)
            .unwrap_or(Timestamp::MIN);
        self.written.retain(|(ns, _), event| {
            let service = event.involved_object.name.clone().unwrap_or_default();
            live.contains(&(ns.clone(), service))
                && event.last_timestamp.as_ref().is_some_and(|t| t.0 > cutoff)
        });
    }

    /// Writes or counts up the Event; `false` when it failed.
    async fn emit(&mut self, cx: &Context, service: &Service, said: &Said) -> bool {
        let ns = service.metadata.namespace.clone().unwrap_or_default();
        let svc = service.metadata.name.clone().unwrap_or_default();
        let name = format!(
            "{svc}.meshdns-{:016x}",
            fnv(&format!("{}\n{}", said.1, said.2))
        );
        let api: Api<Event> = Api::namespaced(cx.client.clone(), &ns);
        let id = (ns.clone(), name.clone());
        if let Some(old) = self.written.get(&id) {
            let mut next = old.clone();
            next.count = Some(old.count.unwrap_or(1) + 1);
            next.last_timestamp = Some(now());
            return match cx.writes.replace(&api, &next).await {
                Outcome::Done(updated) => {
                    self.written.insert(id, updated);
                    true
                }
                _ => {
                    // Someone else changed or deleted it: read it again.
                    self.written.remove(&id);
                    false
                }
            };
        }
        let at = now();
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_owned(),
                    MANAGED_BY.1.to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Service".into()),
                name: Some(svc),
                namespace: Some(ns),
                uid: service.metadata.uid.clone(),
                ..ObjectReference::default()
            },
            type_: Some(said.0.into()),
            reason: Some(said.1.into()),
            message: Some(said.2.clone()),
            count: Some(1),
            first_timestamp: Some(at.clone()),
            last_timestamp: Some(at),
            source: Some(EventSource {
                component: Some("meshdns-syncer".into()),
                host: None,
            }),
            reporting_component: Some("meshdns.io/syncer".into()),
            reporting_instance: Some(cx.cluster.clone()),
            ..Event::default()
        };
        match cx.writes.create(&api, &event).await {
            Outcome::Done(created) => {
                self.written.insert(id, created);
                true
            }
            Outcome::Conflict => {
                // Written before this syncer started: count it up from it.
                match api.get_opt(&name).await {
                    Ok(Some(existing)) => {
                        self.written.insert(id, existing);
                        Box::pin(self.emit(cx, service, said)).await
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
}
