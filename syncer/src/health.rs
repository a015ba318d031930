//! Health checks beyond readiness: the syncer probes its own exported
//! endpoints of every service that declares a check (annotation
//! `meshdns.io/health-check`, the file source's `healthCheck`, or a
//! registration's `health_check`) and exports an endpoint that fails as
//! not ready, with the reason ([`Health`]) for the hub to show.
//!
//! - Targets are only exported endpoints: the first address of each
//!   endpoint, with the check's port. A service's own check (annotation,
//!   file source) names one of the service's TCP ports
//!   ([`ServiceExport::with_health_check`]) and applies to its endpoints;
//!   a registration's check ([`EndpointChecks`]) applies to that
//!   registration's endpoint only, never to the source's pods. There is
//!   no free-form host; what a registrant can make the checker connect to
//!   is bounded by `--registration-cidrs` (SECURITY.md).
//! - Each target runs on its own timer (first check at a random point of
//!   the interval, then every interval ±10%), under a global concurrency
//!   bound (`--health-check-concurrency`) of which one service may hold at
//!   most a quarter ([`per_service_permits`]); a check that cannot get a
//!   permit within its timeout is skipped (counted, verdict unchanged).
//!   At most `--max-health-checks` targets are checked, the rest left
//!   unchecked and reported.
//! - [`verdict`]: rise/fall thresholds; [`probe`]: one attempt.
//!
//! [`ServiceExport::with_health_check`]: meshdns_proto::model::ServiceExport::with_health_check

pub mod probe;
pub mod verdict;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use meshdns_proto::model::health_check::CheckPort;
use meshdns_proto::model::{ExportSet, Health, HealthCheck, ServiceKey};
use serde_json::json;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::source::Exports;
use verdict::Verdict;

/// The checker's bounds (`--max-health-checks`, `--health-check-concurrency`).
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub max_checks: usize,
    pub concurrency: usize,
    /// `--health-check-dial`: the operator's map of how to reach an
    /// exported endpoint when not at its own address (a NAT; in the demo
    /// and tests, a loopback listener standing in for a VM).
    pub dial: Dial,
}

/// One `--health-check-dial` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialEntry {
    /// `ENDPOINT_IP=DIAL_IP`: every port of a source endpoint (never a
    /// registered one: a registrant could otherwise reach the dial
    /// target's other ports).
    Ip(IpAddr, IpAddr),
    /// `ENDPOINT_IP:PORT=DIAL_IP:PORT`: that one port, of any endpoint.
    Socket(SocketAddr, SocketAddr),
}

/// The `--health-check-dial` map.
#[derive(Debug, Clone, Default)]
pub struct Dial {
    by_ip: HashMap<IpAddr, IpAddr>,
    by_socket: HashMap<SocketAddr, SocketAddr>,
}

impl FromIterator<DialEntry> for Dial {
    fn from_iter<I: IntoIterator<Item = DialEntry>>(entries: I) -> Self {
        let mut dial = Dial::default();
        for entry in entries {
            match entry {
                DialEntry::Ip(from, to) => dial.by_ip.insert(from, to).map(|_| ()),
                DialEntry::Socket(from, to) => dial.by_socket.insert(from, to).map(|_| ()),
            };
        }
        dial
    }
}

impl Dial {
    /// Where to connect for `target`; `registered` targets only follow
    /// `IP:PORT` entries.
    pub fn route(&self, target: SocketAddr, registered: bool) -> SocketAddr {
        if let Some(to) = self.by_socket.get(&target) {
            return *to;
        }
        match self.by_ip.get(&target.ip()) {
            Some(ip) if !registered => SocketAddr::new(*ip, target.port()),
            _ => target,
        }
    }
}

/// Registered instances' own checks: service → the instance's first
/// address → its check (port resolved). They apply to those endpoints
/// only; the service's own check (if any) applies to the rest.
pub type EndpointChecks = HashMap<ServiceKey, HashMap<IpAddr, Arc<HealthCheck>>>;

