//! One Export stream: Hello, then Snapshots (possibly in parts), Deltas
//! and Heartbeats applied to the registry in order, each answered with its
//! refusals.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshdns_proto::convert::Interner;
use meshdns_proto::model::{Cluster, ServiceExport};
use meshdns_proto::wire::{self, export_request::Message as Req};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{debug, info, warn};

use super::validate::{Checked, Refused, log_line, over_limit, removals, summarize};
use crate::auth::{Auth, Credential, Principal};
use crate::config::Limits;
use crate::error::Error;
use crate::fleet::{ClusterRules, Fleet, Withdrawn};
use crate::metrics::Metrics;
use crate::registry::{Registry, Session, Writer};

/// What an Export stream works with.
pub(super) struct Context {
    pub registry: Arc<Registry>,
    /// Every write goes through the registry's writer thread.
    pub writer: Writer,
    /// Large messages validated at once, at most (one per CPU).
    pub validators: tokio::sync::Semaphore,
    /// `--max-export-bytes-in-flight`, shared by every stream's framing.
    pub budget: super::budget::Budget,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub auth: Arc<Auth>,
    pub fleet: Arc<Fleet>,
    pub shutdown: CancellationToken,
}

/// At most one refusal log line per stream per this long; the rest are
/// counted and said in the next line, so a sender cannot flood the log.
const LOG_EVERY: Duration = Duration::from_secs(1);

/// One stream's log of refusals, rate-limited.
struct RefusalLog {
    last: Option<Instant>,
    suppressed: usize,
}

impl RefusalLog {
    fn note(&mut self, session: &Session, refusals: &[Refused]) {
        if refusals.is_empty() {
            return;
        }
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.suppressed += 1;
            debug!(cluster = %session.cluster, "{}", log_line(refusals));
            return;
        }
        self.last = Some(now);
        let suppressed = std::mem::take(&mut self.suppressed);
        warn!(cluster = %session.cluster, suppressed_messages = suppressed, "refused export items: {}", log_line(refusals));
    }
}

/// The parts of a Snapshot received so far; applied together with the
/// last. Bounded: at most the cluster's services limit is held (the rest
/// are refused as they come), the same bound its applied state has.
#[derive(Default)]
struct Pending {
    checked: Checked,
}

/// Services the fleet file does not let this cluster export become
/// refusals, and their last version leaves with them (`disallowed`):
/// unlike a bad endpoint, what the file forbids must stop being
/// answered, or narrowing the file would change nothing a cluster
/// already exported. Only the services from
/// index `from` on are checked (a Snapshot's earlier parts were checked as
/// they came).
fn police(rules: Option<&ClusterRules>, checked: &mut Checked, from: usize) {
    let Some(rules) = rules else { return };
    let new = checked.valid.split_off(from);
    let mut kept = std::mem::take(&mut checked.valid);
    for service in new {
        match rules.refuse(&service) {
            None => kept.push(service),
            Some(reason) => {
                checked.disallowed.insert(service.key().clone());
                let refusal = wire::Refusal {
                    key: Some(service.key().into()),
                    reason,
                };
                checked.refusals.push((refusal, "not_allowed"));
            }
        }
    }
    checked.valid = kept;
}

/// Messages with more items than this are validated on the blocking pool,
/// so a large Snapshot never holds a runtime worker (a 4 MiB message
/// takes tens of milliseconds). At most one per CPU at a time
/// ([`Context::validators`]): a reconnect storm of a thousand Snapshots
/// must not become a thousand threads starving the runtime (probes, DNS
/// over TCP) of CPU.
const INLINE_ITEMS: usize = 1024;

