//! `meshdns-syncer` flags. Every flag can also be set as `MESHDNS_<FLAG>`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use meshdns_proto::duration;

use meshdns_proto::client::ClientAuth;

use crate::error::Error;
use crate::publish::PublishConfig;
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
            client_cidrs: self.client_cidr.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
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
                })
            })
            .collect()
    }
}
