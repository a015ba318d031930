//! `fanout`: the hub serving Watch streams to a fleet of edge followers
//! under churn (issue 19). One run, three phases on one hub process:
//!
//! 1. no followers: the hub's CPU, memory and DNS rate while a syncer's
//!    changes stream in;
//! 2. `--followers` in-process Watch clients (each its own connection, as
//!    a follower's), `--stalled` clients that never read, and `--edges`
//!    real `meshdns serve --follow` processes: the same figures, and
//!    propagation from handing a change to the syncer's publisher to each
//!    client's receipt of it and to each edge's DNS answer showing it;
//! 3. the same clients behind `--regional` follower processes
//!    (hub → region → client).
//!
//! Each client also checks the protocol: after its first Reset it must
//! get changes as ServicesChanged deltas (their size is reported against
//! the Reset's), and a Reset again only if it fell behind.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};
use meshdns_benches::percentiles::summary;
use meshdns_benches::publishers::{self, Publishers};
use meshdns_benches::shape::Shape;
use meshdns_proto::wire::{self, watch_event::Event};
use prost::Message as _;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "fanout",
    about = "Watch fan-out from a hub to a fleet of followers, under churn"
)]
struct Cli {
    /// The meshdns binary to run the hub and followers with.
    #[arg(long)]
    meshdns: std::path::PathBuf,
    /// In-process Watch clients standing for edge followers.
    #[arg(long, default_value_t = 1_000)]
    followers: usize,
    /// Clients that open a Watch and never read it (slow followers).
    #[arg(long, default_value_t = 10)]
    stalled: usize,
    /// Real `meshdns serve --follow` processes, timed to their DNS answer.
    #[arg(long, default_value_t = 3)]
    edges: usize,
    /// Regional follower processes for phase 3 (0 skips it).
    #[arg(long, default_value_t = 4)]
    regional: usize,
    /// Changes per phase, one at a time.
    #[arg(long, default_value_t = 100)]
    changes: usize,
    /// Pause between changes.
    #[arg(long, default_value = "20ms", value_parser = parse_ms)]
    gap: Duration,
    /// Clusters of the fleet.
    #[arg(long, default_value_t = 20)]
    clusters: usize,
    /// Services of the fleet; changes go round them.
    #[arg(long, default_value_t = 300)]
    services: usize,
}

fn parse_ms(text: &str) -> Result<Duration, String> {
    text.strip_suffix("ms")
        .and_then(|n| n.parse().ok())
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?}: write milliseconds, e.g. 20ms"))
}

fn free_addr() -> SocketAddr {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let addr = udp.local_addr().expect("addr");
        if std::net::TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
}

/// A `meshdns serve` process, killed on drop.
struct Server {
    child: Child,
    dns: SocketAddr,
    grpc: SocketAddr,
}

