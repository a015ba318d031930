//! A fake Kubernetes API server that speaks the real list/watch HTTP
//! protocol as strictly as kube-apiserver, for testing the syncer's
//! Kubernetes source without a cluster.
//!
//! Faithful where the syncer depends on it, and where real clusters
//! surprise: one cluster-wide resourceVersion sequence (as etcd's); LIST
//! in pages with `limit`/`continue` (pages cut in storage order, then
//! filtered, so they can be short; a continue token older than the
//! compaction point gets 410); WATCH from a resourceVersion replays later
//! events then streams new ones as newline-delimited JSON, without one
//! starts with the current state as `ADDED`; history compacted on demand
//! or on a period, after which a watch from before gets an `ERROR` event
//! with a 410; bookmarks at a realistic period and as a watch times out;
//! label selectors parsed by its own parser ([`selector`]) with 400 for
//! what kube-apiserver refuses; 401 for a refused token, 403 naming the
//! verb, 404 for the MCS API group while it is not installed; every
//! refusal with the `Status` body the real server sends ([`api`]). It
//! serves plaintext HTTP/1.1 and h2c, or HTTPS offering `h2` and
//! `http/1.1` by ALPN as kube-apiserver does.
//!
//! Writes ([`writes`]): create, update with resourceVersion conflicts,
//! delete with preconditions, the status subresource, refused as
//! kube-apiserver refuses them and counted ([`FakeKube::writes`]).
//!
//! The test drives it: [`FakeKube::apply`], [`FakeKube::delete`],
//! [`FakeKube::compact`], [`FakeKube::expire_watches`] (a 410 mid-stream),
//! [`FakeKube::set_down`] (the port closed), [`FakeKube::set_mcs`],
//! [`FakeKube::forbid`], [`FakeKube::set_credentials_ok`].

mod api;
pub mod objects;
pub mod selector;
mod store;
mod writes;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

pub use self::objects::{
    Ep, Res, labelled, namespace, node, one_ready_slice, ready, service, service_export, slice,
    with_traffic_distribution,
};
use self::store::Store;
pub use self::store::{Attempt, Write};

/// How the fake behaves; the defaults are kube-apiserver's.
#[derive(Debug, Clone)]
pub struct Options {
    /// Serve HTTPS with `server.crt`/`server.key` from this directory
    /// (minted by [`mint_pki`]; `ca.crt` goes in the kubeconfig).
    pub tls: Option<PathBuf>,
    /// Serve the multicluster.x-k8s.io API group from the start.
    pub mcs: bool,
    /// Longest a watch stays open, whatever `timeoutSeconds` asks.
    pub watch_timeout: Duration,
    /// Bookmark period (kube-apiserver: about a minute).
    pub bookmark_every: Duration,
    /// Compact the history this often (etcd: every 5 minutes).
    pub compact_every: Option<Duration>,
    /// Most items per LIST page, whatever `limit` asks.
    pub page_cap: Option<usize>,
    /// The bearer token it accepts.
    pub token: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: None,
            mcs: true,
            watch_timeout: Duration::from_secs(290),
            bookmark_every: Duration::from_secs(60),
            compact_every: None,
            page_cap: None,
            token: "fake-token".into(),
        }
    }
}

/// A running fake API server.
#[derive(Clone)]
pub struct FakeKube {
    pub addr: SocketAddr,
    options: Arc<Options>,
    store: Arc<Mutex<Store>>,
    shutdown: CancellationToken,
    /// Stops the current listener and its connections ([`FakeKube::set_down`]).
    serving: Arc<Mutex<CancellationToken>>,
}

impl std::fmt::Debug for FakeKube {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKube")
            .field("addr", &self.addr)
            .finish()
    }
}

/// Mints a CA and a server certificate for 127.0.0.1 with
/// `deploy/certs/mint.sh` (openssl) into `dir/pki`.
pub fn mint_pki(dir: &Path) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certs/mint.sh");
    let out = dir.join("pki");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&out)
        .status()
        .expect("bash and openssl");
    assert!(status.success(), "mint.sh failed");
    out
}

fn tls_acceptor(dir: &Path) -> TlsAcceptor {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    // As kube-apiserver: HTTP/2 offered first.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    TlsAcceptor::from(Arc::new(config))
}

