//! The Kubernetes syncer at scale: a fake API server holding 5,000
//! exported Services with 50,000 endpoints (10 per EndpointSlice), the real
//! `meshdns-syncer` binary, a registry and DNS in this process.
//!
//! Reports: time from syncer start to complete export at the registry, the
//! syncer's resident memory, and the latency from an EndpointSlice change
//! to the DNS answer changing (median, p99 over 200 changes).
//!
//! `cargo build --release --bins && cargo bench -p meshdns-benches --bench k8s_export`

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use meshdns_proto::wire::{self, registry_client::RegistryClient};
use meshdns_tests::dns::{Ask, addresses, poll};
use meshdns_tests::fake_kube::{FakeKube, Res, node, service, slice};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{TestServer, bin, rss_kib};

const SERVICES: usize = 5_000;
const PER_SERVICE: usize = 10;

fn ip(s: usize, e: usize) -> String {
    let n = s * PER_SERVICE + e;
    format!("10.{}.{}.{}", n / 65_536, (n / 256) % 256, n % 256)
}

fn slice_of(s: usize, unready: Option<usize>) -> serde_json::Value {
    let ips: Vec<String> = (0..PER_SERVICE).map(|e| ip(s, e)).collect();
    let eps: Vec<(&str, bool, Option<&str>, Option<&str>)> = ips
        .iter()
        .enumerate()
        .map(|(e, a)| (a.as_str(), Some(e) != unready, None, None))
        .collect();
    slice(
        &format!("ns-{}", s % 50),
        &format!("svc-{s}-abcde"),
        &format!("svc-{s}"),
        &eps,
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let fake = FakeKube::start().await;
    for n in 0..10 {
        fake.apply(
            Res::Nodes,
            node(
                &format!("node-{n}"),
                &format!("10.200.{n}.0/24"),
                &format!("192.168.0.{n}"),
                "r1",
                "z1",
            ),
        );
    }
    for s in 0..SERVICES {
        let ns = format!("ns-{}", s % 50);
        fake.apply(
            Res::Services,
            service(
                &ns,
                &format!("svc-{s}"),
                &[("meshdns.io/export", "true")],
                &[],
                Some("10.96.0.1"),
            ),
        );
        fake.apply(Res::EndpointSlices, slice_of(s, None));
    }
    let server = TestServer::start(&["--max-answers", "16"]).await;
    let dir = TempDir::new("k8s-bench");
    let kubeconfig = fake.kubeconfig(dir.path());
    let started = Instant::now();
    let mut child = Command::new(bin("meshdns-syncer"))
        .args([
            "--insecure",
            "--cluster",
            "bench",
            "--registry",
            &server.grpc_url(),
        ])
        .args(["--kubeconfig", &kubeconfig.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("meshdns-syncer (cargo build --release --bins)");
    let mut client = RegistryClient::connect(server.grpc_url())
        .await
        .expect("registry");
    let exported = loop {
        let clusters = client
            .list_clusters(wire::ListClustersRequest {})
            .await
            .expect("list")
            .into_inner()
            .clusters;
        if let Some(c) = clusters.first()
            && c.services as usize == SERVICES
            && c.endpoints as usize == SERVICES * PER_SERVICE
        {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "export did not complete"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_kib(child.id());
    // Change to answer: one endpoint of one service turns unready (then
    // ready again); time until DNS answers reflect it.
    let mut latencies = Vec::new();
    for i in 0..200 {
        let s = (i * 37) % SERVICES;
        let unready = (i % 2 == 0).then_some(0);
        let name = format!("svc-{s}.ns-{}.global", s % 50);
        let gone = ip(s, 0);
        let t = Instant::now();
        fake.apply(Res::EndpointSlices, slice_of(s, unready));
        loop {
            let m = poll(server.dns, &Ask::new(&name, RecordType::A))
                .await
                .expect("answer");
            if addresses(&m).contains(&gone) != unready.is_some() {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "change never reached DNS"
            );
            tokio::task::yield_now().await;
        }
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!(
        "services={SERVICES} endpoints={} (fake API server, syncer binary, registry and DNS on loopback)",
        SERVICES * PER_SERVICE
    );
    println!("full_export_ms={:.0}", exported.as_secs_f64() * 1e3);
    println!("syncer_rss_mib={:.1}", rss as f64 / 1024.0);
    println!(
        "change_to_answer_ms median={:.1} p99={:.1} max={:.1} (n={})",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().expect("samples").as_secs_f64() * 1e3,
        latencies.len()
    );
    let _ = child.kill();
    let _ = child.wait();
    fake.stop();
    server.stop().await;
}
