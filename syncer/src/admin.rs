//! The syncer's admin HTTP endpoint.
//!
//! - `/healthz`: the process is up.
//! - `/readyz`: 200 once the source has a complete state and no watcher is
//!   failing (naming any optional watcher that is unavailable); 503 with
//!   the reason otherwise (the last known state is still being streamed
//!   meanwhile).
//! - `/status`: JSON: what is exported, watcher state, and services with
//!   annotation or shape problems.
//! - `/metrics`: Prometheus text ([`Metrics`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use meshdns_cli::connections::{Bounded, Limits};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::source::Exports;
use crate::source::kubernetes::Health;

/// The health checker and the registration source, for `/status`.
#[derive(Debug, Clone)]
pub struct Vms {
    pub checker: Arc<crate::health::Checker>,
    pub registrations: Option<crate::registration::Registrations>,
}

impl Vms {
    fn json(&self) -> serde_json::Value {
        let registrations = self.registrations.as_ref().map(|r| {
            let problems = r.problems.lock().map(|p| p.clone()).unwrap_or_default();
            json!({
                "listen": r.listen.to_string(),
                "registrations": r.store.len(),
                "tokens": r.tokens.read().map(|t| t.len()).unwrap_or(0),
                "not_merged": problems,
            })
        });
        json!({
            "health_checks": self.checker.json(),
            "registrations": registrations,
        })
    }
}

#[derive(Clone)]
struct AdminState {
    exports: Exports,
    health: Option<Arc<Health>>,
    metrics: Arc<Metrics>,
    vms: Vms,
    /// `--tls-cert`: its expiry is read at each scrape.
    client_cert: Option<std::path::PathBuf>,
}

/// Ready, with notes on what is unavailable; or why not.
fn readiness(state: &AdminState) -> Result<String, String> {
    let notes = match &state.health {
        Some(health) => health.ready()?,
        None => Vec::new(),
    };
    if state.exports.borrow().is_none() {
        return Err("no export state yet".into());
    }
    Ok(std::iter::once("ready".to_owned())
        .chain(notes)
        .collect::<Vec<_>>()
        .join("; "))
}

async fn readyz(State(state): State<AdminState>) -> (StatusCode, String) {
    match readiness(&state) {
        Ok(text) => (StatusCode::OK, format!("{text}\n")),
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
            "provider": set.cluster.provider.as_ref().map(|p| p.as_str()),
            "nodes": set.cluster.nodes.len(),
            "client_cidrs": set.cluster.client_cidrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "services": set.services.len(),
            "endpoints": set.services.values().map(|s| s.endpoints().len()).sum::<usize>(),
        })
    });
    axum::Json(json!({
        "ready": readiness(&state).unwrap_or_else(|why| why),
        "exported": exported,
        "source": state.health.as_ref().map(|h| h.json()),
        "vms": state.vms.json(),
    }))
}

async fn metrics(State(state): State<AdminState>) -> impl axum::response::IntoResponse {
    if let Some(set) = state.exports.borrow().as_ref() {
        let endpoints = set.services.values().map(|s| s.endpoints().len()).sum();
        state.metrics.set_exported(set.services.len(), endpoints);
    }
    if let Some(path) = &state.client_cert {
        state.metrics.read_client_certificate(path);
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

/// Serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    exports: Exports,
    health: Option<Arc<Health>>,
    metrics: Arc<Metrics>,
    vms: Vms,
    client_cert: Option<std::path::PathBuf>,
    shutdown: CancellationToken,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/metrics", get(self::metrics))
        .with_state(AdminState {
            exports,
            health,
            metrics,
            vms,
            client_cert,
        });
    // Bounded before HTTP, as the registry's admin port is.
    let _ = axum::serve(Bounded::new(listener, Limits::ADMIN, "admin"), app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
}
