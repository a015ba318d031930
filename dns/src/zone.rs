//! The answer path: request bytes in, response bytes out. The only module
//! (with `server`) that knows hickory types, so a hickory API change
//! touches these files alone.
//!
//! It reads one [`Snapshot`] and takes no lock. It builds every response
//! itself, EDNS included, and truncates by rebuilding a clean message
//! (header, question, OPT) rather than cutting an encoded one.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::cookie::{self, Cookies};
use crate::locality::AskerPlace;
use crate::metrics::{AnswerTier, Outcome, Served};
use crate::qname::{self, Domain, Layout, QName, Reverse};
use crate::select::{self, Pick};
use crate::snapshot::{ServiceView, Snapshot, Target};

/// The MCS DNS schema version `dns-version.clusterset.local` answers.
pub const MCS_DNS_VERSION: &str = "1.0.0";

/// The largest UDP payload meshdns sends or advertises (DNS Flag Day 2020).
pub const MAX_UDP_PAYLOAD: u16 = 1232;

/// How a query arrived: decides the size limit of the response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The served domains and answer settings, fixed at start.
#[derive(Debug, Clone)]
pub struct Zone {
    domains: Vec<Domain>,
    apexes: Vec<Name>,
    nameservers: Vec<Name>,
    mailboxes: Vec<Name>,
    /// TTL of the SOA and NS records (and of answers without their own).
    pub ttl: u32,
    /// SOA minimum: how long resolvers cache NXDOMAIN and NODATA.
    pub negative_ttl: u32,
    pub max_answers: usize,
    /// Healthy targets a tier needs to answer alone.
    pub min_healthy: usize,
    /// The DNS Cookie secret (RFC 7873, RFC 9018).
    cookies: Cookies,
}

impl Zone {
    pub fn new(
        domains: Vec<Domain>,
        ttl: u32,
        negative_ttl: u32,
        max_answers: usize,
        min_healthy: usize,
    ) -> Result<Self, String> {
        let name = |s: String| Name::from_ascii(&s).map_err(|e| format!("{s}: {e}"));
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
        let nameservers = domains
            .iter()
            .map(|d| {
                name(format!(
                    "ns.dns.{}",
                    if d.is_forward() {
                        d.fqdn()
                    } else {
                        primary.clone()
                    }
                ))
            })
            .collect::<Result<_, _>>()?;
        let mailboxes = domains
            .iter()
            .map(|d| {
                name(format!(
                    "hostmaster.{}",
                    if d.is_forward() {
                        d.fqdn()
                    } else {
                        primary.clone()
                    }
                ))
            })
            .collect::<Result<_, _>>()?;
        Ok(Zone {
            domains,
            apexes,
            nameservers,
            mailboxes,
            ttl,
            negative_ttl,
            max_answers,
            min_healthy,
            cookies: Cookies::random(),
        })
    }

