//! The admin HTTP endpoint: probes, metrics and debugging views.
//!
//! - `/healthz`: the process is up.
//! - `/readyz`: DNS listeners answer (cleared first at shutdown).
//! - `/metrics`: Prometheus text.
//! - `/debug/registry`: every cluster and what it exports, as JSON.
//! - `/debug/answer?name=web.shop.global&source=10.1.2.3`: how the answer
//!   for that asker is chosen, as JSON.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use meshdns_proto::model::{Mode, ServiceExport};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::qname::{self, QName};
use crate::registry::{ClusterStatus, Registry};
use crate::select::{self, Tier};
use crate::zone::Zone;

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
    pub zone: Arc<Zone>,
    pub metrics: Arc<Metrics>,
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, &'static str) {
    if !state.ready.get() {
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

fn cluster_json(status: &ClusterStatus) -> Value {
    let c = &status.cluster;
    json!({
        "name": c.name.as_str(),
        "region": c.region.as_ref().map(|r| r.as_str()),
        "zone": c.zone.as_ref().map(|z| z.as_str()),
        "client_cidrs": c.client_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "version": c.version,
        "state": if status.stale { "stale" } else { "live" },
        "connected": status.connected,
        "last_heartbeat_unix_ms": status.last_heartbeat_unix_ms,
        "services": status.services,
        "endpoints": status.endpoints,
    })
}

fn service_json(s: &ServiceExport) -> Value {
    json!({
        "namespace": s.key().namespace.as_str(),
        "name": s.key().name.as_str(),
        "mode": s.mode().as_str(),
        "affinity": s.policy().affinity.as_str(),
        "ttl": s.policy().ttl,
        "ports": s.ports().iter().map(|p| json!({
            "name": p.name.as_ref().map(|n| n.as_str()),
            "protocol": p.protocol.to_string(),
            "port": p.port.get(),
        })).collect::<Vec<_>>(),
        "cluster_ips": if s.mode() == Mode::ClusterIp { s.cluster_ips().iter().map(ToString::to_string).collect::<Vec<_>>() } else { vec![] },
        "endpoints": s.endpoints().iter().map(|e| json!({
            "addresses": e.addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "hostname": e.hostname.as_ref().map(|h| h.as_str()),
            "zone": e.zone.as_ref().map(|z| z.as_str()),
            "node": e.node.as_ref().map(|n| n.as_str()),
            "ready": e.ready,
            "serving": e.serving,
            "terminating": e.terminating,
        })).collect::<Vec<_>>(),
    })
}

async fn debug_registry(State(state): State<AdminState>) -> Response {
    let full = state.registry.full_state();
    let clusters: Vec<Value> = full
        .clusters
        .iter()
        .map(|(status, services)| {
            let mut c = cluster_json(status);
            c["exports"] = services.iter().map(|s| service_json(s)).collect();
            c
        })
        .collect();
    axum::Json(json!({ "serial": state.registry.snapshot().serial, "clusters": clusters }))
        .into_response()
}

fn bad(status: StatusCode, message: String) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn debug_answer(
    State(state): State<AdminState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
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
    let (ns, svc) = match qname::parse(&labels, state.zone.domains()) {
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
    let explanation = select::explain(view, place.as_ref(), state.zone.min_healthy);
    let pick = select::select(view, place.as_ref(), state.zone.min_healthy);
    let mut answer: Vec<String> = pick.v4(0, usize::MAX).map(|a| a.to_string()).collect();
    answer.extend(pick.v6(0, usize::MAX).map(|a| a.to_string()));
    let tiers: Vec<Value> = explanation
        .tiers
        .iter()
        .map(|(tier, healthy)| json!({ "tier": tier, "healthy": healthy }))
        .collect();
    axum::Json(json!({
        "name": name,
        "service": view.key.to_string(),
        "source": source.map(|s| s.to_string()),
        "asker": asker,
        "affinity": explanation.affinity,
        "min_healthy": explanation.min_healthy,
        "tiers": tiers,
        "chosen": explanation.chosen,
        "fail_open": explanation.fail_open,
        "stale_clusters_excluded": explanation.stale_clusters_excluded,
        "answer": answer,
        "max_answers": state.zone.max_answers,
        "no_preference": explanation.chosen == Tier::Any && place.is_none(),
    }))
    .into_response()
}

/// Serves the admin endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/debug/registry", get(debug_registry))
        .route("/debug/answer", get(debug_answer))
        .with_state(state);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
