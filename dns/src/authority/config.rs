//! The served domains and answer settings, fixed at start.

use std::net::IpAddr;

use hickory_proto::rr::Name;
use ipnet::IpNet;

use crate::cookie::Cookies;
use crate::qname::Domain;

use super::rules::{MAILBOX_LABEL, NAMESERVER_LABELS};

/// The authority meshdns is for: its served domains (a forward domain
/// such as `global.` or `clusterset.local.`, and reverse zones) and the
/// settings every answer uses.
#[derive(Debug, Clone)]
pub struct Authority {
    domains: Vec<Domain>,
    pub(super) apexes: Vec<Name>,
    pub(super) nameservers: Vec<Name>,
    pub(super) mailboxes: Vec<Name>,
    /// TTL of the SOA and NS records (and of answers without their own).
    pub ttl: u32,
    /// SOA minimum: how long resolvers cache NXDOMAIN and NODATA.
    pub negative_ttl: u32,
    pub max_answers: usize,
    /// Healthy targets a tier needs to answer alone.
    pub min_healthy: usize,
    /// The DNS Cookie secret (RFC 7873, RFC 9018).
    cookies: Cookies,
    /// The NSID answered when asked (RFC 5001); none by default.
    nsid: Option<Box<[u8]>>,
    /// Sources whose ECS option decides export-to (`--ecs-trusted-from`);
    /// none by default.
    ecs_trusted: Box<[IpNet]>,
}

/// A served domain whose name is not a valid DNS name.
#[derive(Debug, thiserror::Error)]
#[error("{name}: {error}")]
pub struct InvalidDomain {
    name: String,
    error: hickory_proto::ProtoError,
}

impl Authority {
    pub fn new(
        domains: Vec<Domain>,
        ttl: u32,
        negative_ttl: u32,
        max_answers: usize,
        min_healthy: usize,
    ) -> Result<Self, InvalidDomain> {
        let name =
            |s: String| Name::from_ascii(&s).map_err(|error| InvalidDomain { name: s, error });
        let apexes = domains
            .iter()
            .map(|d| name(d.fqdn()))
            .collect::<Result<_, _>>()?;
        // Reverse zones are named after the first forward domain's server.
        let primary = domains
            .iter()
            .find(|d| d.is_forward())
            .unwrap_or(&domains[0])
            .fqdn();
        let under = |d: &Domain| {
            if d.is_forward() {
                d.fqdn()
            } else {
                primary.clone()
            }
        };
        let [ns, dns] = NAMESERVER_LABELS;
        let nameservers = domains
            .iter()
            .map(|d| name(format!("{ns}.{dns}.{}", under(d))))
            .collect::<Result<_, _>>()?;
        let mailboxes = domains
            .iter()
            .map(|d| name(format!("{MAILBOX_LABEL}.{}", under(d))))
            .collect::<Result<_, _>>()?;
        Ok(Authority {
            domains,
            apexes,
            nameservers,
            mailboxes,
            ttl,
            negative_ttl,
            max_answers,
            min_healthy,
            cookies: Cookies::random(),
            nsid: None,
            ecs_trusted: Box::default(),
        })
    }

    /// The same authority with this DNS Cookie secret (replicas behind one
    /// address share one; the default is random per process).
    pub fn with_cookies(mut self, cookies: Cookies) -> Self {
        self.cookies = cookies;
        self
    }

    /// The same authority answering NSID queries with `nsid` ([`super::nsid`]).
    pub fn with_nsid(mut self, nsid: Vec<u8>) -> Self {
        self.nsid = Some(nsid.into_boxed_slice());
        self
    }

    /// The same authority trusting the ECS option of queries from
    /// `resolvers` to decide export-to ([`super::rules::gate`]).
    pub fn with_ecs_trusted(mut self, resolvers: Vec<IpNet>) -> Self {
        self.ecs_trusted = resolvers.into_boxed_slice();
        self
    }

    /// Whether a query from `source` is from a trusted resolver (an
    /// IPv4-mapped source is its IPv4 address).
    pub fn ecs_trusted(&self, source: IpAddr) -> bool {
        if self.ecs_trusted.is_empty() {
            return false;
        }
        let source = source.to_canonical();
        self.ecs_trusted.iter().any(|net| net.contains(&source))
    }

    /// The NSID to answer with, if one is set.
    pub fn nsid(&self) -> Option<&[u8]> {
        self.nsid.as_deref()
    }

    pub fn cookies(&self) -> &Cookies {
        &self.cookies
    }

    pub fn domains(&self) -> &[Domain] {
        &self.domains
    }

    /// Whether reverse zones (PTR) are served.
    pub fn reverse(&self) -> bool {
        self.domains.iter().any(|d| !d.is_forward())
    }

    /// The domain PTR records name services under: the first forward one.
    pub(super) fn ptr_domain(&self) -> &Domain {
        self.domains
            .iter()
            .find(|d| d.is_forward())
            .unwrap_or(&self.domains[0])
    }
}