/// Most permits of `--health-check-concurrency` one service's checks hold
/// at once: a quarter (at least one), so one service's slow targets leave
/// the others three quarters.
pub fn per_service_permits(concurrency: usize) -> usize {
    (concurrency / 4).max(1)
}

/// One endpoint under one service's check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TargetKey {
    service: ServiceKey,
    target: SocketAddr,
    check: Arc<HealthCheck>,
    /// A registered instance's own check (not the service's).
    registered: bool,
}

#[derive(Debug)]
struct TargetState {
    verdict: Verdict,
    detail: Option<String>,
    checks: u64,
    failures: u64,
    flaps: u64,
    cancel: CancellationToken,
}

#[derive(Debug, Default)]
struct Targets {
    running: HashMap<TargetKey, TargetState>,
    /// Each checked service's share of the permits.
    shares: HashMap<ServiceKey, Arc<Semaphore>>,
    /// Endpoints of checked services over `--max-health-checks`.
    unchecked: usize,
}

/// The running checker; its [`Checker::json`] is the syncer's `/status`.
#[derive(Debug)]
pub struct Checker {
    targets: Mutex<Targets>,
    flipped: Notify,
    permits: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    config: HealthConfig,
    /// How many targets run now (the registration API reads it).
    pub in_use: Arc<AtomicUsize>,
}

impl Checker {
    fn lock(&self) -> MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn health(&self, key: TargetKey) -> Health {
        self.lock()
            .running
            .get(&key)
            .map(|t| t.verdict.health())
            .unwrap_or_default()
    }

    /// Every target with its verdict and counts, for `/status`.
    pub fn json(&self) -> serde_json::Value {
        let targets = self.lock();
        let mut list: Vec<_> = targets
            .running
            .iter()
            .map(|(key, state)| {
                json!({
                    "service": key.service.to_string(),
                    "target": key.target.to_string(),
                    "dialled": Some(self.config.dial.route(key.target, key.registered)).filter(|d| *d != key.target).map(|d| d.to_string()),
                    "registered": key.registered,
                    "check": key.check.to_string(),
                    "health": state.verdict.health().as_str(),
                    "in_answers": state.verdict.up(),
                    "last_failure": state.detail,
                    "checks": state.checks,
                    "failures": state.failures,
                    "flaps": state.flaps,
                })
            })
            .collect();
        list.sort_by(|a, b| {
            (a["service"].as_str(), a["target"].as_str())
                .cmp(&(b["service"].as_str(), b["target"].as_str()))
        });
        json!({
            "max_checks": self.config.max_checks,
            "checked": targets.running.len(),
            "unchecked_over_limit": targets.unchecked,
            "targets": list,
        })
    }
}

/// The target checking `address` of `service`, if any: the registered
/// instance's own check, else the service's.
fn target_of(
    service: &ServiceKey,
    own: Option<&Arc<HealthCheck>>,
    registered: &EndpointChecks,
    address: IpAddr,
) -> Option<TargetKey> {
    let mine = registered.get(service).and_then(|m| m.get(&address));
    let check = mine.or(own)?;
    let CheckPort::Number(port) = check.port() else {
        return None;
    };
    Some(TargetKey {
        service: service.clone(),
        target: SocketAddr::new(address, port.get()),
        check: check.clone(),
        registered: mine.is_some(),
    })
}

/// The targets `set` asks for, in a stable order.
fn wanted(set: &ExportSet, registered: &EndpointChecks) -> Vec<TargetKey> {
    let mut out = Vec::new();
    for (key, export) in &set.services {
        if export.health_check().is_none() && !registered.contains_key(key) {
            continue;
        }
        for endpoint in export.endpoints() {
            if let Some(address) = endpoint.addresses.first()
                && let Some(target) = target_of(key, export.health_check(), registered, *address)
            {
                out.push(target);
            }
        }
    }
    out
}

