//! `--state-file`: the registry persisted, so a restarted replica answers
//! what it knew at once (as stale data, fail-open) instead of NXDOMAIN
//! while its syncers reconnect.
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
use crate::registry::Registry;

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

/// What a start-up restored from the state file.
#[derive(Debug, Default, Clone, Copy)]
pub struct Restored {
    pub clusters: usize,
    /// A saved policy was installed.
    pub policy: bool,
}

/// Loads `path` into `registry` as stale data, and (with `keep_policy`)
/// the saved policy. Missing: nothing to do. Corrupt: reported and
/// ignored.
pub fn load(registry: &Registry, path: &Path, keep_policy: bool) -> Restored {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Restored::default(),
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the state file; starting empty");
            return Restored::default();
        }
    };
    match decode(&bytes) {
        Ok(reset) => {
            let clusters = crate::follow::clusters_of(&reset);
            let n = clusters.len();
            registry.restore(clusters);
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
            info!(path = %path.display(), clusters = n, "restored the last saved state (stale until syncers reconnect)");
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

/// A save may take at most one part in `SAVE_DUTY` of the time.
const SAVE_DUTY: u32 = 10;

/// How long after the start of a save that took `took` the next may
/// start: a save of a big registry (a few hundred milliseconds at a
/// million endpoints) is not repeated every interval while the fleet
/// changes, as in a reconnect storm, where it would take CPU from
/// answering. A small registry saves every interval as before.
fn pause_after(took: Duration) -> Duration {
    took.saturating_mul(SAVE_DUTY)
}

/// Saves every `interval` when the state changed, but no sooner than
/// [`pause_after`] the last save's start, and once more at shutdown.
pub async fn run(
    registry: Arc<Registry>,
    writer: crate::registry::Writer,
    path: PathBuf,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut saved = registry.snapshot().serial;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut not_before = tokio::time::Instant::now();
    loop {
        let stopping = tokio::select! {
            _ = shutdown.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let due = tokio::time::Instant::now() >= not_before;
        if (registry.snapshot().serial != saved && due) || stopping {
            let started = tokio::time::Instant::now();
            // The state is taken by the writer (Arc clones, between two
            // publishes) with the serial it matches; encoding and writing
            // happen off the runtime.
            let Ok((serial, full)) = writer.full_state_at().await else {
                return;
            };
            let path = path.clone();
            let result = tokio::task::spawn_blocking(move || {
                crate::priority::control_plane_thread();
                let payload = crate::ingest::full_state(&full).encode_to_vec();
                write_atomically(&path, &seal(&payload))
            })
            .await;
            match result {
                Ok(Ok(())) => saved = serial,
                Ok(Err(e)) => warn!(error = %e, "cannot save the state file"),
                Err(e) => warn!(error = %e, "state file writer failed"),
            }
            not_before = started + pause_after(started.elapsed());
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_save_spaces_the_next_and_a_quick_one_does_not() {
        // A million endpoints take a few hundred milliseconds to save.
        assert_eq!(
            pause_after(Duration::from_millis(400)),
            Duration::from_secs(4)
        );
        // A small registry saves at every 2 s tick, as before.
        assert!(pause_after(Duration::from_millis(5)) < Duration::from_secs(2));
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
