//! Locality and health end to end: askers on distinct loopback addresses
//! announced as different clusters' client CIDRs, each tier and spill-over,
//! affinities, ECS, IPv6, cluster liveness (stale, back, purge), fail-open,
//! clusterip mode, the MCS layout, PTR, and /debug/answer.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use meshdns_tests::dns::{
    Ask, addresses, ecs_echo, poll, query, query_srv, sorted, srv, srv_targets,
};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{TestServer, TestSyncer, eventually, http_get};

const EAST_1: &str = r#"
cluster: east-1
region: us-east
zone: us-east-1a
clientCIDRs: [127.0.0.2/32, "fd00:e1::/48"]
services:
  - {name: web, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.1.0.1}]}
  - {name: spill, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.1.1.1, ready: false}]}
  - {name: pinned, namespace: shop, affinity: cluster, ports: [{name: http, port: 80}], endpoints: [{ip: 10.1.4.1}]}
  - {name: spread, namespace: shop, affinity: none, ports: [{name: http, port: 80}], endpoints: [{ip: 10.1.6.1}]}
  - {name: solo, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.1.5.1}]}
  - name: api
    namespace: shop
    mode: clusterip
    clusterIPs: [10.96.1.10]
    ports: [{name: grpc, port: 9090}]
    endpoints: [{ip: 10.1.7.1}]
  - name: db
    namespace: data
    ports: [{name: postgres, port: 5432}]
    endpoints: [{ip: 10.1.8.1, hostname: db-0}]
"#;

const EAST_2: &str = r#"
cluster: east-2
region: us-east
zone: us-east-1b
clientCIDRs: [127.0.0.3/32]
services:
  - {name: web, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.2.0.1}]}
  - name: spill
    namespace: shop
    ports: [{name: http, port: 80}]
    endpoints: [{ip: 10.2.1.1}, {ip: 10.2.1.2, zone: us-east-1a}]
  - {name: regional, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.2.2.1}]}
  - {name: pinned, namespace: shop, affinity: cluster, ports: [{name: http, port: 80}], endpoints: [{ip: 10.2.4.1}]}
  - {name: spread, namespace: shop, affinity: none, ports: [{name: http, port: 80}], endpoints: [{ip: 10.2.6.1}]}
  - name: api
    namespace: shop
    mode: clusterip
    clusterIPs: [10.96.2.10]
    ports: [{name: grpc, port: 9090}]
    endpoints: [{ip: 10.2.7.1}]
"#;

const WEST_1: &str = r#"
cluster: west-1
region: us-west
zone: us-west-1a
clientCIDRs: [127.0.0.4/32, "::1/128"]
services:
  - {name: web, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ips: [10.3.0.1, "fd00:3::1"]}]}
  - {name: spill, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.3.1.1}]}
  - {name: regional, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.3.2.1}]}
  - {name: far, namespace: shop, ports: [{name: http, port: 80}], endpoints: [{ip: 10.3.3.1}]}
  - {name: spread, namespace: shop, affinity: none, ports: [{name: http, port: 80}], endpoints: [{ip: 10.3.6.1}]}
"#;

struct Fleet {
    server: TestServer,
    syncers: Vec<Option<TestSyncer>>,
    files: Vec<std::path::PathBuf>,
    _dir: TempDir,
}

const ALL_WEB: [&str; 3] = ["10.1.0.1", "10.2.0.1", "10.3.0.1"];

async fn fleet(flags: &[&str]) -> Fleet {
    let server = TestServer::start(flags).await;
    let dir = TempDir::new("locality");
    let files = vec![
        dir.write("east-1.yaml", EAST_1),
        dir.write("east-2.yaml", EAST_2),
        dir.write("west-1.yaml", WEST_1),
    ];
    let syncers = files
        .iter()
        .map(|f| Some(TestSyncer::start(f, &[server.grpc_url()], &[])))
        .collect();
    let f = Fleet {
        server,
        syncers,
        files,
        _dir: dir,
    };
    f.wait_web(&ALL_WEB).await;
    f
}

impl Fleet {
    async fn a(&self, name: &str, from: &str) -> Vec<String> {
        addresses(&query(self.server.dns, &Ask::new(name, RecordType::A).from(from)).await)
    }

    async fn wait_web(&self, expected: &[&str]) {
        let dns = self.server.dns;
        let want = sorted(expected);
        eventually(
            Duration::from_secs(10),
            &format!("web.shop -> {expected:?}"),
            || {
                let want = want.clone();
                async move {
                    let m = poll(dns, &Ask::new("web.shop.global", RecordType::A)).await?;
                    (addresses(&m) == want).then_some(())
                }
            },
        )
        .await;
    }

