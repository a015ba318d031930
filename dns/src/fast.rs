//! The fast path (UDP, and TCP messages): the answer to the common query — A or AAAA for
//! `<svc>.<ns>.<domain>`, or that name not existing — written straight
//! into the reply buffer, with no decode into a message, no allocation and
//! no lock.
//!
//! A query is taken only when it is the plain shape: one question in
//! class IN, no answer or authority records, at most one additional record
//! and that an EDNS(0) OPT carrying nothing but Client Subnet and Cookie
//! options, no trailing bytes, an uncompressed name of printable ASCII.
//! Anything else, and any answer that would not fit the client's payload
//! size, returns `None` and goes to [`crate::authority::respond`], the
//! full handler. Both encode the one answer model
//! ([`crate::authority::answer`]) under the one set of rules
//! ([`crate::authority::rules`]); this file only writes bytes.
//! `dns/tests/fast_path.rs` checks that the two produce the same message
//! on generated queries.
//!
//! DNS Cookies are answered here too ([`crate::cookie`]: one SipHash on
//! the stack), since resolvers that send them send them on every query; a
//! malformed or repeated COOKIE option goes to the full handler, which
//! answers FORMERR.
//!
//! What the snapshot already holds makes this cheap: each tier's addresses
//! are flat lists in the cluster parts, chained with running totals
//! ([`crate::snapshot::Chain`]), so a rotated answer is one binary search
//! and a walk; an A record is 16 fixed bytes with its owner compressed to
//! the question (offset 12); the question is echoed byte for byte (so its
//! case is the asker's); and the SOA of a negative answer points into the
//! question for its owner.

// The answer path: every narrowing cast is written out.
#![warn(clippy::cast_possible_truncation)]

use std::net::IpAddr;

use crate::authority::answer::{self, Question, Records, TYPE_A, TYPE_AAAA, TYPE_SOA, Wants};
use crate::authority::rules::{self, ClientSubnet, Rcode, Transport};
use crate::authority::{Authority, nsid};
use crate::cookie;
use crate::metrics::Outcome;
use crate::qname::{self, QName};
use crate::snapshot::Snapshot;

const TYPE_OPT: u16 = 41;
const CLASS_IN: u16 = 1;
const OPTION_ECS: u16 = 8;
const OPTION_COOKIE: u16 = 10;
/// Most labels a 255-byte name can have.
const MAX_LABELS: usize = 128;

/// An EDNS Client Subnet option as the query carried it.
#[derive(Debug, Clone, Copy)]
struct Subnet {
    family: u16,
    client: ClientSubnet,
    /// The address bytes as sent (`ceil(source / 8)` of them).
    raw: [u8; 16],
    raw_len: usize,
}

#[derive(Debug, Clone, Copy)]
struct Opt {
    payload: u16,
    dnssec_ok: bool,
    subnet: Option<Subnet>,
    /// Where the COOKIE option's data is in the packet.
    cookie: Option<(usize, usize)>,
    /// The query asks for our NSID (RFC 5001).
    nsid: bool,
}

/// The parts of a query the fast path needs, read from the wire.
struct Query<'p> {
    packet: &'p [u8],
    /// End of the question section (name, type, class).
    question_end: usize,
    qtype: u16,
    opt: Option<Opt>,
    /// The COOKIE option answered, when the query had one.
    cookie: Option<cookie::Answer>,
}

fn u16_at(p: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(at)?, *p.get(at + 1)?]))
}