    /// The same zone with this DNS Cookie secret (replicas behind one
    /// address share one; the default is random per process).
    pub fn with_cookies(mut self, cookies: Cookies) -> Self {
        self.cookies = cookies;
        self
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
    fn ptr_domain(&self) -> &Domain {
        self.domains
            .iter()
            .find(|d| d.is_forward())
            .unwrap_or(&self.domains[0])
    }

    fn soa(&self, domain: usize, serial: u32, ttl: u32) -> Record {
        let soa = SOA::new(
            self.nameservers[domain].clone(),
            self.mailboxes[domain].clone(),
            serial,
            3600,
            600,
            86_400,
            self.negative_ttl,
        );
        Record::from_rdata(self.apexes[domain].clone(), ttl, RData::SOA(soa))
    }
}

/// Answers one DNS message. `None` means drop it: it is too short to
/// answer, or is itself a response.
pub fn respond(
    snapshot: &Snapshot,
    zone: &Zone,
    packet: &[u8],
    source: IpAddr,
    transport: Transport,
) -> Option<(Vec<u8>, Outcome)> {
    let mut outcome = Outcome::default();
    let reply = respond_to(snapshot, zone, packet, source, transport, &mut outcome)?;
    Some((reply, outcome))
}

fn respond_to(
    snapshot: &Snapshot,
    zone: &Zone,
    packet: &[u8],
    source: IpAddr,
    transport: Transport,
    outcome: &mut Outcome,
) -> Option<Vec<u8>> {
    if packet.len() < 12 || packet[2] & 0x80 != 0 {
        return None;
    }
    let request = match Message::from_vec(packet) {
        Ok(request) => request,
        Err(_) => {
            let opcode = (packet[2] >> 3) & 0x0f;
            let rcode = if opcode == 0 {
                ResponseCode::FormErr
            } else {
                ResponseCode::NotImp
            };
            outcome.rcode = u16::from(rcode);
            return Some(header_only(packet, rcode));
        }
    };
    let mut response = Message::new(
        request.metadata.id,
        MessageType::Response,
        request.metadata.op_code,
    );
    response.metadata = Metadata::response_from_request(&request.metadata);
    let limit = match (transport, &request.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, Some(edns)) => usize::from(edns.max_payload().clamp(512, MAX_UDP_PAYLOAD)),
        (Transport::Udp, None) => 512,
    };
    let mut cookie = None;
    if let Some(edns) = &request.edns {
        let mut ours = Edns::new();
        ours.set_max_payload(MAX_UDP_PAYLOAD);
        ours.set_version(0);
        // RFC 3225: the DO bit is copied from the query.
        ours.set_dnssec_ok(edns.flags().dnssec_ok);
        match answer_cookie(zone, edns, source) {
            Ok(answer) => {
                if let Some(answer) = answer {
                    outcome.cookie = answer.verified;
                    ours.options_mut().insert(EdnsOption::Unknown(
                        u16::from(EdnsCode::Cookie),
                        answer.data.to_vec(),
                    ));
                }
                cookie = answer;
            }
            Err(_) => {
                // RFC 7873 §5.2.2: a malformed COOKIE option is FORMERR
                // (with our OPT and the question, RFC 6891 §7).
                response.edns = Some(ours);
                response.queries = request.queries.clone();
                response.metadata.response_code = ResponseCode::FormErr;
                return encode(response, limit, outcome);
            }
        }
        response.edns = Some(ours);
    }
    if request.metadata.op_code != OpCode::Query {
        response.queries = request.queries.clone();
        response.metadata.response_code = ResponseCode::NotImp;
        return encode(response, limit, outcome);
    }
    if request.queries.is_empty() && cookie.is_some() {
        // RFC 7873 §5.4: a query with no question asks for a server cookie.
        return encode(response, limit, outcome);
    }
    if request.queries.len() != 1 {
        response.metadata.response_code = ResponseCode::FormErr;
        return encode(response, limit, outcome);
    }
    let query = &request.queries[0];
    response.queries = vec![query.clone()];
    outcome.qtype = Some(u16::from(query.query_type()));
    if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        response.metadata.response_code = ResponseCode::BADVERS;
        return encode(response, limit, outcome);
    }
    if query.query_class() != DNSClass::IN {
        response.metadata.response_code = ResponseCode::Refused;
        return encode(response, limit, outcome);
    }
    let lower = query.name().to_lowercase();
    let labels: Vec<&str> = lower
        .iter()
        .map(|l| std::str::from_utf8(l).unwrap_or(""))
        .collect();
    let Some((domain, qname)) = qname::parse(&labels, zone.domains()) else {
        response.metadata.response_code = ResponseCode::Refused;
        return encode(response, limit, outcome);
    };
    response.metadata.authoritative = true;
    if matches!(query.query_type(), RecordType::AXFR | RecordType::IXFR) {
        // Zone transfers are not offered: the data lives in the registry.
        response.metadata.authoritative = false;
        response.metadata.response_code = ResponseCode::Refused;
        return encode(response, limit, outcome);
    }
    let ecs = request
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::Subnet) {
            Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
            _ => None,
        });
    outcome.ecs = ecs.is_some();
    let asker = asker(snapshot, source, ecs.as_ref());
    let mut lookup = Lookup {
        snapshot,
        zone,
        domain,
        query,
        asker,
        located: false,
        fail_open: false,
        tier: None,
        served: Served::default(),
    };
    let answer = lookup.run(qname);
    outcome.fail_open = lookup.fail_open && matches!(answer, Found::Records { .. });
    if matches!(answer, Found::Records { .. }) {
        outcome.tier = lookup.tier;
        outcome.served = lookup.served;
    }
    if let (Some(subnet), Some(edns)) = (ecs, response.edns.as_mut()) {
        // RFC 7871: echo the option; the scope says how much of the
        // address the answer depends on (none, unless locality chose it).
        let scope = if lookup.located {
            subnet.source_prefix()
        } else {
            0
        };
        let echo = ClientSubnet::new(subnet.addr(), subnet.source_prefix(), scope);
        edns.options_mut().insert(EdnsOption::Subnet(echo));
    }
    match answer {
        Found::Records {
            answers,
            additionals,
        } => {
            response.answers = answers;
            response.additionals = additionals;
        }
        Found::NoData | Found::NxDomain => {
            if matches!(answer, Found::NxDomain) {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            // RFC 2308: the negative TTL is the smaller of the SOA's TTL and minimum.
            let ttl = zone.ttl.min(zone.negative_ttl);
            response.authorities = vec![zone.soa(domain, snapshot.serial, ttl)];
        }
    }
    encode(response, limit, outcome)
}

