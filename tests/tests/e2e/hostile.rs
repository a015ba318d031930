//! Hostile input over real sockets: a flood of malformed UDP packets
//! (random bytes, runts, truncated messages, compression loops, many
//! questions, unknown classes and opcodes, EDNS garbage) and 1,000 idle TCP
//! connections, while a well-behaved client keeps getting correct answers.
//! The flood is bounded in count and time and stops by itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use meshdns_tests::Fleet;
use meshdns_tests::dns::{Ask, addresses, poll, sorted};
use meshdns_tests::wire::{header, question};
use tokio::net::UdpSocket;

const WEB: [&str; 4] = ["10.1.0.11", "10.1.0.12", "10.2.0.11", "10.3.0.11"];

/// The hostile packets, cycled through.
fn packets() -> Vec<Vec<u8>> {
    let mut list = Vec::new();
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for len in [0usize, 1, 5, 11, 12, 13, 40, 300, 1500, 4000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        list.push(bytes);
    }
    // Truncated: a question cut in half.
    let mut q = header(1, 0x0100, [1, 0, 0, 0]);
    q.extend(question("web.shop.global", 1, 1));
    list.push(q[..q.len() - 7].to_vec());
    // A compression pointer loop.
    let mut p = header(2, 0, [1, 0, 0, 0]);
    p.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    list.push(p);
    // 100 questions.
    let mut many = header(3, 0, [100, 0, 0, 0]);
    for _ in 0..100 {
        many.extend(question("web.shop.global", 1, 1));
    }
    list.push(many);
    // Unknown class, unknown opcodes.
    let mut c = header(4, 0, [1, 0, 0, 0]);
    c.extend(question("web.shop.global", 1, 0x1234));
    list.push(c);
    for opcode in [3u16, 7, 15] {
        let mut o = header(5, opcode << 11, [1, 0, 0, 0]);
        o.extend(question("web.shop.global", 1, 1));
        list.push(o);
    }
    // EDNS garbage: an OPT whose option lengths overrun.
    let mut e = header(6, 0, [1, 0, 0, 1]);
    e.extend(question("web.shop.global", 1, 1));
    e.extend_from_slice(&[
        0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 8, 0, 8, 0, 200, 1, 2, 3, 4,
    ]);
    list.push(e);
    // Responses (QR set) must be dropped.
    let mut r = header(7, 0x8000, [1, 0, 0, 0]);
    r.extend(question("web.shop.global", 1, 1));
    list.push(r);
    list
}

/// Well-behaved queries answered correctly in `window`, sequentially.
async fn good_rate(dns: SocketAddr, window: Duration) -> u64 {
    let started = Instant::now();
    let mut ok = 0;
    while started.elapsed() < window {
        let m = poll(dns, &Ask::new("web.shop.global", RecordType::A))
            .await
            .expect("answered during the flood");
        assert_eq!(addresses(&m), sorted(&WEB), "correct during the flood");
        ok += 1;
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_and_idle_connections_do_not_stop_good_answers() {
    let f = Fleet::start(&[]).await;
    let dns = f.server.dns;
    let window = Duration::from_millis(1500);
    let baseline = good_rate(dns, window).await;
    // 1,000 idle TCP connections (slowloris), held through the flood.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(tokio::net::TcpStream::connect(dns).await.unwrap());
    }
    // The flood: bounded to ~5,000 packets a second for the window.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, sent) = (stop.clone(), sent.clone());
        tokio::spawn(async move {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let list = packets();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 50_000 {
                for _ in 0..50 {
                    let _ = socket.send_to(&list[i % list.len()], dns).await;
                    i += 1;
                }
                sent.store(i as u64, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let during = good_rate(dns, window).await;
    stop.store(true, Ordering::Relaxed);
    flood.await.unwrap();
    let ratio = during as f64 / baseline.max(1) as f64;
    println!(
        "good answers: baseline {baseline}, during the flood {during} ({:.0}%), hostile packets sent {}",
        ratio * 100.0,
        sent.load(Ordering::Relaxed)
    );
    assert!(sent.load(Ordering::Relaxed) > 1000);
    // Every good query was answered, correctly (`good_rate` fails on the
    // first miss). The rate is measured at 91% of the baseline here; half
    // leaves room for a noisy shared machine and still fails a server
    // whose hostile-packet path costs as much as an answer.
    assert!(
        ratio > 0.5,
        "good-client rate fell to {:.0}% of baseline",
        ratio * 100.0
    );
    // The idle connections did not take the TCP path down either: past
    // --max-tcp-connections-per-source (32) theirs were closed on accept,
    // and a client at another address is answered.
    let m = tcp_from(
        dns,
        "127.0.0.9",
        &Ask::new("web.shop.global", RecordType::A),
    )
    .await
    .expect("TCP answered");
    assert_eq!(addresses(&m), sorted(&WEB));
    drop(idle);
    f.stop().await;
}

/// One query over TCP from a chosen loopback address.
async fn tcp_from(
    dns: SocketAddr,
    source: &str,
    ask: &Ask,
) -> std::io::Result<hickory_proto::op::Message> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source.parse().unwrap(), 0))?;
    let mut stream = socket.connect(dns).await?;
    let query = ask.message(0x4242).to_vec().unwrap();
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&query);
    stream.write_all(&framed).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut reply = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut reply).await?;
    Ok(meshdns_tests::dns::strict(&reply).unwrap())
}

