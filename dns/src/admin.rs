//! The admin HTTP endpoint: probes, metrics and debugging views.
//!
//! - `/healthz`: the process is up.
//! - `/readyz`: DNS listeners answer (cleared first at shutdown).
//! - `/metrics`: Prometheus text.
//! - `/debug/registry?cluster=&namespace=&service=&limit=`: clusters and
//!   what they export, as JSON; at most `limit` services (default 100, at
//!   most 1000) and 10,000 endpoints per response, `truncated` says when
//!   more matched.
//! - `/debug/answer?name=web.shop.global&source=10.1.2.3&subnet=10.1.2.0/24`:
//!   how the answer to that query is chosen ([`answer`]), as JSON; one
//!   name of at most 255 bytes, at most 1000 addresses listed.
//!
//! `/healthz`, `/readyz` and `/metrics` are open to probes and scrapers.
//! `/debug/*` show every cluster's addresses, so whenever the registry
//! requires credentials (`--token-file` or `--tls-client-ca`) they require
//! a reader token: `Authorization: Bearer <token>` of a `reader:<name>`
//! line of `--token-file` (no or an unknown token: 401 with
//! `WWW-Authenticate: Bearer`; a cluster's token: 403). With `--insecure`
//! and no credentials configured they are open, like the gRPC side. At
//! most [`DEBUG_CONCURRENCY`] debug requests run at once; more get 429.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meshdns_cli::connections::{Bounded, Limits};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Principal};
use crate::authority::Authority;
use crate::json::{cluster as cluster_json, service as service_json};
use crate::metrics::Metrics;
use crate::registry::{FullState, Registry};

mod answer;

/// What `/readyz` reports: set once the DNS listeners answer, cleared when
/// shutdown begins so load balancers stop sending first.
#[derive(Debug, Default)]
pub struct Readiness(AtomicBool);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything the admin endpoints read.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub ready: Arc<Readiness>,
    /// Unready until the registry holds a cluster (`--ready-wait-data`).
    pub wait_for_data: bool,
    pub registry: Arc<Registry>,
    /// Consistent reads of the whole state (`/debug/registry`).
    pub writer: crate::registry::Writer,
    pub authority: Arc<Authority>,
    pub metrics: Arc<Metrics>,
    /// Who may read `/debug/*`.
    pub auth: Arc<Auth>,
}

/// `/debug/registry` services per response, unless `limit` says fewer.
pub const DEFAULT_DEBUG_SERVICES: usize = 100;
/// The most `limit` may ask for.
pub const MAX_DEBUG_SERVICES: usize = 1_000;
/// Endpoints listed per `/debug/registry` response, over all services.
pub const MAX_DEBUG_ENDPOINTS: usize = 10_000;
/// Addresses listed by `/debug/answer`.
pub const MAX_DEBUG_ANSWER: usize = 1_000;
/// Longest `name` `/debug/answer` takes (a DNS name is at most 255 bytes).
pub const MAX_DEBUG_NAME: usize = 255;
/// `/debug` requests served at once.
pub const DEBUG_CONCURRENCY: usize = 2;

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    let (code, verdict) = if !state.ready.get() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: DNS listeners not serving\n",
        )
    } else if state.wait_for_data && state.registry.clusters().is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no cluster data yet\n",
        )
    } else {
        (StatusCode::OK, "ready\n")
    };
    // A follower cut off from its upstream stays ready: it answers from
    // its last state, which beats no answer. The link is told, not judged.
    let detail = state
        .metrics
        .follower
        .as_ref()
        .map(|f| follower_detail(&f.view()))
        .unwrap_or_default();
    (code, format!("{verdict}{detail}"))
}

/// `/readyz`'s line about a follower's upstream.
pub fn follower_detail(view: &crate::metrics::FollowerView) -> String {
    let secs = crate::metrics::unix_ms().saturating_sub(view.last_event_unix_ms) / 1000;
    let heard = format!("last event {secs}s ago");
    if view.connected {
        format!("upstream {}: connected, {heard}\n", view.upstream)
    } else {
        format!(
            "upstream {}: disconnected for {}s{}, {heard}; answering from the last state\n",
            view.upstream,
            view.disconnected.as_secs(),
            if view.stale { " (stale)" } else { "" },
        )
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let body = state.metrics.render(&state.registry);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// 401 with the challenge a client needs.
fn unauthenticated(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"meshdns\"")],
        axum::Json(json!({ "error": message })),
    )
        .into_response()
}

