//! An endpoint's health-check outcome, as the syncer last saw it: carried
//! to the hub so `meshdns status --service` and `/debug/answer` can say
//! why an endpoint is out of answers.

use std::fmt;

/// What an endpoint's health check concluded. One byte: a million
/// endpoints carry it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Health {
    /// The service declares no check, or it has not run yet.
    #[default]
    Unchecked,
    /// The last check passed (or `rise` passes in a row brought a failing
    /// endpoint back).
    Passing,
    /// Failed `fall` times in a row: the endpoint is sent with `ready = false`.
    Failing(Failure),
}

/// Why a check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The TCP connection was refused or reset.
    Refused,
    /// No connection, or no HTTP status, within the check's timeout.
    Timeout,
    /// The HTTP status was not the expected one.
    BadStatus,
    /// Anything else: unreachable network, a reply that is not HTTP.
    Error,
}

impl Health {
    /// A short, stable word for JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unchecked => "unchecked",
            Health::Passing => "passing",
            Health::Failing(Failure::Refused) => "failing: connection refused",
            Health::Failing(Failure::Timeout) => "failing: timeout",
            Health::Failing(Failure::BadStatus) => "failing: unexpected http status",
            Health::Failing(Failure::Error) => "failing: error",
        }
    }

    /// Whether the check took the endpoint out of answers.
    pub fn is_failing(self) -> bool {
        matches!(self, Health::Failing(_))
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
