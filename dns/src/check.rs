//! `meshdns check`: what is wrong, from here. Run from a laptop or a
//! member cluster's pod, it asks the registry and the DNS server what an
//! operator would, prints one line per check (pass, fail or skip) with a
//! hint for each failure, and exits 1 when anything failed.
//!
//! The checks: the registry reachable and the credentials accepted (and
//! the days left on the client certificate and CA); DNS answers over UDP
//! and TCP; which cluster this source address maps to, and why; client
//! CIDRs overlapping across the fleet (and those the registry refused);
//! clusters stale or without an Export stream; syncers' versions
//! compatible with the registry's; and with `--via`, a name through a
//! resolver (a member cluster's CoreDNS) against the direct answer.

pub mod probe;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use ipnet::IpNet;
use meshdns_proto::client::ClientAuth;
use meshdns_proto::wire;
use serde::Serialize;
use serde_json::json;

use crate::error::Error;

/// `meshdns check` flags.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// The registry to ask, as http://HOST:PORT or https://HOST:PORT.
    #[arg(
        long,
        env = "MESHDNS_REGISTRY",
        default_value = "http://127.0.0.1:7443"
    )]
    pub registry: String,
    /// The registry's DNS server, as HOST:PORT (default: the registry's host, port 53).
    #[arg(long = "dns", env = "MESHDNS_CHECK_DNS")]
    pub dns: Option<String>,
    /// The served domain whose SOA the DNS checks ask for.
    #[arg(long, env = "MESHDNS_CHECK_DOMAIN", default_value = "global")]
    pub domain: String,
    /// A name to resolve too (e.g. web.shop.global): directly, and with --via through a resolver.
    #[arg(long, env = "MESHDNS_CHECK_NAME")]
    pub name: Option<String>,
    /// A resolver to test (a member cluster's CoreDNS, HOST:PORT): it must give --name (or the domain's SOA) as the registry does.
    #[arg(long, env = "MESHDNS_CHECK_VIA")]
    pub via: Option<String>,
    /// The source address to place (default: the address this host sends DNS queries from).
    #[arg(long, env = "MESHDNS_CHECK_SOURCE")]
    pub source: Option<IpAddr>,
    /// Fail unless the source address maps to this cluster (run from a member pod).
    #[arg(long = "expect-cluster", env = "MESHDNS_CHECK_EXPECT_CLUSTER")]
    pub expect_cluster: Option<String>,
    /// Fail when a certificate expires within this many days.
    #[arg(
        long = "min-certificate-days",
        env = "MESHDNS_CHECK_MIN_CERTIFICATE_DAYS",
        default_value_t = 14
    )]
    pub min_certificate_days: i64,
    /// How long each network check may take.
    #[arg(long, env = "MESHDNS_CHECK_TIMEOUT", default_value = "3s", value_parser = meshdns_proto::duration::parse)]
    pub timeout: Duration,
    /// Output format: text or json.
    #[arg(long, env = "MESHDNS_CHECK_OUTPUT", default_value = "text")]
    pub output: String,
    /// Client credentials: --tls-ca, --tls-cert, --tls-key, --token-file, --insecure.
    #[command(flatten)]
    pub client: meshdns_cli::ClientFlags,
}

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Fail,
    /// Not run: what it needs failed, or it does not apply.
    Skip,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about a failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// Every check, in order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
}

