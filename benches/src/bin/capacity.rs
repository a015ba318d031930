//! The capacity simulation: a registry filled in process, through its
//! writer thread as Export streams fill it, at whatever size is asked
//! (10,000 clusters and 10 million endpoints by hand; a smoke size in CI).
//! Measures what the capacity model in ARCHITECTURE.md is built from:
//!
//! - the load: every cluster's Snapshot sent at once (a reconnect storm),
//!   until every one is acknowledged (so published);
//! - resident memory, and bytes per endpoint;
//! - a full Snapshot from one cluster, applied and visible (acknowledged
//!   by the writer, which acknowledges after publishing): p50/p99;
//! - a one-endpoint Delta, the same way: p50/p99;
//! - Deltas per second the writer sustains with many clusters sending.
//!
//! ```sh
//! cargo run --release -p meshdns-benches --bin capacity -- --clusters 10000
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use meshdns::metrics::Metrics;
use meshdns::registry::{Registry, Session, Writer};
use meshdns_benches::percentiles::spread;
use meshdns_benches::{cluster_name, http_export, service_key};
use meshdns_proto::convert::Interner;
use meshdns_proto::model::{Cluster, ClusterName, Endpoint, LabelValue, ServiceExport};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "Registry capacity simulation: load, memory and publish latency")]
struct Cli {
    /// Clusters in the fleet.
    #[arg(long, default_value_t = 1_000)]
    clusters: usize,
    /// Services every cluster exports (at most 1,000).
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Endpoints per service per cluster (at most 100).
    #[arg(long, default_value_t = 10)]
    endpoints: usize,
    /// Timed full Snapshots and Deltas each.
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

/// Endpoint `e` of service `s` in cluster `c`, with a zone (one of its
/// cluster's three) and a node (one of 50 per cluster); addresses unique.
fn export(
    names: &mut Interner,
    c: usize,
    s: usize,
    services: usize,
    endpoints: usize,
    version: usize,
) -> ServiceExport {
    let endpoints_list = (0..endpoints)
        .map(|e| {
            // Dense: 10.0.0.0/8 holds the first 16M, fd00::/16 the rest.
            let n = ((c * services + s) * endpoints + e) as u64;
            let address = if n < 1 << 24 {
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from((0xfd00_u128 << 112) | u128::from(n)))
            };
            let mut ep = Endpoint::ready(address);
            ep.ready = !(e == 0 && version % 2 == 1);
            let zone = format!("region-{}-{}", c % 10, (s + e) % 3);
            // Shared as an Export stream's interner shares them.
            ep.zone = names.zone(&zone).expect("valid");
            let node = format!("cluster-{c}-node-{}", (s * endpoints + e) % 50);
            ep.node = names.node(&node).expect("valid");
            ep
        })
        .collect();
    http_export(service_key(s), endpoints_list)
}

