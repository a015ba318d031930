//! Helpers for the end-to-end tests: real servers and syncers on loopback,
//! and a strict DNS client.
//!
//! - [`TestServer`]: `meshdns serve` in-process on ephemeral ports.
//! - [`TestSyncer`]: a file-source syncer in-process, or [`bin`] to run the
//!   built binaries as processes.
//! - [`dns`]: a DNS client on hickory-proto that rejects trailing bytes and
//!   malformed replies.
//! - [`fleet`]: writes export files.
//! - [`demo::DemoProc`]: `meshdns demo` as a process.
//! - [`wire`]: DNS packets built byte by byte.

// Test support: a failed unwrap is a failed test, with its location.
#![allow(clippy::unwrap_used)]

pub mod demo;
pub mod dns;
pub mod export_file;
pub mod export_stream;
pub mod fake_kube;
pub mod fleet;
pub mod fuzz_checks;
pub mod history;
pub mod kube_syncer;
pub mod logs;
pub mod raw_export;
pub mod unbound;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use meshdns::config::ServeArgs;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The DNS, gRPC and admin listeners of `meshdns serve` or `demo`, each
/// on loopback port 0: the process logs or prints the ports it got.
pub const LOOPBACK_PORT_0: [&str; 6] = [
    "--dns-listen",
    "127.0.0.1:0",
    "--grpc-listen",
    "127.0.0.1:0",
    "--admin-listen",
    "127.0.0.1:0",
];

/// A `meshdns serve` running in this process.
#[derive(Debug)]
pub struct TestServer {
    pub dns: SocketAddr,
    /// Every DNS address, when more than one `--dns-listen` was given.
    pub dns_all: Vec<SocketAddr>,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), meshdns::Error>>,
}

impl TestServer {
    /// Starts a server on ephemeral loopback ports with `--insecure` and
    /// the given extra flags.
    pub async fn start(extra: &[&str]) -> Self {
        Self::start_at("127.0.0.1:0".parse().unwrap(), extra).await
    }