/// Adds `services` to `checked` (validated, then policed by the fleet
/// file), off the runtime when the message is large.
async fn check(
    validators: &tokio::sync::Semaphore,
    mut checked: Checked,
    services: Vec<wire::ServiceExport>,
    max_endpoints: usize,
    rules: Option<Arc<ClusterRules>>,
) -> Checked {
    let items: usize = services.iter().map(|s| 1 + s.endpoints.len()).sum();
    let work = move || {
        crate::priority::control_plane_thread();
        let from = checked.valid.len();
        checked.add(&services, max_endpoints);
        police(rules.as_deref(), &mut checked, from);
        checked
    };
    if items <= INLINE_ITEMS {
        return work();
    }
    // The semaphore is never closed.
    let _permit = validators.acquire().await;
    match tokio::task::spawn_blocking(work).await {
        Ok(checked) => checked,
        // Validation does not panic (it is fuzzed); should it, the panic
        // is the stream's, not the runtime's.
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// The state one stream carries between messages.
struct Stream<'a> {
    cx: &'a Context,
    session: Arc<Session>,
    rules: Option<Arc<ClusterRules>>,
    pending: Option<Pending>,
    /// Whether a whole Snapshot has been applied on this stream.
    snapshot_applied: bool,
    /// Zone and node names this stream has sent, so its successive
    /// exports share them (lent to each message's check).
    names: Interner,
    log: RefusalLog,
}

impl Stream<'_> {
    fn max_services(&self) -> usize {
        self.session.max_services
    }

    /// Applies one request of the open session.
    async fn apply(&mut self, request: wire::ExportRequest) -> Result<wire::ExportResponse, Error> {
        let limits = &self.cx.limits;
        let writer = &self.cx.writer;
        let refusals: Vec<Refused> = match request.message {
            Some(Req::Hello(_)) => return Err(Error::SecondHello),
            Some(Req::Snapshot(snapshot)) => {
                // A Snapshot's first part borrows the stream's names; its
                // last gives them back.
                let mut pending = self.pending.take().unwrap_or_else(|| Pending {
                    checked: Checked::with_names(std::mem::take(&mut self.names)),
                });
                let before = pending.checked.refusals.len();
                pending.checked = check(
                    &self.cx.validators,
                    pending.checked,
                    snapshot.services,
                    limits.max_endpoints_per_service,
                    self.rules.clone(),
                )
                .await;
                // Parts beyond the services limit are refused now, not held.
                let max = self.max_services();
                if pending.checked.valid.len() > max {
                    let over: Vec<_> = pending
                        .checked
                        .valid
                        .drain(max..)
                        .map(|s| s.key().clone())
                        .collect();
                    pending.checked.refusals.extend(over_limit(over, max));
                }
                if snapshot.more {
                    // This part's refusals go back now; the rest waits.
                    let refusals = pending.checked.refusals[before..].to_vec();
                    self.pending = Some(pending);
                    refusals
                } else {
                    let Checked {
                        valid,
                        refusals,
                        keep,
                        names,
                        ..
                    } = pending.checked;
                    self.names = names;
                    let over = writer
                        .apply_snapshot(self.session.clone(), valid, keep)
                        .await?;
                    self.snapshot_applied = true;
                    let mut refusals = refusals.get(before..).unwrap_or_default().to_vec();
                    refusals.extend(over_limit(over, max));
                    refusals
                }
            }
            Some(Req::Delta(delta)) => {
                if self.pending.is_some() {
                    return Err(Error::OutOfOrder(
                        "a Delta came between the parts of a Snapshot",
                    ));
                }
                if !self.snapshot_applied {
                    return Err(Error::OutOfOrder(
                        "a Delta came before the stream's first Snapshot",
                    ));
                }
                let mut checked = check(
                    &self.cx.validators,
                    Checked::with_names(std::mem::take(&mut self.names)),
                    delta.upserts,
                    limits.max_endpoints_per_service,
                    self.rules.clone(),
                )
                .await;
                self.names = std::mem::take(&mut checked.names);
                let (mut gone, refused) = removals(&delta.removals, self.max_services());
                gone.append(&mut checked.disallowed);
                let mut refusals = checked.refusals;
                refusals.extend(refused);
                let upserts: Vec<ServiceExport> = checked.valid;
                let over = writer
                    .apply_delta(self.session.clone(), upserts, gone)
                    .await?;
                // Applied and published: the change answers DNS now.
                self.cx.metrics.propagated(delta.observed_unix_ms);
                refusals.extend(over_limit(over, self.max_services()));
                refusals
            }
            Some(Req::Heartbeat(_)) | None => {
                writer.heartbeat(self.session.clone()).await?;
                Vec::new()
            }
        };
        for (_, kind) in &refusals {
            self.cx.metrics.refused(kind);
        }
        self.log.note(&self.session, &refusals);
        Ok(wire::ExportResponse {
            generation: request.generation,
            refusals: summarize(refusals.into_iter().map(|(r, _)| r).collect()),
        })
    }
}

