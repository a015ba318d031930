//! Issue 14, the member side end to end: the traffic-policy annotations,
//! `spec.trafficDistribution`, `--weight`, the provider (flag, Node
//! labels) and node addresses, from the fake API server (or an export
//! file) through the real syncer and the wire to the hub, read back from
//! `/debug/registry` and `ListClusters`.

use std::time::Duration;

use meshdns_tests::fake_kube::{
    FakeKube, Res, labelled, node, one_ready_slice, service, with_traffic_distribution,
};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{TestServer, TestSyncer, eventually, http_get, list_clusters};
use serde_json::Value;

use crate::kubernetes::{EXPORT, start_syncer};

const PROVIDER: &str = "meshdns.io/provider";

/// A Service of the test: name, annotations, `spec.trafficDistribution`,
/// its one endpoint's address.
type TestService<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<&'a str>, &'a str);

/// The hub's `/debug/registry`.
async fn registry(server: &TestServer) -> Value {
    let (status, body) = http_get(server.admin, "/debug/registry").await.unwrap();
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The export of `shop/<name>` as the hub holds it, once it has it.
async fn wait_export(server: &TestServer, name: &str) -> Value {
    eventually(
        Duration::from_secs(30),
        &format!("shop/{name} at the hub"),
        || async move {
            let all = registry(server).await;
            all["clusters"]
                .as_array()?
                .iter()
                .flat_map(|c| c["exports"].as_array().into_iter().flatten())
                .find(|e| e["namespace"] == "shop" && e["name"] == name)
                .cloned()
        },
    )
    .await
}

fn weights(export: &Value) -> Vec<u64> {
    export["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["weight"].as_u64().unwrap())
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// The provider the hub holds for the only cluster, once it is `want`.
async fn wait_provider(server: &TestServer, want: &str) -> meshdns_proto::wire::ClusterInfo {
    let url = server.grpc_url();
    eventually(
        Duration::from_secs(20),
        &format!("provider {want:?}"),
        || {
            let url = url.clone();
            async move {
                let c = list_clusters(url).await?.into_iter().next()?;
                (c.provider == want).then_some(c)
            }
        },
    )
    .await
}

fn provider_node(name: &str, ip: &str, provider: &str) -> Value {
    labelled(
        node(name, "10.1.0.0/24", ip, "us-east", "us-east-1a"),
        &[(PROVIDER, provider)],
    )
}

/// A fake API server with Nodes `node-1` and `node-2` labelled with
/// `providers`, a hub, and a directory for the syncer's files.
async fn two_nodes(tag: &str, providers: [&str; 2]) -> (FakeKube, TestServer, TempDir) {
    let fake = FakeKube::start().await;
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new(tag);
    for (i, provider) in providers.iter().enumerate() {
        let n = i + 1;
        let address = format!("192.168.10.{n}");
        fake.apply(
            Res::Nodes,
            provider_node(&format!("node-{n}"), &address, provider),
        );
    }
    (fake, server, dir)
}

/// Every annotation and `spec.trafficDistribution`, read by the
/// Kubernetes source from a server as strict as kube-apiserver, reach
/// the hub: weights on each endpoint, the policy on the export, the
/// provider and the nodes' addresses in the Hello. A bad value refuses
/// that Service alone, naming the annotation on the syncer's `/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn annotations_and_traffic_distribution_reach_the_hub() {
    let (fake, server, dir) = two_nodes("syncer-policy", ["aws", "aws"]).await;
    let services: [TestService<'_>; 5] = [
        (
            "web",
            &[
                ("meshdns.io/weight", "30"),
                ("meshdns.io/failover", "us-west, provider:gcp"),
                ("meshdns.io/primary", "us-east"),
                ("meshdns.io/min-healthy", "50%"),
                ("meshdns.io/export-to", "east-1, region:us-west"),
            ],
            Some("PreferSameNode"),
            "10.1.0.11",
        ),
        ("near", &[], Some("PreferClose"), "10.1.0.21"),
        (
            "pinned",
            &[("meshdns.io/affinity", "region")],
            Some("PreferSameNode"),
            "10.1.0.31",
        ),
        (
            "plain",
            &[("meshdns.io/min-healthy", "3")],
            None,
            "10.1.0.41",
        ),
        ("bad", &[("meshdns.io/weight", "heavy")], None, "10.1.0.51"),
    ];
    for (name, annotations, distribution, ip) in services {
        let svc = service("shop", name, &[EXPORT], annotations, Some("10.96.0.10"));
        let svc = match distribution {
            Some(d) => with_traffic_distribution(svc, d),
            None => svc,
        };
        fake.apply(Res::Services, svc);
        fake.apply(Res::EndpointSlices, one_ready_slice("shop", name, ip));
    }
    let syncer = start_syncer(
        &fake,
        &server,
        &dir,
        &["--weight", "20", "--announce-nodes"],
    )
    .await;

    let web = wait_export(&server, "web").await;
    assert_eq!(
        weights(&web),
        vec![30],
        "the annotation beats --weight: {web}"
    );
    assert_eq!(
        strings(&web["failover"]),
        ["region:us-west", "provider:gcp"],
        "{web}"
    );
    assert_eq!(web["primary"], "region:us-east", "{web}");
    assert_eq!(web["min_healthy"], "50%", "{web}");
    assert_eq!(
        strings(&web["export_to"]),
        ["cluster:east-1", "region:us-west"],
        "{web}"
    );
    assert_eq!(
        (&web["affinity"], &web["traffic_distribution"]),
        (&Value::from("node"), &Value::from("PreferSameNode")),
        "{web}"
    );
    let near = wait_export(&server, "near").await;
    assert_eq!(weights(&near), vec![20], "--weight: {near}");
    assert_eq!(
        (&near["affinity"], &near["traffic_distribution"]),
        (&Value::from("zone"), &Value::from("PreferClose")),
        "{near}"
    );
    let pinned = wait_export(&server, "pinned").await;
    assert_eq!(
        (&pinned["affinity"], &pinned["traffic_distribution"]),
        (&Value::from("region"), &Value::Null),
        "the annotation wins: {pinned}"
    );
    let plain = wait_export(&server, "plain").await;
    assert_eq!(plain["min_healthy"], "3", "{plain}");
    assert_eq!(
        (
            strings(&plain["failover"]).len(),
            &plain["primary"],
            strings(&plain["export_to"]).len()
        ),
        (0, &Value::Null, 0),
        "{plain}"
    );
    // The bad one is refused, naming the annotation, and nothing else is.
    let status = syncer.status().await;
    let problems = status["source"]["problems"]["shop/bad"].to_string();
    assert!(
        problems.contains("meshdns.io/weight") && problems.contains("heavy"),
        "{status}"
    );
    let all = registry(&server).await;
    let names: Vec<&str> = all["clusters"][0]["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["near", "pinned", "plain", "web"], "{all}");
    // Fixed, it goes out with its weight.
    fake.apply(
        Res::Services,
        service(
            "shop",
            "bad",
            &[EXPORT],
            &[("meshdns.io/weight", "5")],
            Some("10.96.0.10"),
        ),
    );
    let fixed = wait_export(&server, "bad").await;
    assert_eq!(weights(&fixed), vec![5], "{fixed}");
    // export-to fails closed: a typo in a newly added one, or one that
    // names no place, withdraws the export rather than leave it public.
    for (name, value) in [("plain", "regoin:us-west"), ("near", " , ")] {
        fake.apply(
            Res::Services,
            service(
                "shop",
                name,
                &[EXPORT],
                &[("meshdns.io/export-to", value)],
                Some("10.96.0.10"),
            ),
        );
    }
    eventually(
        Duration::from_secs(20),
        "plain and near withdrawn",
        || async {
            let all = registry(&server).await;
            let names: Vec<String> = all["clusters"][0]["exports"]
                .as_array()?
                .iter()
                .filter_map(|e| e["name"].as_str().map(str::to_owned))
                .collect();
            (names == ["bad", "pinned", "web"]).then_some(())
        },
    )
    .await;
    let status = syncer.status().await;
    for name in ["plain", "near"] {
        let problems = status["source"]["problems"][format!("shop/{name}")].to_string();
        assert!(
            problems.contains("meshdns.io/export-to") && problems.contains("withdrawn"),
            "{name}: {status}"
        );
    }

    // The Hello: the provider the Nodes agree on, and their addresses.
    let cluster = wait_provider(&server, "aws").await;
    let nodes: Vec<(String, Vec<String>)> = cluster
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.addresses.clone()))
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("node-1".to_owned(), vec!["192.168.10.1".to_owned()]),
            ("node-2".to_owned(), vec!["192.168.10.2".to_owned()]),
        ]
    );
    // Still announced as client CIDRs too.
    assert!(
        cluster.client_cidrs.contains(&"192.168.10.1/32".to_owned()),
        "{cluster:?}"
    );
    // A node labelled otherwise: they disagree, so no provider; relabelled,
    // they agree again.
    fake.apply(Res::Nodes, provider_node("node-2", "192.168.10.2", "gcp"));
    wait_provider(&server, "").await;
    fake.apply(Res::Nodes, provider_node("node-2", "192.168.10.2", "aws"));
    wait_provider(&server, "aws").await;
    drop(syncer);
    fake.stop();
    server.stop().await;
}

