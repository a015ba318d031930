//! The DNS rules both encoders follow, written once: where the asker is,
//! how large a UDP reply may be, the negative TTL and the SOA's fields,
//! the ECS scope, the OPT record we send and the header flags.
//!
//! The fast path ([`crate::fast`]) writes bytes and the full handler
//! ([`super::respond`]) builds a hickory message, but every value either
//! of them puts on the wire that is a decision rather than an echo comes
//! from here or from the answer model ([`super::answer`]).
//! `dns/tests/fast_path.rs` breaks each rule in one encoder to show the
//! two would then disagree.

use std::net::IpAddr;

use crate::locality::AskerPlace;
use crate::select::Gate;
use crate::snapshot::Snapshot;

use super::Authority;

/// The largest UDP payload meshdns sends or advertises (DNS Flag Day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// The UDP payload every DNS client accepts (RFC 1035), and the floor of
/// an advertised one (RFC 6891 §6.2.5).
pub const MIN_UDP_PAYLOAD: u16 = 512;

/// SOA REFRESH, RETRY and EXPIRE: fixed; there are no secondaries to
/// tell anything (zone transfers are refused).
pub const SOA_REFRESH: u32 = 3600;
pub const SOA_RETRY: u32 = 600;
pub const SOA_EXPIRE: u32 = 86_400;

/// The SOA MNAME (and NS target) is `ns.dns.<apex>`: these labels.
pub const NAMESERVER_LABELS: [&str; 2] = ["ns", "dns"];
/// The SOA RNAME is `hostmaster.<apex>`.
pub const MAILBOX_LABEL: &str = "hostmaster";

/// The MCS DNS schema version `dns-version.clusterset.local` answers.
pub const MCS_DNS_VERSION: &str = "1.0.0";

/// How a query arrived: decides the size limit of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The response codes the answer path sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError = 0,
    FormErr = 1,
    NxDomain = 3,
    NotImp = 4,
    Refused = 5,
}

/// The largest reply a query may get: any size over TCP; over UDP the
/// payload its OPT advertises (`None`: no OPT), clamped to
/// [`MIN_UDP_PAYLOAD`]..=[`MAX_UDP_PAYLOAD`].
pub fn size_limit(transport: Transport, advertised: Option<u16>) -> usize {
    match (transport, advertised) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(payload)) => {
            usize::from(payload.clamp(MIN_UDP_PAYLOAD, MAX_UDP_PAYLOAD))
        }
        (Transport::Udp, None) => usize::from(MIN_UDP_PAYLOAD),
    }
}

/// An ECS option's address and source prefix, as the query sent them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSubnet {
    pub address: IpAddr,
    pub source_prefix: u8,
}

/// Where the asker is: the ECS subnet when the query has one (a source
/// prefix of 0 asks for no tailoring), else the source address.
pub fn asker(snapshot: &Snapshot, source: IpAddr, ecs: Option<ClientSubnet>) -> Option<AskerPlace> {
    match ecs {
        Some(subnet) if subnet.source_prefix == 0 => None,
        Some(subnet) => snapshot
            .locality
            .lookup(subnet.address, subnet.source_prefix),
        None => snapshot.locality.lookup(source, 128),
    }
}

/// Whose place decides `export-to` ([`Gate`]):
///
/// - no ECS: the asker's, which is the packet source's;
/// - ECS with source prefix 0 (no tailoring): the packet source's (the
///   asker has no place, and an unknown asker sees no restricted
///   service: a resolver's own place is what it answers for);
/// - ECS from a resolver in `--ecs-trusted-from` (`trusted`): the ECS
///   subnet's alone;
/// - ECS from any other source: the subnet's *and* the packet source's,
///   so a forged subnet cannot widen export-to (it still picks which
///   endpoints are nearest).
pub fn gate(source: IpAddr, ecs: Option<ClientSubnet>, trusted: bool) -> Gate {
    match ecs {
        None => Gate::Place,
        Some(subnet) if subnet.source_prefix == 0 => Gate::Source(source),
        Some(_) if trusted => Gate::Place,
        Some(_) => Gate::Both(source),
    }
}

