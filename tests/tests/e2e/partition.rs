//! Split-brain honesty: two full registry replicas, a partition between
//! one replica and one cluster's syncer (its TCP stream stays open but
//! silent). Only that replica withdraws the cluster, through the cluster's
//! own missed heartbeats; the other keeps answering with it. When the link
//! heals, both agree again.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{FreezableProxy, TestServer, TestSyncer, eventually};

async fn wait(dns: SocketAddr, what: &str, expected: &[&str]) {
    let want = sorted(expected);
    eventually(Duration::from_secs(10), what, || {
        let want = want.clone();
        async move {
            (addresses(&poll(dns, &Ask::new("web.shop.global", RecordType::A)).await?) == want)
                .then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_partition_withdraws_only_where_it_is_seen() {
    let a = TestServer::start(&["--cluster-ttl", "1s"]).await;
    let b = TestServer::start(&["--cluster-ttl", "1s"]).await;
    let proxy = FreezableProxy::start(a.grpc).await;
    let dir = TempDir::new("partition");
    let x = dir.write("x.yaml", "cluster: x\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.1.0.1}]}\n");
    let y = dir.write("y.yaml", "cluster: y\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.2.0.1}]}\n");
    // x reaches replica A through the proxy, B directly; y reaches both directly.
    let sx = TestSyncer::start(&x, &[format!("http://{}", proxy.addr), b.grpc_url()], &[]);
    let sy = TestSyncer::start(&y, &[a.grpc_url(), b.grpc_url()], &[]);
    wait(a.dns, "A has both", &["10.1.0.1", "10.2.0.1"]).await;
    wait(b.dns, "B has both", &["10.1.0.1", "10.2.0.1"]).await;
    // Partition x from A only.
    proxy.freeze(true);
    wait(a.dns, "A withdraws x after its TTL", &["10.2.0.1"]).await;
    // B still hears x's heartbeats and keeps it.
    for _ in 0..10 {
        let m = poll(b.dns, &Ask::new("web.shop.global", RecordType::A))
            .await
            .unwrap();
        assert_eq!(
            addresses(&m),
            sorted(&["10.1.0.1", "10.2.0.1"]),
            "B never withdraws x for A's partition"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Healed: A hears x again and answers with it.
    proxy.freeze(false);
    wait(a.dns, "A has x back", &["10.1.0.1", "10.2.0.1"]).await;
    sx.stop().await;
    sy.stop().await;
    a.stop().await;
    b.stop().await;
}
