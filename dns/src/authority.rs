//! The DNS authority: request bytes in, response bytes out, for the names
//! meshdns serves. The only module (with `server`) that knows hickory
//! types, so a hickory API change touches these files alone.
//!
//! A query goes socket → answer model → encoder:
//!
//! - [`rules`]: every DNS rule both encoders follow (asker, payload
//!   limit, negative TTL, SOA fields, ECS scope, OPT, header flags);
//! - [`answer`]: the wire-neutral answer model and the one lookup that
//!   produces it;
//! - [`respond`] (here) and [`encode`]: the full handler, which decodes
//!   any message with hickory and encodes the answer;
//! - [`crate::fast`]: the UDP fast path, which encodes the same answer
//!   straight into bytes for the plain A/AAAA query;
//! - [`config`], [`edns`], [`targets`], [`formerr`]: the served domains,
//!   the query's OPT, SRV and PTR target names, malformed queries.
//!
//! It reads one [`Snapshot`] and takes no lock.

// A length or count cast down silently would be a wrong wire field.
#![deny(clippy::cast_possible_truncation)]

pub mod answer;
pub mod config;
pub mod edns;
pub mod encode;
pub mod formerr;
pub mod nsid;
pub mod rules;
pub mod targets;

use std::net::IpAddr;

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::DNSClass;

use crate::metrics::Outcome;
use crate::qname;
use crate::snapshot::Snapshot;

pub use config::{Authority, InvalidDomain};
pub use rules::{MAX_UDP_PAYLOAD, MCS_DNS_VERSION, Transport};

use answer::{Question, Wants};
use rules::Rcode;

/// Answers one DNS message that came over `transport` into `out`: the
/// [`crate::fast`] path when it covers the query, else [`respond`].
/// `None` means drop it (see [`respond`]); `out` is then unspecified.
pub fn answer_into(
    snapshot: &Snapshot,
    authority: &Authority,
    packet: &[u8],
    source: IpAddr,
    transport: Transport,
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    if let Some(outcome) =
        crate::fast::answer_over(transport, snapshot, authority, packet, source, out)
    {
        return Some(outcome);
    }
    let (reply, outcome) = respond(snapshot, authority, packet, source, transport)?;
    *out = reply;
    Some(outcome)
}

/// Answers one DNS message. `None` means drop it: it is too short to
/// answer, or is itself a response.
pub fn respond(
    snapshot: &Snapshot,
    authority: &Authority,
    packet: &[u8],
    source: IpAddr,
    transport: Transport,
) -> Option<(Vec<u8>, Outcome)> {
    let mut outcome = Outcome::default();
    let reply = respond_to(snapshot, authority, packet, source, transport, &mut outcome)?;
    Some((reply, outcome))
}

fn respond_to(
    snapshot: &Snapshot,
    authority: &Authority,
    packet: &[u8],
    source: IpAddr,
    transport: Transport,
    outcome: &mut Outcome,
) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    // A malformed query, or one hickory cannot decode: FORMERR, with
    // the question and an OPT when they can be read.
    let request = match formerr::check(packet).map(|()| Message::from_vec(packet)) {
        Ok(Ok(request)) => request,
        Err(_) | Ok(Err(_)) => {
            let (reply, rcode) = formerr::reply(packet);
            outcome.rcode = rcode as u16;
            return Some(reply);
        }
    };
    let mut response = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    response.metadata = Metadata::response_from_request(&request.metadata);
    let limit = rules::size_limit(transport, request.edns.as_ref().map(|e| e.max_payload()));
    let mut cookie = None;
    if let Some(edns) = &request.edns {
        let mut ours = edns::reply_opt(edns);
        match edns::answer_cookie(authority, edns, source) {
            Ok(answer) => {
                if let Some(answer) = &answer {
                    outcome.cookie = answer.verified;
                    edns::insert_cookie(&mut ours, answer);
                }
                cookie = answer;
            }
            Err(_) => {
                // RFC 7873 §5.2.2: a malformed COOKIE option is FORMERR
                // (with our OPT and the question, RFC 6891 §7).
                response.edns = Some(ours);
                response.queries = request.queries.clone();
                response.metadata.response_code = ResponseCode::FormErr;
                return encode::message(response, limit, outcome);
            }
        }
        response.edns = Some(ours);
    }
    if request.metadata.op_code != OpCode::Query {
        response.queries = request.queries.clone();
        response.metadata.response_code = ResponseCode::NotImp;
        return encode::message(response, limit, outcome);
    }
    if request.queries.is_empty() && cookie.is_some() {
        // RFC 7873 §5.4: a query with no question asks for a server cookie.
        return encode::message(response, limit, outcome);
    }
    if request.queries.len() != 1 {
        response.metadata.response_code = ResponseCode::FormErr;
        return encode::message(response, limit, outcome);
    }
    let query = &request.queries[0];
    response.queries = vec![query.clone()];
    let qtype = u16::from(query.query_type());
    outcome.qtype = Some(qtype);
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        response.metadata.response_code = ResponseCode::BADVERS;
        return encode::message(response, limit, outcome);
    }
    // QCLASS ANY (255) is answered as IN, the only class served (as Knot
    // and BIND do); every other class is refused.
    if !matches!(query.query_class(), DNSClass::IN | DNSClass::ANY) {
        response.metadata.response_code = ResponseCode::Refused;
        return encode::message(response, limit, outcome);
    }
    let lower = query.name().to_lowercase();
    let labels: Vec<&str> = lower
        .iter()
        .map(|l| std::str::from_utf8(l).unwrap_or(""))
        .collect();
    let Some((domain, qname)) = qname::parse(&labels, authority.domains()) else {
        response.metadata.response_code = ResponseCode::Refused;
        return encode::message(response, limit, outcome);
    };
    let wants = Wants::new(qtype);
    if wants.transfer() {
        // Zone transfers are not offered: the data lives in the registry.
        response.metadata.response_code = ResponseCode::Refused;
        return encode::message(response, limit, outcome);
    }
    response.metadata.authoritative = true;
    let ecs = request.edns.as_ref().and_then(edns::client_subnet);
    outcome.ecs = ecs.is_some();
    let place = rules::asker(snapshot, source, ecs);
    let question = Question {
        snapshot,
        authority,
        domain,
        wants,
        place: place.as_ref(),
        gate: rules::gate(source, ecs, authority.ecs_trusted(source)),
    };
    let answer = answer::lookup(question, qname);
    let sections = encode::sections(
        &answer,
        authority,
        domain,
        snapshot.serial,
        query.name(),
        &mut outcome.served,
    );
    if !sections.answers.is_empty() {
        outcome.fail_open = answer.fail_open;
        outcome.tier = answer.tier;
    }
    if let (Some(subnet), Some(ours)) = (ecs, response.edns.as_mut()) {
        edns::echo_subnet(
            ours,
            subnet,
            rules::ecs_scope(subnet, answer.located, answer.gated),
        );
    }
    if let (Some(query), Some(ours)) = (&request.edns, response.edns.as_mut()) {
        edns::answer_nsid(authority, query, ours);
    }
    if answer.rcode == Rcode::NxDomain {
        response.metadata.response_code = ResponseCode::NXDomain;
    }
    response.answers = sections.answers;
    response.authorities = sections.authorities;
    response.additionals = sections.additionals;
    encode::message(response, limit, outcome)
}
