//! Every DNS rule of DESIGN.md "Names", over real UDP and TCP sockets,
//! checked by a strict client. One test per rule family; each row says
//! what it checks.

use std::time::Duration;

use RecordType::{A, AAAA, AXFR, IXFR, SRV, TXT};
use Reply::{Answer, NoData, NxDomain, Refused};
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{DNSClass, RData, RecordType};
use meshdns_tests::dns::{
    self, Ask, EdnsOpts, addresses, query, query_srv, sorted, srv, srv_targets,
};
use meshdns_tests::wire::{header, question};
use meshdns_tests::{Fleet, fleet};

fn soa_ttl_in_authority(m: &Message) -> Option<u32> {
    match m.authorities.as_slice() {
        [r] if r.record_type() == RecordType::SOA => Some(r.ttl),
        _ => None,
    }
}

/// The reply a case expects.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// NOERROR, AA, exactly these addresses, no SOA.
    Answer(&'static [&'static str]),
    /// NOERROR, AA, no answer, the SOA in authority.
    NoData,
    /// NXDOMAIN, AA, no answer, the SOA in authority.
    NxDomain,
    /// REFUSED, not authoritative, nothing else.
    Refused,
}

impl Reply {
    /// Rcode, AA, addresses, SOA in authority.
    fn parts(self) -> (ResponseCode, bool, &'static [&'static str], bool) {
        match self {
            Reply::Answer(addresses) => (ResponseCode::NoError, true, addresses, false),
            Reply::NoData => (ResponseCode::NoError, true, &[], true),
            Reply::NxDomain => (ResponseCode::NXDomain, true, &[], true),
            Reply::Refused => (ResponseCode::Refused, false, &[], false),
        }
    }
}

/// One row of the table: a question, who asks it and how, and the reply.
#[derive(Debug, Clone, Copy)]
struct Case {
    /// The rule the row checks, printed when it fails.
    rule: &'static str,
    name: &'static str,
    qtype: RecordType,
    class: DNSClass,
    /// The asker's source address; `None` is 127.0.0.1, in no cluster.
    from: Option<&'static str>,
    /// Asked over TCP only (zone transfers); otherwise over UDP and TCP.
    tcp_only: bool,
    reply: Reply,
}

const fn case(name: &'static str, qtype: RecordType, reply: Reply, rule: &'static str) -> Case {
    Case {
        rule,
        name,
        qtype,
        class: DNSClass::IN,
        from: None,
        tcp_only: false,
        reply,
    }
}

impl Case {
    const fn from(self, asker: &'static str) -> Case {
        Case {
            from: Some(asker),
            ..self
        }
    }
    const fn class(self, class: DNSClass) -> Case {
        Case { class, ..self }
    }
    const fn tcp_only(self) -> Case {
        Case {
            tcp_only: true,
            ..self
        }
    }
}

const WEB: &[&str] = &["10.1.0.11", "10.1.0.12", "10.2.0.11", "10.3.0.11"];
const WEB_EAST_1: &[&str] = &["10.1.0.11", "10.1.0.12"];
/// The asker in west-1 (its client CIDR in the standard fleet).
const IN_WEST_1: &str = "127.0.0.4";