/// Reads the query; `None` for anything but the plain shape. `name` gets
/// the lowercase, dot-separated name (without the trailing dot) and
/// `label_ends` the end of each label in it.
fn parse<'p>(
    packet: &'p [u8],
    name: &mut [u8; 256],
    name_len: &mut usize,
    label_ends: &mut [usize; MAX_LABELS],
    labels: &mut usize,
) -> Option<Query<'p>> {
    if packet.len() < 17 {
        return None;
    }
    // QR clear, opcode QUERY.
    if packet[2] & 0xf8 != 0 {
        return None;
    }
    let (qd, an, ns, ar) = (
        u16_at(packet, 4)?,
        u16_at(packet, 6)?,
        u16_at(packet, 8)?,
        u16_at(packet, 10)?,
    );
    if qd != 1 || an != 0 || ns != 0 || ar > 1 {
        return None;
    }
    let mut at = 12;
    let mut len = 0;
    *labels = 0;
    loop {
        let l = usize::from(*packet.get(at)?);
        at += 1;
        if l == 0 {
            break;
        }
        // Compression in a question, or an extended label type.
        if l > 63 || *labels == MAX_LABELS || at - 12 + l > 254 {
            return None;
        }
        let label = packet.get(at..at + l)?;
        if len > 0 {
            name[len] = b'.';
            len += 1;
        }
        for &b in label {
            if !b.is_ascii_graphic() || b == b'.' {
                return None;
            }
            name[len] = b.to_ascii_lowercase();
            len += 1;
        }
        label_ends[*labels] = len;
        *labels += 1;
        at += l;
    }
    let qtype = u16_at(packet, at)?;
    if u16_at(packet, at + 2)? != CLASS_IN {
        return None;
    }
    at += 4;
    let question_end = at;
    let opt = if ar == 1 {
        let (opt, end) = parse_opt(packet, at)?;
        at = end;
        Some(opt)
    } else {
        None
    };
    if at != packet.len() {
        return None;
    }
    *name_len = len;
    Some(Query {
        packet,
        question_end,
        qtype,
        opt,
        cookie: None,
    })
}

/// Reads an OPT record at `at`: EDNS version 0, options ECS and Cookie only.
fn parse_opt(packet: &[u8], at: usize) -> Option<(Opt, usize)> {
    if *packet.get(at)? != 0 || u16_at(packet, at + 1)? != TYPE_OPT {
        return None;
    }
    let payload = u16_at(packet, at + 3)?;
    let (ext_rcode, version) = (*packet.get(at + 5)?, *packet.get(at + 6)?);
    if ext_rcode != 0 || version != 0 {
        return None;
    }
    let dnssec_ok = packet.get(at + 7)? & 0x80 != 0;
    let rdlen = usize::from(u16_at(packet, at + 9)?);
    let start = at + 11;
    let end = start + rdlen;
    if end > packet.len() {
        return None;
    }
    let mut subnet = None;
    let mut cookie = None;
    let mut nsid = false;
    let mut o = start;
    while o < end {
        let code = u16_at(packet, o)?;
        let len = usize::from(u16_at(packet, o + 2)?);
        let data = packet.get(o + 4..o + 4 + len)?;
        if o + 4 + len > end {
            return None;
        }
        match code {
            OPTION_ECS if subnet.is_none() => subnet = Some(parse_subnet(data)?),
            // A second or malformed one is the full handler's to refuse.
            OPTION_COOKIE if cookie.is_none() => cookie = Some((o + 4, o + 4 + len)),
            nsid::OPTION_NSID if !nsid && len == 0 => nsid = true,
            _ => return None,
        }
        o += 4 + len;
    }
    Some((
        Opt {
            payload,
            dnssec_ok,
            subnet,
            cookie,
            nsid,
        },
        end,
    ))
}

/// A well-formed ECS option ([`rules::ecs_option`]); a malformed one is
/// the full handler's to answer FORMERR.
fn parse_subnet(data: &[u8]) -> Option<Subnet> {
    let option = rules::ecs_option(data).ok()?;
    Some(Subnet {
        family: option.family,
        client: option.subnet,
        raw: option.raw,
        raw_len: option.raw_len,
    })
}

/// Answers `packet`, a query over UDP, into `out` if the fast path
/// covers it; `None` leaves `out` unspecified and the query to the full
/// handler.
pub fn answer(
    snapshot: &Snapshot,
    authority: &Authority,
    packet: &[u8],
    source: IpAddr,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    answer_over(Transport::Udp, snapshot, authority, packet, source, out)
}

