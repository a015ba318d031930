//! Command line and environment configuration of `meshdns serve`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use meshdns_proto::duration;

use crate::authority::Authority;
use crate::error::Error;
use crate::qname::Domain;
use crate::registry::Liveness;

/// Far more gRPC connections than file descriptors allow.
const MAX_GRPC_CONNECTIONS: usize = 1 << 20;

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

/// Most UDP workers per address: each is a thread and a socket.
pub const MAX_WORKERS: usize = 256;

/// The most `--max-endpoints-per-service` may be: one cluster's part of a
/// service then weighs less than 2⁶⁴ at the largest weights (see
/// `snapshot::chain::Ends`).
pub const MAX_ENDPOINTS_PER_SERVICE: usize = 1_000_000;

/// `meshdns serve` flags. Every flag can also be set as `MESHDNS_<FLAG>`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address for DNS over UDP and TCP (repeatable).
    #[arg(
        long = "dns-listen",
        env = "MESHDNS_DNS_LISTEN",
        value_delimiter = ',',
        default_value = "0.0.0.0:53"
    )]
    pub dns_listen: Vec<SocketAddr>,
    /// UDP worker threads per --dns-listen address, each with its own socket (SO_REUSEPORT); 0 means one per CPU.
    #[arg(long = "workers", env = "MESHDNS_WORKERS", default_value_t = 0)]
    pub workers: usize,
    /// Receive buffer of each UDP socket, in bytes: queries wait there while the workers are busy (a burst, a reconnect storm), and what does not fit is dropped unanswered. Asked with SO_RCVBUFFORCE when the process may (CAP_NET_ADMIN), else SO_RCVBUF, which the net.core.rmem_max sysctl caps (a warning says so at start). 0 keeps the kernel's default.
    #[arg(
        long = "udp-receive-buffer",
        env = "MESHDNS_UDP_RECEIVE_BUFFER",
        default_value_t = crate::udp::receive_buffer::DEFAULT
    )]
    pub udp_receive_buffer: usize,
    /// Nice value (0–19) of the control plane's threads: the registry writer, Export validation, state-file saves and the reaper. The DNS workers and the admin endpoint keep the process's own priority, so when a reconnect storm and DNS want the same core DNS gets the larger share (about nine tenths at 10); while DNS is idle the control plane has the whole machine. 0 treats them alike.
    #[arg(
        long = "control-plane-nice",
        env = "MESHDNS_CONTROL_PLANE_NICE",
        default_value_t = crate::priority::DEFAULT_NICE,
        value_parser = clap::value_parser!(u8).range(0..=i64::from(crate::priority::MAX_NICE))
    )]
    pub control_plane_nice: u8,
    /// Address for the gRPC registry (syncers' Export streams, Watch, status).
    #[arg(
        long = "grpc-listen",
        env = "MESHDNS_GRPC_LISTEN",
        default_value = "0.0.0.0:7443"
    )]
    pub grpc_listen: SocketAddr,
    /// Address for admin HTTP: /healthz and /readyz.
    #[arg(
        long = "admin-listen",
        env = "MESHDNS_ADMIN_LISTEN",
        default_value = "0.0.0.0:9153"
    )]
    pub admin_listen: SocketAddr,
    /// Domain to serve (repeatable). `clusterset.local` uses the MCS layout.
    #[arg(
        long = "domain",
        env = "MESHDNS_DOMAIN",
        value_delimiter = ',',
        default_value = "global"
    )]
    pub domain: Vec<String>,
    /// A cluster silent this long is stale (its liveness is tracked from heartbeats).
    #[arg(long = "cluster-ttl", env = "MESHDNS_CLUSTER_TTL", default_value = "15s", value_parser = parse_duration)]
    pub cluster_ttl: Duration,
    /// TTL of answers, unless a service's policy says otherwise.
    #[arg(long = "ttl", env = "MESHDNS_TTL", default_value = "5s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// How long resolvers may cache NXDOMAIN and NODATA (the SOA minimum).
    #[arg(long = "negative-ttl", env = "MESHDNS_NEGATIVE_TTL", default_value = "5s", value_parser = parse_duration)]
    pub negative_ttl: Duration,
    /// Most addresses (or SRV records) in one answer, rotated between queries.
    #[arg(long = "max-answers", env = "MESHDNS_MAX_ANSWERS", default_value_t = 8)]
    pub max_answers: usize,
    /// Healthy endpoints a locality tier needs to answer alone; with fewer it spills over to the next.
    #[arg(long = "min-healthy", env = "MESHDNS_MIN_HEALTHY", default_value_t = 1)]
    pub min_healthy: usize,
    /// A stale cluster's data is purged after this long without a heartbeat.
    #[arg(long = "stale-grace", env = "MESHDNS_STALE_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub stale_grace: Duration,
    /// Also serve in-addr.arpa and ip6.arpa: PTR records for exported addresses.
    #[arg(long = "reverse", env = "MESHDNS_REVERSE")]
    pub reverse: bool,
    /// Most services one cluster may export; more are refused, naming this limit.
    #[arg(
        long = "max-services-per-cluster",
        env = "MESHDNS_MAX_SERVICES_PER_CLUSTER",
        default_value_t = 10_000
    )]
    pub max_services_per_cluster: usize,
    /// Most endpoints one service export may carry; a bigger export is refused, naming this limit.
    #[arg(
        long = "max-endpoints-per-service",
        env = "MESHDNS_MAX_ENDPOINTS_PER_SERVICE",
        default_value_t = 10_000
    )]
    pub max_endpoints_per_service: usize,
    /// Most Export streams open at once.
    #[arg(
        long = "max-export-streams",
        env = "MESHDNS_MAX_EXPORT_STREAMS",
        default_value_t = 5_000
    )]
    pub max_export_streams: usize,
    /// Most Watch streams (followers, tools) open at once; more are refused with RESOURCE_EXHAUSTED, naming this limit. The default holds two edge followers for each of 1,000 member clusters (about 180 KiB of memory per stream).
    #[arg(
        long = "max-watch-streams",
        env = "MESHDNS_MAX_WATCH_STREAMS",
        default_value_t = 2_048
    )]
    pub max_watch_streams: usize,
    /// Most WatchImports streams (syncers with --mcs-status, tools) open at once, a pool apart from --max-watch-streams; one cluster credential holds at most 2. More are refused with RESOURCE_EXHAUSTED, naming this limit.
    #[arg(
        long = "max-import-streams",
        env = "MESHDNS_MAX_IMPORT_STREAMS",
        default_value_t = 1_024
    )]
    pub max_import_streams: usize,
    /// A Watch reader that leaves its Reset (or a later part) unread this long is cut off with RESOURCE_EXHAUSTED.
    #[arg(long = "watch-stall-timeout", env = "MESHDNS_WATCH_STALL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub watch_stall_timeout: Duration,
    /// Largest gRPC message accepted, in bytes (syncers split bigger Snapshots into parts). Before a stream's Hello is authorized, 32 KiB.
    #[arg(long = "max-grpc-message-bytes", env = "MESHDNS_MAX_GRPC_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_grpc_message_bytes: usize,
    /// An Export stream must send its Hello within this long, or it is closed.
    #[arg(long = "hello-timeout", env = "MESHDNS_HELLO_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub hello_timeout: Duration,
    /// An Export message, once its first byte has arrived, must arrive whole within this long, or the stream is closed with DEADLINE_EXCEEDED (a member that sends slowly, or starts a message and never finishes it, holds up to --max-grpc-message-bytes). Counted only while the registry waits for the message. The default lets a 4 MiB message arrive at 140 KB/s.
    #[arg(long = "export-message-timeout", env = "MESHDNS_EXPORT_MESSAGE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub export_message_timeout: Duration,
    /// Most Export streams open at once that have not yet had their Hello authorized (they hold no --max-export-streams slot).
    #[arg(
        long = "max-pending-hellos",
        env = "MESHDNS_MAX_PENDING_HELLOS",
        default_value_t = 1_024
    )]
    pub max_pending_hellos: usize,
    /// Most bytes of Export messages (bigger than 4 KiB, after the Hello) all streams together may be receiving at once. A stream reserves a message's announced length when its header arrives, before reading its body; while this is taken it reads no further (HTTP/2 flow control holds the sender back) and its --export-message-timeout does not run. At least --max-grpc-message-bytes.
    #[arg(long = "max-export-bytes-in-flight", env = "MESHDNS_MAX_EXPORT_BYTES_IN_FLIGHT", default_value_t = 64 * 1024 * 1024)]
    pub max_export_bytes_in_flight: usize,
    /// HTTP/2 receive window of each gRPC stream: the most a client can make the hub buffer for a stream whose handler is not reading (waiting for the budget, its Hello authorized, a message applied).
    #[arg(long = "grpc-stream-window-bytes", env = "MESHDNS_GRPC_STREAM_WINDOW_BYTES", default_value_t = 256 * 1024)]
    pub grpc_stream_window_bytes: u32,
    /// HTTP/2 receive window of each gRPC connection, all its streams together: the most unread request data one connection can make the hub buffer.
    #[arg(long = "grpc-connection-window-bytes", env = "MESHDNS_GRPC_CONNECTION_WINDOW_BYTES", default_value_t = 1024 * 1024)]
    pub grpc_connection_window_bytes: u32,
    /// Most gRPC streams open at once on one connection (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS); a syncer uses two, a follower one.
    #[arg(
        long = "max-grpc-streams-per-connection",
        env = "MESHDNS_MAX_GRPC_STREAMS_PER_CONNECTION",
        default_value_t = 32
    )]
    pub max_grpc_streams_per_connection: u32,
    /// Most gRPC connections open at once, all sources; more wait to be accepted. Each can make the hub buffer up to --grpc-connection-window-bytes and about 42 KB of connection state.
    #[arg(
        long = "max-grpc-connections",
        env = "MESHDNS_MAX_GRPC_CONNECTIONS",
        default_value_t = 4_096
    )]
    pub max_grpc_connections: usize,
    /// Most gRPC connections open at once from one source address; more are closed on accept. Behind a proxy or load balancer every member shares its address: raise this to --max-grpc-connections there.
    #[arg(
        long = "max-grpc-connections-per-source",
        env = "MESHDNS_MAX_GRPC_CONNECTIONS_PER_SOURCE",
        default_value_t = 1_024
    )]
    pub max_grpc_connections_per_source: usize,
    /// Fleet file (YAML): per cluster, the client CIDRs, endpoint CIDRs and namespaces it may claim and its services limit; clusters not named may not export. Re-read on change (at most 1 MiB; applied once two reads a second apart agree); a bad or oversized file keeps the last good one. A reload ends the streams of clusters whose rules changed and removes what the new rules refuse.
    #[arg(long = "clusters", env = "MESHDNS_CLUSTERS")]
    pub clusters: Option<std::path::PathBuf>,
    /// Traffic policy file (YAML): per cluster weight, drain and provider; per service (namespace/name) weight and drain overrides, failover order, primary and min-healthy; per region a default failover order. Re-read on change; a bad file keeps the policy in force. Followers take their upstream's policy instead.
    #[arg(long = "policy", env = "MESHDNS_POLICY")]
    pub policy: Option<std::path::PathBuf>,
    /// Most DNS-over-TCP connections open at once; more wait to be accepted.
    #[arg(
        long = "max-tcp-connections",
        env = "MESHDNS_MAX_TCP_CONNECTIONS",
        default_value_t = 1_024
    )]
    pub max_tcp_connections: usize,
    /// A DNS-over-TCP connection is closed this long after its last answered query (or its opening); messages that get no answer do not count.
    #[arg(long = "tcp-idle-timeout", env = "MESHDNS_TCP_IDLE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub tcp_idle_timeout: Duration,
    /// A DNS-over-TCP connection is closed this long after it was accepted, however busy (once the replies to what it sent are written).
    #[arg(long = "max-tcp-connection-lifetime", env = "MESHDNS_MAX_TCP_CONNECTION_LIFETIME", default_value = "120s", value_parser = parse_duration)]
    pub max_tcp_connection_lifetime: Duration,
    /// Most DNS-over-TCP connections open at once from one source address; more are closed on accept.
    #[arg(
        long = "max-tcp-connections-per-source",
        env = "MESHDNS_MAX_TCP_CONNECTIONS_PER_SOURCE",
        default_value_t = 32
    )]
    pub max_tcp_connections_per_source: usize,
    /// Response rate limit: UDP responses a second per source prefix (/24 IPv4, /56 IPv6); 0 turns it off. Queries with a valid DNS server cookie are not limited.
    #[arg(long = "rrl-rate", env = "MESHDNS_RRL_RATE", default_value_t = 0)]
    pub rrl_rate: u32,
    /// With --rrl-rate: every Nth limited response goes out truncated (TC set) so a real client retries over TCP; 0 drops all, 1 truncates all.
    #[arg(long = "rrl-slip", env = "MESHDNS_RRL_SLIP", default_value_t = 2)]
    pub rrl_slip: u32,
    /// A file holding the DNS Cookie server secret (32 hex digits, e.g. `openssl rand -hex 16`), so replicas behind one address accept each other's cookies; random per process without it.
    #[arg(long = "cookie-secret-file", env = "MESHDNS_COOKIE_SECRET_FILE")]
    pub cookie_secret_file: Option<std::path::PathBuf>,
    /// The name server identifier (NSID, RFC 5001) answered to queries that ask for it, so operators can tell replicas apart behind one address: text, or hex digits after `0x`; at most 128 bytes.
    #[arg(long = "nsid", env = "MESHDNS_NSID")]
    pub nsid: Option<String>,
    /// Resolvers whose EDNS Client Subnet option decides export-to (comma-separated CIDRs: the fleet's CoreDNS or shared resolvers). From any other source, ECS still picks the nearest endpoints but cannot widen export-to: the packet source's own place must be inside it too. Default: none.
    #[arg(
        long = "ecs-trusted-from",
        env = "MESHDNS_ECS_TRUSTED_FROM",
        value_delimiter = ','
    )]
    pub ecs_trusted_from: Vec<ipnet::IpNet>,
    /// Keep /readyz unready until the registry holds data (a cluster's snapshot, the saved state, or the upstream's state).
    #[arg(long = "ready-wait-data", env = "MESHDNS_READY_WAIT_DATA")]
    pub ready_wait_data: bool,
    /// Persist the registry here (atomically: once it changed and settled, at least 2s apart and never more than 10s behind, and at shutdown) and restore it at start, each cluster live if it was heard within --cluster-ttl of the restart, else stale.
    #[arg(long = "state-file", env = "MESHDNS_STATE_FILE")]
    pub state_file: Option<std::path::PathBuf>,
    /// Mirror another registry (http://HOST:PORT) through Watch instead of taking syncers.
    #[arg(long = "follow", env = "MESHDNS_FOLLOW")]
    pub follow: Option<String>,
    /// With --follow: --follow-tls-ca, --follow-tls-cert, --follow-tls-key, --follow-token-file.
    #[command(flatten)]
    pub follow_client: meshdns_cli::FollowFlags,
    /// With --follow: cut off from the upstream this long, the replica is stale: it keeps answering from its last state, and counts those answers (meshdns_follow_stale_answers_total).
    #[arg(long = "follow-stale-after", env = "MESHDNS_FOLLOW_STALE_AFTER", default_value = "60s", value_parser = parse_duration)]
    pub follow_stale_after: Duration,
    /// Certificate (PEM) the gRPC registry serves TLS with.
    #[arg(long = "tls-cert", env = "MESHDNS_TLS_CERT")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long = "tls-key", env = "MESHDNS_TLS_KEY")]
    pub tls_key: Option<std::path::PathBuf>,
    /// CA (PEM) whose client certificates identify clusters and readers (mTLS).
    #[arg(long = "tls-client-ca", env = "MESHDNS_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<std::path::PathBuf>,
    /// Bearer tokens: lines of `<token> cluster:<name>` or `<token> reader:<name>`; re-read on change.
    #[arg(long = "token-file", env = "MESHDNS_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// SPIFFE trust domain of client certificates: spiffe://<domain>/cluster/<name>.
    #[arg(
        long = "trust-domain",
        env = "MESHDNS_TRUST_DOMAIN",
        default_value = "meshdns"
    )]
    pub trust_domain: String,
    /// Serve gRPC without TLS. Only for loopback or a network you trust.
    #[arg(long = "insecure", env = "MESHDNS_INSECURE")]
    pub insecure: bool,
    /// HTTP/2 PING interval on gRPC connections (and TCP keepalive): a peer that does not answer within --grpc-keepalive-timeout is dropped.
    #[arg(long = "grpc-keepalive", env = "MESHDNS_GRPC_KEEPALIVE", default_value = "10s", value_parser = parse_duration)]
    pub grpc_keepalive: Duration,
    /// How long a gRPC peer has to answer an HTTP/2 PING before its connection is closed.
    #[arg(long = "grpc-keepalive-timeout", env = "MESHDNS_GRPC_KEEPALIVE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub grpc_keepalive_timeout: Duration,
    /// On SIGTERM, exit within this long whatever clients do: half of it to drain connections, the rest to save --state-file.
    #[arg(long = "shutdown-timeout", env = "MESHDNS_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// gRPC connection liveness and shutdown bounds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// `--grpc-keepalive`.
    pub grpc_keepalive: Duration,
    /// `--grpc-keepalive-timeout`.
    pub grpc_keepalive_timeout: Duration,
    /// `--shutdown-timeout`.
    pub shutdown_timeout: Duration,
}