/// Every name rule of the standard fleet (tests/src/fleet.rs), one row each.
#[rustfmt::skip]
const CASES: &[Case] = &[
    case("web.shop.global",                  A,    Answer(WEB),              "ready endpoints of every cluster; not-ready ones never"),
    case("web.shop.global",                  AAAA, Answer(&["fd00:3::11"]),  "ready endpoints of every cluster, IPv6"),
    case("WeB.ShOp.GlObAl",                  A,    Answer(WEB),              "case-insensitive, question echoed as asked"),
    case("east-1.web.shop.global",           A,    Answer(WEB_EAST_1),       "<cluster>.<svc>.<ns>: that cluster only"),
    case("west-1.web.shop.global",           AAAA, Answer(&["fd00:3::11"]),  "<cluster>.<svc>.<ns>: that cluster only, IPv6"),
    case("east-1.web.shop.global",           A,    Answer(WEB_EAST_1),       "<cluster>.<svc>.<ns>: that cluster whoever asks").from(IN_WEST_1),
    case("east-2.db.data.global",            A,    NxDomain,                 "a cluster that does not export the service"),
    case("db-0.east-1.db.data.global",       A,    Answer(&["10.1.2.10"]),   "<hostname>.<cluster>.<svc>.<ns>: that one endpoint"),
    case("db-0.east-1.db.data.global",       A,    Answer(&["10.1.2.10"]),   "<hostname>.<cluster>.<svc>.<ns>: that endpoint whoever asks").from(IN_WEST_1),
    case("db-1.east-1.db.data.global",       A,    NoData,                   "an endpoint that exists but is not ready: no data"),
    case("10-1-0-12.east-1.web.shop.global", A,    Answer(&["10.1.0.12"]),   "endpoints without a hostname are named by their dashed address"),
    case("db-9.east-1.db.data.global",       A,    NxDomain,                 "an endpoint name that does not exist"),
    case("api.shop.global",                  A,    Answer(&["10.96.2.10"]),  "clusterip mode: each cluster's ClusterIP while it has a ready endpoint"),
    case("west-1.api.shop.global",           A,    NoData,                   "clusterip mode: a cluster without a ready endpoint"),
    case("drain.shop.global",                A,    Answer(&["10.3.5.1"]),    "serving-but-terminating endpoints count only when none is ready"),
    case("dark.shop.global",                 A,    NoData,                   "a service with no healthy endpoint exists: NODATA, not NXDOMAIN"),
    case("web.shop.global",                  TXT,  NoData,                   "NODATA: the name exists, not with this type"),
    case("db.data.global",                   AAAA, NoData,                   "NODATA: no IPv6 endpoint"),
    case("global",                           A,    NoData,                   "NODATA at the apex for an address type"),
    case("nope.shop.global",                 A,    NxDomain,                 "NXDOMAIN: no such service"),
    case("web.nope.global",                  A,    NxDomain,                 "NXDOMAIN: no such namespace"),
    case("a.b.c.d.web.shop.global",          A,    NxDomain,                 "NXDOMAIN: too many labels"),
    case("shop.global",                      A,    NoData,                   "empty non-terminal (RFC 8020): a namespace"),
    case("_tcp.web.shop.global",             A,    NoData,                   "empty non-terminal (RFC 8020): a protocol label"),
    case("_udp.web.shop.global",             A,    NxDomain,                 "a protocol the service has no port of"),
    case("nons.global",                      A,    NxDomain,                 "a namespace with no service"),
    case("_https._tcp.web.shop.global",      SRV,  NxDomain,                 "SRV: a port the service does not have"),
    case("_http._udp.web.shop.global",       SRV,  NxDomain,                 "SRV: a protocol the service does not have"),
    case("_http._tcp.web.shop.global",       A,    NoData,                   "the SRV name exists; other types are NODATA"),
    case("example.com",                      A,    Refused,                  "outside every served domain: REFUSED, not authoritative"),
    case("web.shop.global.example",          A,    Refused,                  "below a served name but outside its domain"),
    case("web.shop.global",                  A,    Refused,                  "another class: REFUSED").class(DNSClass::CH),
    case("global",                           AXFR, Refused,                  "no zone transfer (README)").tcp_only(),
    case("global",                           IXFR, Refused,                  "no incremental zone transfer over TCP").tcp_only(),
    case("global",                           IXFR, Refused,                  "no incremental zone transfer over UDP"),
];

/// Asks one case over each transport and checks the whole reply: rcode,
/// AA, RA clear, RD copied, TC clear, the addresses, the SOA in authority
/// and the question echoed as asked.
async fn check(fleet: &Fleet, case: &Case) {
    let (rcode, aa, answers, soa) = case.reply.parts();
    let mut ask = Ask::new(case.name, case.qtype).class(case.class);
    if let Some(asker) = case.from {
        ask = ask.from(asker);
    }
    let transports = if case.tcp_only {
        vec![ask.tcp()]
    } else {
        vec![ask.clone(), ask.tcp()]
    };
    for a in transports {
        let m = query(fleet.server.dns, &a).await;
        let via = if a.tcp { "tcp" } else { "udp" };
        let what = format!("{} {} over {via} ({})", a.name, a.qtype, case.rule);
        assert_eq!(m.metadata.response_code, rcode, "{what}: rcode");
        assert_eq!(m.metadata.authoritative, aa, "{what}: AA");
        assert!(!m.metadata.recursion_available, "{what}: RA must be clear");
        assert!(m.metadata.recursion_desired, "{what}: RD is copied");
        assert!(!m.metadata.truncation, "{what}: TC");
        assert_eq!(addresses(&m), sorted(answers), "{what}: answers");
        assert_eq!(
            soa_ttl_in_authority(&m).is_some(),
            soa,
            "{what}: SOA in authority"
        );
        assert_eq!(m.queries.len(), 1, "{what}: question echoed");
        assert_eq!(
            m.queries[0].name().to_ascii(),
            a.name.trim_end_matches('.').to_owned() + ".",
            "{what}: question echoed as asked"
        );
    }
}

