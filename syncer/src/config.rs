//! `meshdns-syncer` flags. Every flag can also be set as `MESHDNS_<FLAG>`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use meshdns_proto::duration;

use meshdns_proto::client::ClientAuth;

use crate::error::Error;
use crate::health::HealthConfig;
use crate::publish::PublishConfig;
use crate::registration::RegistrationConfig;
use crate::registration::body::TtlBounds;
use crate::registration::store::Limits;
use crate::source::Overrides;
use crate::source::kubernetes::KubeSource;
use crate::source::selector::Selector;
use meshdns_proto::backoff::Backoff;

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

/// Exports this cluster's services to the meshdns registries.
#[derive(Debug, Clone, Parser)]
#[command(name = "meshdns-syncer", version, about)]
pub struct SyncerArgs {
    /// This cluster's name in the fleet (overrides the source's own).
    #[arg(long, env = "MESHDNS_CLUSTER")]
    pub cluster: Option<String>,
    /// This cluster's region (overrides the source's own).
    #[arg(long, env = "MESHDNS_REGION")]
    pub region: Option<String>,
    /// This cluster's zone (overrides the source's own).
    #[arg(long, env = "MESHDNS_ZONE")]
    pub zone: Option<String>,
    /// This cluster's cloud provider (aws, gcp, onprem-fra, ...), for the provider tier and `provider:` scopes; overrides the source's own (the file's `provider`, else the Nodes' `meshdns.io/provider` label when they all agree). Default: unknown.
    #[arg(long, env = "MESHDNS_PROVIDER")]
    pub provider: Option<String>,
    /// The weight of each endpoint of this cluster that nothing else weighs (a Service's `meshdns.io/weight` annotation, a file's `weight` win): 0 (only when nothing else is healthy) to 10000. A pod or VM counts 10.
    #[arg(long, env = "MESHDNS_WEIGHT", default_value_t = meshdns_proto::model::DEFAULT_WEIGHT)]
    pub weight: u32,
    /// Announce each Node's InternalIP addresses to the hub (kubernetes source), for the hub's opt-in node tier (`affinity: node`, `trafficDistribution: PreferSameNode`, which match no asker of this cluster without it). Off by default: Nodes then cost nothing beyond the client CIDRs, region, zone and provider they may give. The file source announces its `nodes:` as written.
    #[arg(long = "announce-nodes", env = "MESHDNS_ANNOUNCE_NODES")]
    pub announce_nodes: bool,
    /// With --announce-nodes: the shortest time between two announcements of changed node addresses (each is a new export stream and a full snapshot at the hub); a churning cluster's node changes are gathered up to this long. Default 60s: Kubernetes takes about as long to notice a Node is gone, and a new Node's askers get their zone tier meanwhile.
    #[arg(long = "node-announce-interval", env = "MESHDNS_NODE_ANNOUNCE_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub node_announce_interval: Duration,
    /// A registry to stream to, as http://HOST:PORT (repeatable; each is streamed to independently).
    #[arg(
        long = "registry",
        env = "MESHDNS_REGISTRY",
        value_delimiter = ',',
        required = true
    )]
    pub registry: Vec<String>,
    /// Where exports come from: `kubernetes` or `file:PATH`.
    #[arg(long, env = "MESHDNS_SOURCE", default_value = "kubernetes")]
    pub source: String,
    /// Label selector of exported Services (kubernetes source).
    #[arg(
        long,
        env = "MESHDNS_SELECTOR",
        default_value = "meshdns.io/export=true"
    )]
    pub selector: String,
    /// Kubeconfig file (kubernetes source); default: in-cluster, else $KUBECONFIG or ~/.kube/config.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Only export Services in this namespace (repeatable; kubernetes source).
    #[arg(long = "namespace", env = "MESHDNS_NAMESPACE", value_delimiter = ',')]
    pub namespace: Vec<String>,
    /// Only export Services in namespaces matching this label selector (kubernetes source).
    #[arg(long = "namespace-selector", env = "MESHDNS_NAMESPACE_SELECTOR")]
    pub namespace_selector: Option<String>,
    /// Also export every Service named by a multicluster.x-k8s.io/v1alpha1 ServiceExport.
    #[arg(long, env = "MESHDNS_MCS")]
    pub mcs: bool,
    /// Longest a Kubernetes change waits to be sent with others (bursts become one Delta).
    #[arg(long, env = "MESHDNS_COALESCE", default_value = "50ms", value_parser = parse_duration)]
    pub coalesce: Duration,
    /// Address for admin HTTP: /healthz, /readyz, /status.
    #[arg(long = "admin-listen", env = "MESHDNS_ADMIN_LISTEN")]
    pub admin_listen: Option<std::net::SocketAddr>,
    /// A CIDR whose addresses ask from inside this cluster (repeatable; overrides the source's own).
    #[arg(
        long = "client-cidr",
        env = "MESHDNS_CLIENT_CIDR",
        value_delimiter = ','
    )]
    pub client_cidr: Vec<String>,
    /// How often to heartbeat to each registry.
    #[arg(long, env = "MESHDNS_HEARTBEAT", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat: Duration,
    /// How often the file source checks its file for changes.
    #[arg(long = "file-poll-interval", env = "MESHDNS_FILE_POLL_INTERVAL", default_value = "250ms", value_parser = parse_duration)]
    pub file_poll_interval: Duration,
    /// Longest wait between reconnect attempts.
    #[arg(long = "max-backoff", env = "MESHDNS_MAX_BACKOFF", default_value = "10s", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// Largest gRPC message sent, in bytes: a bigger Snapshot goes in parts (applied together by the registry), a bigger Delta as several Deltas (each applied as it comes). Keep it under the registries' --max-grpc-message-bytes; a single service bigger than this still goes alone.
    #[arg(long = "max-message-bytes", env = "MESHDNS_MAX_MESSAGE_BYTES", default_value_t = crate::publish::DEFAULT_MAX_MESSAGE_BYTES)]
    pub max_message_bytes: usize,
    /// Client credentials: --tls-ca, --tls-cert, --tls-key, --token-file, --insecure.
    #[command(flatten)]
    pub client: meshdns_cli::ClientFlags,
    // The fleet seen from inside this cluster (src/mcs.rs).
    /// Keep ServiceImports, ServiceExport conditions (with --mcs) and Events on label-selected Services in this cluster from the registry's view of the clusterset (needs the CRDs and RBAC of deploy/member/mcs).
    #[arg(long = "mcs-status", env = "MESHDNS_MCS_STATUS")]
    pub mcs_status: bool,
    /// With --mcs-status: create a missing namespace to hold a ServiceImport (off: a service whose namespace this cluster lacks gets no ServiceImport).
    #[arg(long = "mcs-create-namespaces", env = "MESHDNS_MCS_CREATE_NAMESPACES")]
    pub mcs_create_namespaces: bool,
    /// With --mcs-status: most writes a second to this cluster's API server (ServiceImports, ServiceExport status, Events).
    #[arg(
        long = "mcs-writes-per-second",
        env = "MESHDNS_MCS_WRITES_PER_SECOND",
        default_value_t = 20.0
    )]
    pub mcs_writes_per_second: f64,
    /// With --mcs-status: most writes at once before --mcs-writes-per-second applies.
    #[arg(
        long = "mcs-write-burst",
        env = "MESHDNS_MCS_WRITE_BURST",
        default_value_t = 50
    )]
    pub mcs_write_burst: u32,
    /// With --mcs-status: after this long without an answer from any registry, ServiceExport conditions turn Unknown (set it to the hub's --cluster-ttl).
    #[arg(long = "mcs-status-ttl", env = "MESHDNS_MCS_STATUS_TTL", default_value = "15s", value_parser = parse_duration)]
    pub mcs_status_ttl: Duration,
    /// Address of the VM registration API (HTTP/JSON); off when not set.
    #[arg(long = "registration-listen", env = "MESHDNS_REGISTRATION_LISTEN")]
    pub registration_listen: Option<std::net::SocketAddr>,
    /// The registration API's bearer tokens: `<token> <namespace>/<service>[,...]` a line; re-read when it changes.
    #[arg(
        long = "registration-token-file",
        env = "MESHDNS_REGISTRATION_TOKEN_FILE"
    )]
    pub registration_token_file: Option<PathBuf>,
    /// Where registrations are kept across restarts (written atomically); none: they are lost on restart.
    #[arg(
        long = "registration-state-file",
        env = "MESHDNS_REGISTRATION_STATE_FILE"
    )]
    pub registration_state_file: Option<PathBuf>,
    /// The address ranges registrants may register, comma-separated CIDRs (required with --registration-listen): set them to the hub's fleet-file endpoint CIDRs for this cluster's VMs. A registrant's health check can reach any host and port in them.
    #[arg(
        long = "registration-cidrs",
        env = "MESHDNS_REGISTRATION_CIDRS",
        value_delimiter = ','
    )]
    pub registration_cidrs: Vec<ipnet::IpNet>,
    /// Most endpoints (pods and registered instances) one service may reach through registrations: set it to the hub's --max-endpoints-per-service.
    #[arg(
        long = "registration-max-endpoints-per-service",
        env = "MESHDNS_REGISTRATION_MAX_ENDPOINTS_PER_SERVICE",
        default_value_t = 10_000
    )]
    pub registration_max_endpoints_per_service: usize,
    /// Shortest TTL a registration may ask for.
    #[arg(long = "registration-min-ttl", env = "MESHDNS_REGISTRATION_MIN_TTL", default_value = "5s", value_parser = parse_duration)]
    pub registration_min_ttl: Duration,
    /// Longest TTL a registration may ask for.
    #[arg(long = "registration-max-ttl", env = "MESHDNS_REGISTRATION_MAX_TTL", default_value = "1h", value_parser = parse_duration)]
    pub registration_max_ttl: Duration,
    /// How often registrations past their TTL are withdrawn (a lapsed one leaves within TTL + this).
    #[arg(long = "registration-sweep-interval", env = "MESHDNS_REGISTRATION_SWEEP_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub registration_sweep_interval: Duration,
    /// Most registrations this syncer holds.
    #[arg(
        long = "max-registrations",
        env = "MESHDNS_MAX_REGISTRATIONS",
        default_value_t = 10_000
    )]
    pub max_registrations: usize,
    /// Most registrations one registrant token holds (so one token cannot take all of --max-registrations).
    #[arg(
        long = "max-registrations-per-token",
        env = "MESHDNS_MAX_REGISTRATIONS_PER_TOKEN",
        default_value_t = 1_000
    )]
    pub max_registrations_per_token: usize,
    /// Most registrations of one service.
    #[arg(
        long = "max-registrations-per-service",
        env = "MESHDNS_MAX_REGISTRATIONS_PER_SERVICE",
        default_value_t = 1_000
    )]
    pub max_registrations_per_service: usize,
    /// Registration API requests a second per client address (bursts of twice this).
    #[arg(
        long = "registration-rate-limit",
        env = "MESHDNS_REGISTRATION_RATE_LIMIT",
        default_value_t = 20
    )]
    pub registration_rate_limit: u32,
    /// Most endpoints health-checked by this syncer; more are left unchecked (and registrations declaring a check refused).
    #[arg(
        long = "max-health-checks",
        env = "MESHDNS_MAX_HEALTH_CHECKS",
        default_value_t = 1_000
    )]
    pub max_health_checks: usize,
    /// Health-check an exported endpoint at another address, as ENDPOINT_IP=DIAL_IP (repeatable): for endpoints this syncer reaches through a NAT, or the demo's loopback stand-ins. Only the operator sets it; checks still run only for exported endpoints.
    #[arg(
        long = "health-check-dial",
        env = "MESHDNS_HEALTH_CHECK_DIAL",
        value_delimiter = ','
    )]
    pub health_check_dial: Vec<String>,
    /// Most health checks in flight at once.
    #[arg(
        long = "health-check-concurrency",
        env = "MESHDNS_HEALTH_CHECK_CONCURRENCY",
        default_value_t = 64
    )]
    pub health_check_concurrency: usize,
    /// Log format: text or json.
    #[arg(
        long = "log-format",
        env = "MESHDNS_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: String,
}

