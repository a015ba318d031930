//! Limits with clear errors: over a limit, a refusal naming the flag,
//! counted in metrics, and everything else keeps working.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_proto::fixtures;
use meshdns_proto::wire::{self, export_request::Message as Req};
use meshdns_tests::TestServer;
use meshdns_tests::dns::{Ask, addresses, query, sorted};
use meshdns_tests::export_stream::{ExportStream, hello};
use tokio::io::AsyncReadExt;

fn service(name: &str, endpoints: usize) -> wire::ServiceExport {
    fixtures::wire_service(
        "shop",
        name,
        (0..endpoints).map(|i| wire::Endpoint {
            serving: true,
            ..fixtures::wire_endpoint(format!("10.{}.{}.{}", name.len(), i / 250, i % 250 + 1))
        }),
    )
}

/// Export streams whose Hello names the cluster only.
struct Stream;

impl Stream {
    async fn open(server: &TestServer, cluster: &str) -> Result<ExportStream, tonic::Status> {
        ExportStream::open(server.grpc_url(), Req::Hello(hello(cluster))).await
    }
}

async fn a(server: &TestServer, name: &str) -> (ResponseCode, Vec<String>) {
    let m = query(server.dns, &Ask::new(name, RecordType::A).tcp()).await;
    (m.metadata.response_code, addresses(&m))
}

#[tokio::test]
async fn services_and_endpoints_per_cluster() {
    let server = TestServer::start(&[
        "--max-services-per-cluster",
        "3",
        "--max-endpoints-per-service",
        "10",
        "--max-answers",
        "100",
    ])
    .await;
    let mut east = Stream::open(&server, "east-1").await.unwrap();
    let services = ["a", "bb", "ccc", "dddd", "eeeee"]
        .iter()
        .map(|n| service(n, 2))
        .collect();
    let r = east
        .send(Req::Snapshot(wire::Snapshot {
            services,
            more: false,
        }))
        .await
        .unwrap();
    let reasons: Vec<&str> = r.refusals.iter().map(|x| x.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("--max-services-per-cluster")),
        "{reasons:?}"
    );
    assert_eq!(a(&server, "a.shop.global").await.1.len(), 2);
    assert_eq!(a(&server, "ccc.shop.global").await.1.len(), 2);
    assert_eq!(
        a(&server, "dddd.shop.global").await.0,
        ResponseCode::NXDomain
    );
    // A Delta adding a fourth is refused; replacing one of the three is not.
    let r = east
        .send(Req::Delta(wire::Delta {
            upserts: vec![service("ffffff", 1), service("a", 3)],
            removals: vec![],
            observed_unix_ms: 0,
        }))
        .await
        .unwrap();
    assert_eq!(r.refusals.len(), 1);
    assert!(
        r.refusals[0].reason.contains("--max-services-per-cluster"),
        "{:?}",
        r.refusals
    );
    assert_eq!(a(&server, "a.shop.global").await.1.len(), 3);
    // Too many endpoints: refused, naming the limit; the last good version stays.
    let r = east
        .send(Req::Delta(wire::Delta {
            upserts: vec![service("a", 11)],
            removals: vec![],
            observed_unix_ms: 0,
        }))
        .await
        .unwrap();
    assert!(
        r.refusals[0]
            .reason
            .contains("11 endpoints is over the --max-endpoints-per-service limit (10)"),
        "{:?}",
        r.refusals
    );
    assert_eq!(a(&server, "a.shop.global").await.1.len(), 3);
    // Another cluster is not disturbed by east-1's limits.
    let mut west = Stream::open(&server, "west-1").await.unwrap();
    let r = west
        .send(Req::Snapshot(wire::Snapshot {
            services: vec![service("dddd", 1)],
            more: false,
        }))
        .await
        .unwrap();
    assert!(r.refusals.is_empty());
    assert_eq!(a(&server, "dddd.shop.global").await.1.len(), 1);
    // Counted.
    let (_, metrics) = meshdns_tests::http_get(server.admin, "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains("meshdns_export_refused_items_total{reason=\"limit_services\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("meshdns_export_refused_items_total{reason=\"limit_endpoints\"} 1"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn export_streams_and_message_size() {
    let server = TestServer::start(&[
        "--max-export-streams",
        "2",
        "--max-grpc-message-bytes",
        "20000",
    ])
    .await;
    let s1 = Stream::open(&server, "c-1").await.unwrap();
    let mut s2 = Stream::open(&server, "c-2").await.unwrap();
    let err = Stream::open(&server, "c-3")
        .await
        .err()
        .expect("third stream refused");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().contains("--max-export-streams"),
        "{}",
        err.message()
    );
    drop(s1);
    let started = Instant::now();
    let mut s3 = loop {
        match Stream::open(&server, "c-3").await {
            Ok(s) => break s,
            Err(_) if started.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("a freed slot was not reused: {e}"),
        }
    };
    // An oversized message ends that stream only.
    let err = s2
        .send(Req::Snapshot(wire::Snapshot {
            services: vec![service("big", 2000)],
            more: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("--max-grpc-message-bytes"),
        "{}",
        err.message()
    );
    let r = s3
        .send(Req::Snapshot(wire::Snapshot {
            services: vec![service("web", 2)],
            more: false,
        }))
        .await
        .unwrap();
    assert!(r.refusals.is_empty());
    assert_eq!(
        a(&server, "web.shop.global").await.1,
        sorted(&["10.3.0.1", "10.3.0.2"])
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_tcp_connections_are_closed() {
    let server = TestServer::start(&["--tcp-idle-timeout", "300ms"]).await;
    let mut idle = tokio::net::TcpStream::connect(server.dns).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
        .await
        .expect("closed by the server")
        .unwrap();
    assert_eq!(n, 0, "the server closed the idle connection");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    // Queries still work.
    assert_eq!(a(&server, "global").await.0, ResponseCode::NoError);
    server.stop().await;
}