/// Starts and stops target tasks so exactly `set`'s targets (up to the
/// limit) run.
fn reconcile(
    checker: &Arc<Checker>,
    set: Option<&ExportSet>,
    registered: &EndpointChecks,
    shutdown: &CancellationToken,
) {
    let mut wanted = set.map(|s| wanted(s, registered)).unwrap_or_default();
    let over = wanted.len().saturating_sub(checker.config.max_checks);
    if over > 0 {
        tracing::warn!(
            unchecked = over,
            limit = checker.config.max_checks,
            "--max-health-checks reached: some endpoints are not checked"
        );
    }
    wanted.truncate(checker.config.max_checks);
    let mut targets = checker.lock();
    targets.unchecked = over;
    let keep: std::collections::HashSet<&TargetKey> = wanted.iter().collect();
    targets.running.retain(|key, state| {
        let stays = keep.contains(key);
        if !stays {
            state.cancel.cancel();
        }
        stays
    });
    let services: std::collections::HashSet<&ServiceKey> =
        wanted.iter().map(|k| &k.service).collect();
    let mut shares = std::mem::take(&mut targets.shares);
    shares.retain(|service, _| services.contains(service));
    let share = per_service_permits(checker.config.concurrency);
    for key in wanted {
        if targets.running.contains_key(&key) {
            continue;
        }
        let cancel = shutdown.child_token();
        targets.running.insert(
            key.clone(),
            TargetState {
                verdict: Verdict::default(),
                detail: None,
                checks: 0,
                failures: 0,
                flaps: 0,
                cancel: cancel.clone(),
            },
        );
        let dial = checker.config.dial.route(key.target, key.registered);
        let permits = shares
            .entry(key.service.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(share)))
            .clone();
        tokio::spawn(run_target(checker.clone(), key, dial, permits, cancel));
    }
    targets.shares = shares;
    let running = targets.running.len();
    drop(targets);
    checker.in_use.store(running, Ordering::Relaxed);
    checker.metrics.vms.set_targets(running, over);
}

async fn run_target(
    checker: Arc<Checker>,
    key: TargetKey,
    dial: SocketAddr,
    share: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    let check = key.check.clone();
    // Spread the first checks over one interval.
    let mut delay = check.interval.mul_f64(fastrand::f64());
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        // ±10% so targets that started together drift apart.
        let next = check.interval.mul_f64(0.9 + 0.2 * fastrand::f64());
        let result = {
            // The service's share, then a global permit, each within the
            // check's timeout: a slow service waits for itself, and a
            // check that cannot start in time is skipped, not queued.
            let permits = async {
                let mine = share.clone().acquire_owned().await.ok()?;
                let global = checker.permits.clone().acquire_owned().await.ok()?;
                Some((mine, global))
            };
            let permits = tokio::select! {
                _ = cancel.cancelled() => return,
                p = tokio::time::timeout(permit_deadline(&check), permits) => p,
            };
            let Ok(Some(_permits)) = permits else {
                checker.metrics.vms.check_ran(false);
                tracing::debug!(service = %key.service, target = %key.target, "no check permit in time; check skipped");
                delay = next;
                continue;
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = probe::run(&check.probe, dial, check.timeout) => r,
            }
        };
        checker.metrics.vms.check_ran(result.is_ok());
        let mut targets = checker.lock();
        let Some(state) = targets.running.get_mut(&key) else {
            return;
        };
        let before = state.verdict.health();
        state.checks += 1;
        if let Err(failed) = &result {
            state.failures += 1;
            state.detail = Some(failed.detail.clone());
        }
        let flipped = state.verdict.record(
            result.as_ref().map(|_| ()).map_err(|f| f.failure),
            check.rise,
            check.fall,
        );
        // Any change of what the endpoint carries (unchecked → passing, a
        // new failure reason) is republished, not only a flip.
        let changed = state.verdict.health() != before;
        if flipped {
            state.flaps += 1;
        }
        let up = state.verdict.up();
        drop(targets);
        if flipped {
            tracing::info!(service = %key.service, target = %key.target, up, "health check verdict changed");
            checker.metrics.vms.flapped();
        }
        if changed {
            checker.flipped.notify_one();
        }
        delay = next;
    }
}