/// Where exports come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    Kubernetes,
    File(PathBuf),
}

impl SyncerArgs {
    pub fn source_kind(&self) -> Result<SourceKind, Error> {
        match self.source.as_str() {
            "kubernetes" => Ok(SourceKind::Kubernetes),
            s => match s.strip_prefix("file:") {
                Some(path) if !path.is_empty() => Ok(SourceKind::File(PathBuf::from(path))),
                _ => Err(Error::Config {
                    field: "--source".into(),
                    problem: format!("{s:?} is not a source: use kubernetes or file:PATH"),
                }),
            },
        }
    }

    pub fn overrides(&self) -> Overrides {
        Overrides {
            cluster: self.cluster.clone(),
            region: self.region.clone(),
            zone: self.zone.clone(),
            provider: self.provider.clone().filter(|p| !p.is_empty()),
            client_cidrs: self.client_cidr.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            weight: self.weight,
            announce_nodes: self.announce_nodes,
        }
    }

    /// `--weight` and `--provider`, checked before any source starts.
    pub fn check_topology(&self) -> Result<(), Error> {
        crate::source::fields::weight_number("--weight", u64::from(self.weight)).map_err(|e| {
            Error::Config {
                field: "--weight".into(),
                problem: e.problem.to_string(),
            }
        })?;
        if let Some(provider) = self.provider.as_ref().filter(|p| !p.is_empty()) {
            meshdns_proto::model::LabelValue::new(provider).map_err(|e| Error::Config {
                field: "--provider".into(),
                problem: e.problem.to_string(),
            })?;
        }
        Ok(())
    }

