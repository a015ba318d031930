//! The Export protocol as a syncer sees it, with a raw gRPC client: bad
//! items refused with reasons while the rest applies, Hello rules,
//! superseded streams, Watch, ListClusters and GetService.

use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_proto::fixtures;
use meshdns_proto::wire::{
    self, export_request::Message as Req, registry_client::RegistryClient, watch_event::Event,
};
use meshdns_tests::TestServer;
use meshdns_tests::dns::{Ask, addresses, query, sorted};
use meshdns_tests::export_stream::ExportStream;

fn key(ns: &str, name: &str) -> Option<wire::ServiceKey> {
    Some(wire::ServiceKey {
        namespace: ns.into(),
        name: name.into(),
    })
}

fn service(ns: &str, name: &str, ips: &[&str]) -> wire::ServiceExport {
    fixtures::wire_service(
        ns,
        name,
        ips.iter().map(|ip| wire::Endpoint {
            serving: true,
            ..fixtures::wire_endpoint(*ip)
        }),
    )
}

fn hello(cluster: &str) -> Req {
    Req::Hello(wire::Hello {
        cluster: cluster.into(),
        region: "r1".into(),
        zone: "z1".into(),
        client_cidrs: vec![],
        version: "test".into(),
        ..Default::default()
    })
}

/// Export streams whose first message is the test's.
struct Stream;

impl Stream {
    async fn open(server: &TestServer, first: Req) -> Result<ExportStream, tonic::Status> {
        ExportStream::open(server.grpc_url(), first).await
    }
}

fn reasons(r: &wire::ExportResponse) -> Vec<String> {
    r.refusals.iter().map(|x| x.reason.clone()).collect()
}

#[tokio::test]
async fn invalid_items_are_refused_and_the_rest_applies() {
    let server = TestServer::start(&[]).await;
    let mut s = Stream::open(&server, hello("east-1")).await.unwrap();
    let mut no_ports = service("shop", "noports", &["10.0.0.5"]);
    no_ports.ports.clear();
    let mut dup = service("shop", "dup", &["10.0.0.6"]);
    dup.endpoints.push(dup.endpoints[0].clone());
    let response = s
        .send(Req::Snapshot(wire::Snapshot {
            services: vec![
                service("shop", "web", &["10.0.0.1", "10.0.0.2"]),
                service("shop", "Bad_Label", &["10.0.0.3"]),
                service("shop", "badip", &["10.0.0.300"]),
                no_ports,
                dup,
                service("shop", "web", &["10.0.0.9"]),
            ],
            more: false,
        }))
        .await
        .unwrap();
    let got = reasons(&response);
    assert_eq!(got.len(), 5, "{got:#?}");
    assert!(
        got[0].contains("services[1]: key.name: \"Bad_Label\" is not a valid RFC 1123 label"),
        "{got:#?}"
    );
    assert!(
        got[1].contains(
            "services[2]: endpoints[0].addresses[0]: \"10.0.0.300\" is not an IP address"
        ),
        "{got:#?}"
    );
    assert!(
        got[2].contains("services[3]: ports: a service needs at least one port"),
        "{got:#?}"
    );
    assert!(
        got[3].contains(
            "services[4]: endpoints[1].addresses[0]: duplicate endpoint address 10.0.0.6"
        ),
        "{got:#?}"
    );
    assert!(
        got[4].contains("services[5]: key: duplicate service shop/web"),
        "{got:#?}"
    );
    assert_eq!(
        response.refusals[2].key,
        key("shop", "noports"),
        "the refusal names the service as sent"
    );
    // The good service is served; the refused ones are not.
    let m = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.0.0.1", "10.0.0.2"]));
    for name in [
        "badip.shop.global",
        "noports.shop.global",
        "dup.shop.global",
    ] {
        let m = query(server.dns, &Ask::new(name, RecordType::A)).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    // A Delta with a bad upsert keeps the service's last good version and
    // applies the rest; a bad removal key is refused too.
    let mut broken_web = service("shop", "web", &["10.0.0.7"]);
    broken_web.ports[0].port = 0;
    let response = s
        .send(Req::Delta(wire::Delta {
            upserts: vec![broken_web, service("shop", "cart", &["10.0.0.8"])],
            removals: vec![wire::ServiceKey {
                namespace: "shop".into(),
                name: "".into(),
            }],
            observed_unix_ms: 0,
        }))
        .await
        .unwrap();
    let got = reasons(&response);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(
        got[0].contains("ports[0].port: port 0 is not a port"),
        "{got:#?}"
    );
    assert!(
        got[1].contains("removals[0]: name: is required"),
        "{got:#?}"
    );
    let m = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(
        addresses(&m),
        sorted(&["10.0.0.1", "10.0.0.2"]),
        "last good version kept"
    );
    let m = query(server.dns, &Ask::new("cart.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.0.0.8"]));
    // The same in a Snapshot: a refused service keeps its last good
    // version; services missing from the Snapshot are withdrawn.
    let mut broken_web = service("shop", "web", &["10.0.0.7"]);
    broken_web.endpoints[0].addresses[0] = "nope".into();
    let response = s
        .send(Req::Snapshot(wire::Snapshot {
            services: vec![broken_web],
            more: false,
        }))
        .await
        .unwrap();
    assert_eq!(response.refusals.len(), 1);
    let m = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.0.0.1", "10.0.0.2"]));
    let m = query(server.dns, &Ask::new("cart.shop.global", RecordType::A)).await;
    assert_eq!(
        m.metadata.response_code,
        ResponseCode::NXDomain,
        "withdrawn by the Snapshot"
    );
    // Heartbeats are acknowledged.
    assert!(
        s.send(Req::Heartbeat(wire::Heartbeat {}))
            .await
            .unwrap()
            .refusals
            .is_empty()
    );
    server.stop().await;
}

