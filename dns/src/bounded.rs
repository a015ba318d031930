//! Reading an operator's file (`--clusters`, `--policy`, `--token-file`,
//! `--state-file`) with a size cap, so a file that grew by mistake (or on
//! purpose) cannot make the hub hold and parse hundreds of megabytes.
//! Regular files only: a FIFO or a device is refused before it is opened,
//! and opened without blocking in case one replaced the file since.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Why a bounded read failed; the message names the cap.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is not a regular file")]
    NotAFile,
    #[error("it is over the limit of {cap} bytes")]
    TooBig { cap: usize },
}

impl ReadError {
    /// The file is not there (a state file not yet written).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Reads the regular file at `path`, at most `cap` bytes (and one more,
/// to tell a file over the cap).
pub fn read(path: &Path, cap: usize) -> Result<Vec<u8>, ReadError> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(ReadError::NotAFile);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    if meta.len() > cap as u64 {
        return Err(ReadError::TooBig { cap });
    }
    let mut bytes = Vec::new();
    file.take((cap as u64).saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() > cap {
        return Err(ReadError::TooBig { cap });
    }
    Ok(bytes)
}

/// SHA-256 of a file's bytes: what "the file changed" means, kept
/// instead of the bytes.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_over_the_cap_are_refused_naming_it() {
        let dir = std::env::temp_dir().join(format!("meshdns-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        std::fs::write(&path, vec![b'#'; 100]).unwrap();
        assert_eq!(read(&path, 100).unwrap().len(), 100);
        let err = read(&path, 99).unwrap_err();
        assert!(err.to_string().contains("limit of 99 bytes"), "{err}");
        assert!(matches!(read(&dir, 100), Err(ReadError::NotAFile)));
        assert!(read(&dir.join("absent"), 100).unwrap_err().is_not_found());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
