//! Edge followers, the default topology: each "cluster" runs `meshdns
//! serve --follow` as a process with unbound in front of it (standing in
//! for CoreDNS), stubbing `global` to it from an address inside that
//! cluster's client CIDRs. Answers through each resolver are the local
//! cluster's; a paused hub leaves both clusters resolving while the
//! followers' staleness metrics rise; a follower restarted with its state
//! file while the hub is down answers before it reconnects; a chain hub →
//! regional → edge converges after churn.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll, query, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::unbound::Unbound;
use meshdns_tests::{Proc, ServeProc, TestSyncer, eventually, http_get};

/// Cluster east-1: its pods (and its unbound) ask from 127.0.1.0/24.
fn east(web: &str) -> String {
    format!(
        r#"
cluster: east-1
region: us-east
zone: us-east-1a
clientCIDRs: [127.0.1.0/24]
services:
  - {{name: web, namespace: shop, ports: [{{name: http, port: 80}}], endpoints: [{{ip: {web}}}]}}
  - {{name: db, namespace: data, ports: [{{name: pg, port: 5432}}], endpoints: [{{ip: 10.1.2.1}}]}}
"#
    )
}

/// Cluster west-1: asks from 127.0.2.0/24.
fn west(web: &str) -> String {
    format!(
        r#"
cluster: west-1
region: us-west
zone: us-west-1a
clientCIDRs: [127.0.2.0/24]
services:
  - {{name: web, namespace: shop, ports: [{{name: http, port: 80}}], endpoints: [{{ip: {web}}}]}}
"#
    )
}

/// unbound listening on `listen`, stubbing `global` to `upstream` and
/// sending from `outgoing` (an address of the cluster's client CIDR, as
/// CoreDNS asks from its pod's address). Caching off, so every answer
/// comes from the follower now.
fn unbound(
    dir: &TempDir,
    listen: &str,
    outgoing: &str,
    upstream: SocketAddr,
) -> (Proc, SocketAddr) {
    Unbound {
        listen,
        outgoing: Some(outgoing),
        stub: Some(upstream),
        no_cache: true,
    }
    .start(dir.path())
}

/// The hub, two syncers, two edge followers.
struct EdgeFleet {
    hub: ServeProc,
    syncers: Vec<TestSyncer>,
    edges: Vec<ServeProc>,
    dir: TempDir,
}

impl EdgeFleet {
    async fn start(edge_flags: &[&str]) -> Self {
        let dir = TempDir::new("edge");
        let hub = ServeProc::start(&[]).await;
        let files = [
            dir.write("east-1.yaml", &east("10.1.0.1")),
            dir.write("west-1.yaml", &west("10.2.0.1")),
        ];
        let syncers = files
            .iter()
            .map(|f| TestSyncer::start(f, &[hub.grpc_url()], &[]))
            .collect();
        let mut edges = Vec::new();
        for _ in 0..2 {
            edges.push(follower(&hub.grpc_url(), edge_flags).await);
        }
        let fleet = EdgeFleet {
            hub,
            syncers,
            edges,
            dir,
        };
        for edge in &fleet.edges {
            wait_answer(edge.dns, "127.0.0.1", &["10.1.0.1", "10.2.0.1"]).await;
        }
        fleet
    }

    async fn stop(self) {
        for s in self.syncers {
            s.stop().await;
        }
        drop(self.edges);
        drop(self.hub);
    }
}

/// `meshdns serve --follow upstream` as a process.
async fn follower(upstream: &str, extra: &[&str]) -> ServeProc {
    let mut flags = vec!["--follow", upstream];
    flags.extend_from_slice(extra);
    ServeProc::start(&flags).await
}

/// Waits until `web.shop.global` asked of `server` from `from` is `want`.
async fn wait_answer(server: SocketAddr, from: &str, want: &[&str]) {
    let want = sorted(want);
    eventually(
        Duration::from_secs(20),
        &format!("web.shop.global at {server} from {from} -> {want:?}"),
        || {
            let want = want.clone();
            let ask = Ask::new("web.shop.global", RecordType::A).from(from);
            async move { (addresses(&poll(server, &ask).await?) == want).then_some(()) }
        },
    )
    .await;
}

/// Waits until `web.shop.global` through a resolver is `want`.
async fn wait_through(resolver: SocketAddr, want: &[&str]) {
    let want = sorted(want);
    eventually(
        Duration::from_secs(20),
        &format!("web.shop.global through {resolver} -> {want:?}"),
        || {
            let want = want.clone();
            let ask = Ask::new("web.shop.global", RecordType::A);
            async move { (addresses(&poll(resolver, &ask).await?) == want).then_some(()) }
        },
    )
    .await;
}

