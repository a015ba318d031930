//! meshdns-syncer: exports one cluster's services to every registry.
//!
//! # Layout
//!
//! - [`config`]: flags (`--cluster`, `--registry`, `--source`, ...).
//! - [`source`]: where exports come from; each source turns its input into
//!   a [`meshdns_proto::model::ExportSet`] and publishes it on a
//!   `watch` channel (which coalesces bursts by construction).
//!   [`source::file`] reads the YAML file format; [`source::kubernetes`]
//!   watches a cluster's API server.
//! - [`publish`]: one task per registry: Hello and Snapshot on every
//!   (re)connect, Deltas after, Heartbeats, backoff with jitter.
//! - [`admin`]: `/healthz`, `/readyz` (degraded watchers), `/status`,
//!   `/metrics` ([`metrics`]).
//! - [`registration`]: the VM registration API (`--registration-listen`),
//!   whose instances join the source's export set.
//! - [`health`]: health checks of exported endpoints; a failing endpoint
//!   is exported as not ready.
//! - [`mcs`]: `--mcs-status`: ServiceImports, ServiceExport conditions
//!   and Events in this cluster, from the registry's view.
//! - [`error`]: the crate's error type.
//!
//! The `kubernetes` feature (on by default) is the syncer process: the
//! Kubernetes source, [`config`], [`admin`], [`metrics`] and [`run`].
//! Without it the crate is the export library `meshdns demo` runs in
//! process — [`source::file`] and [`publish`] — and links no kube.

#[cfg(feature = "kubernetes")]
pub mod admin;
#[cfg(feature = "kubernetes")]
pub mod config;
pub mod error;
pub mod health;
#[cfg(feature = "kubernetes")]
pub mod mcs;
/// Without the `kubernetes` feature, only what the publisher and the
/// metrics share with the MCS writers: the registry's per-service
/// refusals and the (then idle) MCS counters.
#[cfg(not(feature = "kubernetes"))]
pub mod mcs {
    #[path = "metrics.rs"]
    pub mod metrics;
    #[path = "refusals.rs"]
    pub mod refusals;
}
pub mod metrics;
pub mod publish;
pub mod registration;
pub mod source;

pub use error::Error;

#[cfg(feature = "kubernetes")]
use tokio_util::sync::CancellationToken;

#[cfg(feature = "kubernetes")]
use crate::config::{SourceKind, SyncerArgs};

/// Runs a syncer until `shutdown`: its source, its admin endpoint, and
/// one publisher per registry.
#[cfg(feature = "kubernetes")]
pub async fn run(args: SyncerArgs, shutdown: CancellationToken) -> Result<(), Error> {
    args.check_topology()?;
    let mut publishers = args.publishers()?;
    // One board of the registries' refusals, read by the MCS writers.
    let refusals = mcs::refusals::Refusals::default();
    for p in &mut publishers {
        p.refusals = refusals.clone();
    }
    let mcs_settings = args.mcs_status.then(|| args.mcs_settings()).transpose()?;
    let admin_listener = match args.admin_listen {
        Some(addr) => {
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Config {
                        field: "--admin-listen".into(),
                        problem: format!("cannot listen on {addr}: {e}"),
                    })?,
            )
        }
        None => None,
    };
    let metrics = std::sync::Arc::new(metrics::Metrics::new());
    let (exports, health) = match args.source_kind()? {
        SourceKind::File(path) => {
            let exports = source::file::follow(
                path,
                args.overrides(),
                args.file_poll_interval,
                shutdown.clone(),
            );
            (exports, None)
        }
        SourceKind::Kubernetes => {
            let (exports, health) =
                source::kubernetes::start(args.kube_source()?, metrics.clone(), shutdown.clone())
                    .await?;
            (exports, Some(health))
        }
    };
    // Registered instances join the source's set; then health checks
    // apply to all of it.
    let health_config = args.health()?;
    let registrations = match args.registration()? {
        Some(config) => Some(
            registration::start_weighted(config, args.weight, metrics.clone(), shutdown.clone())
                .await?,
        ),
        None => None,
    };
    let exports = match &registrations {
        Some(r) => registration::merged(exports, r, shutdown.clone()),
        None => exports,
    };
    let in_use = registrations
        .as_ref()
        .map(|r| r.store.checks_in_use.clone())
        .unwrap_or_default();
    let (exports, checker) = health::start(
        exports,
        registrations.as_ref().map(|r| r.checks()),
        health_config,
        metrics.clone(),
        in_use,
        shutdown.clone(),
    );
    let flush = registrations.clone();
    if let Some(settings) = mcs_settings {
        if !matches!(args.source_kind()?, SourceKind::Kubernetes) {
            return Err(Error::Config {
                field: "--mcs-status".into(),
                problem: "needs the kubernetes source".into(),
            });
        }
        let client = source::kubernetes::config::client(args.kubeconfig.as_ref()).await?;
        mcs::start(
            client,
            settings,
            publishers.clone(),
            exports.clone(),
            refusals,
            metrics.mcs.clone(),
            shutdown.clone(),
        );
    }
    if let Some(listener) = admin_listener {
        // Tests (and operators) that pass port 0 learn the port from here.
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(addr = %addr, "admin listening");
        }
        tokio::spawn(admin::serve(
            listener,
            exports.clone(),
            health,
            metrics,
            admin::Vms {
                checker,
                registrations,
            },
            args.client.credentials.tls_cert.clone(),
            shutdown.clone(),
        ));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for config in publishers {
        tasks.spawn(publish::run(config, exports.clone(), shutdown.clone()));
    }
    while tasks.join_next().await.is_some() {}
    if let Some(registrations) = flush {
        registrations.flushed().await;
    }
    Ok(())
}
