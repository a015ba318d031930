//! Syncers and registries over real gRPC: file changes reach answers,
//! restarts on either side lose and duplicate nothing, and one dead
//! registry does not hold back another.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, query, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{TestServer, TestSyncer, eventually};

const ONE: &str = r#"
cluster: east-1
services:
  - name: web
    namespace: shop
    ports: [{name: http, port: 80}]
    endpoints: [{ip: 10.1.0.1}, {ip: 10.1.0.2}]
"#;

async fn answers(server: &TestServer, name: &str) -> (ResponseCode, Vec<String>) {
    let m = query(server.dns, &Ask::new(name, RecordType::A)).await;
    (m.metadata.response_code, addresses(&m))
}

async fn wait_answers(server: &TestServer, name: &str, expected: &[&str]) {
    let want = (ResponseCode::NoError, sorted(expected));
    eventually(
        Duration::from_secs(10),
        &format!("{name} -> {expected:?}"),
        || {
            let want = want.clone();
            async move { (answers(server, name).await == want).then_some(()) }
        },
    )
    .await;
}

async fn wait_rcode(server: &TestServer, name: &str, rcode: ResponseCode) {
    eventually(
        Duration::from_secs(10),
        &format!("{name} -> {rcode}"),
        || async move { (answers(server, name).await.0 == rcode).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn file_changes_reach_answers() {
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("changes");
    let file = dir.write("east-1.yaml", ONE);
    let syncer = TestSyncer::start(&file, &[server.grpc_url()], &[]);
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.2"]).await;
    // Rewritten by rename (as kubectl, editors and config management do).
    dir.write(
        "east-1.yaml",
        &ONE.replace("{ip: 10.1.0.2}", "{ip: 10.1.0.3}"),
    );
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.3"]).await;
    // Edited in place.
    std::fs::write(
        &file,
        ONE.replace("{ip: 10.1.0.2}", "{ip: 10.1.0.4, ready: false}"),
    )
    .unwrap();
    wait_answers(&server, "web.shop.global", &["10.1.0.1"]).await;
    // A new service appears, then the first is removed.
    let two = format!(
        "{ONE}  - {{name: cart, namespace: shop, ports: [{{port: 80}}], endpoints: [{{ip: 10.1.9.9}}]}}\n"
    );
    dir.write("east-1.yaml", &two);
    wait_answers(&server, "cart.shop.global", &["10.1.9.9"]).await;
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.2"]).await;
    dir.write("east-1.yaml", "cluster: east-1\nservices:\n  - {name: cart, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.1.9.9}]}\n");
    wait_rcode(&server, "web.shop.global", ResponseCode::NXDomain).await;
    // A broken file keeps the last good state; fixing it applies.
    dir.write("east-1.yaml", "cluster: east-1\nservices: [\n");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        answers(&server, "cart.shop.global").await.1,
        sorted(&["10.1.9.9"])
    );
    dir.write("east-1.yaml", ONE);
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.2"]).await;
    wait_rcode(&server, "cart.shop.global", ResponseCode::NXDomain).await;
    syncer.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_restarted_syncer_resends_its_snapshot_without_duplicates() {
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("restart-syncer");
    let file = dir.write("east-1.yaml", ONE);
    let syncer = TestSyncer::start(&file, &[server.grpc_url()], &[]);
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.2"]).await;
    syncer.stop().await;
    // While it is down the file changes; the data stays as last sent.
    dir.write(
        "east-1.yaml",
        &ONE.replace("{ip: 10.1.0.2}", "{ip: 10.1.0.5}"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        answers(&server, "web.shop.global").await.1,
        sorted(&["10.1.0.1", "10.1.0.2"])
    );
    let syncer = TestSyncer::start(&file, &[server.grpc_url()], &[]);
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.5"]).await;
    // Exactly the file's endpoints over TCP too: nothing duplicated.
    let m = query(
        server.dns,
        &Ask::new("web.shop.global", RecordType::A).tcp(),
    )
    .await;
    assert_eq!(m.answers.len(), 2);
    syncer.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn a_syncer_survives_a_registry_restart() {
    let server = TestServer::start(&[]).await;
    let grpc = server.grpc;
    let dir = TempDir::new("restart-registry");
    let file = dir.write("east-1.yaml", ONE);
    let syncer = TestSyncer::start(&file, &[server.grpc_url()], &[]);
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.2"]).await;
    server.stop().await;
    // The registry is down; the source changes meanwhile.
    dir.write(
        "east-1.yaml",
        &ONE.replace("{ip: 10.1.0.2}", "{ip: 10.1.0.6}"),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new registry process on the same address starts empty and is
    // refilled by the syncer's reconnect Snapshot.
    let server = TestServer::start_at(grpc, &[]).await;
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.6"]).await;
    // And Deltas flow on the new stream.
    dir.write(
        "east-1.yaml",
        &ONE.replace("{ip: 10.1.0.2}", "{ip: 10.1.0.7}"),
    );
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.7"]).await;
    syncer.stop().await;
    server.stop().await;
}

#[tokio::test]
async fn each_registry_is_streamed_to_independently() {
    let a = TestServer::start(&[]).await;
    let b = TestServer::start(&[]).await;
    let b_grpc = b.grpc;
    b.stop().await;
    // A registry address where nothing listens (b, now stopped), and a live one.
    let dir = TempDir::new("fanout");
    let file = dir.write("east-1.yaml", ONE);
    let syncer = TestSyncer::start(&file, &[format!("http://{b_grpc}"), a.grpc_url()], &[]);
    wait_answers(&a, "web.shop.global", &["10.1.0.1", "10.1.0.2"]).await;
    dir.write(
        "east-1.yaml",
        &ONE.replace("{ip: 10.1.0.2}", "{ip: 10.1.0.8}"),
    );
    wait_answers(&a, "web.shop.global", &["10.1.0.1", "10.1.0.8"]).await;
    // The dead one comes back and catches up with a Snapshot.
    let b = TestServer::start_at(b_grpc, &[]).await;
    wait_answers(&b, "web.shop.global", &["10.1.0.1", "10.1.0.8"]).await;
    syncer.stop().await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn two_clusters_export_the_same_service() {
    let server = TestServer::start(&[]).await;
    let dir = TempDir::new("two");
    let east = dir.write("east.yaml", ONE);
    let west = dir.write(
        "west.yaml",
        &ONE.replace("east-1", "west-1").replace("10.1.", "10.3."),
    );
    let s1 = TestSyncer::start(&east, &[server.grpc_url()], &[]);
    let s2 = TestSyncer::start(&west, &[server.grpc_url()], &[]);
    wait_answers(
        &server,
        "web.shop.global",
        &["10.1.0.1", "10.1.0.2", "10.3.0.1", "10.3.0.2"],
    )
    .await;
    wait_answers(&server, "west-1.web.shop.global", &["10.3.0.1", "10.3.0.2"]).await;
    // One cluster withdraws the service: the other's endpoints remain.
    dir.write("west.yaml", "cluster: west-1\nservices: []\n");
    wait_answers(&server, "web.shop.global", &["10.1.0.1", "10.1.0.2"]).await;
    wait_rcode(&server, "west-1.web.shop.global", ResponseCode::NXDomain).await;
    s1.stop().await;
    s2.stop().await;
    server.stop().await;
}
