//! The fleet seen from inside this cluster (`--mcs-status`): from the
//! registry's view of the clusterset ([`feed`], read over WatchImports
//! with the cluster's own credential) the syncer keeps, in its cluster,
//! ServiceImports ([`imports`]), ServiceExport conditions in `--mcs` mode
//! ([`export_status`]) and Events on label-selected Services
//! ([`events`]); the registry's per-service refusals come from the
//! publishers ([`refusals`]).
//!
//! One task reconciles: on any change (the view, a refusal, the export
//! set, an object it watches) it waits [`SETTLE`] for more, then compares
//! what it wants with what the cluster holds ([`observed`]) and writes
//! only the difference, through the `--mcs-writes-per-second` bucket
//! ([`writes`], [`rate`]). A relist that changes nothing writes nothing.
//! While no registry answers, nothing is written until the outage is
//! older than `--mcs-status-ttl`; then every condition turns Unknown,
//! naming the outage (local verdicts, such as a missing Service, stay).
//! ServiceImports are only ever changed from a live view, and deleted
//! only `--mcs-status-ttl` after the stream came up: an outage, or a hub
//! restarted with a partial view, never deletes one.

pub mod conditions;
pub mod events;
pub mod export_status;
pub mod feed;
pub mod imports;
pub mod metrics;
pub mod observed;
pub mod rate;
pub mod refusals;
pub mod writes;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::api::DynamicObject;
use kube::runtime::watcher;
use kube::{Api, Client};
use meshdns_proto::model::ServiceKey;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::publish::PublishConfig;
use crate::source::Exports;
use observed::Observed;
use refusals::Refusals;
use writes::Writes;

/// How long a change waits for others before a pass.
pub const SETTLE: Duration = Duration::from_millis(100);
/// A pass after a failed or conflicting write comes this soon.
const RETRY: Duration = Duration::from_millis(500);
/// A pass at least this often, whatever happens.
const RESYNC: Duration = Duration::from_secs(60);

/// The MCS writers' settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch all ServiceExports and write their conditions (`--mcs`).
    pub mcs: bool,
    /// The label selector of exported Services (label mode).
    pub selector: String,
    pub create_namespaces: bool,
    pub writes_per_second: f64,
    pub write_burst: u32,
    /// After this long without a registry, conditions turn Unknown.
    pub status_ttl: Duration,
}

