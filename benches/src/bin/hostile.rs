//! `hostile`: the trust-boundary attacks of `SECURITY.md`, run against a
//! `meshdns` binary, with what each one cost the hub. Run it against two
//! builds to compare (`benches/README.md`, "Hostile member"):
//!
//! ```sh
//! cargo run -p meshdns-benches --bin hostile -- --meshdns target/debug/meshdns
//! ```
//!
//! Every attack starts its own `meshdns serve` on loopback (only flags
//! every version has), does what an attacker holding one cluster's
//! credential (or none) would, prints one line of figures and stops the
//! hub by its PID.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use meshdns_proto::fixtures;
use meshdns_proto::wire::{self, export_request::Message as Req, registry_client::RegistryClient};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataValue;

#[derive(Debug, Parser)]
#[command(
    name = "hostile",
    about = "Trust-boundary attacks against a meshdns binary, with their cost"
)]
struct Cli {
    /// The `meshdns` binary to attack.
    #[arg(long)]
    meshdns: PathBuf,
    /// Size of the empty-entries message, in MiB.
    #[arg(long, default_value_t = 8)]
    empty_mib: usize,
    /// Export streams that each announce a 4 MiB message and dribble it.
    #[arg(long, default_value_t = 64)]
    dribblers: usize,
    /// gRPC connections opened and held, from one address.
    #[arg(long, default_value_t = 3000)]
    connections: usize,
    /// Run only the attacks whose name contains this (budget, connections, ...).
    #[arg(long)]
    only: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A hub process, its stderr counted (bytes, lines) as it is written.
struct Hub {
    child: Child,
    grpc: String,
    dns: SocketAddr,
    admin: SocketAddr,
    log_bytes: Arc<AtomicU64>,
    dir: PathBuf,
}

impl Hub {
    fn start(meshdns: &Path, flags: &[&str]) -> Hub {
        let (dns, grpc, admin) = (free_port(), free_port(), free_port());
        let dir =
            std::env::temp_dir().join(format!("meshdns-hostile-{}-{grpc}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let mut child = Command::new(meshdns)
            .args(["serve", "--dns-listen", &format!("127.0.0.1:{dns}")])
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
            .args([
                "--admin-listen",
                &format!("127.0.0.1:{admin}"),
                "--workers",
                "1",
            ])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start meshdns");
        let log_bytes = Arc::new(AtomicU64::new(0));
        let mut stderr = child.stderr.take().expect("stderr");
        let counter = log_bytes.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0; 1 << 16];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    return;
                }
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        let hub = Hub {
            child,
            grpc: format!("http://127.0.0.1:{grpc}"),
            dns: format!("127.0.0.1:{dns}").parse().expect("addr"),
            admin: format!("127.0.0.1:{admin}").parse().expect("addr"),
            log_bytes,
            dir,
        };
        let started = Instant::now();
        while http_status(hub.admin, "/readyz", None) != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the hub did not get ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        hub
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn http_status(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<u16> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A's of `name` asked from `source`.
fn ask(dns: SocketAddr, name: &str, source: &str) -> Vec<String> {
    let socket = UdpSocket::bind((source, 0)).expect("bind");
    socket.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut query = Message::query();
    query.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    let bytes = query.to_vec().expect("encode");
    socket.send_to(&bytes, dns).expect("send");
    let mut buf = [0u8; 1500];
    let Ok(n) = socket.recv(&mut buf) else {
        return vec![];
    };
    Message::from_vec(&buf[..n])
        .map(|m| {
            m.answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(a.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

type Responses = tonic::Streaming<wire::ExportResponse>;

/// Opens an Export stream, sends `first` and returns the sender and the
/// responses (the first is the Hello's acknowledgement, or the refusal).
async fn open(
    hub: &Hub,
    token: Option<&str>,
    first: Option<wire::ExportRequest>,
) -> Result<(mpsc::Sender<wire::ExportRequest>, Responses), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(hub.grpc.clone())
        .map_err(|e| tonic::Status::unknown(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = RegistryClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    let (tx, rx) = mpsc::channel(4);
    if let Some(first) = first {
        tx.send(first).await.ok();
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().expect("header");
        request.metadata_mut().insert("authorization", value);
    }
    let responses = client.export(request).await?.into_inner();
    Ok((tx, responses))
}

fn hello(cluster: &str, cidrs: &[&str]) -> wire::ExportRequest {
    wire::ExportRequest {
        generation: 1,
        message: Some(Req::Hello(wire::Hello {
            cluster: cluster.into(),
            client_cidrs: cidrs.iter().map(|c| (*c).into()).collect(),
            ..Default::default()
        })),
    }
}

fn service(ns: &str, name: &str, addresses: &[&str]) -> wire::ServiceExport {
    fixtures::wire_service(
        ns,
        name,
        addresses.iter().map(|a| fixtures::wire_endpoint(*a)),
    )
}

fn request(generation: u64, message: Req) -> wire::ExportRequest {
    wire::ExportRequest {
        generation,
        message: Some(message),
    }
}

/// Sends `message` and waits for its answer.
async fn send(
    tx: &mpsc::Sender<wire::ExportRequest>,
    rx: &mut Responses,
    generation: u64,
    message: Req,
) -> Result<wire::ExportResponse, tonic::Status> {
    if tx.send(request(generation, message)).await.is_err() {
        return Err(rx
            .message()
            .await
            .err()
            .unwrap_or_else(|| tonic::Status::unknown("closed")));
    }
    rx.message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("closed"))
}

fn snapshot(services: Vec<wire::ServiceExport>) -> Req {
    Req::Snapshot(wire::Snapshot {
        services,
        ..Default::default()
    })
}

async fn services_held(hub: &Hub, cluster: &str) -> Option<u32> {
    let mut client = RegistryClient::connect(hub.grpc.clone()).await.ok()?;
    let clusters = client
        .list_clusters(wire::ListClustersRequest {})
        .await
        .ok()?
        .into_inner()
        .clusters;
    clusters
        .iter()
        .find(|c| c.name == cluster)
        .map(|c| c.services)
}

fn outcome<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "accepted".into(),
        Err(s) => format!("refused ({:?})", s.code()),
    }
}

/// A message of `mib` MiB of two-byte empty entries, as the attacker would
/// send it. Built as its wire form would decode: the hub sees exactly
/// `entries` empty `ServiceExport`s.
async fn empty_entries(cli: &Cli) {
    let mut hub = Hub::start(
        &cli.meshdns,
        &["--insecure", "--max-grpc-message-bytes", "268435456"],
    );
    let (tx, mut rx) = open(&hub, None, Some(hello("attacker", &[])))
        .await
        .expect("open");
    rx.message().await.ok();
    let before = hub.status_kib("VmRSS:");
    let log_before = hub.log_bytes.load(Ordering::Relaxed);
    let entries = cli.empty_mib * 1024 * 1024 / 2;
    let message = snapshot(vec![wire::ServiceExport::default(); entries]);
    let started = Instant::now();
    let result = send(&tx, &mut rx, 2, message).await;
    let took = started.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    let peak = hub.status_kib("VmHWM:");
    println!(
        "empty entries ({} MiB, {entries} entries, --max-grpc-message-bytes 256 MiB): {}, hub peak RSS +{} MiB, log +{} KiB, {:.1}s, hub alive: {}",
        cli.empty_mib,
        outcome(&result),
        peak.saturating_sub(before) / 1024,
        (hub.log_bytes.load(Ordering::Relaxed) - log_before) / 1024,
        took.as_secs_f64(),
        hub.alive(),
    );
    let mut hub = Hub::start(&cli.meshdns, &["--insecure"]);
    let (tx, mut rx) = open(&hub, None, Some(hello("attacker", &[])))
        .await
        .expect("open");
    rx.message().await.ok();
    let before = hub.status_kib("VmRSS:");
    let entries = (4 * 1024 * 1024 - 4096) / 2;
    let result = send(
        &tx,
        &mut rx,
        2,
        snapshot(vec![wire::ServiceExport::default(); entries]),
    )
    .await;
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "empty entries (4 MiB, default limit): {}, hub peak RSS +{} MiB, hub alive: {}",
        outcome(&result),
        hub.status_kib("VmHWM:").saturating_sub(before) / 1024,
        hub.alive()
    );
}

async fn repeated_removals(cli: &Cli) {
    let hub = Hub::start(
        &cli.meshdns,
        &["--insecure", "--max-services-per-cluster", "5"],
    );
    let (tx, mut rx) = open(&hub, None, Some(hello("attacker", &[])))
        .await
        .expect("open");
    rx.message().await.ok();
    let names = |r: std::ops::Range<usize>| -> Vec<wire::ServiceExport> {
        r.map(|i| service("a", &format!("s{i}"), &[&format!("10.9.0.{}", i + 1)]))
            .collect()
    };
    send(&tx, &mut rx, 2, snapshot(names(0..5))).await.ok();
    let key = wire::ServiceKey {
        namespace: "a".into(),
        name: "s0".into(),
    };
    let delta = Req::Delta(wire::Delta {
        upserts: names(5..10),
        removals: vec![key; 5],
        observed_unix_ms: 0,
    });
    send(&tx, &mut rx, 3, delta).await.ok();
    println!(
        "repeated removal (--max-services-per-cluster 5): the cluster holds {} services",
        services_held(&hub, "attacker").await.unwrap_or(0)
    );
}

async fn reserved_addresses(cli: &Cli) {
    let hub = Hub::start(&cli.meshdns, &["--insecure"]);
    let (tx, mut rx) = open(&hub, None, Some(hello("attacker", &[])))
        .await
        .expect("open");
    rx.message().await.ok();
    let bad = [
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "127.0.0.1",
    ];
    let services = bad
        .iter()
        .enumerate()
        .map(|(i, a)| service("shop", &format!("bad{i}"), &[a]))
        .collect();
    let refused = send(&tx, &mut rx, 2, snapshot(services))
        .await
        .map(|r| r.refusals.len())
        .unwrap_or(0);
    let served: Vec<String> = (0..bad.len())
        .flat_map(|i| ask(hub.dns, &format!("bad{i}.shop.global"), "127.0.0.1"))
        .collect();
    println!("reserved endpoint addresses (5): {refused} refused, served to the fleet: {served:?}");
}

async fn cidr_takeover(cli: &Cli) {
    let hub = Hub::start(&cli.meshdns, &["--insecure"]);
    let (good, mut good_rx) = open(&hub, None, Some(hello("good", &["127.0.0.2/32"])))
        .await
        .expect("open");
    good_rx.message().await.ok();
    send(
        &good,
        &mut good_rx,
        2,
        snapshot(vec![service("shop", "web", &["10.1.0.1"])]),
    )
    .await
    .ok();
    let (bad, mut bad_rx) = open(&hub, None, Some(hello("a-attacker", &["127.0.0.2/32"])))
        .await
        .expect("open");
    bad_rx.message().await.ok();
    send(
        &bad,
        &mut bad_rx,
        2,
        snapshot(vec![service("shop", "web", &["10.66.0.1"])]),
    )
    .await
    .ok();
    std::thread::sleep(Duration::from_millis(200));
    println!(
        "client CIDR takeover: good's pods (127.0.0.2) are answered {:?} (good's endpoint is 10.1.0.1)",
        ask(hub.dns, "web.shop.global", "127.0.0.2")
    );
}

const CLUSTER_TOKEN: &str = "cluster-token-0123456789abcdef";
const READER_TOKEN: &str = "reader-token-0123456789abcdef";

async fn credentials(cli: &Cli) {
    let dir = std::env::temp_dir().join(format!("meshdns-hostile-tokens-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("{CLUSTER_TOKEN} cluster:east\n{READER_TOKEN} reader:ops\n"),
    )
    .ok();
    let tokens_flag = tokens.display().to_string();
    let hub = Hub::start(&cli.meshdns, &["--insecure", "--token-file", &tokens_flag]);
    println!(
        "/debug/registry with credentials required: HTTP {:?} without a token, {:?} with the reader token",
        http_status(hub.admin, "/debug/registry", None),
        http_status(hub.admin, "/debug/registry", Some(READER_TOKEN))
    );
    let (tx, mut rx) = open(&hub, Some(CLUSTER_TOKEN), Some(hello("east", &[])))
        .await
        .expect("open");
    rx.message().await.ok();
    send(
        &tx,
        &mut rx,
        2,
        snapshot(vec![service("shop", "web", &["10.1.0.1"])]),
    )
    .await
    .ok();
    std::fs::write(&tokens, format!("{READER_TOKEN} reader:ops\n")).ok();
    std::thread::sleep(Duration::from_secs(5));
    let after = send(&tx, &mut rx, 3, Req::Heartbeat(wire::Heartbeat {})).await;
    println!(
        "revoked token, 5s later: the open Export stream's next message is {}",
        outcome(&after)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

async fn slots_and_shutdown(cli: &Cli) {
    let hub = Hub::start(&cli.meshdns, &["--insecure", "--max-export-streams", "2"]);
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(open(&hub, None, None).await);
    }
    std::thread::sleep(Duration::from_millis(200));
    let real = match open(&hub, None, Some(hello("good", &[]))).await {
        Ok((_tx, mut rx)) => rx.message().await.map(|_| ()),
        Err(e) => Err(e),
    };
    println!(
        "2 streams without Hello, --max-export-streams 2: a real cluster's Hello is {}",
        outcome(&real)
    );
    drop(idle);
    let mut hub = Hub::start(&cli.meshdns, &["--insecure"]);
    let _silent = open(&hub, None, None).await;
    std::thread::sleep(Duration::from_millis(200));
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(hub.child.id().to_string())
        .status();
    let started = Instant::now();
    while hub.alive() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "SIGTERM with a stream that never sent Hello: {} after {:.1}s",
        if hub.alive() {
            "still running"
        } else {
            "exited"
        },
        started.elapsed().as_secs_f64()
    );
}

/// The largest message the default `--max-grpc-message-bytes` admits.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// An Export stream whose request body the attacker writes byte by byte
/// (tonic's client sends a message only whole): what was sent, and the
/// response, kept so the stream stays open.
struct RawStream {
    tx: mpsc::Sender<Result<prost::bytes::Bytes, std::convert::Infallible>>,
    _response: tonic::codegen::http::Response<tonic::body::Body>,
    _channel: tonic::transport::Channel,
}

async fn raw_stream(hub: &Hub) -> Option<RawStream> {
    use tonic::codegen::{Service as _, http};
    let mut channel = tonic::transport::Endpoint::from_shared(hub.grpc.clone())
        .ok()?
        .connect()
        .await
        .ok()?;
    let (tx, rx) = mpsc::channel(4);
    let request = http::Request::builder()
        .method(http::Method::POST)
        .uri("/meshdns.v1.Registry/Export")
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(tonic::body::Body::new(axum::body::Body::from_stream(
            ReceiverStream::new(rx),
        )))
        .ok()?;
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .ok()?;
    let response = channel.call(request).await.ok()?;
    Some(RawStream {
        tx,
        _response: response,
        _channel: channel,
    })
}

fn framed(message: &wire::ExportRequest) -> Vec<u8> {
    let bytes = message.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(&bytes);
    out
}

/// A Snapshot of 2,000 endpoints (about 30 KB: bigger than a DATA frame).
fn honest_snapshot() -> Req {
    snapshot(
        (0..20)
            .map(|s| {
                let addresses: Vec<String> =
                    (0..100).map(|e| format!("10.5.{s}.{}", e + 1)).collect();
                let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
                service("shop", &format!("web-{s}"), &refs)
            })
            .collect(),
    )
}

/// An honest cluster (from `source`) sends its Snapshot: how long until
/// it is acknowledged, or why it was not.
async fn honest_cluster(hub: &Hub, source: &str, patience: Duration) -> String {
    let started = Instant::now();
    let attempt = async {
        let channel = tonic::transport::Endpoint::from_shared(hub.grpc.clone())
            .map_err(|e| tonic::Status::unknown(e.to_string()))?
            .local_address(source.parse().ok())
            .connect()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut client = RegistryClient::new(channel);
        let (tx, rx) = mpsc::channel(4);
        tx.send(hello("honest", &[])).await.ok();
        let mut rx_stream = client
            .export(tonic::Request::new(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        rx_stream.message().await?;
        send(&tx, &mut rx_stream, 2, honest_snapshot()).await
    };
    match tokio::time::timeout(patience, attempt).await {
        Ok(result) => format!(
            "{} after {:.1}s",
            outcome(&result),
            started.elapsed().as_secs_f64()
        ),
        Err(_) => format!("not acknowledged within {}s", patience.as_secs()),
    }
}

/// N authenticated streams each announce a 4 MiB message and send it at
/// the pace that just beats --export-message-timeout (30 s): what the hub
/// holds, and whether an honest cluster's Snapshot gets through.
async fn dribbled_messages(cli: &Cli) {
    let hub = Hub::start(&cli.meshdns, &["--insecure"]);
    let before = hub.status_kib("VmRSS:");
    let pace = Duration::from_secs(25);
    let mut tasks = Vec::new();
    for i in 0..cli.dribblers {
        let Some(stream) = raw_stream(&hub).await else {
            println!("dribbled messages: stream {i} could not be opened");
            return;
        };
        tasks.push(tokio::spawn(async move {
            let stream = stream;
            let sent = stream
                .tx
                .send(Ok(framed(&hello(&format!("dribbler-{i}"), &[])).into()))
                .await;
            if sent.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut header = vec![0];
            header.extend_from_slice(&((MAX_MESSAGE - 16) as u32).to_be_bytes());
            if stream.tx.send(Ok(header.into())).await.is_err() {
                return;
            }
            // Its body, 64 KiB at a time, at the pace; never the end.
            let piece = 64 * 1024;
            let pieces = MAX_MESSAGE / piece - 1;
            let mut ticker = tokio::time::interval(pace / pieces as u32);
            for _ in 0..pieces {
                ticker.tick().await;
                if stream.tx.send(Ok(vec![0x0a; piece].into())).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(600)).await;
        }));
    }
    // The honest cluster comes once every stream has started; the peak
    // is read once the first messages would be whole (or cut off).
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let honest = honest_cluster(&hub, "127.0.0.2", Duration::from_secs(150)).await;
    tokio::time::sleep((pace + Duration::from_secs(4)).saturating_sub(started.elapsed())).await;
    let peak = hub.status_kib("VmHWM:");
    println!(
        "{} streams each announcing a 4 MiB message, sent over 25 s: hub peak RSS +{} MiB; an honest 2,000-endpoint Snapshot meanwhile: {honest}",
        cli.dribblers,
        peak.saturating_sub(before) / 1024,
    );
    for task in tasks {
        task.abort();
    }
}

/// M gRPC connections (HTTP/2 handshake done, no stream) from one address:
/// what the hub holds, and whether an honest cluster from another address
/// is served.
async fn held_connections(cli: &Cli) {
    let hub = Hub::start(&cli.meshdns, &["--insecure"]);
    let before = hub.status_kib("VmRSS:");
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..cli.connections {
        let connected = tokio::time::timeout(
            Duration::from_secs(2),
            tonic::transport::Endpoint::from_shared(hub.grpc.clone())
                .expect("url")
                .connect(),
        )
        .await;
        match connected {
            Ok(Ok(channel)) => held.push(channel),
            _ => refused += 1,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let honest = honest_cluster(&hub, "127.0.0.2", Duration::from_secs(30)).await;
    let peak = hub.status_kib("VmHWM:");
    println!(
        "{} gRPC connections from one address: {} connected, {refused} not; hub peak RSS +{} MiB; an honest Snapshot from another address: {honest}",
        cli.connections,
        held.len(),
        peak.saturating_sub(before) / 1024,
    );
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    println!("attacking {}", cli.meshdns.display());
    let only = cli.only.clone().unwrap_or_default();
    if "budget".contains(&only) || only == "dribble" {
        dribbled_messages(&cli).await;
    }
    if "connections".contains(&only) {
        held_connections(&cli).await;
    }
    if !only.is_empty() {
        return;
    }
    empty_entries(&cli).await;
    repeated_removals(&cli).await;
    reserved_addresses(&cli).await;
    cidr_takeover(&cli).await;
    credentials(&cli).await;
    slots_and_shutdown(&cli).await;
    // The wire form of an empty entry, for the record: two bytes.
    debug_assert_eq!(wire::ServiceExport::default().encoded_len(), 0);
}
