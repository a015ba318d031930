//! Credentials over their lifetime, against `meshdns serve` run as a
//! process: a token removed from the token file ends the streams it
//! opened; a bad or empty token file keeps the previous tokens; a change
//! is seen by content, not mtime; `/debug` needs a reader token and its
//! work is bounded; SIGTERM exits within `--shutdown-timeout` whatever a
//! client does; a peer that stops answering HTTP/2 PINGs is dropped; a
//! client certificate reaching its notAfter ends its streams.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshdns_proto::client::{Client, ClientAuth};
use meshdns_proto::wire::{self, export_request::Message as Req};
use meshdns_tests::fleet::TempDir;
use meshdns_tests::{Proc, eventually, list_clusters};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const EAST: &str = "east1-token-0123456789abcdef";
const WEST: &str = "west1-token-0123456789abcdef";
const READER: &str = "reader-token-0123456789abcdef";
const OTHER_READER: &str = "other-reader-0123456789abcdef";

/// `meshdns serve` as a process on free loopback ports (plaintext gRPC:
/// `--insecure`, with or without a token file).
struct Hub {
    proc: Proc,
    logs: meshdns_tests::logs::Logs,
    grpc: String,
    admin: SocketAddr,
}

impl Hub {
    async fn start(extra: &[&str]) -> Self {
        let served = meshdns_tests::ServeProc::start(extra).await;
        let admin = served.admin;
        eventually(
            Duration::from_secs(20),
            "the hub's /readyz",
            || async move {
                matches!(http(admin, "/readyz", None).await, Some((200, _, _))).then_some(())
            },
        )
        .await;
        Hub {
            grpc: served.grpc_url(),
            proc: served.proc,
            logs: served.logs,
            admin,
        }
    }

    /// A gRPC client presenting `token` (none: anonymous).
    async fn client(&self, dir: &TempDir, token: Option<&str>) -> Client {
        let token_file = token.map(|t| dir.write(&format!("client-{}", &t[..8]), t));
        ClientAuth {
            token_file,
            insecure: true,
            ..ClientAuth::default()
        }
        .connect(&self.grpc)
        .await
        .unwrap()
    }

    /// A counter's value from `/metrics` (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        let (_, _, body) = http(self.admin, "/metrics", None).await.unwrap();
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0.0)
    }
}

