//! The error type of the syncer.

/// Everything that can go wrong in a syncer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or file field is wrong; not retryable until it is fixed.
    #[error("{field}: {problem}")]
    Config { field: String, problem: String },
    /// The source file cannot be read; retried on the next poll.
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The source file is not valid YAML of the expected shape; the last
    /// good state stays exported until the file is fixed.
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    /// Connecting to or streaming with a registry failed; retried with backoff.
    #[error("registry {url}: {message}")]
    Registry { url: String, message: String },
}
