//! The fake API server's request handling: LIST in pages, WATCH with
//! replay, bookmarks and timeouts, and the refusals a real kube-apiserver
//! sends, each with the `Status` body it sends (400 for a selector it
//! cannot parse, 401, 403 naming the verb, 404 for an API not served, 410
//! for a compacted resourceVersion or an expired continue token, 503).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use super::FakeKube;
use super::objects::Res;
use super::selector::LabelSelector;
use super::store::{Paging, Store, Watcher, event_line, gone_event};

/// A `Status` response, as kube-apiserver writes it.
pub fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    if let Some(details) = details {
        body["details"] = details;
    }
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

pub fn not_found() -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        "the server could not find the requested resource",
        Some(json!({})),
    )
}

pub fn bad_request(message: &str) -> Response {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

pub fn forbidden(res: Res, verb: &str) -> Response {
    status(
        StatusCode::FORBIDDEN,
        "Forbidden",
        &format!(
            "{plural} is forbidden: User \"system:serviceaccount:meshdns:meshdns-syncer\" cannot {verb} resource \"{plural}\" in API group \"{group}\" at the cluster scope",
            plural = res.plural(),
            group = res.group()
        ),
        Some(json!({"group": res.group(), "kind": res.plural()})),
    )
}

fn continue_expired() -> Response {
    status(
        StatusCode::GONE,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        None,
    )
}

pub async fn handle(
    State(fake): State<FakeKube>,
    method: Method,
    version: Version,
    headers: HeaderMap,
    uri: Uri,
    Query(params): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut store = fake.store.lock().unwrap();
    store.versions.insert(format!("{version:?}"));
    if store.down {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        );
    }
    let bearer = format!("Bearer {}", fake.options.token);
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|h| h.as_bytes() == bearer.as_bytes());
    if !authorized || !store.credentials_ok {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            None,
        );
    }
    if method != Method::GET || super::writes::names_object(uri.path()) {
        return super::writes::handle(&mut store, &method, &headers, uri.path(), &body);
    }
    let Some((res, namespace)) = Res::from_path(uri.path()) else {
        return not_found();
    };
    if res.mcs() && !store.mcs {
        return not_found();
    }
    let watching = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
    let verb = if watching { "watch" } else { "list" };
    if store.forbidden.contains(&(res, verb)) {
        return forbidden(res, verb);
    }
    let selector = match LabelSelector::parse(params.get("labelSelector").map_or("", |s| s)) {
        Ok(s) => s,
        Err(e) => return bad_request(&e),
    };
    store.requests += 1;
    if watching {
        watch(&fake, &mut store, res, namespace, selector, &params)
    } else {
        list(&mut store, res, namespace, &selector, &params)
    }
}