/// An authorized Hello: the cluster it names (with the client CIDRs it
/// may claim), its fleet-file rules, and the refusals of the CIDRs the
/// fleet file does not allow.
struct Hello {
    cluster: Cluster,
    rules: Option<Arc<ClusterRules>>,
    refused: Vec<String>,
}

fn check_hello(cx: &Context, who: &Principal, first: wire::ExportRequest) -> Result<Hello, Status> {
    let hello = match first.message {
        Some(Req::Hello(hello)) => hello,
        _ => return Err(Error::HelloFirst.into()),
    };
    let mut cluster = Cluster::try_from(&hello).map_err(|e| {
        warn!(error = %e, "refused hello");
        Status::from(Error::InvalidHello(e))
    })?;
    cx.auth.may_export(who, cluster.name.as_str()).inspect_err(|_| {
        warn!(cluster = %cluster.name, caller = %who, "refused hello: a cluster may only speak for itself");
    })?;
    let rules = cx.fleet.rules(&cluster.name).map_err(|reason| {
        warn!(cluster = %cluster.name, "refused hello: not in the fleet file");
        Status::from(Error::NotAllowed(reason))
    })?;
    let mut refused = Vec::new();
    if let Some(rules) = &rules {
        cluster.client_cidrs.retain(|net| {
            let ok = rules.may_claim(net);
            if !ok {
                refused.push(format!(
                    "client CIDR {net} is outside the client CIDRs the fleet file (--clusters) gives this cluster"
                ));
            }
            ok
        });
    }
    Ok(Hello {
        cluster,
        rules,
        refused,
    })
}

/// The stream's cluster no longer has the rules it opened with: what the
/// registry holds is brought under the new rules once more (a message
/// this stream applied under the old ones may have landed after the
/// reload's [`Fleet::enforce`]), and the stream ends saying why, so its
/// syncer reconnects under the new rules or is refused at Hello.
async fn rules_changed(cx: &Context, session: &Session, withdrawn: Withdrawn) -> Error {
    let fleet = &cx.fleet;
    let _ = fleet.enforce_once(&cx.writer).await;
    let path = fleet.path();
    let cluster = &session.cluster;
    match withdrawn {
        Withdrawn::Changed => Error::RulesChanged(format!(
            "the fleet file (--clusters) {path} changed the rules of cluster {cluster}; reconnect to export under the new ones"
        )),
        Withdrawn::Removed => Error::NotAllowed(format!(
            "the fleet file (--clusters) {path} no longer names cluster {cluster}, so it may not export"
        )),
    }
}

/// Holds one of `--max-pending-hellos` until dropped.
pub(super) struct Slot(Arc<std::sync::atomic::AtomicUsize>);

