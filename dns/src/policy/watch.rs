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
use tracing::{error, info, warn};

use super::diff;
use super::file::{PolicyFileError, parse, read_bounded};
use crate::metrics::Metrics;
use crate::registry::{Registry, Writer};

/// Most change lines logged for one reload; the rest are counted.
const MAX_LOGGED_CHANGES: usize = 64;

/// Reads (bounded, regular files only) and validates the file at `path`.
pub fn read(path: &Path) -> Result<(Vec<u8>, FleetPolicy), PolicyFileError> {
    let bytes = read_bounded(path)?;
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

/// Reads the file at start. A file that does not read or validate never
/// stops the server (a crash loop would read the same file again): the
/// policy restored from the state file stays in force, or none, and the
/// error is logged and counted once.
pub fn at_start(path: &Path, restored: bool, metrics: &Metrics) -> AtStart {
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
            AtStart {
                last: Some(bytes),
                policy: Some(policy),
                failing: None,
            }
        }
        Err(e) => {
            metrics.policy.reloaded(false);
            let kept = if restored {
                "keeping the policy restored from the state file"
            } else {
                "starting with no policy"
            };
            error!(path = %path.display(), error = %e, "policy file not taken; {kept}");
            AtStart {
                last: None,
                policy: None,
                failing: Some(e.to_string()),
            }
        }
    }
}

/// The file followed from where start-up left off.
#[derive(Debug)]
pub struct Reloader {
    path: PathBuf,
    /// The bytes last read (taken or not): the same bytes are not parsed
    /// again.
    last: Option<Vec<u8>>,
    /// The last failure reported, so a file that stays bad is logged and
    /// counted once, not every second.
    failing: Option<String>,
}

impl Reloader {
    pub fn new(path: PathBuf, start: AtStart) -> Self {
        Reloader {
            path,
            last: start.last,
            failing: start.failing,
        }
    }

    /// Logs and counts `e`, unless it is the failure already reported.
    fn failed(&mut self, metrics: &Metrics, e: &PolicyFileError) {
        let e = e.to_string();
        if self.failing.as_ref() != Some(&e) {
            metrics.policy.reloaded(false);
            warn!(path = %self.path.display(), error = %e, "policy file rejected; keeping the policy in force");
            self.failing = Some(e);
        }
    }

    /// Reads the file once; installs its policy through `writer` if it is
    /// new and valid. A policy equal to the one in force (a comment or
    /// the layout edited) changes nothing: no view is rebuilt, nothing is
    /// sent to followers.
    pub async fn tick(&mut self, registry: &Registry, writer: &Writer, metrics: &Metrics) {
        let bytes = match read_bounded(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                self.failed(metrics, &e);
                // Whatever comes back is read afresh.
                self.last = None;
                return;
            }
        };
        if self.last.as_ref() == Some(&bytes) {
            return;
        }
        let parsed = parse(&bytes);
        self.last = Some(bytes);
        match parsed {
            Ok(policy) => {
                self.failing = None;
                let old = registry.policy();
                log_changes(&self.path, &old, &policy);
                writer.renew_policy(Arc::new(policy)).await;
                metrics.policy.reloaded(true);
            }
            Err(e) => self.failed(metrics, &e),
        }
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
    let mut follower = Reloader::new(path, start);
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        follower.tick(&registry, &writer, &metrics).await;
    }
}

#[cfg(test)]
mod tests {
    use meshdns_proto::model::ClusterName;

    use super::*;

    /// A directory of this test's own, removed at the end.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("meshdns-policy-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Dir(dir)
        }

        fn write(&self, text: &str) -> PathBuf {
            let path = self.0.join("policy.yaml");
            std::fs::write(&path, text).unwrap();
            path
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hub() -> (Arc<Registry>, Writer, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let registry = Arc::new(Registry::new(5, false, metrics.clone()));
        let writer = Writer::spawn(registry.clone()).unwrap();
        (registry, writer, metrics)
    }

    fn drain_of(registry: &Registry) -> Option<u8> {
        registry
            .policy()
            .clusters
            .get(&ClusterName::new("east-1").unwrap())
            .map(|c| c.drain_percent)
    }

    /// A file rewritten with the same policy (a comment, another layout)
    /// publishes nothing: no view rebuilt, nothing sent to followers.
    #[tokio::test]
    async fn the_same_policy_rewritten_changes_nothing() {
        let dir = Dir::new("same");
        let path = dir.write("clusters:\n  east-1:\n    drain: 50\n");
        let (registry, writer, metrics) = hub();
        let start = at_start(&path, false, &metrics);
        registry.set_policy(Arc::new(start.policy.clone().unwrap()));
        let mut reloader = Reloader::new(path.clone(), start);
        let serial = registry.snapshot().serial;
        dir.write("# drained for the move\nclusters: {east-1: {drain: 50%}}\n");
        reloader.tick(&registry, &writer, &metrics).await;
        assert_eq!(registry.snapshot().serial, serial);
        assert_eq!(metrics.policy.reloads(true), 2);
        dir.write("clusters: {east-1: {drain: 60}}\n");
        reloader.tick(&registry, &writer, &metrics).await;
        assert_eq!(drain_of(&registry), Some(60));
        assert_ne!(registry.snapshot().serial, serial);
    }

    /// A bad file at start never stops the server: the restored policy
    /// (or none) stays, and the error is counted once, not again on the
    /// first re-read.
    #[tokio::test]
    async fn a_bad_file_at_start_is_counted_once_and_starts() {
        let dir = Dir::new("bad");
        let path = dir.write("clusters:\n  east-1:\n    drain: 120\n");
        let (registry, writer, metrics) = hub();
        let start = at_start(&path, true, &metrics);
        assert!(start.policy.is_none());
        assert_eq!(metrics.policy.reloads(false), 1);
        let mut reloader = Reloader::new(path.clone(), start);
        reloader.tick(&registry, &writer, &metrics).await;
        reloader.tick(&registry, &writer, &metrics).await;
        assert_eq!(metrics.policy.reloads(false), 1);
        // Nothing restored: the server starts with no policy all the same.
        let start = at_start(&path, false, &metrics);
        assert!(start.policy.is_none() && start.failing.is_some());
        assert_eq!(metrics.policy.reloads(false), 2);
        // Fixed: taken on the next read.
        dir.write("clusters:\n  east-1:\n    drain: 20\n");
        reloader.tick(&registry, &writer, &metrics).await;
        assert_eq!(drain_of(&registry), Some(20));
    }

    /// A FIFO or a device in place of the file is refused without being
    /// opened for a read that could block or never end.
    #[test]
    fn only_regular_files_are_read() {
        let dir = Dir::new("fifo");
        let fifo = dir.0.join("fifo.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        for path in [fifo.as_path(), Path::new("/dev/zero"), dir.0.as_path()] {
            assert!(
                matches!(read(path), Err(PolicyFileError::NotAFile)),
                "{}",
                path.display()
            );
        }
        // A file over the limit is read only up to the limit.
        let big = dir.0.join("big.yaml");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(64 * 1024 * 1024 * 1024).unwrap();
        assert!(matches!(read(&big), Err(PolicyFileError::TooBig)));
    }
}
