//! ServiceExport status in `--mcs` mode: the [`conditions`] of each
//! export, with `observedGeneration`, written through the status
//! subresource only when a condition changes; `lastTransitionTime` moves
//! only when a condition's status does. Conditions of other types (other
//! controllers') are kept as they are.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use meshdns_proto::model::{Namespace, ServiceKey, ServiceName};
use serde_json::{Value, json};

use super::Context;
use super::conditions::{self, Condition, Local};
use super::feed::Import;
use super::writes::Outcome;

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("multicluster.x-k8s.io", "v1alpha1", "ServiceExport"),
        "serviceexports",
    )
}

/// Types we once wrote and no longer do (mcs-api defines no `Ready`):
/// dropped from the list when it is next written.
const RETIRED: [&str; 1] = ["Ready"];

/// Now, to the second, as metav1.Time is written.
pub fn now() -> String {
    Timestamp::from_second(Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The conditions list `obj` should have, or `None` when it has them.
pub fn merged(obj: &DynamicObject, wanted: &[Condition]) -> Option<Vec<Value>> {
    let generation = obj.metadata.generation.unwrap_or(0);
    let old: Vec<Value> = obj.data["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let find = |kind: &str| old.iter().find(|c| c["type"] == kind);
    let mut next: Vec<Value> = old
        .iter()
        .filter(|c| !conditions::TYPES.iter().any(|k| c["type"] == *k))
        .filter(|c| !RETIRED.iter().any(|k| c["type"] == *k))
        .cloned()
        .collect();
    let mut changed = next.len() + wanted.len() != old.len();
    for w in wanted {
        let before = find(w.kind);
        let since = before
            .filter(|b| b["status"] == w.status)
            .and_then(|b| b["lastTransitionTime"].as_str().map(str::to_owned))
            .unwrap_or_else(now);
        let c = json!({
            "type": w.kind,
            "status": w.status,
            "reason": w.reason,
            "message": w.message,
            "observedGeneration": generation,
            "lastTransitionTime": since,
        });
        changed |= before != Some(&c);
        next.push(c);
    }
    changed.then_some(next)
}

fn service_key(ns: &str, name: &str) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: Namespace::new(ns).ok()?,
        name: ServiceName::new(name).ok()?,
    })
}

/// Writes every ServiceExport's conditions; `outage` (when set) turns
/// the registry's ones Unknown (a missing or ExternalName Service keeps
/// its local verdict). `true` when a write should be tried again soon.
pub async fn reconcile(
    cx: &Context,
    view: Option<&BTreeMap<ServiceKey, Import>>,
    outage: Option<&str>,
) -> bool {
    let Some(exports) = &cx.exports else {
        return false;
    };
    if !exports.ready() || !cx.services.ready() {
        // Their first list wakes the writers.
        return false;
    }
    let ar = resource();
    let mut again = false;
    for ((ns, name), obj) in exports.all() {
        let local = match cx.services.get(&(ns.clone(), name.clone())) {
            None => Local::Missing,
            Some(s) if s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName") => {
                Local::ExternalName
            }
            Some(_) => Local::Present,
        };
        let wanted = match outage {
            // This cluster's own verdicts need no registry.
            _ if local != Local::Present => {
                conditions::conditions(&conditions::verdict(&cx.cluster, local, None, None))
            }
            Some(outage) => conditions::unknown(outage),
            None => {
                let Some(view) = view else { continue };
                let key = service_key(&ns, &name);
                let refusal = key.as_ref().and_then(|k| cx.refusals.reason(k));
                let import = key.as_ref().and_then(|k| view.get(k));
                conditions::conditions(&conditions::verdict(&cx.cluster, local, refusal, import))
            }
        };
        let Some(list) = merged(&obj, &wanted) else {
            continue;
        };
        let mut next = obj.clone();
        if !next.data["status"].is_object() {
            next.data["status"] = json!({});
        }
        next.data["status"]["conditions"] = Value::Array(list);
        let api: Api<DynamicObject> = Api::namespaced_with(cx.client.clone(), &ns, &ar);
        match cx.writes.replace_status(&api, &next).await {
            Outcome::Done(updated) => exports.wrote((ns, name), Some(updated)),
            Outcome::Gone => {}
            _ => again = true,
        }
    }
    again
}
