//! State in parts on both sides of the hub: a follower of a registry far
//! over 4 MiB syncs; the real syncer exports a cluster far over one
//! message; a refused stream backs off; a refused service is retried; Watch
//! streams are capped, and a reader that never reads is cut off without
//! holding anyone else up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use hickory_proto::rr::RecordType;
use meshdns_proto::fixtures;
use meshdns_proto::wire::{
    self, export_request::Message as Req, registry_client::RegistryClient, watch_event::Event,
};
use meshdns_tests::dns::{Ask, addresses, poll, query};
use meshdns_tests::export_stream::ExportStream;
use meshdns_tests::{TestServer, eventually, fleet};
use prost::Message;
use tokio_util::sync::CancellationToken;

const MIB: usize = 1024 * 1024;

/// Service `s` of cluster `c`: `endpoints` endpoints with hostnames and
/// node names, addresses 10.c.s.(e+1).
fn service(c: usize, s: usize, endpoints: usize) -> wire::ServiceExport {
    fixtures::wire_service(
        "bulk",
        &format!("svc-{s}"),
        (0..endpoints).map(|e| wire::Endpoint {
            hostname: format!("pod-{e}"),
            node: format!("node-{c}-{}.compute.internal", e % 7),
            serving: true,
            ..fixtures::wire_endpoint(format!("10.{c}.{s}.{}", e + 1))
        }),
    )
}

/// An Export stream held open by the test; every answer must come.
struct Exporter(ExportStream);

impl Exporter {
    async fn open(server: &TestServer, cluster: &str) -> Self {
        let hello = wire::Hello {
            cluster: cluster.into(),
            region: "r1".into(),
            zone: "z1".into(),
            ..Default::default()
        };
        Exporter(
            ExportStream::open(server.grpc_url(), Req::Hello(hello))
                .await
                .unwrap(),
        )
    }

    async fn send(&mut self, message: Req) -> wire::ExportResponse {
        self.0.send(message).await.unwrap()
    }
}

/// Loads `clusters` clusters of `services` × `endpoints` into `server`
/// with one Export stream each (kept open); returns the streams and the
/// encoded size of what was loaded.
async fn load(
    server: &TestServer,
    clusters: usize,
    services: usize,
    endpoints: usize,
) -> (Vec<Exporter>, usize) {
    let mut streams = Vec::new();
    let mut bytes = 0;
    for c in 0..clusters {
        let mut stream = Exporter::open(server, &format!("c{c}")).await;
        let snapshot = wire::Snapshot {
            services: (0..services).map(|s| service(c, s, endpoints)).collect(),
            more: false,
        };
        bytes += snapshot.encoded_len();
        let response = stream.send(Req::Snapshot(snapshot)).await;
        assert!(response.refusals.is_empty(), "{:?}", response.refusals);
        streams.push(stream);
    }
    (streams, bytes)
}

/// (services, endpoints, state) per cluster, as ListClusters reports them.
async fn cluster_table(url: String) -> Option<BTreeMap<String, (u32, u64, i32)>> {
    let clusters = meshdns_tests::list_clusters(url).await?;
    Some(
        clusters
            .into_iter()
            .map(|c| (c.name, (c.services, c.endpoints, c.state)))
            .collect(),
    )
}

