//! `--state-file`: the registry persisted, so a restarted replica answers
//! what it knew at once instead of NXDOMAIN while its syncers reconnect.
//! Each cluster's `last_heartbeat_unix_ms` and `state` (when the hub last
//! heard from it, and whether it was stale then) bring its liveness
//! across the restart: on a hub, a cluster live and heard within
//! `--cluster-ttl` of the restart is restored live, the rest stale
//! (fail-open); see `registry::restore`. The shutdown save writes current
//! times; a periodic save may hold older ones (heartbeats change no
//! serial), which only shortens what is restored live.
//!
//! Format: `MESHDNS-STATE 1\n`, the payload length (u64 BE), its FNV-1a
//! 64 hash (u64 BE), then the payload: a `meshdns.v1.Reset` message (the
//! same full state Watch sends). Written to `PATH.tmp`, fsynced, renamed
//! over `PATH`, and the directory fsynced: a crash leaves the old file or
//! the new one, never half of one. A file that does not check out is
//! reported and ignored.
//!
//! The Reset carries the traffic policy in force too (`policy`), so a hub
//! restarted while its `--policy` file cannot be read, or a follower
//! restarted while its upstream is away, answers with the last policy.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshdns_proto::model::FleetPolicy;
use meshdns_proto::wire;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::error::Corrupt;
use crate::registry::{Registry, RestoreClock};
use schedule::Schedule;

mod schedule;

const MAGIC: &[u8] = b"MESHDNS-STATE 1\n";

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Encodes the registry's state.
pub fn encode(registry: &Registry) -> Vec<u8> {
    seal(&crate::ingest::full_state(&registry.full_state()).encode_to_vec())
}

/// The file's bytes for `payload`: header, length, checksum, payload.
fn seal(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 16 + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
    out.extend_from_slice(&fnv1a(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Decodes a state file's bytes; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<wire::Reset, Corrupt> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(Corrupt::Header)?;
    let (Some(len), Some(hash)) = (rest.get(..8), rest.get(8..16)) else {
        return Err(Corrupt::TruncatedHeader);
    };
    let len = u64::from_be_bytes(len.try_into().map_err(|_| Corrupt::TruncatedHeader)?);
    let hash = u64::from_be_bytes(hash.try_into().map_err(|_| Corrupt::TruncatedHeader)?);
    let payload = &rest[16..];
    if payload.len() as u64 != len {
        return Err(Corrupt::Truncated {
            have: payload.len(),
            want: len,
        });
    }
    if fnv1a(payload) != hash {
        return Err(Corrupt::Checksum);
    }
    wire::Reset::decode(payload).map_err(Corrupt::Payload)
}

/// Writes `bytes` to `path` atomically.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp: PathBuf = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Saves the registry to `path` now.
pub fn save(registry: &Registry, path: &Path) -> std::io::Result<()> {
    write_atomically(path, &encode(registry))
}

/// Largest state file loaded: far above what a registry holds in memory
/// (a million endpoints save to ~100 MB); a bigger file is not one
/// meshdns wrote, and is refused naming the cap rather than read whole.
pub const MAX_STATE_FILE_BYTES: usize = 1024 * 1024 * 1024;

/// What a start-up restored from the state file.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub clusters: usize,
    /// A saved policy was installed.
    pub policy: bool,
}

/// Loads `path` into `registry`, and (with `keep_policy`) the saved
/// policy. With `cluster_ttl` (a hub), clusters heard within it are
/// restored live and the rest stale; without (a follower), all stale.
/// Missing: nothing to do. Corrupt: reported and ignored.
pub fn load(
    registry: &Registry,
    path: &Path,
    keep_policy: bool,
    cluster_ttl: Option<Duration>,
) -> Restored {
    let bytes = match crate::bounded::read(path, MAX_STATE_FILE_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Restored::default(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the state file; starting empty");
            return Restored::default();
        }
    };
    match decode(&bytes) {
        Ok(reset) => {
            let clusters = crate::follow::clusters_of(&reset);
            let n = clusters.len();
            let liveness = registry.restore(clusters, cluster_ttl.map(RestoreClock::now));
            let policy = match reset.policy.as_ref().map(FleetPolicy::try_from) {
                Some(Ok(policy)) if keep_policy => {
                    info!(path = %path.display(), sha256 = %crate::policy::sha256(&policy), "restored the saved traffic policy");
                    registry.set_policy(Arc::new(policy));
                    true
                }
                Some(Err(e)) => {
                    warn!(path = %path.display(), error = %e, "ignoring the state file's policy");
                    false
                }
                _ => false,
            };
            info!(
                path = %path.display(),
                clusters = n,
                live = liveness.live,
                stale = liveness.stale,
                "restored the last saved state (live: heard within the cluster TTL; stale until their syncers reconnect)"
            );
            Restored {
                clusters: n,
                policy,
            }
        }
        Err(e) => {
            warn!(path = %path.display(), error = %e, "ignoring a corrupt state file; starting empty");
            Restored::default()
        }
    }
}

/// What one save attempt came to.
enum Saved {
    /// The file holds this serial.
    Serial(u32),
    /// Not written (logged); tried again later.
    Failed,
    /// The writer is gone: the registry is shutting down.
    Closed,
}

/// Saves when the state changed and then settled, spaced by the last
/// save's duration ([`Schedule`]), and once more at shutdown.
pub async fn run(
    registry: Arc<Registry>,
    writer: crate::registry::Writer,
    path: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let (writer, path) = (&writer, &path);
    let serial = || registry.snapshot().serial;
    let save = move || async move {
        // The state is taken by the writer (Arc clones, between two
        // publishes) with the serial it matches; encoding and writing
        // happen off the runtime.
        let Ok((serial, full)) = writer.full_state_at().await else {
            return Saved::Closed;
        };
        let path = path.clone();
        let result = tokio::task::spawn_blocking(move || {
            crate::priority::control_plane_thread();
            let payload = crate::ingest::full_state(&full).encode_to_vec();
            write_atomically(&path, &seal(&payload))
        })
        .await;
        match result {
            Ok(Ok(())) => Saved::Serial(serial),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot save the state file");
                Saved::Failed
            }
            Err(e) => {
                warn!(error = %e, "state file writer failed");
                Saved::Failed
            }
        }
    };
    saves(serial, save, interval, shutdown).await;
}

