//! The clusterset's view, read from a registry's WatchImports stream with
//! this cluster's own credential (SECURITY.md: a cluster principal may
//! read the view, which holds no address).
//!
//! The feed tries the `--registry` URLs in turn, backing off after each
//! failure. Its state is the last complete view and whether the stream is
//! up; while it is down, the last view stays, with the time and the first
//! error of the outage ([`Feed::down`]: the same for the whole outage,
//! so a condition naming it is written once, however many `--registry`
//! URLs are tried), so the writers keep what they wrote and turn
//! conditions Unknown only after `--mcs-status-ttl`. [`Feed::up_since`]
//! says when the current stream came up: deletions wait a grace period
//! after it, as a freshly restarted hub's view may be partial.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use meshdns_proto::model::ServiceKey;
use meshdns_proto::wire;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::metrics::McsMetrics;
use crate::publish::{Backoff, PublishConfig};

/// One service as the clusterset sees it.
pub type Import = wire::ServiceImport;

/// What the writers read.
#[derive(Debug, Clone, Default)]
pub struct Feed {
    /// The last complete view; `None` until one arrived.
    pub view: Option<Arc<BTreeMap<ServiceKey, Import>>>,
    /// Since when, and why (the outage's first error), no registry
    /// answers (`None`: the stream is up).
    pub down: Option<(SystemTime, String)>,
    /// When the current stream delivered its first complete view.
    pub up_since: Option<Instant>,
}

/// The largest WatchImports event decoded.
const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The reason of the outage before any registry was tried.
const NOT_CONNECTED: &str = "not connected yet";

/// Starts following the registries' view.
pub fn start(
    registries: Vec<PublishConfig>,
    metrics: McsMetrics,
    shutdown: CancellationToken,
) -> watch::Receiver<Feed> {
    let (tx, rx) = watch::channel(Feed {
        view: None,
        down: Some((SystemTime::now(), NOT_CONNECTED.into())),
        up_since: None,
    });
    tokio::spawn(async move {
        let Some(first) = registries.first() else {
            return;
        };
        let mut backoff = Backoff::new(first.backoff.min, first.backoff.max);
        for config in registries.iter().cycle() {
            let error = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = follow(config, &tx, &mut backoff, &metrics) => e,
            };
            metrics.registry_up(false);
            warn!(registry = %config.url, error = %error, "imports stream ended; trying again");
            // The outage keeps its first error: later ones (another
            // --registry URL, a longer backoff) would rewrite conditions.
            tx.send_if_modified(|f| {
                f.up_since = None;
                match f.down.as_mut() {
                    None => {
                        f.down = Some((SystemTime::now(), error.clone()));
                        true
                    }
                    Some((_, why)) if why == NOT_CONNECTED => {
                        *why = error.clone();
                        true
                    }
                    Some(_) => false,
                }
            });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    });
    rx
}

/// One stream's life; the error that ended it.
async fn follow(
    config: &PublishConfig,
    tx: &watch::Sender<Feed>,
    backoff: &mut Backoff,
    metrics: &McsMetrics,
) -> String {
    let mut client = match config.auth.connect(&config.url).await {
        // The registry sends parts of at most 1 MiB; one service alone may
        // be bigger, never this big.
        Ok(c) => c.max_decoding_message_size(MAX_EVENT_BYTES),
        Err(e) => return format!("registry {}: {e}", config.url),
    };
    let mut stream = match client.watch_imports(wire::WatchImportsRequest {}).await {
        Ok(s) => s.into_inner(),
        Err(s) => {
            return format!(
                "registry {}: watch imports: {:?}: {}",
                config.url,
                s.code(),
                s.message()
            );
        }
    };
    // The registry answers: the outage is over, even while a restarted
    // hub waits for its view to be warm before the first reset (the last
    // view stays; conditions do not turn Unknown meanwhile).
    tx.send_if_modified(|f| f.down.take().is_some());
    let mut view: BTreeMap<ServiceKey, Import> = BTreeMap::new();
    // A reset (or change) in parts is applied when its last part arrives.
    let mut pending: Option<BTreeMap<ServiceKey, Import>> = None;
    loop {
        let event = match stream.message().await {
            Ok(Some(e)) => e,
            Ok(None) => return format!("registry {}: the imports stream ended", config.url),
            Err(s) => return format!("registry {}: {:?}: {}", config.url, s.code(), s.message()),
        };
        let working = pending.get_or_insert_with(|| {
            if event.reset {
                BTreeMap::new()
            } else {
                view.clone()
            }
        });
        for key in &event.removals {
            if let Ok(key) = ServiceKey::try_from(key) {
                working.remove(&key);
            }
        }
        for import in event.upserts {
            let Some(key) = import
                .key
                .as_ref()
                .and_then(|k| ServiceKey::try_from(k).ok())
            else {
                continue;
            };
            working.insert(key, import);
        }
        if event.more {
            continue;
        }
        view = pending.take().unwrap_or_default();
        if tx.borrow().up_since.is_none() {
            info!(registry = %config.url, services = view.len(), "imports stream up");
            backoff.reset();
        }
        metrics.registry_up(true);
        let shared = Arc::new(view.clone());
        tx.send_modify(|f| {
            f.view = Some(shared);
            f.down = None;
            f.up_since.get_or_insert_with(Instant::now);
        });
    }
}
