//! Streams one cluster's exports to one registry, forever: Hello and a
//! Snapshot on every (re)connect, Deltas for changes after that,
//! Heartbeats in between, and reconnects with exponential backoff and full
//! jitter. One task per registry, so a slow or dead registry never holds
//! back the others.
//!
//! Every request stays under `--max-message-bytes`: a big Snapshot goes in
//! parts, a big Delta as several Deltas ([`parts`]). The backoff starts
//! over only once the registry has acknowledged the Snapshot, so a stream
//! refused after Hello, or a Snapshot refused whole, backs off. Services
//! the registry refused are sent again later ([`retry`]).

mod hello;
mod parts;
mod retry;

pub use parts::{MIN_MESSAGE_BYTES, delta_parts, snapshot_parts};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::client::ClientAuth;
use meshdns_proto::model::{ExportSet, ServiceExport, ServiceKey};
use meshdns_proto::wire::{self, export_request::Message as Req};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::error::Error;
use crate::source::Exports;
use retry::Refused;

/// The default `--max-message-bytes`: a quarter of the 4 MiB a registry
/// (and a tonic server) accepts by default.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1024 * 1024;

pub use meshdns_proto::backoff::Backoff;

/// Settings of one publisher.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// `https://host:port` (or `http://` with `--insecure`) of the registry.
    pub url: String,
    /// TLS, client certificate and token settings.
    pub auth: ClientAuth,
    pub heartbeat: Duration,
    pub backoff: Backoff,
    /// Largest request sent (`--max-message-bytes`); bigger Snapshots go in
    /// parts, bigger Deltas as several.
    pub max_message_bytes: usize,
    /// Where the registry's per-service refusals go (ServiceExport
    /// conditions and Events read them).
    pub refusals: crate::mcs::refusals::Refusals,
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
        let delay = match stream(&config, &mut exports, &shutdown, &mut backoff).await {
            Ok(()) => return,
            Err(e) if e.is_retryable() => {
                warn!(error = %e, "export stream ended; reconnecting");
                backoff.next_delay()
            }
            Err(e) => {
                // A bad certificate is not a registry that is down: say
                // so, and try again only at the longest delay (the file
                // may be rotated in).
                error!(error = %e, retry_in = ?backoff.max, "cannot connect to the registry until this is fixed");
                backoff.max
            }
        };
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

fn to_wire(service: &Arc<ServiceExport>) -> wire::ServiceExport {
    service.as_ref().into()
}

