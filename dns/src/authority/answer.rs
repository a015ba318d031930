//! The answer model: what the answer to a question is, before any
//! encoding. One lookup ([`lookup`]) decides the rcode, the records
//! (as picks from the snapshot, or SRV and PTR targets), whether the
//! asker's place chose them and whether they come from a fail-open
//! service; the fast path ([`crate::fast`]) and the full handler
//! ([`super::encode`]) only write it out.
//!
//! For an address question the model holds a [`Pick`] and a rotation
//! start, not the addresses: each encoder walks the pick as it writes,
//! so the fast path allocates nothing.

use std::net::IpAddr;

use crate::locality::AskerPlace;
use crate::metrics::AnswerTier;
use crate::qname::{Layout, QName, Reverse};
use crate::select::{self, Gate, Pick};
use crate::snapshot::{Kind, PtrName, ServiceView, Snapshot};
use meshdns_proto::model::Affinity;

use super::Authority;
use super::rules::Rcode;
use super::targets::{self, SrvTarget};

/// What a question asks for, by type: the record types the model knows
/// (ANY asks for all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wants {
    qtype: u16,
}

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_AXFR: u16 = 252;
pub const TYPE_IXFR: u16 = 251;
pub const TYPE_ANY: u16 = 255;

impl Wants {
    pub fn new(qtype: u16) -> Self {
        Wants { qtype }
    }

    /// Whether records of `rtype` answer the question.
    pub fn wants(self, rtype: u16) -> bool {
        self.qtype == rtype || self.qtype == TYPE_ANY
    }

    /// Whether the question is ANY: answered with one RRset (RFC 8482
    /// §4.2), the first of A, AAAA (for addresses) or SOA (at the apex)
    /// the name has.
    pub fn any(self) -> bool {
        self.qtype == TYPE_ANY
    }

    /// Whether the question is a zone transfer (refused: the data lives
    /// in the registry).
    pub fn transfer(self) -> bool {
        matches!(self.qtype, TYPE_AXFR | TYPE_IXFR)
    }
}

/// The answer to one question about a served name.
#[derive(Debug)]
pub struct Answer<'s> {
    /// [`Rcode::NoError`] or [`Rcode::NxDomain`].
    pub rcode: Rcode,
    pub records: Records<'s>,
    /// Whether the answer depends on the asker's place: locality chose
    /// it, or would have for an asker with a place (the untailored
    /// answer to a /0 query). The ECS scope rule,
    /// [`super::rules::ecs_scope`].
    pub located: bool,
    /// Whether `export-to` decided it: the name is under a service
    /// restricted to some places (or, for PTR, the address is one of
    /// such a service's), so the answer depends on who asks, even from a
    /// query that sent no bits of its address (ECS source prefix 0).
    pub gated: bool,
    /// Whether the records come from a service whose clusters are all
    /// stale (served anyway: fail open).
    pub fail_open: bool,
    /// The locality tier the selection chose (metrics).
    pub tier: Option<AnswerTier>,
}

/// The records of an answer.
#[derive(Debug)]
pub enum Records<'s> {
    /// NXDOMAIN or NODATA: the domain's SOA in the authority section,
    /// with the negative TTL.
    Negative,
    /// The apex's own SOA and NS.
    Apex { soa: bool, ns: bool },
    /// The MCS schema version, as TXT.
    Version,
    /// `count` A and/or AAAA records (TTL `view.ttl`) from `pick`, rotated
    /// by `start` and capped at `max_answers` per family.
    Addresses {
        view: &'s ServiceView,
        pick: Pick<'s>,
        start: usize,
        a: bool,
        aaaa: bool,
        count: usize,
    },
    /// One endpoint's addresses (a hostname under a cluster), `count` of
    /// them wanted; `cluster` is the view's cluster index.
    Host {
        view: &'s ServiceView,
        cluster: usize,
        addresses: &'s [IpAddr],
        a: bool,
        aaaa: bool,
        count: usize,
    },
    /// PTR records naming each service an address belongs to that the
    /// asker may see.
    Ptr(Vec<&'s PtrName>),
    /// SRV records with their targets' addresses as additional data.
    Srv {
        view: &'s ServiceView,
        targets: Vec<SrvTarget<'s>>,
    },
}

