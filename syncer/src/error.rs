//! The error type of the syncer.

use meshdns_proto::ClientError;

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
    /// Streaming with a registry failed; retried with backoff.
    #[error("registry {url}: {message}")]
    Registry { url: String, message: String },
    /// Connecting to a registry failed: retried soon only when the
    /// registry did not answer ([`ClientError::is_retryable`]); a bad
    /// certificate or key is retried at the longest backoff, in case it is
    /// rotated in.
    #[error("registry {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: ClientError,
    },
}

impl Error {
    /// Whether reconnecting soon can help (kube-rs habit): a registry
    /// down or refusing a stream, yes; a setting or a credential file an
    /// operator must fix, no.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Registry { .. } => true,
            Error::Client { source, .. } => source.is_retryable(),
            Error::Config { .. } | Error::Read { .. } | Error::Parse { .. } => false,
        }
    }
}
