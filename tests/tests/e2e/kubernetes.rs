//! The Kubernetes source end to end: the fake API server (real list/watch
//! HTTP), the real `meshdns-syncer` binary pointed at it by a kubeconfig,
//! a registry, and a DNS client.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll, sorted};
use meshdns_tests::fake_kube::{FakeKube, Res, namespace, node, service, service_export, slice};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{TestServer, bin, eventually, free_port, http_get, list_clusters};

const EXPORT: (&str, &str) = ("meshdns.io/export", "true");

struct Syncer {
    child: Child,
    admin: std::net::SocketAddr,
}

impl Drop for Syncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_syncer(fake: &FakeKube, server: &TestServer, dir: &TempDir, extra: &[&str]) -> Syncer {
    let kubeconfig = fake.kubeconfig(dir.path());
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = Command::new(bin("meshdns-syncer"))
        .args([
            "--insecure",
            "--cluster",
            "east-1",
            "--registry",
            &server.grpc_url(),
            "--heartbeat",
            "200ms",
        ])
        .args([
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "--admin-listen",
            &admin.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("MESHDNS_TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    Syncer { child, admin }
}

async fn answers(server: &TestServer, name: &str) -> Option<(ResponseCode, Vec<String>)> {
    let m = poll(server.dns, &Ask::new(name, RecordType::A)).await?;
    Some((m.metadata.response_code, addresses(&m)))
}

async fn wait_answers(server: &TestServer, name: &str, expected: &[&str]) {
    let want = (ResponseCode::NoError, sorted(expected));
    eventually(
        Duration::from_secs(10),
        &format!("{name} -> {expected:?}"),
        || {
            let want = want.clone();
            async move { (answers(server, name).await? == want).then_some(()) }
        },
    )
    .await;
}

async fn wait_nxdomain(server: &TestServer, name: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("{name} -> NXDOMAIN"),
        || async move { (answers(server, name).await?.0 == ResponseCode::NXDomain).then_some(()) },
    )
    .await;
}

/// [`base`] plus the exported Service `web.shop`.
fn base_with_web(fake: &FakeKube) {
    base(fake);
    fake.apply(
        Res::Services,
        service("shop", "web", &[EXPORT], &[], Some("10.96.0.10")),
    );
}

/// The fleet every test starts from: its two Nodes.
fn base(fake: &FakeKube) {
    fake.apply(
        Res::Nodes,
        node(
            "node-1",
            "10.1.0.0/24",
            "192.168.10.1",
            "us-east",
            "us-east-1a",
        ),
    );
    fake.apply(
        Res::Nodes,
        node(
            "node-2",
            "10.1.1.0/24",
            "192.168.10.2",
            "us-east",
            "us-east-1a",
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_labelled_service_follows_its_slices() {
    let fake = FakeKube::start().await;
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("kube");
    base_with_web(&fake);
    fake.apply(
        Res::Services,
        service("shop", "private", &[], &[], Some("10.96.0.11")),
    );
    fake.apply(
        Res::EndpointSlices,
        slice(
            "shop",
            "web-a",
            "web",
            &[
                ("10.1.0.11", true, None, None),
                ("10.1.0.12", true, None, None),
            ],
        ),
    );
    fake.apply(
        Res::EndpointSlices,
        slice(
            "shop",
            "private-a",
            "private",
            &[("10.1.0.99", true, None, None)],
        ),
    );
    let syncer = start_syncer(&fake, &server, &dir, &[]);
    wait_answers(&server, "web.shop.global", &["10.1.0.11", "10.1.0.12"]).await;
    // Unlabelled Services stay private.
    assert_eq!(
        answers(&server, "private.shop.global").await.unwrap().0,
        ResponseCode::NXDomain
    );
    // The Hello announced the nodes' pod CIDRs and addresses, and their topology.
    let clusters = server.clusters().await;
    assert_eq!(clusters.len(), 1);
    assert_eq!(
        (clusters[0].region.as_str(), clusters[0].zone.as_str()),
        ("us-east", "us-east-1a")
    );
    assert_eq!(
        clusters[0].client_cidrs,
        vec![
            "10.1.0.0/24",
            "10.1.1.0/24",
            "192.168.10.1/32",
            "192.168.10.2/32"
        ]
    );
    // The SRV port is the slice's target port.
    let m = poll(
        server.dns,
        &Ask::new("_http._tcp.web.shop.global", RecordType::SRV),
    )
    .await
    .unwrap();
    assert!(
        m.answers
            .iter()
            .all(|r| matches!(&r.data, hickory_proto::rr::RData::SRV(s) if s.port == 8080)),
        "{m:?}"
    );
    // A pod turns unready: it leaves the answers.
    fake.apply(
        Res::EndpointSlices,
        slice(
            "shop",
            "web-a",
            "web",
            &[
                ("10.1.0.11", true, None, None),
                ("10.1.0.12", false, None, None),
            ],
        ),
    );
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    // An endpoint moves to another slice (added there, then removed here):
    // it never leaves the answers meanwhile.
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-b", "web", &[("10.1.0.11", true, None, None)]),
    );
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-a", "web", &[("10.1.0.12", false, None, None)]),
    );
    for _ in 0..25 {
        let (_, got) = answers(&server, "web.shop.global").await.unwrap();
        assert_eq!(
            got,
            sorted(&["10.1.0.11"]),
            "no flap while the endpoint moves"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A new node re-announces the client CIDRs.
    fake.apply(
        Res::Nodes,
        node(
            "node-3",
            "10.1.2.0/24",
            "192.168.10.3",
            "us-east",
            "us-east-1b",
        ),
    );
    eventually(Duration::from_secs(10), "node-3's CIDR announced", || {
        let url = server.grpc_url();
        async move {
            let c = list_clusters(url).await?;
            c.first()?
                .client_cidrs
                .contains(&"10.1.2.0/24".to_owned())
                .then_some(())
        }
    })
    .await;
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    // Unlabelling withdraws it everywhere; labelling again and deleting too.
    fake.apply(
        Res::Services,
        service("shop", "web", &[], &[], Some("10.96.0.10")),
    );
    wait_nxdomain(&server, "web.shop.global").await;
    fake.apply(
        Res::Services,
        service("shop", "web", &[EXPORT], &[], Some("10.96.0.10")),
    );
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    fake.delete(Res::Services, "shop", "web");
    wait_nxdomain(&server, "web.shop.global").await;
    let (status, _) = http_get(syncer.admin, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    drop(syncer);
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcs_service_exports() {
    let fake = FakeKube::start().await;
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("kube-mcs");
    base(&fake);
    fake.apply(
        Res::Services,
        service("shop", "cart", &[], &[], Some("10.96.0.12")),
    );
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "cart-a", "cart", &[("10.1.0.21", true, None, None)]),
    );
    let _syncer = start_syncer(&fake, &server, &dir, &["--mcs"]);
    // Not labelled and not exported yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        answers(&server, "cart.shop.global").await.unwrap().0,
        ResponseCode::NXDomain
    );
    fake.apply(Res::ServiceExports, service_export("shop", "cart"));
    wait_answers(&server, "cart.shop.global", &["10.1.0.21"]).await;
    fake.delete(Res::ServiceExports, "shop", "cart");
    wait_nxdomain(&server, "cart.shop.global").await;
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_and_annotations() {
    let fake = FakeKube::start().await;
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("kube-ns");
    base(&fake);
    fake.apply(Res::Namespaces, namespace("shop", &[("team", "a")]));
    fake.apply(Res::Namespaces, namespace("other", &[("team", "b")]));
    let bad = [
        ("meshdns.io/affinity", "galaxy"),
        ("meshdns.io/ttl", "soon"),
    ];
    fake.apply(
        Res::Services,
        service("shop", "web", &[EXPORT], &bad, Some("10.96.0.10")),
    );
    fake.apply(
        Res::Services,
        service("other", "web", &[EXPORT], &[], Some("10.96.1.10")),
    );
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-a", "web", &[("10.1.0.11", true, None, None)]),
    );
    fake.apply(
        Res::EndpointSlices,
        slice("other", "web-a", "web", &[("10.1.5.11", true, None, None)]),
    );
    let syncer = start_syncer(&fake, &server, &dir, &["--namespace-selector", "team=a"]);
    // Invalid annotations: exported with defaults, and reported.
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    let (_, status) = http_get(syncer.admin, "/status").await.unwrap();
    assert!(
        status.contains("meshdns.io/affinity") && status.contains("galaxy"),
        "{status}"
    );
    assert!(status.contains("meshdns.io/ttl"), "{status}");
    // Outside the selected namespaces: not exported.
    assert_eq!(
        answers(&server, "web.other.global").await.unwrap().0,
        ResponseCode::NXDomain
    );
    // The namespace joins the selection.
    fake.apply(Res::Namespaces, namespace("other", &[("team", "a")]));
    wait_answers(&server, "web.other.global", &["10.1.5.11"]).await;
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_expiry_relists_in_one_step() {
    let fake = FakeKube::start().await;
    let server = TestServer::start(&["--max-answers", "100"]).await;
    let dir = TempDir::new("kube-410");
    base_with_web(&fake);
    let eps: Vec<String> = (1..=20).map(|i| format!("10.1.0.{i}")).collect();
    let list = |from: usize, to: usize| -> Vec<(&str, bool, Option<&str>, Option<&str>)> {
        eps[from..to]
            .iter()
            .map(|ip| (ip.as_str(), true, None, None))
            .collect()
    };
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-a", "web", &list(0, 20)),
    );
    let _syncer = start_syncer(&fake, &server, &dir, &[]);
    let all: Vec<&str> = eps.iter().map(String::as_str).collect();
    wait_answers(&server, "web.shop.global", &all).await;
    // Over TCP, the whole set.
    let tcp = |server: &TestServer| {
        let dns = server.dns;
        async move {
            addresses(
                &meshdns_tests::dns::query(dns, &Ask::new("web.shop.global", RecordType::A).tcp())
                    .await,
            )
        }
    };
    // Watches expire (410), and while the syncer relists, the data changes.
    fake.expire_watches();
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-a", "web", &list(5, 20)),
    );
    fake.apply(
        Res::Services,
        service("shop", "api", &[EXPORT], &[], Some("10.96.0.20")),
    );
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "api-a", "api", &[("10.1.9.1", true, None, None)]),
    );
    // The answers never go empty during the relist (no delete-all-then-add).
    for _ in 0..30 {
        let (rcode, got) = answers(&server, "web.shop.global").await.unwrap();
        assert_eq!(rcode, ResponseCode::NoError);
        assert!(!got.is_empty(), "web.shop never empty during a relist");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_answers(&server, "api.shop.global", &["10.1.9.1"]).await;
    // Converged on exactly the API server's state: no lost, no phantom endpoint.
    let expected = sorted(&all[5..20]);
    let dns_server = &server;
    eventually(Duration::from_secs(10), "web.shop converged", || {
        let expected = expected.clone();
        async move { (tcp(dns_server).await == expected).then_some(()) }
    })
    .await;
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_then_back() {
    let fake = FakeKube::start().await;
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("kube-down");
    base_with_web(&fake);
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-a", "web", &[("10.1.0.11", true, None, None)]),
    );
    let syncer = start_syncer(&fake, &server, &dir, &[]);
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    fake.set_down(true).await;
    // The syncer reports itself degraded...
    let admin = syncer.admin;
    eventually(Duration::from_secs(15), "readyz degraded", || async move {
        match http_get(admin, "/readyz").await {
            Ok((503, body)) if body.contains("degraded") => Some(()),
            _ => None,
        }
    })
    .await;
    // ...and keeps streaming its last state with heartbeats: still answered.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        answers(&server, "web.shop.global").await.unwrap().1,
        sorted(&["10.1.0.11"])
    );
    let clusters = server.clusters().await;
    assert!(clusters[0].connected);
    // Changes while it is down, then it comes back: state reconciles.
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-a", "web", &[("10.1.0.12", true, None, None)]),
    );
    fake.apply(
        Res::Services,
        service("shop", "cart", &[EXPORT], &[], Some("10.96.0.12")),
    );
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "cart-a", "cart", &[("10.1.0.21", true, None, None)]),
    );
    fake.set_down(false).await;
    wait_answers(&server, "web.shop.global", &["10.1.0.12"]).await;
    wait_answers(&server, "cart.shop.global", &["10.1.0.21"]).await;
    eventually(Duration::from_secs(15), "readyz back", || async move {
        matches!(http_get(admin, "/readyz").await, Ok((200, _))).then_some(())
    })
    .await;
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_is_coalesced() {
    let fake = FakeKube::start().await;
    let server = TestServer::start(&["--max-answers", "200"]).await;
    let dir = TempDir::new("kube-burst");
    base_with_web(&fake);
    let ips: Vec<String> = (1..=100)
        .map(|i| format!("10.1.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let eps = |ready: usize| -> Vec<(&str, bool, Option<&str>, Option<&str>)> {
        ips.iter()
            .enumerate()
            .map(|(i, ip)| (ip.as_str(), i < ready, None, None))
            .collect()
    };
    fake.apply(Res::EndpointSlices, slice("shop", "web-a", "web", &eps(0)));
    let _syncer = start_syncer(&fake, &server, &dir, &[]);
    let dns = server.dns;
    eventually(
        Duration::from_secs(10),
        "web.shop exported",
        || async move {
            (poll(dns, &Ask::new("web.shop.global", RecordType::A))
                .await?
                .metadata
                .response_code
                == ResponseCode::NoError)
                .then_some(())
        },
    )
    .await;
    let builds = |text: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with("meshdns_snapshot_build_duration_seconds_count"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let before = builds(&http_get(server.admin, "/metrics").await.unwrap().1);
    // 100 pods become ready one by one, as fast as the API server takes it.
    for ready in 1..=100 {
        fake.apply(
            Res::EndpointSlices,
            slice("shop", "web-a", "web", &eps(ready)),
        );
    }
    let full: Vec<&str> = ips.iter().map(String::as_str).collect();
    let full = sorted(&full);
    eventually(Duration::from_secs(10), "all 100 ready", || {
        let full = full.clone();
        async move {
            let m =
                meshdns_tests::dns::query(dns, &Ask::new("web.shop.global", RecordType::A).tcp())
                    .await;
            (addresses(&m) == full).then_some(())
        }
    })
    .await;
    let after = builds(&http_get(server.admin, "/metrics").await.unwrap().1);
    let deltas = after - before;
    assert!(
        (1.0..=20.0).contains(&deltas),
        "100 changes became {deltas} registry updates"
    );
    fake.stop();
    server.stop().await;
}
