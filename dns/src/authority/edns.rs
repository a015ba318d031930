//! The query's OPT record read through hickory: its COOKIE option
//! answered, its Client Subnet option taken out, and our own OPT built.

use std::net::IpAddr;

use hickory_proto::op::Edns;
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};

use crate::cookie;

use super::Authority;
use super::rules::{self, ClientSubnet};

/// The COOKIE option of a query's OPT answered: `None` without one; an
/// error when it is malformed or repeated.
pub fn answer_cookie(
    authority: &Authority,
    edns: &Edns,
    source: IpAddr,
) -> Result<Option<cookie::Answer>, cookie::Malformed> {
    let mut found = None;
    for (code, option) in edns.options().as_ref() {
        if *code != EdnsCode::Cookie {
            continue;
        }
        let data: &[u8] = match option {
            EdnsOption::Unknown(_, data) => data,
            _ => &[],
        };
        if found.is_some() {
            return Err(cookie::Malformed(data.len()));
        }
        found = Some(authority.cookies().answer(data, source)?);
    }
    Ok(found)
}

/// The query's Client Subnet option, if it has one.
pub fn client_subnet(edns: &Edns) -> Option<ClientSubnet> {
    match edns.option(EdnsCode::Subnet) {
        Some(EdnsOption::Subnet(subnet)) => Some(ClientSubnet {
            address: subnet.addr(),
            source_prefix: subnet.source_prefix(),
        }),
        _ => None,
    }
}

/// Our OPT in reply to the query's ([`rules::OPT_PAYLOAD`]).
pub fn reply_opt(query: &Edns) -> Edns {
    let mut ours = Edns::new();
    ours.set_max_payload(rules::OPT_PAYLOAD);
    ours.set_version(0);
    // RFC 3225: the DO bit is copied from the query.
    ours.set_dnssec_ok(query.flags().dnssec_ok);
    ours
}

/// The ECS option echoed with `scope` (RFC 7871 §7.2.1).
pub fn echo_subnet(ours: &mut Edns, subnet: ClientSubnet, scope: u8) {
    let echo = hickory_proto::rr::rdata::opt::ClientSubnet::new(
        subnet.address,
        subnet.source_prefix,
        scope,
    );
    ours.options_mut().insert(EdnsOption::Subnet(echo));
}

/// Our NSID, when the query asks for one and we have one (RFC 5001).
pub fn answer_nsid(authority: &Authority, query: &Edns, ours: &mut Edns) {
    let asked = query
        .options()
        .as_ref()
        .iter()
        .any(|(code, _)| u16::from(*code) == super::nsid::OPTION_NSID);
    if let (true, Some(nsid)) = (asked, authority.nsid()) {
        ours.options_mut()
            .insert(EdnsOption::Unknown(super::nsid::OPTION_NSID, nsid.to_vec()));
    }
}

/// The COOKIE option answered.
pub fn insert_cookie(ours: &mut Edns, answer: &cookie::Answer) {
    ours.options_mut().insert(EdnsOption::Unknown(
        u16::from(EdnsCode::Cookie),
        answer.data.to_vec(),
    ));
}