#[tokio::test]
async fn names_and_rcodes() {
    let f = Fleet::start(&[]).await;
    for case in CASES {
        check(&f, case).await;
    }
    f.stop().await;
}

#[tokio::test]
async fn apex_soa_ns_and_negative_ttl() {
    let f = Fleet::start(&["--ttl", "20s", "--negative-ttl", "7s"]).await;
    let m = query(f.server.dns, &Ask::new("global", RecordType::SOA)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let RData::SOA(soa) = &m.answers[0].data else {
        panic!("SOA answer: {m:?}")
    };
    assert_eq!(soa.minimum, 7);
    assert_eq!(m.answers[0].ttl, 20);
    let m = query(f.server.dns, &Ask::new("global", RecordType::NS)).await;
    assert!(
        matches!(&m.answers[0].data, RData::NS(ns) if ns.0.to_ascii() == "ns.dns.global."),
        "{m:?}"
    );
    // RFC 2308: negative answers carry the SOA with TTL = min(SOA TTL, minimum).
    let m = query(f.server.dns, &Ask::new("nope.shop.global", RecordType::A)).await;
    assert_eq!(soa_ttl_in_authority(&m), Some(7));
    let f2 = Fleet::start(&["--ttl", "3s", "--negative-ttl", "60s"]).await;
    let m = query(f2.server.dns, &Ask::new("nope.shop.global", RecordType::A)).await;
    assert_eq!(soa_ttl_in_authority(&m), Some(3));
    // Answer TTLs: the server's --ttl, or the service's own.
    let m = query(
        f2.server.dns,
        &Ask::new("east-1.web.shop.global", RecordType::A),
    )
    .await;
    assert!(
        m.answers.iter().all(|r| r.ttl == 30),
        "web.shop has ttl 30 in west-1: the service TTL applies"
    );
    let m = query(f2.server.dns, &Ask::new("db.data.global", RecordType::A)).await;
    assert!(m.answers.iter().all(|r| r.ttl == 3));
    f.stop().await;
    f2.stop().await;
}

#[tokio::test]
async fn srv_with_targets_in_additional() {
    let f = Fleet::start(&[]).await;
    let m = query_srv(f.server.dns, "_http._tcp.web.shop.global").await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    let targets = srv_targets(&m);
    assert_eq!(
        targets,
        vec![
            (8080, "10-1-0-11.east-1.web.shop.global.".to_owned()),
            (8080, "10-1-0-12.east-1.web.shop.global.".to_owned()),
            (8080, "10-2-0-11.east-2.web.shop.global.".to_owned()),
            (8080, "10-3-0-11.west-1.web.shop.global.".to_owned()),
        ]
    );
    // Every target's addresses are in the additional section, and each
    // target name resolves to them on its own.
    for (_, target) in &targets {
        let extra: Vec<String> = m
            .additionals
            .iter()
            .filter(|r| r.name.to_ascii() == *target)
            .filter_map(|r| r.data.ip_addr().map(|a| a.to_string()))
            .collect();
        assert!(!extra.is_empty(), "additional records for {target}");
        let direct = query(f.server.dns, &Ask::new(target, RecordType::A)).await;
        let direct_v4: Vec<String> = addresses(&direct);
        assert!(
            extra
                .iter()
                .filter(|a| a.contains('.'))
                .all(|a| direct_v4.contains(a)),
            "{target}"
        );
    }
    // Headless: hostnames as targets.
    let m = query_srv(f.server.dns, "_postgres._tcp.db.data.global").await;
    assert_eq!(
        srv_targets(&m),
        srv(5432, "db-0.east-1.db.data.global."),
        "{m:?}"
    );
    // clusterip mode: the cluster name is the target.
    let m = query_srv(f.server.dns, "_grpc._tcp.api.shop.global").await;
    assert_eq!(
        srv_targets(&m),
        srv(9090, "east-2.api.shop.global."),
        "{m:?}"
    );
    assert_eq!(
        m.additionals
            .iter()
            .filter_map(|r| r.data.ip_addr())
            .map(|a| a.to_string())
            .collect::<Vec<_>>(),
        vec!["10.96.2.10"]
    );
    f.stop().await;
}

#[tokio::test]
async fn edns_payload_do_bit_and_badvers() {
    let f = Fleet::start(&[]).await;
    let dns = f.server.dns;
    // The response OPT advertises 1232, never the client's 4096.
    let m = query(
        dns,
        &Ask::new("web.shop.global", RecordType::A).edns(EdnsOpts {
            payload: 4096,
            ..EdnsOpts::default()
        }),
    )
    .await;
    let edns = m.edns.as_ref().expect("OPT in response to an EDNS query");
    assert_eq!(edns.max_payload(), 1232);
    assert_eq!(edns.version(), 0);
    assert!(!edns.flags().dnssec_ok);
    // RFC 3225: DO is copied.
    let m = query(
        dns,
        &Ask::new("web.shop.global", RecordType::A).edns(EdnsOpts {
            dnssec_ok: true,
            ..EdnsOpts::default()
        }),
    )
    .await;
    assert!(m.edns.as_ref().unwrap().flags().dnssec_ok, "DO bit copied");
    let m = query(
        dns,
        &Ask::new("nope.shop.global", RecordType::A)
            .edns(EdnsOpts {
                dnssec_ok: true,
                ..EdnsOpts::default()
            })
            .tcp(),
    )
    .await;
    assert!(
        m.edns.as_ref().unwrap().flags().dnssec_ok,
        "DO bit copied on negative answers over TCP"
    );
    // No EDNS in, no OPT out.
    let m = query(dns, &Ask::new("web.shop.global", RecordType::A).no_edns()).await;
    assert!(m.edns.is_none());
    assert_eq!(addresses(&m).len(), 4);
    // An unknown EDNS version: BADVERS, with an OPT of version 0, no answers.
    for ask in [
        Ask::new("web.shop.global", RecordType::A),
        Ask::new("web.shop.global", RecordType::A).tcp(),
    ] {
        let m = query(
            dns,
            &ask.edns(EdnsOpts {
                version: 1,
                ..EdnsOpts::default()
            }),
        )
        .await;
        // BADVERS and BADSIG share the value 16; hickory decodes it as BADSIG.
        assert_eq!(
            u16::from(m.metadata.response_code),
            u16::from(ResponseCode::BADVERS)
        );
        assert_eq!(m.edns.as_ref().unwrap().version(), 0);
        assert!(m.answers.is_empty());
    }
    f.stop().await;
}

#[tokio::test]
async fn truncation_is_clean_and_tcp_is_whole() {
    let f = Fleet::start(&["--max-answers", "200"]).await;
    let dns = f.server.dns;
    // Over TCP: all 150 addresses.
    let (m, _) = dns::ask(dns, &Ask::new("big.shop.global", RecordType::A).tcp()).await;
    assert!(!m.metadata.truncation);
    assert_eq!(addresses(&m), fleet::big_addresses());
    // Over UDP, without and with EDNS: TC, a clean message of header,
    // question (and OPT when asked with EDNS), nothing after it; the
    // strict client rejects trailing bytes.
    for (ask, limit, opt) in [
        (
            Ask::new("big.shop.global", RecordType::A).no_edns(),
            512,
            false,
        ),
        (Ask::new("big.shop.global", RecordType::A), 1232, true),
        (
            Ask::new("big.shop.global", RecordType::A).edns(EdnsOpts {
                payload: 4096,
                ..EdnsOpts::default()
            }),
            1232,
            true,
        ),
        (
            Ask::new("big.shop.global", RecordType::A).edns(EdnsOpts {
                payload: 100,
                ..EdnsOpts::default()
            }),
            512,
            true,
        ),
    ] {
        let (m, size) = dns::ask(dns, &ask).await;
        assert!(size <= limit, "{size} bytes over the {limit} limit");
        assert!(m.metadata.truncation, "TC set");
        assert!(m.metadata.authoritative);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries.len(), 1);
        assert!(m.answers.is_empty() && m.authorities.is_empty() && m.additionals.is_empty());
        assert_eq!(m.edns.is_some(), opt);
    }
    // SRV: when answers fit but their additional records do not, the
    // additional section is dropped (it is optional) and TC stays clear.
    let (full, full_size) = dns::ask(
        dns,
        &Ask::new("_http._tcp.big.shop.global", RecordType::SRV).tcp(),
    )
    .await;
    assert_eq!(full.answers.len(), 150);
    let mut bare = full.clone();
    bare.additionals.clear();
    let bare_size = bare.to_vec().unwrap().len();
    assert!(bare_size < full_size);
    let f2 = Fleet::start(&["--max-answers", "20"]).await;
    let (m20, m20_size) = dns::ask(
        f2.server.dns,
        &Ask::new("_http._tcp.big.shop.global", RecordType::SRV).tcp(),
    )
    .await;
    let mut bare20 = m20.clone();
    bare20.additionals.clear();
    let bare20_size = bare20.to_vec().unwrap().len();
    assert!(bare20_size < 1232 && m20_size > bare20_size);
    let payload = ((bare20_size + m20_size) / 2).max(bare20_size) as u16;
    assert!(
        m20_size > usize::from(payload) && payload >= 512,
        "sizes {bare20_size} < {payload} < {m20_size}"
    );
    {
        let (m, size) = dns::ask(
            f2.server.dns,
            &Ask::new("_http._tcp.big.shop.global", RecordType::SRV).edns(EdnsOpts {
                payload,
                ..EdnsOpts::default()
            }),
        )
        .await;
        assert!(size <= usize::from(payload));
        assert!(!m.metadata.truncation, "answers fit: no TC");
        assert_eq!(m.answers.len(), 20);
        assert!(m.additionals.is_empty(), "additional section dropped");
    }
    f.stop().await;
    f2.stop().await;
}