impl Report {
    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Pass, detail, None);
    }

    fn fail(&mut self, name: &'static str, detail: impl Into<String>, hint: impl Into<String>) {
        self.push(name, Status::Fail, detail, Some(hint.into()));
    }

    fn skip(&mut self, name: &'static str, detail: impl Into<String>) {
        self.push(name, Status::Skip, detail, None);
    }

    fn push(
        &mut self,
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        hint: Option<String>,
    ) {
        self.checks.push(Check {
            name,
            status,
            detail: detail.into(),
            hint,
        });
    }

    /// Whether any check failed (the exit code is 1).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// The report as aligned lines, or as JSON.
    pub fn render(&self, json_output: bool) -> String {
        if json_output {
            let failed = self
                .checks
                .iter()
                .filter(|c| c.status == Status::Fail)
                .count();
            return serde_json::to_string_pretty(
                &json!({ "checks": self.checks, "failed": failed }),
            )
            .unwrap_or_default()
                + "\n";
        }
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        let mut out = String::new();
        for c in &self.checks {
            let status = match c.status {
                Status::Pass => "PASS",
                Status::Fail => "FAIL",
                Status::Skip => "SKIP",
            };
            out.push_str(&format!("{status}  {:<width$}  {}\n", c.name, c.detail));
            if let Some(hint) = &c.hint {
                out.push_str(&format!("      {:<width$}  hint: {hint}\n", ""));
            }
        }
        let failed = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .count();
        out.push_str(&match failed {
            0 => "all checks passed\n".to_owned(),
            n => format!("{n} check(s) failed\n"),
        });
        out
    }
}

/// `MAJOR.MINOR` of a version string (`0.1.0`, `v1.2.3-rc1`).
fn major_minor(version: &str) -> Option<(u64, u64)> {
    let mut parts = version.trim_start_matches('v').split(['.', '-', '+']);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Versions that speak the same protocol: the same major version, and
/// the same minor while the major is 0 (semver's promise).
pub fn compatible(a: &str, b: &str) -> Option<bool> {
    let (a, b) = (major_minor(a)?, major_minor(b)?);
    Some(a.0 == b.0 && (a.0 > 0 || a.1 == b.1))
}

/// The cluster whose client CIDR holds `source` (longest prefix), and
/// that CIDR.
pub fn place(clusters: &[wire::ClusterInfo], source: IpAddr) -> Option<(String, IpNet)> {
    let source = match source {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
        v4 => v4,
    };
    clusters
        .iter()
        .flat_map(|c| {
            c.client_cidrs
                .iter()
                .filter_map(|s| s.parse::<IpNet>().ok())
                .map(move |net| (c.name.clone(), net))
        })
        .filter(|(_, net)| net.contains(&source))
        .max_by_key(|(_, net)| net.prefix_len())
}

/// Pairs of client CIDRs of different clusters that overlap.
pub fn overlaps(clusters: &[wire::ClusterInfo]) -> Vec<String> {
    let nets: Vec<(&str, IpNet)> = clusters
        .iter()
        .flat_map(|c| {
            c.client_cidrs
                .iter()
                .filter_map(|s| s.parse::<IpNet>().ok())
                .map(move |net| (c.name.as_str(), net))
        })
        .collect();
    let mut found = Vec::new();
    for (i, (a, x)) in nets.iter().enumerate() {
        for (b, y) in &nets[i + 1..] {
            if a != b && (x.contains(&y.network()) || y.contains(&x.network())) {
                found.push(format!("{x} ({a}) overlaps {y} ({b})"));
            }
        }
    }
    found
}

/// The address this host sends packets to `server` from.
fn local_source(server: SocketAddr) -> Option<IpAddr> {
    let bind = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = std::net::UdpSocket::bind(bind).ok()?;
    socket.connect(server).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Resolves `HOST:PORT` (or `HOST` with `default_port`) to one address.
async fn resolve(text: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let with_port = if text
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        text.to_owned()
    } else {
        format!("{text}:{default_port}")
    };
    tokio::net::lookup_host(&with_port)
        .await
        .map_err(|e| format!("{with_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{with_port}: no address"))
}

/// The registry URL's host.
fn registry_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => authority,
    };
    (!host.is_empty()).then(|| host.trim_matches(['[', ']']).to_owned())
}

fn days_left(not_after: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    (not_after - now).div_euclid(86_400)
}

