//! The Kubernetes source end to end: the fake API server (real list/watch
//! HTTP), the real `meshdns-syncer` binary pointed at it by a kubeconfig,
//! a registry, and a DNS client.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll, sorted};
use meshdns_tests::fake_kube::{
    FakeKube, Res, namespace, node, one_ready_slice, ready, service, service_export, slice,
};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::history::History;
use meshdns_tests::kube_syncer::KubeSyncer;
use meshdns_tests::{Proc, TestServer, eventually, http_get, list_clusters};

pub const EXPORT: (&str, &str) = ("meshdns.io/export", "true");

/// A `meshdns-syncer` process on the fake; its admin endpoint on port 0.
pub struct Syncer {
    /// Killed when the test drops it.
    _proc: Proc,
    pub admin: std::net::SocketAddr,
}

impl Syncer {
    /// `/readyz`: status and body.
    pub async fn readyz(&self) -> (u16, String) {
        http_get(self.admin, "/readyz").await.unwrap()
    }

    /// `/status` as JSON.
    pub async fn status(&self) -> serde_json::Value {
        serde_json::from_str(&http_get(self.admin, "/status").await.unwrap().1).unwrap()
    }

    /// A sample from `/metrics`, by its full name and labels.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = http_get(self.admin, "/metrics").await.unwrap().1;
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
    }
}

pub async fn start_syncer(
    fake: &FakeKube,
    server: &TestServer,
    dir: &TempDir,
    extra: &[&str],
) -> Syncer {
    let url = server.grpc_url();
    let mut args = vec!["--admin-listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let (proc, logs) = KubeSyncer {
        fake,
        dir: dir.path(),
        cluster: "east-1",
        registry: &url,
    }
    .start_logged(&args);
    let admin = logs.listening("admin listening").await;
    Syncer { _proc: proc, admin }
}

pub async fn answers(server: &TestServer, name: &str) -> Option<(ResponseCode, Vec<String>)> {
    let m = poll(server.dns, &Ask::new(name, RecordType::A)).await?;
    Some((m.metadata.response_code, addresses(&m)))
}

pub async fn wait_answers(server: &TestServer, name: &str, expected: &[&str]) {
    let want = (ResponseCode::NoError, sorted(expected));
    // Generous: a watcher retrying after a refusal waits out kube-runtime's
    // backoff (up to 30 s); a passing wait returns as soon as it holds.
    eventually(
        Duration::from_secs(30),
        &format!("{name} -> {expected:?}"),
        || {
            let want = want.clone();
            async move { (answers(server, name).await? == want).then_some(()) }
        },
    )
    .await;
}

pub async fn wait_nxdomain(server: &TestServer, name: &str) {
    eventually(
        Duration::from_secs(10),
        &format!("{name} -> NXDOMAIN"),
        || async move { (answers(server, name).await?.0 == ResponseCode::NXDomain).then_some(()) },
    )
    .await;
}

/// What most Kubernetes-source tests start from: the fake holding
/// [`base`] and `web.shop` exported with its slice ([`base_with_web`],
/// [`web_slice`]), a registry started with `server_flags`, and a
/// directory named `name` for the kubeconfig.
pub async fn web_fleet(name: &str, server_flags: &[&str]) -> (FakeKube, TestServer, TempDir) {
    let fake = FakeKube::start().await;
    let server = TestServer::start(server_flags).await;
    let dir = TempDir::new(name);
    base_with_web(&fake);
    web_slice(&fake);
    (fake, server, dir)
}

/// [`base`] plus the exported Service `web.shop`.
pub fn base_with_web(fake: &FakeKube) {
    base(fake);
    fake.apply(
        Res::Services,
        service("shop", "web", &[EXPORT], &[], Some("10.96.0.10")),
    );
}

/// `web.shop`'s slice: one ready endpoint, 10.1.0.11.
pub fn web_slice(fake: &FakeKube) {
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("shop", "web", "10.1.0.11"),
    );
}

/// `cart.shop`, not labelled for export, and its one ready endpoint.
pub fn unlabelled_cart(fake: &FakeKube) {
    fake.apply(
        Res::Services,
        service("shop", "cart", &[], &[], Some("10.96.0.12")),
    );
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("shop", "cart", "10.1.0.21"),
    );
}

