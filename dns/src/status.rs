//! `meshdns status`: the fleet as a registry sees it, as a table or JSON.

use std::time::{SystemTime, UNIX_EPOCH};

use clap::Args;
use meshdns_proto::model::ServiceExport;
use meshdns_proto::wire;
use serde_json::{Value, json};

use crate::error::Error;

mod policy;

/// `meshdns status` flags.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// The registry to ask, as http://HOST:PORT.
    #[arg(
        long,
        env = "MESHDNS_REGISTRY",
        default_value = "http://127.0.0.1:7443"
    )]
    pub registry: String,
    /// Show one service's endpoints per cluster, the clusterset's resolved ports and type, and its conflicts, as NAME.NAMESPACE (e.g. web.shop).
    #[arg(long)]
    pub service: Option<String>,
    /// Output format: table or json.
    #[arg(long, default_value = "table")]
    pub output: String,
    /// Client credentials: --tls-ca, --tls-cert, --tls-key, --token-file, --insecure.
    #[command(flatten)]
    pub client: meshdns_cli::ClientFlags,
}

fn age(unix_ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if unix_ms == 0 {
        return "never".into();
    }
    let secs = now.saturating_sub(unix_ms) / 1000;
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        _ => format!("{}h", secs / 3600),
    }
}

/// A follower's upstream link in `--output json`.
fn upstream_json(view: &crate::metrics::FollowerView) -> Value {
    json!({
        "url": view.upstream,
        "connected": view.connected,
        "last_event_unix_ms": view.last_event_unix_ms,
        "disconnected_seconds": view.disconnected.as_secs_f64(),
        "stale": view.stale,
    })
}

/// Renders rows as aligned columns.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