/// The fake stays as strict as kube-apiserver: a `trafficDistribution`
/// value 1.37 does not support is refused, so no test can rely on one.
#[tokio::test]
#[should_panic(expected = "spec.trafficDistribution: Unsupported value")]
async fn the_fake_refuses_a_traffic_distribution_kube_apiserver_refuses() {
    let fake = FakeKube::start().await;
    let svc = service("shop", "web", &[EXPORT], &[], Some("10.96.0.10"));
    fake.apply(
        Res::Services,
        with_traffic_distribution(svc, "PreferSameRack"),
    );
}

/// `--provider` wins over what the Nodes say; without `--announce-nodes`
/// no node address goes out (the node tier is opt-in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_flag_wins_over_node_labels() {
    let (fake, server, dir) = two_nodes("syncer-provider", ["aws", "gcp"]).await;
    let syncer = start_syncer(&fake, &server, &dir, &["--provider", "onprem-fra"]).await;
    let cluster = wait_provider(&server, "onprem-fra").await;
    assert_eq!(cluster.nodes.len(), 0, "{cluster:?}");
    assert!(
        cluster.client_cidrs.contains(&"192.168.10.1/32".to_owned()),
        "the Nodes still give client CIDRs: {cluster:?}"
    );
    let status = syncer.status().await;
    assert_eq!(
        (
            &status["exported"]["provider"],
            &status["exported"]["nodes"]
        ),
        (&Value::from("onprem-fra"), &Value::from(0)),
        "{status}"
    );
    drop(syncer);
    fake.stop();
    server.stop().await;
}