    /// The registration source's settings, when `--registration-listen` is set.
    pub fn registration(&self) -> Result<Option<RegistrationConfig>, Error> {
        let bad = |field: &str, problem: &str| Error::Config {
            field: field.into(),
            problem: problem.into(),
        };
        let Some(listen) = self.registration_listen else {
            return Ok(None);
        };
        let token_file = self.registration_token_file.clone().ok_or_else(|| {
            bad(
                "--registration-token-file",
                "required with --registration-listen: registrations are authenticated",
            )
        })?;
        if self.registration_cidrs.is_empty() {
            return Err(bad(
                "--registration-cidrs",
                "required with --registration-listen: the address ranges registrants may register (and their health checks reach)",
            ));
        }
        if self.registration_min_ttl < Duration::from_secs(1) {
            return Err(bad("--registration-min-ttl", "must be at least 1s"));
        }
        if self.registration_max_ttl < self.registration_min_ttl {
            return Err(bad(
                "--registration-max-ttl",
                "must be at least --registration-min-ttl",
            ));
        }
        if self.registration_sweep_interval < Duration::from_millis(10) {
            return Err(bad(
                "--registration-sweep-interval",
                "must be at least 10ms",
            ));
        }
        if self.registration_rate_limit == 0 {
            return Err(bad("--registration-rate-limit", "must be at least 1"));
        }
        Ok(Some(RegistrationConfig {
            listen,
            token_file,
            state_file: self.registration_state_file.clone(),
            ttl: TtlBounds {
                min: self.registration_min_ttl,
                max: self.registration_max_ttl,
            },
            limits: Limits {
                registrations: self.max_registrations,
                per_service: self.max_registrations_per_service,
                health_checks: self.max_health_checks,
                per_token: self.max_registrations_per_token,
            },
            bounds: crate::registration::bounds::Bounds {
                cidrs: self.registration_cidrs.clone(),
                max_endpoints: self.registration_max_endpoints_per_service,
            },
            rate: self.registration_rate_limit,
            burst: self.registration_rate_limit.saturating_mul(2),
            sweep_interval: self.registration_sweep_interval,
        }))
    }