/// A metric's value from `/metrics` (the first sample of that name).
async fn metric(admin: SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(admin, "/metrics").await.ok()?;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn wait_metric(admin: SocketAddr, name: &str, what: &str, ok: impl Fn(f64) -> bool) {
    eventually(Duration::from_secs(40), what, || {
        let ok = &ok;
        async move { metric(admin, name).await.filter(|v| ok(*v)).map(|_| ()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_through_each_clusters_edge() {
    let fleet = EdgeFleet::start(&[]).await;
    let dir = TempDir::new("edge-unbound");
    // CoreDNS in east-1 asks its edge from a pod address in east-1's CIDR.
    let (_east_unbound, east_resolver) =
        unbound(&dir, "127.0.1.53", "127.0.1.2", fleet.edges[0].dns);
    let (_west_unbound, west_resolver) =
        unbound(&dir, "127.0.2.53", "127.0.2.2", fleet.edges[1].dns);
    wait_through(east_resolver, &["10.1.0.1"]).await;
    wait_through(west_resolver, &["10.2.0.1"]).await;
    // A service only east-1 exports answers in both clusters.
    for resolver in [east_resolver, west_resolver] {
        let m = query(resolver, &Ask::new("db.data.global", RecordType::A)).await;
        assert_eq!(addresses(&m), sorted(&["10.1.2.1"]), "{resolver}");
        let m = query(resolver, &Ask::new("nope.shop.global", RecordType::A)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_hub_leaves_the_edges_answering_and_stale() {
    let fleet = EdgeFleet::start(&["--follow-stale-after", "1s"]).await;
    for edge in &fleet.edges {
        wait_metric(
            edge.admin,
            "meshdns_follow_upstream_connected",
            "connected",
            |v| v == 1.0,
        )
        .await;
        assert_eq!(metric(edge.admin, "meshdns_follow_stale").await, Some(0.0));
        assert_eq!(
            metric(edge.admin, "meshdns_follow_stale_answers_total").await,
            Some(0.0)
        );
    }
    fleet.hub.proc.signal("STOP");
    // The followers notice (HTTP/2 keepalive) and say so, and keep
    // answering in their clusters from the last state.
    for (edge, (from, local)) in fleet
        .edges
        .iter()
        .zip([("127.0.1.2", "10.1.0.1"), ("127.0.2.2", "10.2.0.1")])
    {
        wait_metric(
            edge.admin,
            "meshdns_follow_upstream_connected",
            "the follower sees its upstream gone",
            |v| v == 0.0,
        )
        .await;
        wait_metric(edge.admin, "meshdns_follow_stale", "stale after 1s", |v| {
            v == 1.0
        })
        .await;
        let m = query(
            edge.dns,
            &Ask::new("web.shop.global", RecordType::A).from(from),
        )
        .await;
        assert_eq!(
            addresses(&m),
            sorted(&[local]),
            "answers kept while the hub is paused"
        );
        let stale = metric(edge.admin, "meshdns_follow_stale_answers_total").await;
        assert!(
            stale.is_some_and(|n| n >= 1.0),
            "stale answers counted: {stale:?}"
        );
        let cut_off = metric(edge.admin, "meshdns_follow_disconnected_seconds").await;
        assert!(cut_off.is_some_and(|s| s > 1.0), "{cut_off:?}");
        // /readyz stays ready and tells.
        let (code, body) = http_get(edge.admin, "/readyz").await.unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(
            body.contains("disconnected") && body.contains("(stale)"),
            "{body}"
        );
    }
    // The hub comes back; a change reaches both edges.
    fleet.hub.proc.signal("CONT");
    fleet.dir.write("east-1.yaml", &east("10.1.0.9"));
    wait_answer(fleet.edges[0].dns, "127.0.1.2", &["10.1.0.9"]).await;
    wait_answer(fleet.edges[1].dns, "127.0.0.1", &["10.1.0.9", "10.2.0.1"]).await;
    for edge in &fleet.edges {
        wait_metric(edge.admin, "meshdns_follow_stale", "fresh again", |v| {
            v == 0.0
        })
        .await;
        let reconnects = metric(edge.admin, "meshdns_follow_reconnects_total").await;
        assert!(reconnects.is_some_and(|n| n >= 1.0), "{reconnects:?}");
    }
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_restarted_while_its_hub_is_down_answers_from_its_state_file() {
    let mut fleet = EdgeFleet::start(&[]).await;
    let state = fleet.dir.path().join("edge.state");
    let state_flag = state.display().to_string();
    let edge = follower(&fleet.hub.grpc_url(), &["--state-file", &state_flag]).await;
    wait_answer(edge.dns, "127.0.1.2", &["10.1.0.1"]).await;
    // Stopped (SIGTERM saves the state file), then the hub goes away.
    let mut edge = edge;
    edge.proc.signal("TERM");
    assert!(edge.proc.wait_exit(Duration::from_secs(15)).is_some());
    assert!(state.exists(), "state saved at shutdown");
    fleet.hub.proc.signal("STOP");
    let restarted = follower(&fleet.hub.grpc_url(), &["--state-file", &state_flag]).await;
    // It answers from the state file while the hub is still stopped...
    wait_answer(restarted.dns, "127.0.1.2", &["10.1.0.1"]).await;
    let m = query(restarted.dns, &Ask::new("db.data.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.1.2.1"]));
    // ...before it has reconnected: it never held a stream.
    assert_eq!(
        metric(restarted.admin, "meshdns_follow_upstream_connected").await,
        Some(0.0)
    );
    let (code, body) = http_get(restarted.admin, "/readyz").await.unwrap();
    assert_eq!(code, 200, "{body}");
    // `meshdns status` asked of the follower names its upstream and says
    // it is cut off, in the table and in JSON.
    let status = |output: &str| meshdns::status::StatusArgs {
        registry: restarted.grpc_url(),
        service: None,
        output: output.into(),
        client: meshdns_cli::ClientFlags {
            insecure: true,
            ..Default::default()
        },
    };
    let table = meshdns::status::run(&status("table")).await.unwrap();
    let upstream = fleet.hub.grpc_url();
    assert!(
        table.contains(&format!("follows upstream {upstream}: disconnected for")),
        "{table}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&meshdns::status::run(&status("json")).await.unwrap()).unwrap();
    assert_eq!(json["upstream"]["url"], upstream.as_str(), "{json}");
    assert_eq!(json["upstream"]["connected"], false, "{json}");
    // The hub returns and the follower reconnects.
    fleet.hub.proc.signal("CONT");
    wait_metric(
        restarted.admin,
        "meshdns_follow_upstream_connected",
        "reconnected",
        |v| v == 1.0,
    )
    .await;
    let table = meshdns::status::run(&status("table")).await.unwrap();
    assert!(
        table.contains(&format!("follows upstream {upstream}: connected")),
        "{table}"
    );
    fleet.edges.push(restarted);
    fleet.stop().await;
}

/// Every service name of a churned fleet: `svc-<n>.shop`.
fn churned(cluster: &str, cidr: &str, round: usize, count: usize, base: u8) -> String {
    let mut text = format!(
        "cluster: {cluster}\nregion: r-{cluster}\nzone: z-{cluster}\nclientCIDRs: [{cidr}]\nservices:\n"
    );
    // Each round drops a few services, adds others and moves endpoints.
    for n in (round % 3)..count {
        if (n + round).is_multiple_of(5) {
            continue;
        }
        text.push_str(&format!(
            "  - {{name: svc-{n}, namespace: shop, ports: [{{name: http, port: 80}}], endpoints: [{{ip: 10.{base}.{round}.{n}}}]}}\n"
        ));
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_regional_edge_chain_converges_after_churn() {
    const SERVICES: usize = 20;
    let dir = TempDir::new("chain");
    let hub = ServeProc::start(&[]).await;
    let files = [
        dir.write("a.yaml", &churned("a", "127.0.3.0/24", 0, SERVICES, 1)),
        dir.write("b.yaml", &churned("b", "127.0.4.0/24", 0, SERVICES, 2)),
    ];
    let syncers: Vec<TestSyncer> = files
        .iter()
        .map(|f| TestSyncer::start(f, &[hub.grpc_url()], &[]))
        .collect();
    let regional = follower(&hub.grpc_url(), &[]).await;
    let edge = follower(&regional.grpc_url(), &[]).await;
    for round in 1..=6 {
        dir.write("a.yaml", &churned("a", "127.0.3.0/24", round, SERVICES, 1));
        dir.write("b.yaml", &churned("b", "127.0.4.0/24", round, SERVICES, 2));
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    // The last round everywhere: every name answers at the edge as at the hub.
    let last = churned("a", "127.0.3.0/24", 6, SERVICES, 1);
    let marker = last.lines().last().unwrap().to_owned();
    let ip = marker
        .rsplit("ip: ")
        .next()
        .unwrap()
        .trim_end_matches("}]}");
    let name = marker
        .split("name: ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_owned();
    let hub_dns = hub.dns;
    let hub_name = format!("{name}.shop.global");
    eventually(
        Duration::from_secs(20),
        "the hub has the last round",
        || {
            let ask = Ask::new(&hub_name, RecordType::A);
            async move {
                addresses(&poll(hub_dns, &ask).await?)
                    .contains(&ip.to_owned())
                    .then_some(())
            }
        },
    )
    .await;
    let compare = |server: SocketAddr| async move {
        let mut all = Vec::new();
        for n in 0..SERVICES {
            let name = format!("svc-{n}.shop.global");
            let m = poll(server, &Ask::new(&name, RecordType::A)).await?;
            all.push((name, m.metadata.response_code, addresses(&m)));
        }
        Some(all)
    };
    let at_hub = compare(hub.dns).await.expect("the hub answers");
    assert!(
        at_hub
            .iter()
            .any(|(_, code, _)| *code == ResponseCode::NXDomain),
        "the churn removed services: {at_hub:?}"
    );
    let edge_dns = edge.dns;
    eventually(
        Duration::from_secs(20),
        "the edge answers as the hub",
        || {
            let want = at_hub.clone();
            async move { (compare(edge_dns).await? == want).then_some(()) }
        },
    )
    .await;
    assert_eq!(compare(regional.dns).await, Some(at_hub));
    for s in syncers {
        s.stop().await;
    }
}
