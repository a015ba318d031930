//! DNS edge cases, each sent as the exact packet over a real socket:
//! hand-written bytes in, the server's bytes out, decoded strictly.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use meshdns_tests::Fleet;
use meshdns_tests::dns::{raw_udp, strict};
use meshdns_tests::wire::{header, question};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TYPE_A: u16 = 1;
const CLASS_IN: u16 = 1;

/// An OPT record owned by `owner` (the root, normally) advertising
/// `payload`, with these options.
fn opt_owned(owner: &[u8], payload: u16, options: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut out = owner.to_vec();
    out.extend_from_slice(&41u16.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    let data: Vec<u8> = options
        .iter()
        .flat_map(|(code, data)| {
            let mut o = code.to_be_bytes().to_vec();
            o.extend_from_slice(&(data.len() as u16).to_be_bytes());
            o.extend_from_slice(data);
            o
        })
        .collect();
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(&data);
    out
}

fn opt(options: &[(u16, Vec<u8>)]) -> Vec<u8> {
    opt_owned(&[0], 1232, options)
}

/// A query for `qname` (RD set) with an OPT carrying `options`.
fn query(id: u16, qname: &str, qtype: u16, options: Option<&[(u16, Vec<u8>)]>) -> Vec<u8> {
    let mut out = header(id, 0x0100, [1, 0, 0, u16::from(options.is_some())]);
    out.extend_from_slice(&question(qname, qtype, CLASS_IN));
    if let Some(options) = options {
        out.extend_from_slice(&opt(options));
    }
    out
}

/// The strictly decoded reply to `packet` over UDP.
async fn udp(server: SocketAddr, packet: &[u8]) -> Message {
    let raw = raw_udp(server, packet, Duration::from_secs(3))
        .await
        .expect("a reply over UDP");
    strict(&raw).unwrap()
}

/// Reads one length-prefixed message from a TCP stream.
async fn read_framed(stream: &mut TcpStream) -> Message {
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut len))
        .await
        .expect("a reply in time")
        .unwrap();
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await.unwrap();
    strict(&reply).unwrap()
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = (packet.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

/// A TCP pipeline with a response (QR set) inside: it is skipped, the
/// connection stays open and the queries behind it are answered, in order.
#[tokio::test]
async fn tcp_pipeline_skips_a_response() {
    let f = Fleet::start(&[]).await;
    let mut stream = TcpStream::connect(f.server.dns).await.unwrap();
    let mut pipeline = framed(&query(1, "web.shop.global", TYPE_A, None));
    let mut response = query(2, "web.shop.global", TYPE_A, None);
    response[2] |= 0x80;
    pipeline.extend_from_slice(&framed(&response));
    pipeline.extend_from_slice(&framed(&query(3, "db.data.global", TYPE_A, None)));
    stream.write_all(&pipeline).await.unwrap();
    let first = read_framed(&mut stream).await;
    let second = read_framed(&mut stream).await;
    assert_eq!(first.metadata.id, 1);
    assert_eq!(
        second.metadata.id, 3,
        "the response is skipped, not answered"
    );
    assert_eq!(second.metadata.response_code, ResponseCode::NoError);
    assert_eq!(second.answers.len(), 1);
    // Still open: one more query is answered.
    stream
        .write_all(&framed(&query(4, "web.shop.global", TYPE_A, None)))
        .await
        .unwrap();
    assert_eq!(read_framed(&mut stream).await.metadata.id, 4);
    f.stop().await;
}

/// QCLASS ANY (255) is answered as IN: the question echoed with class
/// ANY, the records in class IN. Another class (CH) is refused.
#[tokio::test]
async fn qclass_any_is_answered_as_in() {
    let f = Fleet::start(&[]).await;
    let mut packet = header(7, 0x0100, [1, 0, 0, 0]);
    packet.extend_from_slice(&question("web.shop.global", TYPE_A, 255));
    let m = udp(f.server.dns, &packet).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(u16::from(m.queries[0].query_class()), 255);
    assert_eq!(m.answers.len(), 4, "{m:?}");
    assert!(m.answers.iter().all(|r| u16::from(r.dns_class) == CLASS_IN));
    let mut chaos = header(8, 0x0100, [1, 0, 0, 0]);
    chaos.extend_from_slice(&question("web.shop.global", TYPE_A, 3));
    assert_eq!(
        udp(f.server.dns, &chaos).await.metadata.response_code,
        ResponseCode::Refused
    );
    f.stop().await;
}

/// A UDP query over 4,096 bytes (here padded, RFC 7830) is read like any
/// other: answered, not cut short into a FORMERR.
#[tokio::test]
async fn udp_query_over_4096_bytes_is_answered() {
    let f = Fleet::start(&[]).await;
    let packet = query(9, "web.shop.global", TYPE_A, Some(&[(12, vec![0; 5000])]));
    assert!(packet.len() > 5000);
    let m = udp(f.server.dns, &packet).await;
    assert_eq!(m.metadata.id, 9);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 4, "{m:?}");
    f.stop().await;
}

