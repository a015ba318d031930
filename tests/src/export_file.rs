//! The export file format written from the model: the inverse of the
//! file source's parser, for file → model → file round trips (every value
//! quoted as a JSON string, which YAML reads as written).

use std::fmt::Write;

use meshdns_proto::model::ExportSet;

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// `set` as an export file that parses back to it.
pub fn render(set: &ExportSet) -> String {
    let c = &set.cluster;
    let mut out = format!("cluster: {}\n", quoted(c.name.as_str()));
    if let Some(region) = &c.region {
        let _ = writeln!(out, "region: {}", quoted(region.as_str()));
    }
    if let Some(zone) = &c.zone {
        let _ = writeln!(out, "zone: {}", quoted(zone.as_str()));
    }
    let cidrs: Vec<String> = c
        .client_cidrs
        .iter()
        .map(|n| quoted(&n.to_string()))
        .collect();
    let _ = writeln!(out, "clientCIDRs: [{}]", cidrs.join(", "));
    out.push_str("services:\n");
    for s in set.services.values() {
        let key = s.key();
        let _ = writeln!(
            out,
            "  - name: {}\n    namespace: {}\n    mode: {}\n    affinity: {}",
            quoted(key.name.as_str()),
            quoted(key.namespace.as_str()),
            s.mode().as_str(),
            s.policy().affinity.as_str()
        );
        if let Some(ttl) = s.policy().ttl {
            let _ = writeln!(out, "    ttl: {ttl}");
        }
        let ips: Vec<String> = s
            .cluster_ips()
            .iter()
            .map(|a| quoted(&a.to_string()))
            .collect();
        let _ = writeln!(out, "    clusterIPs: [{}]", ips.join(", "));
        out.push_str("    ports:\n");
        for p in s.ports() {
            let name = p
                .name
                .as_ref()
                .map(|n| format!("name: {}, ", quoted(n.as_str())))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "      - {{{name}protocol: {}, port: {}}}",
                p.protocol.label(),
                p.port
            );
        }
        out.push_str("    endpoints:\n");
        for e in s.endpoints() {
            let ips: Vec<String> = e.addresses.iter().map(|a| quoted(&a.to_string())).collect();
            let mut fields = vec![format!("ips: [{}]", ips.join(", "))];
            if let Some(h) = &e.hostname {
                fields.push(format!("hostname: {}", quoted(h.as_str())));
            }
            if let Some(z) = &e.zone {
                fields.push(format!("zone: {}", quoted(z.as_str())));
            }
            if let Some(n) = &e.node {
                fields.push(format!("node: {}", quoted(n.as_str())));
            }
            fields.push(format!(
                "ready: {}, serving: {}, terminating: {}",
                e.ready, e.serving, e.terminating
            ));
            let _ = writeln!(out, "      - {{{}}}", fields.join(", "));
        }
    }
    out
}