/// Lets a `/debug` request through when the registry requires no
/// credentials or it carries a reader's bearer token; bounds how many run.
async fn require_reader(
    State(state): State<(Arc<Auth>, Arc<Metrics>, Arc<Semaphore>)>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    let (auth, metrics, running) = state;
    if auth.required() {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            metrics.admin_denied("unauthenticated");
            return unauthenticated(
                "/debug requires a reader's bearer token from --token-file: Authorization: Bearer <token>",
            );
        };
        match auth.bearer(token).map(|c| c.principal) {
            Some(Principal::Reader(_)) => {}
            Some(other) => {
                metrics.admin_denied("forbidden");
                return bad(
                    StatusCode::FORBIDDEN,
                    format!("{other} may not read /debug; use a reader token"),
                );
            }
            None => {
                metrics.admin_denied("unauthenticated");
                return unauthenticated("unknown bearer token");
            }
        }
    }
    let Ok(_permit) = running.try_acquire() else {
        return bad(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{DEBUG_CONCURRENCY} /debug requests are running; retry"),
        );
    };
    next.run(request).await
}

/// What `/debug/registry` was asked for.
#[derive(Debug, PartialEq, Eq)]
struct RegistryFilter {
    cluster: Option<String>,
    namespace: Option<String>,
    service: Option<String>,
    limit: usize,
}

impl RegistryFilter {
    /// The filter of a query string's parameters; the error names the parameter.
    fn parse(params: &[(String, String)]) -> Result<Self, String> {
        let mut filter = RegistryFilter {
            cluster: None,
            namespace: None,
            service: None,
            limit: DEFAULT_DEBUG_SERVICES,
        };
        for (key, value) in params {
            let slot = match key.as_str() {
                "cluster" => &mut filter.cluster,
                "namespace" => &mut filter.namespace,
                "service" => &mut filter.service,
                "limit" => {
                    filter.limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_DEBUG_SERVICES).contains(n))
                        .ok_or_else(|| {
                            format!("limit: must be a number from 1 to {MAX_DEBUG_SERVICES}")
                        })?;
                    continue;
                }
                _ => {
                    return Err("unknown parameter (use cluster, namespace, service, limit)".into());
                }
            };
            if slot.replace(value.clone()).is_some() {
                return Err(format!("{key}: give it once"));
            }
        }
        Ok(filter)
    }

    fn wants(wanted: &Option<String>, value: &str) -> bool {
        wanted.as_deref().is_none_or(|w| w == value)
    }
}

/// The filtered state as JSON, within the filter's limit of services and
/// [`MAX_DEBUG_ENDPOINTS`] endpoints.
fn registry_json(full: &FullState, filter: &RegistryFilter) -> (Vec<Value>, usize, bool) {
    let mut clusters = Vec::new();
    let (mut services, mut endpoints, mut truncated) = (0, 0, false);
    'clusters: for (status, exports) in &full.clusters {
        if !RegistryFilter::wants(&filter.cluster, status.cluster.name.as_str()) {
            continue;
        }
        let mut shown = Vec::new();
        for s in exports.iter().filter(|s| {
            RegistryFilter::wants(&filter.namespace, s.key().namespace.as_str())
                && RegistryFilter::wants(&filter.service, s.key().name.as_str())
        }) {
            if services == filter.limit || endpoints == MAX_DEBUG_ENDPOINTS {
                truncated = true;
                let mut c = cluster_json(status);
                c["exports"] = shown.into();
                clusters.push(c);
                break 'clusters;
            }
            let room = MAX_DEBUG_ENDPOINTS - endpoints;
            let mut json = service_json(s, room);
            if s.endpoints().len() > room {
                truncated = true;
                json["endpoints_total"] = s.endpoints().len().into();
            }
            endpoints += s.endpoints().len().min(room);
            services += 1;
            shown.push(json);
        }
        let filtering = filter.namespace.is_some() || filter.service.is_some();
        if !shown.is_empty() || !filtering {
            let mut c = cluster_json(status);
            c["exports"] = shown.into();
            clusters.push(c);
        }
    }
    (clusters, services, truncated)
}

async fn debug_registry(
    State(state): State<AdminState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let filter = match RegistryFilter::parse(&params) {
        Ok(filter) => filter,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let Ok(full) = state.writer.full_state().await else {
        return bad(
            StatusCode::SERVICE_UNAVAILABLE,
            "the registry is shutting down".into(),
        );
    };
    let (clusters, services, truncated) = registry_json(&full, &filter);
    axum::Json(json!({
        "serial": state.registry.snapshot().serial,
        "limit": filter.limit,
        "services": services,
        "truncated": truncated,
        "clusters": clusters,
    }))
    .into_response()
}

fn bad(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let guard = (
        state.auth.clone(),
        state.metrics.clone(),
        Arc::new(Semaphore::new(DEBUG_CONCURRENCY)),
    );
    let debug = Router::new()
        .route("/debug/registry", get(debug_registry))
        .route("/debug/answer", get(answer::debug_answer))
        .route_layer(middleware::from_fn_with_state(guard, require_reader));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(debug)
        .with_state(state);
    // Anyone who can reach the port may connect: connections are bounded
    // before HTTP, so idle or trickling ones cannot take the process's
    // descriptors (DNS over TCP and gRPC accept from the same table) or
    // pile up header buffers.
    axum::serve(Bounded::new(listener, Limits::ADMIN, "admin"), app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
