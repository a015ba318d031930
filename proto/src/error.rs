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
    #[error("{value:?} is not a valid RFC 1123 label: {why}")]
    BadLabel { value: String, why: &'static str },
    #[error("{value:?} is not a valid label value: {why}")]
    BadLabelValue { value: String, why: &'static str },
    #[error("{value:?} is not an IP address")]
    BadAddress { value: String },
    #[error("{value:?} is not a CIDR (want e.g. 10.1.0.0/16)")]
    BadCidr { value: String },
    #[error("port 0 is not a port")]
    ZeroPort,
    #[error("port {value} is out of range (1-65535)")]
    PortRange { value: u32 },
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