/// [`answer`] for a query that came over `transport` (a TCP message
/// without its length prefix): the reply's size limit is the
/// transport's ([`rules::size_limit`]), the rest is the same.
pub fn answer_over(
    transport: Transport,
    snapshot: &Snapshot,
    authority: &Authority,
    packet: &[u8],
    source: IpAddr,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    let mut name = [0u8; 256];
    let mut name_len = 0;
    let mut ends = [0usize; MAX_LABELS];
    let mut count = 0;
    let mut query = parse(packet, &mut name, &mut name_len, &mut ends, &mut count)?;
    if query.qtype != TYPE_A && query.qtype != TYPE_AAAA {
        return None;
    }
    if let Some((start, end)) = query.opt.and_then(|o| o.cookie) {
        query.cookie = Some(
            authority
                .cookies()
                .answer(&packet[start..end], source)
                .ok()?,
        );
    }
    let text = std::str::from_utf8(&name[..name_len]).ok()?;
    let mut labels: [&str; MAX_LABELS] = [""; MAX_LABELS];
    let mut begin = 0;
    for (i, &end) in ends[..count].iter().enumerate() {
        labels[i] = &text[begin..end];
        begin = end + 1;
    }
    let labels = &labels[..count];
    let (domain, qname) = qname::parse(labels, authority.domains())?;
    let QName::Service { svc, ns } = qname else {
        return None;
    };
    // `svc` and `ns` are the first two labels: the key is the name's start.
    let key = text.get(..svc.len() + 1 + ns.len())?;
    if labels.first() != Some(&svc) {
        return None;
    }
    let limit = rules::size_limit(transport, query.opt.map(|o| o.payload));
    let subnet = query.opt.and_then(|o| o.subnet);
    let mut outcome = Outcome {
        qtype: Some(query.qtype),
        rcode: 0,
        fail_open: false,
        ecs: subnet.is_some(),
        cookie: query.cookie.is_some_and(|c| c.verified),
        ..Outcome::default()
    };
    // The apex's offset in the packet: where the domain's labels start.
    let apex_label = count - authority.domains()[domain].labels.len();
    let apex = 12
        + if apex_label == 0 {
            0
        } else {
            ends[apex_label - 1] + 1
        };
    let view = snapshot.service_by_key(key).map(|v| &**v);
    // The asker's place matters only when there is a service to choose from.
    let place = view.and_then(|_| rules::asker(snapshot, source, subnet.map(|s| s.client)));
    let question = Question {
        snapshot,
        authority,
        domain,
        wants: Wants::new(query.qtype),
        place: place.as_ref(),
        // Whether the source is a trusted resolver matters only with ECS.
        gate: rules::gate(
            source,
            subnet.map(|s| s.client),
            subnet.is_some() && authority.ecs_trusted(source),
        ),
    };
    let found = answer::service(question, view);
    let scope = subnet.map_or(0, |s| {
        rules::ecs_scope(s.client, found.located, found.gated)
    });
    let Records::Addresses {
        view,
        pick,
        start,
        count: n,
        ..
    } = found.records
    else {
        outcome.rcode = found.rcode as u16;
        write_negative(
            out,
            authority,
            &query,
            snapshot.serial,
            apex,
            found.rcode,
            scope,
        );
        return (out.len() <= limit).then_some(outcome);
    };
    let size = if query.qtype == TYPE_A { 16 } else { 28 };
    let total = query.question_end + n * size + opt_len(&query, authority);
    if total > limit {
        return None;
    }
    outcome.fail_open = found.fail_open;
    outcome.tier = found.tier;
    // `n` is at most `max_answers` per family, and the reply fits a UDP
    // payload: it fits 16 bits.
    write_header(out, &query, Rcode::NoError, u16::try_from(n).ok()?, 0);
    out.extend_from_slice(&query.packet[12..query.question_end]);
    // Every record's fixed part but the address, written with it in one
    // copy: owner (a pointer to the question), type, class, TTL, length.
    let [t0, t1, t2, t3] = view.ttl.to_be_bytes();
    let [c0, c1] = CLASS_IN.to_be_bytes();
    let ([a0, a1], [q0, q1]) = (TYPE_A.to_be_bytes(), TYPE_AAAA.to_be_bytes());
    let mut v4 = [0xc0, 0x0c, a0, a1, c0, c1, t0, t1, t2, t3, 0, 4, 0, 0, 0, 0];
    let mut v6 = [0u8; 28];
    v6[..12].copy_from_slice(&[0xc0, 0x0c, q0, q1, c0, c1, t0, t1, t2, t3, 0, 16]);
    // Each record's cluster noted as it is written: a walk yields a
    // cluster's records together, so its part is looked up (its registry
    // id, inline) only when the cluster changes.
    let served = &mut outcome.served;
    let mut last = u32::MAX;
    let mut note = |cluster: u32| {
        if cluster != last {
            last = cluster;
            served.add(view.clusters[cluster as usize].id());
        }
    };
    let max = authority.max_answers;
    if query.qtype == TYPE_A {
        pick.each_v4(start, max, |cluster, a| {
            note(cluster);
            v4[12..].copy_from_slice(&a.octets());
            out.extend_from_slice(&v4);
        });
    } else {
        pick.each_v6(start, max, |cluster, a| {
            note(cluster);
            v6[12..].copy_from_slice(&a.octets());
            out.extend_from_slice(&v6);
        });
    }
    write_opt(out, &query, scope, authority);
    Some(outcome)
}