/// Milliseconds since the Unix epoch, now.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Sends `deltas` in order, the last stamped with `observed_unix_ms`
/// (when the change they carry was seen; 0 for none); `false` when the
/// stream is gone.
async fn send_deltas(
    tx: &mpsc::Sender<wire::ExportRequest>,
    generation: &mut u64,
    deltas: impl Iterator<Item = wire::Delta>,
    observed_unix_ms: u64,
    config: &PublishConfig,
) -> bool {
    let mut deltas = deltas.peekable();
    while let Some(mut delta) = deltas.next() {
        if deltas.peek().is_none() {
            delta.observed_unix_ms = observed_unix_ms;
        }
        let keys = delta
            .upserts
            .iter()
            .filter_map(|s| s.key.as_ref())
            .chain(&delta.removals);
        config.refusals.sent(&config.url, *generation + 1, keys);
        if tx
            .send(request(generation, Req::Delta(delta)))
            .await
            .is_err()
        {
            return false;
        }
    }
    true
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
        c = config.auth.connect(&config.url) => c.map_err(|source| Error::Client {
            url: config.url.clone(),
            source,
        })?,
    };
    // A few requests in flight: a big Snapshot is converted to wire form
    // one part at a time, as the stream takes them.
    let (tx, rx) = mpsc::channel(4);
    let mut generation = 0u64;
    let mut sent: Arc<ExportSet> = exports
        .borrow_and_update()
        .clone()
        .ok_or_else(|| fail("no exports yet".into()))?;
    let (hello, left_out) = hello::hello(&sent.cluster);
    if left_out > 0 {
        warn!(registry = %config.url, nodes = sent.cluster.nodes.len(), left_out, "the Hello would be over the registry's first-message limit: the last nodes' addresses are left out (no node tier for them)");
    }
    let _ = tx.send(request(&mut generation, Req::Hello(hello))).await;
    let parts = snapshot_parts(
        sent.services.values().map(to_wire),
        config.max_message_bytes,
    );
    // The parts are sent while the call opens: the registry may read the
    // Hello and the first parts before it answers.
    let send_snapshot = async {
        let mut count = 0usize;
        config.refusals.restart(&config.url);
        for part in parts {
            let keys = part.services.iter().filter_map(|s| s.key.as_ref());
            config.refusals.sent(&config.url, generation + 1, keys);
            if tx
                .send(request(&mut generation, Req::Snapshot(part)))
                .await
                .is_err()
            {
                break;
            }
            count += 1;
        }
        count
    };
    let (responses, parts) = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        r = async { tokio::join!(client.export(ReceiverStream::new(rx)), send_snapshot) } => r,
    };
    let mut responses = responses
        .map_err(|s| fail(format!("export: {}", s.message())))?
        .into_inner();
    // The Snapshot is acknowledged with the response to its last part.
    let snapshot_generation = generation;
    let mut acknowledged = false;
    let mut refused = Refused::new(Backoff::new(config.backoff.min, config.backoff.max));
    info!(registry = %config.url, cluster = %sent.cluster.name, services = sent.services.len(), parts, "export stream open; snapshot sent");
    let mut heartbeat = tokio::time::interval(config.heartbeat);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    heartbeat.reset();
    loop {
        let retry_due = refused.due();
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            changed = exports.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                // The propagation clock starts when the source published
                // the change (after its coalescing), as this task wakes.
                let observed = unix_ms();
                let Some(next) = exports.borrow_and_update().clone() else { continue };
                if next.cluster != sent.cluster {
                    // Hello is once per stream: new metadata needs a new stream.
                    return Err(fail("cluster metadata changed; reconnecting to announce it".into()));
                }
                let (upserts, removals) = diff(&sent.services, &next.services);
                // Refused services that changed go out with this Delta.
                refused.sending(|k| sent.services.get(k) != next.services.get(k));
                sent = next;
                if upserts.is_empty() && removals.is_empty() {
                    continue;
                }
                let deltas = delta_parts(upserts, removals, config.max_message_bytes);
                if !send_deltas(&tx, &mut generation, deltas, observed, config).await {
                    return Err(fail("stream closed".into()));
                }
                heartbeat.reset();
            }
            _ = tokio::time::sleep_until(retry_due.unwrap_or_else(tokio::time::Instant::now)), if retry_due.is_some() => {
                let (upserts, removals) = refused.take(&sent.services);
                info!(registry = %config.url, services = upserts.len() + removals.len(), "sending refused services again");
                let deltas = delta_parts(upserts, removals, config.max_message_bytes);
                // A resend is not a change: unstamped.
                if !send_deltas(&tx, &mut generation, deltas, 0, config).await {
                    return Err(fail("stream closed".into()));
                }
                refused.retried(generation);
                heartbeat.reset();
            }
            _ = heartbeat.tick() => {
                if tx.send(request(&mut generation, Req::Heartbeat(wire::Heartbeat {}))).await.is_err() {
                    return Err(fail("stream closed".into()));
                }
            }
            response = responses.message() => match response {
                Ok(Some(response)) => {
                    if !acknowledged && response.generation >= snapshot_generation {
                        // The registry took the Snapshot: the next failure
                        // starts backing off from the beginning.
                        acknowledged = true;
                        backoff.reset();
                    }
                    for refusal in &response.refusals {
                        let key = refusal.key.as_ref().map(ToString::to_string).unwrap_or_default();
                        warn!(registry = %config.url, service = %key, reason = %refusal.reason, "registry refused a service; it will be sent again");
                    }
                    refused.answered(response.generation, &response.refusals);
                    config.refusals.answered(&config.url, response.generation, &response.refusals);
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

    /// Attempt k waits uniformly in [min, min·2^k] capped at max. Over 300
    /// syncers every delay lies in its attempt's range, and the spread
    /// reaches both ends of it (each end missed by all 300 with
    /// probability 0.9^300, about 2e-14): a constant delay, one without
    /// jitter, or one past the cap fails.
    #[test]
    fn backoff_grows_with_full_jitter_and_caps() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(2));
        let attempts = 8;
        let mut delays = vec![Vec::new(); attempts];
        for _ in 0..300 {
            let mut b = Backoff::new(min, max);
            for d in delays.iter_mut() {
                d.push(b.next_delay());
            }
        }
        for (k, got) in delays.iter().enumerate() {
            let ceiling = (min * 2u32.pow(k as u32)).min(max);
            let span = ceiling - min;
            let (low, high) = (got.iter().min().unwrap(), got.iter().max().unwrap());
            assert!(
                *low >= min && *high <= ceiling,
                "attempt {k}: {low:?}..{high:?} outside {min:?}..{ceiling:?}"
            );
            assert!(
                *high >= min + span.mul_f64(0.9),
                "attempt {k}: never near its ceiling {ceiling:?} (max {high:?})"
            );
            assert!(
                *low <= min + span.mul_f64(0.1),
                "attempt {k}: no jitter down to {min:?} (min {low:?})"
            );
        }
        // Capped: late attempts reach max and no further.
        assert!(delays[attempts - 1].iter().any(|d| *d > max.mul_f64(0.9)));
        // Reset starts over at the first attempt's delay.
        let mut b = Backoff::new(min, max);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert_eq!(b.next_delay(), min);
    }
}
