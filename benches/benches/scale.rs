//! The registry at a million endpoints, in process (no gRPC): how long a
//! full Snapshot from one cluster and a one-endpoint Delta take to be
//! applied and visible, and what the registry holds in memory.
//!
//! `cargo bench -p meshdns-benches --bench scale`
//!
//! The fleet is `Shape::MILLION`: 1,000 clusters each exporting the same
//! 100 services with 10 endpoints (every service has 10,000). "Applied and
//! visible": `apply_snapshot` / `apply_delta` store the next snapshot
//! before they return, so the clock stops when DNS would answer with it.

use std::time::Instant;

use meshdns_benches::Fleet;
use meshdns_benches::percentiles::{quantile_ms, spread};
use meshdns_benches::shape::Shape;
use meshdns_tests::rss_kib;

/// The allocator the `meshdns` binary uses.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // `cargo bench` passes --bench; nothing to filter.
    let shape = Shape::MILLION;
    let before = rss_kib(std::process::id());
    let started = Instant::now();
    let fleet = Fleet::new(shape.clusters, shape.services, shape.endpoints);
    let load = started.elapsed();
    let after = rss_kib(std::process::id());
    let endpoints = shape.total_endpoints();
    println!(
        "fleet: {} clusters x {} services x {} endpoints = {endpoints} endpoints, applied in {:.1} s",
        shape.clusters,
        shape.services,
        shape.endpoints,
        load.as_secs_f64()
    );
    println!(
        "registry memory: {} MiB resident for the registry ({} bytes per endpoint; process {} MiB)",
        (after - before) / 1024,
        (after - before) * 1024 / endpoints as u64,
        after / 1024
    );

    // Each export's version: every change below bumps it, so every round
    // really changes what it sends (the same version twice would be a
    // no-op apply, timed as if it were one).
    let mut versions = vec![0usize; shape.clusters * shape.services];
    let mut bump = |c: usize, s: usize| {
        versions[c * shape.services + s] += 1;
        versions[c * shape.services + s]
    };

    // A full Snapshot from one cluster: all 100 services, every one changed.
    let mut snapshot_times = Vec::new();
    // 200 rounds: with fewer, "p99" is only the maximum.
    for round in 1..=200 {
        let c = (round * 37) % shape.clusters;
        let set = (0..shape.services)
            .map(|s| meshdns_benches::export(c, s, shape.endpoints, bump(c, s)))
            .collect();
        let t = Instant::now();
        fleet
            .registry
            .apply_snapshot(&fleet.sessions[c], set, &Default::default())
            .expect("applied");
        snapshot_times.push(t.elapsed());
    }
    println!(
        "full Snapshot from one cluster ({} services, {} endpoints) applied and visible: {}",
        shape.services,
        shape.services * shape.endpoints,
        spread(&mut snapshot_times)
    );

    // One endpoint of one service in one cluster flips readiness.
    let mut delta_times = Vec::new();
    for round in 1..=400 {
        let c = (round * 53) % shape.clusters;
        let s = round % shape.services;
        let update = meshdns_benches::export(c, s, shape.endpoints, bump(c, s));
        let t = Instant::now();
        fleet
            .registry
            .apply_delta(&fleet.sessions[c], vec![update], Default::default())
            .expect("applied");
        delta_times.push(t.elapsed());
    }
    delta_times.sort();
    println!(
        "one-endpoint Delta applied and visible: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        quantile_ms(&delta_times, 0.5),
        quantile_ms(&delta_times, 0.99),
        quantile_ms(&delta_times, 1.0)
    );
}