/// How long a check waits for its permits: its timeout (≤ 10s).
fn permit_deadline(check: &HealthCheck) -> Duration {
    check.timeout
}

/// `set` with each checked endpoint's verdict applied.
fn apply(checker: &Checker, set: &ExportSet, registered: &EndpointChecks) -> ExportSet {
    let mut out = set.clone();
    for (key, export) in &set.services {
        if export.health_check().is_none() && !registered.contains_key(key) {
            continue;
        }
        let checked = export.with_endpoint_health(|endpoint| {
            endpoint
                .addresses
                .first()
                .and_then(|a| target_of(key, export.health_check(), registered, *a))
                .map(|target| checker.health(target))
                .unwrap_or(Health::Unchecked)
        });
        out.services.insert(key.clone(), Arc::new(checked));
    }
    out
}

/// Parses one `--health-check-dial` value, `ENDPOINT_IP=DIAL_IP` or
/// `ENDPOINT_IP:PORT=DIAL_IP:PORT`.
pub fn parse_dial(value: &str) -> Result<DialEntry, String> {
    let (from, to) = value.split_once('=').ok_or_else(|| {
        format!("{value:?}: want ENDPOINT_IP=DIAL_IP or ENDPOINT_IP:PORT=DIAL_IP:PORT")
    })?;
    let (from, to) = (from.trim(), to.trim());
    if let (Ok(from), Ok(to)) = (from.parse::<IpAddr>(), to.parse::<IpAddr>()) {
        return Ok(DialEntry::Ip(from, to));
    }
    let socket = |text: &str| {
        text.parse::<SocketAddr>()
            .map_err(|_| format!("{text:?} is not an IP address or IP:PORT (both sides alike)"))
    };
    Ok(DialEntry::Socket(socket(from)?, socket(to)?))
}

/// Runs the checks `input`'s services declare; the returned channel is
/// `input` with failing endpoints made unready.
pub fn start(
    mut input: Exports,
    registered: Option<watch::Receiver<Arc<EndpointChecks>>>,
    config: HealthConfig,
    metrics: Arc<Metrics>,
    in_use: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) -> (Exports, Arc<Checker>) {
    // Without registrations, an empty map whose sender lives as long as
    // the checker (so `changed` never ends the loop).
    let (none, empty) = watch::channel(Arc::new(EndpointChecks::new()));
    let mut registered = registered.unwrap_or(empty);
    let checker = Arc::new(Checker {
        targets: Mutex::new(Targets::default()),
        flipped: Notify::new(),
        permits: Arc::new(Semaphore::new(config.concurrency.max(1))),
        metrics,
        config,
        in_use,
    });
    let (tx, rx) = watch::channel(None);
    let task_checker = checker.clone();
    tokio::spawn(async move {
        let _none = none;
        let checker = task_checker;
        loop {
            let set = input.borrow_and_update().clone();
            let mine = registered.borrow_and_update().clone();
            reconcile(&checker, set.as_deref(), &mine, &shutdown);
            loop {
                // Without a checked service the source's set passes as is.
                let out = set.as_ref().map(|s| {
                    if !mine.is_empty() || s.services.values().any(|e| e.health_check().is_some()) {
                        Arc::new(apply(&checker, s, &mine))
                    } else {
                        s.clone()
                    }
                });
                tx.send_if_modified(|old| {
                    if *old == out {
                        false
                    } else {
                        *old = out;
                        true
                    }
                });
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = input.changed() => {
                        if r.is_err() {
                            return;
                        }
                        break;
                    }
                    r = registered.changed() => {
                        if r.is_err() {
                            return;
                        }
                        break;
                    }
                    _ = checker.flipped.notified() => {}
                }
            }
        }
    });
    (rx, checker)
}