/// Header: the query's ID, flags as [`rules::header_flags`] says (AA set).
fn write_header(out: &mut Vec<u8>, query: &Query<'_>, rcode: Rcode, answers: u16, authority: u16) {
    let p = query.packet;
    let [f0, f1] = rules::header_flags([p[2], p[3]], true, rcode);
    let [a0, a1] = answers.to_be_bytes();
    let [n0, n1] = authority.to_be_bytes();
    out.clear();
    out.extend_from_slice(&[
        p[0],
        p[1],
        f0,
        f1,
        0,
        1,
        a0,
        a1,
        n0,
        n1,
        0,
        u8::from(query.opt.is_some()),
    ]);
}

/// NXDOMAIN or NODATA: the question and the zone's SOA, whose owner is
/// the apex inside the question (`apex`, a packet offset).
fn write_negative(
    out: &mut Vec<u8>,
    authority: &Authority,
    query: &Query<'_>,
    serial: u32,
    apex: usize,
    rcode: Rcode,
    scope: u8,
) {
    write_header(out, query, rcode, 0, 1);
    let question = &query.packet[12..query.question_end];
    out.extend_from_slice(question);
    // The owner is the apex: compressed to the longest suffix of it that
    // the question spells in lowercase, the rest written out lowercase.
    let apex = write_apex(out, query, apex);
    let pointer = pointer(apex);
    let ([s0, s1], [c0, c1]) = (TYPE_SOA.to_be_bytes(), CLASS_IN.to_be_bytes());
    let [t0, t1, t2, t3] = authority.negative_answer_ttl().to_be_bytes();
    // Type, class, TTL, and the RDATA length, filled in below.
    out.extend_from_slice(&[s0, s1, c0, c1, t0, t1, t2, t3, 0, 0]);
    let rdlen_at = out.len() - 2;
    // MNAME ns.dns.<apex>, RNAME hostmaster.<apex>.
    for label in rules::NAMESERVER_LABELS {
        write_label(out, label);
    }
    out.extend_from_slice(&pointer);
    write_label(out, rules::MAILBOX_LABEL);
    out.extend_from_slice(&pointer);
    let mut fields = [0u8; 20];
    for (at, value) in fields.chunks_exact_mut(4).zip(authority.soa_fields(serial)) {
        at.copy_from_slice(&value.to_be_bytes());
    }
    out.extend_from_slice(&fields);
    let rdlen = field16(out.len() - rdlen_at - 2);
    out[rdlen_at..rdlen_at + 2].copy_from_slice(&rdlen.to_be_bytes());
    write_opt(out, query, scope, authority);
}

/// One label of a name we write (a short ASCII constant).
fn write_label(out: &mut Vec<u8>, label: &str) {
    debug_assert!(label.len() <= 63, "{label}");
    out.push(u8::try_from(label.len()).unwrap_or(63));
    out.extend_from_slice(label.as_bytes());
}