#[tokio::test]
async fn hello_rules() {
    let server = TestServer::start(&[]).await;
    // The first message must be a Hello.
    let err = match Stream::open(&server, Req::Heartbeat(wire::Heartbeat {})).await {
        Err(e) => e,
        Ok(_) => panic!("a stream without Hello was accepted"),
    };
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    // An invalid Hello names the field.
    let bad = Req::Hello(wire::Hello {
        cluster: "East_1".into(),
        ..Default::default()
    });
    let err = match Stream::open(&server, bad).await {
        Err(e) => e,
        Ok(_) => panic!("an invalid Hello was accepted"),
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message()
            .contains("cluster: \"East_1\" is not a valid RFC 1123 label"),
        "{}",
        err.message()
    );
    let bad = Req::Hello(wire::Hello {
        cluster: "east-1".into(),
        client_cidrs: vec!["10.0.0.0/99".into()],
        ..Default::default()
    });
    let err = Stream::open(&server, bad)
        .await
        .err()
        .expect("bad CIDR refused");
    assert!(
        err.message().contains("client_cidrs[0]"),
        "{}",
        err.message()
    );
    // A second Hello on a stream ends it.
    let mut s = Stream::open(&server, hello("east-1")).await.unwrap();
    let err = s
        .send(hello("east-1"))
        .await
        .err()
        .expect("second hello refused");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn a_newer_stream_supersedes_the_older() {
    let server = TestServer::start(&[]).await;
    let mut old = Stream::open(&server, hello("east-1")).await.unwrap();
    old.send(Req::Snapshot(wire::Snapshot {
        services: vec![service("shop", "web", &["10.0.0.1"])],
        more: false,
    }))
    .await
    .unwrap();
    // A restarted syncer opens a new stream: the cluster's data stays until
    // its Snapshot replaces it, in one step.
    let mut new = Stream::open(&server, hello("east-1")).await.unwrap();
    let m = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.0.0.1"]));
    new.send(Req::Snapshot(wire::Snapshot {
        services: vec![service("shop", "web", &["10.0.0.2"])],
        more: false,
    }))
    .await
    .unwrap();
    let m = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.0.0.2"]), "replaced, not merged");
    // The old stream can no longer write.
    let err = old
        .send(Req::Snapshot(wire::Snapshot {
            services: vec![],
            more: false,
        }))
        .await
        .err()
        .expect("old stream ended");
    assert_eq!(err.code(), tonic::Code::Aborted, "{err}");
    let m = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.0.0.2"]));
    server.stop().await;
}

#[tokio::test]
async fn a_closed_stream_leaves_the_data() {
    let server = TestServer::start(&[]).await;
    let mut s = Stream::open(&server, hello("east-1")).await.unwrap();
    s.send(Req::Snapshot(wire::Snapshot {
        services: vec![service("shop", "web", &["10.0.0.1"])],
        more: false,
    }))
    .await
    .unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let m = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
    assert_eq!(addresses(&m), sorted(&["10.0.0.1"]));
    let clusters = server.clusters().await;
    assert_eq!(clusters.len(), 1);
    assert_eq!(
        (
            clusters[0].name.as_str(),
            clusters[0].connected,
            clusters[0].services
        ),
        ("east-1", false, 1)
    );
    server.stop().await;
}

#[tokio::test]
async fn watch_list_and_get() {
    let server = TestServer::start(&[]).await;
    let mut east = Stream::open(&server, hello("east-1")).await.unwrap();
    east.send(Req::Snapshot(wire::Snapshot {
        services: vec![service("shop", "web", &["10.0.0.1"])],
        more: false,
    }))
    .await
    .unwrap();
    let mut client = RegistryClient::connect(server.grpc_url()).await.unwrap();
    let mut watch = client
        .watch(wire::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    // First the whole state.
    let Some(Event::Reset(reset)) = watch.message().await.unwrap().unwrap().event else {
        panic!("Reset first")
    };
    assert_eq!(reset.clusters.len(), 1);
    assert_eq!(reset.clusters[0].cluster.as_ref().unwrap().name, "east-1");
    assert_eq!(reset.clusters[0].services.len(), 1);
    // Then every change.
    let mut west = Stream::open(&server, hello("west-1")).await.unwrap();
    let Some(Event::Cluster(info)) = watch.message().await.unwrap().unwrap().event else {
        panic!("cluster event")
    };
    assert_eq!((info.name.as_str(), info.connected), ("west-1", true));
    // New, it is not live until its first Snapshot is accepted.
    assert_eq!(info.state, wire::ClusterState::Stale as i32);
    west.send(Req::Snapshot(wire::Snapshot {
        services: vec![service("shop", "web", &["10.0.1.1"])],
        more: false,
    }))
    .await
    .unwrap();
    let Some(Event::Cluster(info)) = watch.message().await.unwrap().unwrap().event else {
        panic!("cluster event: live")
    };
    assert_eq!(info.state, wire::ClusterState::Live as i32);
    let Some(Event::Services(changed)) = watch.message().await.unwrap().unwrap().event else {
        panic!("services event")
    };
    assert_eq!(changed.cluster, "west-1");
    assert_eq!(changed.upserts.len(), 1);
    west.send(Req::Delta(wire::Delta {
        upserts: vec![],
        removals: vec![key("shop", "web").unwrap()],
        observed_unix_ms: 0,
    }))
    .await
    .unwrap();
    let Some(Event::Services(changed)) = watch.message().await.unwrap().unwrap().event else {
        panic!("services event")
    };
    assert_eq!(changed.removals, vec![key("shop", "web").unwrap()]);
    // Unary calls.
    let clusters = client
        .list_clusters(wire::ListClustersRequest {})
        .await
        .unwrap()
        .into_inner()
        .clusters;
    assert_eq!(
        clusters.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
        vec!["east-1", "west-1"]
    );
    assert_eq!(clusters[0].endpoints, 1);
    let exports = client
        .get_service(wire::GetServiceRequest {
            key: key("shop", "web"),
        })
        .await
        .unwrap()
        .into_inner()
        .exports;
    assert_eq!(exports.len(), 1);
    assert_eq!(exports[0].cluster, "east-1");
    let err = client
        .get_service(wire::GetServiceRequest {
            key: key("shop", "Web"),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    server.stop().await;
}
