//! `loadfleet`: the load benchmark's fleet, as files or as live syncers.
//!
//! - `loadfleet files --dir D`: the static Knot zone (`global.zone`) with
//!   every service's ready addresses, and one dnsperf query file per
//!   client (`queries-<k>.txt`, listed with its source address in
//!   `clients.txt`).
//! - `loadfleet push --registry URL`: one real syncer publisher per
//!   cluster, streaming the fleet over gRPC with heartbeats, until SIGTERM
//!   or Ctrl-C. Prints `accepted <ms>` once every publisher's Snapshot
//!   has been accepted (every cluster listed live, connected and heard
//!   from since this command started), then `ready <ms>`: since when the
//!   registry has listed every cluster live with every endpoint (every
//!   answer complete and live; 0 for a hub restored live that stayed so
//!   through the storm), both from this command's start.
//! - `loadfleet wait --registry URL`: prints `synced <ms>` once the
//!   registry (a follower, started at the same moment) lists the whole
//!   fleet: a follower's time from scratch to a complete mirror.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use meshdns_benches::percentiles::summary;
use meshdns_benches::publishers::{self, Publishers};
use meshdns_benches::shape::Shape;
use meshdns_proto::wire;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    name = "loadfleet",
    about = "The load benchmark's fleet: files for Knot and dnsperf, or live syncers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args, Clone, Copy)]
struct ShapeArgs {
    /// Clusters in the fleet.
    #[arg(long, default_value_t = Shape::LOAD.clusters)]
    clusters: usize,
    /// Global services.
    #[arg(long, default_value_t = Shape::LOAD.services)]
    services: usize,
    /// Clusters exporting each service.
    #[arg(long, default_value_t = Shape::LOAD.spread)]
    spread: usize,
    /// Endpoints per service per cluster.
    #[arg(long, default_value_t = Shape::LOAD.endpoints)]
    endpoints: usize,
    /// Every endpoint carries a zone and a node name, as real
    /// EndpointSlices do (what the registry's memory per endpoint is
    /// measured with).
    #[arg(long)]
    zone_node: bool,
}

