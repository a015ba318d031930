//! Soak: sustained DNS load while a cluster flips between two complete
//! export states as fast as its syncer takes them. Every answer must be one
//! state or the other (never half of a snapshot), and the registry's
//! resident memory must stay flat. Runs 8 s in the normal suite;
//! `MESHDNS_SOAK_SECS=180` for a long run (figures in benches/README.md).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{Proc, eventually, free_port, rss_kib};

fn state(tag: u8) -> (String, Vec<String>) {
    let ips: Vec<String> = (1..=20).map(|i| format!("10.{tag}.0.{i}")).collect();
    let endpoints: Vec<String> = ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    let text = format!(
        "cluster: east-1\nservices:\n  - {{name: web, namespace: shop, ports: [{{port: 80}}], endpoints: [{}]}}\n",
        endpoints.join(", ")
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
        .unwrap_or(8);
    let (dns_port, grpc, admin) = (free_port(), free_port(), free_port());
    let (d, g, a) = (
        format!("127.0.0.1:{dns_port}"),
        format!("127.0.0.1:{grpc}"),
        format!("127.0.0.1:{admin}"),
    );
    let server = Proc::start(
        "meshdns",
        &[
            "serve",
            "--insecure",
            "--dns-listen",
            &d,
            "--grpc-listen",
            &g,
            "--admin-listen",
            &a,
            "--max-answers",
            "100",
        ],
    );
    let dns: SocketAddr = d.parse().unwrap();
    let dir = TempDir::new("soak");
    let (text_a, set_a) = state(1);
    let (text_b, set_b) = state(2);
    let file = dir.write("east.yaml", &text_a);
    let source = format!("file:{}", file.display());
    let registry = format!("http://{g}");
    let _syncer = Proc::start(
        "meshdns-syncer",
        &[
            "--insecure",
            "--registry",
            &registry,
            "--source",
            &source,
            "--heartbeat",
            "200ms",
            "--file-poll-interval",
            "10ms",
        ],
    );
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
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = rss_kib(server.0.id());
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
    let rss_end = rss_kib(server.0.id());
    let flips = writer.await.unwrap();
    println!(
        "soak {secs}s: {queries} answers ({seen_a} state A, {seen_b} state B), {flips} source flips, registry RSS {rss_start} KiB -> {rss_end} KiB"
    );
    assert!(seen_a > 0 && seen_b > 0, "both states were served");
    assert!(
        rss_end < rss_start + rss_start / 2 + 16 * 1024,
        "RSS grew from {rss_start} KiB to {rss_end} KiB"
    );
}