/// ANY is answered with one RRset (RFC 8482 §4.2: a subset): a service's
/// A records when it has IPv4 addresses (else its AAAA), the apex's SOA.
#[tokio::test]
async fn any_gets_one_rrset() {
    let f = Fleet::start(&[]).await;
    let types = |m: &Message| {
        let mut types: Vec<String> = m
            .answers
            .iter()
            .map(|r| r.record_type().to_string())
            .collect();
        types.dedup();
        types
    };
    // web.shop has IPv4 and IPv6 endpoints: A only.
    let m = udp(f.server.dns, &query(10, "web.shop.global", 255, Some(&[]))).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(types(&m), ["A"], "{m:?}");
    let m = udp(f.server.dns, &query(11, "global", 255, Some(&[]))).await;
    assert_eq!(types(&m), ["SOA"], "{m:?}");
    // A host with both families: its A.
    let m = udp(
        f.server.dns,
        &query(12, "10-3-0-11.west-1.web.shop.global", 255, Some(&[])),
    )
    .await;
    assert_eq!(types(&m), ["A"], "{m:?}");
    f.stop().await;
}

/// The ECS option of a query: family, source prefix, the address bytes.
fn ecs(family: u16, source: u8, address: &[u8]) -> (u16, Vec<u8>) {
    let mut data = family.to_be_bytes().to_vec();
    data.extend_from_slice(&[source, 0]);
    data.extend_from_slice(address);
    (8, data)
}

/// The ECS scope of a reply.
fn scope(m: &Message) -> Option<u8> {
    meshdns_tests::dns::ecs_echo(m).map(|(_, _, scope)| scope)
}

/// ECS scope 0 when every asker gets the same answer — NXDOMAIN, and
/// NODATA for a family the service has nowhere (`db.data` has no IPv6) —
/// and the source prefix only when the asker's place chose the answer;
/// on the fast path (UDP) and the full handler (TCP) alike.
#[tokio::test]
async fn ecs_scope_is_zero_unless_the_answer_depends_on_the_asker() {
    let f = Fleet::start(&[]).await;
    let subnet = [ecs(1, 32, &[127, 0, 0, 4])];
    for (qname, qtype, expected) in [
        ("web.shop.global", TYPE_A, 32),
        ("db.data.global", 28, 0),
        ("nope.shop.global", TYPE_A, 0),
    ] {
        let packet = query(20, qname, qtype, Some(&subnet));
        let over_udp = udp(f.server.dns, &packet).await;
        let over_tcp = strict(
            &meshdns_tests::dns::raw_tcp(f.server.dns, &packet)
                .await
                .unwrap(),
        )
        .unwrap();
        for m in [over_udp, over_tcp] {
            assert_eq!(scope(&m), Some(expected), "{qname} {qtype}: {m:?}");
        }
    }
    f.stop().await;
}

/// Asserts a FORMERR that echoes the question (`web.shop.global` A) and,
/// when `opt`, carries an OPT (RFC 6891 §7); over UDP and TCP.
async fn assert_formerr(server: SocketAddr, packet: &[u8], opt: bool, what: &str) {
    let over_tcp = meshdns_tests::dns::raw_tcp(server, packet).await.unwrap();
    for m in [udp(server, packet).await, strict(&over_tcp).unwrap()] {
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::FormErr,
            "{what}: {m:?}"
        );
        assert_eq!(m.queries.len(), 1, "{what}: the question echoed");
        assert_eq!(m.queries[0].name().to_ascii(), "web.shop.global.", "{what}");
        assert_eq!(m.edns.is_some(), opt, "{what}: an OPT");
        if let Some(edns) = &m.edns {
            assert_eq!(edns.max_payload(), 1232, "{what}");
        }
    }
}

