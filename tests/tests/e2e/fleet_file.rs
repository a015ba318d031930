//! The fleet file (`--clusters`) binds clusters already connected: a
//! reload that narrows or drops a cluster ends its stream and takes back
//! what the new rules refuse, with a real hub and a real syncer.

use std::time::Duration;

use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll};
use meshdns_tests::fleet::{EAST_1, EAST_2, TempDir};
use meshdns_tests::{Proc, ServeProc, eventually, list_clusters};

/// Both clusters of the standard fleet allowed their own addresses.
const BOTH: &str = "clusters:\n  east-1:\n    endpointCIDRs: [10.1.0.0/16]\n    namespaces: [shop, data]\n  east-2:\n    endpointCIDRs: [10.2.0.0/16]\n";

/// The A records for `name` as an asker of no cluster sees them (every
/// cluster's), sorted; empty for NXDOMAIN or no data.
async fn a(hub: &ServeProc, name: &str) -> Vec<String> {
    let ask = Ask::new(name, RecordType::A).from("127.0.0.9");
    match poll(hub.dns, &ask).await {
        Some(m) => {
            let mut found = addresses(&m);
            found.sort();
            found
        }
        None => Vec::new(),
    }
}

/// Waits (10 s at most) until `name` answers `want`.
async fn answers(hub: &ServeProc, name: &str, want: &[&str]) {
    eventually(
        Duration::from_secs(10),
        &format!("{name} -> {want:?}"),
        || async { (a(hub, name).await == want).then_some(()) },
    )
    .await;
}

fn syncer(dir: &TempDir, name: &str, text: &str, hub: &ServeProc) -> Proc {
    let file = dir.write(name, text);
    Proc::file_syncer(&file, &hub.grpc_url(), &["--max-backoff", "500ms"])
}

#[tokio::test]
async fn narrowing_the_fleet_file_takes_back_what_a_connected_cluster_exported() {
    let dir = TempDir::new("fleet-narrow");
    let fleet = dir.write("clusters.yaml", BOTH);
    let hub = ServeProc::start(&["--workers", "1", "--clusters", fleet.to_str().unwrap()]).await;
    let _east_1 = syncer(&dir, "east-1.yaml", EAST_1, &hub);
    answers(&hub, "web.shop.global", &["10.1.0.11", "10.1.0.12"]).await;
    answers(&hub, "db.data.global", &["10.1.2.10"]).await;

    // east-1 may now export from data only, and only 10.1.2.0/24.
    dir.write(
        "clusters.yaml",
        "clusters:\n  east-1:\n    endpointCIDRs: [10.1.2.0/24]\n    namespaces: [data]\n  east-2:\n",
    );
    answers(&hub, "web.shop.global", &[]).await;
    assert_eq!(a(&hub, "db.data.global").await, ["10.1.2.10"]);
    hub.logs
        .wait(Duration::from_secs(5), "the stream ended", |l| {
            l.contains("changed the rules of cluster east-1")
                .then_some(())
        })
        .await;
    // The syncer reconnects under the new rules: its Snapshot's web.shop
    // is refused, and no held version of it comes back.
    hub.logs
        .wait(Duration::from_secs(10), "web.shop refused", |l| {
            (l.contains("refused export items") && l.contains("namespace shop is not one"))
                .then_some(())
        })
        .await;
    let cluster = eventually(
        Duration::from_secs(10),
        "east-1 connected again",
        || async {
            list_clusters(hub.grpc_url())
                .await?
                .into_iter()
                .find(|c| c.name == "east-1" && c.connected)
        },
    )
    .await;
    assert_eq!(cluster.services, 1, "{cluster:?}");
    // A later change of web.shop (a Delta) is refused too.
    let refused = hub.logs.count("namespace shop is not one");
    dir.write("east-1.yaml", &EAST_1.replace("10.1.0.12", "10.1.0.14"));
    eventually(Duration::from_secs(10), "the Delta refused", || async {
        (hub.logs.count("namespace shop is not one") > refused).then_some(())
    })
    .await;
    assert_eq!(a(&hub, "web.shop.global").await, Vec::<String>::new());
    assert_eq!(a(&hub, "db.data.global").await, ["10.1.2.10"]);
}

