//! The fleet seen from inside each cluster (`--mcs-status`): two fake API
//! servers, a `meshdns-syncer` on each, one hub. ServiceImports appear in
//! both clusters, ServiceExport conditions say what the hub decided (a
//! port conflict named with its winner, a refusal with the registry's
//! reason, Unknown once the hub is gone longer than the TTL), label-mode
//! Services get Events with series counts, and a relist that changes
//! nothing writes nothing.

use std::time::Duration;

use meshdns_proto::wire;
use meshdns_tests::fake_kube::{
    FakeKube, Res, namespace, node, one_ready_slice, service, service_export, slice,
};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::kube_syncer::KubeSyncer;
use meshdns_tests::{Proc, TestServer, eventually, http_get};
use serde_json::{Value, json};

use crate::kubernetes::EXPORT;

const WAIT: Duration = Duration::from_secs(30);

/// A fake cluster: its Nodes (pod CIDR `10.<n>.0.0/24`) and the `shop`
/// namespace.
async fn cluster(n: u8) -> FakeKube {
    let fake = FakeKube::start().await;
    fake.apply(
        Res::Nodes,
        node(
            "node-1",
            &format!("10.{n}.0.0/24"),
            &format!("192.168.{n}.1"),
            "us-east",
            "us-east-1a",
        ),
    );
    fake.apply(Res::Namespaces, namespace("shop", &[]));
    fake
}

/// `web.shop` in a cluster, labelled for export, its endpoints' (target)
/// port `port`.
fn web(fake: &FakeKube, n: u8, port: u16, endpoints: usize) {
    fake.apply(
        Res::Services,
        service(
            "shop",
            "web",
            &[EXPORT],
            &[],
            Some(&format!("10.96.{n}.10")),
        ),
    );
    let eps: Vec<String> = (0..endpoints)
        .map(|i| format!("10.{n}.0.{}", 10 + i))
        .collect();
    let eps: Vec<_> = eps.iter().map(|a| (a.as_str(), true, None, None)).collect();
    let mut s = slice("shop", "web-a", "web", &eps);
    s["ports"][0]["port"] = json!(port);
    fake.apply(Res::EndpointSlices, s);
}

/// Service `ns/name` labelled for export, at `cluster_ip`, with one ready
/// pod at `pod`.
fn export_one(fake: &FakeKube, ns: &str, name: &str, cluster_ip: &str, pod: &str) {
    fake.apply(
        Res::Services,
        service(ns, name, &[EXPORT], &[], Some(cluster_ip)),
    );
    fake.apply(Res::EndpointSlices, one_ready_slice(ns, name, pod));
}

fn syncer(fake: &FakeKube, hub: &str, dir: &TempDir, name: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--max-backoff", "500ms", "--mcs-status"];
    args.extend_from_slice(extra);
    KubeSyncer {
        fake,
        dir: dir.path(),
        cluster: name,
        registry: hub,
    }
    .start(&args)
}

/// Waits until `check` holds for the object, and returns it.
async fn wait_object(
    fake: &FakeKube,
    res: Res,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    eventually(WAIT, what, || {
        let found = fake.get(res, "shop", "web").filter(|o| check(o));
        async move { found }
    })
    .await
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
}

fn has(obj: &Value, kind: &str, status: &str, reason: &str) -> bool {
    condition(obj, kind).is_some_and(|c| c["status"] == status && c["reason"] == reason)
}

