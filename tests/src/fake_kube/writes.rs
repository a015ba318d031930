//! The writes kube-apiserver accepts, as strictly: create (POST), update
//! (PUT) with optimistic concurrency, delete with preconditions, and the
//! status subresource; GET of one object.
//!
//! Refused as the real server refuses them, each with its `Status` body:
//! a body that is not `application/json` (415), an object of another kind
//! or apiVersion than the path (400), a namespace in the body other than
//! the path's (400), no name (422), a resourceVersion on create (400), a
//! create into a namespace that does not exist (404), a create of a name
//! that exists (409 AlreadyExists), an update without a resourceVersion
//! (422) or with a stale one (409 Conflict), a delete whose precondition
//! fails (409), a name in the body other than the path's (400), a field
//! value the API server does not support (422, [`super::objects::refused`]), a verb
//! [`super::FakeKube::forbid`] forbids (403). As a real server does, a
//! write through the main resource of a kind with a status subresource
//! keeps the stored status, and a write through `/status` keeps
//! everything but the status; `metadata.generation` moves when the spec
//! does. Accepted writes are recorded ([`super::FakeKube::writes`]), and
//! every write request with its status code ([`super::FakeKube::attempts`]).

use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::api::{bad_request, forbidden, not_found, status};
use super::objects::Res;
use super::store::{Attempt, Store, Write, namespace_of};

/// A request path naming one object (`.../NAME` or `.../NAME/status`).
struct Target {
    res: Res,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn target(path: &str) -> Option<Target> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let base = match parts.as_slice() {
        ["api", "v1", ..] => 2,
        ["apis", _, _, ..] => 3,
        _ => return None,
    };
    let rest = &parts[base..];
    let (collection_len, name, status) = match rest {
        ["namespaces", _, _] | [_] => (rest.len(), None, false),
        ["namespaces", _, _, name] | [_, name] => (rest.len() - 1, Some(*name), false),
        ["namespaces", _, _, name, "status"] | [_, name, "status"] => {
            (rest.len() - 2, Some(*name), true)
        }
        _ => return None,
    };
    let collection = parts[..base + collection_len].join("/");
    let (res, namespace) = Res::from_path(&format!("/{collection}"))?;
    // `/api/v1/namespaces/NAME` names a namespace, not a collection.
    Some(Target {
        res,
        namespace,
        name: name.map(str::to_owned),
        status,
    })
}

/// Whether a GET path names one object rather than a collection.
pub fn names_object(path: &str) -> bool {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        ["api", "v1", "namespaces", _] => true,
        _ => target(path).is_some_and(|t| t.name.is_some()),
    }
}

fn json(code: StatusCode, object: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        object.to_string(),
    )
        .into_response()
}

fn invalid(res: Res, name: &str, message: &str) -> Response {
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!("{} \"{name}\" is invalid: {message}", qualified(res)),
        Some(json!({"name": name, "group": res.group(), "kind": res.kind()})),
    )
}

fn qualified(res: Res) -> String {
    match res.group() {
        "" => res.plural().to_owned(),
        g => format!("{}.{g}", res.plural()),
    }
}

fn conflict(res: Res, name: &str) -> Response {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            qualified(res)
        ),
        Some(json!({"name": name, "group": res.group(), "kind": res.plural()})),
    )
}

fn object_not_found(res: Res, name: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", qualified(res)),
        Some(json!({"name": name, "group": res.group(), "kind": res.plural()})),
    )
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::from_second(k8s_openapi::jiff::Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Parses and checks a request body as the object `t` names.
fn body_object(t: &Target, headers: &HeaderMap, body: &[u8]) -> Result<Value, Box<Response>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return Err(Box::new(status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            &format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {content_type:?})"
            ),
            None,
        )));
    }
    let object: Value = serde_json::from_slice(body).map_err(|e| {
        Box::new(bad_request(&format!(
            "the object provided is unrecognized: {e}"
        )))
    })?;
    if !object.is_object() {
        return Err(Box::new(bad_request(
            "the object provided is not an object",
        )));
    }
    let (kind, api_version) = (object["kind"].as_str(), object["apiVersion"].as_str());
    if kind != Some(t.res.kind()) || api_version != Some(t.res.api_version()) {
        return Err(Box::new(bad_request(&format!(
            "the API version in the data ({}) does not match the expected API version ({}), or the kind ({}) is not {}",
            api_version.unwrap_or_default(),
            t.res.api_version(),
            kind.unwrap_or_default(),
            t.res.kind()
        ))));
    }
    if let Some(ns) = object["metadata"]["namespace"].as_str()
        && Some(ns) != t.namespace.as_deref()
        && t.res.namespaced()
    {
        return Err(Box::new(bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )));
    }
    Ok(object)
}

