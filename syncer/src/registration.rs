//! VM self-registration (`--registration-listen`): instances register
//! themselves over HTTP/JSON with a TTL and heartbeat to stay; their
//! endpoints join the source's export set ([`merge`]).
//!
//! - [`api`]: the HTTP routes; [`error`]: their JSON errors.
//! - [`body`]: a registration's JSON and its validation.
//! - [`bounds`]: the hub's bounds (address ranges, endpoints and zones
//!   per service) applied at `PUT`.
//! - [`tokens`]: the scoped bearer token file, re-read when it changes.
//! - [`rate_limit`]: per-client token buckets (an IPv6 client is its /64).
//! - [`store`]: the live registrations, limits, deadlines.
//! - [`state_file`]: the registrations across restarts.
//! - [`merge`]: registrations + the source's set = what is exported.

pub mod api;
pub mod body;
pub mod bounds;
pub mod error;
pub mod merge;
pub mod rate_limit;
pub mod state_file;
pub mod store;
pub mod tokens;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use meshdns_cli::connections::{self, Bounded, Peer};
use meshdns_proto::model::{ExportSet, Hostname, Namespace, ServiceKey, ServiceName};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::health::EndpointChecks;
use crate::metrics::Metrics;
use crate::source::Exports;
use body::TtlBounds;
use store::{InstanceKey, Limits, Store};
use tokens::TokenTable;

/// The registration source's settings (from the `--registration-*` flags).
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub state_file: Option<PathBuf>,
    pub ttl: TtlBounds,
    pub limits: Limits,
    pub bounds: bounds::Bounds,
    /// Requests a second per client address, and the burst.
    pub rate: u32,
    pub burst: u32,
    /// How often lapsed registrations are withdrawn.
    pub sweep_interval: Duration,
}

