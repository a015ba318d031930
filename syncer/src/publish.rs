//! Streams one cluster's exports to one registry, forever: Hello and a
//! Snapshot on every (re)connect, Deltas for changes after that,
//! Heartbeats in between, and reconnects with exponential backoff and full
//! jitter. One task per registry, so a slow or dead registry never holds
//! back the others.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::client::ClientAuth;
use meshdns_proto::model::{ExportSet, ServiceExport, ServiceKey};
use meshdns_proto::wire::{self, export_request::Message as Req};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Error;
use crate::source::Exports;

/// Reconnect delays: exponential from `min` to `max`, full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            attempt: 0,
        }
    }

    /// The next delay: uniform in [min, min * 2^attempt] capped at max, so
    /// a fleet of syncers does not reconnect in step after an outage.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .min
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let span = ceiling.saturating_sub(self.min).as_millis() as u64;
        self.min + Duration::from_millis(fastrand::u64(0..=span))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Settings of one publisher.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// `https://host:port` (or `http://` with `--insecure`) of the registry.
    pub url: String,
    /// TLS, client certificate and token settings.
    pub auth: ClientAuth,
    pub heartbeat: Duration,
    pub backoff: Backoff,
}

/// Upserts and removals that turn `old` into `new`.
pub fn diff(
    old: &BTreeMap<ServiceKey, Arc<ServiceExport>>,
    new: &BTreeMap<ServiceKey, Arc<ServiceExport>>,
) -> (Vec<wire::ServiceExport>, Vec<wire::ServiceKey>) {
    let upserts = new
        .iter()
        // Pointer-equal first: unchanged services are shared between sets.
        .filter(|(k, v)| old.get(*k).is_none_or(|o| !Arc::ptr_eq(o, v) && o != *v))
        .map(|(_, v)| v.as_ref().into())
        .collect();
    let removals = old
        .keys()
        .filter(|k| !new.contains_key(*k))
        .map(Into::into)
        .collect();
    (upserts, removals)
}

/// Runs until `shutdown`, reconnecting whenever the stream ends.
pub async fn run(config: PublishConfig, mut exports: Exports, shutdown: CancellationToken) {
    let mut backoff = config.backoff.clone();
    loop {
        // Nothing to say until the source has a first good state.
        while exports.borrow().is_none() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = exports.changed() => if changed.is_err() { return },
            }
        }
        match stream(&config, &mut exports, &shutdown, &mut backoff).await {
            Ok(()) => return,
            Err(e) => warn!(error = %e, "export stream ended; reconnecting"),
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

fn request(generation: &mut u64, message: Req) -> wire::ExportRequest {
    *generation += 1;
    wire::ExportRequest {
        generation: *generation,
        message: Some(message),
    }
}

/// One stream's life. `Ok` only on shutdown.
async fn stream(
    config: &PublishConfig,
    exports: &mut Exports,
    shutdown: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), Error> {
    let fail = |message: String| Error::Registry {
        url: config.url.clone(),
        message,
    };
    let mut client = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        c = config.auth.connect(&config.url) => c.map_err(fail)?,
    };
    let (tx, rx) = mpsc::channel(16);
    let mut generation = 0u64;
    let mut sent: Arc<ExportSet> = exports
        .borrow_and_update()
        .clone()
        .ok_or_else(|| fail("no exports yet".into()))?;
    let hello = wire::Hello::from(&sent.cluster);
    let snapshot = wire::Snapshot {
        services: sent.services.values().map(|s| s.as_ref().into()).collect(),
        more: false,
    };
    let _ = tx.send(request(&mut generation, Req::Hello(hello))).await;
    let _ = tx
        .send(request(&mut generation, Req::Snapshot(snapshot)))
        .await;
    let mut responses = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = client.export(ReceiverStream::new(rx)) => r.map_err(|s| fail(format!("export: {}", s.message())))?.into_inner(),
    };
    info!(registry = %config.url, cluster = %sent.cluster.name, services = sent.services.len(), "export stream open; snapshot sent");
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = exports.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                let Some(next) = exports.borrow_and_update().clone() else { continue };
                if next.cluster != sent.cluster {
                    // Hello is once per stream: new metadata needs a new stream.
                    return Err(fail("cluster metadata changed; reconnecting to announce it".into()));
                }
                let (upserts, removals) = diff(&sent.services, &next.services);
                sent = next;
                if upserts.is_empty() && removals.is_empty() {
                    continue;
                }
                let delta = wire::Delta { upserts, removals };
                if tx.send(request(&mut generation, Req::Delta(delta))).await.is_err() {
                    return Err(fail("stream closed".into()));
                }
                heartbeat.reset();
            }
            _ = heartbeat.tick() => {
                if tx.send(request(&mut generation, Req::Heartbeat(wire::Heartbeat {}))).await.is_err() {
                    return Err(fail("stream closed".into()));
                }
            }
            response = responses.message() => match response {
                Ok(Some(response)) => {
                    // The registry has accepted the stream: the next failure
                    // starts backing off from the beginning.
                    backoff.reset();
                    for refusal in response.refusals {
                        let key = refusal.key.map(|k| format!("{}/{}", k.namespace, k.name)).unwrap_or_default();
                        warn!(registry = %config.url, service = %key, reason = %refusal.reason, "registry refused a service");
                    }
                }
                Ok(None) => return Err(fail("registry closed the stream".into())),
                Err(status) => return Err(fail(format!("{:?}: {}", status.code(), status.message()))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(100) && d <= Duration::from_secs(2),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
