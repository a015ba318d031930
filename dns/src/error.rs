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
    /// A started message not whole within `--export-message-timeout`.
    #[error("{0}")]
    MessageTooSlow(String),
    /// No Hello within `--hello-timeout`.
    #[error("no Hello within --hello-timeout ({0:?})")]
    HelloTimeout(std::time::Duration),
    /// A Delta before the stream's first (whole) Snapshot, or during one.
    #[error("{0}")]
    OutOfOrder(&'static str),
    /// The fleet file does not let this cluster export (or claim this).
    #[error("{0}")]
    NotAllowed(String),
    /// A reload of the fleet file changed the rules of this stream's
    /// cluster; retryable: the syncer reconnects under the new rules.
    #[error("{0}")]
    RulesChanged(String),
    /// The stream's credential was revoked or expired; not retryable
    /// with the same credential.
    #[error(transparent)]
    Revoked(#[from] crate::auth::Revoked),
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

/// Why a `--state-file` cannot be loaded; the registry starts empty and
/// overwrites it at the next save. Not retryable: the bytes stay wrong.
#[derive(Debug, thiserror::Error)]
pub enum Corrupt {
    #[error("not a meshdns state file (bad header)")]
    Header,
    #[error("truncated header")]
    TruncatedHeader,
    #[error("truncated: {have} of {want} payload bytes")]
    Truncated { have: usize, want: u64 },
    #[error("checksum mismatch")]
    Checksum,
    #[error("payload: {0}")]
    Payload(#[source] prost::DecodeError),
}

/// Why a follower's Watch stream on its upstream registry ended
/// (`serve --follow`). The follower keeps answering from its last state
/// and reconnects: soon when [`Upstream::is_retryable`], else at its
/// longest delay with an error logged, since an operator must act.
#[derive(Debug, thiserror::Error)]
pub enum Upstream {
    /// No connection: retryable when the upstream did not answer, not
    /// when a credential file or setting is wrong.
    #[error(transparent)]
    Connect(#[from] meshdns_proto::ClientError),
    /// The upstream refused the Watch call.
    #[error("watch: {}", .0.message())]
    Refused(tonic::Status),
    /// The upstream sent events out of the order parts require.
    #[error("upstream broke the protocol: {0}")]
    Protocol(#[from] PartsOrder),
    /// The upstream ended the stream (a restart, a drain).
    #[error("the upstream ended the stream")]
    Ended,
    /// The stream failed mid-way.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Broken(tonic::Status),
}

impl Upstream {
    /// Whether reconnecting soon can help. A refusal for the reader's
    /// credentials (unauthenticated, permission denied) needs an operator.
    pub fn is_retryable(&self) -> bool {
        match self {
            Upstream::Connect(e) => e.is_retryable(),
            Upstream::Refused(status) => !matches!(
                status.code(),
                tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
            ),
            Upstream::Protocol(_) | Upstream::Ended | Upstream::Broken(_) => true,
        }
    }
}

/// An event that breaks the rules of parts (a Reset or a services change
/// sent in several messages must not be interleaved with anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartsOrder {
    #[error("a reset came between the parts of a services change")]
    ResetInChange,
    #[error("a services change came between the parts of a reset")]
    ChangeInReset,
    #[error("a change of cluster {got:?} came between the parts of a change of {pending:?}")]
    OtherCluster { got: String, pending: String },
    #[error("an event came between the parts of a reset or a change")]
    EventInParts,
}

impl Error {
    /// [`Error::Config`]: `flag`'s value is wrong, and why.
    pub fn config(flag: &'static str, problem: impl Into<String>) -> Self {
        Error::Config {
            flag,
            problem: problem.into(),
        }
    }
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
            Error::Superseded(_) | Error::RulesChanged(_) => tonic::Status::aborted(message),
            Error::ShuttingDown => tonic::Status::unavailable(message),
            Error::Revoked(revoked) => revoked.into(),
            Error::MessageTooLarge(_) => tonic::Status::resource_exhausted(message),
            Error::MessageTooSlow(_) => tonic::Status::deadline_exceeded(message),
            Error::Bind { .. } | Error::Serve { .. } => tonic::Status::internal(message),
        }
    }
}
