//! Faults, end to end with real processes: a syncer frozen mid-stream (a
//! partition: the TCP stream stays open but silent), and the registry
//! killed with -9 while syncers stream a burst of changes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use meshdns_tests::dns::{Ask, addresses, poll, sorted};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{Proc, eventually};

/// `meshdns serve` on `ports` (dns, grpc, admin); port 0 the first time:
/// the process logs the ports it got, which a restart then reuses.
async fn serve(ports: (u16, u16, u16), extra: &[&str]) -> (Proc, (u16, u16, u16)) {
    let (dns, grpc, admin) = (
        format!("127.0.0.1:{}", ports.0),
        format!("127.0.0.1:{}", ports.1),
        format!("127.0.0.1:{}", ports.2),
    );
    let mut args = vec![
        "serve",
        "--insecure",
        "--dns-listen",
        &dns,
        "--grpc-listen",
        &grpc,
        "--admin-listen",
        &admin,
        "--max-answers",
        "100",
    ];
    args.extend_from_slice(extra);
    let (proc, logs) = Proc::start_logged("meshdns", &args);
    let got = (
        logs.listening("dns udp listening").await.port(),
        logs.listening("grpc registry listening").await.port(),
        logs.listening("admin listening").await.port(),
    );
    (proc, got)
}

fn syncer(file: &std::path::Path, grpc: u16) -> Proc {
    Proc::file_syncer(
        file,
        &format!("http://127.0.0.1:{grpc}"),
        &["--file-poll-interval", "20ms", "--max-backoff", "300ms"],
    )
}

fn export(cluster: &str, ips: &[String]) -> String {
    let endpoints: Vec<String> = ips.iter().map(|ip| format!("{{ip: {ip}}}")).collect();
    format!(
        "cluster: {cluster}\nservices:\n  - {{name: web, namespace: shop, ports: [{{port: 80}}], endpoints: [{}]}}\n",
        endpoints.join(", ")
    )
}