fn clusters(import: &Value) -> Vec<String> {
    import["status"]["clusters"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["cluster"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn import_is(import: &Value, port: u64, exporters: &[&str]) -> bool {
    import["spec"]["type"] == "Headless"
        && import["spec"]["ports"] == json!([{"name": "http", "port": port, "protocol": "TCP"}])
        && clusters(import) == exporters
        && import["spec"].get("ips").is_none()
}

fn events(fake: &FakeKube, reason: &str) -> Vec<Value> {
    fake.objects(Res::Events)
        .into_iter()
        .filter(|e| e["reason"] == reason && e["involvedObject"]["name"] == "web")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_becomes_a_serviceimport_in_every_cluster_and_a_relist_writes_nothing() {
    let hub = TestServer::start(&[]).await;
    let dir = (TempDir::new("mcs-east"), TempDir::new("mcs-west"));
    let (east, west) = (cluster(1).await, cluster(2).await);
    web(&east, 1, 8080, 2);
    // Another implementation's ServiceImport, not the syncer's, of a
    // service the fleet exports too.
    west.apply(
        Res::ServiceImports,
        json!({"metadata": {"name": "db", "namespace": "shop"},
               "spec": {"type": "ClusterSetIP", "ports": [{"port": 5432, "protocol": "TCP"}]}}),
    );
    export_one(&east, "shop", "db", "10.96.1.12", "10.1.0.60");
    let _a = syncer(&east, &hub.grpc_url(), &dir.0, "east-1", &[]);
    let _b = syncer(&west, &hub.grpc_url(), &dir.1, "west-1", &[]);
    for fake in [&east, &west] {
        wait_object(
            fake,
            Res::ServiceImports,
            "the ServiceImport of web.shop",
            |i| import_is(i, 8080, &["east-1"]),
        )
        .await;
    }
    let import = east.get(Res::ServiceImports, "shop", "web").unwrap();
    assert_eq!(
        import["metadata"]["labels"]["app.kubernetes.io/managed-by"], "meshdns-syncer",
        "{import}"
    );
    // Both clusters export it: both are named.
    web(&west, 2, 8080, 1);
    for fake in [&east, &west] {
        wait_object(
            fake,
            Res::ServiceImports,
            "web.shop from both clusters",
            |i| import_is(i, 8080, &["east-1", "west-1"]),
        )
        .await;
    }
    // Each cluster's Event says its export went through.
    for fake in [&east, &west] {
        eventually(WAIT, "the Exported Event", || {
            let found = events(fake, "Exported").first().cloned();
            async move { found }
        })
        .await;
    }
    // db settled too: its ServiceImport in east, its Event.
    eventually(
        WAIT,
        "db's ServiceImport and Exported Event in east",
        || {
            let done = east.get(Res::ServiceImports, "shop", "db").is_some()
                && east
                    .objects(Res::Events)
                    .iter()
                    .any(|e| e["reason"] == "Exported" && e["involvedObject"]["name"] == "db");
            async move { done.then_some(()) }
        },
    )
    .await;
    // A relist of everything in both clusters: nothing changed, so
    // nothing is written. A new export made after it proves the writers
    // passed over the relisted state.
    let before = (east.attempts().len(), west.attempts().len());
    east.expire_watches();
    west.expire_watches();
    export_one(&east, "shop", "cart", "10.96.1.11", "10.1.0.50");
    for fake in [&east, &west] {
        eventually(WAIT, "the ServiceImport of cart.shop", || {
            let found = fake
                .get(Res::ServiceImports, "shop", "cart")
                .filter(|i| clusters(i) == ["east-1"]);
            async move { found }
        })
        .await;
    }
    for (fake, before) in [(&east, before.0), (&west, before.1)] {
        let new: Vec<_> = fake.attempts()[before..].to_vec();
        assert!(
            new.iter()
                .all(|w| w.name == "cart" || w.name.starts_with("cart.")),
            "a relist that changed nothing wrote: {new:?}"
        );
        let imports = new
            .iter()
            .filter(|w| w.path.contains("/serviceimports"))
            .count();
        assert_eq!(imports, 2, "cart's create and status: {new:?}");
    }
    // The last export goes: the ServiceImport goes from both clusters.
    east.delete(Res::Services, "shop", "cart");
    for fake in [&east, &west] {
        eventually(WAIT, "cart.shop's ServiceImport deleted", || {
            let gone = fake.get(Res::ServiceImports, "shop", "cart").is_none();
            async move { gone.then_some(()) }
        })
        .await;
    }
    // An object the syncer did not create is never touched, not even
    // tried (east's own db ServiceImport proves the view holds db).
    assert!(
        east.get(Res::ServiceImports, "shop", "db")
            .is_some_and(|i| clusters(&i) == ["east-1"])
    );
    let foreign = west.get(Res::ServiceImports, "shop", "db").unwrap();
    assert_eq!(foreign["spec"]["ports"][0]["port"], 5432, "{foreign}");
    assert!(
        west.attempts()
            .iter()
            .all(|w| !(w.name == "db" && w.path.contains("/serviceimports"))),
        "{:?}",
        west.attempts()
    );
}

/// The hub's resolved import of `<name>.shop`.
async fn resolved(hub: &TestServer, name: &str) -> Option<wire::ServiceImport> {
    let mut client = wire::registry_client::RegistryClient::connect(hub.grpc_url())
        .await
        .ok()?;
    client
        .get_service(wire::GetServiceRequest {
            key: Some(wire::ServiceKey {
                namespace: "shop".into(),
                name: name.into(),
            }),
        })
        .await
        .ok()?
        .into_inner()
        .resolved
}

async fn metric(hub: &TestServer, series: &str) -> Option<f64> {
    let text = http_get(hub.admin, "/metrics").await.ok()?.1;
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().last()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_conflict_names_the_field_and_the_winner_and_clears_when_fixed() {
    let hub = TestServer::start(&[]).await;
    let dir = (TempDir::new("mcs-east"), TempDir::new("mcs-west"));
    let (east, west) = (cluster(1).await, cluster(2).await);
    // --mcs: ServiceExports name the Services (no label needed).
    for (fake, n) in [(&east, 1u8), (&west, 2)] {
        fake.apply(Res::ServiceExports, service_export("shop", "web"));
        fake.apply(
            Res::Services,
            service("shop", "web", &[], &[], Some(&format!("10.96.{n}.10"))),
        );
    }
    let mut s = one_ready_slice("shop", "web", "10.1.0.10");
    s["ports"][0]["port"] = json!(8080);
    east.apply(Res::EndpointSlices, s);
    let _a = syncer(&east, &hub.grpc_url(), &dir.0, "east-1", &["--mcs"]);
    wait_object(
        &east,
        Res::ServiceExports,
        "east's export Accepted (Valid) and Exported",
        |e| {
            has(e, "Valid", "True", "Valid")
                && has(e, "Accepted", "True", "Accepted")
                && has(e, "Exported", "True", "Exported")
                && has(e, "Conflict", "False", "NoConflicts")
                && has(e, "Conflicted", "False", "NoConflicts")
                && condition(e, "Ready").is_none()
        },
    )
    .await;
    // West exports it later, on another port: west is in conflict, east won.
    let mut s = one_ready_slice("shop", "web", "10.2.0.10");
    s["ports"][0]["port"] = json!(9090);
    west.apply(Res::EndpointSlices, s);
    let _b = syncer(&west, &hub.grpc_url(), &dir.1, "west-1", &["--mcs"]);
    let export = wait_object(&west, Res::ServiceExports, "west's Conflict=True", |e| {
        has(e, "Conflict", "True", "PortConflict") && has(e, "Conflicted", "True", "PortConflict")
    })
    .await;
    let message = condition(&export, "Conflict").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("ports")
            && message.contains("east-1")
            && message.contains("9090")
            && message.contains("8080"),
        "the message names the field, the winner and both values: {message}"
    );
    assert_eq!(
        condition(&export, "Conflict").unwrap()["observedGeneration"],
        export["metadata"]["generation"]
    );
    // The clusterset uses east's ports; both clusters are listed.
    wait_object(
        &west,
        Res::ServiceImports,
        "west's ServiceImport with east's port",
        |i| import_is(i, 8080, &["east-1", "west-1"]),
    )
    .await;
    let view = resolved(&hub, "web")
        .await
        .expect("GetService resolves web.shop");
    assert_eq!(view.conflicts.len(), 1, "{view:?}");
    assert_eq!(
        (
            view.conflicts[0].cluster.as_str(),
            view.conflicts[0].field.as_str(),
            view.conflicts[0].winner.as_str()
        ),
        ("west-1", "ports", "east-1")
    );
    assert_eq!(
        metric(&hub, "meshdns_service_conflicts{field=\"ports\"}").await,
        Some(1.0)
    );
    // `meshdns status --service` shows the resolution and the conflict.
    let out = std::process::Command::new(meshdns_tests::bin("meshdns"))
        .args([
            "status",
            "--insecure",
            "--registry",
            &hub.grpc_url(),
            "--service",
            "web.shop",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("oldest export first: east-1, west-1")
            && text
                .lines()
                .any(|l| l.starts_with("conflict: west-1 ports (winner east-1)")),
        "{text}"
    );
    // East, the winner, is not in conflict.
    let east_export = east.get(Res::ServiceExports, "shop", "web").unwrap();
    assert!(
        has(&east_export, "Conflict", "False", "NoConflicts"),
        "{east_export}"
    );
    // Fixed: the conflict clears, its transition time moves.
    let raised_at = condition(&export, "Conflict").unwrap()["lastTransitionTime"].clone();
    let mut s = one_ready_slice("shop", "web", "10.2.0.10");
    s["ports"][0]["port"] = json!(8080);
    west.apply(Res::EndpointSlices, s);
    let export = wait_object(&west, Res::ServiceExports, "west's conflict cleared", |e| {
        has(e, "Conflict", "False", "NoConflicts")
    })
    .await;
    let cleared_at = &condition(&export, "Conflict").unwrap()["lastTransitionTime"];
    assert!(cleared_at.is_string() && raised_at.is_string(), "{export}");
    eventually(WAIT, "the conflicts gauge back to 0", || async {
        (metric(&hub, "meshdns_service_conflicts{field=\"ports\"}").await == Some(0.0))
            .then_some(())
    })
    .await;
    // Conditions are written through the status subresource only.
    assert!(
        west.writes()
            .iter()
            .filter(|w| w.res == Res::ServiceExports)
            .all(|w| w.status && w.verb == "update"),
        "{:?}",
        west.writes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_export_is_not_valid_with_the_registry_reason() {
    let hub = TestServer::start(&["--max-endpoints-per-service", "2"]).await;
    let dir = TempDir::new("mcs-east");
    let east = cluster(1).await;
    east.apply(Res::ServiceExports, service_export("shop", "web"));
    web(&east, 1, 8080, 3);
    let _a = syncer(&east, &hub.grpc_url(), &dir, "east-1", &["--mcs"]);
    let export = wait_object(
        &east,
        Res::ServiceExports,
        "Valid=False with the registry's reason",
        |e| has(e, "Valid", "False", "RegistryRefused"),
    )
    .await;
    let message = condition(&export, "Valid").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("--max-endpoints-per-service"), "{message}");
    assert!(has(&export, "Exported", "False", "Failed"), "{export}");
    assert!(
        has(&export, "Accepted", "False", "RegistryRefused"),
        "{export}"
    );
    // Within the limit: taken, valid.
    web(&east, 1, 8080, 2);
    wait_object(&east, Res::ServiceExports, "Valid=True once taken", |e| {
        has(e, "Valid", "True", "Valid") && has(e, "Exported", "True", "Exported")
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_gone_turns_conditions_unknown_after_the_ttl_and_deletes_nothing() {
    let hub = TestServer::start(&[]).await;
    let dir = TempDir::new("mcs-east");
    let east = cluster(1).await;
    east.apply(Res::ServiceExports, service_export("shop", "web"));
    // A ServiceExport naming no Service: a local verdict.
    east.apply(Res::ServiceExports, service_export("shop", "nothing"));
    web(&east, 1, 8080, 1);
    // A second, dead, registry: the errors of the outage alternate.
    let _a = syncer(
        &east,
        &hub.grpc_url(),
        &dir,
        "east-1",
        &[
            "--mcs",
            "--mcs-status-ttl",
            "1s",
            "--registry",
            "http://127.0.0.1:1",
        ],
    );
    wait_object(&east, Res::ServiceExports, "Exported=True", |e| {
        has(e, "Exported", "True", "Exported")
    })
    .await;
    wait_object(&east, Res::ServiceImports, "the ServiceImport", |i| {
        import_is(i, 8080, &["east-1"])
    })
    .await;
    hub.stop().await;
    let export = wait_object(&east, Res::ServiceExports, "every condition Unknown", |e| {
        ["Accepted", "Conflicted", "Exported", "Valid", "Conflict"]
            .iter()
            .all(|k| has(e, k, "Unknown", "RegistryUnreachable"))
    })
    .await;
    let message = condition(&export, "Exported").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("no registry has answered since"),
        "{message}"
    );
    // Written once: an outage of several TTLs, over two registries whose
    // errors differ, writes no status again.
    let before = east.attempts().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later: Vec<_> = east.attempts()[before..]
        .iter()
        .filter(|w| w.path.contains("/serviceexports"))
        .cloned()
        .collect();
    assert!(later.is_empty(), "rewritten during the outage: {later:?}");
    // The local verdict stays: there is still no Service.
    let nothing = east.get(Res::ServiceExports, "shop", "nothing").unwrap();
    assert!(has(&nothing, "Valid", "False", "NoService"), "{nothing}");
    // Nothing deleted, the ServiceImport unchanged.
    assert!(
        east.get(Res::ServiceImports, "shop", "web")
            .is_some_and(|i| import_is(&i, 8080, &["east-1"]))
    );
    assert!(
        east.attempts().iter().all(|w| w.verb != "delete"),
        "{:?}",
        east.attempts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_mode_emits_events_counted_in_series() {
    let state = TempDir::new("mcs-state");
    let state_file = state.path().join("state").display().to_string();
    let hub = TestServer::start(&["--state-file", &state_file]).await;
    let dir = (TempDir::new("mcs-east"), TempDir::new("mcs-west"));
    let (east, west) = (cluster(1).await, cluster(2).await);
    web(&east, 1, 8080, 1);
    let _a = syncer(&east, &hub.grpc_url(), &dir.0, "east-1", &[]);
    eventually(WAIT, "east's Exported Event", || {
        let found = events(&east, "Exported").first().cloned();
        async move { found }
    })
    .await;
    web(&west, 2, 9090, 1);
    let _b = syncer(&west, &hub.grpc_url(), &dir.1, "west-1", &[]);
    let conflict = eventually(WAIT, "west's ExportConflict Event", || {
        let found = events(&west, "ExportConflict").first().cloned();
        async move { found }
    })
    .await;
    assert_eq!(conflict["type"], "Warning");
    assert_eq!(conflict["count"], 1);
    assert!(
        conflict["message"].as_str().unwrap().contains("east-1"),
        "{conflict}"
    );
    assert!(conflict["involvedObject"]["uid"].is_string(), "{conflict}");
    // Fixed, broken again: the same Event counts up, no second object.
    web(&west, 2, 8080, 1);
    eventually(WAIT, "west's Exported Event", || {
        let found = events(&west, "Exported").first().cloned();
        async move { found }
    })
    .await;
    web(&west, 2, 9090, 1);
    eventually(WAIT, "west's ExportConflict counted twice", || {
        let found = events(&west, "ExportConflict");
        async move { (found.len() == 1 && found[0]["count"] == 2).then_some(()) }
    })
    .await;
    // East saw one Exported, once, whatever west did.
    let exported = events(&east, "Exported");
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0]["count"], 1, "{:?}", exported[0]);
    // The hub restarts: both syncers reconnect, nothing changed, so no
    // Event is written or counted up. A service exported after the
    // restart shows both writers passed over the new view.
    let before: Vec<Value> = [&east, &west]
        .iter()
        .flat_map(|f| f.objects(Res::Events))
        .collect();
    let grpc = hub.grpc;
    hub.stop().await;
    let hub = TestServer::start_at(grpc, &["--state-file", &state_file]).await;
    export_one(&east, "shop", "marker", "10.96.1.30", "10.1.0.30");
    for fake in [&east, &west] {
        eventually(WAIT, "the marker's ServiceImport after the restart", || {
            let found = fake.get(Res::ServiceImports, "shop", "marker");
            async move { found }
        })
        .await;
    }
    let after: Vec<Value> = [&east, &west]
        .iter()
        .flat_map(|f| f.objects(Res::Events))
        .filter(|e| e["involvedObject"]["name"] == "web")
        .collect();
    assert_eq!(before, after, "a reconnect wrote Events");
    drop(hub);
}

/// One HTTP/1.0 request to the fake with its token: status and JSON body.
async fn request(
    fake: &FakeKube,
    method: &str,
    path: &str,
    content_type: &str,
    body: &Value,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = if body.is_null() {
        String::new()
    } else {
        body.to_string()
    };
    let mut stream = tokio::net::TcpStream::connect(fake.addr).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {}\r\nAuthorization: Bearer fake-token\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        fake.addr,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    (code, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_api_server_refuses_the_writes_a_real_one_refuses() {
    let fake = cluster(1).await;
    let imports = "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/shop/serviceimports";
    let json_type = "application/json";
    let import = |name: &str| {
        json!({"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceImport",
               "metadata": {"name": name},
               "spec": {"type": "Headless", "ports": [{"port": 80, "protocol": "TCP"}]},
               "status": {"clusters": [{"cluster": "smuggled"}]}})
    };
    let reason = |r: &(u16, Value)| (r.0, r.1["reason"].as_str().unwrap_or_default().to_owned());
    // Refused creates.
    let r = request(&fake, "POST", imports, "text/plain", &import("web")).await;
    assert_eq!(reason(&r), (415, "UnsupportedMediaType".into()));
    let mut wrong_kind = import("web");
    wrong_kind["kind"] = json!("ServiceExport");
    assert_eq!(
        request(&fake, "POST", imports, json_type, &wrong_kind)
            .await
            .0,
        400
    );
    let mut nameless = import("web");
    nameless["metadata"] = json!({});
    assert_eq!(
        reason(&request(&fake, "POST", imports, json_type, &nameless).await),
        (422, "Invalid".into())
    );
    let elsewhere = "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/nowhere/serviceimports";
    assert_eq!(
        request(&fake, "POST", elsewhere, json_type, &import("web"))
            .await
            .0,
        404
    );
    // Created, without the status a create may not set.
    let (code, created) = request(&fake, "POST", imports, json_type, &import("web")).await;
    assert_eq!(code, 201, "{created}");
    assert!(created.get("status").is_none(), "{created}");
    assert_eq!(
        reason(&request(&fake, "POST", imports, json_type, &import("web")).await),
        (409, "AlreadyExists".into())
    );
    // Updates: resourceVersion required, a stale one is a 409 Conflict.
    let one = format!("{imports}/web");
    let mut next = created.clone();
    next["spec"]["ports"][0]["port"] = json!(8080);
    next["status"] = json!({"clusters": [{"cluster": "smuggled"}]});
    let mut no_rv = next.clone();
    no_rv["metadata"]["resourceVersion"] = json!("");
    assert_eq!(request(&fake, "PUT", &one, json_type, &no_rv).await.0, 422);
    let (code, updated) = request(&fake, "PUT", &one, json_type, &next).await;
    assert_eq!(code, 200);
    assert_eq!(updated["spec"]["ports"][0]["port"], 8080);
    assert!(
        updated.get("status").is_none(),
        "a main-resource write set the status: {updated}"
    );
    assert_eq!(updated["metadata"]["generation"], 2, "the spec changed");
    let stale = request(&fake, "PUT", &one, json_type, &next).await;
    assert_eq!(reason(&stale), (409, "Conflict".into()));
    assert!(
        stale.1["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );
    // Through /status: only the status changes.
    let mut status_write = updated.clone();
    status_write["status"] = json!({"clusters": [{"cluster": "east-1"}]});
    status_write["spec"]["ports"][0]["port"] = json!(1);
    let (code, with_status) = request(
        &fake,
        "PUT",
        &format!("{one}/status"),
        json_type,
        &status_write,
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(with_status["status"]["clusters"][0]["cluster"], "east-1");
    assert_eq!(
        with_status["spec"]["ports"][0]["port"], 8080,
        "a /status write changed the spec"
    );
    // Events have no status subresource.
    assert_eq!(
        request(
            &fake,
            "PUT",
            "/api/v1/namespaces/shop/events/x/status",
            json_type,
            &json!({})
        )
        .await
        .0,
        404
    );
    // Delete with a stale precondition: 409; then gone.
    let pre = json!({"preconditions": {"resourceVersion": "1"}});
    assert_eq!(request(&fake, "DELETE", &one, json_type, &pre).await.0, 409);
    let pre =
        json!({"preconditions": {"resourceVersion": with_status["metadata"]["resourceVersion"]}});
    assert_eq!(request(&fake, "DELETE", &one, json_type, &pre).await.0, 200);
    assert_eq!(
        request(&fake, "GET", &one, json_type, &Value::Null).await.0,
        404
    );
    // Only the accepted writes are counted.
    let verbs: Vec<(&str, bool)> = fake.writes().iter().map(|w| (w.verb, w.status)).collect();
    assert_eq!(
        verbs,
        [
            ("create", false),
            ("update", false),
            ("update", true),
            ("delete", false)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_of_many_services_writes_each_serviceimport_once() {
    const N: usize = 100;
    let hub = TestServer::start(&[]).await;
    let dir = (TempDir::new("mcs-east"), TempDir::new("mcs-west"));
    let (east, west) = (cluster(1).await, cluster(2).await);
    let endpoints = |fake: &FakeKube, i: usize, subnet: u8| {
        let address = format!("10.1.{subnet}.{}", i + 10);
        let name = format!("svc-{i}");
        fake.apply(
            Res::EndpointSlices,
            one_ready_slice("shop", &name, &address),
        );
    };
    for i in 0..N {
        let ip = format!("10.96.1.{}", i + 10);
        east.apply(
            Res::Services,
            service("shop", &format!("svc-{i}"), &[EXPORT], &[], Some(&ip)),
        );
        endpoints(&east, i, 0);
    }
    let _a = syncer(
        &east,
        &hub.grpc_url(),
        &dir.0,
        "east-1",
        &["--mcs-writes-per-second", "200"],
    );
    // West's writes go through a small bucket: 50 a second after 10.
    let started = std::time::Instant::now();
    let url = hub.grpc_url();
    let (_b, logs) = KubeSyncer {
        fake: &west,
        dir: dir.1.path(),
        cluster: "west-1",
        registry: &url,
    }
    .start_logged(&[
        "--mcs-status",
        "--mcs-writes-per-second",
        "50",
        "--mcs-write-burst",
        "10",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = logs.listening("admin listening").await;
    let import_writes = |fake: &FakeKube| {
        fake.writes()
            .iter()
            .filter(|w| w.res == Res::ServiceImports)
            .count()
    };
    let all_imported = |fake: &FakeKube| {
        fake.objects(Res::ServiceImports)
            .iter()
            .filter(|i| clusters(i) == ["east-1"])
            .count()
            == N
    };
    eventually(WAIT, "every ServiceImport in west", || {
        let done = all_imported(&west);
        async move { done.then_some(()) }
    })
    .await;
    eventually(WAIT, "every ServiceImport in east", || {
        let done = all_imported(&east);
        async move { done.then_some(()) }
    })
    .await;
    // One create and one status write each, no faster than the bucket.
    assert_eq!(import_writes(&west), 2 * N, "{:?}", west.writes());
    let least = Duration::from_secs_f64((2 * N - 10) as f64 / 50.0);
    assert!(
        started.elapsed() >= least,
        "{:?} for {} writes",
        started.elapsed(),
        2 * N
    );
    let text = http_get(admin, "/metrics").await.unwrap().1;
    let created = format!(
        "meshdns_syncer_mcs_writes_total{{verb=\"create\",resource=\"serviceimports\"}} {N}"
    );
    assert!(
        text.lines().any(|l| l == created),
        "{created} not in\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "meshdns_syncer_mcs_registry_up 1"),
        "{text}"
    );
    // A rollout: every service's pods replaced. Nothing a ServiceImport
    // shows changed, so nothing is written; a last new service shows the
    // writers passed over the whole rollout.
    for i in 0..N {
        endpoints(&east, i, 1);
    }
    export_one(&east, "shop", "marker", "10.96.2.1", "10.1.2.1");
    eventually(WAIT, "the marker's ServiceImport in west", || {
        let found = west.get(Res::ServiceImports, "shop", "marker");
        async move { found }
    })
    .await;
    // The marker's create and its status write are two writes: wait for
    // both, so the count below is not read between them.
    eventually(WAIT, "the marker's status write in west", || {
        let done = (import_writes(&west) >= 2 * N + 2).then_some(());
        async move { done }
    })
    .await;
    assert_eq!(
        import_writes(&west),
        2 * N + 2,
        "a rollout rewrote ServiceImports"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restart_keeps_the_oldest_export_the_winner() {
    let state = TempDir::new("mcs-state");
    let state_file = state.path().join("state").display().to_string();
    let hub = TestServer::start(&["--state-file", &state_file]).await;
    let grpc = hub.grpc;
    let url = hub.grpc_url();
    let dir = (TempDir::new("mcs-east"), TempDir::new("mcs-west"));
    let (first, second) = (cluster(1).await, cluster(2).await);
    // The older export's cluster sorts last by name: a restart that lost
    // the first-accepted times would hand the win to the newer one.
    web(&first, 1, 8080, 1);
    let _a = syncer(&first, &url, &dir.0, "zz-first", &[]);
    wait_object(
        &first,
        Res::ServiceImports,
        "zz-first's ServiceImport",
        |i| clusters(i) == ["zz-first"],
    )
    .await;
    web(&second, 2, 9090, 1);
    let _b = syncer(&second, &url, &dir.1, "aa-second", &[]);
    let winner = |view: &wire::ServiceImport| {
        view.conflicts
            .iter()
            .map(|c| (c.cluster.clone(), c.winner.clone()))
            .collect::<Vec<_>>()
    };
    let conflicted = [("aa-second".to_owned(), "zz-first".to_owned())];
    eventually(WAIT, "aa-second in conflict with zz-first", || async {
        resolved(&hub, "web")
            .await
            .filter(|v| winner(v) == conflicted)
    })
    .await;
    hub.stop().await;
    let hub = TestServer::start_at(grpc, &["--state-file", &state_file]).await;
    // Restored from the state file, then both syncers back: same winner.
    eventually(WAIT, "both clusters back after the restart", || async {
        resolved(&hub, "web")
            .await
            .filter(|v| v.clusters.len() == 2)
    })
    .await;
    let view = resolved(&hub, "web").await.unwrap();
    assert_eq!(winner(&view), conflicted, "{view:?}");
    wait_object(
        &second,
        Res::ServiceImports,
        "aa-second's ServiceImport with zz-first's port",
        |i| import_is(i, 8080, &["zz-first", "aa-second"]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_namespace_gets_a_serviceimport_only_when_asked_and_a_missing_service_is_not_valid()
 {
    let hub = TestServer::start(&[]).await;
    let dir = (
        TempDir::new("mcs-east"),
        TempDir::new("mcs-west"),
        TempDir::new("mcs-north"),
    );
    let (east, west, north) = (cluster(1).await, cluster(2).await, cluster(3).await);
    east.apply(Res::Namespaces, namespace("pay", &[]));
    export_one(&east, "pay", "api", "10.96.1.20", "10.1.0.20");
    // A ServiceExport naming no Service.
    east.apply(Res::ServiceExports, service_export("shop", "ghost"));
    web(&east, 1, 8080, 1);
    let _a = syncer(&east, &hub.grpc_url(), &dir.0, "east-1", &["--mcs"]);
    let _b = syncer(&west, &hub.grpc_url(), &dir.1, "west-1", &[]);
    let _c = syncer(
        &north,
        &hub.grpc_url(),
        &dir.2,
        "north-1",
        &["--mcs-create-namespaces"],
    );
    // North creates the namespace and the ServiceImport in it.
    eventually(WAIT, "pay/api's ServiceImport in north", || {
        let found = north
            .get(Res::ServiceImports, "pay", "api")
            .filter(|i| clusters(i) == ["east-1"]);
        async move { found }
    })
    .await;
    let ns = north
        .get(Res::Namespaces, "", "pay")
        .expect("namespace created");
    assert_eq!(
        ns["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "meshdns-syncer"
    );
    let ghost = eventually(WAIT, "ghost's Valid=False NoService", || {
        let found = east
            .get(Res::ServiceExports, "shop", "ghost")
            .filter(|e| has(e, "Valid", "False", "NoService"));
        async move { found }
    })
    .await;
    assert!(has(&ghost, "Exported", "False", "Failed"), "{ghost}");
    assert!(has(&ghost, "Accepted", "False", "NoService"), "{ghost}");
    // West has no namespace pay and was not asked to create it: no
    // ServiceImport, no namespace, no write there (once it has passed
    // over the view holding pay/api: web.shop came with it).
    eventually(WAIT, "shop/web's ServiceImport in west", || {
        let found = west.get(Res::ServiceImports, "shop", "web");
        async move { found }
    })
    .await;
    assert!(west.get(Res::Namespaces, "", "pay").is_none());
    assert!(west.get(Res::ServiceImports, "pay", "api").is_none());
    assert!(
        west.attempts()
            .iter()
            .all(|w| !w.path.contains("/namespaces/pay") && w.name != "pay"),
        "{:?}",
        west.attempts()
    );
}

/// A client of `hub` with the token `token` over plaintext.
async fn token_client(
    dir: &TempDir,
    hub: &TestServer,
    name: &str,
    token: &str,
) -> meshdns_proto::client::Client {
    let auth = meshdns_proto::client::ClientAuth {
        token_file: Some(dir.write(name, token)),
        insecure: true,
        ..Default::default()
    };
    auth.connect(&hub.grpc_url()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_holds_at_most_its_share_of_imports_streams_and_no_watch_slot() {
    let dir = TempDir::new("mcs-slots");
    let tokens = dir.write(
        "tokens",
        "east1-token-0123456789abcdef cluster:east-1\nreader-token-0123456789abcdef reader:follower\n",
    );
    let tokens = tokens.display().to_string();
    // One Watch slot in all: an imports stream taking it would starve
    // the follower.
    let hub = TestServer::start(&["--token-file", &tokens, "--max-watch-streams", "1"]).await;
    let mut east = token_client(&dir, &hub, "east", "east1-token-0123456789abcdef").await;
    let mut held = Vec::new();
    for _ in 0..meshdns::ingest::IMPORTS_PER_CLUSTER {
        held.push(
            east.watch_imports(wire::WatchImportsRequest {})
                .await
                .expect("a cluster's share of imports streams"),
        );
    }
    let refused = east
        .watch_imports(wire::WatchImportsRequest {})
        .await
        .expect_err("one imports stream more than the cluster's share");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--max-import-streams"),
        "{refused:?}"
    );
    let mut follower = token_client(&dir, &hub, "reader", "reader-token-0123456789abcdef").await;
    follower
        .watch(wire::WatchRequest::default())
        .await
        .expect("the follower's Watch still has its slot");
    drop(held);
    hub.stop().await;
}

/// `api.shop` in a cluster, labelled for export, one endpoint.
fn api(fake: &FakeKube, n: u8) {
    fake.apply(
        Res::Services,
        service(
            "shop",
            "api",
            &[EXPORT],
            &[],
            Some(&format!("10.96.{n}.20")),
        ),
    );
    let ep = format!("10.{n}.0.50");
    fake.apply(
        Res::EndpointSlices,
        one_ready_slice("shop", "api", ep.as_str()),
    );
}

/// East exports web, west exports api; the hub restarts (with `extra`)
/// while west's syncer is down, and west comes back a moment after east
/// reconnected: east's ServiceImport of west's api is never deleted.
async fn a_hub_restart_deletes_no_serviceimport(extra: &[&str]) {
    let mut flags = vec!["--cluster-ttl", "6s"];
    flags.extend_from_slice(extra);
    let hub = TestServer::start(&flags).await;
    let (grpc, url) = (hub.grpc, hub.grpc_url());
    let dir = (TempDir::new("mcs-east"), TempDir::new("mcs-west"));
    let (east, west) = (cluster(1).await, cluster(2).await);
    web(&east, 1, 8080, 1);
    east.apply(Res::ServiceExports, service_export("shop", "web"));
    api(&west, 2);
    let ttl = ["--mcs-status-ttl", "6s"];
    // East's TTL is shorter than the hub's warm-up: a syncer that took
    // the warming hub for an outage would turn its conditions Unknown.
    let _a = syncer(
        &east,
        &url,
        &dir.0,
        "east-1",
        &["--mcs-status-ttl", "3s", "--mcs"],
    );
    let b = syncer(&west, &url, &dir.1, "west-1", &ttl);
    eventually(WAIT, "east's ServiceImport of west's api", || {
        let found = east
            .get(Res::ServiceImports, "shop", "api")
            .filter(|i| clusters(i) == ["west-1"]);
        async move { found }
    })
    .await;
    wait_object(&east, Res::ServiceExports, "east's web Exported", |e| {
        has(e, "Exported", "True", "Exported")
    })
    .await;
    let before = east.attempts().len();
    hub.stop().await;
    drop(b);
    let hub = TestServer::start_at(grpc, &flags).await;
    // East is back first (its backoff is 500 ms); west a moment later.
    eventually(WAIT, "east exporting to the restarted hub", || async {
        resolved(&hub, "web")
            .await
            .filter(|v| !v.clusters.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _b = syncer(&west, &url, &dir.1, "west-1", &ttl);
    eventually(WAIT, "west back in the restarted hub's view", || async {
        let api = resolved(&hub, "api").await?;
        (api.clusters.len() == 1).then_some(())
    })
    .await;
    // Past both grace periods: a held deletion would have happened.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let deletes: Vec<_> = east
        .attempts()
        .into_iter()
        .filter(|w| w.verb == "delete")
        .collect();
    assert!(deletes.is_empty(), "{deletes:?}");
    // A hub that answers while it warms up is no outage: east's
    // conditions never turned Unknown, nothing was written.
    let statuses: Vec<_> = east.attempts()[before..]
        .iter()
        .filter(|w| w.path.contains("/serviceexports"))
        .cloned()
        .collect();
    assert!(statuses.is_empty(), "{statuses:?}");
    assert!(
        east.get(Res::ServiceImports, "shop", "api")
            .is_some_and(|i| clusters(&i) == ["west-1"])
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restarted_without_a_state_file_deletes_no_serviceimport() {
    a_hub_restart_deletes_no_serviceimport(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_restarted_with_its_state_file_deletes_no_serviceimport() {
    let state = TempDir::new("mcs-state");
    let state_file = state.path().join("state").display().to_string();
    a_hub_restart_deletes_no_serviceimport(&["--state-file", &state_file]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_api_server_keeps_refusing_backs_off() {
    let hub = TestServer::start(&["--cluster-ttl", "2s"]).await;
    let dir = (TempDir::new("mcs-east"), TempDir::new("mcs-west"));
    let (east, west) = (cluster(1).await, cluster(2).await);
    east.apply(Res::Namespaces, namespace("pay", &[]));
    export_one(&east, "pay", "api", "10.96.1.20", "10.1.0.20");
    // West's RBAC lacks namespaces create: every try is a 403.
    west.forbid(Res::Namespaces, "create", true);
    let _a = syncer(&east, &hub.grpc_url(), &dir.0, "east-1", &[]);
    let _b = syncer(
        &west,
        &hub.grpc_url(),
        &dir.1,
        "west-1",
        &["--mcs-create-namespaces"],
    );
    let tries = |fake: &FakeKube| {
        fake.attempts()
            .into_iter()
            .filter(|w| w.verb == "create" && w.name == "pay")
            .collect::<Vec<_>>()
    };
    eventually(WAIT, "west's first try to create pay", || {
        let first = tries(&west).first().cloned();
        async move { first }
    })
    .await;
    // 5 s of passes every 500 ms would be 10 tries; the per-object
    // backoff (500 ms doubling) allows 4 at most.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tried = tries(&west);
    assert!(tried.iter().all(|w| w.code == 403), "{tried:?}");
    assert!(tried.len() <= 4, "{} tries in 5 s: {tried:?}", tried.len());
}