#[tokio::test]
async fn a_cluster_narrowed_while_away_loses_what_the_file_forbids_at_once() {
    let dir = TempDir::new("fleet-away");
    let fleet = dir.write("clusters.yaml", BOTH);
    let hub = ServeProc::start(&[
        "--workers",
        "1",
        "--clusters",
        fleet.to_str().unwrap(),
        "--cluster-ttl",
        "60s",
    ])
    .await;
    let east_1 = syncer(&dir, "east-1.yaml", EAST_1, &hub);
    answers(&hub, "web.shop.global", &["10.1.0.11", "10.1.0.12"]).await;
    drop(east_1);
    eventually(Duration::from_secs(10), "east-1 gone", || async {
        let clusters = list_clusters(hub.grpc_url()).await?;
        clusters
            .iter()
            .any(|c| c.name == "east-1" && !c.connected)
            .then_some(())
    })
    .await;
    dir.write(
        "clusters.yaml",
        "clusters:\n  east-1:\n    namespaces: [data]\n  east-2:\n",
    );
    hub.logs
        .wait(Duration::from_secs(5), "the reload", |l| {
            l.contains("fleet file reloaded").then_some(())
        })
        .await;
    // What it holds leaves at once, not when it goes stale (a service
    // only stale clusters hold is served from them, fail-open).
    answers(&hub, "web.shop.global", &[]).await;
    assert_eq!(a(&hub, "db.data.global").await, ["10.1.2.10"]);
    // Back: its Snapshot's web.shop is refused and stays out.
    let _east_1 = syncer(&dir, "east-1.yaml", EAST_1, &hub);
    hub.logs
        .wait(Duration::from_secs(10), "web.shop refused", |l| {
            l.contains("namespace shop is not one").then_some(())
        })
        .await;
    assert_eq!(a(&hub, "web.shop.global").await, Vec::<String>::new());
    assert_eq!(a(&hub, "db.data.global").await, ["10.1.2.10"]);
}

#[tokio::test]
async fn a_cluster_the_fleet_file_drops_loses_its_stream_and_its_answers() {
    let dir = TempDir::new("fleet-drop");
    let fleet = dir.write("clusters.yaml", BOTH);
    let hub = ServeProc::start(&["--workers", "1", "--clusters", fleet.to_str().unwrap()]).await;
    let _east_1 = syncer(&dir, "east-1.yaml", EAST_1, &hub);
    let _east_2 = syncer(&dir, "east-2.yaml", EAST_2, &hub);
    answers(
        &hub,
        "web.shop.global",
        &["10.1.0.11", "10.1.0.12", "10.2.0.11"],
    )
    .await;

    dir.write(
        "clusters.yaml",
        "clusters:\n  east-2:\n    endpointCIDRs: [10.2.0.0/16]\n",
    );
    // Its answers leave now, not a cluster TTL later.
    answers(&hub, "web.shop.global", &["10.2.0.11"]).await;
    answers(&hub, "db.data.global", &[]).await;
    hub.logs
        .wait(Duration::from_secs(5), "the stream ended", |l| {
            l.contains("no longer names cluster east-1").then_some(())
        })
        .await;
    // Its syncer's reconnects are refused at Hello.
    hub.logs
        .wait(Duration::from_secs(10), "the Hello refused", |l| {
            l.contains("refused hello: not in the fleet file")
                .then_some(())
        })
        .await;
    let clusters = list_clusters(hub.grpc_url()).await.unwrap();
    let east_1 = clusters.iter().find(|c| c.name == "east-1").unwrap();
    assert!(!east_1.connected, "{east_1:?}");
    assert_eq!(east_1.services, 0, "{east_1:?}");
    assert!(clusters.iter().any(|c| c.name == "east-2" && c.connected));
}

#[tokio::test]
async fn a_fleet_file_over_the_cap_keeps_the_rules_in_force() {
    let dir = TempDir::new("fleet-cap");
    let fleet = dir.write("clusters.yaml", BOTH);
    let hub = ServeProc::start(&["--workers", "1", "--clusters", fleet.to_str().unwrap()]).await;
    let _east_1 = syncer(&dir, "east-1.yaml", EAST_1, &hub);
    answers(&hub, "web.shop.global", &["10.1.0.11", "10.1.0.12"]).await;
    // Valid YAML (comments and all) that would drop east-1, over 1 MiB.
    let mut big = String::from("clusters:\n  east-2:\n");
    while big.len() <= meshdns::fleet::MAX_FILE_BYTES {
        big.push_str("# padding padding padding padding padding padding padding\n");
    }
    dir.write("clusters.yaml", &big);
    hub.logs
        .wait(Duration::from_secs(10), "the file refused", |l| {
            (l.contains("fleet file rejected") && l.contains("over the limit of 1048576 bytes"))
                .then_some(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(a(&hub, "web.shop.global").await, ["10.1.0.11", "10.1.0.12"]);
    assert_eq!(hub.logs.count("fleet file rejected"), 1, "reported once");
    assert_eq!(hub.logs.count("fleet file reloaded"), 0);
}
