//! Soak: sustained DNS load while a cluster flips between two complete
//! export states as fast as its syncer takes them. Every answer must be one
//! state or the other (never half of a snapshot), and the registry's
//! resident memory must stay flat: each flip also replaces a 2,000-endpoint
//! service, so a registry that kept what it replaced would grow by about
//! 110 KiB per update (measured with the reaper made to leak: +31 MiB over
//! 289 updates), where a sound one stays within a few MiB either way. Runs
//! 12 s in the normal suite;
//! `MESHDNS_SOAK_SECS=180` for a long run (figures in benches/README.md).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{Proc, ServeProc, eventually, rss_kib};

fn state(tag: u8) -> (String, Vec<String>) {
    let ips: Vec<String> = (1..=20).map(|i| format!("10.{tag}.0.{i}")).collect();
    let endpoints: Vec<String> = ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    let bulk: Vec<String> = (0..2000)
        .map(|i| format!("{{ip: 10.{tag}.{}.{}}}", 100 + i / 250, i % 250 + 1))
        .collect();
    let text = format!(
        "cluster: east-1\nservices:\n  - {{name: web, namespace: shop, ports: [{{port: 80}}], endpoints: [{}]}}\n  - {{name: bulk, namespace: shop, ports: [{{port: 80}}], endpoints: [{}]}}\n",
        endpoints.join(", "),
        bulk.join(", ")
    );
    (
        text,
        sorted(&ips.iter().map(String::as_str).collect::<Vec<_>>()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_load_with_continuous_updates() {
    let secs: u64 = std::env::var("MESHDNS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let server = ServeProc::start(&["--max-answers", "100"]).await;
    let dns: SocketAddr = server.dns;
    let dir = TempDir::new("soak");
    let (text_a, set_a) = state(1);
    let (text_b, set_b) = state(2);
    let file = dir.write("east.yaml", &text_a);
    let _syncer = Proc::file_syncer(&file, &server.grpc_url(), &["--file-poll-interval", "10ms"]);
    let want = set_a.clone();
    eventually(Duration::from_secs(15), "first state", || {
        let want = want.clone();
        async move {
            (addresses(&poll(dns, &Ask::new("web.shop.global", RecordType::A).tcp()).await?)
                == want)
                .then_some(())
        }
    })
    .await;
    // Flip the source between two complete states, continuously.
    let writer = {
        let dir_path = dir.path().to_owned();
        let (text_a, text_b) = (text_a.clone(), text_b.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let mut flips = 0u64;
            while started.elapsed() < Duration::from_secs(secs) {
                let text = if flips.is_multiple_of(2) {
                    &text_b
                } else {
                    &text_a
                };
                let tmp = dir_path.join(".east.tmp");
                std::fs::write(&tmp, text).unwrap();
                std::fs::rename(&tmp, dir_path.join("east.yaml")).unwrap();
                flips += 1;
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            flips
        })
    };
    // Memory is measured from a quarter into the run: by then the
    // allocator holds its working set, and what grows after is kept.
    let warmup = Duration::from_secs(secs)
        .mul_f64(0.25)
        .max(Duration::from_secs(1));
    tokio::time::sleep(warmup).await;
    let rss_start = rss_kib(server.proc.0.id());
    let updates_start = registry_updates(server.admin).await;
    let started = Instant::now();
    let (mut queries, mut seen_a, mut seen_b) = (0u64, 0u64, 0u64);
    while started.elapsed() < Duration::from_secs(secs.saturating_sub(1).max(1)) {
        let m = poll(dns, &Ask::new("web.shop.global", RecordType::A).tcp())
            .await
            .expect("answered");
        let got = addresses(&m);
        if got == set_a {
            seen_a += 1;
        } else if got == set_b {
            seen_b += 1;
        } else {
            panic!("an answer mixing two snapshots: {got:?}");
        }
        queries += 1;
    }
    let rss_end = rss_kib(server.proc.0.id());
    let updates = registry_updates(server.admin).await - updates_start;
    let flips = writer.await.unwrap();
    println!(
        "soak {secs}s: {queries} answers ({seen_a} state A, {seen_b} state B), {flips} source flips, {updates} registry updates after the warm-up, registry RSS {rss_start} KiB -> {rss_end} KiB"
    );
    assert!(seen_a > 0 && seen_b > 0, "both states were served");
    assert!(flips > 50, "the source flipped {flips} times");
    assert!(updates >= 40, "only {updates} registry updates");
    // Flat: at most 4 MiB plus 24 KiB per update more than after the
    // warm-up (keeping each replaced state would be ~110 KiB per update).
    let allowed = 4 * 1024 + 24 * updates;
    assert!(
        rss_end < rss_start + allowed,
        "RSS grew from {rss_start} KiB to {rss_end} KiB over {updates} registry updates (allowed +{allowed} KiB)"
    );
}

/// Snapshots the registry has built (one per applied update).
async fn registry_updates(admin: SocketAddr) -> u64 {
    meshdns_tests::http_get(admin, "/metrics")
        .await
        .unwrap()
        .1
        .lines()
        .find(|l| l.starts_with("meshdns_snapshot_build_duration_seconds_count"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .expect("the registry's update count") as u64
}
