//! The error type of the `meshdns` crate.

use std::net::SocketAddr;

/// Everything that can go wrong in the registry and DNS server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; not retryable. Names the flag.
    #[error("{flag}: {problem}")]
    Config { flag: &'static str, problem: String },
    /// Binding a listener failed (address in use, no permission).
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A newer Export stream speaks for this cluster; this one must end.
    #[error("a newer export stream for cluster {0} replaced this one")]
    Superseded(String),
    /// The first message of an Export stream was not a Hello.
    #[error("the first message of an export stream must be a Hello")]
    HelloFirst,
    /// A Hello after the first message.
    #[error("a stream sends Hello once, as its first message")]
    SecondHello,
    /// The Hello itself is invalid.
    #[error("invalid hello: {0}")]
    InvalidHello(#[source] meshdns_proto::InvalidField),
    /// A message over `--max-grpc-message-bytes`; the stream ends.
    #[error("a message over the --max-grpc-message-bytes limit: {0}")]
    MessageTooLarge(String),
    /// No Hello within `--hello-timeout`.
    #[error("no Hello within --hello-timeout ({0:?})")]
    HelloTimeout(std::time::Duration),
    /// A Delta before the stream's first (whole) Snapshot, or during one.
    #[error("{0}")]
    OutOfOrder(&'static str),
    /// The fleet file does not let this cluster export (or claim this).
    #[error("{0}")]
    NotAllowed(String),
    /// The server is shutting down; the client should reconnect elsewhere or later.
    #[error("the registry is shutting down")]
    ShuttingDown,
    /// A listener failed while serving.
    #[error("{what} failed")]
    Serve {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Config { .. } | Error::InvalidHello(_) => {
                tonic::Status::invalid_argument(message)
            }
            Error::HelloFirst | Error::SecondHello | Error::OutOfOrder(_) => {
                tonic::Status::failed_precondition(message)
            }
            Error::HelloTimeout(_) => tonic::Status::deadline_exceeded(message),
            Error::NotAllowed(_) => tonic::Status::permission_denied(message),
            Error::Superseded(_) => tonic::Status::aborted(message),
            Error::ShuttingDown => tonic::Status::unavailable(message),
            Error::MessageTooLarge(_) => tonic::Status::resource_exhausted(message),
            Error::Bind { .. } | Error::Serve { .. } => tonic::Status::internal(message),
        }
    }
}
