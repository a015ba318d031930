//! A fake Kubernetes API server that speaks the real list/watch HTTP
//! protocol, for testing the syncer's Kubernetes source without a cluster.
//!
//! Faithful where the syncer depends on it: one cluster-wide
//! resourceVersion sequence (as etcd's); LIST returns `metadata.resourceVersion`;
//! WATCH from a resourceVersion replays later events, then streams new ones
//! as newline-delimited JSON (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`,
//! `ERROR`); a resourceVersion older than the compaction point gets an
//! `ERROR` event with a 410 `Status`; label selectors filter lists and
//! watches, and an object that stops (starts) matching a watch's selector
//! is sent to it as `DELETED` (`ADDED`), as the API server does; watches end
//! after `timeoutSeconds`. Objects are built from k8s-openapi types.
//!
//! The test drives it: [`FakeKube::apply`], [`FakeKube::delete`],
//! [`FakeKube::expire_watches`] (a 410 mid-stream), [`FakeKube::set_down`]
//! (503 for everything, watches cut).

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::core::v1::{
    Namespace, Node, NodeAddress, NodeSpec, NodeStatus, Service, ServicePort, ServiceSpec,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshdns_syncer::source::selector::Selector;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

/// The resources the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Res {
    Services,
    EndpointSlices,
    Nodes,
    Namespaces,
    ServiceExports,
}

impl Res {
    fn api_version(self) -> &'static str {
        match self {
            Res::Services | Res::Nodes | Res::Namespaces => "v1",
            Res::EndpointSlices => "discovery.k8s.io/v1",
            Res::ServiceExports => "multicluster.x-k8s.io/v1alpha1",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Res::Services => "Service",
            Res::EndpointSlices => "EndpointSlice",
            Res::Nodes => "Node",
            Res::Namespaces => "Namespace",
            Res::ServiceExports => "ServiceExport",
        }
    }

    /// The resource and namespace a request path names.
    fn from_path(path: &str) -> Option<(Res, Option<String>)> {
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (prefix, rest) = match parts.as_slice() {
            ["api", "v1", rest @ ..] => ("v1", rest),
            ["apis", "discovery.k8s.io", "v1", rest @ ..] => ("discovery.k8s.io/v1", rest),
            ["apis", "multicluster.x-k8s.io", "v1alpha1", rest @ ..] => {
                ("multicluster.x-k8s.io/v1alpha1", rest)
            }
            _ => return None,
        };
        let (ns, plural) = match rest {
            [plural] => (None, *plural),
            ["namespaces", ns, plural] => (Some(ns.to_string()), *plural),
            _ => return None,
        };
        let res = match (prefix, plural) {
            ("v1", "services") => Res::Services,
            ("v1", "nodes") => Res::Nodes,
            ("v1", "namespaces") => Res::Namespaces,
            ("discovery.k8s.io/v1", "endpointslices") => Res::EndpointSlices,
            ("multicluster.x-k8s.io/v1alpha1", "serviceexports") => Res::ServiceExports,
            _ => return None,
        };
        Some((res, ns))
    }
}

struct Watcher {
    res: Res,
    namespace: Option<String>,
    selector: Selector,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    /// Ends the watch's stream (its timer task holds a sender too).
    end: CancellationToken,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.end.cancel();
    }
}

struct LogEntry {
    rv: u64,
    res: Res,
    kind: &'static str,
    object: Value,
    previous: Option<Value>,
}

#[derive(Default)]
struct Store {
    rv: u64,
    objects: HashMap<Res, BTreeMap<(String, String), Value>>,
    log: Vec<LogEntry>,
    /// Watches from before this resourceVersion get 410 Gone.
    compacted: u64,
    watchers: Vec<Watcher>,
    down: bool,
    /// LIST and WATCH requests served, for tests.
    pub requests: u64,
}

fn labels(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn namespace_of(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn gone(rv: u64) -> Bytes {
    event_line(
        "ERROR",
        &json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {rv}"), "reason": "Expired", "code": 410
        }),
    )
}

impl Store {
    fn matches(w: &Watcher, res: Res, obj: &Value) -> bool {
        w.res == res
            && w.namespace
                .as_ref()
                .is_none_or(|ns| *ns == namespace_of(obj))
            && w.selector.matches(Some(&labels(obj)))
    }

    /// The event a watcher sees for a change, with selector transitions.
    fn view(w: &Watcher, entry: &LogEntry) -> Option<Bytes> {
        let now = Self::matches(w, entry.res, &entry.object);
        let before = entry
            .previous
            .as_ref()
            .is_some_and(|p| Self::matches(w, entry.res, p));
        match (entry.kind, before, now) {
            ("DELETED", _, true) => Some(event_line("DELETED", &entry.object)),
            ("MODIFIED", true, true) => Some(event_line("MODIFIED", &entry.object)),
            ("MODIFIED", false, true) | ("ADDED", _, true) => {
                Some(event_line("ADDED", &entry.object))
            }
            ("MODIFIED", true, false) => Some(event_line("DELETED", &entry.object)),
            _ => None,
        }
    }

