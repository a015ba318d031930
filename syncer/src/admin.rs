//! The syncer's admin HTTP endpoint.
//!
//! - `/healthz`: the process is up.
//! - `/readyz`: 200 once the source has a complete state and no watcher is
//!   failing; 503 with the reason otherwise (the last known state is still
//!   being streamed meanwhile).
//! - `/status`: JSON: what is exported, watcher state, and services with
//!   annotation or shape problems.
//! - `/metrics`: Prometheus text ([`crate::metrics`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::source::Exports;
use crate::source::kubernetes::Health;

#[derive(Clone)]
struct AdminState {
    exports: Exports,
    health: Option<Arc<Health>>,
}

fn readiness(state: &AdminState) -> Result<(), String> {
    if let Some(health) = &state.health {
        health.ready()?;
    }
    if state.exports.borrow().is_none() {
        return Err("no export state yet".into());
    }
    Ok(())
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    match readiness(&state) {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
    }
}

async fn status(State(state): State<AdminState>) -> axum::Json<serde_json::Value> {
    let exports = state.exports.borrow().clone();
    let exported = exports.as_ref().map(|set| {
        json!({
            "cluster": set.cluster.name.as_str(),
            "region": set.cluster.region.as_ref().map(|r| r.as_str()),
            "zone": set.cluster.zone.as_ref().map(|z| z.as_str()),
            "client_cidrs": set.cluster.client_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "services": set.services.len(),
            "endpoints": set.services.values().map(|s| s.endpoints().len()).sum::<usize>(),
        })
    });
    axum::Json(json!({
        "ready": readiness(&state).err().unwrap_or_else(|| "ready".into()),
        "exported": exported,
        "source": state.health.as_ref().map(|h| h.json()),
    }))
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    exports: Exports,
    health: Option<Arc<Health>>,
    metrics: crate::metrics::SyncerMetrics,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(AdminState { exports, health });
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
}