    async fn stop(self) {
        for s in self.syncers.into_iter().flatten() {
            s.stop().await;
        }
        self.server.stop().await;
    }
}

#[tokio::test]
async fn tiers_spill_over_and_affinity() {
    let f = fleet(&[]).await;
    // Each asker gets its own cluster's endpoints; an unknown asker all.
    assert_eq!(
        f.a("web.shop.global", "127.0.0.2").await,
        sorted(&["10.1.0.1"])
    );
    assert_eq!(
        f.a("web.shop.global", "127.0.0.3").await,
        sorted(&["10.2.0.1"])
    );
    assert_eq!(
        f.a("web.shop.global", "127.0.0.4").await,
        sorted(&["10.3.0.1"])
    );
    assert_eq!(f.a("web.shop.global", "127.0.0.1").await, sorted(&ALL_WEB));
    // Nothing healthy in east-1: the pod of east-2 that sits in east-1's zone.
    assert_eq!(
        f.a("spill.shop.global", "127.0.0.2").await,
        sorted(&["10.2.1.2"])
    );
    // Nothing in the cluster or zone: the region.
    assert_eq!(
        f.a("regional.shop.global", "127.0.0.2").await,
        sorted(&["10.2.2.1"])
    );
    // Nothing in the region: anywhere.
    assert_eq!(
        f.a("far.shop.global", "127.0.0.2").await,
        sorted(&["10.3.3.1"])
    );
    // affinity none: every tier at once.
    assert_eq!(
        f.a("spread.shop.global", "127.0.0.2").await,
        sorted(&["10.1.6.1", "10.2.6.1", "10.3.6.1"])
    );
    // The per-cluster name ignores locality.
    assert_eq!(
        f.a("east-2.web.shop.global", "127.0.0.2").await,
        sorted(&["10.2.0.1"])
    );
    // clusterip mode follows the same tiers.
    assert_eq!(
        f.a("api.shop.global", "127.0.0.2").await,
        sorted(&["10.96.1.10"])
    );
    assert_eq!(
        f.a("api.shop.global", "127.0.0.3").await,
        sorted(&["10.96.2.10"])
    );
    assert_eq!(
        f.a("api.shop.global", "127.0.0.4").await,
        sorted(&["10.96.1.10", "10.96.2.10"])
    );
    // SRV follows locality too.
    let m = query(
        f.server.dns,
        &Ask::new("_http._tcp.web.shop.global", RecordType::SRV).from("127.0.0.3"),
    )
    .await;
    assert!(
        matches!(&m.answers[..], [r] if matches!(&r.data, RData::SRV(s) if s.target.to_ascii() == "10-2-0-1.east-2.web.shop.global.")),
        "{m:?}"
    );
    f.stop().await;
}

#[tokio::test]
async fn min_healthy_spills_and_cluster_affinity_holds() {
    let f = fleet(&["--min-healthy", "2"]).await;
    // One healthy endpoint in east-1 and its zone: the region answers.
    assert_eq!(
        f.a("web.shop.global", "127.0.0.2").await,
        sorted(&["10.1.0.1", "10.2.0.1"])
    );
    // west-1 has one, and its region no more: anywhere.
    assert_eq!(f.a("web.shop.global", "127.0.0.4").await, sorted(&ALL_WEB));
    // affinity cluster never leaves the cluster while it has anything.
    assert_eq!(
        f.a("pinned.shop.global", "127.0.0.2").await,
        sorted(&["10.1.4.1"])
    );
    // ...and spills when it has nothing.
    assert_eq!(
        f.a("pinned.shop.global", "127.0.0.4").await,
        sorted(&["10.1.4.1", "10.2.4.1"])
    );
    f.stop().await;
}