impl ShapeArgs {
    fn shape(self) -> Result<Shape, String> {
        let shape = Shape {
            clusters: self.clusters,
            services: self.services,
            spread: self.spread,
            endpoints: self.endpoints,
            zone_node: self.zone_node,
        };
        shape.check().map(|()| shape)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Writes global.zone, queries-<k>.txt and clients.txt into --dir.
    Files {
        #[command(flatten)]
        shape: ShapeArgs,
        #[arg(long)]
        dir: PathBuf,
        /// Query files, each asked from a different cluster.
        #[arg(long, default_value_t = 4)]
        clients: usize,
        /// Lines per query file.
        #[arg(long, default_value_t = 10_000)]
        queries: usize,
        /// Percent of names that do not exist.
        #[arg(long, default_value_t = 5)]
        nx_percent: usize,
    },
    /// Streams the fleet to a registry until SIGTERM or Ctrl-C.
    Push {
        #[command(flatten)]
        shape: ShapeArgs,
        /// The registry's gRPC address, http://HOST:PORT.
        #[arg(long)]
        registry: String,
        /// On SIGUSR1, change this many exports one at a time (one
        /// endpoint's readiness each, sent as a Delta by the cluster's
        /// publisher) and time each until DNS at --dns answers with it.
        #[arg(long, default_value_t = 200)]
        churn: usize,
        /// The registry's DNS address (UDP), for --churn; its
        /// --max-answers must be at least --endpoints.
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
        /// The registry's admin address: `/healthz` is timed every 10 ms
        /// while the fleet loads (the reconnect storm), and its p50/p99
        /// printed.
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
        /// A follower's DNS address (UDP): each --churn change is also
        /// timed until this follower answers with it (same start).
        #[arg(long)]
        follower_dns: Option<std::net::SocketAddr>,
    },
    /// Waits until the registry at --registry lists the whole fleet, live,
    /// and prints `synced <ms>` (from this command's start).
    Wait {
        #[command(flatten)]
        shape: ShapeArgs,
        /// The registry's gRPC address, http://HOST:PORT.
        #[arg(long)]
        registry: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Files {
            shape,
            dir,
            clients,
            queries,
            nx_percent,
        } => shape
            .shape()
            .and_then(|s| files(s, &dir, clients, queries, nx_percent)),
        Command::Push {
            shape,
            registry,
            churn,
            dns,
            admin,
            follower_dns,
        } => shape.shape().and_then(|s| {
            let probes = Probes {
                dns,
                follower_dns,
                admin,
            };
            tokio::runtime::Runtime::new()
                .map_err(|e| e.to_string())?
                .block_on(push(s, registry, churn, probes))
        }),
        Command::Wait {
            shape,
            registry,
            timeout,
        } => shape.shape().and_then(|s| {
            let started = Instant::now();
            tokio::runtime::Runtime::new()
                .map_err(|e| e.to_string())?
                .block_on(async {
                    let deadline = Duration::from_secs(timeout);
                    tokio::time::timeout(deadline, wait_complete(&s, &registry))
                        .await
                        .map_err(|_| format!("{registry}: not complete after {timeout} s"))
                })?;
            println!("synced {}", started.elapsed().as_millis());
            Ok(())
        }),
    };
    if let Err(e) = result {
        eprintln!("loadfleet: {e}");
        std::process::exit(2);
    }
}

fn files(
    shape: Shape,
    dir: &std::path::Path,
    clients: usize,
    queries: usize,
    nx_percent: usize,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut zone = String::from(
        "$ORIGIN global.\n$TTL 5\n@ SOA ns.dns.global. hostmaster.global. 1 3600 600 86400 5\n@ NS ns.dns.global.\nns.dns A 127.0.0.1\n",
    );
    for s in 0..shape.services {
        let name = shape.name(s);
        let owner = name.trim_end_matches(".global");
        for a in shape.ready_addresses(s) {
            let _ = writeln!(zone, "{owner} A {a}");
        }
    }
    std::fs::write(dir.join("global.zone"), zone).map_err(io)?;
    let mut list = String::new();
    let mut rng = fastrand::Rng::with_seed(6);
    for k in 0..clients {
        // Clients in clusters spread over the fleet (and its regions).
        let c = (k * shape.clusters / clients.max(1) + k) % shape.clusters;
        let mut text = String::with_capacity(queries * 32);
        for q in 0..queries {
            if rng.usize(0..100) < nx_percent {
                let _ = writeln!(text, "nx-{k}-{q}.ns-{}.global A", q % 100);
            } else {
                let _ = writeln!(text, "{} A", shape.name(rng.usize(0..shape.services)));
            }
        }
        let file = format!("queries-{k}.txt");
        std::fs::write(dir.join(&file), text).map_err(io)?;
        let _ = writeln!(list, "{file} {} cluster-{c}", shape.asker(c));
    }
    std::fs::write(dir.join("clients.txt"), list).map_err(io)?;
    Ok(())
}

/// Where `push` looks: the registry's DNS and admin, a follower's DNS.
struct Probes {
    dns: Option<std::net::SocketAddr>,
    follower_dns: Option<std::net::SocketAddr>,
    admin: Option<std::net::SocketAddr>,
}

async fn push(shape: Shape, registry: String, churn: usize, probes: Probes) -> Result<(), String> {
    let Probes {
        dns,
        follower_dns,
        admin,
    } = probes;
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let started_unix_ms = unix_ms();
    let loaded = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probe = admin.map(|addr| probe_healthz(addr, loaded.clone()));
    // Whether every answer is complete and live before the storm (a hub
    // restored live): asked before the publishers connect.
    let before = storm_poll(&shape, &registry, started_unix_ms).await;
    let mut publishers = Publishers::spawn(shape.export_sets(), &registry, &shutdown);
    let (accepted, complete) =
        wait_storm(&shape, &registry, started, started_unix_ms, before).await;
    println!("accepted {}", accepted.as_millis());
    println!("ready {}", complete.as_millis());
    loaded.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(probe) = probe
        && let Ok(times) = probe.join()
    {
        println!("healthz {}", summary(times));
    }
    let _ = std::io::stdout().flush();
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| e.to_string())?;
    let mut version = 0;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = usr1.recv() => {
                let Some(dns) = dns else {
                    eprintln!("loadfleet: SIGUSR1 needs --dns");
                    continue;
                };
                let targets = Targets { dns, follower: follower_dns };
                let (times, follower) = churn_run(&shape, &mut publishers, churn, targets, &mut version).await?;
                println!("propagation {}", summary(times));
                if follower_dns.is_some() {
                    println!("propagation_follower {}", summary(follower));
                }
                let _ = std::io::stdout().flush();
            }
        }
    }
    shutdown.cancel();
    drop(publishers);
    Ok(())
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One look at `registry` through a storm: whether every cluster of
/// `shape` is listed live with every endpoint (every answer complete and
/// live), and whether every one's Snapshot has been accepted (listed
/// live, connected, and heard from since `started_unix_ms`: a hub takes
/// no message of a new stream as a sign of life before its Snapshot).
/// `None` when the registry cannot be asked.
async fn storm_poll(shape: &Shape, registry: &str, started_unix_ms: u64) -> Option<(bool, bool)> {
    let mut client = publishers::insecure().connect(registry).await.ok()?;
    let list = client
        .list_clusters(wire::ListClustersRequest {})
        .await
        .ok()?
        .into_inner()
        .clusters;
    let all = list.len() == shape.clusters;
    let live = |c: &wire::ClusterInfo| c.state == wire::ClusterState::Live as i32;
    let endpoints: u64 = list.iter().map(|c| c.endpoints).sum();
    let expected = shape.total_endpoints() as u64;
    let complete = all && endpoints == expected && list.iter().all(live);
    let heard = |c: &wire::ClusterInfo| {
        live(c) && c.connected && c.last_heartbeat_unix_ms >= started_unix_ms
    };
    Some((complete, all && list.iter().all(heard)))
}

