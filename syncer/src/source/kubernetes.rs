//! The `kubernetes` source: watches Services (by label selector, and with
//! `--mcs` those named by a `ServiceExport`), their EndpointSlices, and
//! Nodes (client CIDRs, region, zone, provider and node addresses), and
//! turns them into the cluster's export set.
//!
//! One watcher task per kind reduces objects ([`objects`]) and sends them to
//! one state task. A relist (`Init` .. `InitDone`, after a 410 or a
//! restart) is buffered and swapped in one step. Changes are coalesced for
//! up to `coalesce` (50 ms) so a rollout becomes a few Deltas, and nothing
//! is published until every watcher has listed once, so the first Snapshot
//! is never partial — except that an optional watcher (ServiceExports,
//! Nodes) that cannot list because its API is not served or forbidden
//! ([`failure`]) holds back only what it adds: the rest exports, and it is
//! picked up when it lists. A watcher error never ends the syncer:
//! kube-runtime backs off and retries, the last known state keeps being
//! streamed, and [`Health`] reports the degraded or unavailable watcher.

//!
//! One idea per file: [`config`] (settings, the API client), [`watcher`]
//! (one task per kind), [`objects`] (API objects reduced, and a Service
//! with its slices made an export), [`relist`] (the slim objects held, a
//! relist swapped in one step, and why not kube-runtime's reflector
//! store), [`state`] (the reducer and the publish), [`cluster`] (the
//! cluster's description from the flags or its Nodes), [`health`] and
//! [`failure`].

mod cluster;
pub mod config;
pub mod failure;
pub mod health;
pub mod objects;
mod relist;
mod state;
mod watcher;

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace as K8sNamespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::watcher::Config as WatcherConfig;
use kube::{Api, ResourceExt};
use meshdns_proto::model::ClusterName;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

pub use self::config::KubeSource;
pub use self::failure::{Resource, WatchFailure};
pub use self::health::{Health, HealthState};
use self::objects::{NodeObj, SERVICE_NAME_LABEL, SliceObj, SvcObj};
use self::state::State;
use self::watcher::{Msg, key_of, spawn_watcher};
use super::Exports;
use crate::error::Error;
use crate::metrics::Metrics;

/// Starts the watchers and the state task; the export set appears on the
/// returned channel once every watcher has listed, or (an optional one:
/// ServiceExports, Nodes) has been found unavailable.
pub async fn start(
    source: KubeSource,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(Exports, Arc<Health>), Error> {
    let cluster_name = source
        .overrides
        .cluster
        .clone()
        .ok_or_else(|| Error::Config {
            field: "--cluster".into(),
            problem: "is required with the kubernetes source".into(),
        })?;
    ClusterName::new(&cluster_name).map_err(|e| Error::Config {
        field: "--cluster".into(),
        problem: e.problem.to_string(),
    })?;
    let client = config::client(source.kubeconfig.as_ref()).await?;
    let (tx, rx) = mpsc::channel(1024);
    let mut source = source;
    let o = &source.overrides;
    // Nodes are watched for what the flags leave out (client CIDRs,
    // region, zone) and for their own addresses (--announce-nodes). The
    // provider alone is not worth a watch on every Node of a churning
    // cluster: then its label is read once, at start.
    let watch_nodes =
        o.announce_nodes || o.client_cidrs.is_empty() || o.region.is_none() || o.zone.is_none();
    if !watch_nodes && o.provider.is_none() {
        source.overrides.provider = provider_once(&client).await;
    }
    let mut watchers =
        BTreeSet::from([Resource::SERVICES.plural, Resource::ENDPOINT_SLICES.plural]);
    let mut optional = BTreeSet::new();
    if watch_nodes {
        // Without Nodes the cluster is announced without client CIDRs,
        // topology and node addresses; its Services still export.
        watchers.insert(Resource::NODES.plural);
        optional.insert(Resource::NODES.plural);
    }
    if source.namespace_selector.is_some() {
        // Every Service depends on its namespace being selected.
        watchers.insert(Resource::NAMESPACES.plural);
    }
    if source.mcs {
        // Only the Services no label selects depend on ServiceExports.
        watchers.insert(Resource::SERVICE_EXPORTS.plural);
        optional.insert(Resource::SERVICE_EXPORTS.plural);
    }
    let health = Arc::new(Health::new(watchers.clone(), optional, metrics));
    // With --mcs, Services named by a ServiceExport need no label, so all
    // Services are watched and the selector applies here.
    let service_config = if source.mcs || source.selector.is_empty() {
        WatcherConfig::default()
    } else {
        WatcherConfig::default().labels(source.selector.as_str())
    };
    spawn_watcher(
        Resource::SERVICES,
        Api::<Service>::all(client.clone()),
        service_config,
        SvcObj::from_api,
        Msg::Services,
        tx.clone(),
        shutdown.clone(),
    );
    spawn_watcher(
        Resource::ENDPOINT_SLICES,
        Api::<EndpointSlice>::all(client.clone()),
        WatcherConfig::default().labels(SERVICE_NAME_LABEL),
        SliceObj::from_api,
        Msg::Slices,
        tx.clone(),
        shutdown.clone(),
    );
    if watch_nodes {
        spawn_watcher(
            Resource::NODES,
            Api::<Node>::all(client.clone()),
            WatcherConfig::default(),
            NodeObj::from_api,
            Msg::Nodes,
            tx.clone(),
            shutdown.clone(),
        );
    }
    if let Some(selector) = &source.namespace_selector {
        let config = WatcherConfig::default().labels(selector.as_str());
        spawn_watcher(
            Resource::NAMESPACES,
            Api::<K8sNamespace>::all(client.clone()),
            config,
            |n: &K8sNamespace| n.name_any(),
            Msg::Namespaces,
            tx.clone(),
            shutdown.clone(),
        );
    }
    if source.mcs {
        let r = Resource::SERVICE_EXPORTS;
        let gvk = GroupVersionKind::gvk(r.group, r.version, "ServiceExport");
        let resource = ApiResource::from_gvk_with_plural(&gvk, r.plural);
        let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
        spawn_watcher(
            r,
            api,
            WatcherConfig::default(),
            key_of,
            Msg::Exports,
            tx.clone(),
            shutdown.clone(),
        );
    }
    let (exports_tx, exports_rx) = watch::channel(None);
    let state = State::new(source, cluster_name, health.clone(), exports_tx);
    tokio::spawn(state.run(rx, shutdown));
    Ok((exports_rx, health))
}

/// The `meshdns.io/provider` label the Nodes agree on, read once (a
/// paged list, no watch): a later relabel is seen at the next restart, or
/// give `--provider`. A list that fails announces no provider, and says
/// why.
async fn provider_once(client: &kube::Client) -> Option<String> {
    let api = Api::<Node>::all(client.clone());
    let mut nodes = Vec::new();
    let mut params = ListParams::default().limit(500);
    loop {
        match api.list(&params).await {
            Ok(page) => {
                nodes.extend(page.items.iter().map(NodeObj::from_api));
                match page.metadata.continue_.filter(|c| !c.is_empty()) {
                    Some(token) => params = params.continue_token(&token),
                    None => break,
                }
            }
            Err(e) => {
                warn!(error = %e, "cannot list Nodes for their {} label; announcing no provider (set --provider)", objects::PROVIDER_LABEL);
                return None;
            }
        }
    }
    let mut notes = Vec::new();
    let provider = cluster::agreed_provider(nodes.iter(), &mut notes);
    for note in notes {
        warn!(note = %note, "cluster description");
    }
    provider
}
