//! Command line and environment configuration of `meshdns serve`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use meshdns_proto::duration;

use crate::error::Error;
use crate::qname::Domain;
use crate::registry::Liveness;
use crate::zone::Zone;

fn parse_duration(text: &str) -> Result<Duration, String> {
    duration::parse(text)
}

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
    /// Persist the registry here (atomically, every 2s when it changed, and at shutdown) and restore it at start.
    #[arg(long = "state-file", env = "MESHDNS_STATE_FILE")]
    pub state_file: Option<std::path::PathBuf>,
    /// Mirror another registry (http://HOST:PORT) through Watch instead of taking syncers.
    #[arg(long = "follow", env = "MESHDNS_FOLLOW")]
    pub follow: Option<String>,
    /// Serve gRPC without TLS. Only for loopback or a network you trust.
    #[arg(long = "insecure", env = "MESHDNS_INSECURE")]
    pub insecure: bool,
}

/// Validated settings of a running server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub zone: Zone,
    /// The upstream registry this replica mirrors, if it is a follower.
    pub follow: Option<String>,
    /// Where the registry is persisted, if anywhere.
    pub state_file: Option<std::path::PathBuf>,
    pub liveness: Liveness,
    pub insecure: bool,
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

impl ServeArgs {
    /// Checks the flags together; the error names the flag at fault.
    pub fn config(&self) -> Result<ServeConfig, Error> {
        if !self.insecure {
            return Err(Error::Config {
                flag: "--insecure",
                problem: "refusing to serve the gRPC registry in plaintext: this build has no \
                          TLS options yet, so pass --insecure to run without transport security \
                          (loopback or a trusted network only)"
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
        let zone = Zone::new(
            domains,
            seconds("--ttl", self.ttl)?,
            seconds("--negative-ttl", self.negative_ttl)?,
            self.max_answers,
            self.min_healthy,
        )
        .map_err(|problem| Error::Config {
            flag: "--domain",
            problem,
        })?;
        let follow = match &self.follow {
            None => None,
            Some(url) => {
                let url = if url.contains("://") {
                    url.clone()
                } else {
                    format!("http://{url}")
                };
                if !url.starts_with("http://") {
                    return Err(Error::Config {
                        flag: "--follow",
                        problem: "TLS to registries is not in this build yet; use http://HOST:PORT"
                            .into(),
                    });
                }
                Some(url)
            }
        };
        Ok(ServeConfig {
            zone,
            follow,
            state_file: self.state_file.clone(),
            liveness: Liveness {
                cluster_ttl: self.cluster_ttl,
                stale_grace: self.stale_grace,
            },
            insecure: self.insecure,
        })
    }
}