#[tokio::test]
async fn ecs_overrides_the_source_and_is_echoed() {
    let f = fleet(&[]).await;
    let dns = f.server.dns;
    // Asked from east-1's address on behalf of a west-1 client.
    let m = query(
        dns,
        &Ask::new("web.shop.global", RecordType::A)
            .from("127.0.0.2")
            .ecs("127.0.0.4/32"),
    )
    .await;
    assert_eq!(addresses(&m), sorted(&["10.3.0.1"]));
    assert_eq!(
        ecs_echo(&m),
        Some(("127.0.0.4".parse().unwrap(), 32, 32)),
        "ECS echoed with its scope"
    );
    // An IPv6 client subnet inside east-1's fd00:e1::/48.
    let m = query(
        dns,
        &Ask::new("web.shop.global", RecordType::A).ecs("fd00:e1:0:5::/64"),
    )
    .await;
    assert_eq!(addresses(&m), sorted(&["10.1.0.1"]));
    // A subnet shorter than the cluster's CIDR cannot place the client.
    let m = query(
        dns,
        &Ask::new("web.shop.global", RecordType::A)
            .from("127.0.0.2")
            .ecs("127.0.0.0/24"),
    )
    .await;
    assert_eq!(addresses(&m), sorted(&ALL_WEB));
    // Source prefix 0: the resolver asks for no tailoring. A located
    // asker would get another answer, so the scope is the whole width
    // (kept for /0 askers only), not 0.
    let m = query(
        dns,
        &Ask::new("web.shop.global", RecordType::A)
            .from("127.0.0.2")
            .ecs("0.0.0.0/0"),
    )
    .await;
    assert_eq!(addresses(&m), sorted(&ALL_WEB));
    assert_eq!(ecs_echo(&m).map(|e| e.2), Some(32));
    // Names whose answer does not depend on the asker: scope 0.
    let m = query(
        dns,
        &Ask::new("nope.shop.global", RecordType::A).ecs("127.0.0.4/32"),
    )
    .await;
    assert_eq!(ecs_echo(&m).map(|e| e.2), Some(0));
    f.stop().await;
}