/// Runs every check.
pub async fn run(args: &CheckArgs) -> Result<Report, Error> {
    if !matches!(args.output.as_str(), "text" | "json") {
        return Err(Error::config(
            "--output",
            format!("{:?} is not a format (use text or json)", args.output),
        ));
    }
    let mut report = Report::default();
    let auth = args.client.auth();
    let url = auth
        .url(&args.registry)
        .map_err(|e| Error::config("--registry", e.to_string()))?;
    let clusters = registry_checks(args, &auth, &url, &mut report).await;
    certificate_checks(args, &mut report);
    let dns_text = match &args.dns {
        Some(dns) => dns.clone(),
        None => registry_host(&url).unwrap_or_else(|| "127.0.0.1".into()),
    };
    let dns = match resolve(&dns_text, 53).await {
        Ok(dns) => Some(dns),
        Err(e) => {
            report.fail(
                "dns server",
                format!("cannot resolve --dns {dns_text:?}: {e}"),
                "give the registry's DNS address with --dns HOST:PORT",
            );
            None
        }
    };
    let direct = match dns {
        Some(dns) => dns_checks(args, dns, &mut report).await,
        None => None,
    };
    match (&clusters, dns) {
        (Some((clusters, _)), Some(dns)) => source_check(args, clusters, dns, &mut report),
        _ => report.skip(
            "source cluster",
            "needs the registry's cluster list and the DNS address",
        ),
    }
    match &clusters {
        Some((clusters, version)) => fleet_checks(clusters, version, &mut report),
        None => {
            for name in [
                "client CIDRs",
                "clusters live",
                "export streams",
                "versions",
            ] {
                report.skip(name, "needs the registry's cluster list");
            }
        }
    }
    via_check(args, direct, &mut report).await;
    Ok(report)
}

/// Reachable, credentials accepted: the cluster list and the registry's
/// version, when both pass.
async fn registry_checks(
    args: &CheckArgs,
    auth: &ClientAuth,
    url: &str,
    report: &mut Report,
) -> Option<(Vec<wire::ClusterInfo>, String)> {
    let connected = tokio::time::timeout(args.timeout, auth.connect(url)).await;
    let mut client = match connected {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            report.fail(
                "registry reachable",
                e.to_string(),
                "check --registry (scheme, host, port), that the hub's gRPC port is open from here (NetworkPolicy, load balancer source ranges), and for https:// --tls-ca",
            );
            report.skip("credentials accepted", "the registry is not reachable");
            return None;
        }
        Err(_) => {
            report.fail(
                "registry reachable",
                format!("no connection to {url} within {:?}", args.timeout),
                "check --registry and that the hub's gRPC port is open from here",
            );
            report.skip("credentials accepted", "the registry is not reachable");
            return None;
        }
    };
    let call = tokio::time::timeout(
        args.timeout,
        client.list_clusters(wire::ListClustersRequest {}),
    )
    .await;
    match call {
        Ok(Ok(reply)) => {
            let reply = reply.into_inner();
            report.pass("registry reachable", format!("{url} answers"));
            report.pass(
                "credentials accepted",
                format!("ListClusters answered: {} clusters", reply.clusters.len()),
            );
            Some((reply.clusters, reply.registry_version))
        }
        Ok(Err(status)) => {
            use tonic::Code;
            match status.code() {
                Code::Unauthenticated | Code::PermissionDenied => {
                    report.pass("registry reachable", format!("{url} answers"));
                    report.fail(
                        "credentials accepted",
                        format!("{:?}: {}", status.code(), status.message()),
                        "give a reader credential: --token-file with a `reader:` token from the hub's --token-file, or --tls-cert/--tls-key with a spiffe://<trust-domain>/reader/<name> URI SAN (a cluster's credential may not read)",
                    );
                }
                _ => {
                    report.fail(
                        "registry reachable",
                        format!("{url}: {:?}: {}", status.code(), status.message()),
                        "is --registry a meshdns hub's gRPC port (not admin or DNS), and the scheme right (https:// needs --tls-ca)?",
                    );
                    report.skip("credentials accepted", "the registry did not answer");
                }
            }
            None
        }
        Err(_) => {
            report.fail(
                "registry reachable",
                format!("ListClusters took longer than {:?}", args.timeout),
                "the hub is overloaded or a proxy holds the call; check its /readyz",
            );
            report.skip("credentials accepted", "the registry did not answer");
            None
        }
    }
}