fn spec_of(object: &Value) -> Value {
    let mut rest = object.clone();
    if let Some(m) = rest.as_object_mut() {
        for k in ["metadata", "status", "kind", "apiVersion"] {
            m.remove(k);
        }
    }
    rest
}

pub fn handle(
    store: &mut Store,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Response {
    let response = answer(store, method, headers, path, body);
    let verb = match *method {
        Method::POST => Some("create"),
        Method::PUT => Some("update"),
        Method::PATCH => Some("patch"),
        Method::DELETE => Some("delete"),
        _ => None,
    };
    if let Some(verb) = verb {
        let name = if verb == "create" {
            serde_json::from_slice::<Value>(body)
                .ok()
                .and_then(|b| b["metadata"]["name"].as_str().map(str::to_owned))
                .unwrap_or_default()
        } else {
            path.trim_end_matches("/status")
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        };
        store.attempts.push(Attempt {
            verb,
            path: path.to_owned(),
            name,
            code: response.status().as_u16(),
        });
    }
    response
}

fn answer(
    store: &mut Store,
    method: &Method,
    headers: &HeaderMap,
    path: &str,
    body: &[u8],
) -> Response {
    // `/api/v1/namespaces/NAME[/status]` names a Namespace.
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let t = match parts.as_slice() {
        ["api", "v1", "namespaces", name] => Some(Target {
            res: Res::Namespaces,
            namespace: None,
            name: Some((*name).to_owned()),
            status: false,
        }),
        ["api", "v1", "namespaces", name, "status"] => Some(Target {
            res: Res::Namespaces,
            namespace: None,
            name: Some((*name).to_owned()),
            status: true,
        }),
        _ => target(path),
    };
    let Some(t) = t else {
        return not_found();
    };
    if t.res.mcs() && !store.mcs {
        return not_found();
    }
    if t.status && !t.res.has_status() {
        return not_found();
    }
    let verb = match (method.clone(), &t.name) {
        (Method::GET, Some(_)) => "get",
        (Method::POST, None) => "create",
        (Method::PUT, Some(_)) => "update",
        (Method::DELETE, Some(_)) => "delete",
        _ => {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!(
                    "the server does not allow this method on the requested resource ({method})"
                ),
                None,
            );
        }
    };
    if store.forbidden.contains(&(t.res, verb)) {
        return forbidden(t.res, verb);
    }
    let namespace = t.namespace.clone().unwrap_or_default();
    match verb {
        "get" => {
            let name = t.name.clone().unwrap_or_default();
            match store
                .objects
                .get(&t.res)
                .and_then(|o| o.get(&(namespace, name.clone())))
            {
                Some(obj) => json(StatusCode::OK, obj),
                None => object_not_found(t.res, &name),
            }
        }
        "create" => create(store, &t, headers, body),
        "update" => update(store, &t, headers, body),
        _ => delete(store, &t, body),
    }
}

fn record(store: &mut Store, verb: &'static str, t: &Target, name: &str) {
    store.writes.push(Write {
        verb,
        res: t.res,
        namespace: t.namespace.clone().unwrap_or_default(),
        name: name.to_owned(),
        status: t.status,
    });
}

fn create(store: &mut Store, t: &Target, headers: &HeaderMap, body: &[u8]) -> Response {
    let mut object = match body_object(t, headers, body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return invalid(
            t.res,
            "",
            "metadata.name: Required value: name or generateName is required",
        );
    };
    if object["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|v| !v.is_empty())
    {
        return bad_request("resourceVersion should not be set on objects to be created");
    }
    if let Some(why) = super::objects::refused(t.res, &object) {
        return invalid(t.res, &name, &why);
    }
    let namespace = t.namespace.clone().unwrap_or_default();
    if t.res.namespaced() {
        let exists = store
            .objects
            .get(&Res::Namespaces)
            .is_some_and(|n| n.contains_key(&(String::new(), namespace.clone())));
        if !exists {
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("namespaces \"{namespace}\" not found"),
                Some(json!({"name": namespace, "kind": "namespaces"})),
            );
        }
    }
    let key = (namespace.clone(), name.clone());
    if store
        .objects
        .get(&t.res)
        .is_some_and(|o| o.contains_key(&key))
    {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("{} \"{name}\" already exists", qualified(t.res)),
            Some(json!({"name": name, "group": t.res.group(), "kind": t.res.plural()})),
        );
    }
    store.rv += 1;
    let rv = store.rv;
    if t.res.namespaced() {
        object["metadata"]["namespace"] = json!(namespace);
    }
    object["metadata"]["resourceVersion"] = json!(rv.to_string());
    object["metadata"]["uid"] = json!(format!("uid-{namespace}-{name}-{rv}"));
    object["metadata"]["creationTimestamp"] = json!(now());
    if t.res != Res::Events {
        object["metadata"]["generation"] = json!(1);
    }
    if t.res.has_status()
        && let Some(m) = object.as_object_mut()
    {
        // The status subresource's: a create never sets it.
        m.remove("status");
    }
    store
        .objects
        .entry(t.res)
        .or_default()
        .insert(key, object.clone());
    record(store, "create", t, &name);
    store.record(t.res, "ADDED", object.clone(), None);
    json(StatusCode::CREATED, &object)
}