    /// The health checker's bounds.
    pub fn health(&self) -> Result<HealthConfig, Error> {
        if self.health_check_concurrency == 0 {
            return Err(Error::Config {
                field: "--health-check-concurrency".into(),
                problem: "must be at least 1".into(),
            });
        }
        let dial = self
            .health_check_dial
            .iter()
            .map(|v| {
                crate::health::parse_dial(v).map_err(|problem| Error::Config {
                    field: "--health-check-dial".into(),
                    problem,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(HealthConfig {
            max_checks: self.max_health_checks,
            concurrency: self.health_check_concurrency,
            dial,
        })
    }

    /// The Kubernetes source's settings.
    pub fn kube_source(&self) -> Result<KubeSource, Error> {
        let bad = |field: &str, problem: String| Error::Config {
            field: field.into(),
            problem,
        };
        // Checked here with the API server's grammar: a selector it would
        // answer with 400 would otherwise leave the watch never listing.
        let selector = Selector::parse(&self.selector)
            .map_err(|e| bad("--selector", format!("{:?}: {e}", self.selector)))?;
        let namespace_selector = self
            .namespace_selector
            .as_deref()
            .map(|s| {
                Selector::parse(s).map_err(|e| bad("--namespace-selector", format!("{s:?}: {e}")))
            })
            .transpose()?;
        for ns in &self.namespace {
            meshdns_proto::model::check_label(ns)
                .map_err(|why| bad("--namespace", format!("{ns:?}: {why}")))?;
        }
        if self.coalesce > Duration::from_millis(100) {
            return Err(bad(
                "--coalesce",
                "at most 100ms: changes must not wait longer".into(),
            ));
        }
        Ok(KubeSource {
            kubeconfig: self.kubeconfig.clone(),
            overrides: self.overrides(),
            selector,
            namespaces: self.namespace.clone(),
            namespace_selector,
            mcs: self.mcs,
            coalesce: self.coalesce,
            node_announce_interval: self.node_announce_interval,
        })
    }

    /// The MCS writers' settings (`--mcs-status`), checked.
    pub fn mcs_settings(&self) -> Result<crate::mcs::Settings, Error> {
        let bad = |field: &str, problem: &str| Error::Config {
            field: field.into(),
            problem: problem.into(),
        };
        if !(self.mcs_writes_per_second.is_finite() && self.mcs_writes_per_second > 0.0) {
            return Err(bad("--mcs-writes-per-second", "must be a number above 0"));
        }
        if self.mcs_write_burst == 0 {
            return Err(bad("--mcs-write-burst", "must be at least 1"));
        }
        if self.mcs_status_ttl < Duration::from_millis(100) {
            return Err(bad("--mcs-status-ttl", "must be at least 100ms"));
        }
        Ok(crate::mcs::Settings {
            mcs: self.mcs,
            selector: self.selector.clone(),
            create_namespaces: self.mcs_create_namespaces,
            writes_per_second: self.mcs_writes_per_second,
            write_burst: self.mcs_write_burst,
            status_ttl: self.mcs_status_ttl,
        })
    }

    /// How this syncer authenticates to registries.
    pub fn client_auth(&self) -> ClientAuth {
        self.client.auth()
    }

    /// One publisher config per `--registry`.
    pub fn publishers(&self) -> Result<Vec<PublishConfig>, Error> {
        if self.heartbeat < Duration::from_millis(10) {
            return Err(Error::Config {
                field: "--heartbeat".into(),
                problem: "must be at least 10ms".into(),
            });
        }
        if self.max_message_bytes < crate::publish::MIN_MESSAGE_BYTES {
            return Err(Error::Config {
                field: "--max-message-bytes".into(),
                problem: format!(
                    "must be at least {} bytes",
                    crate::publish::MIN_MESSAGE_BYTES
                ),
            });
        }
        self.registry
            .iter()
            .map(|url| {
                let auth = self.client_auth();
                let url = auth.url(url).map_err(|e| Error::Config {
                    field: "--registry".into(),
                    problem: e.to_string(),
                })?;
                Ok(PublishConfig {
                    url,
                    auth,
                    heartbeat: self.heartbeat,
                    backoff: Backoff::new(
                        Duration::from_millis(100),
                        self.max_backoff.max(Duration::from_millis(100)),
                    ),
                    max_message_bytes: self.max_message_bytes,
                    refusals: crate::mcs::refusals::Refusals::default(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(extra: &[&str]) -> Result<(), String> {
        let mut argv = vec!["meshdns-syncer", "--registry", "http://127.0.0.1:7443"];
        argv.extend_from_slice(extra);
        let args = SyncerArgs::try_parse_from(argv).map_err(|e| e.to_string())?;
        args.check_topology().map_err(|e| e.to_string())
    }

    #[test]
    fn weight_and_provider_flags() {
        assert_eq!(check(&[]), Ok(()));
        assert_eq!(
            check(&["--weight", "0", "--provider", "onprem-fra"]),
            Ok(())
        );
        assert_eq!(check(&["--provider", ""]), Ok(()), "empty: unknown");
        let e = check(&["--weight", "10001"]).unwrap_err();
        assert!(e.starts_with("--weight: ") && e.contains("10000"), "{e}");
        let e = check(&["--provider=-aws"]).unwrap_err();
        assert!(e.starts_with("--provider: "), "{e}");
        let args =
            SyncerArgs::try_parse_from(["meshdns-syncer", "--registry", "http://h:1"]).unwrap();
        assert_eq!(
            args.overrides().weight,
            meshdns_proto::model::DEFAULT_WEIGHT
        );
        assert_eq!(args.overrides().provider, None);
    }
}