/// What one gRPC connection may make the hub buffer (HTTP/2 settings).
#[derive(Debug, Clone, Copy)]
pub struct GrpcWindows {
    /// `--grpc-stream-window-bytes`.
    pub stream: u32,
    /// `--grpc-connection-window-bytes`.
    pub connection: u32,
    /// `--max-grpc-streams-per-connection`.
    pub max_streams: u32,
}

/// Limits that protect the registry and DNS from floods; going over one
/// is refused with an error naming the flag, and counted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_services_per_cluster: usize,
    pub max_endpoints_per_service: usize,
    pub max_export_streams: usize,
    /// `--max-watch-streams`: Watch streams open at once.
    pub max_watch_streams: usize,
    /// `--max-import-streams`: WatchImports streams open at once.
    pub max_import_streams: usize,
    /// `--watch-stall-timeout`: longest a Watch part waits to be read.
    pub watch_stall_timeout: Duration,
    pub max_grpc_message_bytes: usize,
    /// An Export stream's Hello must arrive within this long.
    pub hello_timeout: Duration,
    /// `--export-message-timeout`: a started Export message is whole
    /// within this long.
    pub export_message_timeout: Duration,
    /// Export streams waiting for their Hello, at most.
    pub max_pending_hellos: usize,
    /// `--max-export-bytes-in-flight`: Export message bytes reserved at
    /// once, all streams.
    pub max_export_bytes_in_flight: usize,
    pub max_tcp_connections: usize,
    pub tcp_idle_timeout: Duration,
    pub max_tcp_connection_lifetime: Duration,
}