/// With `--client-cidr`, `--region` and `--zone` given, Nodes are not
/// watched for the provider alone: their label is read once at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_label_alone_is_read_once_not_watched() {
    let (fake, server, dir) = two_nodes("syncer-provider-once", ["aws", "aws"]).await;
    let flags = [
        "--client-cidr",
        "10.1.0.0/16",
        "--region",
        "us-east",
        "--zone",
        "us-east-1a",
    ];
    let syncer = start_syncer(&fake, &server, &dir, &flags).await;
    let cluster = wait_provider(&server, "aws").await;
    assert_eq!(cluster.client_cidrs, ["10.1.0.0/16"], "{cluster:?}");
    let status = syncer.status().await;
    let watchers = strings(&status["source"]["watchers"]);
    assert_eq!(watchers, ["endpointslices", "services"], "{status}");
    drop(syncer);
    fake.stop();
    server.stop().await;
}

/// The hub's counter `line` (`name{labels}`), 0 before it exists.
async fn counter(server: &TestServer, line: &str) -> u64 {
    let (_, text) = http_get(server.admin, "/metrics").await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Node churn with `--announce-nodes`: each announcement is a new export
/// stream (and a full snapshot at the hub), so changes are gathered and
/// announced at most once per `--node-announce-interval`, the last state
/// winning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_churn_reconnects_at_most_once_per_interval() {
    const INTERVAL: Duration = Duration::from_secs(4);
    let opened = "meshdns_export_stream_events_total{event=\"opened\"}";
    let fake = FakeKube::start().await;
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("syncer-node-churn");
    let ip = |i: usize| format!("192.168.10.{i}");
    fake.apply(Res::Nodes, provider_node("node-1", &ip(1), "aws"));
    let flags = [
        "--announce-nodes",
        "--node-announce-interval",
        "4s",
        "--client-cidr",
        "10.1.0.0/16",
        "--region",
        "us-east",
        "--zone",
        "us-east-1a",
        "--provider",
        "aws",
    ];
    let syncer = start_syncer(&fake, &server, &dir, &flags).await;
    let node_count = |want: usize| {
        let url = server.grpc_url();
        async move {
            let c = list_clusters(url).await?.into_iter().next()?;
            (c.nodes.len() == want).then_some(())
        }
    };
    eventually(Duration::from_secs(20), "the first node", || node_count(1)).await;
    let before = counter(&server, opened).await;
    assert!(before >= 1);
    // Five Nodes join, each seen on its own (apart by more than the
    // source's 50ms coalescing).
    let started = std::time::Instant::now();
    for i in 2..=6 {
        fake.apply(
            Res::Nodes,
            provider_node(&format!("node-{i}"), &ip(i), "aws"),
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(Duration::from_secs(30), "all six nodes", || node_count(6)).await;
    let elapsed = started.elapsed();
    let reconnects = counter(&server, opened).await - before;
    // One per interval begun since the first change (the first one may
    // go out at once after a quiet interval), and not one per Node.
    let allowed = 1 + (elapsed.as_secs_f64() / INTERVAL.as_secs_f64()).floor() as u64;
    println!("{reconnects} reconnects for 5 node changes in {elapsed:?}");
    assert!(
        (1..=allowed).contains(&reconnects),
        "{reconnects} reconnects in {elapsed:?} (at most {allowed})"
    );
    drop(syncer);
    fake.stop();
    server.stop().await;
}

/// One `PUT` with a bearer token to the registration API: its status.
async fn put(api: std::net::SocketAddr, path: &str, token: &str, body: Value) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(api).await else {
        return 0;
    };
    let body = body.to_string();
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: {api}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return 0;
    }
    let mut reply = String::new();
    let _ = stream.read_to_string(&mut reply).await;
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The file source: per endpoint and per service weights, `--weight`,
/// the policy fields, the provider and nodes, and a registered gateway's
/// weight, over the wire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_weights_and_policy_reach_the_hub() {
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("syncer-policy-file");
    let file = dir.write(
        "east-1.yaml",
        r#"
cluster: east-1
region: us-east
provider: aws
clientCIDRs: [127.0.0.2/32]
nodes: [{name: node-1, addresses: [10.1.255.1]}]
services:
  - name: web
    namespace: shop
    weight: 30
    failover: [us-west, "provider:gcp"]
    minHealthy: 2
    exportTo: "east-1, zone:us-east-1a"
    ports: [{port: 80}]
    endpoints:
      - {ip: 10.1.0.11}
      - {ip: 10.1.0.12, weight: 0}
      - {ip: 10.1.0.13, weight: 90}
  - name: api
    namespace: shop
    ports: [{port: 80}]
    endpoints: [{ip: 10.1.0.21}]
"#,
    );
    dir.write("tokens", "gateway-token-0001 shop/web\n");
    let tokens = dir.path().join("tokens").display().to_string();
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], meshdns_tests::free_port()));
    let api_flag = api.to_string();
    let syncer = TestSyncer::start(
        &file,
        &[server.grpc_url()],
        &[
            "--weight",
            "15",
            "--registration-listen",
            &api_flag,
            "--registration-token-file",
            &tokens,
            "--registration-cidrs",
            "10.9.0.0/24",
        ],
    );
    let web = wait_export(&server, "web").await;
    assert_eq!(weights(&web), vec![30, 0, 90], "{web}");
    assert_eq!(
        strings(&web["failover"]),
        ["region:us-west", "provider:gcp"],
        "{web}"
    );
    assert_eq!(web["min_healthy"], "2", "{web}");
    assert_eq!(
        strings(&web["export_to"]),
        ["cluster:east-1", "zone:us-east-1a"],
        "{web}"
    );
    let api_export = wait_export(&server, "api").await;
    assert_eq!(weights(&api_export), vec![15], "--weight: {api_export}");
    // A gateway with four backends behind it registers with their weight;
    // a weight over the bound is refused.
    let gateway = |weight: u64| {
        serde_json::json!({
            "addresses": ["10.9.0.40"],
            "ports": [{"port": 80}],
            "ttl_seconds": 60,
            "weight": weight,
        })
    };
    let refused = eventually(
        Duration::from_secs(20),
        "the registration API",
        || async move {
            let status = put(
                api,
                "/v1/registrations/shop/web/gw-1",
                "gateway-token-0001",
                gateway(10_001),
            )
            .await;
            (status != 0).then_some(status)
        },
    )
    .await;
    assert_eq!(refused, 400);
    assert_eq!(
        put(
            api,
            "/v1/registrations/shop/web/gw-1",
            "gateway-token-0001",
            gateway(40)
        )
        .await,
        201
    );
    // An instance that gives no weight weighs what `--weight` says.
    let mut plain = gateway(0);
    plain["addresses"] = serde_json::json!(["10.9.0.41"]);
    plain.as_object_mut().unwrap().remove("weight");
    assert_eq!(
        put(
            api,
            "/v1/registrations/shop/web/vm-1",
            "gateway-token-0001",
            plain
        )
        .await,
        201
    );
    eventually(
        Duration::from_secs(20),
        "the registered weights at the hub",
        || async {
            let web = wait_export(&server, "web").await;
            (weights(&web) == vec![30, 0, 90, 40, 15]).then_some(())
        },
    )
    .await;
    let cluster = wait_provider(&server, "aws").await;
    assert_eq!(cluster.nodes.len(), 1, "{cluster:?}");
    assert_eq!(cluster.nodes[0].addresses, vec!["10.1.255.1".to_owned()]);
    syncer.stop().await;
    server.stop().await;
}