impl Answer<'_> {
    fn negative(rcode: Rcode) -> Self {
        Answer {
            rcode,
            records: Records::Negative,
            located: false,
            gated: false,
            fail_open: false,
            tier: None,
        }
    }

    fn exists(exists: bool) -> Self {
        Answer::negative(if exists {
            Rcode::NoError
        } else {
            Rcode::NxDomain
        })
    }

    fn records(records: Records<'_>) -> Answer<'_> {
        Answer {
            rcode: Rcode::NoError,
            records,
            located: false,
            gated: false,
            fail_open: false,
            tier: None,
        }
    }

    /// Whether the answer has records in its answer section.
    pub fn is_positive(&self) -> bool {
        !matches!(self.records, Records::Negative)
    }
}

/// Everything a lookup reads: fixed for one question.
#[derive(Debug, Clone, Copy)]
pub struct Question<'s> {
    pub snapshot: &'s Snapshot,
    pub authority: &'s Authority,
    /// Which served domain the name is under (an index into the
    /// authority's domains).
    pub domain: usize,
    pub wants: Wants,
    /// Where the asker is ([`super::rules::asker`]).
    pub place: Option<&'s AskerPlace>,
    /// Whose place `export-to` must allow ([`super::rules::gate`]).
    pub gate: Gate,
}

/// The answer to `question` about `name`.
pub fn lookup<'s>(question: Question<'s>, name: QName<'s>) -> Answer<'s> {
    let Question {
        snapshot, wants, ..
    } = question;
    let layout = question.authority.domains()[question.domain].layout;
    let view_of = |svc: &str, ns: &str| snapshot.service(svc, ns).map(|v| &**v);
    match name {
        QName::Apex => {
            // ANY: the SOA alone (RFC 8482).
            let (soa, ns) = (wants.wants(TYPE_SOA), wants.wants(TYPE_NS) && !wants.any());
            if soa || ns {
                Answer::records(Records::Apex { soa, ns })
            } else {
                Answer::negative(Rcode::NoError)
            }
        }
        QName::McsRoot => Answer::exists(!snapshot.is_empty()),
        QName::Namespace { ns } => Answer::exists(snapshot.has_namespace(ns)),
        QName::Service { ns, svc } => service(question, view_of(svc, ns)),
        QName::Cluster { ns, svc, cluster } => {
            under(question, view_of(svc, ns), |view| {
                match view.cluster(cluster) {
                    // The MCS spec has no per-cluster service records; the
                    // name is an empty non-terminal above the hostnames.
                    Some(_) if layout == Layout::Mcs => Answer::negative(Rcode::NoError),
                    Some((index, _)) => addresses(question, view, Pick::cluster_name(view, index)),
                    None => Answer::negative(Rcode::NxDomain),
                }
            })
        }
        QName::Host {
            ns,
            svc,
            cluster,
            host,
        } => under(question, view_of(svc, ns), |view| {
            host_name(question, view, cluster, host)
        }),
        QName::SrvProto { ns, svc, proto } => under(question, view_of(svc, ns), |view| {
            Answer::exists(
                view.clusters
                    .iter()
                    .any(|c| c.ports().iter().any(|p| p.protocol.label() == proto)),
            )
        }),
        QName::Srv {
            ns,
            svc,
            proto,
            port,
        } => under(question, view_of(svc, ns), |view| {
            srv(question, view, proto, port)
        }),
        QName::DnsVersion => {
            if wants.wants(TYPE_TXT) {
                Answer::records(Records::Version)
            } else {
                Answer::negative(Rcode::NoError)
            }
        }
        QName::Reverse(Reverse::Prefix(low, high)) => {
            Answer::exists(snapshot.has_reverse_range(low, high))
        }
        QName::Reverse(Reverse::Address(address)) => ptr(question, address),
        QName::Nothing => Answer::negative(Rcode::NxDomain),
    }
}