/// The save loop: polls `serial`, calls `save` when the [`Schedule`]
/// says, and always once at shutdown.
async fn saves<F: std::future::Future<Output = Saved>>(
    serial: impl Fn() -> u32,
    mut save: impl FnMut() -> F,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut schedule = Schedule::new(interval, serial(), tokio::time::Instant::now());
    let mut ticker = tokio::time::interval(schedule.poll());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let started = tokio::time::Instant::now();
        if schedule.due(started, serial()) || stopping {
            let done = match save().await {
                Saved::Serial(serial) => Some(serial),
                Saved::Failed => None,
                Saved::Closed => return,
            };
            schedule.saved(done, started, started.elapsed());
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::time::{Instant, sleep};

    use super::*;

    /// The save loop run on paused time against a serial bumped by
    /// `changes` (a change every `every` from `from` to `until`), each
    /// save taking `took`. Returns when each save started, from the start.
    async fn loop_saves(
        every: Duration,
        from: Duration,
        until: Duration,
        took: Duration,
        run_for: Duration,
    ) -> Vec<Duration> {
        let t0 = Instant::now();
        let serial = Arc::new(AtomicU32::new(1));
        let starts = Arc::new(Mutex::new(Vec::new()));
        let shutdown = CancellationToken::new();
        let saver = {
            let (serial, starts) = (serial.clone(), starts.clone());
            let read = serial.clone();
            tokio::spawn(saves(
                move || read.load(Ordering::SeqCst),
                move || {
                    let (serial, starts) = (serial.clone(), starts.clone());
                    async move {
                        starts.lock().unwrap().push(t0.elapsed());
                        sleep(took).await;
                        Saved::Serial(serial.load(Ordering::SeqCst))
                    }
                },
                Duration::from_secs(2),
                shutdown.clone(),
            ))
        };
        sleep(from).await;
        while t0.elapsed() < until {
            serial.fetch_add(1, Ordering::SeqCst);
            sleep(every).await;
        }
        sleep(run_for.saturating_sub(t0.elapsed())).await;
        shutdown.cancel();
        saver.await.unwrap();
        Arc::try_unwrap(starts).unwrap().into_inner().unwrap()
    }

    /// A storm (a change every 100 ms for 15 s) is saved once when the
    /// file is `MAX_BEHIND` behind and once when it settles, not at every
    /// interval; then nothing until the shutdown's save.
    #[tokio::test(start_paused = true)]
    async fn a_storm_is_saved_once_overdue_and_once_settled() {
        let starts = loop_saves(
            Duration::from_millis(100),
            Duration::from_millis(100),
            Duration::from_secs(15),
            Duration::from_millis(10),
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(starts.len(), 3, "saves at {starts:?}");
        let overdue = starts[0].as_secs_f64();
        assert!((10.0..11.0).contains(&overdue), "saves at {starts:?}");
        let settled = starts[1].as_secs_f64();
        assert!((15.0..16.5).contains(&settled), "saves at {starts:?}");
        assert_eq!(starts[2], Duration::from_secs(30), "the shutdown save");
    }

    /// A save that took 1 s holds the next off for 10 s, though the
    /// registry changed and settled long before.
    #[tokio::test(start_paused = true)]
    async fn a_slow_save_spaces_the_next() {
        let starts = loop_saves(
            Duration::from_millis(2000),
            Duration::from_millis(100),
            Duration::from_millis(2200),
            Duration::from_secs(1),
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(starts.len(), 3, "saves at {starts:?}");
        assert!(starts[0] <= Duration::from_secs(1), "saves at {starts:?}");
        let gap = starts[1] - starts[0];
        assert!(
            gap >= Duration::from_secs(10) && gap < Duration::from_secs(11),
            "saves at {starts:?}"
        );
    }

    /// Nothing changed: no save until the shutdown, which always saves.
    #[tokio::test(start_paused = true)]
    async fn a_quiet_registry_is_saved_only_at_shutdown() {
        let starts = loop_saves(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::ZERO,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(starts, vec![Duration::from_secs(60)]);
    }

    #[test]
    fn corrupt_files_are_refused_with_a_reason() {
        let registry = Registry::new(5, false, Arc::new(crate::metrics::Metrics::new()));
        let good = encode(&registry);
        assert!(decode(&good).is_ok());
        assert!(decode(b"hello").unwrap_err().to_string().contains("header"));
        assert!(
            decode(&good[..MAGIC.len() + 4])
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let mut longer = good.clone();
        longer.push(1);
        assert!(
            decode(&longer)
                .unwrap_err()
                .to_string()
                .contains("truncated")
        );
        let mut flipped = good.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
            assert!(decode(&flipped).is_err());
        }
    }
}
