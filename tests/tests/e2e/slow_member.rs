//! Export bodies sent slowly, over a real socket with a hand-built client
//! (`RawExport`): a message started and never finished is cut off at
//! `--export-message-timeout` with DEADLINE_EXCEEDED naming the flag; a
//! first message too big for a Hello is refused at its header, before its
//! bytes arrive; a member that is slow but within the bound is served.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use meshdns_proto::fixtures;
use meshdns_proto::wire::{self, export_request::Message as Req};
use meshdns_tests::TestServer;
use meshdns_tests::dns::{Ask, addresses, query, sorted};
use meshdns_tests::export_stream::{ExportStream, hello};
use meshdns_tests::raw_export::{RawExport, framed, request};

/// Long enough for any loaded machine to answer what is expected at once.
const PATIENCE: Duration = Duration::from_secs(30);

fn snapshot(name: &str, addresses: &[&str]) -> Req {
    Req::Snapshot(wire::Snapshot {
        services: vec![fixtures::wire_service(
            "shop",
            name,
            addresses.iter().map(|a| fixtures::wire_endpoint(*a)),
        )],
        more: false,
    })
}

async fn a(server: &TestServer, name: &str) -> Vec<String> {
    addresses(&query(server.dns, &Ask::new(name, RecordType::A).tcp()).await)
}

#[tokio::test]
async fn a_message_started_and_never_finished_is_cut_off_naming_the_flag() {
    let server = TestServer::start(&["--export-message-timeout", "500ms"]).await;
    let mut good = ExportStream::open(server.grpc_url(), Req::Hello(hello("good")))
        .await
        .unwrap();
    let mut slow = RawExport::said_hello(server.grpc_url(), "slow").await;
    // Half a Snapshot, then nothing: the connection stays open.
    let bytes = framed(&request(2, snapshot("web", &["10.9.0.1", "10.9.0.2"])));
    assert!(slow.write(bytes[..bytes.len() / 2].to_vec()).await);
    let err = tokio::time::timeout(PATIENCE, slow.next())
        .await
        .expect("cut off within the test's patience")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert!(
        err.message().contains("--export-message-timeout"),
        "{err:?}"
    );
    assert!(err.message().contains("bytes arrived"), "{err:?}");
    // Nothing of it applied; another member is served as before.
    let r = good
        .send(snapshot("api", &["10.1.0.1", "10.1.0.2"]))
        .await
        .unwrap();
    assert!(r.refusals.is_empty(), "{:?}", r.refusals);
    assert_eq!(
        a(&server, "api.shop.global").await,
        sorted(&["10.1.0.1", "10.1.0.2"])
    );
    assert!(a(&server, "web.shop.global").await.is_empty());
    let (_, metrics) = meshdns_tests::http_get(server.admin, "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains("meshdns_export_stream_events_total{event=\"message_timeout\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_first_message_too_big_for_a_hello_is_refused_at_its_header() {
    // The Hello timeout is longer than the test's patience: the refusal
    // must come from the announced length, not from waiting.
    let server = TestServer::start(&["--hello-timeout", "120s"]).await;
    let mut raw = RawExport::open(server.grpc_url()).await.unwrap();
    let mut header = vec![0];
    header.extend_from_slice(&(1u32 << 20).to_be_bytes());
    assert!(raw.write(header).await);
    let err = tokio::time::timeout(PATIENCE, raw.next())
        .await
        .expect("refused without waiting for its bytes")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("must be a Hello"), "{err:?}");
    server.stop().await;
}

#[tokio::test]
async fn a_slow_member_within_the_bound_is_served() {
    let server = TestServer::start(&["--export-message-timeout", "5s"]).await;
    let mut slow = RawExport::said_hello(server.grpc_url(), "slow").await;
    // Idle between messages for longer than the bound: that is not what
    // it bounds (heartbeats and the cluster TTL are).
    tokio::time::sleep(Duration::from_secs(6)).await;
    // Then a Snapshot in ten pieces, a little at a time.
    let bytes = framed(&request(2, snapshot("web", &["10.9.0.1", "10.9.0.2"])));
    for piece in bytes.chunks(bytes.len().div_ceil(10)) {
        assert!(slow.write(piece.to_vec()).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ack = tokio::time::timeout(PATIENCE, slow.next())
        .await
        .expect("answered")
        .unwrap()
        .expect("an acknowledgement");
    assert_eq!(ack.generation, 2);
    assert!(ack.refusals.is_empty(), "{:?}", ack.refusals);
    assert_eq!(
        a(&server, "web.shop.global").await,
        sorted(&["10.9.0.1", "10.9.0.2"])
    );
    server.stop().await;
}

/// The RPCs other than Export take an empty request or one service key:
/// a request over 16 KiB is refused from its length prefix, before the
/// registry buffers it or knows who sent it, and the same client is
/// served normally afterwards.
#[tokio::test]
async fn an_oversized_small_request_is_refused_before_it_is_read() {
    let server = TestServer::start(&[]).await;
    let mut client = wire::registry_client::RegistryClient::connect(server.grpc_url())
        .await
        .unwrap();
    let huge = wire::GetServiceRequest {
        key: Some(wire::ServiceKey {
            namespace: "a".repeat(64 * 1024),
            name: "web".into(),
        }),
    };
    let err = tokio::time::timeout(Duration::from_secs(10), client.get_service(huge))
        .await
        .expect("refused at once, not read to the end")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("16384"), "{err:?}");
    let listed = tokio::time::timeout(
        Duration::from_secs(10),
        client.list_clusters(wire::ListClustersRequest {}),
    )
    .await
    .unwrap();
    assert!(listed.is_ok(), "{listed:?}");
    server.stop().await;
}