    fn record(&mut self, res: Res, kind: &'static str, object: Value, previous: Option<Value>) {
        let entry = LogEntry {
            rv: self.rv,
            res,
            kind,
            object,
            previous,
        };
        self.watchers.retain(|w| match Self::view(w, &entry) {
            Some(line) => w.tx.try_send(Ok(line)).is_ok(),
            None => !w.tx.is_closed(),
        });
        self.log.push(entry);
    }
}

/// A running fake API server.
#[derive(Clone)]
pub struct FakeKube {
    pub addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    shutdown: CancellationToken,
    /// Stops the current listener (for [`FakeKube::set_down`]).
    serving: Arc<Mutex<CancellationToken>>,
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKube")
            .field("addr", &self.addr)
            .finish()
    }
}

#[derive(Debug, serde::Deserialize)]
struct Params {
    watch: Option<String>,
    #[serde(rename = "resourceVersion")]
    resource_version: Option<String>,
    #[serde(rename = "labelSelector")]
    label_selector: Option<String>,
    #[serde(rename = "timeoutSeconds")]
    timeout_seconds: Option<u64>,
    #[serde(rename = "allowWatchBookmarks")]
    allow_watch_bookmarks: Option<String>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16()});
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn handle(State(fake): State<FakeKube>, uri: Uri, Query(params): Query<Params>) -> Response {
    let Some((res, namespace)) = Res::from_path(uri.path()) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            &format!("no resource at {}", uri.path()),
        );
    };
    let selector = match Selector::parse(params.label_selector.as_deref().unwrap_or("")) {
        Ok(s) => s,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", &e),
    };
    let mut store = fake.store.lock().unwrap();
    store.requests += 1;
    if store.down {
        return status(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the fake API server is down",
        );
    }
    let watching = matches!(params.watch.as_deref(), Some("true" | "1"));
    if !watching {
        let items: Vec<Value> = store
            .objects
            .get(&res)
            .map(|objs| {
                objs.values()
                    .filter(|o| namespace.as_ref().is_none_or(|ns| *ns == namespace_of(o)))
                    .filter(|o| selector.matches(Some(&labels(o))))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let body = json!({
            "apiVersion": res.api_version(),
            "kind": format!("{}List", res.kind()),
            "metadata": {"resourceVersion": store.rv.to_string()},
            "items": items,
        });
        return (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
    }
    let from: u64 = params
        .resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(store.rv);
    let (tx, rx) = mpsc::channel(100_000);
    if from < store.compacted {
        let _ = tx.try_send(Ok(gone(from)));
        drop(tx);
    } else {
        let end = CancellationToken::new();
        let watcher = Watcher {
            res,
            namespace,
            selector,
            tx: tx.clone(),
            end: end.clone(),
        };
        for entry in store.log.iter().filter(|e| e.rv > from) {
            if let Some(line) = Store::view(&watcher, entry) {
                let _ = tx.try_send(Ok(line));
            }
        }
        store.watchers.push(watcher);
        let timeout = Duration::from_secs(params.timeout_seconds.unwrap_or(290).min(290));
        let bookmarks = params.allow_watch_bookmarks.as_deref() == Some("true");
        let store_ref = fake.store.clone();
        let shutdown = fake.shutdown.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = end.cancelled() => return,
                    _ = tokio::time::sleep_until(deadline) => break,
                    _ = tick.tick() => {
                        if tx.is_closed() {
                            return;
                        }
                        if bookmarks {
                            let store = store_ref.lock().unwrap();
                            let object = json!({"kind": res.kind(), "apiVersion": res.api_version(),
                                "metadata": {"resourceVersion": store.rv.to_string()}});
                            let _ = tx.try_send(Ok(event_line("BOOKMARK", &object)));
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
    }
    drop(store);
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(ReceiverStream::new(rx)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

impl FakeKube {
    /// Starts on an ephemeral loopback port.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeKube {
            addr,
            store: Arc::new(Mutex::new(Store {
                rv: 1,
                ..Store::default()
            })),
            shutdown: CancellationToken::new(),
            serving: Arc::new(Mutex::new(CancellationToken::new())),
        };
        fake.serve(listener);
        fake
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let token = self.shutdown.child_token();
        *self.serving.lock().unwrap() = token.clone();
        let app = Router::new().fallback(handle).with_state(self.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await;
        });
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
        self.store.lock().unwrap().watchers.clear();
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\nusers:\n- name: fake\n  user:\n    token: fake-token\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.addr
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Creates or updates an object (a k8s-openapi object as JSON).
    pub fn apply(&self, res: Res, mut object: Value) {
        let mut store = self.store.lock().unwrap();
        store.rv += 1;
        let rv = store.rv;
        object["apiVersion"] = json!(res.api_version());
        object["kind"] = json!(res.kind());
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let key = (namespace_of(&object), name.clone());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{}-{}", key.0, name));
        }
        let previous = store
            .objects
            .entry(res)
            .or_default()
            .insert(key, object.clone());
        let kind = if previous.is_some() {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.record(res, kind, object, previous);
    }

    /// Deletes an object if it exists.
    pub fn delete(&self, res: Res, namespace: &str, name: &str) {
        let mut store = self.store.lock().unwrap();
        let Some(mut object) = store
            .objects
            .entry(res)
            .or_default()
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            return;
        };
        store.rv += 1;
        object["metadata"]["resourceVersion"] = json!(store.rv.to_string());
        let previous = Some(object.clone());
        store.record(res, "DELETED", object, previous);
    }

    /// Ends every watch with a 410 Gone and forgets the event history, as
    /// an API server does after compaction: watchers must relist.
    pub fn expire_watches(&self) {
        let mut store = self.store.lock().unwrap();
        store.compacted = store.rv + 1;
        store.log.clear();
        let rv = store.rv;
        for w in store.watchers.drain(..) {
            let _ = w.tx.try_send(Ok(gone(rv)));
        }
    }

    /// Takes the server down (its port refuses connections, watches are
    /// cut, as when an API server dies) or brings it back on the same port.
    pub async fn set_down(&self, down: bool) {
        {
            let mut store = self.store.lock().unwrap();
            store.down = down;
            if down {
                store.watchers.clear();
            }
        }
        if down {
            self.serving.lock().unwrap().cancel();
        } else {
            let mut listener = None;
            for _ in 0..100 {
                match tokio::net::TcpListener::bind(self.addr).await {
                    Ok(l) => {
                        listener = Some(l);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            self.serve(listener.expect("rebind the fake API server's port"));
        }
    }

    /// LIST and WATCH requests served so far.
    pub fn requests(&self) -> u64 {
        self.store.lock().unwrap().requests
    }
}

fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: (!labels.is_empty()).then(|| {
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        }),
        ..ObjectMeta::default()
    }
}

/// A ClusterIP Service (headless when `cluster_ip` is `None`) with one
/// named TCP port.
pub fn service(
    ns: &str,
    name: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
    cluster_ip: Option<&str>,
) -> Value {
    let mut m = meta(Some(ns), name, labels);
    if !annotations.is_empty() {
        m.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
    }
    let svc = Service {
        metadata: m,
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.unwrap_or("None").to_owned()),
            cluster_ips: Some(vec![cluster_ip.unwrap_or("None").to_owned()]),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: 80,
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    serde_json::to_value(svc).unwrap()
}

/// One endpoint of a slice: (address, ready, hostname, zone).
pub type Ep<'a> = (&'a str, bool, Option<&'a str>, Option<&'a str>);

/// An IPv4 EndpointSlice of `service` with target port 8080 named `http`.
pub fn slice(ns: &str, name: &str, service: &str, endpoints: &[Ep<'_>]) -> Value {
    let slice = EndpointSlice {
        metadata: meta(
            Some(ns),
            name,
            &[
                ("kubernetes.io/service-name", service),
                (
                    "endpointslice.kubernetes.io/managed-by",
                    "endpointslice-controller.k8s.io",
                ),
            ],
        ),
        address_type: "IPv4".into(),
        endpoints: Some(
            endpoints
                .iter()
                .map(|(ip, ready, hostname, zone)| Endpoint {
                    addresses: vec![ip.to_string()],
                    conditions: Some(EndpointConditions {
                        ready: Some(*ready),
                        serving: Some(*ready),
                        terminating: Some(false),
                    }),
                    hostname: hostname.map(str::to_owned),
                    zone: zone.map(str::to_owned),
                    node_name: Some("node-1".into()),
                    ..Endpoint::default()
                })
                .collect(),
        ),
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            protocol: Some("TCP".into()),
            ..EndpointPort::default()
        }]),
    };
    serde_json::to_value(slice).unwrap()
}

/// A Node with a pod CIDR, an InternalIP and topology labels.
pub fn node(name: &str, pod_cidr: &str, internal_ip: &str, region: &str, zone: &str) -> Value {
    let node = Node {
        metadata: meta(
            None,
            name,
            &[
                ("topology.kubernetes.io/region", region),
                ("topology.kubernetes.io/zone", zone),
            ],
        ),
        spec: Some(NodeSpec {
            pod_cidr: Some(pod_cidr.into()),
            pod_cidrs: Some(vec![pod_cidr.into()]),
            ..NodeSpec::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![NodeAddress {
                address: internal_ip.into(),
                type_: "InternalIP".into(),
            }]),
            ..NodeStatus::default()
        }),
    };
    serde_json::to_value(node).unwrap()
}

pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Value {
    serde_json::to_value(Namespace {
        metadata: meta(None, name, labels),
        ..Namespace::default()
    })
    .unwrap()
}

/// An MCS ServiceExport naming `ns/name`.
pub fn service_export(ns: &str, name: &str) -> Value {
    json!({"metadata": serde_json::to_value(meta(Some(ns), name, &[])).unwrap(), "spec": {}})
}
