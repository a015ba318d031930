//! Warm restart with `--state-file`: a restarted registry answers what it
//! knew from its first query, live for the clusters it heard from within
//! `--cluster-ttl` (stale, fail-open, for the rest) until its syncers
//! reconnect; a corrupt state file is reported and ignored.

use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_proto::wire::ClusterState;
use meshdns_tests::dns::{Ask, addresses, query, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{
    Fleet, Proc, ServeProc, TestServer, eventually, list_clusters, wait_clusters_live,
};

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

/// `dig +short` at `port` for `name`, the addresses sorted.
fn dig_short(port: u16, name: &str) -> Vec<String> {
    let out = std::process::Command::new("dig")
        .args([
            "@127.0.0.1",
            "-p",
            &port.to_string(),
            "+short",
            "+tries=3",
            name,
        ])
        .output()
        .expect("dig");
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

/// `meshdns_dns_stale_answers_total` at `admin`.
async fn stale_answers(admin: std::net::SocketAddr) -> u64 {
    let (_, text) = meshdns_tests::http_get(admin, "/metrics").await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("meshdns_dns_stale_answers_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no stale answers counter in {text}"))
}

/// ARCHITECTURE.md, warm restarts: liveness survives a restart by the
/// rule that holds while running (stale after `--cluster-ttl` of
/// silence, measured across the restart). A hub stopped gracefully and
/// restarted within the ttl answers every service live before any syncer
/// reconnects (here none ever does), and each cluster goes stale one ttl
/// after the hub last heard from it.
#[tokio::test]
async fn a_graceful_restart_answers_live_until_the_ttl_runs_out() {
    const TTL_MS: u64 = 6_000;
    let dir = TempDir::new("state-live");
    let (_, path_flag) = dir.state_file();
    let flags = ["--state-file", path_flag.as_str(), "--cluster-ttl", "6s"];
    let hub = ServeProc::start(&flags).await;
    let files = [
        dir.write("east-1.yaml", meshdns_tests::fleet::EAST_1),
        dir.write("east-2.yaml", meshdns_tests::fleet::EAST_2),
    ];
    let syncers: Vec<Proc> = files
        .iter()
        .map(|f| Proc::file_syncer(f, &hub.grpc_url(), &[]))
        .collect();
    wait_clusters_live(hub.grpc_url(), 2, Duration::from_secs(20)).await;
    // The hub stops gracefully (its shutdown save), then the syncers: no
    // syncer speaks to the restarted hub.
    let ServeProc { proc, .. } = hub;
    assert!(proc.terminate().success(), "the hub exits 0 on SIGTERM");
    for s in syncers {
        s.terminate();
    }
    let hub = ServeProc::start(&flags).await;
    // Live at once: web.shop, held by both clusters, answers both, and
    // no answer is a stale (fail-open) one.
    let web = sorted(&["10.1.0.11", "10.1.0.12", "10.2.0.11"]);
    assert_eq!(dig_short(hub.dns.port(), "web.shop.global"), web);
    assert_eq!(dig_short(hub.dns.port(), "api.shop.global"), ["10.96.2.10"]);
    assert_eq!(stale_answers(hub.admin).await, 0, "answered live");
    let clusters = list_clusters(hub.grpc_url()).await.expect("ListClusters");
    assert_eq!(clusters.len(), 2);
    for c in &clusters {
        assert_eq!(
            c.state,
            ClusterState::Live as i32,
            "{} restored live",
            c.name
        );
        assert!(!c.connected, "{}: no syncer came back", c.name);
        assert!(c.last_heartbeat_unix_ms > 0, "{}: the saved time", c.name);
    }
    let (status, _) = meshdns_tests::http_get(hub.admin, "/readyz").await.unwrap();
    assert_eq!(status, 200);
    // Nobody speaks: each goes stale one ttl after it was last heard,
    // not before (a lower bound, which slowness cannot break), and
    // within generous time after.
    let url = hub.grpc_url();
    for c in &clusters {
        let (name, heard) = (c.name.clone(), c.last_heartbeat_unix_ms);
        let seen_stale = eventually(Duration::from_secs(30), "the cluster stale", || {
            let (url, name) = (url.clone(), name.clone());
            async move {
                let list = list_clusters(url).await?;
                let c = list.iter().find(|c| c.name == name)?;
                (c.state == ClusterState::Stale as i32).then(unix_ms)
            }
        })
        .await;
        assert!(
            seen_stale + 1_000 >= heard + TTL_MS,
            "{name} stale {} ms after it was last heard, before the ttl",
            seen_stale.saturating_sub(heard)
        );
    }
    // Now the answers are the fail-open ones, and counted.
    assert_eq!(dig_short(hub.dns.port(), "web.shop.global"), web);
    assert!(stale_answers(hub.admin).await > 0, "stale answers counted");
    hub.proc.terminate();
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