async fn metric(server: &TestServer, line: &str) -> u64 {
    let (_, text) = meshdns_tests::http_get(server.admin, "/metrics")
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_follower_of_a_registry_far_over_4_mib_syncs_completely() {
    let upstream = TestServer::start(&["--cluster-ttl", "10m", "--stale-grace", "1h"]).await;
    let (_streams, bytes) = load(&upstream, 40, 50, 100).await;
    println!(
        "upstream state: {:.1} MiB encoded",
        bytes as f64 / MIB as f64
    );
    assert!(bytes > 2 * 4 * MIB, "far over one 4 MiB message: {bytes}");
    // The follower takes messages up to the hub's default limit (4 MiB).
    let follower = TestServer::start(&[
        "--follow",
        &upstream.grpc_url(),
        "--max-grpc-message-bytes",
        "4194304",
    ])
    .await;
    let want = cluster_table(upstream.grpc_url()).await.unwrap();
    assert_eq!(want.len(), 40);
    assert!(want.values().all(|(s, e, _)| (*s, *e) == (50, 5000)));
    let started = Instant::now();
    eventually(
        Duration::from_secs(60),
        "the follower's clusters equal the upstream's",
        || {
            let want = want.clone();
            let url = follower.grpc_url();
            async move { (cluster_table(url).await? == want).then_some(()) }
        },
    )
    .await;
    println!("follower synced in {:?}", started.elapsed());
    // A sample of answers, the same on both, spread over every cluster.
    for (c, s, e) in [
        (0, 0, 0),
        (7, 13, 42),
        (19, 49, 99),
        (39, 25, 50),
        (39, 49, 99),
    ] {
        let name = format!("pod-{e}.c{c}.svc-{s}.bulk.global");
        let ask = Ask::new(&name, RecordType::A).tcp();
        let from_follower = addresses(&query(follower.dns, &ask).await);
        assert_eq!(
            from_follower,
            vec![format!("10.{c}.{s}.{}", e + 1)],
            "{name}"
        );
        assert_eq!(addresses(&query(upstream.dns, &ask).await), from_follower);
    }
    follower.stop().await;
    upstream.stop().await;
}

/// The address of endpoint `e` of service `s` in [`big_cluster_file`].
fn big_ip(s: usize, e: usize) -> String {
    format!("10.{}.{}.{}", s / 200 * 10 + e / 250, s % 200, e % 250 + 1)
}

/// A file of one cluster: `services` services of `endpoints` endpoints
/// with long hostnames and node names.
fn big_cluster_file(dir: &fleet::TempDir, services: usize, endpoints: usize) -> std::path::PathBuf {
    let mut text = String::from("cluster: big-1\nregion: r1\nzone: z1\nservices:\n");
    for s in 0..services {
        text.push_str(&format!(
            "  - name: svc-{s}\n    namespace: bulk\n    ports: [{{name: http, protocol: TCP, port: 80}}]\n    endpoints:\n"
        ));
        for e in 0..endpoints {
            text.push_str(&format!(
                "      - {{ip: {}, hostname: web-deployment-7f9c8d6b5-{e}, node: ip-10-20-{}-{}.eu-west-1.compute.internal}}\n",
                big_ip(s, e),
                e % 250,
                s % 250
            ));
        }
    }
    dir.write("big-1.yaml", &text)
}

/// A syncer in this process with exactly `flags` (no fast backoff added).
fn syncer(
    file: &Path,
    registry: &str,
    flags: &[&str],
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let source = format!("file:{}", file.display());
    let mut argv = vec![
        "meshdns-syncer",
        "--insecure",
        "--source",
        &source,
        "--registry",
        registry,
        "--file-poll-interval",
        "50ms",
    ];
    argv.extend_from_slice(flags);
    let args = meshdns_syncer::config::SyncerArgs::try_parse_from(&argv).unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let _ = meshdns_syncer::run(args, shutdown).await;
        }
    });
    (shutdown, task)
}

