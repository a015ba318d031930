//! The error of this crate: a field of wire or file data that is not valid.

use std::fmt;

/// A value that failed validation, naming the field and why.
///
/// Not retryable: the same input fails the same way. The `field` is a path
/// such as `endpoints[2].addresses[0]` so the sender can find it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    /// Where the value is, as a path from the message or file's root
    /// (`services[3].ports[1].name`); empty while the error has not yet
    /// been placed by [`InvalidField::within`].
    pub field: String,
    /// What is wrong with it.
    pub problem: Problem,
}

/// What is wrong with a field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A field that must be set is absent or empty (a wire message's
    /// optional sub-message, a name, a map key).
    #[error("is required")]
    Missing,
    /// A name (cluster, namespace, service, port, host) that is not an
    /// RFC 1123 label: 1 to 63 lowercase letters, digits and `-`, starting
    /// and ending with a letter or digit; or a node name that is not a
    /// dot-joined run of such labels of at most 253 characters.
    #[error("{} is not a valid RFC 1123 label: {why}", Echo(value))]
    BadLabel {
        /// The value as sent (shown cut to [`ECHO_CHARS`] characters).
        value: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A topology value (region, zone) that is not a Kubernetes label
    /// value: at most 63 characters of letters, digits, `-`, `_` and `.`,
    /// starting and ending with a letter or digit.
    #[error("{} is not a valid label value: {why}", Echo(value))]
    BadLabelValue {
        /// The value as sent (shown cut to [`ECHO_CHARS`] characters).
        value: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// Text that does not parse as an IPv4 or IPv6 address.
    #[error("{} is not an IP address", Echo(value))]
    BadAddress {
        /// The value as sent (shown cut to [`ECHO_CHARS`] characters).
        value: String,
    },
    /// Text that is neither an address nor `ADDRESS/PREFIX` with a prefix
    /// length within the address family (0-32 for IPv4, 0-128 for IPv6).
    #[error("{} is not a CIDR (want e.g. 10.1.0.0/16)", Echo(value))]
    BadCidr {
        /// The value as sent (shown cut to [`ECHO_CHARS`] characters).
        value: String,
    },
    /// An endpoint or cluster IP in a range no workload can hold
    /// (unspecified, loopback, multicast, broadcast, link-local): a DNS
    /// answer must never point a client there.
    #[error("{address} is a {class} address, which no pod or VM can have")]
    ReservedAddress {
        /// The address.
        address: std::net::IpAddr,
        /// Its class, such as `loopback` (see [`crate::model::reserved_class`]).
        class: &'static str,
    },
    /// A list longer than its bound (ports, addresses, zones, scopes,
    /// nodes, policy entries): every list a client sends is bounded.
    #[error("{count} {what} is over the limit of {max}")]
    TooMany {
        /// What is counted, plural (`ports`, `cluster IPs`).
        what: &'static str,
        /// How many were sent.
        count: usize,
        /// The most accepted.
        max: usize,
    },
    /// Port number 0.
    #[error("port 0 is not a port")]
    ZeroPort,
    /// A port number outside 1-65535.
    #[error("port {value} is out of range (1-65535)")]
    PortRange {
        /// The number as sent (wide enough for any source's integer).
        value: i64,
    },
    /// A port protocol other than `TCP`, `UDP` or `SCTP`.
    #[error("protocol must be TCP, UDP or SCTP")]
    BadProtocol,
    /// A protobuf enum number this version does not know (a newer
    /// sender's mode, affinity or protocol).
    #[error("unknown value {value}")]
    UnknownEnum {
        /// The number as sent.
        value: i32,
    },
    /// A service export without ports.
    #[error("a service needs at least one port")]
    NoPorts,
    /// Two ports of one service with the same name, or the same number
    /// and protocol; holds the second one as shown in the error.
    #[error("duplicate port {0}")]
    DuplicatePort(String),
    /// One address held by two endpoints of the same service export.
    #[error("duplicate endpoint address {0}")]
    DuplicateAddress(std::net::IpAddr),
    /// Two endpoints of one service export with the same hostname (the
    /// `<host>.<cluster>.<svc>.<ns>` name must mean one endpoint).
    #[error("duplicate endpoint hostname {0:?}")]
    DuplicateHostname(String),
    /// One `namespace/name` exported twice in one message or file.
    #[error("duplicate service {0}")]
    DuplicateService(String),
    /// An endpoint (or a node) without any address.
    #[error("an endpoint needs at least one address")]
    NoAddresses,
    /// A service in `clusterip` mode with no cluster IP to answer with.
    #[error("clusterip mode needs at least one cluster IP")]
    NoClusterIp,
    /// A record TTL, in seconds, over [`crate::model::MAX_TTL_SECONDS`]
    /// (one day).
    #[error("ttl {0}s is over the maximum of 86400s")]
    TtlRange(u32),
    /// A health check that cannot run as written (an unknown kind or
    /// setting, a port that is not one of the service's TCP ports, a
    /// timeout over the interval); the text says which.
    #[error("{0}")]
    BadHealthCheck(String),
    /// A number or list outside its documented bounds (a weight, a
    /// percentage, a scope listed twice); the text says the bound.
    #[error("{0}")]
    OutOfRange(String),
    /// A request body (the registration API) that is not JSON of the
    /// expected shape; holds the parser's message.
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
    /// `problem` at `field` (a path such as `ports[1].name`, or empty to
    /// be placed later with [`InvalidField::within`]).
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
    TlsNeedsCa {
        /// The registry URL as given.
        url: String,
    },
    /// `http://` without `--insecure`.
    #[error(
        "refusing to talk to {url} in plaintext: use https:// with --tls-ca, or pass --insecure (loopback or a trusted network only)"
    )]
    Plaintext {
        /// The registry URL as given.
        url: String,
    },
    /// Neither `https://` nor `http://`.
    #[error("{url:?}: use https://HOST:PORT (or http:// with --insecure)")]
    Scheme {
        /// The registry URL as given.
        url: String,
    },
    /// A certificate without its key, or a key without its certificate.
    #[error("--tls-cert and --tls-key go together")]
    CertWithoutKey,
    /// The URL does not parse.
    #[error("{url}: {source}")]
    Url {
        /// The registry URL as given.
        url: String,
        /// Why it does not parse.
        #[source]
        source: tonic::transport::Error,
    },
    /// A credential file cannot be read.
    #[error("{flag}: cannot read {}: {source}", path.display())]
    Read {
        /// The flag that named the file (`--tls-ca`, `--token-file`...).
        flag: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
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
        /// The registry URL.
        url: String,
        /// The transport's error.
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