/// Days left on the certificates this check presents and trusts.
fn certificate_checks(args: &CheckArgs, report: &mut Report) {
    let files = [
        ("client certificate", &args.client.credentials.tls_cert),
        ("ca certificate", &args.client.credentials.tls_ca),
    ];
    for (name, path) in files {
        let Some(path) = path else {
            report.skip(name, "none given");
            continue;
        };
        match meshdns_proto::certificate::file_not_after(path) {
            Ok(not_after) => {
                let days = days_left(not_after);
                if days < args.min_certificate_days {
                    report.fail(
                        name,
                        format!("{} expires in {days} days", path.display()),
                        "renew it (with cert-manager: check the Certificate's status and the issuer)",
                    );
                } else {
                    report.pass(name, format!("{} expires in {days} days", path.display()));
                }
            }
            Err(e) => report.fail(name, e, "give a PEM certificate"),
        }
    }
}

/// The domain's SOA over UDP and TCP, and `--name`; returns the direct
/// answer to what `--via` is compared against.
async fn dns_checks(
    args: &CheckArgs,
    dns: SocketAddr,
    report: &mut Report,
) -> Option<probe::Reply> {
    for (name, transport) in [("dns over udp", "udp"), ("dns over tcp", "tcp")] {
        let reply = match transport {
            "udp" => probe::udp(dns, &args.domain, probe::TYPE_SOA, args.timeout).await,
            _ => probe::tcp(dns, &args.domain, probe::TYPE_SOA, args.timeout).await,
        };
        match reply {
            Ok(r) if r.rcode == 0 && r.aa && r.answers > 0 => {
                report.pass(name, format!("{dns} answers {} SOA authoritatively", args.domain));
            }
            Ok(r) => report.fail(
                name,
                format!(
                    "{dns} answered {} SOA with {}{}",
                    args.domain,
                    r.rcode_name(),
                    if r.aa { "" } else { ", not authoritative" }
                ),
                "is --dns the hub's DNS port, and --domain one it serves (serve --domain)?",
            ),
            Err(e) => report.fail(
                name,
                e,
                format!(
                    "the hub's DNS {transport} port is not reachable from here: check --dns, the Service or load balancer in front of it, and NetworkPolicies"
                ),
            ),
        }
    }
    let name = args.name.as_deref().unwrap_or(&args.domain);
    let qtype = if args.name.is_some() {
        probe::TYPE_A
    } else {
        probe::TYPE_SOA
    };
    let direct = probe::udp(dns, name, qtype, args.timeout).await;
    match (&args.name, &direct) {
        (Some(n), Ok(r)) if r.rcode == 0 && !r.addresses.is_empty() => report.pass(
            "name resolves",
            format!("{n}: {}", join(&r.addresses)),
        ),
        (Some(n), Ok(r)) => report.fail(
            "name resolves",
            format!("{n}: {} with {} addresses", r.rcode_name(), r.addresses.len()),
            "`meshdns status --service NAME.NAMESPACE` shows which clusters export it and their endpoints' health",
        ),
        (Some(n), Err(e)) => report.fail("name resolves", format!("{n}: {e}"), "see the DNS checks above"),
        (None, _) => {}
    }
    direct.ok()
}