fn cluster(c: usize) -> Cluster {
    let region = c % 10;
    Cluster {
        name: ClusterName::new(&cluster_name(c)).expect("valid"),
        region: Some(LabelValue::new(&format!("region-{region}")).expect("valid")),
        zone: Some(LabelValue::new(&format!("region-{region}-{}", c % 3)).expect("valid")),
        client_cidrs: vec![],
        version: "capacity".into(),
        provider: None,
        nodes: Vec::new(),
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let cli = Cli::parse();
    if cli.clusters == 0
        || !(1..=1_000).contains(&cli.services)
        || !(1..=100).contains(&cli.endpoints)
    {
        eprintln!(
            "capacity: --clusters must be at least 1, --services 1..=1000, --endpoints 1..=100"
        );
        std::process::exit(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(cli));
}

async fn run(cli: Cli) {
    let total = cli.clusters * cli.services * cli.endpoints;
    let registry = Arc::new(Registry::new(5, false, Arc::new(Metrics::new())));
    let writer = Writer::spawn(registry.clone()).expect("writer thread");
    let before = rss_kib();
    // The messages are made before the clock starts: the storm measures
    // the registry, not the generator. They move into the registry.
    let mut names = Interner::default();
    let sets: Vec<Vec<ServiceExport>> = (0..cli.clusters)
        .map(|c| {
            (0..cli.services)
                .map(|s| export(&mut names, c, s, cli.services, cli.endpoints, 0))
                .collect()
        })
        .collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, set) in sets.into_iter().enumerate() {
        let writer = writer.clone();
        tasks.spawn(async move {
            let (session, _) = writer.hello(cluster(c), usize::MAX).await.expect("hello");
            let session = Arc::new(session);
            writer
                .apply_snapshot(session.clone(), set, BTreeSet::new())
                .await
                .expect("snapshot");
            (c, session)
        });
    }
    let mut sessions: Vec<Option<Arc<Session>>> = vec![None; cli.clusters];
    while let Some(done) = tasks.join_next().await {
        let (c, session) = done.expect("task");
        sessions[c] = Some(session);
    }
    let load = started.elapsed();
    let sessions: Vec<Arc<Session>> = sessions
        .into_iter()
        .map(|s| s.expect("every cluster"))
        .collect();
    // Let the reaper drop what the storm replaced.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib();
    println!(
        "fleet: {} clusters x {} services x {} endpoints = {total} endpoints (zone and node on each)",
        cli.clusters, cli.services, cli.endpoints
    );
    println!(
        "storm: every Snapshot sent at once, all acknowledged (published) in {:.2} s",
        load.as_secs_f64()
    );
    println!(
        "memory: process {} MiB resident, {} MiB before the fleet: {} bytes per endpoint",
        after / 1024,
        before / 1024,
        after.saturating_sub(before) * 1024 / total.max(1) as u64
    );

    let mut versions = vec![0usize; cli.clusters * cli.services];
    let mut bump = |c: usize, s: usize| {
        versions[c * cli.services + s] += 1;
        versions[c * cli.services + s]
    };
    let mut times = Vec::with_capacity(cli.rounds);
    for round in 1..=cli.rounds {
        let c = (round * 37) % cli.clusters;
        let set = (0..cli.services)
            .map(|s| export(&mut names, c, s, cli.services, cli.endpoints, bump(c, s)))
            .collect();
        let t = Instant::now();
        writer
            .apply_snapshot(sessions[c].clone(), set, BTreeSet::new())
            .await
            .expect("snapshot");
        times.push(t.elapsed());
    }
    println!(
        "full Snapshot from one cluster ({} services, {} endpoints) applied and visible: {}",
        cli.services,
        cli.services * cli.endpoints,
        spread(&mut times)
    );
    let mut times = Vec::with_capacity(cli.rounds);
    for round in 1..=cli.rounds {
        let (c, s) = ((round * 53) % cli.clusters, (round * 7) % cli.services);
        let upsert = export(&mut names, c, s, cli.services, cli.endpoints, bump(c, s));
        let t = Instant::now();
        writer
            .apply_delta(sessions[c].clone(), vec![upsert], BTreeSet::new())
            .await
            .expect("delta");
        times.push(t.elapsed());
    }
    println!(
        "one-service Delta applied and visible: {}",
        spread(&mut times)
    );
    // Throughput: 64 clusters each sending Deltas back to back; the writer
    // coalesces them.
    let senders = cli.clusters.min(64);
    let per = cli.rounds.max(10);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..senders {
        let c = k * cli.clusters / senders;
        let (writer, session) = (writer.clone(), sessions[c].clone());
        let (services, endpoints) = (cli.services, cli.endpoints);
        tasks.spawn(async move {
            for i in 0..per {
                let mut names = Interner::default();
                let upsert = export(&mut names, c, i % services, services, endpoints, 1_000 + i);
                writer
                    .apply_delta(session.clone(), vec![upsert], BTreeSet::new())
                    .await
                    .expect("delta");
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "changes: {} Deltas from {senders} clusters at once, {:.0} per second applied and visible",
        senders * per,
        (senders * per) as f64 / elapsed
    );
}