impl FakeKube {
    /// Starts on an ephemeral loopback port with the default options.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = FakeKube {
            addr,
            store: Arc::new(Mutex::new(Store {
                rv: 1,
                mcs: options.mcs,
                credentials_ok: true,
                page_cap: options.page_cap,
                ..Store::default()
            })),
            options: Arc::new(options),
            shutdown: CancellationToken::new(),
            serving: Arc::new(Mutex::new(CancellationToken::new())),
        };
        fake.serve(listener);
        if let Some(every) = fake.options.compact_every {
            let (store, shutdown) = (fake.store.clone(), fake.shutdown.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tick.tick() => store.lock().unwrap().compact(),
                    }
                }
            });
        }
        fake
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let token = self.shutdown.child_token();
        *self.serving.lock().unwrap() = token.clone();
        let app = Router::new().fallback(api::handle).with_state(self.clone());
        let tls = self.options.tls.as_deref().map(tls_acceptor);
        tokio::spawn(async move {
            loop {
                let tcp = tokio::select! {
                    _ = token.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                let (app, tls, token) = (app.clone(), tls.clone(), token.clone());
                tokio::spawn(async move {
                    let service = TowerToHyperService::new(app);
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match tls {
                        Some(tls) => {
                            let Ok(stream) = tls.accept(tcp).await else {
                                return;
                            };
                            let conn = builder.serve_connection(TokioIo::new(stream), service);
                            tokio::select! { _ = conn => {}, _ = token.cancelled() => {} }
                        }
                        None => {
                            let conn = builder.serve_connection(TokioIo::new(tcp), service);
                            tokio::select! { _ = conn => {}, _ = token.cancelled() => {} }
                        }
                    }
                });
            }
        });
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
        self.store.lock().unwrap().watchers.clear();
    }

    /// A kubeconfig file pointing at this server with its token (and CA).
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let (scheme, ca) = match &self.options.tls {
            Some(pki) => (
                "https",
                format!(
                    "    certificate-authority: {}\n",
                    pki.join("ca.crt").display()
                ),
            ),
            None => ("http", String::new()),
        };
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {scheme}://{}\n{ca}users:\n- name: fake\n  user:\n    token: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.addr, self.options.token
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Creates or updates an object (a k8s-openapi object as JSON).
    /// Panics on an object kube-apiserver would refuse ([`objects::refused`]).
    pub fn apply(&self, res: Res, mut object: Value) {
        if let Some(why) = objects::refused(res, &object) {
            panic!("kube-apiserver would refuse this {}: {why}", res.kind());
        }
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
        let key = (store::namespace_of(&object), name.clone());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{}-{}", key.0, name));
        }
        let stored = store.objects.get(&res).and_then(|o| o.get(&key)).cloned();
        // As a real server: metadata.generation counts spec changes, and
        // an apply without a status leaves the status subresource alone.
        let generation = match &stored {
            Some(prev) => {
                let before = prev["metadata"]["generation"].as_i64().unwrap_or(1);
                if prev.get("spec") != object.get("spec") {
                    before + 1
                } else {
                    before
                }
            }
            None => 1,
        };
        if res != Res::Events {
            object["metadata"]["generation"] = json!(generation);
        }
        if let Some(prev) = &stored
            && res.has_status()
            && object.get("status").is_none_or(Value::is_null)
            && let Some(status) = prev.get("status")
        {
            object["status"] = status.clone();
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

    /// Compacts the history up to now (as etcd does on its period): open
    /// watches go on; a watch resumed from before now gets 410, and so
    /// does a continue token from before now.
    pub fn compact(&self) {
        self.store.lock().unwrap().compact();
    }

    /// Compacts and ends every watch with a 410 `ERROR` event, as the
    /// watch cache does to a watcher that fell out of its window:
    /// watchers must relist.
    pub fn expire_watches(&self) {
        let mut store = self.store.lock().unwrap();
        store.compact();
        let (rv, compacted) = (store.rv, store.compacted);
        for w in store.watchers.drain(..) {
            let _ = w.tx.try_send(Ok(store::gone_event(rv, compacted)));
        }
        store.gone += 1;
    }

    /// Ends every watch without an error (a timeout, a load balancer
    /// dropping the stream): watchers resume from their last
    /// resourceVersion, and relist if it was compacted away.
    pub fn end_watches(&self) {
        self.store.lock().unwrap().watchers.clear();
    }

    /// Compacts between the pages of the next paged LIST: its continue
    /// token gets 410 and the lister must start over.
    pub fn compact_before_next_page(&self) {
        self.store.lock().unwrap().compact_before_next_page = true;
    }

    /// Continue tokens refused with 410 so far.
    pub fn expired_continues(&self) -> u64 {
        self.store.lock().unwrap().expired_continues
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

    /// Serves the multicluster.x-k8s.io group or not (404), as installing
    /// or removing the MCS CRDs does.
    pub fn set_mcs(&self, served: bool) {
        self.store.lock().unwrap().mcs = served;
    }

    /// Forbids (403) or allows `verb` (`list`, `watch`) on `res` for the
    /// syncer's ServiceAccount.
    pub fn forbid(&self, res: Res, verb: &'static str, forbidden: bool) {
        let mut store = self.store.lock().unwrap();
        if forbidden {
            store.forbidden.insert((res, verb));
        } else {
            store.forbidden.remove(&(res, verb));
        }
    }

    /// Accepts the token, or answers every request 401.
    pub fn set_credentials_ok(&self, ok: bool) {
        self.store.lock().unwrap().credentials_ok = ok;
    }

    /// Most items per LIST page from now on.
    pub fn set_page_cap(&self, cap: Option<usize>) {
        self.store.lock().unwrap().page_cap = cap;
    }

    /// Write requests so far, accepted or refused, with their status
    /// codes, in order: what "writes nothing" is checked against.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.store.lock().unwrap().attempts.clone()
    }

    /// Writes accepted so far (create, update, delete), in order.
    pub fn writes(&self) -> Vec<Write> {
        self.store.lock().unwrap().writes.clone()
    }

    /// An object as stored, if it exists.
    pub fn get(&self, res: Res, namespace: &str, name: &str) -> Option<Value> {
        self.store
            .lock()
            .unwrap()
            .objects
            .get(&res)
            .and_then(|o| o.get(&(namespace.to_owned(), name.to_owned())))
            .cloned()
    }

    /// Every object of `res`.
    pub fn objects(&self, res: Res) -> Vec<Value> {
        self.store.lock().unwrap().snapshot(res, None)
    }

    /// LIST and WATCH requests served so far.
    pub fn requests(&self) -> u64 {
        self.store.lock().unwrap().requests
    }

    /// LIST pages served with a continue token (a list in several pages).
    pub fn continued_pages(&self) -> u64 {
        self.store.lock().unwrap().continued_pages
    }

    /// Watches refused or ended with 410 so far.
    pub fn gone(&self) -> u64 {
        self.store.lock().unwrap().gone
    }

    /// The HTTP versions requests came in (`HTTP/1.1`, `HTTP/2.0`).
    pub fn http_versions(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .store
            .lock()
            .unwrap()
            .versions
            .iter()
            .cloned()
            .collect();
        v.sort();
        v
    }
}
