//! Warm restart with `--state-file`: a restarted registry answers what it
//! knew from its first query, as stale data, until its syncers reconnect;
//! a corrupt state file is reported and ignored.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, query, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{Fleet, TestServer, eventually, wait_clusters_live};

const WEB: [&str; 4] = ["10.1.0.11", "10.1.0.12", "10.2.0.11", "10.3.0.11"];

#[tokio::test]
async fn answers_flow_across_a_restart() {
    let dir = TempDir::new("state");
    let (path, path_flag) = dir.state_file();
    let fleet = Fleet::start(&["--state-file", &path_flag]).await;
    let Fleet {
        server,
        syncers,
        dir: _fleet_dir,
        files: _files,
    } = fleet;
    let grpc = server.grpc;
    server.stop().await;
    assert!(path.exists(), "state saved at shutdown");
    // The new process answers from its first query, before any syncer is back.
    let started = Instant::now();
    let restarted = TestServer::start_at(grpc, &["--state-file", &path_flag]).await;
    let m = query(restarted.dns, &Ask::new("web.shop.global", RecordType::A)).await;
    let first_answer = started.elapsed();
    assert_eq!(addresses(&m), sorted(&WEB), "served from the saved state");
    assert!(
        first_answer < Duration::from_secs(1),
        "answered {first_answer:?} after start"
    );
    let m = query(
        restarted.dns,
        &Ask::new("db-0.east-1.db.data.global", RecordType::A),
    )
    .await;
    assert_eq!(addresses(&m), sorted(&["10.1.2.10"]));
    // The syncers reconnect (same address) and the clusters are live again.
    wait_clusters_live(restarted.grpc_url(), 3, Duration::from_secs(10)).await;
    let m = query(
        restarted.dns,
        &Ask::new("web.shop.global", RecordType::A).tcp(),
    )
    .await;
    assert_eq!(
        addresses(&m),
        sorted(&WEB),
        "no duplicates after the syncers' snapshots"
    );
    for s in syncers {
        s.stop().await;
    }
    restarted.stop().await;
}

#[tokio::test]
async fn a_corrupt_state_file_is_ignored() {
    let dir = TempDir::new("state-bad");
    for (name, bytes) in [
        ("garbage", b"not a state file at all".to_vec()),
        ("truncated", b"MESHDNS-STATE 1\n\0\0".to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let server = TestServer::start(&["--state-file", &path.display().to_string()]).await;
        let m = query(server.dns, &Ask::new("web.shop.global", RecordType::A)).await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{name}: started empty"
        );
        server.stop().await;
        // And it was replaced by a good one at shutdown.
        let saved = std::fs::read(&path).unwrap();
        assert!(saved.starts_with(b"MESHDNS-STATE 1\n"), "{name}");
    }
}

#[tokio::test]
async fn readiness_can_wait_for_data() {
    let server = TestServer::start(&["--ready-wait-data"]).await;
    let (status, body) = meshdns_tests::http_get(server.admin, "/readyz")
        .await
        .unwrap();
    assert_eq!(
        (status, body.trim()),
        (503, "not ready: no cluster data yet")
    );
    let dir = TempDir::new("ready");
    let file = dir.write("east-1.yaml", "cluster: east-1\nservices: []\n");
    let syncer = meshdns_tests::TestSyncer::start(&file, &[server.grpc_url()], &[]);
    let admin = server.admin;
    eventually(
        Duration::from_secs(10),
        "ready once a cluster is in",
        || async move {
            matches!(
                meshdns_tests::http_get(admin, "/readyz").await,
                Ok((200, _))
            )
            .then_some(())
        },
    )
    .await;
    syncer.stop().await;
    server.stop().await;
}

/// README: the state file is saved every 2 s when the registry changed,
/// and not rewritten while nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_file_is_saved_every_two_seconds_when_changed() {
    let dir = TempDir::new("state-period");
    let (path, path_flag) = dir.state_file();
    let server = TestServer::start(&["--state-file", &path_flag]).await;
    let one = "cluster: east-1\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.1.0.1}]}\n";
    let file = dir.write("east-1.yaml", one);
    let syncer = meshdns_tests::TestSyncer::start(&file, &[server.grpc_url()], &[]);
    let saved = |path: std::path::PathBuf| async move {
        let bytes = std::fs::read(&path).ok()?;
        let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
        Some((bytes, modified))
    };
    // The first save holding the cluster live with its service (a save
    // between its Hello and its Snapshot holds it stale and empty, and is
    // rightly followed by another).
    let (first, first_mtime) = eventually(Duration::from_secs(10), "the first save", || {
        let path = path.clone();
        async move {
            let (bytes, modified) = saved(path).await?;
            let reset = meshdns::state_file::decode(&bytes).ok()?;
            let whole = reset.clusters.iter().any(|c| {
                c.services.len() == 1
                    && c.cluster
                        .as_ref()
                        .is_some_and(|i| i.state == meshdns_proto::wire::ClusterState::Live as i32)
            });
            whole.then_some((bytes, modified))
        }
    })
    .await;
    // Nothing changes (heartbeats are not changes): not rewritten over two
    // periods and more.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let (same, same_mtime) = saved(path.clone()).await.unwrap();
    assert_eq!(same_mtime, first_mtime, "rewritten with nothing changed");
    assert_eq!(same, first);
    // A change: saved within one period (2 s), with generous slack.
    dir.write("east-1.yaml", &one.replace("10.1.0.1", "10.1.0.2"));
    eventually(Duration::from_secs(10), "the change served", || async {
        let m = meshdns_tests::dns::poll(server.dns, &Ask::new("web.shop.global", RecordType::A))
            .await?;
        (addresses(&m) == sorted(&["10.1.0.2"])).then_some(())
    })
    .await;
    let changed = Instant::now();
    eventually(Duration::from_secs(4), "the change saved", || async {
        let (bytes, _) = saved(path.clone()).await?;
        (bytes != first).then_some(())
    })
    .await;
    println!("saved {:?} after the change was served", changed.elapsed());
    syncer.stop().await;
    server.stop().await;
}
