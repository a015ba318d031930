//! The policy file followed: read at start, re-read when its content
//! changes (polled each second, like `--clusters` and `--token-file`: a
//! ConfigMap's atomic symlink swap and an editor's rename both show as new
//! content). A file that does not read or validate keeps the policy in
//! force; every outcome is logged once and counted
//! (`meshdns_policy_reloads_total{result}`), and every applied change is
//! logged as what changed (`cluster east-1 drain 0% → 50%`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::model::FleetPolicy;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::diff;
use super::file::{PolicyFileError, parse};
use crate::metrics::Metrics;
use crate::registry::{Registry, Writer};

/// Most change lines logged for one reload; the rest are counted.
const MAX_LOGGED_CHANGES: usize = 64;

/// Reads and validates the file at `path`.
pub fn read(path: &Path) -> Result<(Vec<u8>, FleetPolicy), PolicyFileError> {
    let bytes = std::fs::read(path).map_err(PolicyFileError::Read)?;
    let policy = parse(&bytes)?;
    Ok((bytes, policy))
}

/// Logs every change from `old` to `new` (bounded), and says when there
/// was none.
pub fn log_changes(path: &Path, old: &FleetPolicy, new: &FleetPolicy) {
    let changes = diff::changes(old, new);
    if changes.is_empty() {
        info!(path = %path.display(), "policy file re-read: nothing changed");
        return;
    }
    for change in changes.iter().take(MAX_LOGGED_CHANGES) {
        info!(path = %path.display(), %change, "policy changed");
    }
    if changes.len() > MAX_LOGGED_CHANGES {
        info!(path = %path.display(), more = changes.len() - MAX_LOGGED_CHANGES, "policy changed in more ways than logged");
    }
}

/// What start-up made of the file: the bytes it read (so the follower
/// does not apply them twice) and the policy to install, if any.
#[derive(Debug)]
pub struct AtStart {
    pub last: Option<Vec<u8>>,
    pub policy: Option<FleetPolicy>,
    /// The error already reported and counted, so the follower does not
    /// count the same one again.
    pub failing: Option<String>,
}

/// Reads the file at start. A file that does not read or validate is an
/// error naming it, unless a policy was restored from the state file: then
/// that one stays in force (a hub restarted while its policy's ConfigMap
/// is missing answers as before) and the error is logged and counted.
pub fn at_start(
    path: &Path,
    restored: bool,
    metrics: &Metrics,
) -> Result<AtStart, PolicyFileError> {
    match read(path) {
        Ok((bytes, policy)) => {
            metrics.policy.reloaded(true);
            info!(
                path = %path.display(),
                clusters = policy.clusters.len(),
                services = policy.services.len(),
                regions = policy.regions.len(),
                "policy file loaded"
            );
            Ok(AtStart {
                last: Some(bytes),
                policy: Some(policy),
                failing: None,
            })
        }
        Err(e) if restored => {
            metrics.policy.reloaded(false);
            warn!(path = %path.display(), error = %e, "policy file not taken; keeping the policy restored from the state file");
            Ok(AtStart {
                last: None,
                policy: None,
                failing: Some(e.to_string()),
            })
        }
        Err(e) => Err(e),
    }
}

/// Re-reads `path` each second until `shutdown`, installing each new
/// valid policy through `writer`, from where start-up left off.
pub async fn follow(
    path: PathBuf,
    registry: Arc<Registry>,
    writer: Writer,
    metrics: Arc<Metrics>,
    start: AtStart,
    shutdown: CancellationToken,
) {
    let mut last = start.last;
    // The last failure reported, so a file that stays bad is logged and
    // counted once, not every second.
    let mut failing = start.failing;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                let e = PolicyFileError::Read(e).to_string();
                if failing.as_ref() != Some(&e) {
                    metrics.policy.reloaded(false);
                    warn!(path = %path.display(), error = %e, "policy file not taken; keeping the policy in force");
                    failing = Some(e);
                }
                // Whatever comes back is read afresh.
                last = None;
                continue;
            }
        };
        if last.as_ref() == Some(&bytes) {
            continue;
        }
        let parsed = parse(&bytes);
        last = Some(bytes);
        match parsed {
            Ok(policy) => {
                failing = None;
                let old = registry.policy();
                log_changes(&path, &old, &policy);
                writer.set_policy(Arc::new(policy)).await;
                metrics.policy.reloaded(true);
            }
            Err(e) => {
                let e = e.to_string();
                metrics.policy.reloaded(false);
                warn!(path = %path.display(), error = %e, "policy file rejected; keeping the policy in force");
                failing = Some(e);
            }
        }
    }
}
