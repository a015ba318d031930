//! The admin HTTP endpoint: probes, metrics and debugging views.
//!
//! - `/healthz`: the process is up.
//! - `/readyz`: DNS listeners answer (cleared first at shutdown).
//! - `/metrics`: Prometheus text.
//! - `/debug/registry?cluster=&namespace=&service=&limit=`: clusters and
//!   what they export, as JSON; at most `limit` services (default 100, at
//!   most 1000) and 10,000 endpoints per response, `truncated` says when
//!   more matched.
//! - `/debug/answer?name=web.shop.global&source=10.1.2.3`: how the answer
//!   for that asker is chosen, as JSON; one name of at most 255 bytes, at
//!   most 1000 addresses listed.
//!
//! `/healthz`, `/readyz` and `/metrics` are open to probes and scrapers.
//! `/debug/*` show every cluster's addresses, so whenever the registry
//! requires credentials (`--token-file` or `--tls-client-ca`) they require
//! a reader token: `Authorization: Bearer <token>` of a `reader:<name>`
//! line of `--token-file` (no or an unknown token: 401 with
//! `WWW-Authenticate: Bearer`; a cluster's token: 403). With `--insecure`
//! and no credentials configured they are open, like the gRPC side. At
//! most [`DEBUG_CONCURRENCY`] debug requests run at once; more get 429.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{Auth, Principal};
use crate::authority::Authority;
use crate::json::{cluster as cluster_json, service as service_json};
use crate::metrics::Metrics;
use crate::qname::{self, QName};
use crate::registry::{FullState, Registry};
use crate::select::{self, Tier};
use crate::snapshot::Kind;

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

/// `/debug/answer`'s parameters: one `name`, at most one `source`.
fn answer_params(params: Vec<(String, String)>) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (key, value) in params {
        if !matches!(key.as_str(), "name" | "source") {
            return Err("unknown parameter (use name, source)".into());
        }
        if key == "name" && value.len() > MAX_DEBUG_NAME {
            return Err(format!("name: longer than {MAX_DEBUG_NAME} bytes"));
        }
        if out.contains_key(&key) {
            return Err(format!("{key}: one per request"));
        }
        out.insert(key, value);
    }
    Ok(out)
}