async fn web(dns: SocketAddr) -> Option<(ResponseCode, Vec<String>)> {
    let m = poll(dns, &Ask::new("web.shop.global", RecordType::A).tcp()).await?;
    Some((m.metadata.response_code, addresses(&m)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_syncer_is_withdrawn_and_comes_back() {
    let (_registry, (dns_port, grpc, _)) = serve((0, 0, 0), &["--cluster-ttl", "1s"]).await;
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    let dir = TempDir::new("sigstop");
    let east = dir.write(
        "east.yaml",
        &export("east-1", &["10.1.0.1".into(), "10.1.0.2".into()]),
    );
    let west = dir.write("west.yaml", &export("west-1", &["10.3.0.1".into()]));
    let s_east = syncer(&east, grpc);
    let _s_west = syncer(&west, grpc);
    let all = sorted(&["10.1.0.1", "10.1.0.2", "10.3.0.1"]);
    let want = all.clone();
    eventually(Duration::from_secs(15), "both clusters answer", || {
        let want = want.clone();
        async move { (web(dns).await?.1 == want).then_some(()) }
    })
    .await;
    // SIGSTOP: the stream stays open, the heartbeats stop.
    s_east.signal("STOP");
    let stopped = Instant::now();
    eventually(Duration::from_secs(10), "east-1 withdrawn", || async move {
        (web(dns).await?.1 == sorted(&["10.3.0.1"])).then_some(())
    })
    .await;
    let took = stopped.elapsed();
    // In TTLs (1 s): not before half of one (its last heartbeat was at
    // most a fifth of a TTL before the stop), within three on a loaded
    // machine.
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(3),
        "withdrawn after {took:?} (cluster TTL 1s)"
    );
    // While frozen, its source changes.
    dir.write(
        "east.yaml",
        &export("east-1", &["10.1.0.2".into(), "10.1.0.3".into()]),
    );
    // SIGCONT: back, with exactly the new endpoints (no stale 10.1.0.1, no duplicate).
    s_east.signal("CONT");
    let want = sorted(&["10.1.0.2", "10.1.0.3", "10.3.0.1"]);
    eventually(
        Duration::from_secs(10),
        "east-1 back with its current endpoints",
        || {
            let want = want.clone();
            async move { (web(dns).await?.1 == want).then_some(()) }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_the_registry_during_a_burst() {
    let (mut registry, ports) = serve((0, 0, 0), &[]).await;
    let (dns_port, grpc, _) = ports;
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    let dir = TempDir::new("kill9");
    let clusters = ["east-1", "east-2", "west-1"];
    let ips = |c: usize, round: usize| -> Vec<String> {
        // Each round a different set: the ground truth keeps moving.
        (0..5)
            .map(|i| format!("10.{}.{}.{}", c + 1, round % 200, i + 1))
            .collect()
    };
    let files: Vec<_> = clusters
        .iter()
        .enumerate()
        .map(|(c, name)| dir.write(&format!("{name}.yaml"), &export(name, &ips(c, 0))))
        .collect();
    let _syncers: Vec<Proc> = files.iter().map(|f| syncer(f, grpc)).collect();
    eventually(Duration::from_secs(15), "first answers", || async move {
        (web(dns).await?.1.len() == 15).then_some(())
    })
    .await;
    // A burst: file rewrites as fast as the machine takes them (about a
    // thousand a second here) across the three clusters for 2 s; the
    // registry is killed with -9 a second in, and restarted.
    let started = Instant::now();
    let mut round = 0;
    let mut killed = false;
    let mut restarted = None;
    while started.elapsed() < Duration::from_secs(2) {
        round += 1;
        for (c, name) in clusters.iter().enumerate() {
            dir.write(&format!("{name}.yaml"), &export(name, &ips(c, round)));
        }
        if !killed && started.elapsed() > Duration::from_secs(1) {
            registry.signal("KILL");
            registry.wait_exit(Duration::from_secs(5)).expect("killed");
            killed = true;
        }
        if killed && restarted.is_none() && started.elapsed() > Duration::from_millis(1300) {
            // The same ports: the syncers expect the registry there.
            restarted = Some(serve(ports, &[]).await.0);
        }
        tokio::task::yield_now().await;
    }
    println!(
        "burst: {} file rewrites in {:?}",
        round * 3,
        started.elapsed()
    );
    assert!(round > 100, "burst of {round} rounds");
    let _registry = restarted.expect("restarted");
    // Converged: exactly the sources' last state, nothing lost, nothing phantom.
    let mut truth: Vec<String> = (0..3).flat_map(|c| ips(c, round)).collect();
    truth.sort();
    let want = truth.clone();
    eventually(
        Duration::from_secs(20),
        "converged on the ground truth",
        || {
            let want = want.clone();
            async move { (web(dns).await? == (ResponseCode::NoError, want)).then_some(()) }
        },
    )
    .await;
}

/// SIGTERM under load: every query that reached the server before the
/// signal is answered (UDP packets already in the socket are drained,
/// TCP queries already read are answered), and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_answers_what_was_accepted() {
    use std::sync::{Arc, Mutex};
    let (mut registry, ports) = serve((0, 0, 0), &[]).await;
    let (dns_port, grpc, _) = ports;
    let dns: SocketAddr = format!("127.0.0.1:{dns_port}").parse().unwrap();
    let dir = TempDir::new("sigterm");
    let file = dir.write("east.yaml", &export("east-1", &["10.1.0.1".into()]));
    let _syncer = syncer(&file, grpc);
    eventually(Duration::from_secs(15), "answers", || async move {
        (web(dns).await?.1.len() == 1).then_some(())
    })
    .await;
    let signalled: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut clients = Vec::new();
    for c in 0..4u16 {
        let signalled = signalled.clone();
        clients.push(tokio::spawn(async move {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut unanswered_before_signal = 0;
            let mut answered = 0;
            for i in 0..100_000u32 {
                let id = (c << 12) ^ (i as u16);
                let packet = meshdns_tests::dns::Ask::new("web.shop.global", RecordType::A)
                    .message(id)
                    .to_vec()
                    .unwrap();
                let sent_at = Instant::now();
                if socket.send_to(&packet, dns).await.is_err() {
                    break;
                }
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await
                {
                    Ok(Ok((n, _))) => {
                        let m = meshdns_tests::dns::strict(&buf[..n]).unwrap();
                        assert_eq!(m.metadata.id, id);
                        answered += 1;
                    }
                    _ => {
                        let before = signalled.lock().unwrap().is_none_or(|at| sent_at < at);
                        if before {
                            unanswered_before_signal += 1;
                        }
                        break;
                    }
                }
            }
            (answered, unanswered_before_signal)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    *signalled.lock().unwrap() = Some(Instant::now());
    registry.signal("TERM");
    let status = tokio::task::spawn_blocking(move || {
        registry
            .wait_exit(Duration::from_secs(15))
            .map(|s| (s, registry))
    })
    .await
    .unwrap()
    .expect("exits within 15s of SIGTERM");
    assert!(status.0.success(), "exit status {:?}", status.0);
    let mut total = 0;
    for client in clients {
        let (answered, lost) = client.await.unwrap();
        total += answered;
        assert_eq!(lost, 0, "a query sent before SIGTERM went unanswered");
    }
    assert!(total > 100, "load: {total} answers");
}
