//! What every client together can make the hub hold, over real sockets:
//! the Export byte budget (`--max-export-bytes-in-flight`) shared by all
//! streams, and the gRPC connection caps (`--max-grpc-connections`,
//! `--max-grpc-connections-per-source`).

use std::time::Duration;

use hickory_proto::rr::RecordType;
use meshdns_proto::fixtures;
use meshdns_proto::wire::{self, export_request::Message as Req};
use meshdns_tests::TestServer;
use meshdns_tests::dns::{Ask, addresses, query};
use meshdns_tests::raw_export::{RawExport, framed, request};
use prost::Message as _;

/// Long enough for any loaded machine to answer what is expected at once.
const PATIENCE: Duration = Duration::from_secs(30);

/// The budget, and the largest message: one message fills it.
const BUDGET: usize = 256 * 1024;

/// A metric's value on `/metrics` (0 when absent).
async fn metric(server: &TestServer, name: &str) -> f64 {
    let (_, text) = meshdns_tests::http_get(server.admin, "/metrics")
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_stalled_stream_holding_the_budget_does_not_stop_an_honest_snapshot() {
    let budget = BUDGET.to_string();
    let server = TestServer::start(&[
        "--max-grpc-message-bytes",
        &budget,
        "--max-export-bytes-in-flight",
        &budget,
        "--export-message-timeout",
        "1s",
    ])
    .await;
    let mut hostile = RawExport::said_hello(server.grpc_url(), "hostile").await;
    let mut honest = RawExport::said_hello(server.grpc_url(), "honest").await;
    // The hostile stream announces a message that takes the whole budget,
    // sends a few bytes of it and stalls.
    let mut header = vec![0];
    header.extend_from_slice(&u32::try_from(BUDGET).unwrap().to_be_bytes());
    header.extend_from_slice(&[0; 100]);
    assert!(hostile.write(header).await);
    let reserved = "meshdns_export_bytes_reserved";
    let started = tokio::time::Instant::now();
    while metric(&server, reserved).await < BUDGET as f64 {
        assert!(
            started.elapsed() < PATIENCE,
            "the hostile stream never reserved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // An honest Snapshot bigger than a heartbeat and than a DATA frame
    // (16 KiB: one whole in the frame that carries its header is already
    // held, and needs no reservation) must wait for the budget.
    let addresses_sent: Vec<String> = (0..2000)
        .map(|i| format!("10.7.{}.{}", i / 200, i % 200 + 1))
        .collect();
    let snapshot = request(
        2,
        Req::Snapshot(wire::Snapshot {
            services: vec![fixtures::wire_service(
                "shop",
                "web",
                addresses_sent
                    .iter()
                    .map(|a| fixtures::wire_endpoint(a.as_str())),
            )],
            more: false,
        }),
    );
    let len = snapshot.encoded_len();
    assert!(len > 16 * 1024 && len < BUDGET, "{len}");
    assert!(honest.write(framed(&snapshot)).await);
    // Meanwhile the budget is never over: sampled until the honest
    // Snapshot is acknowledged.
    let acked = tokio::spawn(async move {
        let ack = tokio::time::timeout(PATIENCE, honest.next()).await;
        (ack, honest)
    });
    while !acked.is_finished() {
        let now = metric(&server, reserved).await;
        assert!(
            now <= BUDGET as f64,
            "{now} bytes reserved, over the budget"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ack, _honest) = acked.await.unwrap();
    let ack = ack
        .expect("the honest Snapshot is applied once the hostile stream is cut off")
        .unwrap()
        .expect("an acknowledgement");
    assert!(ack.refusals.is_empty(), "{:?}", ack.refusals);
    // It waited for the budget, and the hostile stream was cut off by its
    // deadline (not by the wait) with its reservation given back.
    assert_eq!(
        metric(&server, "meshdns_export_budget_waits_total").await,
        1.0
    );
    let err = tokio::time::timeout(PATIENCE, hostile.next())
        .await
        .expect("the hostile stream is ended")
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    assert_eq!(metric(&server, reserved).await, 0.0);
    let answered = addresses(
        &query(
            server.dns,
            &Ask::new("web.shop.global", RecordType::A).tcp(),
        )
        .await,
    );
    assert!(!answered.is_empty(), "the honest Snapshot is answered");
    server.stop().await;
}

#[tokio::test]
async fn a_budget_smaller_than_a_message_is_refused_at_startup() {
    let args = meshdns::config::ServeArgs::from_flags(&[
        "--insecure",
        "--max-grpc-message-bytes",
        "1048576",
        "--max-export-bytes-in-flight",
        "1048575",
    ])
    .unwrap();
    let e = args.config().unwrap_err().to_string();
    assert!(e.contains("--max-export-bytes-in-flight"), "{e}");
    assert!(e.contains("--max-grpc-message-bytes"), "{e}");
}

/// Whether the hub closed `stream` (rather than leaving it open).
async fn closed(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_millis(500), stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn grpc_connections_over_the_per_source_cap_are_closed_on_accept() {
    let server = TestServer::start(&["--max-grpc-connections-per-source", "2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(server.grpc).await.unwrap());
    }
    let mut third = tokio::net::TcpStream::connect(server.grpc).await.unwrap();
    assert!(
        closed(&mut third).await,
        "a third connection from one address"
    );
    assert!(!closed(&mut held[0]).await, "the first two stay open");
    assert!(
        meshdns_tests::list_clusters(server.grpc_url())
            .await
            .is_none(),
        "a gRPC client over the cap"
    );
    assert!(metric(&server, "meshdns_grpc_refused_per_source_total").await >= 2.0);
    held.pop();
    let started = tokio::time::Instant::now();
    while meshdns_tests::list_clusters(server.grpc_url())
        .await
        .is_none()
    {
        assert!(
            started.elapsed() < PATIENCE,
            "a closed connection frees its slot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn grpc_connections_over_the_total_cap_wait_to_be_accepted() {
    let server = TestServer::start(&["--max-grpc-connections", "2"]).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(tokio::net::TcpStream::connect(server.grpc).await.unwrap());
    }
    let started = tokio::time::Instant::now();
    while metric(&server, "meshdns_grpc_connections").await < 2.0 {
        assert!(started.elapsed() < PATIENCE, "the two are accepted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let url = server.grpc_url();
    let waiting = tokio::spawn(async move { meshdns_tests::list_clusters(url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a third is not served while two are open"
    );
    held.pop();
    let clusters = tokio::time::timeout(PATIENCE, waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(clusters.is_some(), "served once a slot is free");
    server.stop().await;
}