/// Waits until `registry` has accepted every publisher's Snapshot and
/// lists every answer complete and live ([`storm_poll`]); returns, from
/// `started`, when every Snapshot was first seen accepted and since when
/// every answer has been seen complete and live (0 when it was so at the
/// look `before` the storm and at every look since; a look that finds it
/// incomplete starts the wait again). Each look is a ListClusters call,
/// answered late when the hub is busy: both times are upper bounds.
async fn wait_storm(
    shape: &Shape,
    registry: &str,
    started: Instant,
    started_unix_ms: u64,
    before: Option<(bool, bool)>,
) -> (Duration, Duration) {
    let mut complete = before
        .is_some_and(|(complete, _)| complete)
        .then_some(Duration::ZERO);
    let mut accepted = None;
    loop {
        if let Some((whole, heard)) = storm_poll(shape, registry, started_unix_ms).await {
            let seen = started.elapsed();
            complete = if whole { complete.or(Some(seen)) } else { None };
            if heard {
                accepted.get_or_insert(seen);
            }
            if let (Some(a), Some(c)) = (accepted, complete) {
                return (a, c);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `registry` lists every cluster of `shape`, live, with
/// every endpoint.
async fn wait_complete(shape: &Shape, registry: &str) {
    let auth = publishers::insecure();
    let expected = shape.total_endpoints() as u64;
    loop {
        if let Ok(mut client) = auth.connect(registry).await
            && let Ok(list) = client.list_clusters(wire::ListClustersRequest {}).await
        {
            let list = list.into_inner().clusters;
            let endpoints: u64 = list.iter().map(|c| c.endpoints).sum();
            let live = list
                .iter()
                .all(|c| c.state == wire::ClusterState::Live as i32);
            if list.len() == shape.clusters && endpoints == expected && live {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The DNS servers a change is timed against: the registry's, and a
/// follower's if there is one.
struct Targets {
    dns: std::net::SocketAddr,
    follower: Option<std::net::SocketAddr>,
}

/// `n` changes, one at a time: a random cluster's export of a random
/// service of its has endpoint 0's readiness flipped; each is timed from
/// handing it to the publisher to the first DNS answer for that cluster's
/// part of the service (`cluster-<c>.svc-<s>.ns-<m>.global`) that shows it;
/// then, from the same start, until the follower's answer shows it too.
async fn churn_run(
    shape: &Shape,
    publishers: &mut Publishers,
    n: usize,
    targets: Targets,
    version: &mut usize,
) -> Result<(Vec<Duration>, Vec<Duration>), String> {
    use hickory_proto::rr::Name;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let mut rng = fastrand::Rng::with_seed(9);
    let mut times = Vec::with_capacity(n);
    let mut follower_times = Vec::new();
    let mut buf = vec![0u8; 65_535];
    for _ in 0..n {
        let s = rng.usize(0..shape.services);
        let exporters: Vec<usize> = shape.exporters(s).collect();
        let i = rng.usize(0..exporters.len());
        let c = exporters[i];
        *version += 1;
        let want = publishers.stage(c, shape.export(s, i, *version));
        let name = Name::from_ascii(format!("cluster-{c}.{}.", shape.name(s)))
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        publishers.send(c);
        let mut ask = Asker {
            socket: &socket,
            rng: &mut rng,
            buf: &mut buf,
        };
        times.push(ask.until(targets.dns, &name, &want, started).await?);
        if let Some(follower) = targets.follower {
            follower_times.push(ask.until(follower, &name, &want, started).await?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((times, follower_times))
}

/// Asks DNS servers for a name until they answer an expected address set.
struct Asker<'a> {
    socket: &'a tokio::net::UdpSocket,
    rng: &'a mut fastrand::Rng,
    buf: &'a mut [u8],
}

impl Asker<'_> {
    /// Asks `dns` for `name` until its A records are `want`; the time
    /// from `started`, or an error after 10 s.
    async fn until(
        &mut self,
        dns: std::net::SocketAddr,
        name: &hickory_proto::rr::Name,
        want: &std::collections::BTreeSet<std::net::IpAddr>,
        started: Instant,
    ) -> Result<Duration, String> {
        use hickory_proto::op::{Message, MessageType, OpCode, Query};
        use hickory_proto::rr::{RData, RecordType};
        loop {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("{name}: the change never showed in DNS at {dns}"));
            }
            let mut m = Message::new(self.rng.u16(..), MessageType::Query, OpCode::Query);
            m.add_query(Query::query(name.clone(), RecordType::A));
            let bytes = m.to_vec().map_err(|e| e.to_string())?;
            self.socket
                .send_to(&bytes, dns)
                .await
                .map_err(|e| e.to_string())?;
            let Ok(Ok(len)) =
                tokio::time::timeout(Duration::from_millis(200), self.socket.recv(self.buf)).await
            else {
                continue;
            };
            let Ok(reply) = Message::from_vec(&self.buf[..len]) else {
                continue;
            };
            let got: std::collections::BTreeSet<std::net::IpAddr> = reply
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                    _ => None,
                })
                .collect();
            if &got == want {
                return Ok(started.elapsed());
            }
        }
    }
}

/// Times `GET /healthz` at `admin` every 10 ms until `done`, on a thread
/// of its own: the prober must not wait its turn behind a thousand
/// publishers in this process's runtime, or it would time itself.
fn probe_healthz(
    admin: std::net::SocketAddr,
    done: Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<Duration>> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut times = Vec::new();
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let started = Instant::now();
            let answered = (|| {
                let mut stream = std::net::TcpStream::connect(admin).ok()?;
                stream
                    .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .ok()?;
                let mut head = [0u8; 12];
                stream.read_exact(&mut head).ok()
            })();
            if answered.is_some() {
                times.push(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        times
    })
}