/// The COOKIE option of a query's OPT answered: `None` without one; an
/// error when it is malformed or repeated.
fn answer_cookie(
    zone: &Zone,
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
        found = Some(zone.cookies.answer(data, source)?);
    }
    Ok(found)
}

/// Where the asker is: the ECS subnet when the query has one (a source
/// prefix of 0 asks for no tailoring), else the source address.
pub fn asker(
    snapshot: &Snapshot,
    source: IpAddr,
    ecs: Option<&ClientSubnet>,
) -> Option<AskerPlace> {
    match ecs {
        Some(subnet) if subnet.source_prefix() == 0 => None,
        Some(subnet) => snapshot
            .locality
            .lookup(subnet.addr(), subnet.source_prefix()),
        None => snapshot.locality.lookup(source, 128),
    }
}

/// A response of just a header: for a message too broken to echo.
fn header_only(packet: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[0] = packet[0];
    out[1] = packet[1];
    // QR, the request's opcode and RD; everything else clear.
    out[2] = 0x80 | (packet[2] & 0x79);
    out[3] = (u16::from(rcode) & 0x0f) as u8;
    out
}

/// Encodes `response`; if it exceeds `limit`, first drops the additional
/// section (optional data), then sends a clean truncated message.
fn encode(mut response: Message, limit: usize, outcome: &mut Outcome) -> Option<Vec<u8>> {
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

enum Found {
    Records {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    NoData,
    NxDomain,
}

struct Lookup<'a> {
    snapshot: &'a Snapshot,
    zone: &'a Zone,
    domain: usize,
    query: &'a Query,
    asker: Option<AskerPlace>,
    /// Whether the answer depended on the asker's place.
    located: bool,
    /// Whether it came from a service whose clusters are all stale.
    fail_open: bool,
    /// The tier the selection chose (metrics).
    tier: Option<AnswerTier>,
    /// The clusters whose records the answer carries (metrics).
    served: Served,
}

impl Lookup<'_> {
    fn layout(&self) -> Layout {
        self.zone.domains()[self.domain].layout
    }

    fn select<'v>(&mut self, view: &'v ServiceView) -> Pick<'v> {
        self.located = true;
        self.fail_open = view.fail_open;
        let pick = select::select(view, self.asker.as_ref(), self.zone.min_healthy);
        self.tier = Some(AnswerTier::of(
            pick.tier,
            self.asker.is_some(),
            view.fail_open,
        ));
        pick
    }

    fn run(&mut self, qname: QName<'_>) -> Found {
        let qtype = self.query.query_type();
        let snapshot = self.snapshot;
        match qname {
            QName::Apex => {
                let mut answers = Vec::new();
                if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                    answers.push(self.zone.soa(self.domain, snapshot.serial, self.zone.ttl));
                }
                if matches!(qtype, RecordType::NS | RecordType::ANY) {
                    let ns = NS(self.zone.nameservers[self.domain].clone());
                    answers.push(Record::from_rdata(
                        self.zone.apexes[self.domain].clone(),
                        self.zone.ttl,
                        RData::NS(ns),
                    ));
                }
                records(answers, Vec::new())
            }
            QName::McsRoot => exists(!snapshot.is_empty()),
            QName::Namespace { ns } => exists(snapshot.has_namespace(ns)),
            QName::Service { ns, svc } => match snapshot.service(svc, ns) {
                Some(view) => {
                    let pick = self.select(view);
                    self.addresses(view, pick)
                }
                None => Found::NxDomain,
            },
            QName::Cluster { ns, svc, cluster } => {
                match snapshot
                    .service(svc, ns)
                    .and_then(|v| v.cluster(cluster).map(|c| (v, c)))
                {
                    // The MCS spec has no per-cluster service records; the
                    // name is an empty non-terminal above the hostnames.
                    Some(_) if self.layout() == Layout::Mcs => Found::NoData,
                    Some((view, (index, _))) => self.addresses(view, Pick::cluster(view, index)),
                    None => Found::NxDomain,
                }
            }
            QName::DnsVersion => {
                let mut answers = Vec::new();
                if matches!(qtype, RecordType::TXT | RecordType::ANY) {
                    let txt = TXT::new(vec![MCS_DNS_VERSION.to_owned()]);
                    answers.push(Record::from_rdata(
                        self.query.name().clone(),
                        self.zone.ttl,
                        RData::TXT(txt),
                    ));
                }
                records(answers, Vec::new())
            }
            QName::Reverse(Reverse::Prefix(low, high)) => {
                exists(snapshot.has_reverse_range(low, high))
            }
            QName::Reverse(Reverse::Address(address)) => match snapshot.ptr(&address) {
                Some(names) if matches!(qtype, RecordType::PTR | RecordType::ANY) => {
                    let domain = self.zone.ptr_domain();
                    let answers = names
                        .iter()
                        .filter_map(|n| {
                            let text = match &n.host {
                                Some((host, cluster)) => format!(
                                    "{host}.{cluster}.{}.{}.{}{}",
                                    n.service,
                                    n.namespace,
                                    domain.infix(),
                                    domain.fqdn()
                                ),
                                None => format!(
                                    "{}.{}.{}{}",
                                    n.service,
                                    n.namespace,
                                    domain.infix(),
                                    domain.fqdn()
                                ),
                            };
                            let name = Name::from_ascii(&text).ok()?;
                            Some(Record::from_rdata(
                                self.query.name().clone(),
                                self.zone.ttl,
                                RData::PTR(PTR(name)),
                            ))
                        })
                        .collect();
                    records(answers, Vec::new())
                }
                Some(_) => Found::NoData,
                None => Found::NxDomain,
            },
            QName::Host {
                ns,
                svc,
                cluster,
                host,
            } => {
                let found = snapshot
                    .service(svc, ns)
                    .and_then(|v| v.cluster(cluster).map(|(_, c)| (v, c)))
                    .and_then(|(v, c)| c.endpoint(host).map(|e| (v, e)));
                match found {
                    Some((view, (ep, true))) => {
                        let answers = self.address_records(view.ttl, &ep.addresses);
                        if !answers.is_empty()
                            && let Some((_, c)) = view.cluster(cluster)
                        {
                            self.served.add(c.id());
                        }
                        records(answers, Vec::new())
                    }
                    Some(_) => Found::NoData,
                    None => Found::NxDomain,
                }
            }
            QName::SrvProto { ns, svc, proto } => {
                exists(snapshot.service(svc, ns).is_some_and(|v| {
                    v.clusters
                        .iter()
                        .any(|c| c.ports().iter().any(|p| p.protocol.label() == proto))
                }))
            }
            QName::Srv {
                ns,
                svc,
                proto,
                port,
            } => match snapshot.service(svc, ns) {
                Some(view) => self.srv(view, proto, port),
                None => Found::NxDomain,
            },
            QName::Nothing => Found::NxDomain,
        }
    }

    /// A/AAAA (or both for ANY) from `targets`, rotated and capped.
    fn addresses(&mut self, view: &ServiceView, pick: Pick<'_>) -> Found {
        let qtype = self.query.query_type();
        let name = self.query.name();
        let start = select::next_rotation();
        let max = self.zone.max_answers;
        let mut answers = Vec::new();
        let served = &mut self.served;
        if matches!(qtype, RecordType::A | RecordType::ANY) {
            answers.extend(pick.v4_by_cluster(start, max).map(|(c, a)| {
                served.add(view.clusters[c as usize].id());
                Record::from_rdata(name.clone(), view.ttl, RData::A(A(a)))
            }));
        }
        if matches!(qtype, RecordType::AAAA | RecordType::ANY) {
            answers.extend(pick.v6_by_cluster(start, max).map(|(c, a)| {
                served.add(view.clusters[c as usize].id());
                Record::from_rdata(name.clone(), view.ttl, RData::AAAA(AAAA(a)))
            }));
        }
        records(answers, Vec::new())
    }

    fn address_records(&self, ttl: u32, addresses: &[IpAddr]) -> Vec<Record> {
        let qtype = self.query.query_type();
        let name = self.query.name();
        addresses
            .iter()
            .filter_map(|a| match a {
                IpAddr::V4(v4) if matches!(qtype, RecordType::A | RecordType::ANY) => {
                    Some(RData::A(A(*v4)))
                }
                IpAddr::V6(v6) if matches!(qtype, RecordType::AAAA | RecordType::ANY) => {
                    Some(RData::AAAA(AAAA(*v6)))
                }
                _ => None,
            })
            .take(self.zone.max_answers)
            .map(|data| Record::from_rdata(name.clone(), ttl, data))
            .collect()
    }

    /// SRV records, one per selected target that has the port, with the
    /// targets' addresses in the additional section.
    fn srv(&mut self, view: &ServiceView, proto: &str, port_name: &str) -> Found {
        let port_of = |cluster: usize| {
            view.clusters[cluster]
                .ports()
                .iter()
                .find(|p| {
                    p.protocol.label() == proto
                        && p.name.as_ref().is_some_and(|n| n.as_str() == port_name)
                })
                .map(|p| p.port.get())
        };
        if !(0..view.clusters.len()).any(|c| port_of(c).is_some()) {
            return Found::NxDomain;
        }
        if !matches!(self.query.query_type(), RecordType::SRV | RecordType::ANY) {
            return Found::NoData;
        }
        let pick = self.select(view);
        let domain = &self.zone.domains()[self.domain];
        let suffix = format!(
            "{}.{}.{}{}",
            view.key.name,
            view.key.namespace,
            domain.infix(),
            domain.fqdn()
        );
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let start = select::next_rotation();
        let mcs = self.layout() == Layout::Mcs;
        let mut service_ports: Vec<u16> = Vec::new();
        for target in pick.targets(start, self.zone.max_answers) {
            let cluster = &view.clusters[target.cluster()];
            let Some(port) = port_of(target.cluster()) else {
                continue;
            };
            if mcs && let Target::ClusterIp { .. } = target {
                // MCS: a ClusterSetIP service's SRV target is the service
                // name itself, one record per port.
                let Ok(service_name) = Name::from_ascii(&suffix) else {
                    continue;
                };
                self.served.add(cluster.id());
                if !service_ports.contains(&port) {
                    service_ports.push(port);
                    answers.push(Record::from_rdata(
                        self.query.name().clone(),
                        view.ttl,
                        RData::SRV(SRV::new(0, 1, port, service_name.clone())),
                    ));
                }
                additionals.extend(cluster.cluster_ips().iter().map(|a| {
                    let data = match a {
                        IpAddr::V4(v4) => RData::A(A(*v4)),
                        IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                    };
                    Record::from_rdata(service_name.clone(), view.ttl, data)
                }));
                continue;
            }
            let (text, addresses) = match target {
                Target::Endpoint { endpoint, .. } => {
                    let ep = cluster.endpoint_model(endpoint);
                    (
                        format!(
                            "{}.{}.{suffix}",
                            crate::snapshot::endpoint_label(ep),
                            cluster.name()
                        ),
                        ep.addresses.as_slice(),
                    )
                }
                Target::ClusterIp { .. } => (
                    format!("{}.{suffix}", cluster.name()),
                    cluster.cluster_ips(),
                ),
            };
            let Ok(target_name) = Name::from_ascii(&text) else {
                continue;
            };
            self.served.add(cluster.id());
            answers.push(Record::from_rdata(
                self.query.name().clone(),
                view.ttl,
                RData::SRV(SRV::new(0, 1, port, target_name.clone())),
            ));
            additionals.extend(addresses.iter().map(|a| {
                let data = match a {
                    IpAddr::V4(v4) => RData::A(A(*v4)),
                    IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
                };
                Record::from_rdata(target_name.clone(), view.ttl, data)
            }));
        }
        records(answers, additionals)
    }
}

fn records(answers: Vec<Record>, additionals: Vec<Record>) -> Found {
    if answers.is_empty() {
        Found::NoData
    } else {
        Found::Records {
            answers,
            additionals,
        }
    }
}

fn exists(exists: bool) -> Found {
    if exists {
        Found::NoData
    } else {
        Found::NxDomain
    }
}
