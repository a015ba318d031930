//! ServiceImports (multicluster.x-k8s.io/v1alpha1): one per service of the
//! clusterset's view, in the service's namespace when it exists here (or
//! with `--mcs-create-namespaces`), with the resolved type and ports and
//! `status.clusters` naming the exporting clusters.
//!
//! Ours carry the [`MANAGED_BY`] label; every ServiceImport is watched
//! and one without it (another implementation's, or an admin's) is never
//! created over, updated nor deleted: no write at all. `spec.ips` stays empty: meshdns
//! allocates no ClusterSet VIP, its DNS answers carry the endpoints'
//! addresses (or each cluster's ClusterIP in `clusterip` mode). Callers
//! run this only while the registry's view is live: an outage never
//! deletes a ServiceImport.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ObjectMeta};
use kube::{Api, ResourceExt};
use meshdns_proto::model::ServiceKey;
use meshdns_proto::wire;
use serde_json::{Value, json};
use tracing::{info, warn};

use super::Context;
use super::feed::Import;
use super::observed::Key;
use super::writes::Outcome;

/// The label on every object the syncer creates in its cluster.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "meshdns-syncer");

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("multicluster.x-k8s.io", "v1alpha1", "ServiceImport"),
        "serviceimports",
    )
}

fn protocol(p: i32) -> &'static str {
    match wire::Protocol::try_from(p) {
        Ok(wire::Protocol::Udp) => "UDP",
        Ok(wire::Protocol::Sctp) => "SCTP",
        _ => "TCP",
    }
}

/// The spec a ServiceImport of `import` has.
pub fn spec(import: &Import) -> Value {
    let kind = if import.mode == wire::Mode::ClusterIp as i32 {
        "ClusterSetIP"
    } else {
        "Headless"
    };
    let ports: Vec<Value> = import
        .ports
        .iter()
        .map(|p| {
            let mut port = json!({"port": p.port, "protocol": protocol(p.protocol)});
            if !p.name.is_empty() {
                port["name"] = json!(p.name);
            }
            port
        })
        .collect();
    json!({"type": kind, "ports": ports})
}

/// The status a ServiceImport of `import` has.
pub fn status(import: &Import) -> Value {
    let clusters: Vec<Value> = import
        .clusters
        .iter()
        .map(|c| json!({"cluster": c.cluster}))
        .collect();
    json!({"clusters": clusters})
}

