//! The hub's trust boundary, tried as an attacker holding one member
//! cluster's credential would: hand-built gRPC messages against `meshdns
//! serve` run as a process. Each attack is refused with a clear reason,
//! every other cluster's answers stay as they were, and the hub stays
//! live within a memory bound (printed).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use meshdns_proto::fixtures;
use meshdns_proto::wire::{self, export_request::Message as Req, registry_client::RegistryClient};
use meshdns_tests::dns::{Ask, addresses, poll};
use meshdns_tests::export_stream::ExportStream;
use meshdns_tests::fleet::TempDir;
use meshdns_tests::logs::listening_in_file;
use meshdns_tests::{LOOPBACK_PORT_0, bin, eventually, http_get, list_clusters, rss_kib};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// `meshdns serve` as a process on loopback, its log in a file.
struct Hub {
    child: Child,
    grpc: String,
    dns: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    log: std::path::PathBuf,
    _dir: TempDir,
}

impl Hub {
    async fn start(extra: &[&str]) -> Hub {
        let dir = TempDir::new("hub");
        let log = dir.path().join("hub.log");
        let child = Command::new(bin("meshdns"))
            .args(["serve", "--insecure", "--workers", "1"])
            .args(LOOPBACK_PORT_0)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // Port 0 everywhere: the hub logs the ports it got.
        let dns = listening_in_file(&log, "dns udp listening").await;
        let grpc = listening_in_file(&log, "grpc registry listening").await;
        let admin = listening_in_file(&log, "admin listening").await;
        let hub = Hub {
            child,
            grpc: format!("http://{grpc}"),
            dns,
            admin,
            log,
            _dir: dir,
        };
        let admin = hub.admin;
        eventually(Duration::from_secs(15), "hub ready", || async move {
            matches!(http_get(admin, "/readyz").await, Ok((200, _))).then_some(())
        })
        .await;
        hub
    }

    fn rss_mib(&self) -> f64 {
        rss_kib(self.child.id()) as f64 / 1024.0
    }