/// Every answer for a name under a service (the service, its cluster,
/// host, `_proto` and SRV names): NXDOMAIN without the service; for a
/// service whose `export-to` restricts it, NXDOMAIN for an asker outside
/// it and, inside or out, marked as decided by who asks (its ECS scope
/// is never 0, or a resolver would serve it to every client: an
/// outsider an insider's addresses, an insider an outsider's NXDOMAIN).
/// The one place that check is made, whatever the name's form.
fn under<'s>(
    question: Question<'s>,
    view: Option<&'s ServiceView>,
    answer: impl FnOnce(&'s ServiceView) -> Answer<'s>,
) -> Answer<'s> {
    let Some(view) = view else {
        return Answer::negative(Rcode::NxDomain);
    };
    if view.export_to.is_empty() {
        return answer(view);
    }
    let snapshot = question.snapshot;
    let mut answer = if select::exported_to(view, &snapshot.locality, question.place, question.gate)
    {
        answer(view)
    } else {
        Answer::negative(Rcode::NxDomain)
    };
    answer.gated = true;
    answer
}

/// `<host>.<cluster>.<svc>.<ns>`: one endpoint's addresses; NODATA for
/// an endpoint without the asked family (or not serving), NXDOMAIN
/// without the endpoint.
fn host_name<'s>(
    question: Question<'s>,
    view: &'s ServiceView,
    cluster: &str,
    host: &str,
) -> Answer<'s> {
    let wants = question.wants;
    let found = view
        .cluster(cluster)
        .and_then(|(i, c)| c.endpoint(host).map(|e| (i, e)));
    match found {
        Some((index, (ep, true))) => {
            let a = wants.wants(TYPE_A);
            // ANY: the A RRset when there is one, else AAAA (RFC 8482).
            let aaaa = wants.wants(TYPE_AAAA)
                && !(wants.any() && ep.addresses.iter().any(IpAddr::is_ipv4));
            let count = ep
                .addresses
                .iter()
                .filter(|ip| if ip.is_ipv4() { a } else { aaaa })
                .take(question.authority.max_answers)
                .count();
            if count == 0 {
                return Answer::negative(Rcode::NoError);
            }
            Answer::records(Records::Host {
                view,
                cluster: index,
                addresses: &ep.addresses,
                a,
                aaaa,
                count,
            })
        }
        Some(_) => Answer::negative(Rcode::NoError),
        None => Answer::negative(Rcode::NxDomain),
    }
}

/// A reverse name's PTR records: the names of the services owning the
/// address, less those whose `export-to` leaves the asker out (NXDOMAIN
/// when that is all of them). Gated when any of them is restricted: who
/// asks then decides what the name holds.
fn ptr<'s>(question: Question<'s>, address: IpAddr) -> Answer<'s> {
    let snapshot = question.snapshot;
    let Some(names) = snapshot.ptr(&address) else {
        return Answer::negative(Rcode::NxDomain);
    };
    let mut gated = false;
    let seen: Vec<&PtrName> = names
        .iter()
        .filter(|name| {
            let Some(view) = snapshot.service(&name.service, &name.namespace) else {
                return false;
            };
            if view.export_to.is_empty() {
                return true;
            }
            gated = true;
            select::exported_to(view, &snapshot.locality, question.place, question.gate)
        })
        .collect();
    let mut answer = if seen.is_empty() && !names.is_empty() {
        Answer::negative(Rcode::NxDomain)
    } else if question.wants.wants(TYPE_PTR) && !seen.is_empty() {
        Answer::records(Records::Ptr(seen))
    } else {
        Answer::negative(Rcode::NoError)
    };
    answer.gated = gated;
    answer
}