/// `dig +subnet=<family>/0` (no tailoring, RFC 7871 §7.1.2) from a
/// located source: the untailored answer; where a located asker would
/// get another (`web`), its scope is the family's whole width, so a
/// resolver keeps it for /0 askers only (§7.3.1); where every asker gets
/// the same (affinity `none`, NXDOMAIN), scope 0.
#[tokio::test]
async fn an_untailored_answer_is_scoped_to_untailored_askers() {
    let f = fleet(&[]).await;
    let port = f.server.dns.port().to_string();
    let dig = |subnet: &str, name: &str| {
        let out = std::process::Command::new("dig")
            .args([
                "@127.0.0.1",
                "-p",
                &port,
                "-b",
                "127.0.0.2",
                &format!("+subnet={subnet}"),
                name,
                "A",
            ])
            .output()
            .expect("dig runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (subnet, width) in [("0.0.0.0/0", 32), ("::/0", 128)] {
        let text = dig(subnet, "web.shop.global");
        assert!(text.contains("status: NOERROR"), "{subnet}: {text}");
        for address in ALL_WEB {
            assert!(text.contains(address), "{subnet}: {text}");
        }
        assert!(
            text.contains(&format!("CLIENT-SUBNET: {subnet}/{width}")),
            "{subnet}: {text}"
        );
        for name in ["spread.shop.global", "nope.shop.global"] {
            let text = dig(subnet, name);
            assert!(
                text.contains(&format!("CLIENT-SUBNET: {subnet}/0")),
                "{name} {subnet}: {text}"
            );
        }
    }
    f.stop().await;
}

#[tokio::test]
async fn ipv6_asker() {
    let f = fleet(&["--dns-listen", "[::1]:0"]).await;
    let v6 = f.server.dns_all[1];
    assert!(v6.is_ipv6());
    // ::1 is west-1's client CIDR.
    let m = query(v6, &Ask::new("web.shop.global", RecordType::A).from("::1")).await;
    assert_eq!(addresses(&m), sorted(&["10.3.0.1"]));
    let m = query(
        v6,
        &Ask::new("web.shop.global", RecordType::AAAA).from("::1"),
    )
    .await;
    assert_eq!(addresses(&m), sorted(&["fd00:3::1"]));
    f.stop().await;
}

#[tokio::test]
async fn a_dead_cluster_leaves_answers_and_comes_back() {
    // Heartbeats every 200 ms (TestSyncer); a cluster silent for one TTL
    // is stale, and purged after the grace (far beyond the bounds below).
    let ttl = Duration::from_secs(1);
    let mut f = fleet(&["--cluster-ttl", "1s", "--stale-grace", "5s"]).await;
    let east1 = f.syncers[0].take().unwrap();
    east1.stop().await;
    let stopped = Instant::now();
    // Still served well inside its TTL (its last heartbeat was at most one
    // heartbeat, a fifth of the TTL, before the stop)...
    tokio::time::sleep(ttl.mul_f64(0.3)).await;
    assert_eq!(f.a("web.shop.global", "127.0.0.1").await, sorted(&ALL_WEB));
    // ...then gone after about one TTL (plus the sweep period, TTL/10).
    f.wait_web(&["10.2.0.1", "10.3.0.1"]).await;
    let gone = stopped.elapsed();
    // Bounds in TTLs: never before half of one (a stream's end is not a
    // withdrawal), and generously within two and a half on a loaded
    // machine (the purge, at five, would be far later).
    assert!(
        gone >= ttl / 2,
        "withdrawn before its TTL could have run out: {gone:?}"
    );
    assert!(
        gone <= ttl.mul_f64(2.5),
        "not withdrawn within 2.5 TTLs: {gone:?}"
    );
    // east-1's own askers now spill to its zone/region.
    assert_eq!(
        f.a("web.shop.global", "127.0.0.2").await,
        sorted(&["10.2.0.1"])
    );
    // Fail open: solo.shop is held only by the stale cluster, so its last
    // known endpoints are still served, and counted.
    assert_eq!(
        f.a("solo.shop.global", "127.0.0.1").await,
        sorted(&["10.1.5.1"])
    );
    let (_, metrics) = http_get(f.server.admin, "/metrics").await.unwrap();
    let stale_answers = metrics
        .lines()
        .find(|l| l.starts_with("meshdns_dns_stale_answers_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(stale_answers >= 1.0, "{metrics}");
    assert!(
        metrics.contains("meshdns_clusters{state=\"stale\"} 1"),
        "{metrics}"
    );
    // The cluster comes back: live again at once, with no duplicates.
    f.syncers[0] = Some(TestSyncer::start(&f.files[0], &[f.server.grpc_url()], &[]));
    let back = Instant::now();
    f.wait_web(&ALL_WEB).await;
    assert!(back.elapsed() < ttl * 2, "back within {:?}", back.elapsed());
    let m = query(
        f.server.dns,
        &Ask::new("web.shop.global", RecordType::A).tcp(),
    )
    .await;
    assert_eq!(m.answers.len(), 3);
    // Gone again, and past the grace period: purged, names NXDOMAIN.
    f.syncers[0].take().unwrap().stop().await;
    let dns = f.server.dns;
    eventually(Duration::from_secs(10), "solo.shop purged", || async move {
        let m = poll(dns, &Ask::new("solo.shop.global", RecordType::A)).await?;
        (m.metadata.response_code == ResponseCode::NXDomain).then_some(())
    })
    .await;
    let (_, registry) = http_get(f.server.admin, "/debug/registry").await.unwrap();
    assert!(!registry.contains("\"east-1\""), "{registry}");
    f.stop().await;
}

#[tokio::test]
async fn mcs_layout_beside_global() {
    let f = fleet(&["--domain", "global", "--domain", "clusterset.local"]).await;
    let dns = f.server.dns;
    assert_eq!(
        f.a("web.shop.svc.clusterset.local", "127.0.0.1").await,
        sorted(&ALL_WEB)
    );
    assert_eq!(
        f.a("web.shop.svc.clusterset.local", "127.0.0.3").await,
        sorted(&["10.2.0.1"])
    );
    assert_eq!(
        f.a("db-0.east-1.db.data.svc.clusterset.local", "127.0.0.1")
            .await,
        sorted(&["10.1.8.1"])
    );
    let m = query(
        dns,
        &Ask::new("dns-version.clusterset.local", RecordType::TXT),
    )
    .await;
    assert!(
        matches!(&m.answers[..], [r] if matches!(&r.data, RData::TXT(t) if t.to_string() == "1.0.0")),
        "{m:?}"
    );
    // SRV in the spec's shapes: headless targets by hostname and cluster...
    let m = query_srv(dns, "_postgres._tcp.db.data.svc.clusterset.local").await;
    assert_eq!(
        srv_targets(&m),
        srv(5432, "db-0.east-1.db.data.svc.clusterset.local."),
        "{m:?}"
    );
    // ...ClusterSetIP services target the service name, once per port.
    let m = query_srv(dns, "_grpc._tcp.api.shop.svc.clusterset.local").await;
    assert_eq!(
        srv_targets(&m),
        srv(9090, "api.shop.svc.clusterset.local."),
        "{m:?}"
    );
    assert_eq!(
        m.additionals.len(),
        2,
        "both cluster IPs in additional: {m:?}"
    );
    // No per-cluster service record in the MCS layout: an empty non-terminal.
    let m = query(
        dns,
        &Ask::new("east-1.web.shop.svc.clusterset.local", RecordType::A),
    )
    .await;
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    let m = query(dns, &Ask::new("web.shop.clusterset.local", RecordType::A)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    let m = query(dns, &Ask::new("svc.clusterset.local", RecordType::A)).await;
    assert_eq!(
        (m.metadata.response_code, m.answers.len()),
        (ResponseCode::NoError, 0)
    );
    // The global layout still answers from the same registry.
    assert_eq!(
        f.a("web.shop.global", "127.0.0.4").await,
        sorted(&["10.3.0.1"])
    );
    f.stop().await;
}

#[tokio::test]
async fn ptr_with_reverse() {
    let f = fleet(&["--reverse"]).await;
    let dns = f.server.dns;
    let ptr = |name: &str| {
        let ask = Ask::new(name, RecordType::PTR);
        async move {
            let m = query(dns, &ask).await;
            let mut names: Vec<String> = m
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => Some(p.0.to_ascii()),
                    _ => None,
                })
                .collect();
            names.sort();
            (m.metadata.response_code, names)
        }
    };
    assert_eq!(
        ptr("1.0.1.10.in-addr.arpa").await,
        (ResponseCode::NoError, vec!["web.shop.global.".to_owned()])
    );
    assert_eq!(
        ptr("1.8.1.10.in-addr.arpa").await,
        (
            ResponseCode::NoError,
            vec!["db-0.east-1.db.data.global.".to_owned()]
        )
    );
    assert_eq!(
        ptr("10.1.96.10.in-addr.arpa").await,
        (ResponseCode::NoError, vec!["api.shop.global.".to_owned()])
    );
    let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.0.0.0.d.f.ip6.arpa";
    assert_eq!(
        ptr(v6).await,
        (ResponseCode::NoError, vec!["web.shop.global.".to_owned()])
    );
    // Not ready: no PTR.
    assert_eq!(ptr("1.1.1.10.in-addr.arpa").await.0, ResponseCode::NXDomain);
    assert_eq!(ptr("9.9.9.9.in-addr.arpa").await.0, ResponseCode::NXDomain);
    // Above exported addresses: empty non-terminals.
    assert_eq!(
        ptr("10.in-addr.arpa").await,
        (ResponseCode::NoError, vec![])
    );
    assert_eq!(ptr("11.in-addr.arpa").await.0, ResponseCode::NXDomain);
    // A and PTR at the same time, and the reverse apex has an SOA.
    let m = query(dns, &Ask::new("in-addr.arpa", RecordType::SOA)).await;
    assert_eq!(m.answers.len(), 1);
    assert!(m.metadata.authoritative);
    f.stop().await;
}

#[tokio::test]
async fn debug_answer_explains_the_choice() {
    let f = fleet(&[]).await;
    let (status, body) = http_get(
        f.server.admin,
        "/debug/answer?name=spill.shop.global&source=127.0.0.2",
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["asker"]["cluster"], "east-1");
    assert_eq!(json["asker"]["zone"], "us-east-1a");
    assert_eq!(json["chosen"], "zone");
    let tier = |i: usize| {
        let t = &json["tiers"][i];
        serde_json::json!({"tier": t["tier"], "healthy": t["healthy"], "needed": t["needed"]})
    };
    assert_eq!(
        tier(0),
        serde_json::json!({"tier": "cluster", "healthy": 0, "needed": 1})
    );
    assert_eq!(
        tier(1),
        serde_json::json!({"tier": "zone", "healthy": 1, "needed": 1})
    );
    assert_eq!(
        json["spilled_over"],
        serde_json::json!(["cluster: 0 healthy, needs 1"])
    );
    assert_eq!(json["answer"], serde_json::json!(["10.2.1.2"]));
    let (status, body) = http_get(f.server.admin, "/debug/answer?name=web.shop.global")
        .await
        .unwrap();
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["chosen"], "any");
    assert_eq!(json["asker"], serde_json::Value::Null);
    let (status, body) = http_get(
        f.server.admin,
        "/debug/answer?name=web.shop.global&source=nope",
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(body.contains("source"), "{body}");
    let (status, _) = http_get(f.server.admin, "/debug/answer?name=nope.shop.global")
        .await
        .unwrap();
    assert_eq!(status, 404);
    f.stop().await;
}