    /// Like [`start`](Self::start) with gRPC on `grpc` (to restart a
    /// registry where its syncers expect it).
    pub async fn start_at(grpc: SocketAddr, extra: &[&str]) -> Self {
        let grpc_flag = grpc.to_string();
        let mut argv = vec![
            "--insecure",
            "--dns-listen",
            "127.0.0.1:0",
            "--grpc-listen",
            &grpc_flag,
            "--admin-listen",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(extra);
        let args = ServeArgs::from_flags(&argv).expect("test flags parse");
        let config = args.config().expect("test config is valid");
        let mut listeners = None;
        // Rebinding a just-closed gRPC port can race with the old socket.
        for _ in 0..50 {
            match meshdns::Listeners::bind(
                &args.dns_listen,
                args.grpc_listen,
                args.admin_listen,
                args.udp_sockets(),
            )
            .await
            {
                Ok(l) => {
                    listeners = Some(l);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let listeners = listeners.expect("bind test listeners");
        let dns_all: Vec<SocketAddr> = listeners
            .dns_udp
            .iter()
            .map(|s| s.local_addr().unwrap())
            .collect();
        let dns = dns_all[0];
        let grpc = listeners.grpc.local_addr().unwrap();
        let admin = listeners.admin.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(meshdns::serve(config, listeners, shutdown.clone()));
        TestServer {
            dns,
            dns_all,
            grpc,
            admin,
            shutdown,
            task,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The registry's clusters, as `ListClusters` answers.
    pub async fn clusters(&self) -> Vec<meshdns_proto::wire::ClusterInfo> {
        list_clusters(self.grpc_url())
            .await
            .expect("ListClusters answers")
    }

    /// Shuts the server down and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(15), self.task)
            .await
            .expect("server stops within 15s");
        result.expect("server task").expect("server exits cleanly");
    }
}

/// A file-source syncer running in this process.
#[derive(Debug)]
pub struct TestSyncer {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), meshdns_syncer::Error>>,
}

impl TestSyncer {
    /// Starts `meshdns-syncer --source file:PATH --registry URL...` with a
    /// fast heartbeat and file poll, plus `extra` flags.
    pub fn start(file: &Path, registries: &[String], extra: &[&str]) -> Self {
        let source = format!("file:{}", file.display());
        let mut argv: Vec<String> = vec![
            "meshdns-syncer".into(),
            "--insecure".into(),
            "--source".into(),
            source,
            "--heartbeat".into(),
            "200ms".into(),
            "--file-poll-interval".into(),
            "50ms".into(),
            "--max-backoff".into(),
            "500ms".into(),
        ];
        for r in registries {
            argv.push("--registry".into());
            argv.push(r.clone());
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        let args =
            meshdns_syncer::config::SyncerArgs::try_parse_from(&argv).expect("syncer flags parse");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(meshdns_syncer::run(args, shutdown.clone()));
        TestSyncer { shutdown, task }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The path of a workspace binary (`meshdns`, `meshdns-syncer`), built by
/// `cargo build --workspace --bins` before the tests run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        path.display()
    );
    path
}

/// A free loopback port for both UDP and TCP (bound then released), for
/// daemons that cannot bind port 0 and say which port they got (unbound,
/// dnsmasq): another test may take it in between, so a caller must retry
/// with a new port when the daemon fails to bind ([`Proc::start_on_free_port`]).
/// Our own binaries bind port 0 and log their addresses instead
/// ([`ServeProc`], [`logs::Logs::listening`]).
pub fn free_port() -> u16 {
    loop {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// GETs `path` from an HTTP server with a bare HTTP/1.0 request: status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    Ok((status, body))
}

/// The standard test fleet: a server and three file-source syncers
/// ([`fleet::EAST_1`], [`fleet::EAST_2`], [`fleet::west_1`]).
#[derive(Debug)]
pub struct Fleet {
    pub server: TestServer,
    pub syncers: Vec<TestSyncer>,
    pub dir: fleet::TempDir,
    pub files: Vec<PathBuf>,
}

impl Fleet {
    /// Starts it and waits until every cluster's data answers.
    pub async fn start(server_flags: &[&str]) -> Self {
        let server = TestServer::start(server_flags).await;
        let dir = fleet::TempDir::new("fleet");
        let files = vec![
            dir.write("east-1.yaml", fleet::EAST_1),
            dir.write("east-2.yaml", fleet::EAST_2),
            dir.write("west-1.yaml", &fleet::west_1()),
        ];
        let syncers = files
            .iter()
            .map(|f| TestSyncer::start(f, &[server.grpc_url()], &[]))
            .collect();
        let fleet = Fleet {
            server,
            syncers,
            dir,
            files,
        };
        fleet.wait_ready().await;
        fleet
    }

    /// Waits until every service of the fleet exists and `web.shop`
    /// answers with the ready addresses of all three clusters.
    pub async fn wait_ready(&self) {
        let dns = self.server.dns;
        for svc in ["db.data", "api.shop", "big.shop", "drain.shop", "dark.shop"] {
            let name = format!("{svc}.global");
            eventually(Duration::from_secs(10), &name, || {
                let ask = dns::Ask::new(&name, dns::Type::SOA).tcp();
                async move {
                    let m = dns::poll(dns, &ask).await?;
                    (m.metadata.response_code == hickory_proto::op::ResponseCode::NoError)
                        .then_some(())
                }
            })
            .await;
        }
        eventually(
            Duration::from_secs(10),
            "web.shop from every cluster",
            || async move {
                let m = dns::poll(dns, &dns::Ask::new("web.shop.global", dns::Type::A)).await?;
                (dns::addresses(&m).len() == 4).then_some(())
            },
        )
        .await;
    }

    pub async fn stop(self) {
        for s in self.syncers {
            s.stop().await;
        }
        self.server.stop().await;
    }
}

/// A child process, killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct Proc(pub std::process::Child);

impl Proc {
    /// Starts `program` (a workspace binary) with `args`, its stderr kept
    /// (colourless, at least `info`) for [`logs::Logs`].
    pub fn start_logged(program: &str, args: &[&str]) -> (Self, logs::Logs) {
        let mut child = std::process::Command::new(bin(program))
            .args(args)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let logs = logs::Logs::capture(child.stderr.take().expect("piped stderr"));
        (Proc(child), logs)
    }

    /// Starts a daemon that takes its port from `args(port)` on a free
    /// port; if it exits within `settle` (the port taken meanwhile by
    /// another test), tries another port.
    pub fn start_on_free_port(
        program: &str,
        args: impl Fn(u16) -> Vec<String>,
        settle: Duration,
    ) -> (Self, u16) {
        for _ in 0..5 {
            let port = free_port();
            let mut child = std::process::Command::new(program)
                .args(args(port))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("start {program}: {e}"));
            std::thread::sleep(settle);
            if child.try_wait().ok().flatten().is_none() {
                return (Proc(child), port);
            }
        }
        panic!("{program} could not bind a free port in 5 tries");
    }

    /// Starts `program` (a workspace binary) with `args`, output discarded
    /// unless `MESHDNS_TEST_LOG` is set.
    pub fn start(program: &str, args: &[&str]) -> Self {
        let quiet = std::env::var_os("MESHDNS_TEST_LOG").is_none();
        let output = || {
            if quiet {
                std::process::Stdio::null()
            } else {
                std::process::Stdio::inherit()
            }
        };
        let child = std::process::Command::new(bin(program))
            .args(args)
            .stdout(output())
            .stderr(output())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        Proc(child)
    }

    /// Starts `cmd` with stdout and stderr piped, for the test to read.
    pub fn spawn(cmd: &mut std::process::Command) -> Self {
        Proc(
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn"),
        )
    }

    /// SIGTERM, and the exit status; panics if the process is still
    /// running 10 seconds later.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|| panic!("process {} did not exit on SIGTERM", self.0.id()))
    }

    /// A `meshdns-syncer` process publishing the export file `file` to
    /// `registry` in plaintext, heartbeat every 200 ms, then `extra` flags.
    pub fn file_syncer(file: &Path, registry: &str, extra: &[&str]) -> Self {
        let source = format!("file:{}", file.display());
        let mut args = vec![
            "--insecure",
            "--registry",
            registry,
            "--source",
            &source,
            "--heartbeat",
            "200ms",
        ];
        args.extend_from_slice(extra);
        Proc::start("meshdns-syncer", &args)
    }

    /// Sends a signal by name (`KILL`, `STOP`, `CONT`, `TERM`) to the process, by PID.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} {}", self.0.id());
    }

    /// Waits up to `limit` for the process to exit.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `meshdns serve --insecure` as a process on port 0 everywhere; its
/// ports read from its log.
#[derive(Debug)]
pub struct ServeProc {
    pub proc: Proc,
    pub logs: logs::Logs,
    pub dns: SocketAddr,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

impl ServeProc {
    pub async fn start(extra: &[&str]) -> Self {
        let mut args = vec!["serve", "--insecure"];
        args.extend_from_slice(&LOOPBACK_PORT_0);
        args.extend_from_slice(extra);
        let (proc, logs) = Proc::start_logged("meshdns", &args);
        let dns = logs.listening("dns udp listening").await;
        let grpc = logs.listening("grpc registry listening").await;
        let admin = logs.listening("admin listening").await;
        ServeProc {
            proc,
            logs,
            dns,
            grpc,
            admin,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }
}

/// A TCP proxy that can be frozen: connections stay open, no byte passes
/// (a partition that TCP does not notice), until thawed.
#[derive(Debug, Clone)]
pub struct FreezableProxy {
    pub addr: SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl FreezableProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, _) = tokio::sync::watch::channel(false);
        let proxy = FreezableProxy { addr, frozen };
        let state = proxy.frozen.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, state.subscribe()));
                tokio::spawn(pipe(ro, wi, state.subscribe()));
            }
        });
        proxy
    }

    pub fn freeze(&self, frozen: bool) {
        self.frozen.send_replace(frozen);
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: tokio::sync::watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Resident memory of process `pid` in KiB, from /proc. Panics when it
/// cannot be read: a memory check must never pass on a zero.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .filter(|kib| *kib > 0)
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// `ListClusters` at the registry `url`; `None` when it cannot be asked
/// (not up yet), for polling.
pub async fn list_clusters(url: String) -> Option<Vec<meshdns_proto::wire::ClusterInfo>> {
    let mut client = meshdns_proto::wire::registry_client::RegistryClient::connect(url)
        .await
        .ok()?;
    let reply = client
        .list_clusters(meshdns_proto::wire::ListClustersRequest {})
        .await
        .ok()?;
    Some(reply.into_inner().clusters)
}

/// Waits up to `limit` until the registry at `url` lists `count`
/// clusters, each live and connected (its syncer back after a restart).
pub async fn wait_clusters_live(url: String, count: usize, limit: Duration) {
    let what = format!("{count} live clusters");
    eventually(limit, &what, || {
        let url = url.clone();
        async move {
            let clusters = list_clusters(url).await?;
            let live = |c: &meshdns_proto::wire::ClusterInfo| {
                c.state == meshdns_proto::wire::ClusterState::Live as i32 && c.connected
            };
            (clusters.len() == count && clusters.iter().all(live)).then_some(())
        }
    })
    .await;
}