/// A running registration source.
#[derive(Debug, Clone)]
pub struct Registrations {
    pub store: Arc<Store>,
    pub listen: SocketAddr,
    /// Instances that could not join the export set, and why.
    pub problems: Arc<Mutex<Vec<String>>>,
    pub tokens: Arc<RwLock<TokenTable>>,
    /// The registered instances' own health checks (per endpoint).
    checks: watch::Sender<Arc<EndpointChecks>>,
    /// The source's latest set, which `PUT` checks a registration against.
    pub source: Arc<RwLock<Option<Arc<ExportSet>>>>,
    /// The state file writer, which writes once more at shutdown.
    writer: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl Registrations {
    /// The instances' own checks, for the health checker.
    pub fn checks(&self) -> watch::Receiver<Arc<EndpointChecks>> {
        self.checks.subscribe()
    }

    /// Waits for the state file's last write (after shutdown).
    pub async fn flushed(&self) {
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }
}

fn config_error(field: &str, problem: impl std::fmt::Display) -> Error {
    Error::Config {
        field: field.into(),
        problem: problem.to_string(),
    }
}

/// Loads the tokens and the state file, listens, and runs the API, the
/// sweeper, the token reloader and the state writer until `shutdown`.
pub async fn start(
    config: RegistrationConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<Registrations, Error> {
    start_weighted(
        config,
        meshdns_proto::model::DEFAULT_WEIGHT,
        metrics,
        shutdown,
    )
    .await
}

/// [`start`], with `weight` (`--weight`) for the instances that give no
/// weight of their own.
pub async fn start_weighted(
    config: RegistrationConfig,
    weight: u32,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<Registrations, Error> {
    let (table, mut token_bytes) = TokenTable::read(&config.token_file)
        .map_err(|e| config_error("--registration-token-file", e))?;
    if table.is_empty() {
        tracing::warn!("--registration-token-file lists no token: every registration is refused");
    }
    let tokens = Arc::new(RwLock::new(table));
    let source = Arc::new(RwLock::new(None));
    let store = Arc::new(Store::new(config.limits));
    if let Some(path) = &config.state_file {
        let saved = match state_file::load(path) {
            Ok(saved) => saved,
            // A corrupt or newer file must not stop the syncer: it is
            // moved aside (for the operator) and the syncer starts empty;
            // the VMs' next re-register restores them.
            Err(e @ state_file::StateFileError::Parse { .. }) => {
                let aside = path.with_extension(format!(
                    "unreadable-{}",
                    state_file::to_unix_ms(SystemTime::now())
                ));
                let moved = std::fs::rename(path, &aside);
                tracing::error!(
                    error = %e,
                    moved_to = %aside.display(),
                    moved = moved.is_ok(),
                    "--registration-state-file unreadable: starting with no registrations"
                );
                state_file::Saved {
                    version: state_file::VERSION,
                    registrations: Vec::new(),
                }
            }
            Err(e) => return Err(config_error("--registration-state-file", e)),
        };
        let now = SystemTime::now();
        let mut lapsed = 0;
        for saved in saved.registrations {
            // A deadline past now + the longest TTL (a clock step, an
            // edited file) is clamped to it.
            let deadline =
                state_file::from_unix_ms(saved.deadline_unix_ms).min(now + config.ttl.max);
            if deadline <= now {
                lapsed += 1;
                continue;
            }
            let restored = (|| {
                let service = ServiceKey {
                    namespace: Namespace::new(&saved.namespace).map_err(|e| e.to_string())?,
                    name: ServiceName::new(&saved.service).map_err(|e| e.to_string())?,
                };
                let instance = Hostname::new(&saved.instance).map_err(|e| e.to_string())?;
                let registration = body::Registration {
                    owner: saved.owner.clone(),
                    ..saved
                        .registration
                        .validate(&service, config.ttl, weight)
                        .map_err(|e| e.to_string())?
                };
                config
                    .bounds
                    .address(&registration)
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((InstanceKey { service, instance }, registration))
            })();
            match restored {
                Ok((key, registration)) => store.restore(key, registration, deadline),
                Err(e) => tracing::warn!(
                    instance = %format!("{}/{}/{}", saved.namespace, saved.service, saved.instance),
                    error = %e,
                    "saved registration no longer valid; dropped"
                ),
            }
        }
        metrics.vms.lapsed(lapsed);
        tracing::info!(restored = store.len(), lapsed, "registration state loaded");
    }
    metrics.vms.set_registrations(store.len());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            config_error(
                "--registration-listen",
                format!("cannot listen on {}: {e}", config.listen),
            )
        })?;
    let listen = listener.local_addr().unwrap_or(config.listen);
    tracing::info!(addr = %listen, "registration API listening");
    let api = api::Api {
        store: store.clone(),
        tokens: tokens.clone(),
        rate_limit: Arc::new(rate_limit::RateLimit::new(
            config.rate,
            config.burst,
            rate_limit::MAX_CLIENTS,
        )),
        token_rate_limit: Arc::new(rate_limit::RateLimit::new(
            config.rate.saturating_mul(4),
            config.burst.saturating_mul(4),
            rate_limit::MAX_CLIENTS,
        )),
        ttl: config.ttl,
        weight,
        bounds: config.bounds.clone(),
        source: source.clone(),
        metrics: metrics.clone(),
    };
    let app = api::router(api).into_make_service_with_connect_info::<Peer>();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let _ = axum::serve(
            Bounded::new(listener, connections::Limits::API, "registration API"),
            app,
        )
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    });
    // Token file: re-read when its content changes; a bad edit keeps the
    // last good table (and says so).
    let (path, reload, stop) = (config.token_file.clone(), tokens.clone(), shutdown.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let bytes = match tokio::fs::read(&path).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    // Deleted or unreadable: the last good tokens stay
                    // (logged once, when it first fails).
                    if !token_bytes.is_empty() {
                        tracing::error!(error = %e, "--registration-token-file unreadable; the last good tokens stay");
                        token_bytes.clear();
                    }
                    continue;
                }
            };
            if bytes == token_bytes {
                continue;
            }
            match TokenTable::parse(&bytes) {
                Ok(table) if table.is_empty() => tracing::error!(
                    "--registration-token-file lists no token: not reloaded; the last good tokens stay"
                ),
                Ok(table) => {
                    tracing::info!(tokens = table.len(), "registration token file reloaded");
                    *reload.write().unwrap_or_else(|e| e.into_inner()) = table;
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "--registration-token-file: not reloaded; the last good tokens stay"
                ),
            }
            token_bytes = bytes;
        }
    });
    // Sweeper: lapsed registrations leave within one interval.
    let (sweeper, stop, sweep_metrics) = (store.clone(), shutdown.clone(), metrics.clone());
    let interval = config.sweep_interval;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let lapsed = sweeper.sweep(SystemTime::now());
            if lapsed > 0 {
                tracing::info!(lapsed, "registrations lapsed without a heartbeat");
                sweep_metrics.vms.lapsed(lapsed);
                sweep_metrics.vms.set_registrations(sweeper.len());
            }
        }
    });
    let writer = config
        .state_file
        .clone()
        .map(|path| tokio::spawn(write_state(store.clone(), path, shutdown)));
    Ok(Registrations {
        store,
        listen,
        problems: Arc::new(Mutex::new(Vec::new())),
        tokens,
        checks: watch::Sender::new(Arc::new(EndpointChecks::new())),
        source,
        writer: Arc::new(Mutex::new(writer)),
    })
}