impl Slot {
    pub fn take(count: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The requests of one Export stream, as decoded from its body.
pub(super) trait Requests:
    tokio_stream::Stream<Item = Result<wire::ExportRequest, Status>> + Send + Unpin + 'static
{
}

impl<S> Requests for S where
    S: tokio_stream::Stream<Item = Result<wire::ExportRequest, Status>> + Send + Unpin + 'static
{
}

/// The next request; `Ok(None)` when the client has ended the stream.
async fn next(requests: &mut impl Requests) -> Result<Option<wire::ExportRequest>, Status> {
    requests.next().await.transpose()
}

/// Runs one Export stream. `pending` is its `--max-pending-hellos` slot,
/// given back once the Hello is decided; `streams` counts authorized
/// streams against `--max-export-streams`.
pub(super) async fn export_stream(
    cx: Arc<Context>,
    who: Principal,
    credential: Credential,
    pending: Slot,
    streams: Arc<std::sync::atomic::AtomicUsize>,
    mut requests: impl Requests,
    responses: mpsc::Sender<Result<wire::ExportResponse, Status>>,
) {
    let metrics = &cx.metrics;
    let first = tokio::select! {
        _ = cx.shutdown.cancelled() => return,
        first = tokio::time::timeout(cx.limits.hello_timeout, next(&mut requests)) => first,
    };
    let first = match first {
        Ok(Ok(Some(first))) => first,
        Ok(Ok(None)) => return,
        Ok(Err(status)) => {
            metrics.export_event(if status.code() == tonic::Code::DeadlineExceeded {
                "message_timeout"
            } else {
                "hello_refused"
            });
            warn!(error = %status.message(), "export stream failed before hello");
            let _ = responses.send(Err(status)).await;
            return;
        }
        Err(_) => {
            metrics.export_event("hello_timeout");
            warn!(caller = %who, "export stream closed: no Hello within --hello-timeout");
            let _ = responses
                .send(Err(Error::HelloTimeout(cx.limits.hello_timeout).into()))
                .await;
            return;
        }
    };
    let generation = first.generation;
    // Taken before the Hello reads the rules: a reload from here on is
    // seen by the loop below.
    let mut reloads = cx.fleet.reloads();
    let Hello {
        cluster,
        rules,
        mut refused,
    } = match check_hello(&cx, &who, first) {
        Ok(hello) => hello,
        Err(status) => {
            metrics.export_event("hello_refused");
            let _ = responses.send(Err(status)).await;
            return;
        }
    };
    drop(pending);
    let Some(_slot) = Slot::take(&streams, cx.limits.max_export_streams) else {
        metrics.export_event("over_limit");
        warn!(
            limit = cx.limits.max_export_streams,
            "export stream refused: --max-export-streams reached"
        );
        let _ = responses
            .send(Err(Status::resource_exhausted(format!(
                "the registry has {} export streams open, the --max-export-streams limit",
                cx.limits.max_export_streams
            ))))
            .await;
        return;
    };
    info!(cluster = %cluster.name, version = %cluster.version, cidrs = cluster.client_cidrs.len(), "export stream opened");
    metrics.export_event("opened");
    let max_services = rules
        .as_ref()
        .and_then(|r| r.max_services)
        .unwrap_or(usize::MAX)
        .min(cx.limits.max_services_per_cluster);
    let (session, overlapping) = match cx.writer.hello(cluster, max_services).await {
        Ok(opened) => opened,
        Err(e) => {
            let _ = responses.send(Err(e.into())).await;
            return;
        }
    };
    let session = Arc::new(session);
    refused.extend(overlapping);
    for reason in &refused {
        metrics.refused("client_cidr");
        warn!(cluster = %session.cluster, "{reason}");
    }
    let ack = wire::ExportResponse {
        generation,
        refusals: summarize(
            refused
                .into_iter()
                .map(|reason| wire::Refusal { key: None, reason })
                .collect(),
        ),
    };
    let _ = responses.send(Ok(ack)).await;
    let mut stream = Stream {
        cx: &cx,
        session,
        rules,
        pending: None,
        snapshot_applied: false,
        names: Interner::default(),
        log: RefusalLog {
            last: None,
            suppressed: 0,
        },
    };
    let end = loop {
        let request = tokio::select! {
            _ = stream.session.superseded.cancelled() => {
                metrics.export_event("superseded");
                break Some(Error::Superseded(stream.session.cluster.to_string()));
            }
            _ = cx.shutdown.cancelled() => break Some(Error::ShuttingDown),
            revoked = credential.revoked() => {
                metrics.stream_revoked();
                break Some(Error::Revoked(revoked));
            }
            withdrawn = cx.fleet.withdrawn(&stream.session.cluster, stream.rules.as_deref(), &mut reloads) => {
                metrics.export_event("rules_changed");
                break Some(rules_changed(&cx, &stream.session, withdrawn).await);
            }
            request = next(&mut requests) => request,
        };
        match request {
            Ok(Some(request)) => match stream.apply(request).await {
                Ok(response) => {
                    if responses.send(Ok(response)).await.is_err() {
                        break None;
                    }
                }
                Err(e) => break Some(e),
            },
            Ok(None) => break None,
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::OutOfRange | tonic::Code::ResourceExhausted
                ) =>
            {
                metrics.export_event("message_too_large");
                break Some(Error::MessageTooLarge(status.message().to_owned()));
            }
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                metrics.export_event("message_timeout");
                break Some(Error::MessageTooSlow(status.message().to_owned()));
            }
            Err(status) => {
                info!(cluster = %stream.session.cluster, error = %status.message(), "export stream broke");
                break None;
            }
        }
    };
    let session = stream.session;
    if stream.pending.is_some() {
        info!(cluster = %session.cluster, "export stream ended between the parts of a Snapshot; none of it was applied");
    }
    cx.writer.disconnect(session.clone()).await;
    metrics.export_event("closed");
    match end {
        Some(e) => {
            warn!(cluster = %session.cluster, error = %e, "export stream closed by the registry");
            let _ = responses.send(Err(e.into())).await;
        }
        None => info!(cluster = %session.cluster, "export stream closed"),
    }
}