/// The fleet every test starts from: its two Nodes.
pub fn base(fake: &FakeKube) {
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
        slice("shop", "web-a", "web", &ready(&["10.1.0.11", "10.1.0.12"])),
    );
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("shop", "private", "10.1.0.99"),
    );
    // No coalescing: every state the syncer computes is published, so an
    // intermediate state it got wrong would reach the registry.
    let history = History::follow(server.grpc_url()).await;
    let syncer = start_syncer(&fake, &server, &dir, &["--coalesce", "0ms"]).await;
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
    // The Watch feed may trail the answers: the history has the unready
    // version before the move is counted from it.
    eventually(
        Duration::from_secs(10),
        "the feed has the unready version",
        || {
            let last = history.versions("shop/web").last().cloned().flatten();
            async move { (last.as_deref() == Some(&["10.1.0.11".to_owned()][..])).then_some(()) }
        },
    )
    .await;
    // An endpoint moves to another slice (added there, then removed here),
    // the two writes further apart than the coalescing window (0 ms) and
    // than the syncer takes to publish: every version the registry applied
    // in between still has it (read from its Watch feed, not sampled).
    let before_move = history.versions("shop/web").len();
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-b", "web", &ready(&["10.1.0.11"])),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    fake.apply(
        Res::EndpointSlices,
        slice("shop", "web-a", "web", &[("10.1.0.12", false, None, None)]),
    );
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let versions = history.versions("shop/web");
    for v in &versions[before_move.saturating_sub(1)..] {
        assert_eq!(
            v.as_deref(),
            Some(&["10.1.0.11".to_owned()][..]),
            "the endpoint flapped while it moved: {versions:?}"
        );
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
    let (fake, server, dir) = web_fleet("kube-mcs", &[]).await;
    unlabelled_cart(&fake);
    let _syncer = start_syncer(&fake, &server, &dir, &["--mcs"]).await;
    // Once the syncer has published (every watcher listed: the labelled
    // Service answers), the unlabelled one with no ServiceExport is not in.
    wait_answers(&server, "web.shop.global", &["10.1.0.11"]).await;
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
        one_ready_slice("shop", "web", "10.1.0.11"),
    );
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("other", "web", "10.1.5.11"),
    );
    let syncer = start_syncer(&fake, &server, &dir, &["--namespace-selector", "team=a"]).await;
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
    // One object per LIST page: a relist takes several requests, and with
    // no coalescing a syncer that applied it as it came would publish the
    // partial states in between.
    let fake = FakeKube::start_with(meshdns_tests::fake_kube::Options {
        page_cap: Some(1),
        ..Default::default()
    })
    .await;
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
    for (i, name) in ["web-a", "web-b", "web-c", "web-d"].iter().enumerate() {
        fake.apply(
            Res::EndpointSlices,
            slice("shop", name, "web", &list(i * 5, i * 5 + 5)),
        );
    }
    let history = History::follow(server.grpc_url()).await;
    let _syncer = start_syncer(&fake, &server, &dir, &["--coalesce", "0ms"]).await;
    let all: Vec<&str> = eps.iter().map(String::as_str).collect();
    wait_answers(&server, "web.shop.global", &all).await;
    assert!(fake.continued_pages() > 0, "the lists came in pages");
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
    let gone = fake.gone();
    fake.expire_watches();
    fake.apply(Res::EndpointSlices, slice("shop", "web-a", "web", &[]));
    fake.apply(
        Res::Services,
        service("shop", "api", &[EXPORT], &[], Some("10.96.0.20")),
    );
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("shop", "api", "10.1.9.1"),
    );
    wait_answers(&server, "api.shop.global", &["10.1.9.1"]).await;
    // Converged on exactly the API server's state: no lost, no phantom endpoint.
    let expected = sorted(&all[5..20]);
    let dns_server = &server;
    eventually(Duration::from_secs(10), "web.shop converged", || {
        let expected = expected.clone();
        async move { (tcp(dns_server).await == expected).then_some(()) }
    })
    .await;
    assert!(fake.gone() > gone, "the watches were refused with 410");
    // Every version the registry ever applied is the state before or the
    // state after: never empty, never part of a relist.
    let (before, after) = (Some(sorted(&all)), Some(expected));
    let versions = history.versions("shop/web");
    assert!(versions.len() >= 2, "{versions:?}");
    for v in &versions {
        assert!(
            *v == before || *v == after,
            "a partial state was published during the relist: {v:?} in {versions:?}"
        );
    }
    fake.stop();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_down_then_back() {
    let fake = FakeKube::start().await;
    // A cluster silent for 1 s is stale; the syncer heartbeats every 200 ms.
    let server = TestServer::start(&["--cluster-ttl", "1s", "--stale-grace", "60s"]).await;
    let dir = TempDir::new("kube-down");
    base_with_web(&fake);
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("shop", "web", "10.1.0.11"),
    );
    let syncer = start_syncer(&fake, &server, &dir, &[]).await;
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
    // ...and keeps streaming its last state with heartbeats: three cluster
    // TTLs later the cluster is still live (not served fail-open as
    // stale), its last heartbeat recent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let clusters = server.clusters().await;
    assert!(clusters[0].connected);
    assert_eq!(
        clusters[0].state,
        meshdns_proto::wire::ClusterState::Live as i32,
        "the cluster went stale while its API server was down: {clusters:?}"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        now_ms.saturating_sub(clusters[0].last_heartbeat_unix_ms) < 1000,
        "last heartbeat {} ms ago",
        now_ms.saturating_sub(clusters[0].last_heartbeat_unix_ms)
    );
    assert_eq!(
        answers(&server, "web.shop.global").await.unwrap().1,
        sorted(&["10.1.0.11"])
    );
    // Changes while it is down, then it comes back: state reconciles.
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("shop", "web", "10.1.0.12"),
    );
    fake.apply(
        Res::Services,
        service("shop", "cart", &[EXPORT], &[], Some("10.96.0.12")),
    );
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("shop", "cart", "10.1.0.21"),
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
    let _syncer = start_syncer(&fake, &server, &dir, &[]).await;
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
    let history = History::follow(server.grpc_url()).await;
    let before = history.versions("shop/web").len();
    // 100 pods become ready one by one, 4 ms apart: about 12 coalescing
    // windows of 50 ms, where a syncer that did not coalesce would send
    // each change on its own.
    let started = std::time::Instant::now();
    for ready in 1..=100 {
        fake.apply(
            Res::EndpointSlices,
            slice("shop", "web-a", "web", &eps(ready)),
        );
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
    let took = started.elapsed();
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
    let updates = history.versions("shop/web").len() - before;
    // One update per window the writes spanned (plus the last one's), on a
    // loaded machine as on an idle one.
    let windows = took.as_millis() as usize / 50 + 2;
    println!("100 changes over {took:?} became {updates} registry updates ({windows} windows)");
    assert!(
        (1..=windows).contains(&updates) && updates < 50,
        "100 changes over {took:?} became {updates} registry updates"
    );
    fake.stop();
    server.stop().await;
}