async fn debug_answer(
    State(state): State<AdminState>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let params = match answer_params(params) {
        Ok(params) => params,
        Err(e) => return bad(StatusCode::BAD_REQUEST, e),
    };
    let Some(name) = params.get("name") else {
        return bad(
            StatusCode::BAD_REQUEST,
            "name: is required (e.g. ?name=web.shop.global&source=10.1.2.3)".into(),
        );
    };
    let source = match params.get("source").map(|s| s.parse::<IpAddr>()) {
        None => None,
        Some(Ok(ip)) => Some(ip),
        Some(Err(_)) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("source: {:?} is not an IP address", params["source"]),
            );
        }
    };
    let lower = name.trim_end_matches('.').to_ascii_lowercase();
    let labels: Vec<&str> = lower.split('.').collect();
    let snapshot = state.registry.snapshot();
    let (ns, svc) = match qname::parse(&labels, state.authority.domains()) {
        Some((_, QName::Service { ns, svc })) => (ns, svc),
        Some(_) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("name: {name:?} is not a <service>.<namespace> name"),
            );
        }
        None => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("name: {name:?} is outside every served domain"),
            );
        }
    };
    let Some(view) = snapshot.service(svc, ns) else {
        return bad(
            StatusCode::NOT_FOUND,
            format!("{name}: no such service (NXDOMAIN)"),
        );
    };
    let place = source.and_then(|ip| snapshot.locality.lookup(ip, 128));
    let asker = place
        .as_ref()
        .and_then(|p| snapshot.locality.place(p.cluster))
        .map(|p| {
            json!({
                "cluster": p.name.as_str(),
                "region": p.region.as_ref().map(|r| r.1.as_str()),
                "zone": p.zone.as_ref().map(|z| z.1.as_str()),
                "matched_prefix": place.map(|p| p.prefix),
            })
        });
    let policy = &snapshot.policy;
    // export-to: an asker outside every listed place gets NXDOMAIN.
    let exported = select::exported_to(
        view,
        &snapshot.locality,
        place.as_ref(),
        select::Gate::Place,
    );
    let explanation = select::explain(view, place.as_ref(), state.authority.min_healthy, policy);
    let pick = select::select(view, place.as_ref(), state.authority.min_healthy);
    // One more than shown, to tell a full list from a cut one. The rotation
    // (and a weighted sample's origin) of a real answer varies: this is
    // the one of rotation 0.
    let mut answer: Vec<String> = if exported {
        pick.v4(0, MAX_DEBUG_ANSWER + 1)
            .map(|a| a.to_string())
            .collect()
    } else {
        Vec::new()
    };
    if exported {
        answer.extend(
            pick.v6(0, MAX_DEBUG_ANSWER + 1 - answer.len())
                .map(|a| a.to_string()),
        );
    }
    let answer_truncated = answer.len() > MAX_DEBUG_ANSWER;
    answer.truncate(MAX_DEBUG_ANSWER);
    // The weights each cluster's endpoints answer with, and the drains
    // and weight percentages the policy applied to them.
    let total: u128 = view.all.weight(Kind::Targets);
    let weights: Vec<Value> = view
        .clusters
        .iter()
        .take(MAX_DEBUG_ANSWER)
        .map(|part| {
            let whole = part.whole(0);
            let cluster = part.name();
            let weight = whole.weight(Kind::Targets);
            let drain = policy.drain_percent(cluster, &view.key);
            let scale = policy
                .clusters
                .get(cluster)
                .map_or(100, |c| c.weight_percent);
            let service_scale = policy
                .services
                .get(&view.key)
                .and_then(|s| s.weight_percent.get(cluster))
                .copied()
                .unwrap_or(100);
            json!({
                "cluster": cluster.as_str(),
                "healthy": whole.targets.len(),
                "weight": weight,
                "uniform_weight": part.weights.uniform(),
                "share_of_all": if total == 0 { 0.0 } else { weight as f64 / total as f64 },
                "drain_percent": drain,
                "cluster_weight_percent": scale,
                "service_weight_percent": service_scale,
                "last_resort_only": whole.targets.is_empty() && !part.reserve(0).targets.is_empty(),
            })
        })
        .collect();
    // One list per exporting cluster that sets export-to: an asker must
    // be in every one.
    let export_to: Vec<Vec<String>> = view
        .export_to
        .iter()
        .map(|list| list.iter().map(ToString::to_string).collect())
        .collect();
    // Endpoints out of answers because their syncer's health check fails
    // (they are exported not ready), with the reason.
    let failing_checks: Vec<Value> = view
        .clusters
        .iter()
        .flat_map(|part| {
            part.export
                .endpoints()
                .iter()
                .filter(|e| e.health.is_failing())
                .map(move |e| {
                    json!({
                        "cluster": part.name().as_str(),
                        "addresses": e.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                        "health_check": e.health.as_str(),
                    })
                })
        })
        .take(MAX_DEBUG_ANSWER)
        .collect();
    axum::Json(json!({
        "name": name,
        "service": view.key.to_string(),
        "source": source.map(|s| s.to_string()),
        "asker": asker,
        "affinity": explanation.affinity,
        "min_healthy": explanation.min_healthy,
        "min_healthy_from": explanation.min_healthy_from,
        "tiers": explanation.tiers,
        "chosen": explanation.chosen,
        "chosen_place": explanation.chosen_place,
        "spilled_over": explanation.spilled_over,
        "primary": explanation.primary,
        "failover": explanation.failover,
        "failover_from": explanation.failover_from,
        "weighted": explanation.weighted,
        "last_resort": explanation.last_resort,
        "weights": weights,
        "export_to": export_to,
        "policy_disagrees": view.policy_disagrees,
        "exported_to_asker": exported,
        "rcode": if exported { "NOERROR" } else { "NXDOMAIN" },
        "fail_open": explanation.fail_open,
        "stale_clusters_excluded": explanation.stale_clusters_excluded,
        "answer_truncated": answer_truncated,
        "answer": answer,
        "max_answers": state.authority.max_answers,
        "no_preference": explanation.chosen == Tier::Any && place.is_none(),
        "out_by_health_check": failing_checks,
    }))
    .into_response()
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
        .route("/debug/answer", get(debug_answer))
        .route_layer(middleware::from_fn_with_state(guard, require_reader));
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(debug)
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