/// Malformed OPT records and ECS options, and counts that do not match
/// the bytes: FORMERR with the question and our OPT, not a bare header.
#[tokio::test]
async fn formerr_carries_the_question_and_an_opt() {
    let f = Fleet::start(&[]).await;
    let dns = f.server.dns;
    let ask = |options: &[(u16, Vec<u8>)]| query(30, "web.shop.global", TYPE_A, Some(options));
    // ECS: family 3; a /33 for IPv4; address bytes not matching the prefix.
    for (what, option) in [
        ("ecs family 3", ecs(3, 0, &[])),
        ("ecs /33 ipv4", ecs(1, 33, &[10, 0, 0, 1, 0])),
        ("ecs /24 with 4 bytes", ecs(1, 24, &[10, 0, 0, 1])),
        ("ecs /24 with 2 bytes", ecs(1, 24, &[10, 0])),
        ("ecs /129 ipv6", ecs(2, 129, &[0; 17])),
    ] {
        assert_formerr(dns, &ask(&[option]), true, what).await;
    }
    let question = question("web.shop.global", TYPE_A, CLASS_IN);
    // An OPT owned by `x.`, not the root.
    let mut packet = header(31, 0x0100, [1, 0, 0, 1]);
    packet.extend_from_slice(&question);
    packet.extend_from_slice(&opt_owned(&[1, b'x', 0], 1232, &[]));
    assert_formerr(dns, &packet, true, "opt owner x.").await;
    // An OPT in the answer section, and one in the authority section.
    for counts in [[1, 1, 0, 0], [1, 0, 1, 0]] {
        let mut packet = header(32, 0x0100, counts);
        packet.extend_from_slice(&question);
        packet.extend_from_slice(&opt(&[]));
        assert_formerr(dns, &packet, true, "opt outside additional").await;
    }
    // Two OPTs.
    let mut packet = header(33, 0x0100, [1, 0, 0, 2]);
    packet.extend_from_slice(&question);
    packet.extend_from_slice(&opt(&[]));
    packet.extend_from_slice(&opt(&[]));
    assert_formerr(dns, &packet, true, "two opts").await;
    // Counts: two additional records announced, one sent (its OPT read).
    let mut packet = header(34, 0x0100, [1, 0, 0, 2]);
    packet.extend_from_slice(&question);
    packet.extend_from_slice(&opt(&[]));
    assert_formerr(dns, &packet, true, "ar 2, one record").await;
    // None announced, an OPT sent after the question: bytes left over;
    // by the counts there is no OPT to answer with one.
    let mut packet = header(35, 0x0100, [1, 0, 0, 0]);
    packet.extend_from_slice(&question);
    packet.extend_from_slice(&opt(&[]));
    assert_formerr(dns, &packet, false, "ar 0, an opt after").await;
    f.stop().await;
}

/// ECS with address bits set beyond its source prefix (10.1.3.0/23 sent
/// as 10.1.3) is FORMERR (RFC 7871 §6), not echoed unmasked; the same
/// subnet masked is answered.
#[tokio::test]
async fn ecs_bits_beyond_the_prefix_are_formerr() {
    let f = Fleet::start(&[]).await;
    let unmasked = query(
        40,
        "web.shop.global",
        TYPE_A,
        Some(&[ecs(1, 23, &[10, 1, 3])]),
    );
    assert_formerr(f.server.dns, &unmasked, true, "ecs 10.1.3/23").await;
    let masked = query(
        41,
        "web.shop.global",
        TYPE_A,
        Some(&[ecs(1, 23, &[10, 1, 2])]),
    );
    let m = udp(f.server.dns, &masked).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        meshdns_tests::dns::ecs_echo(&m).map(|(address, prefix, _)| (address.to_string(), prefix)),
        Some(("10.1.2.0".to_owned(), 23))
    );
    f.stop().await;
}

/// The NSID option's data in a reply, if any.
fn nsid_of(m: &Message) -> Option<Vec<u8>> {
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
    match m.edns.as_ref()?.option(EdnsCode::NSID)? {
        EdnsOption::Unknown(_, data) => Some(data.clone()),
        EdnsOption::NSID(nsid) => Some(nsid.as_ref().to_vec()),
        _ => None,
    }
}

/// `--nsid`: a query with an empty NSID option gets ours (RFC 5001), on
/// the fast path (UDP A), the full handler (TCP, SOA) and a NXDOMAIN
/// alike; a query without one does not; hex after `0x` is raw bytes.
#[tokio::test]
async fn nsid_is_answered_when_asked() {
    let f = Fleet::start(&["--nsid", "replica-1"]).await;
    let dns = f.server.dns;
    let asks = |qname: &str, qtype: u16| query(50, qname, qtype, Some(&[(3, Vec::new())]));
    let tcp = |packet: Vec<u8>| async move {
        strict(&meshdns_tests::dns::raw_tcp(dns, &packet).await.unwrap()).unwrap()
    };
    for m in [
        udp(dns, &asks("web.shop.global", TYPE_A)).await,
        udp(dns, &asks("nope.shop.global", TYPE_A)).await,
        tcp(asks("web.shop.global", TYPE_A)).await,
        tcp(asks("global", 6)).await,
    ] {
        assert_eq!(nsid_of(&m).as_deref(), Some(&b"replica-1"[..]), "{m:?}");
    }
    let m = udp(dns, &query(51, "web.shop.global", TYPE_A, Some(&[]))).await;
    assert_eq!(nsid_of(&m), None, "not asked, not sent");
    f.stop().await;
    let f = Fleet::start(&["--nsid", "0x00ff10"]).await;
    let m = udp(
        f.server.dns,
        &query(52, "web.shop.global", TYPE_A, Some(&[(3, Vec::new())])),
    )
    .await;
    assert_eq!(nsid_of(&m), Some(vec![0x00, 0xff, 0x10]));
    f.stop().await;
}
