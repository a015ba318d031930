//! `--registration-state-file`: the registrations with their absolute
//! deadlines, written atomically (temporary file, fsync, rename, fsync of
//! the directory) so a restart finds either the old or the new state.
//! Loaded at start: what lapsed while the syncer was down is dropped.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::body::RegistrationBody;

/// The file's current format.
pub const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub version: u32,
    pub registrations: Vec<SavedRegistration>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedRegistration {
    pub namespace: String,
    pub service: String,
    pub instance: String,
    /// When it lapses without a heartbeat, in milliseconds since the Unix epoch.
    pub deadline_unix_ms: u64,
    pub registration: RegistrationBody,
    /// The registering token's owner id (not its digest); absent in files
    /// of older syncers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a registration state file: {message}")]
    Parse { path: PathBuf, message: String },
}

pub fn to_unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn from_unix_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// The saved state; an absent file is an empty one.
pub fn load(path: &Path) -> Result<Saved, StateFileError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Saved {
                version: VERSION,
                registrations: Vec::new(),
            });
        }
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let saved: Saved = serde_json::from_slice(&bytes).map_err(|e| StateFileError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    if saved.version != VERSION {
        return Err(StateFileError::Parse {
            path: path.to_owned(),
            message: format!("version {} (this syncer reads {VERSION})", saved.version),
        });
    }
    Ok(saved)
}

/// Writes `saved` atomically over `path`.
pub fn save(path: &Path, saved: &Saved) -> Result<(), StateFileError> {
    let failed = |source| StateFileError::Write {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(saved)
        .map_err(|e| failed(std::io::Error::other(e.to_string())))?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(failed)?;
    file.write_all(&bytes).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(failed)?;
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(directory)
        .and_then(|d| d.sync_all())
        .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_absent_file() {
        let dir = std::env::temp_dir().join(format!("meshdns-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("registrations.json");
        assert!(load(&path).unwrap().registrations.is_empty());
        let saved = Saved {
            version: VERSION,
            registrations: vec![SavedRegistration {
                namespace: "shop".into(),
                service: "web".into(),
                instance: "vm-1".into(),
                deadline_unix_ms: 1_234,
                registration: serde_json::from_value(serde_json::json!({
                    "addresses": ["10.0.0.1"], "ports": [{"port": 80}], "ttl_seconds": 30
                }))
                .unwrap(),
                owner: "ab12".into(),
            }],
        };
        save(&path, &saved).unwrap();
        let back = load(&path).unwrap();
        assert_eq!(back.registrations[0].deadline_unix_ms, 1_234);
        assert_eq!(
            back.registrations[0].registration,
            saved.registrations[0].registration
        );
        std::fs::write(&path, b"{").unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("not a registration state file")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