/// The ECS scope prefix of a reply (RFC 7871 §7.2.1): how much of the
/// asker's address the answer depends on — all it sent when locality
/// chose the answer (`located`) or `export-to` decided it (`gated`),
/// none when every asker gets the same answer (NXDOMAIN; names that are
/// not a selection; a service with affinity `none`; NODATA for a family
/// the service has nowhere), so resolvers cache it once rather than per
/// subnet.
///
/// A query that sent no bits (source prefix 0) gets the untailored
/// answer, but when that answer is not every asker's — a located one
/// would get its nearest endpoints, or `export-to` decided it by the
/// packet source — a scope of 0 would make it fit every client
/// (§7.3.1): a resolver would serve it to its located clients too. It
/// gets the family's whole width instead: a scope longer than the
/// source prefix, which §7.3.1 has a resolver cache "only to answer
/// client queries that specify exactly the same SOURCE PREFIX-LENGTH",
/// that is other /0 queries, never a located client's.
pub fn ecs_scope(subnet: ClientSubnet, located: bool, gated: bool) -> u8 {
    let depends = located || gated;
    match subnet.source_prefix {
        0 if depends => {
            if subnet.address.is_ipv4() {
                32
            } else {
                128
            }
        }
        prefix if depends => prefix,
        _ => 0,
    }
}

impl Authority {
    /// The TTL of a negative answer's SOA (RFC 2308 §5: the smaller of
    /// the SOA's own TTL and its MINIMUM).
    pub fn negative_answer_ttl(&self) -> u32 {
        self.ttl.min(self.negative_ttl)
    }

    /// The SOA's SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM, in wire order.
    pub fn soa_fields(&self, serial: u32) -> [u32; 5] {
        [
            serial,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            self.negative_ttl,
        ]
    }
}

/// The OPT record we send: this payload size, EDNS version 0, the DO bit
/// copied from the query (RFC 3225); options COOKIE then ECS.
pub const OPT_PAYLOAD: u16 = MAX_UDP_PAYLOAD;

/// Header bytes 2 and 3 of a reply to a request whose bytes 2 and 3 were
/// `request`: QR set, the opcode and RD copied, AA as decided, CD copied
/// (RFC 6840 §5.9), the rest clear, then the rcode.
pub fn header_flags(request: [u8; 2], authoritative: bool, rcode: Rcode) -> [u8; 2] {
    [
        0x80 | (request[0] & 0x79) | if authoritative { 0x04 } else { 0 },
        (request[1] & 0x10) | rcode as u8,
    ]
}

/// An ECS option as sent, checked (RFC 7871 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EcsOption {
    /// 1 (IPv4) or 2 (IPv6).
    pub family: u16,
    pub subnet: ClientSubnet,
    /// The address bytes as sent: `ceil(source / 8)` of them.
    pub raw: [u8; 16],
    pub raw_len: usize,
}

/// What is wrong with an ECS option: each is answered FORMERR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EcsError {
    #[error("ecs family {0} is neither 1 (ipv4) nor 2 (ipv6)")]
    Family(u16),
    #[error("ecs source prefix {prefix} is longer than the family's {width} bits")]
    Prefix { prefix: u8, width: u8 },
    #[error("ecs carries {found} address bytes where its source prefix needs {needed}")]
    Length { found: usize, needed: usize },
    #[error("ecs address has bits set beyond its source prefix")]
    Unmasked,
    #[error("ecs option is shorter than its fixed part")]
    Short,
}

/// Reads an ECS option's data: a known family, a source prefix within
/// it, exactly the address bytes the prefix needs, and no address bit set
/// beyond the prefix (RFC 7871 §6: such a query is FORMERR).
pub fn ecs_option(data: &[u8]) -> Result<EcsOption, EcsError> {
    let [f0, f1, source, _scope, address @ ..] = data else {
        return Err(EcsError::Short);
    };
    let family = u16::from_be_bytes([*f0, *f1]);
    let width = match family {
        1 => 32,
        2 => 128,
        _ => return Err(EcsError::Family(family)),
    };
    if *source > width {
        return Err(EcsError::Prefix {
            prefix: *source,
            width,
        });
    }
    let raw_len = usize::from(*source).div_ceil(8);
    if address.len() != raw_len {
        return Err(EcsError::Length {
            found: address.len(),
            needed: raw_len,
        });
    }
    let spare = raw_len * 8 - usize::from(*source);
    if spare > 0 && address[raw_len - 1] & ((1u8 << spare) - 1) != 0 {
        return Err(EcsError::Unmasked);
    }
    let mut raw = [0u8; 16];
    raw[..raw_len].copy_from_slice(address);
    let address = if family == 1 {
        IpAddr::from([raw[0], raw[1], raw[2], raw[3]])
    } else {
        IpAddr::from(raw)
    };
    Ok(EcsOption {
        family,
        subnet: ClientSubnet {
            address,
            source_prefix: *source,
        },
        raw,
        raw_len,
    })
}