    fn log_bytes(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    async fn a(&self, name: &str, from: &str) -> Vec<String> {
        let dns = self.dns;
        let ask = Ask::new(name, RecordType::A).from(from);
        match poll(dns, &ask).await {
            Some(m) => {
                let mut found = addresses(&m);
                found.sort();
                found
            }
            None => panic!("no answer for {name}"),
        }
    }

    async fn cluster(&self, name: &str) -> Option<wire::ClusterInfo> {
        list_clusters(self.grpc.clone())
            .await?
            .into_iter()
            .find(|c| c.name == name)
    }

    fn alive(&mut self) {
        assert!(
            self.child.try_wait().unwrap().is_none(),
            "the hub exited; log: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn endpoint(address: &str) -> wire::Endpoint {
    fixtures::wire_endpoint(address)
}

fn service(ns: &str, name: &str, endpoints: Vec<wire::Endpoint>) -> wire::ServiceExport {
    fixtures::wire_service(ns, name, endpoints)
}

fn snapshot(services: Vec<wire::ServiceExport>, more: bool) -> Req {
    Req::Snapshot(wire::Snapshot { services, more })
}

/// Export streams to the hub (`ExportStream`), opened as a member would.
struct Stream;

impl Stream {
    async fn open(hub: &Hub, hello: wire::Hello) -> Result<ExportStream, tonic::Status> {
        ExportStream::open(hub.grpc.clone(), Req::Hello(hello)).await
    }

    async fn cluster(hub: &Hub, name: &str, cidr: &str) -> ExportStream {
        let hello = wire::Hello {
            cluster: name.into(),
            region: "r".into(),
            zone: "z".into(),
            client_cidrs: vec![cidr.into()],
            version: "test".into(),
            ..Default::default()
        };
        Stream::open(hub, hello).await.unwrap()
    }
}

/// A well-behaved cluster `good` (client CIDR 127.0.0.2/32) exporting
/// web.shop with two endpoints; returns its stream (kept open).
async fn good_cluster(hub: &Hub) -> ExportStream {
    let mut good = Stream::cluster(hub, "good", "127.0.0.2/32").await;
    let web = service(
        "shop",
        "web",
        vec![endpoint("10.1.0.1"), endpoint("10.1.0.2")],
    );
    let r = good.send(snapshot(vec![web], false)).await.unwrap();
    assert!(r.refusals.is_empty(), "{:?}", r.refusals);
    good
}

const GOOD: [&str; 2] = ["10.1.0.1", "10.1.0.2"];

async fn good_answers_unchanged(hub: &Hub) {
    assert_eq!(hub.a("web.shop.global", "127.0.0.2").await, GOOD);
}

#[tokio::test]
async fn a_message_of_empty_entries_is_refused_before_it_is_decoded() {
    let mut hub = Hub::start(&[]).await;
    let _good = good_cluster(&hub).await;
    let before = hub.rss_mib();
    let mut attacker = Stream::cluster(&hub, "attacker", "127.0.0.9/32").await;
    // Just under the 4 MiB default: two-byte empty entries, each a
    // ~150-byte struct once decoded (about 300 MiB).
    let entries = (4 * 1024 * 1024 - 1024) / 2;
    let err = attacker
        .send(snapshot(
            vec![wire::ServiceExport::default(); entries],
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("empty entries"), "{err:?}");
    // A message over the default limit is refused at its length.
    let mut attacker = Stream::cluster(&hub, "attacker", "127.0.0.9/32").await;
    let big = service(
        "shop",
        "big",
        (0..300_000)
            .map(|i| endpoint(&format!("10.9.{}.{}", i / 250 % 250, i % 250 + 1)))
            .collect(),
    );
    let err = attacker.send(snapshot(vec![big], false)).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    let after = hub.rss_mib();
    println!("hub RSS before {before:.1} MiB, after the attacks {after:.1} MiB");
    assert!(
        after - before < 64.0,
        "grew from {before:.1} to {after:.1} MiB"
    );
    hub.alive();
    good_answers_unchanged(&hub).await;
}

#[tokio::test]
async fn a_big_first_message_is_refused_before_hello() {
    let mut hub = Hub::start(&[]).await;
    let _good = good_cluster(&hub).await;
    let hello = wire::Hello {
        cluster: "attacker".into(),
        client_cidrs: vec!["10.0.0.0/8".into(); 40_000],
        ..Default::default()
    };
    let err = Stream::open(&hub, hello).await.err().expect("refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("first message"), "{err:?}");
    // A Snapshot before any Hello is refused the same way, small or not.
    let mut client = RegistryClient::connect(hub.grpc.clone()).await.unwrap();
    let (tx, rx) = mpsc::channel(1);
    tx.send(wire::ExportRequest {
        generation: 1,
        message: Some(snapshot(vec![], false)),
    })
    .await
    .unwrap();
    let mut rx = client
        .export(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let err = rx.message().await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(hub.cluster("attacker").await.is_none());
    hub.alive();
    good_answers_unchanged(&hub).await;
}

#[tokio::test]
async fn repeated_removals_do_not_lift_the_services_limit() {
    let hub = Hub::start(&["--max-services-per-cluster", "5"]).await;
    let _good = good_cluster(&hub).await;
    let mut attacker = Stream::cluster(&hub, "attacker", "127.0.0.9/32").await;
    let services = |names: std::ops::Range<usize>| -> Vec<wire::ServiceExport> {
        names
            .map(|i| {
                service(
                    "a",
                    &format!("s{i}"),
                    vec![endpoint(&format!("10.9.0.{}", i + 1))],
                )
            })
            .collect()
    };
    let r = attacker
        .send(snapshot(services(0..5), false))
        .await
        .unwrap();
    assert!(r.refusals.is_empty());
    // One existing removal named five times, and five new services.
    let key = wire::ServiceKey {
        namespace: "a".into(),
        name: "s0".into(),
    };
    let r = attacker
        .send(Req::Delta(wire::Delta {
            upserts: services(5..10),
            removals: vec![key; 5],
            observed_unix_ms: 0,
        }))
        .await
        .unwrap();
    let held = hub.cluster("attacker").await.unwrap().services;
    assert_eq!(
        held, 5,
        "the cluster holds {held} services under a limit of 5"
    );
    assert_eq!(r.refusals.len(), 4, "{:?}", r.refusals);
    assert!(
        r.refusals[0].reason.contains("--max-services-per-cluster"),
        "{:?}",
        r.refusals[0]
    );
    good_answers_unchanged(&hub).await;
}

#[tokio::test]
async fn addresses_no_pod_can_have_are_refused() {
    let hub = Hub::start(&[]).await;
    let _good = good_cluster(&hub).await;
    let mut attacker = Stream::cluster(&hub, "attacker", "127.0.0.9/32").await;
    let bad = [
        ("169.254.169.254", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "link-local"),
    ];
    let services = bad
        .iter()
        .enumerate()
        .map(|(i, (a, _))| service("shop", &format!("bad{i}"), vec![endpoint(a)]))
        .collect();
    let r = attacker.send(snapshot(services, false)).await.unwrap();
    assert_eq!(r.refusals.len(), bad.len(), "{:?}", r.refusals);
    for (refusal, (address, class)) in r.refusals.iter().zip(bad) {
        assert!(
            refusal.reason.contains(&format!("is a {class} address"))
                && refusal.reason.contains("no pod or VM"),
            "{address}: {}",
            refusal.reason
        );
    }
    // Also as cluster IPs, and nothing of it is answered.
    let mut clusterip = service("shop", "meta", vec![endpoint("10.9.0.1")]);
    clusterip.mode = wire::Mode::ClusterIp.into();
    clusterip.cluster_ips = vec!["169.254.169.254".into()];
    let r = attacker
        .send(snapshot(vec![clusterip], false))
        .await
        .unwrap();
    assert_eq!(r.refusals.len(), 1);
    assert!(
        r.refusals[0].reason.contains("cluster_ips[0]"),
        "{:?}",
        r.refusals
    );
    for i in 0..bad.len() {
        assert!(
            hub.a(&format!("bad{i}.shop.global"), "127.0.0.1")
                .await
                .is_empty()
        );
    }
    good_answers_unchanged(&hub).await;
}

#[tokio::test]
async fn a_cluster_cannot_take_over_another_clusters_askers() {
    let hub = Hub::start(&[]).await;
    let _good = good_cluster(&hub).await;
    // Named to sort first, announcing good's CIDR and a covering one.
    let mut attacker = Stream::open(
        &hub,
        wire::Hello {
            cluster: "a-attacker".into(),
            client_cidrs: vec![
                "127.0.0.2/32".into(),
                "127.0.0.0/8".into(),
                "10.200.0.0/16".into(),
            ],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let reasons: Vec<&str> = attacker
        .ack
        .refusals
        .iter()
        .map(|r| r.reason.as_str())
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("which cluster good holds")),
        "{reasons:?}"
    );
    let web = service("shop", "web", vec![endpoint("10.66.0.1")]);
    attacker.send(snapshot(vec![web], false)).await.unwrap();
    // good's askers still get good's endpoints (their own cluster's).
    good_answers_unchanged(&hub).await;
    let info = hub.cluster("a-attacker").await.unwrap();
    assert_eq!(info.client_cidrs, ["10.200.0.0/16"]);
    assert_eq!(info.refused_client_cidrs.len(), 2);
    let metrics = http_get(hub.admin, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("meshdns_export_refused_items_total{reason=\"client_cidr\"} 2"),
        "{metrics}"
    );
    let out = Command::new(bin("meshdns"))
        .args(["status", "--registry", &hub.grpc, "--insecure"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refused from a-attacker: client CIDR 127.0.0.2/32 overlaps"),
        "{text}"
    );
}

#[tokio::test]
async fn hello_less_streams_hold_no_slot_and_time_out() {
    let hub = Hub::start(&["--max-export-streams", "2", "--hello-timeout", "1s"]).await;
    // Three streams that never say Hello.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut client = RegistryClient::connect(hub.grpc.clone()).await.unwrap();
        let (tx, rx) = mpsc::channel::<wire::ExportRequest>(1);
        let response = client.export(ReceiverStream::new(rx)).await;
        idle.push((tx, response));
    }
    // Real clusters still get their slots.
    let _good = good_cluster(&hub).await;
    let _other = Stream::cluster(&hub, "other", "127.0.0.3/32").await;
    let third = Stream::cluster_result(&hub, "third").await;
    assert_eq!(
        third.err().map(|e| e.code()),
        Some(tonic::Code::ResourceExhausted)
    );
    // The idle ones are closed at the Hello timeout, naming it.
    let started = Instant::now();
    for (_tx, response) in idle {
        let mut rx = response.unwrap().into_inner();
        let err = tokio::time::timeout(Duration::from_secs(10), rx.message())
            .await
            .expect("closed within 10s")
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
        assert!(err.message().contains("--hello-timeout"), "{err:?}");
    }
    println!("idle streams closed after {:?}", started.elapsed());
    good_answers_unchanged(&hub).await;
}

impl Stream {
    async fn cluster_result(hub: &Hub, name: &str) -> Result<ExportStream, tonic::Status> {
        let hello = wire::Hello {
            cluster: name.into(),
            ..Default::default()
        };
        Stream::open(hub, hello).await
    }
}

#[tokio::test]
async fn a_cluster_is_live_from_its_first_snapshot_not_its_hello() {
    let hub = Hub::start(&[]).await;
    let mut s = Stream::cluster(&hub, "late", "127.0.0.5/32").await;
    // Heartbeats before any Snapshot do not make it live, nor does a
    // Delta before the Snapshot apply.
    s.send(Req::Heartbeat(wire::Heartbeat {})).await.unwrap();
    let info = hub.cluster("late").await.unwrap();
    assert_eq!(info.state, wire::ClusterState::Stale as i32, "{info:?}");
    s.send(snapshot(
        vec![service("shop", "late", vec![endpoint("10.5.0.1")])],
        false,
    ))
    .await
    .unwrap();
    let info = hub.cluster("late").await.unwrap();
    assert_eq!(info.state, wire::ClusterState::Live as i32, "{info:?}");
    let mut early = Stream::cluster(&hub, "early", "127.0.0.6/32").await;
    let err = early
        .send(Req::Delta(wire::Delta {
            upserts: vec![service("shop", "early", vec![endpoint("10.6.0.1")])],
            removals: vec![],
            observed_unix_ms: 0,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("before the stream's first Snapshot"),
        "{err:?}"
    );
    assert!(hub.a("early.shop.global", "127.0.0.1").await.is_empty());
}

#[tokio::test]
async fn a_snapshot_in_parts_applies_whole_or_not_at_all() {
    let hub = Hub::start(&[]).await;
    let mut good = good_cluster(&hub).await;
    let part = |i: usize| {
        service(
            "shop",
            &format!("p{i}"),
            vec![endpoint(&format!("10.1.1.{}", i + 1))],
        )
    };
    // Parts 1 and 2 of 3: acknowledged, not visible; web stays.
    for i in 0..2 {
        let r = good.send(snapshot(vec![part(i)], true)).await.unwrap();
        assert!(r.refusals.is_empty());
    }
    assert!(hub.a("p0.shop.global", "127.0.0.1").await.is_empty());
    good_answers_unchanged(&hub).await;
    // The stream is cut: nothing of the parts is applied.
    drop(good);
    let mut good = Stream::cluster(&hub, "good", "127.0.0.2/32").await;
    assert!(hub.a("p0.shop.global", "127.0.0.1").await.is_empty());
    good_answers_unchanged(&hub).await;
    // Sent whole, in three parts: the last replaces the set in one step.
    for i in 0..2 {
        good.send(snapshot(vec![part(i)], true)).await.unwrap();
    }
    assert!(hub.a("p1.shop.global", "127.0.0.1").await.is_empty());
    good_answers_unchanged(&hub).await;
    // A duplicate across parts is refused like one within a message.
    let r = good
        .send(snapshot(vec![part(2), part(0)], false))
        .await
        .unwrap();
    assert_eq!(r.refusals.len(), 1, "{:?}", r.refusals);
    assert!(
        r.refusals[0].reason.contains("duplicate service"),
        "{:?}",
        r.refusals
    );
    for i in 0..3 {
        let want = vec![format!("10.1.1.{}", i + 1)];
        assert_eq!(hub.a(&format!("p{i}.shop.global"), "127.0.0.1").await, want);
    }
    // web was not in the new set: gone.
    assert!(hub.a("web.shop.global", "127.0.0.2").await.is_empty());
    // A Delta between parts is a protocol error.
    good.send(snapshot(vec![part(0)], true)).await.unwrap();
    let err = good
        .send(Req::Delta(wire::Delta::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
}

#[tokio::test]
async fn refusals_and_logs_stay_small_whatever_is_sent() {
    let hub = Hub::start(&[]).await;
    let _good = good_cluster(&hub).await;
    let mut attacker = Stream::cluster(&hub, "attacker", "127.0.0.9/32").await;
    let log_before = hub.log_bytes();
    // 3 MiB of invalid names, and 2,000 services refused in one message.
    let huge = "X".repeat(1 << 20);
    let mut services = vec![service(&huge, &huge, vec![endpoint("10.9.0.1")])];
    services.extend(
        (0..2000).map(|i| service("shop", &format!("bad{i}"), vec![endpoint("127.0.0.1")])),
    );
    for _ in 0..5 {
        let r = attacker
            .send(snapshot(services.clone(), false))
            .await
            .unwrap();
        let size: usize = r
            .refusals
            .iter()
            .map(|x| {
                x.reason.len()
                    + x.key
                        .as_ref()
                        .map_or(0, |k| k.namespace.len() + k.name.len())
            })
            .sum();
        assert!(size < 16 * 1024, "a response of {size} bytes");
        assert_eq!(r.refusals.len(), 21);
        assert!(
            r.refusals[20].reason.contains("1981 more"),
            "{:?}",
            r.refusals[20]
        );
    }
    let grew = hub.log_bytes() - log_before;
    println!("log grew by {grew} bytes for 10,005 refusals");
    assert!(grew < 8 * 1024, "the log grew by {grew} bytes");
    good_answers_unchanged(&hub).await;
}

#[tokio::test]
async fn the_fleet_file_binds_what_each_cluster_may_claim() {
    let dir = TempDir::new("fleet-file");
    let file = dir.write(
        "clusters.yaml",
        "clusters:\n  good:\n    clientCIDRs: [127.0.0.2/32]\n    endpointCIDRs: [10.1.0.0/16]\n    namespaces: [shop]\n    maxServices: 2\n",
    );
    let hub = Hub::start(&["--clusters", file.to_str().unwrap()]).await;
    let mut good = Stream::open(
        &hub,
        wire::Hello {
            cluster: "good".into(),
            client_cidrs: vec!["127.0.0.2/32".into(), "127.0.0.3/32".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(good.ack.refusals.len(), 1, "{:?}", good.ack.refusals);
    assert!(
        good.ack.refusals[0]
            .reason
            .contains("127.0.0.3/32 is outside")
    );
    let r = good
        .send(snapshot(
            vec![
                service(
                    "shop",
                    "web",
                    vec![endpoint("10.1.0.1"), endpoint("10.1.0.2")],
                ),
                service("shop", "stray", vec![endpoint("10.2.0.1")]),
                service("kube-system", "dns", vec![endpoint("10.1.0.9")]),
                service("shop", "one", vec![endpoint("10.1.0.3")]),
                service("shop", "two", vec![endpoint("10.1.0.4")]),
            ],
            false,
        ))
        .await
        .unwrap();
    let reasons: Vec<&str> = r.refusals.iter().map(|x| x.reason.as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons[0].contains("10.2.0.1 is outside the endpoint CIDRs"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("namespace kube-system"), "{reasons:?}");
    assert!(
        reasons[2].contains("--max-services-per-cluster"),
        "{reasons:?}"
    );
    good_answers_unchanged(&hub).await;
    // A cluster the file does not name may not export.
    let err = Stream::cluster_result(&hub, "stranger")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("not in the fleet file"), "{err:?}");
    // A broken file keeps the old rules; a good one takes over.
    std::fs::write(&file, "clusters: [not, a, map\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(Stream::cluster_result(&hub, "stranger").await.is_err());
    assert!(Stream::cluster_result(&hub, "good").await.is_ok());
    std::fs::write(&file, "clusters:\n  good:\n  stranger:\n").unwrap();
    eventually(Duration::from_secs(10), "stranger allowed", || async {
        Stream::cluster_result(&hub, "stranger")
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}