#[tokio::test]
async fn a_cluster_far_over_one_message_exports_through_the_real_syncer() {
    // The hub's default limit (4 MiB), given explicitly.
    let server = TestServer::start(&["--max-grpc-message-bytes", "4194304"]).await;
    let dir = fleet::TempDir::new("parts-big");
    let file = big_cluster_file(&dir, 300, 200);
    let (stop, task) = syncer(&file, &server.grpc_url(), &["--heartbeat", "1s"]);
    let started = Instant::now();
    let clusters = loop {
        let clusters = server.clusters().await;
        let whole =
            |c: &wire::ClusterInfo| c.name == "big-1" && c.services == 300 && c.endpoints == 60_000;
        if clusters.iter().any(whole) {
            break clusters;
        }
        let last: Vec<_> = clusters
            .iter()
            .map(|c| (c.name.clone(), c.services, c.endpoints))
            .collect();
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the whole cluster did not arrive; the hub has {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("60,000 endpoints exported in {:?}", started.elapsed());
    assert_eq!(clusters.len(), 1);
    // Its wire size, as one message, would be far over the limit.
    let mut client = RegistryClient::connect(server.grpc_url())
        .await
        .unwrap()
        .max_decoding_message_size(64 * MIB);
    let mut bytes = 0;
    for s in [0, 150, 299] {
        let reply = client
            .get_service(wire::GetServiceRequest {
                key: Some(wire::ServiceKey {
                    namespace: "bulk".into(),
                    name: format!("svc-{s}"),
                }),
            })
            .await
            .unwrap()
            .into_inner();
        bytes += reply.encoded_len();
    }
    let whole = bytes * 100;
    println!(
        "the cluster as one Snapshot: about {:.1} MiB",
        whole as f64 / MIB as f64
    );
    assert!(whole > 4 * MIB + MIB, "far over one 4 MiB message: {whole}");
    for (s, e) in [(0, 0), (150, 77), (299, 199)] {
        let name = format!("web-deployment-7f9c8d6b5-{e}.big-1.svc-{s}.bulk.global");
        let m = query(server.dns, &Ask::new(&name, RecordType::A).tcp()).await;
        assert_eq!(addresses(&m), vec![big_ip(s, e)], "{name}");
    }
    stop.cancel();
    let _ = task.await;
    server.stop().await;
}

#[tokio::test]
async fn a_syncer_whose_snapshot_is_refused_backs_off() {
    // One service bigger than the hub takes: every stream's Hello is
    // accepted, then its Snapshot ends the stream.
    let server = TestServer::start(&["--max-grpc-message-bytes", "65536"]).await;
    let dir = fleet::TempDir::new("parts-refused");
    let file = big_cluster_file(&dir, 1, 2000);
    let (stop, task) = syncer(&file, &server.grpc_url(), &["--max-backoff", "10s"]);
    let opened = "meshdns_export_stream_events_total{event=\"opened\"}";
    eventually(Duration::from_secs(10), "a first attempt", || async {
        (metric(&server, opened).await >= 1).then_some(())
    })
    .await;
    let first = metric(&server, opened).await;
    let window = Duration::from_secs(4);
    tokio::time::sleep(window).await;
    let attempts = metric(&server, opened).await - first;
    let refused = metric(
        &server,
        "meshdns_export_stream_events_total{event=\"message_too_large\"}",
    )
    .await;
    println!("{attempts} reconnects in {window:?} ({refused} snapshots refused in all)");
    assert!(refused >= 1, "the snapshot was refused");
    // Every 100 ms would be about 40; backing off from 100 ms doubling
    // (full jitter) takes 5 to 8.
    assert!(attempts <= 12, "{attempts} reconnects in {window:?}");
    stop.cancel();
    let _ = task.await;
    server.stop().await;
}

#[tokio::test]
async fn a_refused_service_is_retried_and_lands_once_the_reason_is_gone() {
    let server = TestServer::start(&["--max-services-per-cluster", "3"]).await;
    let dir = fleet::TempDir::new("parts-retry");
    // Each service keeps its own address whatever else is in the file.
    let text = |names: &[&str]| {
        let mut text = String::from("cluster: east-1\nregion: r1\nzone: z1\nservices:\n");
        for n in names {
            let ip = match *n {
                "a" => 1,
                "b" => 2,
                "c" => 3,
                _ => 4,
            };
            text.push_str(&format!(
                "  - name: {n}\n    namespace: shop\n    ports: [{{name: http, protocol: TCP, port: 80}}]\n    endpoints:\n      - {{ip: 10.1.0.{ip}}}\n"
            ));
        }
        text
    };
    let file = dir.write("east-1.yaml", &text(&["a", "b", "c"]));
    let syncer = meshdns_tests::TestSyncer::start(&file, &[server.grpc_url()], &[]);
    let answers = |name: &'static str| {
        let dns = server.dns;
        async move {
            let m = poll(dns, &Ask::new(name, RecordType::A).tcp()).await?;
            Some(addresses(&m))
        }
    };
    eventually(Duration::from_secs(10), "c.shop answers", || async {
        (answers("c.shop.global").await? == ["10.1.0.3"]).then_some(())
    })
    .await;
    // A fourth service is over the limit: refused.
    dir.write("east-1.yaml", &text(&["a", "b", "c", "d"]));
    let limit = "meshdns_export_refused_items_total{reason=\"limit_services\"}";
    eventually(Duration::from_secs(10), "d refused", || async {
        (metric(&server, limit).await >= 1).then_some(())
    })
    .await;
    assert!(answers("d.shop.global").await.unwrap().is_empty());
    // Another service goes: d lands, though nothing about d changed.
    dir.write("east-1.yaml", &text(&["b", "c", "d"]));
    eventually(Duration::from_secs(20), "d.shop answers", || async {
        (answers("d.shop.global").await? == ["10.1.0.4"]).then_some(())
    })
    .await;
    assert!(answers("a.shop.global").await.unwrap().is_empty());
    syncer.stop().await;
    server.stop().await;
}

async fn open_watch(
    server: &TestServer,
) -> Result<tonic::Streaming<wire::WatchEvent>, tonic::Status> {
    let mut client = RegistryClient::connect(server.grpc_url()).await.unwrap();
    Ok(client.watch(wire::WatchRequest {}).await?.into_inner())
}

/// Reads a whole (possibly multi-part) Reset: its clusters' service counts.
async fn read_reset(events: &mut tonic::Streaming<wire::WatchEvent>) -> BTreeMap<String, usize> {
    let mut clusters = BTreeMap::new();
    loop {
        let event = events.message().await.unwrap().unwrap();
        let Some(Event::Reset(part)) = event.event else {
            panic!("a reset first, got {event:?}");
        };
        for c in part.clusters {
            *clusters.entry(c.cluster.unwrap().name).or_default() += c.services.len();
        }
        if !part.more {
            return clusters;
        }
    }
}

#[tokio::test]
async fn watch_streams_are_capped() {
    let server = TestServer::start(&["--max-watch-streams", "2"]).await;
    let mut w1 = open_watch(&server).await.unwrap();
    let mut w2 = open_watch(&server).await.unwrap();
    read_reset(&mut w1).await;
    read_reset(&mut w2).await;
    let err = match open_watch(&server).await {
        Ok(mut w3) => w3
            .message()
            .await
            .err()
            .expect("the third watch is refused"),
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("--max-watch-streams"),
        "{}",
        err.message()
    );
    // A watch that ends gives its slot back.
    drop(w1);
    eventually(Duration::from_secs(10), "a freed watch slot", || async {
        let mut w = open_watch(&server).await.ok()?;
        w.message().await.ok()?.map(|_| ())
    })
    .await;
    drop(w2);
    server.stop().await;
}

#[tokio::test]
async fn a_watcher_that_never_reads_is_cut_off_and_blocks_nobody() {
    // The stall timeout is the longest a well-behaved reader may take for
    // one 1 MiB part: generous, for a debug build on a busy 2-core machine.
    let server = TestServer::start(&[
        "--watch-stall-timeout",
        "8s",
        "--cluster-ttl",
        "10m",
        "--stale-grace",
        "1h",
    ])
    .await;
    let (mut streams, bytes) = load(&server, 30, 50, 100).await;
    println!("state: {:.1} MiB encoded", bytes as f64 / MIB as f64);
    // A reader with 64 KiB windows that never reads: the Reset cannot all
    // be in flight.
    let channel = tonic::transport::Endpoint::from_shared(server.grpc_url())
        .unwrap()
        .initial_stream_window_size(65_535)
        .initial_connection_window_size(65_535)
        .connect()
        .await
        .unwrap();
    let mut stalled = RegistryClient::new(channel)
        .watch(wire::WatchRequest {})
        .await
        .unwrap()
        .into_inner();
    // Meanwhile another watcher gets the whole state...
    let mut reader = open_watch(&server).await.unwrap();
    let clusters = read_reset(&mut reader).await;
    assert_eq!(clusters.len(), 30);
    assert!(clusters.values().all(|n| *n == 50));
    // ...and exports are acknowledged and reach the reader.
    let response = streams[3]
        .send(Req::Delta(wire::Delta {
            upserts: vec![service(3, 99, 3)],
            removals: vec![],
            observed_unix_ms: 0,
        }))
        .await;
    assert!(response.refusals.is_empty());
    let changed = loop {
        match reader.message().await.unwrap().unwrap().event {
            Some(Event::Services(changed)) => break changed,
            _ => continue,
        }
    };
    assert_eq!((changed.cluster.as_str(), changed.upserts.len()), ("c3", 1));
    // The silent reader is cut off.
    eventually(
        Duration::from_secs(30),
        "the stalled watcher cut off",
        || async {
            (metric(
                &server,
                "meshdns_watch_stream_events_total{event=\"stalled\"}",
            )
            .await
                == 1)
                .then_some(())
        },
    )
    .await;
    // What it finally reads ends with a status that says why.
    let mut parts = 0;
    let err = loop {
        match stalled.message().await {
            Ok(Some(_)) => parts += 1,
            Ok(None) => panic!("ended without a status after {parts} parts"),
            Err(status) => break status,
        }
    };
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("--watch-stall-timeout"),
        "{}",
        err.message()
    );
    println!("the stalled watcher got {parts} parts before its status");
    drop(streams);
    server.stop().await;
}