/// What a pass reads.
pub struct Context {
    pub client: Client,
    pub cluster: String,
    pub settings: Settings,
    pub writes: Writes,
    pub imports: Observed<DynamicObject>,
    pub exports: Option<Observed<DynamicObject>>,
    pub services: Observed<Service>,
    pub namespaces: Observed<Namespace>,
    pub refusals: Refusals,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("cluster", &self.cluster)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Starts the writers; they run until `shutdown`.
pub fn start(
    client: Client,
    settings: Settings,
    registries: Vec<PublishConfig>,
    exports: Exports,
    refusals: Refusals,
    metrics: metrics::McsMetrics,
    shutdown: CancellationToken,
) -> Writes {
    let notify = Arc::new(Notify::new());
    // All ServiceImports, ours and others': one we did not create is
    // seen, so it is neither written over nor re-created every pass.
    let imports_api: Api<DynamicObject> = Api::all_with(client.clone(), &imports::resource());
    let imports = observed::watch(
        imports_api,
        watcher::Config::default(),
        "serviceimports",
        notify.clone(),
        shutdown.clone(),
    );
    let exports_observed = settings.mcs.then(|| {
        observed::watch(
            Api::<DynamicObject>::all_with(client.clone(), &export_status::resource()),
            watcher::Config::default(),
            "serviceexports",
            notify.clone(),
            shutdown.clone(),
        )
    });
    // With --mcs a ServiceExport may name any Service: all are watched.
    let service_config = if settings.mcs || settings.selector.is_empty() {
        watcher::Config::default()
    } else {
        watcher::Config::default().labels(&settings.selector)
    };
    let services = observed::watch(
        Api::<Service>::all(client.clone()),
        service_config,
        "services",
        notify.clone(),
        shutdown.clone(),
    );
    let namespaces = observed::watch(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
        "namespaces",
        notify.clone(),
        shutdown.clone(),
    );
    let writes = Writes::new(
        settings.writes_per_second,
        settings.write_burst,
        metrics.clone(),
    );
    let feed = feed::start(registries, metrics, shutdown.clone());
    let cx = Context {
        client,
        cluster: String::new(),
        settings,
        writes: writes.clone(),
        imports,
        exports: exports_observed,
        services,
        namespaces,
        refusals,
    };
    tokio::spawn(run(cx, feed, exports, notify, shutdown));
    writes
}

async fn run(
    mut cx: Context,
    mut feed: watch::Receiver<feed::Feed>,
    mut exports: Exports,
    notify: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut refusals = cx.refusals.subscribe();
    let mut events = events::Events::default();
    let mut next_pass = RESYNC;
    loop {
        // An outage turns conditions Unknown when it reaches the TTL.
        let outage_due = feed.borrow().down.as_ref().and_then(|(since, _)| {
            let age = SystemTime::now().duration_since(*since).unwrap_or_default();
            cx.settings.status_ttl.checked_sub(age)
        });
        let wait = outage_due.map_or(next_pass, |d| d.min(next_pass));
        let open = tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = feed.changed() => changed.is_ok(),
            changed = refusals.changed() => changed.is_ok(),
            changed = exports.changed() => changed.is_ok(),
            _ = notify.notified() => true,
            _ = tokio::time::sleep(wait) => true,
        };
        if !open {
            // The feed or the source is gone: the syncer is stopping.
            return;
        }
        tokio::time::sleep(SETTLE).await;
        let set = exports.borrow_and_update().clone();
        let Some(set) = set else { continue };
        cx.cluster = set.cluster.name.to_string();
        let state = feed.borrow_and_update().clone();
        refusals.borrow_and_update();
        let exported: Vec<ServiceKey> = set.services.keys().cloned().collect();
        let again = pass(&cx, &mut events, &state, &exported).await;
        next_pass = if again { RETRY } else { RESYNC };
    }
}

/// One comparison of wanted and observed, writing the difference;
/// `true` when something should be tried again soon.
async fn pass(
    cx: &Context,
    events: &mut events::Events,
    state: &feed::Feed,
    exported: &[ServiceKey],
) -> bool {
    // Each writer waits for its own watches only: a cluster without the
    // ServiceImport CRD still gets ServiceExport conditions and Events.
    // A watch's first list wakes the task (`notify`).
    let imports_ready = cx.imports.ready() && cx.namespaces.ready();
    match (&state.down, &state.view) {
        (None, Some(view)) => {
            // Deletes wait one TTL after each (re)connect: a restarted
            // hub's view fills up as the members reconnect.
            let hold_deletes = state
                .up_since
                .is_none_or(|up| up.elapsed() < cx.settings.status_ttl);
            let mut again = imports_ready && imports::reconcile(cx, view, hold_deletes).await;
            again |= export_status::reconcile(cx, Some(view), None).await;
            again |= events.reconcile(cx, view, exported).await;
            again
        }
        (Some((since, why)), _) => {
            let age = SystemTime::now().duration_since(*since).unwrap_or_default();
            if age < cx.settings.status_ttl {
                // Conditions keep their last value for now.
                return false;
            }
            let since: k8s_openapi::jiff::Timestamp = (*since).try_into().unwrap_or_default();
            let outage = format!(
                "no registry has answered since {} (longer than --mcs-status-ttl {:?}): {why}",
                k8s_openapi::jiff::Timestamp::from_second(since.as_second()).unwrap_or(since),
                cx.settings.status_ttl
            );
            info!(outage = %outage, "mcs: conditions turn Unknown");
            export_status::reconcile(cx, None, Some(&outage)).await
        }
        (None, None) => false,
    }
}