/// A length or offset as its 16-bit field. Every one written here is
/// bounded far below 65,536: a name's part (at most 255 bytes), an
/// address (4 or 16), the SOA's RDATA (two names and 20 bytes), the OPT's
/// options (a cookie of 16, an ECS address of at most 16, an NSID of at
/// most [`nsid::MAX_LEN`]); a debug build checks.
#[allow(
    clippy::cast_possible_truncation,
    reason = "every caller's value is bounded as said above"
)]
fn field16(n: usize) -> u16 {
    debug_assert!(n <= usize::from(u16::MAX), "{n}");
    n as u16
}

/// A compression pointer to packet offset `at`, inside the question: the
/// question's name ends within 12 + 255 bytes of the packet's start, far
/// inside a pointer's 14 bits.
fn pointer(at: usize) -> [u8; 2] {
    debug_assert!(at < 0x4000, "{at}");
    (0xc000 | (field16(at) & 0x3fff)).to_be_bytes()
}

/// Writes the apex name that starts at packet offset `at` inside the
/// question, and returns where it starts in `out` (an offset in the
/// packet when it is wholly a pointer to the question).
fn write_apex(out: &mut Vec<u8>, query: &Query<'_>, mut at: usize) -> usize {
    let name_end = query.question_end - 4;
    let start = out.len();
    loop {
        if query.packet[at] == 0 {
            out.push(0);
            return start;
        }
        let suffix = &query.packet[at..name_end];
        if !suffix.iter().any(u8::is_ascii_uppercase) {
            if out.len() == start {
                // Nothing written: the owner is the question's own suffix.
                out.extend_from_slice(&pointer(at));
                return at;
            }
            out.extend_from_slice(&pointer(at));
            return start;
        }
        let len = usize::from(query.packet[at]);
        out.extend(
            query.packet[at..at + 1 + len]
                .iter()
                .map(u8::to_ascii_lowercase),
        );
        at += 1 + len;
    }
}

/// The OPT record's length in the response.
fn opt_len(query: &Query<'_>, authority: &Authority) -> usize {
    match query.opt {
        None => 0,
        Some(opt) => {
            11 + opt.subnet.map_or(0, |s| 8 + s.raw_len)
                + query.cookie.map_or(0, |_| 4 + cookie::REPLY_LEN)
                + nsid(opt, authority).map_or(0, |n| 4 + n.len())
        }
    }
}

/// Our NSID when the query asks for it and we have one.
fn nsid(opt: Opt, authority: &Authority) -> Option<&[u8]> {
    if opt.nsid { authority.nsid() } else { None }
}

/// Our OPT when the query had one: payload 1232, version 0, the DO bit
/// copied (RFC 3225), the COOKIE option answered (RFC 7873) and the ECS
/// option echoed with `scope` (0 when the answer did not depend on the
/// asker; RFC 7871) and our NSID if asked (RFC 5001), in that order, as
/// the full handler writes them.
fn write_opt(out: &mut Vec<u8>, query: &Query<'_>, scope: u8, authority: &Authority) {
    let Some(opt) = query.opt else { return };
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&rules::OPT_PAYLOAD.to_be_bytes());
    out.extend_from_slice(&[0, 0, if opt.dnssec_ok { 0x80 } else { 0 }, 0]);
    let rdlen = opt_len(query, authority) - 11;
    out.extend_from_slice(&field16(rdlen).to_be_bytes());
    if let Some(answer) = &query.cookie {
        out.extend_from_slice(&OPTION_COOKIE.to_be_bytes());
        out.extend_from_slice(&field16(cookie::REPLY_LEN).to_be_bytes());
        out.extend_from_slice(&answer.data);
    }
    if let Some(s) = opt.subnet {
        let len = 4 + s.raw_len;
        out.extend_from_slice(&OPTION_ECS.to_be_bytes());
        out.extend_from_slice(&field16(len).to_be_bytes());
        out.extend_from_slice(&s.family.to_be_bytes());
        out.push(s.client.source_prefix);
        out.push(scope);
        out.extend_from_slice(&s.raw[..s.raw_len]);
    }
    if let Some(nsid) = nsid(opt, authority) {
        out.extend_from_slice(&nsid::OPTION_NSID.to_be_bytes());
        out.extend_from_slice(&field16(nsid.len()).to_be_bytes());
        out.extend_from_slice(nsid);
    }
}