#[tokio::test]
async fn max_answers_and_rotation() {
    let f = Fleet::start(&["--max-answers", "8"]).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut firsts = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let m = query(f.server.dns, &Ask::new("big.shop.global", RecordType::A)).await;
        assert_eq!(m.answers.len(), 8, "at most --max-answers addresses");
        firsts.insert(m.answers[0].data.ip_addr().unwrap());
        seen.extend(addresses(&m));
    }
    assert!(
        firsts.len() > 10,
        "answers rotate between queries: {} distinct first addresses",
        firsts.len()
    );
    assert!(
        seen.len() > 60,
        "rotation spreads over the endpoints: {} of 150 seen",
        seen.len()
    );
    f.stop().await;
}

#[tokio::test]
async fn opcodes_malformed_and_drops() {
    let f = Fleet::start(&[]).await;
    let dns = f.server.dns;
    let wait = Duration::from_millis(500);
    // NOTIFY (opcode 4) and STATUS (2): NOTIMP, question echoed.
    for opcode in [2u16, 4, 5, 9] {
        let mut packet = header(0x1234, opcode << 11, [1, 0, 0, 0]);
        packet.extend(question("web.shop.global", 1, 1));
        let reply = dns::raw_udp(dns, &packet, wait)
            .await
            .expect("reply to an unknown opcode");
        let m = dns::strict(&reply).unwrap();
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NotImp,
            "opcode {opcode}"
        );
        assert_eq!(m.metadata.id, 0x1234);
    }
    // A question count with no question: FORMERR.
    let reply = dns::raw_udp(dns, &header(7, 0x0100, [1, 0, 0, 0]), wait)
        .await
        .expect("FORMERR reply");
    let m = dns::strict(&reply).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (7, ResponseCode::FormErr)
    );
    assert!(m.metadata.recursion_desired);
    // Two questions: FORMERR.
    let mut packet = header(8, 0, [2, 0, 0, 0]);
    packet.extend(question("web.shop.global", 1, 1));
    packet.extend(question("db.data.global", 1, 1));
    let m = dns::strict(&dns::raw_udp(dns, &packet, wait).await.unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // No question at all: FORMERR.
    let m = dns::strict(
        &dns::raw_udp(dns, &header(9, 0, [0, 0, 0, 0]), wait)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // A compression pointer loop in the question: FORMERR, no crash.
    let mut packet = header(10, 0, [1, 0, 0, 0]);
    packet.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let m = dns::strict(&dns::raw_udp(dns, &packet, wait).await.unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Two OPT records: FORMERR (RFC 6891).
    let mut packet = header(11, 0, [1, 0, 0, 2]);
    packet.extend(question("web.shop.global", 1, 1));
    for _ in 0..2 {
        packet.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
    }
    let m = dns::strict(&dns::raw_udp(dns, &packet, wait).await.unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Runts and responses are dropped: nothing comes back.
    assert!(
        dns::raw_udp(dns, &[1, 2, 3, 4, 5], wait).await.is_none(),
        "runt dropped"
    );
    let mut response = header(12, 0x8000, [1, 0, 0, 0]);
    response.extend(question("web.shop.global", 1, 1));
    assert!(
        dns::raw_udp(dns, &response, wait).await.is_none(),
        "a response is never answered"
    );
    // Over TCP, a malformed message is answered too, on the same connection.
    let reply = dns::raw_tcp(dns, &header(13, 0, [1, 0, 0, 0]))
        .await
        .unwrap();
    assert_eq!(
        dns::strict(&reply).unwrap().metadata.response_code,
        ResponseCode::FormErr
    );
    // Through all of it the server keeps answering.
    let m = query(dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m).len(), 4);
    f.stop().await;
}

/// dig, an independent strict parser, agrees: no malformed-packet warning,
/// TC handled by retrying over TCP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_agrees() {
    let f = Fleet::start(&["--max-answers", "200"]).await;
    let port = f.server.dns.port().to_string();
    let dig = |args: &[&str]| {
        let out = std::process::Command::new("dig")
            .args(["@127.0.0.1", "-p", &port, "+tries=1", "+time=3"])
            .args(args)
            .output()
            .expect("dig is installed (bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    };
    let out = dig(&["web.shop.global", "A"]);
    assert!(
        out.contains("status: NOERROR") && out.contains("flags: qr aa rd;"),
        "{out}"
    );
    assert!(out.contains("10.2.0.11"), "{out}");
    // UDP without EDNS: truncated, dig retries over TCP and gets all 150.
    let out = dig(&["+noedns", "big.shop.global", "A"]);
    assert!(out.contains("Truncated, retrying in TCP mode"), "{out}");
    assert!(out.contains("ANSWER: 150"), "{out}");
    // With +ignore dig shows the truncated UDP reply itself: clean.
    let out = dig(&["+noedns", "+ignore", "big.shop.global", "A"]);
    assert!(
        out.contains("flags: qr aa tc rd;") && out.contains("ANSWER: 0"),
        "{out}"
    );
    assert!(
        !out.to_lowercase().contains("malformed") && !out.contains("Warning"),
        "{out}"
    );
    let out = dig(&["+ignore", "big.shop.global", "A"]);
    assert!(
        out.contains("flags: qr aa tc rd;") && out.contains("udp: 1232"),
        "{out}"
    );
    assert!(
        !out.to_lowercase().contains("malformed") && !out.contains("Warning: M"),
        "{out}"
    );
    let out = dig(&["nope.shop.global"]);
    assert!(
        out.contains("status: NXDOMAIN") && out.contains("SOA"),
        "{out}"
    );
    f.stop().await;
}

/// A NOTIMP reply echoes the questions of another opcode; when they alone
/// are over the UDP limit (512 bytes without EDNS), the reply is a
/// truncated header, never an oversize datagram.
#[tokio::test]
async fn an_oversize_notimp_is_truncated_over_udp() {
    let server = meshdns_tests::TestServer::start(&[]).await;
    let mut packet = header(21, 2 << 11, [20, 0, 0, 0]);
    for q in 0..20 {
        packet.extend(question(
            &format!("name-{q:02}-abcdefghijkl.shop.global"),
            1,
            1,
        ));
    }
    let reply = dns::raw_udp(server.dns, &packet, Duration::from_secs(2))
        .await
        .expect("a reply");
    assert!(reply.len() <= 512, "a UDP reply of {} bytes", reply.len());
    let m = dns::strict(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    assert!(m.metadata.truncation, "TC set");
    // Over TCP the questions are echoed whole.
    let reply = dns::raw_tcp(server.dns, &packet).await.unwrap();
    let m = dns::strict(&reply).unwrap();
    assert_eq!(m.queries.len(), 20);
    server.stop().await;
}