/// The service's targets chosen for the asker. The answer is located
/// unless the service answers every place alike: affinity `none`, a
/// primary that every asker is pinned to, weight-0 targets as the last
/// resort (whether `export-to` decided who sees it at all is
/// [`under`]'s to say).
fn select<'s>(question: Question<'s>, view: &'s ServiceView) -> (Pick<'s>, Answer<'s>) {
    let pick = select::select(view, question.place, question.authority.min_healthy);
    let everywhere = view.affinity == Affinity::None
        || matches!(pick.tier, select::Tier::Primary | select::Tier::LastResort);
    let answer = Answer {
        rcode: Rcode::NoError,
        records: Records::Negative,
        located: !everywhere,
        gated: false,
        fail_open: view.fail_open,
        tier: Some(AnswerTier::of(
            pick.tier,
            question.place.is_some(),
            view.fail_open,
        )),
    };
    (pick, answer)
}

/// A service name (`<svc>.<ns>.<domain>`): its selected addresses, or
/// NXDOMAIN without the service. The fast path finds the view by its key
/// without allocating, and comes in here.
pub fn service<'s>(question: Question<'s>, view: Option<&'s ServiceView>) -> Answer<'s> {
    under(question, view, |view| service_addresses(question, view))
}

/// A visible service's selected addresses, or NODATA.
fn service_addresses<'s>(question: Question<'s>, view: &'s ServiceView) -> Answer<'s> {
    let (pick, answer) = select(question, view);
    let Answer { records, .. } = addresses(question, view, pick);
    if matches!(records, Records::Negative) {
        // NODATA: no tier, no fail-open. Located only if another place
        // could have had addresses: not when the service has none of the
        // asked family anywhere.
        let wants = question.wants;
        let anywhere = (wants.wants(TYPE_A) && view.all.total(Kind::V4) > 0)
            || (wants.wants(TYPE_AAAA) && view.all.total(Kind::V6) > 0);
        return Answer {
            fail_open: false,
            tier: None,
            located: answer.located && anywhere,
            ..answer
        };
    }
    Answer { records, ..answer }
}

/// The addresses of `pick` the question wants; NODATA when there are none.
fn addresses<'s>(question: Question<'s>, view: &'s ServiceView, pick: Pick<'s>) -> Answer<'s> {
    let wants = question.wants;
    let (a, aaaa) = (wants.wants(TYPE_A), wants.wants(TYPE_AAAA));
    let start = select::next_rotation();
    let max = question.authority.max_answers;
    let v4 = if a { pick.count(Kind::V4, max) } else { 0 };
    // ANY: the A RRset when there is one, else AAAA (RFC 8482).
    let aaaa = aaaa && !(wants.any() && v4 > 0);
    let count = v4 + if aaaa { pick.count(Kind::V6, max) } else { 0 };
    if count == 0 {
        return Answer::negative(Rcode::NoError);
    }
    Answer::records(Records::Addresses {
        view,
        pick,
        start,
        a,
        aaaa,
        count,
    })
}

/// `_<port>._<proto>.<svc>.<ns>`: one SRV record per selected target that
/// has the port; NXDOMAIN when no cluster has it.
fn srv<'s>(question: Question<'s>, view: &'s ServiceView, proto: &str, port: &str) -> Answer<'s> {
    if !(0..view.clusters.len()).any(|c| targets::port_of(view, c, proto, port).is_some()) {
        return Answer::negative(Rcode::NxDomain);
    }
    if !question.wants.wants(TYPE_SRV) {
        return Answer::negative(Rcode::NoError);
    }
    let (pick, answer) = select(question, view);
    let domain = &question.authority.domains()[question.domain];
    let start = select::next_rotation();
    let targets = targets::srv(
        question.snapshot,
        view,
        domain,
        pick,
        (start, question.authority.max_answers),
        (proto, port),
    );
    if targets.is_empty() {
        return Answer {
            fail_open: false,
            tier: None,
            ..answer
        };
    }
    Answer {
        records: Records::Srv { view, targets },
        ..answer
    }
}
