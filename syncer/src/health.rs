//! Health checks beyond readiness: the syncer probes its own exported
//! endpoints of every service that declares a check (annotation
//! `meshdns.io/health-check`, the file source's `healthCheck`, or a
//! registration's `health_check`) and exports an endpoint that fails as
//! not ready, with the reason ([`Health`]) for the hub to show.
//!
//! - Targets are only exported endpoints: the first address of each
//!   endpoint, with the check's port, which must be one of the service's
//!   TCP ports ([`ServiceExport::with_health_check`]). There is no
//!   free-form host: the checker is no proxy.
//! - Each target runs on its own timer (first check at a random point of
//!   the interval, then every interval ±10%), under a global concurrency
//!   bound (`--health-check-concurrency`); at most `--max-health-checks`
//!   targets are checked, the rest left unchecked and reported.
//! - [`verdict`]: rise/fall thresholds; [`probe`]: one attempt.
//!
//! [`ServiceExport::with_health_check`]: meshdns_proto::model::ServiceExport::with_health_check

pub mod probe;
pub mod verdict;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

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
    /// `--health-check-dial ENDPOINT=DIAL`: the operator's map of how to
    /// reach an exported endpoint when not at its own address (a NAT; in
    /// the demo and tests, a loopback listener standing in for a VM).
    pub dial: HashMap<IpAddr, IpAddr>,
}

/// One endpoint under one service's check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TargetKey {
    service: ServiceKey,
    target: SocketAddr,
    check: Arc<HealthCheck>,
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

    fn health(&self, service: &ServiceKey, check: &Arc<HealthCheck>, target: SocketAddr) -> Health {
        let key = TargetKey {
            service: service.clone(),
            target,
            check: check.clone(),
        };
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
                    "dialled": self.config.dial.get(&key.target.ip()).map(|ip| SocketAddr::new(*ip, key.target.port()).to_string()),
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

/// The targets `set` asks for, in a stable order.
fn wanted(set: &ExportSet) -> Vec<TargetKey> {
    let mut out = Vec::new();
    for (key, export) in &set.services {
        let Some(check) = export.health_check() else {
            continue;
        };
        let CheckPort::Number(port) = check.port() else {
            continue;
        };
        for endpoint in export.endpoints() {
            if let Some(address) = endpoint.addresses.first() {
                out.push(TargetKey {
                    service: key.clone(),
                    target: SocketAddr::new(*address, port.get()),
                    check: check.clone(),
                });
            }
        }
    }
    out
}

/// Starts and stops target tasks so exactly `set`'s targets (up to the
/// limit) run.
fn reconcile(checker: &Arc<Checker>, set: Option<&ExportSet>, shutdown: &CancellationToken) {
    let mut wanted = set.map(wanted).unwrap_or_default();
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
        let dial = match checker.config.dial.get(&key.target.ip()) {
            Some(ip) => SocketAddr::new(*ip, key.target.port()),
            None => key.target,
        };
        tokio::spawn(run_target(checker.clone(), key, dial, cancel));
    }
    let running = targets.running.len();
    drop(targets);
    checker.in_use.store(running, Ordering::Relaxed);
    checker.metrics.vms.set_targets(running, over);
}

async fn run_target(
    checker: Arc<Checker>,
    key: TargetKey,
    dial: SocketAddr,
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
        let result = {
            let Ok(_permit) = checker.permits.acquire().await else {
                return;
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
        if flipped {
            state.flaps += 1;
            let up = state.verdict.up();
            drop(targets);
            tracing::info!(service = %key.service, target = %key.target, up, "health check verdict changed");
            checker.metrics.vms.flapped();
            checker.flipped.notify_one();
        }
        // ±10% so targets that started together drift apart.
        delay = check.interval.mul_f64(0.9 + 0.2 * fastrand::f64());
    }
}

/// `set` with each checked endpoint's verdict applied.
fn apply(checker: &Checker, set: &ExportSet) -> ExportSet {
    let mut out = set.clone();
    for (key, export) in &set.services {
        let Some(check) = export.health_check() else {
            continue;
        };
        let CheckPort::Number(port) = check.port() else {
            continue;
        };
        let checked = export.with_endpoint_health(|endpoint| match endpoint.addresses.first() {
            Some(address) => checker.health(key, check, SocketAddr::new(*address, port.get())),
            None => Health::Unchecked,
        });
        out.services.insert(key.clone(), Arc::new(checked));
    }
    out
}

/// Parses one `--health-check-dial` value, `ENDPOINT=DIAL`.
pub fn parse_dial(value: &str) -> Result<(IpAddr, IpAddr), String> {
    let (from, to) = value
        .split_once('=')
        .ok_or_else(|| format!("{value:?}: want ENDPOINT_IP=DIAL_IP"))?;
    let ip = |text: &str| {
        text.trim()
            .parse::<IpAddr>()
            .map_err(|_| format!("{text:?} is not an IP address"))
    };
    Ok((ip(from)?, ip(to)?))
}

/// Runs the checks `input`'s services declare; the returned channel is
/// `input` with failing endpoints made unready.
pub fn start(
    mut input: Exports,
    config: HealthConfig,
    metrics: Arc<Metrics>,
    in_use: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) -> (Exports, Arc<Checker>) {
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
        let checker = task_checker;
        loop {
            let set = input.borrow_and_update().clone();
            reconcile(&checker, set.as_deref(), &shutdown);
            loop {
                // Without a checked service the source's set passes as is.
                let out = set.as_ref().map(|s| {
                    if s.services.values().any(|e| e.health_check().is_some()) {
                        Arc::new(apply(&checker, s))
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
                    _ = checker.flipped.notified() => {}
                }
            }
        }
    });
    (rx, checker)
}