/// DNS abuse controls (cookies live in the [`Authority`]).
#[derive(Debug, Clone, Copy)]
pub struct DnsAbuse {
    /// UDP responses a second per source prefix; 0: no rate limiting.
    pub rrl_rate: u32,
    /// Every Nth limited response slips out truncated; 0: none.
    pub rrl_slip: u32,
    pub max_tcp_connections_per_source: usize,
}

/// The registry's TLS material, read at start (and re-read by [`crate::tls`]).
#[derive(Debug, Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// Client certificates signed by this CA identify callers (mTLS).
    pub client_ca: Option<Vec<u8>>,
    /// Where it was read from: the files are re-read when they change.
    pub files: Option<crate::tls::TlsFiles>,
}

/// Validated settings of a running server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub authority: Authority,
    /// PEM material, when the registry serves TLS.
    pub tls: Option<TlsPem>,
    /// Token file and trust domain for [`crate::auth::Auth`].
    pub token_file: Option<std::path::PathBuf>,
    pub trust_domain: String,
    /// The upstream registry this replica mirrors, if it is a follower,
    /// and how to authenticate to it.
    pub follow: Option<String>,
    pub follow_auth: meshdns_proto::client::ClientAuth,
    /// `--follow-stale-after`: cut off this long, a follower is stale.
    pub follow_stale_after: Duration,
    /// Where the registry is persisted, if anywhere.
    pub state_file: Option<std::path::PathBuf>,
    /// /readyz waits for data.
    pub ready_wait_data: bool,
    /// The fleet file (`--clusters`): what each cluster may claim.
    pub clusters: Option<std::path::PathBuf>,
    /// The traffic policy file (`--policy`); never on a follower.
    pub policy: Option<std::path::PathBuf>,
    pub limits: Limits,
    /// DNS abuse controls: RRL and the per-source TCP cap.
    pub dns_abuse: DnsAbuse,
    pub liveness: Liveness,
    pub insecure: bool,
    pub lifetimes: Lifetimes,
    pub grpc_windows: GrpcWindows,
    pub grpc_connections: crate::grpc_listener::ConnectionLimits,
    /// Certificate files whose expiry `/metrics` reports, by role.
    pub certificates: Vec<(&'static str, std::path::PathBuf)>,
    /// `--control-plane-nice`: see [`crate::priority`].
    pub control_plane_nice: u8,
}