fn join(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which cluster the asker's address maps to, and why.
fn source_check(
    args: &CheckArgs,
    clusters: &[wire::ClusterInfo],
    dns: SocketAddr,
    report: &mut Report,
) {
    let (source, how) = match args.source {
        Some(source) => (source, "--source"),
        None => match local_source(dns) {
            Some(source) => (source, "this host's source address toward the DNS server"),
            None => {
                report.skip("source cluster", "no local address toward the DNS server");
                return;
            }
        },
    };
    let found = place(clusters, source);
    let detail = match &found {
        Some((cluster, net)) => format!(
            "{source} ({how}) maps to cluster {cluster}: it lies in {net}, the longest client CIDR that holds it"
        ),
        None => format!(
            "{source} ({how}) maps to no cluster: no client CIDR holds it, so answers carry every cluster's endpoints (no locality)"
        ),
    };
    match (&args.expect_cluster, &found) {
        (Some(expected), Some((cluster, _))) if cluster == expected => {
            report.pass("source cluster", detail)
        }
        (Some(expected), _) => report.fail(
            "source cluster",
            detail,
            format!(
                "cluster {expected} must announce a client CIDR holding the address its resolvers ask from (the syncer's --client-cidr, or its nodes' pod CIDRs); behind a NAT or a load balancer that rewrites sources the hub sees another address (use externalTrafficPolicy: Local)"
            ),
        ),
        (None, _) => report.pass("source cluster", detail),
    }
}

/// Overlapping and refused client CIDRs, stale clusters, missing streams,
/// versions.
fn fleet_checks(clusters: &[wire::ClusterInfo], registry_version: &str, report: &mut Report) {
    let mut problems = overlaps(clusters);
    problems.extend(clusters.iter().flat_map(|c| {
        c.refused_client_cidrs
            .iter()
            .map(move |r| format!("refused from {}: {r}", c.name))
    }));
    let cidrs: usize = clusters.iter().map(|c| c.client_cidrs.len()).sum();
    if problems.is_empty() {
        report.pass(
            "client CIDRs",
            format!("{cidrs} client CIDRs, none overlapping or refused"),
        );
    } else {
        report.fail(
            "client CIDRs",
            problems.join("; "),
            "each cluster must announce only its own askers' CIDRs: fix the newcomer's --client-cidr (or its nodes' pod CIDRs); the first holder keeps an overlapping CIDR, so the other cluster's askers get no locality",
        );
    }
    let stale: Vec<&str> = clusters
        .iter()
        .filter(|c| c.state == wire::ClusterState::Stale as i32)
        .map(|c| c.name.as_str())
        .collect();
    if stale.is_empty() {
        report.pass(
            "clusters live",
            format!("{} clusters, all live", clusters.len()),
        );
    } else {
        report.fail(
            "clusters live",
            format!("stale: {}", stale.join(", ")),
            "a stale cluster's endpoints are out of answers: check its meshdns-syncer (logs, /readyz) and its route to the hub",
        );
    }
    let unconnected: Vec<&str> = clusters
        .iter()
        .filter(|c| !c.connected)
        .map(|c| c.name.as_str())
        .collect();
    if unconnected.is_empty() {
        report.pass("export streams", "every cluster has an open Export stream");
    } else {
        report.fail(
            "export streams",
            format!("no stream: {}", unconnected.join(", ")),
            "the syncer is gone or cannot connect: its logs say why (credentials refused, hub unreachable)",
        );
    }
    if registry_version.is_empty() {
        report.skip(
            "versions",
            "the registry does not say its version (older than this check)",
        );
        return;
    }
    let mut incompatible: Vec<String> = clusters
        .iter()
        .filter(|c| compatible(&c.version, registry_version) == Some(false))
        .map(|c| format!("{} runs {}", c.name, c.version))
        .collect();
    if compatible(env!("CARGO_PKG_VERSION"), registry_version) == Some(false) {
        incompatible.push(format!("this check is {}", env!("CARGO_PKG_VERSION")));
    }
    if incompatible.is_empty() {
        report.pass(
            "versions",
            format!("the registry runs {registry_version}; every syncer is compatible"),
        );
    } else {
        report.fail(
            "versions",
            format!("the registry runs {registry_version}; {}", incompatible.join(", ")),
            "upgrade the hub first, then the syncers, within one minor release (0.x: the same minor)",
        );
    }
}

/// `--via`: the resolver gives what the registry gives.
async fn via_check(args: &CheckArgs, direct: Option<probe::Reply>, report: &mut Report) {
    let Some(via) = &args.via else {
        report.skip("via resolver", "no --via given");
        return;
    };
    let name = args.name.as_deref().unwrap_or(&args.domain);
    let qtype = if args.name.is_some() {
        probe::TYPE_A
    } else {
        probe::TYPE_SOA
    };
    let hint = format!(
        "the resolver must forward the {} zone to the hub's DNS (CoreDNS: a `{} {{ forward . HUB }}` block; unbound: a stub-zone; dnsmasq: server=/{}/HUB)",
        args.domain, args.domain, args.domain
    );
    let server = match resolve(via, 53).await {
        Ok(server) => server,
        Err(e) => {
            report.fail(
                "via resolver",
                format!("--via {via}: {e}"),
                "give HOST:PORT",
            );
            return;
        }
    };
    let reply = match probe::udp(server, name, qtype, args.timeout).await {
        Ok(reply) => reply,
        Err(e) => {
            report.fail("via resolver", e, hint);
            return;
        }
    };
    let Some(direct) = direct else {
        report.fail(
            "via resolver",
            format!(
                "{server} answered {name} with {}, but the direct answer is missing",
                reply.rcode_name()
            ),
            "fix the DNS checks above first",
        );
        return;
    };
    let same = reply.rcode == direct.rcode
        && (qtype == probe::TYPE_SOA || reply.addresses == direct.addresses);
    let detail = format!(
        "{server} answered {name} with {} [{}]; the registry with {} [{}]",
        reply.rcode_name(),
        join(&reply.addresses),
        direct.rcode_name(),
        join(&direct.addresses)
    );
    if same && reply.rcode == 0 && reply.answers > 0 {
        report.pass("via resolver", detail);
    } else if reply.rcode == direct.rcode && reply.rcode == 0 {
        // Same rcode, other addresses: rotation or locality differ by
        // source (the resolver asks from its own address), or a cache.
        report.fail(
            "via resolver",
            detail,
            "the resolver asks from its own address: if the sets differ, its address maps to another cluster (see source cluster), or it caches longer than the TTL",
        );
    } else {
        report.fail("via resolver", detail, hint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, cidrs: &[&str]) -> wire::ClusterInfo {
        wire::ClusterInfo {
            name: name.into(),
            client_cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn versions_compatible_within_a_minor_for_zero_majors() {
        for (a, b, expected) in [
            ("0.1.0", "0.1.7", Some(true)),
            ("0.1.0", "0.2.0", Some(false)),
            ("1.2.0", "1.9.1", Some(true)),
            ("v1.2.0-rc1", "2.0.0", Some(false)),
            ("test", "0.1.0", None),
        ] {
            assert_eq!(compatible(a, b), expected, "{a} {b}");
        }
    }

    #[test]
    fn places_by_longest_prefix_and_finds_overlaps() {
        let fleet = [
            cluster("east-1", &["10.1.0.0/16", "10.9.0.0/16"]),
            cluster("east-2", &["10.1.2.0/24"]),
            cluster("west-1", &["10.3.0.0/16"]),
        ];
        let at = |ip: &str| place(&fleet, ip.parse().unwrap()).map(|(c, n)| (c, n.to_string()));
        assert_eq!(
            at("10.1.2.3"),
            Some(("east-2".into(), "10.1.2.0/24".into()))
        );
        assert_eq!(
            at("10.1.3.3"),
            Some(("east-1".into(), "10.1.0.0/16".into()))
        );
        assert_eq!(
            at("::ffff:10.3.0.1"),
            Some(("west-1".into(), "10.3.0.0/16".into()))
        );
        assert_eq!(at("192.0.2.1"), None);
        assert_eq!(
            overlaps(&fleet),
            ["10.1.0.0/16 (east-1) overlaps 10.1.2.0/24 (east-2)"]
        );
    }

    #[test]
    fn registry_host_from_urls() {
        for (url, host) in [
            ("http://127.0.0.1:7443", Some("127.0.0.1")),
            ("https://meshdns.example:7443/", Some("meshdns.example")),
            ("https://[::1]:7443", Some("::1")),
            ("http://", None),
        ] {
            assert_eq!(registry_host(url).as_deref(), host, "{url}");
        }
    }
}