/// Asks the registry and returns the report.
pub async fn run(args: &StatusArgs) -> Result<String, Error> {
    let json_output = match args.output.as_str() {
        "table" => false,
        "json" => true,
        other => {
            return Err(Error::config(
                "--output",
                format!("{other:?} is not a format (use table or json)"),
            ));
        }
    };
    let service = match &args.service {
        None => None,
        Some(s) => {
            let (name, namespace) = s.split_once('.').ok_or_else(|| {
                Error::config(
                    "--service",
                    format!("{s:?}: write NAME.NAMESPACE, e.g. web.shop"),
                )
            })?;
            Some(wire::ServiceKey {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
        }
    };
    let (url, mut client) = crate::reader::connect(&args.client, &args.registry).await?;
    let call = crate::reader::call_failed(&url);
    let listed = client
        .list_clusters(wire::ListClustersRequest {})
        .await
        .map_err(call)?;
    // Asked of a follower: its upstream and how fresh its mirror is.
    let upstream = crate::follow::reported(listed.metadata());
    let listed = listed.into_inner();
    let clusters = listed.clusters;
    // The policy in force; `None` from a registry before policies. One
    // that does not validate here (a newer registry) is shown as such.
    let fleet_policy = listed
        .policy
        .as_ref()
        .map(meshdns_proto::model::FleetPolicy::try_from);
    let state = |c: &wire::ClusterInfo| {
        if c.state == wire::ClusterState::Stale as i32 {
            "stale"
        } else {
            "live"
        }
    };
    let Some(key) = service else {
        if json_output {
            let list: Vec<Value> = clusters
                .iter()
                .map(|c| {
                    json!({
                        "name": c.name, "region": c.region, "zone": c.zone, "state": state(c),
                        "connected": c.connected, "last_heartbeat_unix_ms": c.last_heartbeat_unix_ms,
                        "services": c.services, "endpoints": c.endpoints, "version": c.version,
                        "client_cidrs": c.client_cidrs,
                        "refused_client_cidrs": c.refused_client_cidrs,
                    })
                })
                .collect();
            return Ok(serde_json::to_string_pretty(&json!({
                "registry": url,
                "clusters": list,
                "upstream": upstream.as_ref().map(upstream_json),
                "policy": policy_json(fleet_policy.as_ref()),
            }))
            .unwrap_or_default()
                + "\n");
        }
        let rows: Vec<Vec<String>> = clusters
            .iter()
            .map(|c| {
                vec![
                    c.name.clone(),
                    c.region.clone(),
                    c.zone.clone(),
                    state(c).to_owned(),
                    if c.connected { "yes" } else { "no" }.to_owned(),
                    age(c.last_heartbeat_unix_ms),
                    c.services.to_string(),
                    c.endpoints.to_string(),
                    c.version.clone(),
                ]
            })
            .collect();
        let header = [
            "CLUSTER",
            "REGION",
            "ZONE",
            "STATE",
            "STREAM",
            "HEARTBEAT",
            "SERVICES",
            "ENDPOINTS",
            "VERSION",
        ];
        // Refused client CIDRs are a misconfiguration an operator must
        // see: listed under the table, one line each.
        let refused: String = clusters
            .iter()
            .flat_map(|c| {
                c.refused_client_cidrs
                    .iter()
                    .map(move |r| format!("refused from {}: {r}\n", c.name))
            })
            .collect();
        let follows = upstream
            .as_ref()
            .map(|u| format!("follows {}", crate::admin::follower_detail(u)))
            .unwrap_or_default();
        let policy = match &fleet_policy {
            None => String::new(),
            Some(Ok(p)) => policy::text(p, &clusters),
            Some(Err(e)) => format!("\npolicy: cannot read the registry's: {e}\n"),
        };
        return Ok(format!(
            "{}{} clusters at {url}\n{follows}{refused}{policy}",
            table(&header, &rows),
            clusters.len()
        ));
    };
    let answer = client
        .get_service(wire::GetServiceRequest {
            key: Some(key.clone()),
        })
        .await
        .map_err(call)?
        .into_inner();
    let (exports, resolved) = (answer.exports, answer.resolved);
    let cluster_state = |name: &str| {
        clusters
            .iter()
            .find(|c| c.name == name)
            .map(state)
            .unwrap_or("unknown")
    };
    if json_output {
        let list: Vec<Value> = exports
            .iter()
            .map(|e| {
                // The registry validated it; a registry of another version
                // may still send what this one does not read: say so.
                let mut v = match e.service.as_ref().map(ServiceExport::try_from) {
                    Some(Ok(s)) => crate::json::service(&s, usize::MAX),
                    Some(Err(problem)) => json!({ "error": problem.to_string() }),
                    None => json!({ "error": "no service in the answer" }),
                };
                v["cluster"] = json!(e.cluster);
                v["cluster_state"] = json!(cluster_state(&e.cluster));
                v
            })
            .collect();
        let name = key.to_string();
        return Ok(serde_json::to_string_pretty(&json!({
            "service": name,
            "exports": list,
            "clusterset": resolved.as_ref().map(resolved_json),
            "policy": service_policy(fleet_policy.as_ref(), &key)
                .and_then(|(p, k)| p.services.get(&k).map(|s| crate::json::service_policy(&k, s))),
        }))
        .unwrap_or_default()
            + "\n");
    }
    if exports.is_empty() {
        return Ok(format!(
            "{}/{} is not exported by any cluster\n",
            key.namespace, key.name
        ));
    }
    let mut rows = Vec::new();
    for e in &exports {
        let s = e.service.clone().unwrap_or_default();
        for ep in &s.endpoints {
            let check = meshdns_proto::convert::health_text(ep.health);
            let health = if ep.ready {
                "ready".to_owned()
            } else if ep.serving && ep.terminating {
                "terminating".to_owned()
            } else if check.starts_with("failing") {
                // Why the syncer's health check took it out.
                format!("not ready (health check {check})")
            } else {
                "not ready".to_owned()
            };
            rows.push(vec![
                e.cluster.clone(),
                cluster_state(&e.cluster).to_owned(),
                ep.addresses.join(","),
                ep.hostname.clone(),
                ep.zone.clone(),
                health,
            ]);
        }
        if s.endpoints.is_empty() {
            rows.push(vec![
                e.cluster.clone(),
                cluster_state(&e.cluster).to_owned(),
                "-".into(),
                String::new(),
                String::new(),
                "no endpoints".into(),
            ]);
        }
    }
    let header = [
        "CLUSTER",
        "STATE",
        "ADDRESSES",
        "HOSTNAME",
        "ZONE",
        "HEALTH",
    ];
    let overrides = service_policy(fleet_policy.as_ref(), &key)
        .and_then(|(p, k)| policy::service_line(&p, &k))
        .unwrap_or_default();
    Ok(format!(
        "{}/{} in {} clusters\n{}{}{overrides}",
        key.namespace,
        key.name,
        exports.len(),
        table(&header, &rows),
        resolved.as_ref().map(resolved_text).unwrap_or_default()
    ))
}

/// The policy for `--output json`: null from a registry before policies,
/// an error object when it does not validate here.
fn policy_json(
    policy: Option<&Result<meshdns_proto::model::FleetPolicy, meshdns_proto::error::InvalidField>>,
) -> Value {
    match policy {
        None => Value::Null,
        Some(Ok(p)) => crate::json::policy(p),
        Some(Err(e)) => json!({ "error": e.to_string() }),
    }
}

/// The policy and the service's key in model form, when both are readable.
fn service_policy(
    policy: Option<&Result<meshdns_proto::model::FleetPolicy, meshdns_proto::error::InvalidField>>,
    key: &wire::ServiceKey,
) -> Option<(
    meshdns_proto::model::FleetPolicy,
    meshdns_proto::model::ServiceKey,
)> {
    let policy = policy?.as_ref().ok()?;
    let key = meshdns_proto::model::ServiceKey::try_from(key).ok()?;
    Some((policy.clone(), key))
}

fn mode_name(mode: i32) -> &'static str {
    if mode == wire::Mode::ClusterIp as i32 {
        "clusterip"
    } else {
        "endpoints"
    }
}

fn port_text(p: &wire::Port) -> String {
    let protocol = wire::Protocol::try_from(p.protocol)
        .map_or("TCP", |p| p.as_str_name().trim_start_matches("PROTOCOL_"));
    match p.name.as_str() {
        "" => format!("{}/{protocol}", p.port),
        name => format!("{name} ({}/{protocol})", p.port),
    }
}

/// The clusterset's resolved view of the service (`--json`).
fn resolved_json(r: &wire::ServiceImport) -> Value {
    json!({
        "mode": mode_name(r.mode),
        "ports": r.ports.iter().map(port_text).collect::<Vec<_>>(),
        "clusters": r.clusters.iter().map(|c| json!({
            "cluster": c.cluster, "first_exported_unix_ms": c.first_exported_unix_ms,
        })).collect::<Vec<_>>(),
        "conflicts": r.conflicts.iter().map(|c| json!({
            "cluster": c.cluster, "field": c.field, "winner": c.winner, "message": c.message,
        })).collect::<Vec<_>>(),
    })
}

/// The clusterset's resolved view of the service, and its conflicts.
fn resolved_text(r: &wire::ServiceImport) -> String {
    let ports: Vec<String> = r.ports.iter().map(port_text).collect();
    let mut out = format!(
        "clusterset: mode {}, ports [{}], oldest export first: {}\n",
        mode_name(r.mode),
        ports.join(", "),
        r.clusters
            .iter()
            .map(|c| c.cluster.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if r.conflicts.is_empty() {
        out.push_str("conflicts: none\n");
    }
    for c in &r.conflicts {
        out.push_str(&format!(
            "conflict: {} {} (winner {}): {}\n",
            c.cluster, c.field, c.winner, c.message
        ));
    }
    out
}