fn list(
    store: &mut Store,
    res: Res,
    namespace: Option<String>,
    selector: &LabelSelector,
    params: &HashMap<String, String>,
) -> Response {
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None | Some(Ok(0)) => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return bad_request("limit: Invalid value: must be a non-negative integer"),
    };
    let cap = store.page_cap;
    let (token, start) = match params.get("continue") {
        Some(_) if params.contains_key("resourceVersion") => {
            return bad_request("specifying resource version is not allowed when using continue");
        }
        Some(_) if store.compact_before_next_page => {
            // etcd compacted between two pages of this list.
            store.compact_before_next_page = false;
            store.compact();
            store.expired_continues += 1;
            return continue_expired();
        }
        Some(text) => {
            let Some((id, start)) = text
                .split_once('.')
                .and_then(|(i, s)| Some((i.parse::<u64>().ok()?, s.parse::<usize>().ok()?)))
            else {
                return bad_request(&format!("continue key is not valid: {text:?}"));
            };
            match store.pagings.get(&id) {
                Some(p) if p.rv < store.compacted => return continue_expired(),
                Some(p) if p.res == res && p.namespace == namespace => (id, start),
                Some(_) => return bad_request("continue key is not valid: another resource"),
                // Dropped at compaction.
                None => return continue_expired(),
            }
        }
        None => {
            let id = store.next_paging;
            store.next_paging += 1;
            let items = store.snapshot(res, namespace.as_deref());
            store.pagings.insert(
                id,
                Paging {
                    res,
                    namespace: namespace.clone(),
                    rv: store.rv,
                    items,
                },
            );
            (id, 0)
        }
    };
    let paging = &store.pagings[&token];
    let size = match (limit, cap) {
        (Some(l), Some(c)) => l.min(c),
        (Some(l), None) => l,
        // Without a limit the server sends everything at once.
        (None, _) => usize::MAX,
    };
    let end = start.saturating_add(size).min(paging.items.len());
    let items: Vec<Value> = paging.items[start..end]
        .iter()
        .filter(|o| selector.matches(&super::store::labels(o)))
        .map(|o| {
            let mut o = o.clone();
            if !res.typed_in_lists()
                && let Some(m) = o.as_object_mut()
            {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let mut metadata = json!({"resourceVersion": paging.rv.to_string()});
    let more = end < paging.items.len();
    if more {
        metadata["continue"] = json!(format!("{token}.{end}"));
        if selector.is_empty() {
            metadata["remainingItemCount"] = json!(paging.items.len() - end);
        }
        store.continued_pages += 1;
    } else {
        store.pagings.remove(&token);
    }
    let body = json!({
        "apiVersion": res.api_version(),
        "kind": format!("{}List", res.kind()),
        "metadata": metadata,
        "items": items,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn watch(
    fake: &FakeKube,
    store: &mut Store,
    res: Res,
    namespace: Option<String>,
    selector: LabelSelector,
    params: &HashMap<String, String>,
) -> Response {
    let (tx, rx) = mpsc::channel(100_000);
    let from = params
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && *v != "0");
    let from = match from.map(|v| v.parse::<u64>()) {
        Some(Ok(v)) => Some(v),
        Some(Err(_)) => return bad_request("resourceVersion: Invalid value: not a number"),
        None => None,
    };
    let response = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    if let Some(from) = from
        && from < store.compacted
    {
        // As kube-apiserver: 200, then one ERROR event with the 410.
        store.gone += 1;
        let _ = tx.try_send(Ok(gone_event(from, store.compacted)));
        return response;
    }
    let end = CancellationToken::new();
    let mut watcher = Watcher {
        res,
        namespace,
        selector,
        tx: tx.clone(),
        end: end.clone(),
        sent: store.rv,
    };
    match from {
        Some(from) => {
            for entry in store.log.iter().filter(|e| e.rv > from) {
                if let Some(line) = Store::view(&watcher, entry) {
                    let _ = tx.try_send(Ok(line));
                }
            }
        }
        // No resourceVersion: the current state as ADDED events first.
        None => {
            for object in store.snapshot(res, watcher.namespace.as_deref()) {
                if Store::matches(&watcher, res, &object) {
                    let _ = tx.try_send(Ok(event_line("ADDED", &object)));
                }
            }
        }
    }
    watcher.sent = store.rv;
    store.watchers.push(watcher);
    let asked = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .map_or(fake.options.watch_timeout, Duration::from_secs);
    let timeout = asked.min(fake.options.watch_timeout);
    let bookmarks = params.get("allowWatchBookmarks").map(String::as_str) == Some("true");
    let every = fake.options.bookmark_every;
    let store_ref = fake.store.clone();
    let shutdown = fake.shutdown.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let bookmark = |store_ref: &std::sync::Mutex<Store>| {
            let store = store_ref.lock().unwrap();
            if let Some(w) = store.watchers.iter().find(|w| w.tx.same_channel(&tx)) {
                let object = json!({"kind": res.kind(), "apiVersion": res.api_version(),
                    "metadata": {"resourceVersion": store.rv.max(w.sent).to_string()}});
                let _ = tx.try_send(Ok(event_line("BOOKMARK", &object)));
            }
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = end.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => {
                    // kube-apiserver sends a last bookmark as a watch times out.
                    if bookmarks {
                        bookmark(&store_ref);
                    }
                    break;
                }
                _ = tick.tick() => {
                    if tx.is_closed() {
                        return;
                    }
                    if bookmarks {
                        bookmark(&store_ref);
                    }
                }
            }
        }
        // The watch times out: drop this stream's sender from the store.
        store_ref
            .lock()
            .unwrap()
            .watchers
            .retain(|w| !w.tx.same_channel(&tx));
    });
    response
}