/// The admin port (probes, scrapes, `/debug/*`) is open to whoever can
/// reach it, so its connections are bounded before HTTP: one client
/// holding many idle connections (or sending a header a byte at a time)
/// spends its own 16, not the process's descriptors, and the kubelet's
/// probe from another address is answered meanwhile.
#[tokio::test]
async fn idle_admin_connections_do_not_stop_the_probes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = meshdns_tests::TestServer::start(&[]).await;
    let mut idle = Vec::new();
    for _ in 0..40 {
        idle.push(tcp_connect_from("127.0.0.1", server.admin).await);
    }
    // A header never finished, on one of the client's own 16.
    idle[0]
        .write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        .await
        .unwrap();
    let mut probe = tcp_connect_from("127.0.0.3", server.admin).await;
    probe
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: meshdns\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), probe.read_to_string(&mut response))
        .await
        .expect("the probe is answered")
        .unwrap();
    assert!(response.starts_with("HTTP/1.0 200"), "{response}");
    // Past the client's 16, connections were closed on accept.
    let mut over = 0;
    for stream in idle.iter_mut().skip(16) {
        if closed_within(stream, Duration::from_secs(5)).await {
            over += 1;
        }
    }
    assert_eq!(over, 24, "connections over the per-client cap closed");
    // Its own are closed once silent for 10 s, the half-sent header too.
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(20)).await,
        "a half-sent header is not held"
    );
    assert!(closed_within(&mut idle[1], Duration::from_secs(5)).await);
    server.stop().await;
}

async fn tcp_connect_from(source: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether the server closes `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Out of file descriptors (a flood of gRPC connections under a low
/// `ulimit -n`), accept fails at once, every time: the gRPC listener
/// pauses between tries instead of spinning a core (it spun one at 100%:
/// 3.00 s of CPU in 3 s; 0.02–0.03 s with the pause).
#[tokio::test]
async fn running_out_of_descriptors_does_not_spin_the_grpc_listener() {
    let (dns, grpc, admin) = (
        meshdns_tests::free_port(),
        meshdns_tests::free_port(),
        meshdns_tests::free_port(),
    );
    let script = format!(
        "ulimit -n 96; exec \"$0\" serve --insecure --dns-listen 127.0.0.1:{dns} --grpc-listen 127.0.0.1:{grpc} --admin-listen 127.0.0.1:{admin}"
    );
    let hub = meshdns_tests::Proc(
        std::process::Command::new("sh")
            .args(["-c", &script])
            .arg(meshdns_tests::bin("meshdns"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("sh runs"),
    );
    let pid = hub.0.id();
    let to: SocketAddr = ([127, 0, 0, 1], grpc).into();
    meshdns_tests::eventually(Duration::from_secs(20), "the hub listens", || async {
        tokio::net::TcpStream::connect(to).await.ok().map(drop)
    })
    .await;
    // More connections than the process has descriptors: the kernel
    // completes them, the hub cannot accept the rest.
    let mut held = Vec::new();
    for _ in 0..150 {
        if let Ok(stream) = tokio::net::TcpStream::connect(to).await {
            held.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<u64> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse().unwrap())
            .collect();
        fields.iter().sum::<u64>()
    };
    let before = cpu();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = cpu() - before;
    // Clock ticks (1/100 s): a spinning listener takes ~200 of 200.
    assert!(
        ticks < 60,
        "the hub used {ticks} ticks of CPU in 2 s with {} connections waiting",
        held.len()
    );
    drop(held);
    assert!(hub.terminate().success());
}
