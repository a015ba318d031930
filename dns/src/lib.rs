//! meshdns: the fleet-wide registry of exported services and its
//! authoritative DNS server for `<svc>.<ns>.global`.
//!
//! # Layout
//!
//! - [`config`]: `meshdns serve` flags, checked into a [`config::ServeConfig`].
//! - [`auth`]: who is calling: mTLS SPIFFE identities, bearer tokens.
//! - [`grpc_listener`]: the gRPC listener's connections, counted and capped.
//! - [`tls`]: the gRPC listener's TLS, re-read when its files change.
//! - [`ingest`]: the gRPC `Registry` service: wire -> model -> registry.
//! - [`fleet`]: `--clusters`: what each cluster may claim (CIDRs, namespaces, limits).
//! - [`bounded`]: operators' files read with a size cap, compared by digest.
//! - [`policy`]: `--policy`: the traffic policy (weights, drains, failover orders), re-read on change.
//! - [`follow`]: `serve --follow`: mirror another registry through Watch.
//! - [`registry`]: the writer side; publishes [`snapshot::Snapshot`]s.
//! - [`snapshot`]: the immutable read side, shaped for answering.
//! - [`locality`]: asker address -> cluster (longest prefix match).
//! - [`qname`]: query name -> what it asks for (pure).
//! - [`select`]: which healthy targets answer an asker (pure).
//! - [`authority`]: request bytes -> answer model -> response bytes; every DNS rule; the hickory glue.
//! - [`fast`]: the UDP fast path for A/AAAA of a service name, or its absence.
//! - [`udp`]: UDP workers: SO_REUSEPORT sockets, recvmmsg/sendmmsg batches.
//! - [`server`]: the DNS-over-TCP listener.
//! - [`rrl`]: response rate limiting for UDP, per source prefix.
//! - [`cookie`]: DNS Cookies (RFC 7873, server cookies as in RFC 9018).
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/debug/registry`, `/debug/answer`.
//! - [`state_file`]: `--state-file`: persist the registry, restore it as stale.
//! - [`json`]: registry state as JSON, one schema for `/debug/registry` and
//!   `meshdns status --output json`.
//! - [`state_wire`]: the registry's state on the wire, both ways (Watch, the
//!   follower, the state file, `ListClusters`).
//! - [`metrics`]: Prometheus metrics; lock-free on the answer path.
//! - [`demo`]: `meshdns demo`, the embedded three-cluster fleet.
//! - [`status`]: `meshdns status`, the fleet table from a registry.
//! - [`check`]: `meshdns check`, pass/fail checks of a fleet from where it runs.
//! - [`drill`]: `meshdns drill`, a disaster-recovery drill on paper: a loss, and the answers it would give.
//!
//! The entry point is [`serve`]: it takes bound listeners and a shutdown
//! token, so tests bind `127.0.0.1:0` and run a real server in-process.

// A server does not panic on a value it could handle: no `expect` outside
// tests (unit tests are compiled with `test`; they may).
#![cfg_attr(not(test), warn(clippy::expect_used))]

pub mod admin;
pub mod auth;
pub mod authority;
pub mod bounded;
pub mod check;
pub mod config;
pub mod cookie;
pub mod demo;
pub mod descriptors;
pub mod drill;
pub mod error;
pub mod fast;
pub mod fleet;
pub mod follow;
pub mod grpc_listener;
pub mod ingest;
pub mod json;
pub mod locality;
pub mod metrics;
pub mod policy;
pub mod priority;
pub mod qname;
pub mod reader;
pub mod registry;
pub mod rrl;
pub mod select;
pub mod server;
pub mod snapshot;
pub mod state_file;
pub mod state_wire;
pub mod status;
pub mod tls;
pub mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use error::Error;

use crate::admin::Readiness;
use crate::config::ServeConfig;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::registry::Registry;

/// The sockets `serve` answers on, bound beforehand so the caller knows
/// the ports (tests bind port 0).
#[derive(Debug)]
pub struct Listeners {
    /// Per address, one socket per UDP worker.
    pub dns_udp: Vec<udp::UdpListener>,
    pub dns_tcp: Vec<TcpListener>,
    pub grpc: TcpListener,
    pub admin: TcpListener,
}

async fn bind_tcp(addr: SocketAddr, what: &'static str) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, what, source })
}

impl Listeners {
    /// Binds DNS (UDP, `sockets.workers` sockets, and TCP on each address),
    /// gRPC and admin.
    pub async fn bind(
        dns: &[SocketAddr],
        grpc: SocketAddr,
        admin: SocketAddr,
        sockets: udp::UdpSockets,
    ) -> Result<Self, Error> {
        let mut dns_udp = Vec::new();
        let mut dns_tcp = Vec::new();
        for addr in dns {
            // With port 0, TCP takes the port UDP was given; that port may
            // be taken for TCP (another socket's ephemeral port), so port 0
            // tries again with another.
            let attempts = if addr.port() == 0 { 20 } else { 1 };
            for attempt in 1..=attempts {
                let udp = udp::UdpListener::bind(*addr, sockets).map_err(|source| Error::Bind {
                    addr: *addr,
                    what: "--dns-listen, udp",
                    source,
                })?;
                let tcp_addr = udp.local_addr().map_err(|source| Error::Bind {
                    addr: *addr,
                    what: "--dns-listen",
                    source,
                })?;
                match bind_tcp(tcp_addr, "--dns-listen, tcp").await {
                    Ok(tcp) => {
                        if udp.receive_buffer < sockets.receive_buffer {
                            tracing::warn!(
                                %addr,
                                asked = sockets.receive_buffer,
                                granted = udp.receive_buffer,
                                "--udp-receive-buffer: the kernel capped it (net.core.rmem_max); raise that sysctl or grant CAP_NET_ADMIN, or queries are dropped in bursts"
                            );
                        }
                        dns_tcp.push(tcp);
                        dns_udp.push(udp);
                        break;
                    }
                    Err(Error::Bind { source, .. })
                        if attempt < attempts && source.kind() == std::io::ErrorKind::AddrInUse => {
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(Listeners {
            dns_udp,
            dns_tcp,
            grpc: bind_tcp(grpc, "--grpc-listen").await?,
            admin: bind_tcp(admin, "--admin-listen").await?,
        })
    }
}

/// Marks silent clusters stale and purges them, often enough that a
/// cluster leaves answers within a tenth of `cluster_ttl` of going stale.
async fn sweep(
    writer: registry::Writer,
    liveness: registry::Liveness,
    shutdown: CancellationToken,
) {
    let period =
        (liveness.cluster_ttl / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => writer.sweep(std::time::Instant::now(), liveness).await,
        }
    }
}

/// Runs admin HTTP on a thread and runtime of its own: probes and scrapes
/// are answered in milliseconds even while a reconnect storm keeps the
/// main runtime's workers busy decoding a thousand Snapshots (tasks there
/// wait their turn behind every ready stream). Resolves when it stops.
fn serve_admin(
    listener: TcpListener,
    state: admin::AdminState,
    shutdown: CancellationToken,
) -> Result<tokio::sync::oneshot::Receiver<()>, Error> {
    let failed = |source: std::io::Error| Error::Serve {
        what: "admin thread",
        source: Box::new(source),
    };
    let listener = listener.into_std().map_err(failed)?;
    let (done, finished) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("meshdns-admin".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the admin runtime");
                    return;
                }
            };
            runtime.block_on(async move {
                let served = match TcpListener::from_std(listener) {
                    Ok(listener) => admin::serve(listener, state, shutdown).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = served {
                    tracing::error!(error = %e, "admin HTTP failed");
                }
            });
            let _ = done.send(());
        })
        .map_err(failed)?;
    Ok(finished)
}

/// Runs the registry, DNS and admin listeners until `shutdown` fires.
pub async fn serve(
    config: ServeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    // Before the first control-plane thread (the registry's reaper) starts.
    priority::set_control_plane_nice(config.control_plane_nice);
    // Every connection the caps admit is a descriptor: the process may
    // open that many (or says it cannot).
    let connections = (listeners.dns_tcp.len() * config.limits.max_tcp_connections)
        .saturating_add(config.grpc_connections.max)
        .saturating_add(meshdns_cli::connections::Limits::ADMIN.max);
    descriptors::raise_for(connections as u64);
    // Observability: certificate expiry and, on a follower, its upstream link.
    let metrics = Metrics::new().with_certificates(config.certificates.clone());
    let metrics = Arc::new(match &config.follow {
        Some(upstream) => metrics.with_follower(upstream),
        None => metrics,
    });
    let registry = Arc::new(
        Registry::new(
            config.authority.ttl,
            config.authority.reverse(),
            metrics.clone(),
        )
        .with_max_services(config.limits.max_services_per_cluster),
    );
    // A follower keeps the policy it saved until its upstream's Reset; a
    // hub keeps it only while it has --policy (the file's last good one).
    let keep_policy = config.follow.is_some() || config.policy.is_some();
    let restored = match &config.state_file {
        // A hub restores liveness by its own ttl; a follower, its upstream's.
        Some(path) => state_file::load(
            &registry,
            path,
            keep_policy,
            config
                .follow
                .is_none()
                .then_some(config.liveness.cluster_ttl),
        ),
        None => state_file::Restored::default(),
    };
    // The policy file, read before anything answers.
    let policy_read = match &config.policy {
        None => None,
        Some(path) => {
            let mut start = policy::watch::at_start(path, restored.policy, &metrics);
            if let Some(policy) = start.policy.take() {
                if restored.policy {
                    policy::watch::log_changes(path, &registry.policy(), &policy);
                }
                registry.set_policy(Arc::new(policy));
            }
            Some((path.clone(), start))
        }
    };
    // From here on, every write goes through the writer thread.
    let writer = registry::Writer::spawn(registry.clone()).map_err(|source| Error::Serve {
        what: "registry writer thread",
        source: Box::new(source),
    })?;
    let authority = Arc::new(config.authority);
    let ready = Arc::new(Readiness::default());
    let mut tasks = tokio::task::JoinSet::new();
    if let Some((path, start)) = policy_read {
        tasks.spawn(policy::watch::follow(
            path,
            registry.clone(),
            writer.clone(),
            metrics.clone(),
            start,
            shutdown.clone(),
        ));
    }
    let answerer = udp::Answerer {
        registry: registry.clone(),
        authority: authority.clone(),
        metrics: metrics.clone(),
        rrl: (config.dns_abuse.rrl_rate > 0).then(|| {
            Arc::new(rrl::RateLimiter::new(
                config.dns_abuse.rrl_rate,
                config.dns_abuse.rrl_slip,
            ))
        }),
    };
    for listener in listeners.dns_udp {
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), workers = listener.sockets.len(), "dns udp listening");
        for socket in listener.sockets {
            let answerer = answerer.clone();
            let stop = shutdown.clone();
            // A plain thread, not the runtime's blocking pool: a runtime
            // dropped without a shutdown must not wait for it.
            let (done, finished) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name("meshdns-udp".into())
                .spawn(move || {
                    udp::serve(socket, answerer, stop);
                    let _ = done.send(());
                })
                .map_err(|source| Error::Serve {
                    what: "udp worker thread",
                    source: Box::new(source),
                })?;
            tasks.spawn(async move {
                let _ = finished.await;
            });
        }
    }
    for listener in listeners.dns_tcp {
        info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "dns tcp listening");
        tasks.spawn(server::serve_tcp(
            listener,
            registry.clone(),
            authority.clone(),
            metrics.clone(),
            server::TcpLimits {
                max_connections: config.limits.max_tcp_connections,
                max_per_source: config.dns_abuse.max_tcp_connections_per_source,
                idle: config.limits.tcp_idle_timeout,
                lifetime: config.limits.max_tcp_connection_lifetime,
            },
            shutdown.clone(),
        ));
    }
    let mut saver = None;
    if let Some(path) = config.state_file.clone() {
        let token = CancellationToken::new();
        saver = Some((
            tokio::spawn(state_file::run(
                registry.clone(),
                writer.clone(),
                path,
                Duration::from_secs(2),
                token.clone(),
            )),
            token,
        ));
    }
    match &config.follow {
        // A follower takes liveness from its upstream; it never sweeps.
        Some(url) => {
            info!(upstream = %url, "following another registry");
            tasks.spawn(follow::run(
                url.clone(),
                config.follow_auth.clone(),
                writer.clone(),
                config.limits.max_grpc_message_bytes,
                metrics.follower.clone(),
                config.follow_stale_after,
                shutdown.clone(),
            ));
        }
        None => {
            tasks.spawn(sweep(writer.clone(), config.liveness, shutdown.clone()));
        }
    }
    let auth = Arc::new(
        auth::Auth::new(
            config.trust_domain.clone(),
            config.token_file.clone(),
            config.tls.as_ref().is_some_and(|t| t.client_ca.is_some()),
            metrics.clone(),
        )
        .map_err(|e| Error::Config {
            flag: "--token-file",
            problem: match &config.token_file {
                Some(path) => format!("{}: {e}", path.display()),
                None => e.to_string(),
            },
        })?,
    );
    tasks.spawn(auth.clone().follow_tokens(shutdown.clone()));
    let admin_state = admin::AdminState {
        ready: ready.clone(),
        wait_for_data: config.ready_wait_data,
        registry: registry.clone(),
        writer: writer.clone(),
        authority: authority.clone(),
        metrics: metrics.clone(),
        auth: auth.clone(),
    };
    info!(addr = %listeners.admin.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin listening");
    let admin = serve_admin(listeners.admin, admin_state, shutdown.clone())?;
    info!(addr = %listeners.grpc.local_addr().map(|a| a.to_string()).unwrap_or_default(), tls = config.tls.is_some(), "grpc registry listening");
    let fleet = Arc::new(
        fleet::Fleet::load(config.clusters.clone()).map_err(|problem| Error::Config {
            flag: "--clusters",
            problem,
        })?,
    );
    tasks.spawn(fleet.clone().follow(metrics.clone(), shutdown.clone()));
    tasks.spawn(fleet.clone().enforce(writer.clone(), shutdown.clone()));
    let lifetimes = config.lifetimes;
    // A peer that stops answering PINGs (frozen, partitioned, its host
    // gone) is dropped in keepalive + timeout, and its stream ends.
    // What a connection can make the hub buffer is set here, not left to
    // hyper's defaults (1 MiB per stream and per connection, 200 streams):
    // data a stream sent that its handler has not read sits in h2 up to
    // its stream window, and all of a connection's up to its window.
    let windows = config.grpc_windows;
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(lifetimes.grpc_keepalive))
        .http2_keepalive_timeout(Some(lifetimes.grpc_keepalive_timeout))
        .initial_stream_window_size(windows.stream)
        .initial_connection_window_size(windows.connection)
        .max_concurrent_streams(windows.max_streams)
        .add_service(
            Ingest::with_imports(
                registry.clone(),
                writer.clone(),
                metrics.clone(),
                auth.clone(),
                fleet,
                config.limits,
                shutdown.clone(),
                // The clusterset's first-exported times beside the state.
                config
                    .state_file
                    .as_deref()
                    .map(registry::imports::first_exported_path),
                config.liveness.cluster_ttl,
            )
            .following(config.follow.clone())
            .answering(authority.max_answers, authority.min_healthy)
            .into_server(),
        );
    let tcp = grpc_listener::incoming(
        listeners.grpc,
        lifetimes.grpc_keepalive,
        config.grpc_connections,
        metrics.clone(),
    );
    let stopped = shutdown.clone().cancelled_owned();
    type Served = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), tonic::transport::Error>> + Send>,
    >;
    let grpc: Served = match &config.tls {
        // TLS is ours rather than tonic's, so that the certificate, key
        // and client CA can change under a running server (tls.rs).
        Some(pem) => {
            let tls = tls::ReloadingTls::new(pem, metrics.clone()).map_err(|e| Error::Config {
                flag: e.flag(),
                problem: e.to_string(),
            })?;
            tasks.spawn(tls.clone().follow(shutdown.clone()));
            Box::pin(
                router.serve_with_incoming_shutdown(
                    tls::incoming(tcp, tls, shutdown.clone()),
                    stopped,
                ),
            )
        }
        None => Box::pin(router.serve_with_incoming_shutdown(tcp, stopped)),
    };
    ready.set(true);
    // Unready the moment shutdown begins, so load balancers stop first.
    let unready = ready.clone();
    let stopping = shutdown.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        unready.set(false);
    });
    let mut grpc = grpc;
    let stopped_alone = tokio::select! {
        result = &mut grpc => Some(result),
        _ = shutdown.cancelled() => None,
    };
    ready.set(false);
    // From here everything is bounded by --shutdown-timeout: the first
    // half drains connections and tasks, the rest saves the state file.
    let deadline = tokio::time::Instant::now() + lifetimes.shutdown_timeout;
    let drained_by = deadline - lifetimes.shutdown_timeout / 2;
    // If gRPC stopped on its own, stop the rest with it.
    shutdown.cancel();
    let result = match stopped_alone {
        Some(result) => result,
        // tonic waits for every connection to close; a client that keeps
        // its stream open (one that never sent Hello, say) must not keep
        // the process alive. Its connection dies with the process.
        None => match tokio::time::timeout_at(drained_by, &mut grpc).await {
            Ok(result) => result,
            Err(_) => {
                warn!(
                    timeout = ?lifetimes.shutdown_timeout,
                    "grpc connections still open at the --shutdown-timeout drain deadline; leaving them"
                );
                Ok(())
            }
        },
    };
    // Streams were told to end; stragglers get what is left of the drain.
    let _ = tokio::time::timeout_at(drained_by, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let _ = tokio::time::timeout_at(drained_by, admin).await;
    // Last: persist what the registry knows.
    if let Some((task, token)) = saver {
        token.cancel();
        if tokio::time::timeout_at(deadline, task).await.is_err() {
            warn!(timeout = ?lifetimes.shutdown_timeout, "the state file was not saved within --shutdown-timeout");
        }
    }
    result.map_err(|e| Error::Serve {
        what: "grpc server",
        source: Box::new(e),
    })
}