impl Server {
    fn start(meshdns: &std::path::Path, extra: &[&str]) -> Server {
        let (dns, grpc, admin) = (free_addr(), free_addr(), free_addr());
        let mut args: Vec<String> = [
            "serve",
            "--insecure",
            "--dns-listen",
            &dns.to_string(),
            "--grpc-listen",
            &grpc.to_string(),
            "--admin-listen",
            &admin.to_string(),
            "--max-watch-streams",
            "4096",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new(meshdns)
            .args(&args)
            .env("RUST_LOG", "error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start meshdns");
        Server { child, dns, grpc }
    }

    fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// CPU seconds (user + system) and resident memory (KiB) so far.
    fn usage(&self) -> (f64, u64) {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
            .sum();
        let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("VmRSS:")?
                    .trim()
                    .strip_suffix(" kB")?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        (ticks / 100.0, rss)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The change every client is waiting for, and what they saw of it.
#[derive(Default)]
struct Probe {
    target: Mutex<Option<(String, String, Instant)>>,
    latencies: Mutex<Vec<Duration>>,
    seen: AtomicUsize,
    /// Clients that have their first whole state.
    synced: AtomicUsize,
    /// Resets after the first (a client re-synced because it fell behind).
    resyncs: AtomicUsize,
    /// Streams that ended.
    lost: AtomicUsize,
    /// Client 0's bytes: its first Reset, and every delta after it.
    reset_bytes: AtomicU64,
    delta_bytes: AtomicU64,
    deltas: AtomicU64,
}

async fn client(url: String, id: usize, probe: Arc<Probe>, stop: CancellationToken) {
    let auth = publishers::insecure();
    let mut client = loop {
        match auth.connect(&url).await {
            Ok(c) => break c.max_decoding_message_size(256 << 20),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let Ok(events) = client.watch(wire::WatchRequest {}).await else {
        probe.lost.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let mut events = events.into_inner();
    let mut synced = false;
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            e = events.message() => e,
        };
        let Ok(Some(event)) = event else {
            probe.lost.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let bytes = event.encoded_len() as u64;
        match event.event {
            Some(Event::Reset(reset)) => {
                if id == 0 && !synced {
                    probe.reset_bytes.fetch_add(bytes, Ordering::Relaxed);
                }
                if !reset.more {
                    if synced {
                        probe.resyncs.fetch_add(1, Ordering::Relaxed);
                    } else {
                        synced = true;
                        probe.synced.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Some(Event::Services(changed)) => {
                let now = Instant::now();
                if id == 0 {
                    probe.delta_bytes.fetch_add(bytes, Ordering::Relaxed);
                    probe.deltas.fetch_add(1, Ordering::Relaxed);
                }
                let sent = {
                    let target = probe.target.lock().expect("probe");
                    target.as_ref().and_then(|(cluster, name, sent)| {
                        (changed.cluster == *cluster
                            && changed
                                .upserts
                                .iter()
                                .any(|u| u.key.as_ref().is_some_and(|k| k.name == *name)))
                        .then_some(*sent)
                    })
                };
                if let Some(sent) = sent {
                    probe
                        .latencies
                        .lock()
                        .expect("probe")
                        .push(now.duration_since(sent));
                    probe.seen.fetch_add(1, Ordering::Relaxed);
                }
            }
            _ => {}
        }
    }
}

/// A Watch opened and never read: the hub must not wait for it.
async fn stalled(url: String, stop: CancellationToken) {
    let auth = publishers::insecure();
    if let Ok(mut client) = auth.connect(&url).await
        && let Ok(events) = client.watch(wire::WatchRequest {}).await
    {
        stop.cancelled().await;
        drop(events);
    }
}

/// DNS queries answered a second, one outstanding per thread, until `done`.
fn dns_load(dns: SocketAddr, shape: Shape, done: Arc<AtomicBool>) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let names: Vec<Vec<u8>> = (0..shape.services.min(200))
            .map(|s| {
                let mut m = Message::new(s as u16, MessageType::Query, OpCode::Query);
                m.add_query(Query::query(
                    Name::from_ascii(format!("{}.", shape.name(s))).expect("name"),
                    RecordType::A,
                ));
                m.to_vec().expect("encode")
            })
            .collect();
        let started = Instant::now();
        let mut answered = 0u64;
        let mut buf = [0u8; 4096];
        let mut i = 0;
        while !done.load(Ordering::Relaxed) {
            i = (i + 1) % names.len();
            if socket.send_to(&names[i], dns).is_ok() && socket.recv(&mut buf).is_ok() {
                answered += 1;
            }
        }
        answered as f64 / started.elapsed().as_secs_f64()
    })
}

/// Waits until a DNS answer at `dns` for `name` is `want`.
async fn wait_dns(dns: SocketAddr, name: &Name, want: &BTreeSet<IpAddr>, limit: Duration) -> bool {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut buf = vec![0u8; 65_535];
    let started = Instant::now();
    let mut id = 0u16;
    while started.elapsed() < limit {
        id = id.wrapping_add(1);
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(name.clone(), RecordType::A));
        let _ = socket.send_to(&m.to_vec().expect("encode"), dns).await;
        if let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_millis(100), socket.recv(&mut buf)).await
            && let Ok(reply) = Message::from_vec(&buf[..len])
        {
            let got: BTreeSet<IpAddr> = reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect();
            if got == *want {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// The fleet being churned: the publishers' inputs and the next change.
struct Churn {
    shape: Shape,
    publishers: Publishers,
    next: usize,
    /// Changes made to each service so far.
    versions: Vec<usize>,
}

struct PhaseResult {
    per_client: Vec<Duration>,
    to_last_client: Vec<Duration>,
    to_last_edge: Vec<Duration>,
    cpu: f64,
    qps: f64,
    missed: usize,
}

impl Churn {
    /// The next change: the next service's first export flips an
    /// endpoint's readiness. Returns the service, its cluster and the
    /// addresses it now answers with; [`Self::send`] hands it over.
    fn change(&mut self) -> (usize, usize, BTreeSet<IpAddr>) {
        // The last service never changes: it tells when a follower has loaded.
        let s = self.next % (self.shape.services - 1);
        self.next += 1;
        let c = self.shape.exporters(s).next().expect("an exporter");
        // Each change of a service flips its readiness again: a real change.
        self.versions[s] += 1;
        let export = self.shape.export(s, 0, self.versions[s]);
        let want = self.publishers.stage(c, export);
        (s, c, want)
    }

    fn send(&self, c: usize) {
        self.publishers.send(c);
    }

    /// The hub's DNS rate over `window` while a change goes in every `gap`.
    async fn qps(&mut self, hub: &Server, window: Duration, gap: Duration) -> f64 {
        let done = Arc::new(AtomicBool::new(false));
        let load = dns_load(hub.dns, self.shape, done.clone());
        let started = Instant::now();
        while started.elapsed() < window {
            let (_, c, _) = self.change();
            self.send(c);
            tokio::time::sleep(gap).await;
        }
        done.store(true, Ordering::Relaxed);
        load.join().unwrap_or(0.0)
    }

    /// `n` changes, one at a time: the next service's first export flips
    /// an endpoint's readiness; each is timed from handing it to the
    /// publisher to `clients` clients' receipt and `edges`' DNS answers.
    async fn run(
        &mut self,
        n: usize,
        gap: Duration,
        hub: &Server,
        probe: &Probe,
        clients: usize,
        edges: &[SocketAddr],
    ) -> PhaseResult {
        let (cpu_before, _) = hub.usage();
        let mut to_last_client = Vec::new();
        let mut to_last_edge = Vec::new();
        let mut missed = 0;
        probe.latencies.lock().expect("probe").clear();
        for _ in 0..n {
            let (s, c, want) = self.change();
            let name =
                Name::from_ascii(format!("cluster-{c}.{}.", self.shape.name(s))).expect("name");
            let key_name = self.shape.key(s).name.to_string();
            probe.seen.store(0, Ordering::Relaxed);
            let sent = Instant::now();
            *probe.target.lock().expect("probe") = Some((format!("cluster-{c}"), key_name, sent));
            self.send(c);
            let edge_waits = edges.iter().map(|dns| {
                let (name, want) = (name.clone(), want.clone());
                let dns = *dns;
                async move {
                    wait_dns(dns, &name, &want, Duration::from_secs(10))
                        .await
                        .then(|| sent.elapsed())
                }
            });
            let edge_times = futures_join(edge_waits.collect()).await;
            if !edges.is_empty() {
                match edge_times.iter().copied().collect::<Option<Vec<_>>>() {
                    Some(times) => to_last_edge.push(times.into_iter().max().unwrap_or_default()),
                    None => missed += 1,
                }
            }
            let deadline = sent + Duration::from_secs(10);
            while probe.seen.load(Ordering::Relaxed) < clients && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            if clients > 0 {
                if probe.seen.load(Ordering::Relaxed) < clients {
                    missed += 1;
                } else if let Some(last) = probe
                    .latencies
                    .lock()
                    .expect("probe")
                    .iter()
                    .rev()
                    .take(clients)
                    .max()
                {
                    to_last_client.push(*last);
                }
            }
            tokio::time::sleep(gap).await;
        }
        *probe.target.lock().expect("probe") = None;
        let (cpu_after, _) = hub.usage();
        let qps = self.qps(hub, Duration::from_secs(2), gap).await;
        PhaseResult {
            per_client: std::mem::take(&mut *probe.latencies.lock().expect("probe")),
            to_last_client,
            to_last_edge,
            cpu: cpu_after - cpu_before,
            qps,
            missed,
        }
    }
}

async fn futures_join<T: Send + 'static>(
    futures: Vec<impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// Starts `n` clients of `url` (plus `stalled` that never read) and waits
/// until every reading one holds the whole state.
async fn attach(
    urls: &[String],
    n: usize,
    stalled_n: usize,
    probe: &Arc<Probe>,
    stop: &CancellationToken,
) -> Duration {
    let started = Instant::now();
    // Followers join in batches (as clusters come up), each batch once
    // the one before holds the whole state: the bench measures fan-out,
    // not a thousand Resets at once (that is scale.sh's reconnect storm).
    for id in 0..n {
        let url = urls[id % urls.len()].clone();
        tokio::spawn(client(url, id, probe.clone(), stop.clone()));
        if id % 50 == 49 || id + 1 == n {
            while probe.synced.load(Ordering::Relaxed) + probe.lost.load(Ordering::Relaxed) <= id {
                assert!(
                    started.elapsed() < Duration::from_secs(300),
                    "clients never synced: {} of {n}",
                    probe.synced.load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
    for k in 0..stalled_n {
        tokio::spawn(stalled(urls[k % urls.len()].clone(), stop.clone()));
    }
    let lost = probe.lost.load(Ordering::Relaxed);
    assert!(
        lost == 0,
        "{lost} of {n} clients lost their stream while joining"
    );
    started.elapsed()
}

fn report(phase: &str, r: &PhaseResult) {
    println!(
        "{phase} cpu {:.2}s qps {:.0} missed {}",
        r.cpu, r.qps, r.missed
    );
    if !r.per_client.is_empty() {
        println!("{phase} client {}", summary(r.per_client.clone()));
        println!("{phase} last-client {}", summary(r.to_last_client.clone()));
    }
    if !r.to_last_edge.is_empty() {
        println!("{phase} last-edge-dns {}", summary(r.to_last_edge.clone()));
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), String> {
    let cli = Cli::parse();
    if cli.services < 2 {
        return Err("--services: at least 2 (the last one never changes)".into());
    }
    let shape = Shape {
        clusters: cli.clusters,
        services: cli.services,
        spread: 3.min(cli.clusters),
        endpoints: 3,
        zone_node: false,
    };
    shape.check()?;
    let hub = Server::start(&cli.meshdns, &[]);
    let shutdown = CancellationToken::new();
    let publishers = Publishers::spawn(shape.export_sets(), &hub.url(), &shutdown);
    // Loaded: the last service answers at the hub.
    let last = shape.services - 1;
    let c = shape.exporters(last).next().expect("exporter");
    let want: BTreeSet<IpAddr> = shape
        .ready_addresses(last)
        .into_iter()
        .map(IpAddr::V4)
        .collect();
    let _ = c;
    let name = Name::from_ascii(format!("{}.", shape.name(last))).map_err(|e| e.to_string())?;
    if !wait_dns(hub.dns, &name, &want, Duration::from_secs(60)).await {
        return Err("the fleet never loaded at the hub".into());
    }
    println!(
        "fleet clusters={} services={} endpoints={} followers={} stalled={} edges={} regional={} changes={}",
        shape.clusters,
        shape.services,
        shape.total_endpoints(),
        cli.followers,
        cli.stalled,
        cli.edges,
        cli.regional,
        cli.changes
    );
    let mut churn = Churn {
        shape,
        publishers,
        next: 0,
        versions: vec![0; shape.services],
    };
    let probe = Arc::new(Probe::default());
    // Phase 1: no followers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rss0) = hub.usage();
    let none = churn.run(cli.changes, cli.gap, &hub, &probe, 0, &[]).await;
    report("hub-0-followers", &none);
    // Phase 2: the fleet's followers on the hub.
    let stop = CancellationToken::new();
    let synced_in = attach(&[hub.url()], cli.followers, cli.stalled, &probe, &stop).await;
    let edges: Vec<Server> = (0..cli.edges)
        .map(|_| Server::start(&cli.meshdns, &["--follow", &hub.url()]))
        .collect();
    for e in &edges {
        if !wait_dns(e.dns, &name, &want, Duration::from_secs(60)).await {
            return Err("an edge never loaded".into());
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, rss1) = hub.usage();
    println!(
        "attach {} clients synced in {:.0}ms; hub rss {} KiB -> {} KiB ({:.1} KiB per follower)",
        cli.followers,
        synced_in.as_secs_f64() * 1000.0,
        rss0,
        rss1,
        (rss1.saturating_sub(rss0)) as f64
            / (cli.followers + cli.edges + cli.stalled).max(1) as f64
    );
    let edge_dns: Vec<SocketAddr> = edges.iter().map(|e| e.dns).collect();
    let fleet = churn
        .run(cli.changes, cli.gap, &hub, &probe, cli.followers, &edge_dns)
        .await;
    report(&format!("hub-{}-followers", cli.followers), &fleet);
    println!(
        "hub cpu per follower per change {:.1}us; dns qps with followers / without {:.2}",
        (fleet.cpu - none.cpu).max(0.0) * 1e6 / (cli.followers * cli.changes).max(1) as f64,
        fleet.qps / none.qps.max(1.0)
    );
    let deltas = probe.deltas.load(Ordering::Relaxed).max(1);
    println!(
        "protocol reset {} bytes; {} deltas, {:.0} bytes each; resyncs {} lost {}",
        probe.reset_bytes.load(Ordering::Relaxed),
        deltas,
        probe.delta_bytes.load(Ordering::Relaxed) as f64 / deltas as f64,
        probe.resyncs.load(Ordering::Relaxed),
        probe.lost.load(Ordering::Relaxed)
    );
    stop.cancel();
    drop(edges);
    // Phase 3: the same clients behind regional followers.
    if cli.regional > 0 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let regionals: Vec<Server> = (0..cli.regional)
            .map(|_| Server::start(&cli.meshdns, &["--follow", &hub.url()]))
            .collect();
        for r in &regionals {
            if !wait_dns(r.dns, &name, &want, Duration::from_secs(60)).await {
                return Err("a regional follower never loaded".into());
            }
        }
        let probe = Arc::new(Probe::default());
        let stop = CancellationToken::new();
        let urls: Vec<String> = regionals.iter().map(Server::url).collect();
        attach(&urls, cli.followers, 0, &probe, &stop).await;
        let regional = churn
            .run(cli.changes, cli.gap, &hub, &probe, cli.followers, &[])
            .await;
        report(
            &format!("regional-{}x{}", cli.regional, cli.followers / cli.regional),
            &regional,
        );
        stop.cancel();
    }
    // An edge restarted with its state file while the hub is paused: time
    // from its start to its first answer from the file.
    let dir = std::env::temp_dir().join(format!("meshdns-fanout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let state = dir.join("edge.state").display().to_string();
    let edge_flags = ["--follow", &hub.url(), "--state-file", &state];
    let mut edge = Server::start(&cli.meshdns, &edge_flags);
    if !wait_dns(edge.dns, &name, &want, Duration::from_secs(60)).await {
        return Err("the restart edge never loaded".into());
    }
    signal(edge.child.id(), "TERM");
    let _ = edge.child.wait();
    signal(hub.child.id(), "STOP");
    let started = Instant::now();
    let restarted = Server::start(&cli.meshdns, &edge_flags);
    let answered = wait_dns(restarted.dns, &name, &want, Duration::from_secs(30)).await;
    let took = started.elapsed();
    signal(hub.child.id(), "CONT");
    drop(restarted);
    let _ = std::fs::remove_dir_all(&dir);
    if !answered {
        return Err("the restarted edge never answered from its state file".into());
    }
    println!(
        "restart edge with --state-file, hub paused: first answer after {:.1}ms (process start included)",
        took.as_secs_f64() * 1000.0
    );
    shutdown.cancel();
    Ok(())
}

/// Sends a signal by name to `pid` (`kill -NAME PID`).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}