/// The ports as we write them, whatever the server defaulted or another
/// field manager added (`appProtocol`, a defaulted protocol).
fn owned_ports(spec: &Value) -> Vec<(String, u64, String)> {
    spec["ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap_or_default().to_owned(),
                        p["port"].as_u64().unwrap_or_default(),
                        p["protocol"].as_str().unwrap_or("TCP").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Does `current` (a stored spec) hold what we own of `wanted`: the type
/// and the ports? Other fields (`ips`, `sessionAffinity`, defaults) are
/// not ours to compare.
fn spec_holds(current: Option<&Value>, wanted: &Value) -> bool {
    current.is_some_and(|c| c["type"] == wanted["type"] && owned_ports(c) == owned_ports(wanted))
}

/// The clusters of a stored status, by name.
fn status_clusters(status: Option<&Value>) -> Vec<String> {
    status
        .and_then(|s| s["clusters"].as_array())
        .map(|a| {
            a.iter()
                .map(|c| c["cluster"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn ours(obj: &DynamicObject) -> bool {
    obj.labels().get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)
}

/// Brings the cluster's ServiceImports to `view`; `true` when a write
/// met a conflict, or a deletion is held (`hold_deletes`: the stream came
/// up less than a grace period ago), and a pass should follow soon.
pub async fn reconcile(
    cx: &Context,
    view: &BTreeMap<ServiceKey, Import>,
    hold_deletes: bool,
) -> bool {
    let ar = resource();
    let mut again = false;
    let observed = cx.imports.all();
    let mut wanted: BTreeSet<Key> = BTreeSet::new();
    for (key, import) in view {
        let k: Key = (key.namespace.to_string(), key.name.to_string());
        let ns_key: Key = (String::new(), k.0.clone());
        if cx.namespaces.get(&ns_key).is_none() {
            if !cx.settings.create_namespaces {
                continue;
            }
            again |= create_namespace(cx, &k.0).await;
            continue;
        }
        wanted.insert(k.clone());
        let api: Api<DynamicObject> = Api::namespaced_with(cx.client.clone(), &k.0, &ar);
        let (spec, status) = (spec(import), status(import));
        let current = match observed.get(&k) {
            Some(obj) if !ours(obj) => continue,
            Some(obj) => obj.clone(),
            None => {
                let mut obj = DynamicObject::new(&k.1, &ar).within(&k.0);
                obj.metadata.labels = Some(BTreeMap::from([(
                    MANAGED_BY.0.to_owned(),
                    MANAGED_BY.1.to_owned(),
                )]));
                obj.data = json!({"spec": spec});
                match cx.writes.create(&api, &obj).await {
                    Outcome::Done(created) => {
                        info!(service = %key, "serviceimport created");
                        cx.imports.wrote(k.clone(), Some(created.clone()));
                        created
                    }
                    Outcome::Conflict => {
                        warn!(service = %key, "a ServiceImport not made by meshdns-syncer exists; left alone");
                        continue;
                    }
                    _ => {
                        again = true;
                        continue;
                    }
                }
            }
        };
        let mut current = current;
        if !spec_holds(current.data.get("spec"), &spec) {
            let mut next = current.clone();
            if !next.data["spec"].is_object() {
                next.data["spec"] = json!({});
            }
            next.data["spec"]["type"] = spec["type"].clone();
            next.data["spec"]["ports"] = spec["ports"].clone();
            match cx.writes.replace(&api, &next).await {
                Outcome::Done(updated) => {
                    cx.imports.wrote(k.clone(), Some(updated.clone()));
                    current = updated;
                }
                _ => {
                    again = true;
                    continue;
                }
            }
        }
        if status_clusters(current.data.get("status")) != status_clusters(Some(&status)) {
            let mut next = current.clone();
            if !next.data["status"].is_object() {
                next.data["status"] = json!({});
            }
            next.data["status"]["clusters"] = status["clusters"].clone();
            match cx.writes.replace_status(&api, &next).await {
                Outcome::Done(updated) => cx.imports.wrote(k.clone(), Some(updated)),
                _ => again = true,
            }
        }
    }
    for (k, obj) in observed {
        if wanted.contains(&k) || !ours(&obj) {
            continue;
        }
        if hold_deletes {
            again = true;
            continue;
        }
        let api: Api<DynamicObject> = Api::namespaced_with(cx.client.clone(), &k.0, &ar);
        match cx
            .writes
            .delete(&api, &k.1, obj.metadata.resource_version.clone())
            .await
        {
            Outcome::Gone => {
                info!(namespace = %k.0, name = %k.1, "serviceimport deleted: no cluster exports the service");
                cx.imports.wrote(k, None);
            }
            _ => again = true,
        }
    }
    again
}

/// Creates a missing namespace for a ServiceImport; `true`: pass again
/// soon (it was created), `false` on failure.
async fn create_namespace(cx: &Context, name: &str) -> bool {
    let api: Api<Namespace> = Api::all(cx.client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY.0.to_owned(),
                MANAGED_BY.1.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    match cx.writes.create(&api, &ns).await {
        Outcome::Done(created) => {
            info!(namespace = name, "namespace created for a serviceimport");
            cx.namespaces
                .wrote((String::new(), name.to_owned()), Some(created));
            true
        }
        // Already there: the namespaces watch brings it.
        Outcome::Conflict => true,
        // Refused (RBAC without namespaces create, a Terminating
        // namespace): the writes' per-object backoff paces the retries.
        _ => false,
    }
}
