//! `meshdns-syncer` flags. Every flag can also be set as `MESHDNS_<FLAG>`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use meshdns_proto::duration;

use crate::error::Error;
use crate::publish::{Backoff, PublishConfig};
use crate::source::Overrides;

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
    /// Talk to registries without TLS. Only for loopback or a network you trust.
    #[arg(long, env = "MESHDNS_INSECURE")]
    pub insecure: bool,
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

    /// One publisher config per `--registry`.
    pub fn publishers(&self) -> Result<Vec<PublishConfig>, Error> {
        if self.heartbeat < Duration::from_millis(10) {
            return Err(Error::Config {
                field: "--heartbeat".into(),
                problem: "must be at least 10ms".into(),
            });
        }
        self.registry
            .iter()
            .map(|url| {
                let url = registry_url(url, self.insecure)?;
                Ok(PublishConfig {
                    url,
                    heartbeat: self.heartbeat,
                    backoff: Backoff::new(
                        Duration::from_millis(100),
                        self.max_backoff.max(Duration::from_millis(100)),
                    ),
                })
            })
            .collect()
    }
}

/// `host:port` or `http://host:port`; plaintext only with `--insecure`.
pub fn registry_url(url: &str, insecure: bool) -> Result<String, Error> {
    let bad = |problem: String| Error::Config {
        field: "--registry".into(),
        problem,
    };
    let url = if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    };
    if url.starts_with("https://") {
        return Err(bad(
            "TLS to registries is not in this build yet; use http:// with --insecure".into(),
        ));
    }
    if !url.starts_with("http://") {
        return Err(bad(format!("{url:?}: use http://HOST:PORT")));
    }
    if !insecure {
        return Err(bad(format!(
            "refusing to stream to {url} in plaintext: pass --insecure (loopback or a trusted network only)"
        )));
    }
    Ok(url)
}
