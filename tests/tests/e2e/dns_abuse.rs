//! DNS abuse controls over real sockets: response rate limiting per
//! source prefix with slip, DNS Cookies (RFC 7873) and their exemption
//! from it, and DNS over TCP's per-source cap, per-connection idle
//! deadline and pipelining. Floods are bounded in count and time; bounds
//! on counts are generous, since the machine is shared.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RecordType};
use meshdns_tests::TestServer;
use meshdns_tests::dns::{raw_tcp, strict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// A query; `cookie` is the COOKIE option's data, if any.
fn packet(id: u16, name: &str, qtype: RecordType, cookie: Option<&[u8]>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some(data) = cookie {
        edns.options_mut()
            .insert(EdnsOption::Unknown(10, data.to_vec()));
    }
    m.edns = Some(edns);
    m.to_vec().unwrap()
}

/// The COOKIE option data of a reply.
fn cookie_of(m: &Message) -> Option<Vec<u8>> {
    match m.edns.as_ref()?.option(EdnsCode::Cookie)? {
        EdnsOption::Unknown(10, data) => Some(data.clone()),
        _ => None,
    }
}

/// One query over UDP from `source`; the strictly decoded reply.
async fn ask_udp(server: SocketAddr, source: &str, packet: &[u8]) -> Option<Message> {
    let socket = UdpSocket::bind((source.parse::<IpAddr>().unwrap(), 0))
        .await
        .unwrap();
    socket.send_to(packet, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(strict(&buf[..len]).unwrap())
}

/// What came back from a flood.
#[derive(Debug, Default)]
struct Flood {
    sent: usize,
    /// Full replies (TC clear).
    full: usize,
    /// Truncated replies: TC set, no records, the question, an OPT.
    truncated: usize,
    /// How long the sending took.
    elapsed: Duration,
}

/// Sends `count` copies of `make(id)` from `source` in bursts of 50 every
/// 10 ms, and counts the replies until 700 ms after the last.
async fn flood(
    server: SocketAddr,
    source: &str,
    count: usize,
    make: impl Fn(u16) -> Vec<u8>,
) -> Flood {
    let socket = std::sync::Arc::new(
        UdpSocket::bind((source.parse::<IpAddr>().unwrap(), 0))
            .await
            .unwrap(),
    );
    let receiver = {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut result = Flood::default();
            let mut buf = vec![0u8; 65_535];
            while let Ok(Ok((len, _))) =
                tokio::time::timeout(Duration::from_millis(700), socket.recv_from(&mut buf)).await
            {
                let m = strict(&buf[..len]).expect("every reply is well formed");
                if m.metadata.truncation {
                    assert!(m.answers.is_empty() && m.authorities.is_empty());
                    assert_eq!(m.queries.len(), 1, "a truncated reply keeps the question");
                    assert!(m.edns.is_some(), "and the OPT");
                    result.truncated += 1;
                } else {
                    result.full += 1;
                }
            }
            result
        })
    };
    let started = Instant::now();
    for burst in 0..count.div_ceil(50) {
        for i in burst * 50..((burst + 1) * 50).min(count) {
            socket.send_to(&make(i as u16), server).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = started.elapsed();
    let mut result = receiver.await.unwrap();
    result.sent = count;
    result.elapsed = elapsed;
    println!("flood from {source}: {result:?}");
    result
}

/// Most full replies a prefix may get at `rate` over `flood`: a second's
/// burst plus the rate over the flood, doubled for a slow machine.
fn rate_bound(rate: usize, flood: &Flood) -> usize {
    2 * (rate + (rate as f64 * (flood.elapsed.as_secs_f64() + 0.7)) as usize)
}

async fn metric(server: &TestServer, name: &str) -> u64 {
    let (_, text) = meshdns_tests::http_get(server.admin, "/metrics")
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrl_limits_a_flooded_prefix_and_spares_the_others() {
    let rate = 20;
    let server = TestServer::start(&["--rrl-rate", "20", "--rrl-slip", "0"]).await;
    let dns = server.dns;
    // The flood from 127.0.0.0/24 and, meanwhile, a polite client in
    // 127.0.9.0/24 (under the rate) that must get every answer.
    let polite = tokio::spawn(async move {
        let mut answered = 0;
        for id in 0..15u16 {
            let m = ask_udp(
                dns,
                "127.0.9.1",
                &packet(id, "global.", RecordType::SOA, None),
            )
            .await;
            if m.is_some_and(|m| m.metadata.response_code == ResponseCode::NoError) {
                answered += 1;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        answered
    });
    let result = flood(dns, "127.0.0.1", 1000, |id| {
        packet(id, "global.", RecordType::SOA, None)
    })
    .await;
    assert_eq!(
        polite.await.unwrap(),
        15,
        "another prefix is answered in full"
    );
    assert_eq!(
        result.truncated, 0,
        "--rrl-slip 0 drops every limited reply"
    );
    assert!(
        result.full <= rate_bound(rate, &result),
        "{} of 1,000 answered at --rrl-rate {rate}",
        result.full
    );
    assert!(result.full >= rate / 2, "the rate is still answered");
    let dropped = metric(&server, "meshdns_dns_rrl_dropped_total").await;
    assert_eq!(dropped as usize, result.sent - result.full, "counted");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrl_slips_truncated_replies_and_tcp_gets_the_answer() {
    let rate = 10;
    let server = TestServer::start(&["--rrl-rate", "10", "--rrl-slip", "2"]).await;
    let result = flood(server.dns, "127.0.0.1", 400, |id| {
        packet(id, "global.", RecordType::SOA, None)
    })
    .await;
    assert!(result.full <= rate_bound(rate, &result), "{result:?}");
    let limited = result.sent - result.full;
    let ratio = result.truncated as f64 / limited as f64;
    assert!(
        (0.35..=0.65).contains(&ratio),
        "every 2nd limited reply slips: {} of {limited}",
        result.truncated
    );
    assert_eq!(
        metric(&server, "meshdns_dns_rrl_slipped_total").await as usize,
        result.truncated
    );
    // The real client, told to retry over TCP, gets its answer there.
    let reply = raw_tcp(server.dns, &packet(7, "global.", RecordType::SOA, None))
        .await
        .unwrap();
    let m = strict(&reply).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 1, "the SOA over TCP");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cookie_gets_a_server_cookie_it_can_present() {
    let server = TestServer::start(&[]).await;
    let client = [0x24, 0x64, 0xc4, 0xab, 0xcf, 0x10, 0xc9, 0x57];
    // Both answer paths: the fast path (a service name) and the full
    // handler (the apex SOA).
    for (name, qtype, rcode) in [
        ("nope.shop.global.", RecordType::A, ResponseCode::NXDomain),
        ("global.", RecordType::SOA, ResponseCode::NoError),
    ] {
        let m = ask_udp(
            server.dns,
            "127.0.0.1",
            &packet(1, name, qtype, Some(&client)),
        )
        .await
        .expect("answered");
        assert_eq!(m.metadata.response_code, rcode);
        let cookie = cookie_of(&m).expect("a server cookie comes back");
        assert_eq!(
            cookie.len(),
            24,
            "client cookie and a 16-byte server cookie"
        );
        assert_eq!(&cookie[..8], &client);
        assert_eq!(cookie[8], 1, "RFC 9018 version 1");
        // Presented again (UDP and TCP): valid, so echoed as it is.
        let again = ask_udp(
            server.dns,
            "127.0.0.1",
            &packet(2, name, qtype, Some(&cookie)),
        )
        .await
        .expect("answered");
        assert_eq!(again.metadata.response_code, rcode);
        assert_eq!(cookie_of(&again).as_deref(), Some(&cookie[..]), "{name}");
        let tcp = strict(
            &raw_tcp(server.dns, &packet(3, name, qtype, Some(&cookie)))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(cookie_of(&tcp).as_deref(), Some(&cookie[..]), "{name}");
        // From another address it is not ours to accept: answered
        // normally, with a fresh cookie for that address (RFC 7873 §5.2.3).
        let other = ask_udp(
            server.dns,
            "127.0.0.2",
            &packet(4, name, qtype, Some(&cookie)),
        )
        .await
        .expect("answered");
        assert_eq!(other.metadata.response_code, rcode);
        let fresh = cookie_of(&other).unwrap();
        assert_eq!(&fresh[..8], &client);
        assert_ne!(fresh, cookie);
        // A forged server cookie: the same.
        let mut forged = cookie.clone();
        forged[23] ^= 0xff;
        let m = ask_udp(
            server.dns,
            "127.0.0.1",
            &packet(5, name, qtype, Some(&forged)),
        )
        .await
        .expect("answered");
        assert_eq!(m.metadata.response_code, rcode);
        assert_eq!(cookie_of(&m).as_deref(), Some(&cookie[..]));
    }
    assert_eq!(
        metric(&server, "meshdns_dns_cookie_verified_total").await,
        4,
        "two paths, UDP and TCP"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_server_cookie_is_exempt_from_rrl() {
    let rate = 5;
    let server = TestServer::start(&["--rrl-rate", "5", "--rrl-slip", "0"]).await;
    let first = ask_udp(
        server.dns,
        "127.0.0.1",
        &packet(1, "global.", RecordType::SOA, Some(&[9; 8])),
    )
    .await
    .expect("answered");
    let cookie = cookie_of(&first).expect("a server cookie");
    let with = flood(server.dns, "127.0.0.1", 300, |id| {
        packet(id, "global.", RecordType::SOA, Some(&cookie))
    })
    .await;
    assert!(
        with.full >= 295,
        "with a valid server cookie, {} of 300 answered",
        with.full
    );
    // The same flood from the same address with only a client cookie is
    // limited.
    let without = flood(server.dns, "127.0.0.1", 300, |id| {
        packet(id, "global.", RecordType::SOA, Some(&[9; 8]))
    })
    .await;
    assert!(
        without.full <= rate_bound(rate, &without),
        "without: {without:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_cookie_gets_formerr_with_opt_and_question() {
    let server = TestServer::start(&[]).await;
    for len in [0usize, 7, 12, 15, 41] {
        let data = vec![0xab; len];
        for (name, qtype) in [
            ("web.shop.global.", RecordType::A),
            ("global.", RecordType::SOA),
        ] {
            let query = packet(9, name, qtype, Some(&data));
            let udp = ask_udp(server.dns, "127.0.0.1", &query)
                .await
                .expect("answered");
            let tcp = strict(&raw_tcp(server.dns, &query).await.unwrap()).unwrap();
            for m in [udp, tcp] {
                assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{len}");
                assert!(m.edns.is_some(), "FORMERR carries an OPT ({len})");
                assert_eq!(cookie_of(&m), None, "and no cookie ({len})");
                assert_eq!(m.queries.len(), 1, "and the question ({len})");
                assert_eq!(m.queries[0].name().to_ascii(), name);
                assert!(m.answers.is_empty());
            }
        }
    }
    server.stop().await;
}

/// A TCP connection from `source`, with one query answered on it (so the
/// server has accepted it).
async fn tcp_from(server: SocketAddr, source: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind((source.parse::<IpAddr>().unwrap(), 0).into())?;
    let mut stream = socket.connect(server).await?;
    tcp_query(&mut stream, 1).await?;
    Ok(stream)
}

async fn tcp_query(stream: &mut TcpStream, id: u16) -> std::io::Result<Message> {
    let query = packet(id, "global.", RecordType::SOA, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed).await?;
    read_reply(stream).await
}

async fn read_reply(stream: &mut TcpStream) -> std::io::Result<Message> {
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut len)).await??;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    Ok(strict(&reply).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_connections_are_capped_per_source() {
    let server = TestServer::start(&[
        "--max-tcp-connections-per-source",
        "32",
        "--tcp-idle-timeout",
        "60s",
    ])
    .await;
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(
            tcp_from(server.dns, "127.0.0.2")
                .await
                .expect("under the cap"),
        );
    }
    // The 33rd from that address is closed at once.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut extra = socket.connect(server.dns).await.unwrap();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf))
        .await
        .expect("the 33rd connection is closed, not kept waiting");
    assert!(matches!(closed, Ok(0) | Err(_)), "{closed:?}");
    assert!(tcp_query(&mut extra, 2).await.is_err());
    // Another address still connects; the held ones still answer.
    let mut other = tcp_from(server.dns, "127.0.0.3")
        .await
        .expect("another source is not capped");
    tcp_query(&mut other, 3).await.unwrap();
    tcp_query(&mut held[31], 4).await.unwrap();
    assert_eq!(
        metric(&server, "meshdns_dns_tcp_refused_per_source_total").await,
        1
    );
    // A closed connection frees its slot.
    drop(held.pop());
    meshdns_tests::eventually(Duration::from_secs(5), "a freed slot", || async {
        tcp_from(server.dns, "127.0.0.2").await.ok()
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_tcp_client_is_closed_at_the_idle_timeout() {
    let server = TestServer::start(&["--tcp-idle-timeout", "1s"]).await;
    let query = packet(1, "global.", RecordType::SOA, None);
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    // The reader: whatever comes back, and when the server closed.
    let read = async {
        let mut got = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(8), reader.read_to_end(&mut got)).await;
        (got, end, started.elapsed())
    };
    // One query in three pieces, each within a second of the last, the
    // whole taking 1.6 s: every read is quick, the query is not.
    let write = async {
        for (at, piece) in [
            (700, &framed[..2]),
            (1200, &framed[2..10]),
            (1600, &framed[10..]),
        ] {
            tokio::time::sleep_until(tokio::time::Instant::from_std(
                started + Duration::from_millis(at),
            ))
            .await;
            if writer.write_all(piece).await.is_err() {
                break;
            }
        }
    };
    let ((got, end, closed_at), ()) = tokio::join!(read, write);
    assert!(end.is_ok(), "the server closed the connection");
    assert!(
        got.is_empty(),
        "a query that took longer than the idle timeout to arrive was not answered"
    );
    println!("trickling connection closed after {closed_at:?}");
    assert!(closed_at >= Duration::from_millis(900), "{closed_at:?}");
    assert!(closed_at < Duration::from_secs(5), "{closed_at:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_are_answered_even_behind_a_response() {
    let server = TestServer::start(&[]).await;
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    let mut response = packet(2, "global.", RecordType::SOA, None);
    response[2] |= 0x80;
    let messages = [
        packet(1, "global.", RecordType::SOA, None),
        response,
        packet(3, "nope.shop.global.", RecordType::A, None),
        vec![0, 4, 1],
        packet(5, "global.", RecordType::NS, None),
    ];
    // All in one write.
    let mut framed = Vec::new();
    for m in &messages {
        framed.extend_from_slice(&(m.len() as u16).to_be_bytes());
        framed.extend_from_slice(m);
    }
    stream.write_all(&framed).await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let m = read_reply(&mut stream).await.expect("a reply");
        ids.push(m.metadata.id);
    }
    assert_eq!(
        ids,
        [1, 3, 5],
        "answered in order, the response and the runt skipped"
    );
    // The connection is still in step for the next query.
    assert_eq!(tcp_query(&mut stream, 6).await.unwrap().metadata.id, 6);
    server.stop().await;
}

/// The receive buffer each UDP socket was granted, from `ss` (its `rb`,
/// which the kernel doubles for bookkeeping, halved back).
fn granted_receive_buffer(port: u16) -> usize {
    let out = std::process::Command::new("ss")
        .args(["-uamnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (iproute2) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let rb = text
        .split([',', '(', ')'])
        .find_map(|f| f.strip_prefix("rb")?.parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no rb in ss output: {text}"));
    rb / 2
}

fn rmem_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// A burst sent faster than a worker answers waits in the socket's
/// receive buffer (`--udp-receive-buffer`) instead of being dropped: 2,000
/// queries sent back to back all get their answer. The kernel's default
/// buffer holds about 270 queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_queries_waits_in_the_receive_buffer() {
    let asked = 4 * 1024 * 1024;
    let server = TestServer::start(&["--udp-receive-buffer", &asked.to_string()]).await;
    let granted = granted_receive_buffer(server.dns.port());
    assert!(
        granted >= asked.min(rmem_max()),
        "granted {granted} of {asked}, rmem_max {}",
        rmem_max()
    );
    const BURST: usize = 2_000;
    if granted < BURST * 1_500 {
        // Neither CAP_NET_ADMIN nor a big enough net.core.rmem_max here:
        // the burst cannot fit, whatever meshdns asks for.
        eprintln!("skipping the burst: the kernel granted only {granted} bytes");
        server.stop().await;
        return;
    }
    let dns = server.dns;
    let answered = tokio::task::spawn_blocking(move || {
        let client = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )
        .unwrap();
        let _ = client.set_recv_buffer_size(8 * 1024 * 1024);
        client
            .bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        let client: std::net::UdpSocket = client.into();
        client.connect(dns).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        let reader = client.try_clone().unwrap();
        let replies = std::thread::spawn(move || {
            let mut seen = vec![false; BURST];
            let mut buf = [0u8; 1500];
            while let Ok(n) = reader.recv(&mut buf) {
                if n >= 2 {
                    let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    if let Some(s) = seen.get_mut(id) {
                        *s = true;
                    }
                }
                if seen.iter().all(|s| *s) {
                    break;
                }
            }
            seen.iter().filter(|s| **s).count()
        });
        for id in 0..BURST {
            let id = u16::try_from(id).unwrap();
            client
                .send(&packet(id, "nx-burst.shop.global.", RecordType::A, None))
                .unwrap();
        }
        replies.join().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(answered, BURST, "every query of the burst answered");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_messages_do_not_keep_a_tcp_connection_open() {
    let server = TestServer::start(&["--tcp-idle-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.split();
    // An empty message every 200 ms for 6 s: none is a query.
    let keepalive = async {
        for _ in 0..30 {
            if writer.write_all(&[0, 0]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let read = async {
        let mut got = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(8), reader.read_to_end(&mut got)).await;
        (got, end, started.elapsed())
    };
    let ((got, end, closed_at), ()) = tokio::join!(read, keepalive);
    assert!(end.is_ok(), "the server closed the connection");
    assert!(got.is_empty(), "no message was answered");
    println!("kept alive by empty messages, closed after {closed_at:?}");
    assert!(closed_at >= Duration::from_millis(900), "{closed_at:?}");
    assert!(closed_at < Duration::from_millis(2500), "{closed_at:?}");
    assert_eq!(
        metric(&server, "meshdns_dns_tcp_closed_total{reason=\"idle\"}").await,
        1
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_tcp_connection_is_closed_at_its_lifetime() {
    let server = TestServer::start(&[
        "--tcp-idle-timeout",
        "1s",
        "--max-tcp-connection-lifetime",
        "2s",
    ])
    .await;
    let mut stream = TcpStream::connect(server.dns).await.unwrap();
    let started = Instant::now();
    // A query every 300 ms, each answered, until the server closes: never
    // idle for 1 s.
    let mut answered = 0u16;
    while tcp_query(&mut stream, answered + 1).await.is_ok() {
        answered += 1;
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "a busy connection outlived its lifetime"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let closed_at = started.elapsed();
    println!("{answered} queries answered, closed after {closed_at:?}");
    assert!(answered >= 6, "{answered} queries answered");
    assert!(closed_at >= Duration::from_millis(1900), "{closed_at:?}");
    assert!(closed_at < Duration::from_millis(3000), "{closed_at:?}");
    assert_eq!(
        metric(&server, "meshdns_dns_tcp_closed_total{reason=\"lifetime\"}").await,
        1
    );
    assert_eq!(
        metric(&server, "meshdns_dns_tcp_closed_total{reason=\"idle\"}").await,
        0
    );
    server.stop().await;
}
