//! The error of this crate: a field of wire or file data that is not valid.

use std::fmt;

/// A value that failed validation, naming the field and why.
///
/// Not retryable: the same input fails the same way. The `field` is a path
/// such as `endpoints[2].addresses[0]` so the sender can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    pub field: String,
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("is required")]
    Missing,
    #[error("{} is not a valid RFC 1123 label: {why}", Echo(value))]
    BadLabel { value: String, why: &'static str },
    #[error("{} is not a valid label value: {why}", Echo(value))]
    BadLabelValue { value: String, why: &'static str },
    #[error("{} is not an IP address", Echo(value))]
    BadAddress { value: String },
    #[error("{} is not a CIDR (want e.g. 10.1.0.0/16)", Echo(value))]
    BadCidr { value: String },
    #[error("{address} is a {class} address, which no pod or VM can have")]
    ReservedAddress {
        address: std::net::IpAddr,
        class: &'static str,
    },
    #[error("{count} {what} is over the limit of {max}")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error("port 0 is not a port")]
    ZeroPort,
    #[error("port {value} is out of range (1-65535)")]
    PortRange { value: i64 },
    #[error("protocol must be TCP, UDP or SCTP")]
    BadProtocol,
    #[error("unknown value {value}")]
    UnknownEnum { value: i32 },
    #[error("a service needs at least one port")]
    NoPorts,
    #[error("duplicate port {0}")]
    DuplicatePort(String),
    #[error("duplicate endpoint address {0}")]
    DuplicateAddress(std::net::IpAddr),
    #[error("duplicate endpoint hostname {0:?}")]
    DuplicateHostname(String),
    #[error("duplicate service {0}")]
    DuplicateService(String),
    #[error("an endpoint needs at least one address")]
    NoAddresses,
    #[error("clusterip mode needs at least one cluster IP")]
    NoClusterIp,
    #[error("ttl {0}s is over the maximum of 86400s")]
    TtlRange(u32),
    #[error("{0}")]
    BadHealthCheck(String),
    #[error("{0}")]
    OutOfRange(String),
    #[error("not valid JSON of the expected shape: {0}")]
    BadJson(String),
}

impl Problem {
    /// A short, stable name for the kind of problem: a metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::BadLabel { .. } => "bad_label",
            Problem::BadLabelValue { .. } => "bad_label_value",
            Problem::BadAddress { .. } => "bad_address",
            Problem::BadCidr { .. } => "bad_cidr",
            Problem::ZeroPort => "zero_port",
            Problem::PortRange { .. } => "port_range",
            Problem::BadProtocol => "bad_protocol",
            Problem::UnknownEnum { .. } => "unknown_enum",
            Problem::NoPorts => "no_ports",
            Problem::DuplicatePort(_) => "duplicate_port",
            Problem::DuplicateAddress(_) => "duplicate_address",
            Problem::DuplicateHostname(_) => "duplicate_hostname",
            Problem::DuplicateService(_) => "duplicate_service",
            Problem::NoAddresses => "no_addresses",
            Problem::NoClusterIp => "no_cluster_ip",
            Problem::TtlRange(_) => "ttl_range",
            Problem::ReservedAddress { .. } => "reserved_address",
            Problem::TooMany { .. } => "too_many",
            Problem::BadHealthCheck(_) => "bad_health_check",
            Problem::OutOfRange(_) => "out_of_range",
            Problem::BadJson(_) => "bad_json",
        }
    }
}

impl InvalidField {
    pub fn new(field: impl Into<String>, problem: Problem) -> Self {
        Self {
            field: field.into(),
            problem,
        }
    }

    /// The same error seen from an enclosing field: `ports[1]` + `name`.
    #[must_use]
    pub fn within(mut self, outer: impl fmt::Display) -> Self {
        self.field = if self.field.is_empty() {
            outer.to_string()
        } else {
            format!("{outer}.{}", self.field)
        };
        self
    }
}

/// Why a client (a syncer's publisher, a follower, `status`, `check`)
/// cannot reach a registry.
///
/// [`ClientError::is_retryable`] tells a caller that reconnects whether
/// trying again soon can help: a registry that is down or restarting can
/// come back; a missing key, a PEM that does not parse or a plaintext URL
/// without `--insecure` fails the same way until an operator fixes it.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `https://` without a CA to check the registry with.
    #[error("{url}: TLS needs --tls-ca (the CA that signed the registry's certificate)")]
    TlsNeedsCa { url: String },
    /// `http://` without `--insecure`.
    #[error(
        "refusing to talk to {url} in plaintext: use https:// with --tls-ca, or pass --insecure (loopback or a trusted network only)"
    )]
    Plaintext { url: String },
    /// Neither `https://` nor `http://`.
    #[error("{url:?}: use https://HOST:PORT (or http:// with --insecure)")]
    Scheme { url: String },
    /// A certificate without its key, or a key without its certificate.
    #[error("--tls-cert and --tls-key go together")]
    CertWithoutKey,
    /// The URL does not parse.
    #[error("{url}: {source}")]
    Url {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A credential file cannot be read.
    #[error("{flag}: cannot read {}: {source}", path.display())]
    Read {
        flag: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The CA, certificate or key does not make a TLS configuration.
    #[error("TLS: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The token file is not UTF-8.
    #[error("--token-file: not UTF-8")]
    TokenNotUtf8,
    /// The token has bytes an HTTP header cannot carry.
    #[error("--token-file: the token has characters a header cannot carry")]
    TokenNotHeader,
    /// The registry did not answer (down, restarting, unreachable, or the
    /// TLS handshake failed).
    #[error("connect {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
}

impl ClientError {
    /// Whether trying again soon can help: only when the registry did not
    /// answer. Everything else is a setting or a file an operator must fix
    /// (a credential file may be rotated in later, so callers that run
    /// forever still retry, at their longest delay).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ClientError::Connect { .. })
    }
}

/// Most characters of a sender's value repeated back in an error.
pub const ECHO_CHARS: usize = 64;

/// A value from the wire, shown in an error or a log line: quoted and
/// escaped, and cut after [`ECHO_CHARS`] characters with the full length
/// said, so a sender cannot make the registry repeat megabytes back.
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a>(pub &'a str);

impl fmt::Display for Echo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut chars = self.0.char_indices();
        match chars.nth(ECHO_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_escapes_and_cuts_long_values() {
        assert_eq!(Echo("a\nb").to_string(), "\"a\\nb\"");
        assert_eq!(Echo("tab\there").to_string(), "\"tab\\there\"");
        let long = "x".repeat(10_000);
        let shown = Echo(&long).to_string();
        assert!(shown.len() < 100, "{shown}");
        assert!(shown.ends_with("... (10000 bytes)"), "{shown}");
        let problem = Problem::BadAddress { value: long };
        assert!(problem.to_string().len() < 120);
    }
}