/// GET over HTTP/1.0, with an optional bearer token: status, headers, body.
async fn http(addr: SocketAddr, path: &str, token: Option<&str>) -> Option<(u16, String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

fn tokens(dir: &TempDir, lines: &[(&str, &str)]) -> PathBuf {
    let text: String = lines
        .iter()
        .map(|(t, who)| format!("{t} {who}\n"))
        .collect();
    dir.write("tokens", &text)
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

/// Opens an Export stream and says Hello as `cluster`: the request sender
/// (kept open) and the response stream, after the Hello's answer.
async fn export(
    client: &mut Client,
    cluster: &str,
) -> Result<
    (
        mpsc::Sender<wire::ExportRequest>,
        tonic::Streaming<wire::ExportResponse>,
    ),
    tonic::Status,
> {
    let (tx, rx) = mpsc::channel(4);
    tx.send(wire::ExportRequest {
        generation: 1,
        message: Some(Req::Hello(wire::Hello {
            cluster: cluster.into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut responses = client.export(ReceiverStream::new(rx)).await?.into_inner();
    responses
        .message()
        .await?
        .ok_or_else(|| tonic::Status::unknown("no answer to hello"))?;
    Ok((tx, responses))
}

/// Opens a Watch stream and reads its Reset.
async fn watch(client: &mut Client) -> tonic::Streaming<wire::WatchEvent> {
    let mut events = client
        .watch(wire::WatchRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = events.message().await.unwrap().unwrap();
    assert!(matches!(
        first.event,
        Some(wire::watch_event::Event::Reset(_))
    ));
    events
}

/// Reads a stream until it fails (events before the error are skipped);
/// the error, or `None` if it stayed open `limit` long or ended cleanly.
async fn stream_error<T>(
    stream: &mut tonic::Streaming<T>,
    limit: Duration,
) -> Option<tonic::Status> {
    let until = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(until, stream.message()).await {
            Err(_) | Ok(Ok(None)) => return None,
            Ok(Ok(Some(_))) => continue,
            Ok(Err(status)) => return Some(status),
        }
    }
}

fn assert_revoked(status: Option<tonic::Status>, what: &str) {
    let status = status.unwrap_or_else(|| panic!("{what}: still open after its token was removed"));
    assert_eq!(
        status.code(),
        tonic::Code::Unauthenticated,
        "{what}: {status}"
    );
    assert!(
        status.message().contains("credential revoked"),
        "{what}: {}",
        status.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_token_ends_its_open_export_and_watch_streams() {
    let dir = TempDir::new("revoke");
    let file = tokens(
        &dir,
        &[
            (EAST, "cluster:east-1"),
            (READER, "reader:status"),
            (OTHER_READER, "reader:other"),
        ],
    );
    let hub = Hub::start(&["--token-file", &path_arg(&file)]).await;
    let mut east = hub.client(&dir, Some(EAST)).await;
    let (_requests, mut exported) = export(&mut east, "east-1").await.unwrap();
    let mut reader = hub.client(&dir, Some(READER)).await;
    let mut watched = watch(&mut reader).await;
    let mut other = hub.client(&dir, Some(OTHER_READER)).await;
    let mut kept = watch(&mut other).await;
    // east-1's and the first reader's tokens leave the file.
    let removed = Instant::now();
    tokens(&dir, &[(OTHER_READER, "reader:other")]);
    assert_revoked(
        stream_error(&mut exported, Duration::from_secs(15)).await,
        "export stream",
    );
    assert_revoked(
        stream_error(&mut watched, Duration::from_secs(15)).await,
        "watch stream",
    );
    println!(
        "streams ended {:?} after the token file changed",
        removed.elapsed()
    );
    // The token cannot open a new stream either.
    let err = export(&mut east, "east-1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    // A reader whose token stayed keeps its stream.
    assert!(
        stream_error(&mut kept, Duration::from_secs(2))
            .await
            .is_none(),
        "a kept token's watch stream stays open"
    );
    assert!(hub.metric("meshdns_streams_revoked_total").await >= 2.0);
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_empty_token_file_keeps_the_previous_tokens() {
    let dir = TempDir::new("bad-tokens");
    let file = tokens(&dir, &[(EAST, "cluster:east-1"), (WEST, "cluster:west-1")]);
    let hub = Hub::start(&["--token-file", &path_arg(&file)]).await;
    let mut east = hub.client(&dir, Some(EAST)).await;
    let (requests, mut exported) = export(&mut east, "east-1").await.unwrap();
    let bad = [
        "".to_owned(),
        "# every token commented out\n".to_owned(),
        "this is not a token file\n".to_owned(),
        // Half-written: the second line cut short.
        format!("{EAST} cluster:east-1\n{WEST} clus"),
    ];
    for (i, text) in bad.iter().enumerate() {
        dir.write("tokens", text);
        // Several polls of the file.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rejected = hub
            .metric("meshdns_token_file_reloads_total{result=\"rejected\"}")
            .await;
        assert!(
            rejected >= (i + 1) as f64,
            "{text:?}: {rejected} rejections counted"
        );
        // Both tokens still work; the open stream is still served.
        let mut west = hub.client(&dir, Some(WEST)).await;
        assert!(
            export(&mut west, "west-1").await.is_ok(),
            "{text:?}: west-1's token"
        );
        requests
            .send(wire::ExportRequest {
                generation: 2 + i as u64,
                message: Some(Req::Heartbeat(wire::Heartbeat {})),
            })
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), exported.message())
            .await
            .expect("the export stream answers")
            .expect("the export stream is still open after {text:?}");
        assert_eq!(answer.unwrap().generation, 2 + i as u64);
    }
    assert_eq!(
        hub.metric("meshdns_token_file_reloads_total{result=\"applied\"}")
            .await,
        0.0
    );
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_changed_without_an_mtime_change_is_read() {
    let dir = TempDir::new("same-mtime");
    let file = tokens(&dir, &[(EAST, "cluster:east-1")]);
    let hub = Hub::start(&["--token-file", &path_arg(&file)]).await;
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    // The same size and mtime, another principal: prepared aside with the
    // old mtime and renamed over, so the path never shows another mtime.
    let text = format!("{EAST} cluster:west-1\n");
    assert_eq!(text.len() as u64, size);
    let aside = dir.path().join("tokens.next");
    std::fs::write(&aside, &text).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&aside)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&aside, &file).unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    let url_dir = &dir;
    let hub_ref = &hub;
    eventually(
        Duration::from_secs(15),
        "the token names west-1",
        || async move {
            let mut client = hub_ref.client(url_dir, Some(EAST)).await;
            export(&mut client, "west-1").await.ok().map(|_| ())
        },
    )
    .await;
    let mut client = hub.client(&dir, Some(EAST)).await;
    let err = export(&mut client, "east-1").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    drop(hub);
}

const TWO_SERVICES: &str = "cluster: east-1\nservices:\n  - {name: web, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.1.0.1}, {ip: 10.1.0.2}]}\n  - {name: api, namespace: shop, ports: [{port: 80}], endpoints: [{ip: 10.1.0.3}]}\n";

/// A syncer process exporting [`TWO_SERVICES`] as east-1.
fn syncer(hub: &Hub, dir: &TempDir, token: Option<&str>) -> Proc {
    let source = format!("file:{}", path_arg(&dir.write("east-1.yaml", TWO_SERVICES)));
    let mut args = vec![
        "--insecure".to_owned(),
        "--registry".into(),
        hub.grpc.clone(),
        "--source".into(),
        source,
        "--heartbeat".into(),
        "200ms".into(),
    ];
    if let Some(token) = token {
        args.push("--token-file".into());
        args.push(path_arg(&dir.write("syncer-token", token)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::start("meshdns-syncer", &args)
}

async fn wait_services(hub: &Hub, token: Option<&str>) {
    let admin = hub.admin;
    eventually(
        Duration::from_secs(20),
        "east-1's two services",
        || async move {
            let (status, _, body) = http(admin, "/debug/registry", token).await?;
            (status == 200 && body.contains("\"api\"") && body.contains("\"web\"")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_endpoints_need_a_reader_token() {
    let dir = TempDir::new("debug-auth");
    let file = tokens(&dir, &[(EAST, "cluster:east-1"), (READER, "reader:status")]);
    let hub = Hub::start(&["--token-file", &path_arg(&file)]).await;
    let _syncer = syncer(&hub, &dir, Some(EAST));
    wait_services(&hub, Some(READER)).await;
    for path in ["/debug/registry", "/debug/answer?name=web.shop.global"] {
        let (status, head, body) = http(hub.admin, path, None).await.unwrap();
        assert_eq!(status, 401, "{path} without a token: {body}");
        assert!(head.contains("www-authenticate: bearer"), "{path}: {head}");
        assert!(!body.contains("10.1.0.1"), "{path}: {body}");
        let (status, _, body) = http(hub.admin, path, Some("not-a-token-at-all-000"))
            .await
            .unwrap();
        assert_eq!(status, 401, "{path} with an unknown token: {body}");
        let (status, _, body) = http(hub.admin, path, Some(EAST)).await.unwrap();
        assert_eq!(status, 403, "{path} with a cluster token: {body}");
        assert!(body.contains("reader"), "{path}: {body}");
        let (status, _, body) = http(hub.admin, path, Some(READER)).await.unwrap();
        assert_eq!(status, 200, "{path} with a reader token: {body}");
        assert!(body.contains("10.1.0.1"), "{path}: {body}");
    }
    // Probes and scrapes stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http(hub.admin, path, None).await.unwrap().0, 200, "{path}");
    }
    assert!(
        hub.metric("meshdns_admin_debug_denied_total{result=\"forbidden\"}")
            .await
            >= 2.0
    );
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_endpoints_are_open_without_credentials_and_bounded() {
    let dir = TempDir::new("debug-open");
    let hub = Hub::start(&[]).await;
    let _syncer = syncer(&hub, &dir, None);
    wait_services(&hub, None).await;
    let json = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
    let (status, _, body) = http(hub.admin, "/debug/answer?name=web.shop.global", None)
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["answer"].as_array().unwrap().len(), 2, "{body}");
    // Everything: two services, not truncated.
    let (_, _, body) = http(hub.admin, "/debug/registry", None).await.unwrap();
    let all = json(&body);
    assert_eq!(
        (all["services"].as_u64(), all["truncated"].as_bool()),
        (Some(2), Some(false)),
        "{body}"
    );
    // limit=1: one service, and it says so.
    let (status, _, body) = http(hub.admin, "/debug/registry?limit=1", None)
        .await
        .unwrap();
    let one = json(&body);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (one["services"].as_u64(), one["truncated"].as_bool()),
        (Some(1), Some(true)),
        "{body}"
    );
    let exports = one["clusters"][0]["exports"].as_array().unwrap();
    assert_eq!(exports.len(), 1, "{body}");
    // Filters.
    let (_, _, body) = http(
        hub.admin,
        "/debug/registry?service=api&namespace=shop",
        None,
    )
    .await
    .unwrap();
    let api = json(&body);
    assert_eq!(api["services"].as_u64(), Some(1), "{body}");
    assert_eq!(api["clusters"][0]["exports"][0]["name"], "api", "{body}");
    let (_, _, body) = http(hub.admin, "/debug/registry?cluster=west-1", None)
        .await
        .unwrap();
    assert_eq!(
        json(&body)["clusters"].as_array().unwrap().len(),
        0,
        "{body}"
    );
    // Bad requests name the parameter.
    for (path, word) in [
        ("/debug/registry?limit=0", "limit"),
        ("/debug/registry?limit=1000000", "limit"),
        ("/debug/registry?cluster=a&cluster=b", "cluster"),
        (
            "/debug/answer?name=web.shop.global&name=api.shop.global",
            "name",
        ),
    ] {
        let (status, _, body) = http(hub.admin, path, None).await.unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(word), "{path}: {body}");
    }
    let long = format!("/debug/answer?name={}.global", "a".repeat(300));
    let (status, _, body) = http(hub.admin, &long, None).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("name: longer than 255"), "{body}");
    drop(hub);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_silent_export_stream_exits_within_the_shutdown_timeout() {
    let dir = TempDir::new("shutdown");
    let state = dir.path().join("state");
    let mut hub = Hub::start(&[
        "--state-file",
        &path_arg(&state),
        "--shutdown-timeout",
        "2s",
    ])
    .await;
    let _syncer = syncer(&hub, &dir, None);
    wait_services(&hub, None).await;
    // The periodic save has run; remove its file so only the shutdown
    // save can bring it back.
    eventually(Duration::from_secs(10), "the periodic save", || {
        let state = state.clone();
        async move { state.exists().then_some(()) }
    })
    .await;
    std::fs::remove_file(&state).unwrap();
    // A client opens an Export stream and never says anything.
    let mut silent = hub.client(&dir, None).await;
    let (_quiet, rx) = mpsc::channel::<wire::ExportRequest>(1);
    let _stream = silent.export(ReceiverStream::new(rx)).await.unwrap();
    let started = Instant::now();
    hub.proc.signal("TERM");
    let status = hub
        .proc
        .wait_exit(Duration::from_secs(15))
        .expect("the hub exits within --shutdown-timeout with a silent stream open");
    let took = started.elapsed();
    println!("exited {took:?} after SIGTERM (--shutdown-timeout 2s)");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    let saved =
        meshdns::state_file::decode(&std::fs::read(&state).expect("state file saved at shutdown"))
            .unwrap();
    assert!(
        saved.clusters.iter().any(
            |c| c.cluster.as_ref().is_some_and(|i| i.name == "east-1") && c.services.len() == 2
        ),
        "{saved:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_pings_is_dropped() {
    let dir = TempDir::new("keepalive");
    let hub = Hub::start(&[
        "--grpc-keepalive",
        "1s",
        "--grpc-keepalive-timeout",
        "1s",
        "--cluster-ttl",
        "10m",
        "--stale-grace",
        "20m",
    ])
    .await;
    let syncer = syncer(&hub, &dir, None);
    let connected = |url: String| async move {
        let clusters = list_clusters(url).await?;
        clusters
            .iter()
            .find(|c| c.name == "east-1")
            .map(|c| c.connected)
    };
    let url = hub.grpc.clone();
    eventually(Duration::from_secs(20), "east-1 connected", || {
        let url = url.clone();
        async move { connected(url).await.filter(|c| *c) }
    })
    .await;
    // Frozen: its TCP connection stays open, it answers no PING.
    syncer.signal("STOP");
    let frozen = Instant::now();
    eventually(Duration::from_secs(30), "east-1 disconnected", || {
        let url = url.clone();
        async move { connected(url).await.filter(|c| !*c) }
    })
    .await;
    let took = frozen.elapsed();
    println!("a frozen syncer was dropped {took:?} after SIGSTOP (keepalive 1s + timeout 1s)");
    // Still live (the TTL is ten minutes): the drop came from the PINGs.
    let clusters = list_clusters(url).await.unwrap();
    let east = clusters.iter().find(|c| c.name == "east-1").unwrap();
    assert_eq!(east.state, i32::from(wire::ClusterState::Live));
    syncer.signal("CONT");
    drop(syncer);
    drop(hub);
}

/// Mints a CA and server certificate (deploy/certs/mint.sh) in `dir/pki`.
fn mint(dir: &TempDir) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/certs/mint.sh");
    let out = dir.path().join("pki");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("bash and openssl");
    assert!(status.success(), "mint.sh failed");
    out
}

/// A reader certificate signed by `pki`'s CA, valid until `seconds` from
/// now (`openssl ca -enddate`: `openssl x509` counts in days).
fn short_lived_reader(pki: &Path, seconds: u64) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(pki)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let date = |offset: i64| {
        let out = std::process::Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}", unix_now() + offset),
                "+%y%m%d%H%M%SZ",
            ])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    std::fs::write(pki.join("index.txt"), "").unwrap();
    std::fs::write(
        pki.join("ca.cnf"),
        "[ca]\ndefault_ca = fleet\n[fleet]\ndatabase = index.txt\nnew_certs_dir = .\n\
         serial = expiring.srl\ndefault_md = sha256\npolicy = any\nunique_subject = no\n\
         [any]\ncommonName = supplied\n[reader]\nbasicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature\nextendedKeyUsage = clientAuth\n\
         subjectAltName = URI:spiffe://meshdns/reader/expiring\n",
    )
    .unwrap();
    std::fs::write(pki.join("expiring.srl"), "1000\n").unwrap();
    run(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        "expiring.key",
    ]);
    run(&[
        "req",
        "-new",
        "-key",
        "expiring.key",
        "-out",
        "expiring.csr",
        "-subj",
        "/CN=expiring",
    ]);
    run(&[
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        "ca.crt",
        "-keyfile",
        "ca.key",
        "-in",
        "expiring.csr",
        "-out",
        "expiring.crt",
        "-notext",
        "-extensions",
        "reader",
        "-startdate",
        &date(-3600),
        "-enddate",
        &date(seconds as i64),
    ]);
    (pki.join("expiring.crt"), pki.join("expiring.key"))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_client_certificate_ends_its_watch_stream() {
    let dir = TempDir::new("expiring");
    let pki = mint(&dir);
    let p = |name: &str| path_arg(&pki.join(name));
    let hub = Hub::start(&[
        "--tls-cert",
        &p("server.crt"),
        "--tls-key",
        &p("server.key"),
        "--tls-client-ca",
        &p("ca.crt"),
    ])
    .await;
    let (cert, key) = short_lived_reader(&pki, 8);
    let url = hub.grpc.replace("http://", "https://");
    let mut reader = ClientAuth {
        ca: Some(pki.join("ca.crt")),
        cert: Some(cert),
        key: Some(key),
        ..ClientAuth::default()
    }
    .connect(&url)
    .await
    .unwrap();
    let mut watched = watch(&mut reader).await;
    let opened = Instant::now();
    let status = stream_error(&mut watched, Duration::from_secs(40))
        .await
        .expect("the watch stream ends when its certificate expires");
    println!(
        "the stream ended {:?} after it opened (8s certificate)",
        opened.elapsed()
    );
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status}");
    assert!(
        status.message().contains("client certificate expired"),
        "{}",
        status.message()
    );
    drop(hub);
}

/// README: a Hello for another cluster is refused with PermissionDenied
/// and logged, naming the cluster and the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_for_another_cluster_is_refused_and_logged() {
    let dir = TempDir::new("spoof-log");
    let file = tokens(&dir, &[(EAST, "cluster:east-1")]);
    let hub = Hub::start(&["--token-file", &path_arg(&file)]).await;
    let mut east = hub.client(&dir, Some(EAST)).await;
    let err = export(&mut east, "west-1")
        .await
        .expect_err("east-1 may not speak for west-1");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    let line = hub
        .logs
        .wait(Duration::from_secs(10), "the refusal in the log", |l| {
            l.contains("refused hello").then(|| l.to_owned())
        })
        .await;
    assert!(
        line.contains("WARN") && line.contains("west-1") && line.contains("east-1"),
        "{line}"
    );
}