fn update(store: &mut Store, t: &Target, headers: &HeaderMap, body: &[u8]) -> Response {
    let object = match body_object(t, headers, body) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    let name = t.name.clone().unwrap_or_default();
    if object["metadata"]["name"].as_str() != Some(name.as_str()) {
        return bad_request("the name of the object does not match the name on the URL");
    }
    if let Some(why) = super::objects::refused(t.res, &object) {
        return invalid(t.res, &name, &why);
    }
    let key = (t.namespace.clone().unwrap_or_default(), name.clone());
    let Some(stored) = store.objects.get(&t.res).and_then(|o| o.get(&key)).cloned() else {
        return object_not_found(t.res, &name);
    };
    let Some(given) = object["metadata"]["resourceVersion"]
        .as_str()
        .filter(|v| !v.is_empty())
    else {
        return invalid(
            t.res,
            &name,
            "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update",
        );
    };
    if Some(given) != stored["metadata"]["resourceVersion"].as_str() {
        return conflict(t.res, &name);
    }
    let mut next = if t.status {
        // Through /status: only the status changes.
        let mut next = stored.clone();
        next["status"] = object["status"].clone();
        next
    } else {
        let mut next = object.clone();
        // What the server owns stays as stored (and absent stays absent).
        for k in ["uid", "creationTimestamp", "namespace", "generation"] {
            match stored["metadata"].get(k) {
                Some(v) => next["metadata"][k] = v.clone(),
                None => {
                    if let Some(m) = next["metadata"].as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        if t.res.has_status() {
            // Through the main resource: the status stays as stored.
            match stored.get("status") {
                Some(s) => next["status"] = s.clone(),
                None => {
                    if let Some(m) = next.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        if t.res != Res::Events && spec_of(&next) != spec_of(&stored) {
            let generation = stored["metadata"]["generation"].as_i64().unwrap_or(1);
            next["metadata"]["generation"] = json!(generation + 1);
        }
        next
    };
    if t.res.namespaced() {
        next["metadata"]["namespace"] = json!(key.0);
    }
    store.rv += 1;
    next["metadata"]["resourceVersion"] = json!(store.rv.to_string());
    store
        .objects
        .entry(t.res)
        .or_default()
        .insert(key, next.clone());
    record(store, "update", t, &name);
    store.record(t.res, "MODIFIED", next.clone(), Some(stored));
    json(StatusCode::OK, &next)
}

fn delete(store: &mut Store, t: &Target, body: &[u8]) -> Response {
    let name = t.name.clone().unwrap_or_default();
    let key = (t.namespace.clone().unwrap_or_default(), name.clone());
    let Some(stored) = store.objects.get(&t.res).and_then(|o| o.get(&key)).cloned() else {
        return object_not_found(t.res, &name);
    };
    if !body.is_empty() {
        let options: Value = match serde_json::from_slice(body) {
            Ok(o) => o,
            Err(e) => return bad_request(&format!("DeleteOptions: {e}")),
        };
        let pre = &options["preconditions"];
        if let Some(rv) = pre["resourceVersion"].as_str()
            && Some(rv) != stored["metadata"]["resourceVersion"].as_str()
        {
            return status(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    qualified(t.res),
                    stored["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap_or_default()
                ),
                None,
            );
        }
        if let Some(uid) = pre["uid"].as_str()
            && Some(uid) != stored["metadata"]["uid"].as_str()
        {
            return conflict(t.res, &name);
        }
    }
    if let Some(objects) = store.objects.get_mut(&t.res) {
        objects.remove(&key);
    }
    store.rv += 1;
    let mut object = stored.clone();
    object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
    record(store, "delete", t, &name);
    store.record(t.res, "DELETED", object.clone(), Some(stored));
    let _ = namespace_of(&object);
    json(StatusCode::OK, &object)
}