fn seconds(flag: &'static str, value: Duration) -> Result<u32, Error> {
    u32::try_from(value.as_secs())
        .ok()
        .filter(|s| *s <= meshdns_proto::model::MAX_TTL_SECONDS)
        .ok_or_else(|| Error::Config {
            flag,
            problem: format!("{value:?} is over the maximum of one day"),
        })
}

/// Parses `meshdns serve` flags on their own (for the demo and tests).
#[derive(Debug, clap::Parser)]
struct ServeFlags {
    #[command(flatten)]
    args: ServeArgs,
}

impl ServeArgs {
    /// `--workers`, with 0 resolved to the CPUs this process may use.
    pub fn udp_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
            n => n,
        }
    }

    /// How the UDP sockets are made: `--workers`, `--udp-receive-buffer`.
    pub fn udp_sockets(&self) -> crate::udp::UdpSockets {
        crate::udp::UdpSockets {
            workers: self.udp_workers(),
            receive_buffer: self.udp_receive_buffer,
        }
    }

    /// The settings `flags` give, every other flag at its default.
    pub fn from_flags(flags: &[&str]) -> Result<Self, clap::Error> {
        use clap::Parser;
        ServeFlags::try_parse_from(std::iter::once("meshdns-serve").chain(flags.iter().copied()))
            .map(|f| f.args)
    }

    /// How a follower authenticates to its upstream.
    pub fn upstream_auth(&self) -> meshdns_proto::client::ClientAuth {
        self.follow_client.auth(self.insecure)
    }

    /// Checks the flags together; the error names the flag at fault.
    pub fn config(&self) -> Result<ServeConfig, Error> {
        if self.udp_receive_buffer > crate::udp::receive_buffer::MAX {
            return Err(Error::Config {
                flag: "--udp-receive-buffer",
                problem: format!(
                    "{} bytes is over the maximum of {} (256 MiB)",
                    self.udp_receive_buffer,
                    crate::udp::receive_buffer::MAX
                ),
            });
        }
        if self.workers > MAX_WORKERS {
            return Err(Error::Config {
                flag: "--workers",
                problem: format!(
                    "{} is over the maximum of {MAX_WORKERS} (0 means one per CPU)",
                    self.workers
                ),
            });
        }
        let read = |flag: &'static str, path: &std::path::PathBuf| {
            std::fs::read(path).map_err(|e| Error::Config {
                flag,
                problem: format!("{}: {e}", path.display()),
            })
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let ca = self
                    .tls_client_ca
                    .as_ref()
                    .map(|p| read("--tls-client-ca", p))
                    .transpose()?;
                if ca.is_none() && self.token_file.is_none() {
                    return Err(Error::Config {
                        flag: "--tls-client-ca",
                        problem: "TLS without --tls-client-ca or --token-file would let anyone export as any cluster".into(),
                    });
                }
                Some(TlsPem {
                    cert: read("--tls-cert", cert)?,
                    key: read("--tls-key", key)?,
                    client_ca: ca,
                    files: Some(crate::tls::TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                        client_ca: self.tls_client_ca.clone(),
                    }),
                })
            }
            (None, None) => {
                if self.tls_client_ca.is_some() {
                    return Err(Error::Config {
                        flag: "--tls-client-ca",
                        problem: "needs --tls-cert and --tls-key".into(),
                    });
                }
                None
            }
            _ => {
                return Err(Error::Config {
                    flag: "--tls-cert",
                    problem: "--tls-cert and --tls-key go together".into(),
                });
            }
        };
        if tls.is_none() && !self.insecure {
            return Err(Error::Config {
                flag: "--insecure",
                problem: "refusing to serve the gRPC registry in plaintext: give --tls-cert and --tls-key \
                          (with --tls-client-ca and/or --token-file), or pass --insecure to run without \
                          transport security (loopback or a trusted network only)"
                    .into(),
            });
        }
        if self.domain.is_empty() {
            return Err(Error::Config {
                flag: "--domain",
                problem: "at least one domain is needed".into(),
            });
        }
        let domains = self
            .domain
            .iter()
            .map(|d| Domain::parse(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| Error::Config {
                flag: "--domain",
                problem,
            })?;
        let mut domains = domains;
        if self.reverse {
            domains.extend(Domain::reverse());
        }
        for (i, d) in domains.iter().enumerate() {
            if domains[..i].contains(d) {
                return Err(Error::Config {
                    flag: "--domain",
                    problem: format!("{} is given twice", d.fqdn()),
                });
            }
        }
        if self.max_answers == 0 {
            return Err(Error::Config {
                flag: "--max-answers",
                problem: "must be at least 1".into(),
            });
        }
        if self.cluster_ttl < Duration::from_millis(100) {
            return Err(Error::Config {
                flag: "--cluster-ttl",
                problem: "must be at least 100ms".into(),
            });
        }
        for (flag, value) in [
            ("--max-services-per-cluster", self.max_services_per_cluster),
            (
                "--max-endpoints-per-service",
                self.max_endpoints_per_service,
            ),
            ("--max-export-streams", self.max_export_streams),
            ("--max-watch-streams", self.max_watch_streams),
            ("--max-import-streams", self.max_import_streams),
            ("--max-grpc-message-bytes", self.max_grpc_message_bytes),
            ("--max-pending-hellos", self.max_pending_hellos),
            ("--max-tcp-connections", self.max_tcp_connections),
            ("--max-grpc-connections", self.max_grpc_connections),
            (
                "--max-grpc-connections-per-source",
                self.max_grpc_connections_per_source,
            ),
            (
                "--max-tcp-connections-per-source",
                self.max_tcp_connections_per_source,
            ),
        ] {
            if value == 0 {
                return Err(Error::Config {
                    flag,
                    problem: "must be at least 1".into(),
                });
            }
        }
        if self.max_export_bytes_in_flight < self.max_grpc_message_bytes {
            return Err(Error::Config {
                flag: "--max-export-bytes-in-flight",
                problem: format!(
                    "{} bytes is less than --max-grpc-message-bytes ({}): a message that big could never be received",
                    self.max_export_bytes_in_flight, self.max_grpc_message_bytes
                ),
            });
        }
        if self.max_export_bytes_in_flight > crate::ingest::MAX_BUDGET_BYTES {
            return Err(Error::Config {
                flag: "--max-export-bytes-in-flight",
                problem: format!("must be at most {}", crate::ingest::MAX_BUDGET_BYTES),
            });
        }
        for (flag, value) in [
            ("--grpc-stream-window-bytes", self.grpc_stream_window_bytes),
            (
                "--grpc-connection-window-bytes",
                self.grpc_connection_window_bytes,
            ),
        ] {
            // HTTP/2's own bounds (RFC 9113 6.9): below its default of
            // 65,535 every transfer would crawl.
            if !(65_535..=(1 << 31) - 1).contains(&value) {
                return Err(Error::Config {
                    flag,
                    problem: format!("{value} is not between 65535 and 2147483647"),
                });
            }
        }
        if self.grpc_connection_window_bytes < self.grpc_stream_window_bytes {
            return Err(Error::Config {
                flag: "--grpc-connection-window-bytes",
                problem: format!(
                    "{} is less than --grpc-stream-window-bytes ({})",
                    self.grpc_connection_window_bytes, self.grpc_stream_window_bytes
                ),
            });
        }
        for (flag, value) in [
            ("--max-grpc-connections", self.max_grpc_connections),
            (
                "--max-grpc-connections-per-source",
                self.max_grpc_connections_per_source,
            ),
        ] {
            if value > MAX_GRPC_CONNECTIONS {
                return Err(Error::Config {
                    flag,
                    problem: format!("must be at most {MAX_GRPC_CONNECTIONS}"),
                });
            }
        }
        if self.max_grpc_streams_per_connection == 0 {
            return Err(Error::Config {
                flag: "--max-grpc-streams-per-connection",
                problem: "must be at least 1".into(),
            });
        }
        if self.max_endpoints_per_service > MAX_ENDPOINTS_PER_SERVICE {
            return Err(Error::Config {
                flag: "--max-endpoints-per-service",
                problem: format!("must be at most {MAX_ENDPOINTS_PER_SERVICE}"),
            });
        }
        if self.watch_stall_timeout < Duration::from_millis(100) {
            return Err(Error::Config {
                flag: "--watch-stall-timeout",
                problem: "must be at least 100ms".into(),
            });
        }
        if self.hello_timeout.is_zero() {
            return Err(Error::Config {
                flag: "--hello-timeout",
                problem: "must be more than 0".into(),
            });
        }
        if self.export_message_timeout < Duration::from_millis(100) {
            return Err(Error::Config {
                flag: "--export-message-timeout",
                problem: "must be at least 100ms".into(),
            });
        }
        for (flag, value) in [
            ("--grpc-keepalive", self.grpc_keepalive),
            ("--grpc-keepalive-timeout", self.grpc_keepalive_timeout),
            ("--shutdown-timeout", self.shutdown_timeout),
        ] {
            if value < Duration::from_millis(100) {
                return Err(Error::Config {
                    flag,
                    problem: "must be at least 100ms".into(),
                });
            }
        }
        if self.rrl_rate > crate::rrl::MAX_RATE {
            return Err(Error::Config {
                flag: "--rrl-rate",
                problem: format!(
                    "{} is over the maximum of {} (0 turns rate limiting off)",
                    self.rrl_rate,
                    crate::rrl::MAX_RATE
                ),
            });
        }
        if self.rrl_slip > crate::rrl::MAX_SLIP {
            return Err(Error::Config {
                flag: "--rrl-slip",
                problem: format!(
                    "{} is over the maximum of {}",
                    self.rrl_slip,
                    crate::rrl::MAX_SLIP
                ),
            });
        }
        if self.min_healthy == 0 {
            return Err(Error::Config {
                flag: "--min-healthy",
                problem: "must be at least 1".into(),
            });
        }
        if self.stale_grace < self.cluster_ttl {
            return Err(Error::Config {
                flag: "--stale-grace",
                problem: format!(
                    "{:?} is shorter than --cluster-ttl {:?}",
                    self.stale_grace, self.cluster_ttl
                ),
            });
        }
        if self.dns_listen.is_empty() {
            return Err(Error::Config {
                flag: "--dns-listen",
                problem: "at least one address is needed".into(),
            });
        }
        let authority = Authority::new(
            domains,
            seconds("--ttl", self.ttl)?,
            seconds("--negative-ttl", self.negative_ttl)?,
            self.max_answers,
            self.min_healthy,
        )
        .map_err(|problem| Error::Config {
            flag: "--domain",
            problem: problem.to_string(),
        })?;
        let authority = match &self.nsid {
            Some(text) => {
                authority.with_nsid(crate::authority::nsid::parse(text).map_err(|e| {
                    Error::Config {
                        flag: "--nsid",
                        problem: e.to_string(),
                    }
                })?)
            }
            None => authority,
        };
        let authority = authority.with_ecs_trusted(self.ecs_trusted_from.clone());
        let authority =
            match &self.cookie_secret_file {
                Some(path) => authority.with_cookies(
                    crate::cookie::Cookies::from_file(path).map_err(|e| Error::Config {
                        flag: "--cookie-secret-file",
                        problem: e.to_string(),
                    })?,
                ),
                None => authority,
            };
        if self.policy.is_some() && self.follow.is_some() {
            return Err(Error::Config {
                flag: "--policy",
                problem: "a follower (--follow) answers with its upstream's policy; give --policy to the upstream registry".into(),
            });
        }
        let follow = match &self.follow {
            None => None,
            Some(url) => Some(self.upstream_auth().url(url).map_err(|e| Error::Config {
                flag: "--follow",
                problem: e.to_string(),
            })?),
        };
        Ok(ServeConfig {
            authority,
            tls,
            token_file: self.token_file.clone(),
            trust_domain: self.trust_domain.clone(),
            follow,
            state_file: self.state_file.clone(),
            follow_auth: self.upstream_auth(),
            follow_stale_after: self.follow_stale_after,
            ready_wait_data: self.ready_wait_data,
            clusters: self.clusters.clone(),
            policy: self.policy.clone(),
            limits: Limits {
                max_services_per_cluster: self.max_services_per_cluster,
                max_endpoints_per_service: self.max_endpoints_per_service,
                max_export_streams: self.max_export_streams,
                max_watch_streams: self.max_watch_streams,
                max_import_streams: self.max_import_streams,
                watch_stall_timeout: self.watch_stall_timeout,
                max_grpc_message_bytes: self.max_grpc_message_bytes,
                hello_timeout: self.hello_timeout,
                export_message_timeout: self.export_message_timeout,
                max_pending_hellos: self.max_pending_hellos,
                max_export_bytes_in_flight: self.max_export_bytes_in_flight,
                max_tcp_connections: self.max_tcp_connections,
                tcp_idle_timeout: self.tcp_idle_timeout,
                max_tcp_connection_lifetime: self.max_tcp_connection_lifetime,
            },
            dns_abuse: DnsAbuse {
                rrl_rate: self.rrl_rate,
                rrl_slip: self.rrl_slip,
                max_tcp_connections_per_source: self.max_tcp_connections_per_source,
            },
            liveness: Liveness {
                cluster_ttl: self.cluster_ttl,
                stale_grace: self.stale_grace,
            },
            insecure: self.insecure,
            lifetimes: Lifetimes {
                grpc_keepalive: self.grpc_keepalive,
                grpc_keepalive_timeout: self.grpc_keepalive_timeout,
                shutdown_timeout: self.shutdown_timeout,
            },
            grpc_connections: crate::grpc_listener::ConnectionLimits {
                max: self.max_grpc_connections,
                max_per_source: self.max_grpc_connections_per_source,
            },
            grpc_windows: GrpcWindows {
                stream: self.grpc_stream_window_bytes,
                connection: self.grpc_connection_window_bytes,
                max_streams: self.max_grpc_streams_per_connection,
            },
            certificates: [
                ("server", &self.tls_cert),
                ("client_ca", &self.tls_client_ca),
                ("follow_client", &self.follow_client.tls_cert),
            ]
            .into_iter()
            .filter_map(|(role, path)| Some((role, path.clone()?)))
            .collect(),
            control_plane_nice: self.control_plane_nice,
        })
    }
}