/// Most one state file write a second: a heartbeat storm is one write.
const STATE_WRITE_SPACING: Duration = Duration::from_secs(1);

fn saved(store: &Store) -> state_file::Saved {
    state_file::Saved {
        version: state_file::VERSION,
        registrations: store
            .list(|_| true)
            .into_iter()
            .map(
                |(key, registration, deadline)| state_file::SavedRegistration {
                    namespace: key.service.namespace.to_string(),
                    service: key.service.name.to_string(),
                    instance: key.instance.to_string(),
                    deadline_unix_ms: state_file::to_unix_ms(deadline),
                    registration: registration.body.clone(),
                    owner: registration.owner.clone(),
                },
            )
            .collect(),
    }
}

async fn write_state(store: Arc<Store>, path: PathBuf, shutdown: CancellationToken) {
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = store.changed() => false,
        };
        let state = saved(&store);
        let target = path.clone();
        match tokio::task::spawn_blocking(move || state_file::save(&target, &state)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "--registration-state-file not written"),
            Err(e) => tracing::error!(error = %e, "state file writer failed"),
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(STATE_WRITE_SPACING) => {}
        }
    }
}

/// The source's export set with the registrations merged in, republished
/// whenever either changes. `None` until the source has a first state.
pub fn merged(
    mut source: Exports,
    registrations: &Registrations,
    shutdown: CancellationToken,
) -> Exports {
    let mut live = registrations.store.subscribe();
    let problems = registrations.problems.clone();
    let (checks, seen) = (registrations.checks.clone(), registrations.source.clone());
    let (tx, rx) = watch::channel(None);
    tokio::spawn(async move {
        let mut logged = Vec::new();
        loop {
            let set = source.borrow_and_update().clone();
            *seen.write().unwrap_or_else(|e| e.into_inner()) = set.clone();
            let current = live.borrow_and_update().clone();
            let out = set.map(|set| {
                if current.is_empty() {
                    problems.lock().unwrap_or_else(|e| e.into_inner()).clear();
                    checks.send_if_modified(|c| {
                        let had = !c.is_empty();
                        *c = Arc::new(EndpointChecks::new());
                        had
                    });
                    return set;
                }
                let (merged, found_checks, found) = merge::merge(&set, &current);
                // Logged once per distinct problem list, not per change.
                if found != logged {
                    for line in &found {
                        tracing::warn!(problem = %line, "registration not merged as registered");
                    }
                    logged = found.clone();
                }
                *problems.lock().unwrap_or_else(|e| e.into_inner()) = found;
                // The checks go out before the set they belong to, so a
                // new instance is never published without its check.
                checks.send_if_modified(|c| {
                    if **c == found_checks {
                        false
                    } else {
                        *c = Arc::new(found_checks);
                        true
                    }
                });
                Arc::new(merged)
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
                r = source.changed() => if r.is_err() { return },
                r = live.changed() => if r.is_err() { return },
            }
        }
    });
    rx
}
