//! `serve --follow`: a replica mirroring another registry through Watch
//! answers the same names, takes liveness from its upstream, refuses
//! exports, keeps answering while its upstream is away, and converges when
//! it returns.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_proto::wire::{self, registry_client::RegistryClient};
use meshdns_tests::dns::{Ask, addresses, poll, query, sorted};
use meshdns_tests::{Fleet, TestServer, eventually};

const WEB: [&str; 4] = ["10.1.0.11", "10.1.0.12", "10.2.0.11", "10.3.0.11"];

async fn wait_web(server: &TestServer, from: &str, expected: &[&str]) {
    let (dns, want) = (server.dns, sorted(expected));
    eventually(
        Duration::from_secs(10),
        &format!("web.shop from {from} -> {expected:?}"),
        || {
            let want = want.clone();
            let ask = Ask::new("web.shop.global", RecordType::A).from(from);
            async move { (addresses(&poll(dns, &ask).await?) == want).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_follower_mirrors_its_upstream() {
    let mut fleet = Fleet::start(&["--cluster-ttl", "1s"]).await;
    let follower = TestServer::start(&["--follow", &fleet.server.grpc_url()]).await;
    wait_web(&follower, "127.0.0.1", &WEB).await;
    // Locality on the follower: the clusters' client CIDRs came along.
    wait_web(&follower, "127.0.0.4", &["10.3.0.11"]).await;
    let m = query(
        follower.dns,
        &Ask::new("db-0.east-1.db.data.global", RecordType::A),
    )
    .await;
    assert_eq!(addresses(&m), sorted(&["10.1.2.10"]));
    // Changes at the sources reach the follower.
    let text = std::fs::read_to_string(&fleet.files[1])
        .unwrap()
        .replace("{ip: 10.2.0.11}", "{ip: 10.2.0.99}");
    fleet.dir.write("east-2.yaml", &text);
    wait_web(
        &follower,
        "127.0.0.1",
        &["10.1.0.11", "10.1.0.12", "10.2.0.99", "10.3.0.11"],
    )
    .await;
    // Liveness comes from the upstream: a cluster it marks stale leaves
    // the follower's answers too.
    fleet.syncers.remove(2).stop().await;
    wait_web(
        &follower,
        "127.0.0.1",
        &["10.1.0.11", "10.1.0.12", "10.2.0.99"],
    )
    .await;
    // A follower takes no exports.
    let clusters = follower.clusters().await;
    let mut client = RegistryClient::connect(follower.grpc_url()).await.unwrap();
    assert_eq!(clusters.len(), 3);
    assert!(
        clusters
            .iter()
            .any(|c| c.name == "west-1" && c.state == wire::ClusterState::Stale as i32)
    );
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(wire::ExportRequest {
        generation: 1,
        message: Some(wire::export_request::Message::Hello(wire::Hello {
            cluster: "x".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let err = client
        .export(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .err()
        .expect("refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(err.message().contains("follows"), "{}", err.message());
    follower.stop().await;
    fleet.stop().await;
}

#[tokio::test]
async fn a_follower_survives_its_upstream() {
    let fleet = Fleet::start(&[]).await;
    let follower = TestServer::start(&["--follow", &fleet.server.grpc_url()]).await;
    wait_web(&follower, "127.0.0.1", &WEB).await;
    // The upstream dies (its syncers lose it too).
    let Fleet {
        server,
        syncers,
        dir,
        files,
    } = fleet;
    let grpc = server.grpc;
    server.stop().await;
    for _ in 0..20 {
        let m = query(follower.dns, &Ask::new("web.shop.global", RecordType::A)).await;
        assert_eq!(
            addresses(&m),
            sorted(&WEB),
            "answers from the last state while the upstream is away"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Meanwhile a source changes.
    let text = std::fs::read_to_string(&files[0])
        .unwrap()
        .replace("{ip: 10.1.0.12}", "{ip: 10.1.0.77}");
    dir.write("east-1.yaml", &text);
    // The upstream comes back; its syncers reconnect and the follower converges.
    let upstream = TestServer::start_at(grpc, &[]).await;
    wait_web(
        &follower,
        "127.0.0.1",
        &["10.1.0.11", "10.1.0.77", "10.2.0.11", "10.3.0.11"],
    )
    .await;
    let m = query(follower.dns, &Ask::new("nope.shop.global", RecordType::A)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    for s in syncers {
        s.stop().await;
    }
    follower.stop().await;
    upstream.stop().await;
}
