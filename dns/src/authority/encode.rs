//! The full handler's encoder: an [`Answer`] as hickory records, and a
//! message as bytes within the size limit (truncating by rebuilding a
//! clean message — header, question, OPT — rather than cutting an
//! encoded one).

use std::net::IpAddr;

use hickory_proto::op::Message;
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record};

use crate::metrics::{Outcome, Served};

use super::Authority;
use super::answer::{Answer, Records};
use super::rules::MCS_DNS_VERSION;
use super::targets;

/// The sections an answer fills.
#[derive(Debug, Default)]
pub struct Sections {
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// `answer` to the question `qname` as records; the clusters they came
/// from noted in `served`. An answer whose records all fail to encode
/// (a name hickory rejects) becomes NODATA, as if there had been none.
pub fn sections(
    answer: &Answer<'_>,
    authority: &Authority,
    domain: usize,
    serial: u32,
    qname: &Name,
    served: &mut Served,
) -> Sections {
    let mut sections = Sections::default();
    let ttl = authority.ttl;
    match &answer.records {
        Records::Negative => {}
        Records::Apex { soa, ns } => {
            if *soa {
                sections
                    .answers
                    .push(soa_record(authority, domain, serial, ttl));
            }
            if *ns {
                let ns = NS(authority.nameservers[domain].clone());
                sections.answers.push(Record::from_rdata(
                    authority.apexes[domain].clone(),
                    ttl,
                    RData::NS(ns),
                ));
            }
        }
        Records::Version => {
            let txt = TXT::new(vec![MCS_DNS_VERSION.to_owned()]);
            sections
                .answers
                .push(Record::from_rdata(qname.clone(), ttl, RData::TXT(txt)));
        }
        Records::Addresses {
            view,
            pick,
            start,
            a,
            aaaa,
            ..
        } => {
            let max = authority.max_answers;
            // Each record noted against its cluster as it is written.
            let mut push = |c: u32, rdata: RData| {
                served.add(view.clusters[c as usize].id());
                sections
                    .answers
                    .push(Record::from_rdata(qname.clone(), view.ttl, rdata));
            };
            if *a {
                pick.each_v4(*start, max, |c, a| push(c, RData::A(A(a))));
            }
            if *aaaa {
                pick.each_v6(*start, max, |c, a| push(c, RData::AAAA(AAAA(a))));
            }
        }
        Records::Host {
            view,
            cluster,
            addresses,
            a,
            aaaa,
            ..
        } => {
            sections.answers.extend(
                addresses
                    .iter()
                    .filter(|ip| if ip.is_ipv4() { *a } else { *aaaa })
                    .take(authority.max_answers)
                    .map(|ip| Record::from_rdata(qname.clone(), view.ttl, address(*ip))),
            );
            if !sections.answers.is_empty() {
                served.add(view.clusters[*cluster].id());
            }
        }
        Records::Ptr(names) => {
            let domain = authority.ptr_domain();
            sections.answers.extend(names.iter().filter_map(|n| {
                let name = Name::from_ascii(targets::ptr(n, domain)).ok()?;
                Some(Record::from_rdata(
                    qname.clone(),
                    ttl,
                    RData::PTR(PTR(name)),
                ))
            }));
        }
        Records::Srv { view, targets } => {
            for target in targets {
                let Ok(name) = Name::from_ascii(&target.name) else {
                    continue;
                };
                served.add(view.clusters[target.cluster].id());
                if target.record {
                    sections.answers.push(Record::from_rdata(
                        qname.clone(),
                        view.ttl,
                        RData::SRV(SRV::new(
                            target.priority,
                            target.weight,
                            target.port,
                            name.clone(),
                        )),
                    ));
                }
                sections.additionals.extend(
                    target
                        .addresses
                        .iter()
                        .map(|ip| Record::from_rdata(name.clone(), view.ttl, address(*ip))),
                );
            }
        }
    }
    if sections.answers.is_empty() {
        // RFC 2308: NXDOMAIN and NODATA carry the SOA, with the negative TTL.
        sections.additionals.clear();
        sections.authorities.push(soa_record(
            authority,
            domain,
            serial,
            authority.negative_answer_ttl(),
        ));
    }
    sections
}

fn address(ip: IpAddr) -> RData {
    match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    }
}

/// The domain's SOA record, with this TTL.
pub fn soa_record(authority: &Authority, domain: usize, serial: u32, ttl: u32) -> Record {
    let [serial, refresh, retry, expire, minimum] = authority.soa_fields(serial);
    let soa = SOA::new(
        authority.nameservers[domain].clone(),
        authority.mailboxes[domain].clone(),
        serial,
        seconds(refresh),
        seconds(retry),
        seconds(expire),
        minimum,
    );
    Record::from_rdata(authority.apexes[domain].clone(), ttl, RData::SOA(soa))
}

/// An SOA interval as hickory types it (the values are small constants).
fn seconds(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// Encodes `response`; if it exceeds `limit`, first drops the additional
/// section (optional data), then sends a clean truncated message.
pub fn message(mut response: Message, limit: usize, outcome: &mut Outcome) -> Option<Vec<u8>> {
    outcome.rcode = u16::from(response.metadata.response_code);
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    if !response.additionals.is_empty() {
        response.additionals.clear();
        let bytes = response.to_vec().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
    }
    response.answers.clear();
    response.authorities.clear();
    response.metadata.truncation = true;
    let bytes = response.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    // Only a request with many questions (another opcode's, echoed in
    // its NOTIMP) gets here: its questions alone are over the limit, so
    // the truncated reply carries the header (and OPT) only, and the
    // client asks again over TCP.
    response.queries.clear();
    response.to_vec().ok()
}
