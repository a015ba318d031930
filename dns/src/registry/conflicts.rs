//! The clusterset's view of one service, as the MCS API resolves it: the
//! properties of the oldest export win, and every export that disagrees
//! on a field is in conflict with it.
//!
//! "Oldest" is the time the registry first accepted each cluster's export
//! of the service ([`super::imports`] keeps and persists it), ties broken
//! by cluster name: both are known to the registry alone, so a member
//! cannot claim to be older than it is, and a restart does not reshuffle
//! winners. Ports follow the MCS rule (KEP-1645, mcs-api `PortConflict`):
//! the service offers the union of its exports' ports; a port is in
//! conflict when another one already in the union has its name (unnamed
//! counts as one name) or its port/protocol with a different value, and
//! the oldest export's value wins. An export with fewer ports (one whose
//! slices list only some, a cluster scaled to zero) adds fewer and is in
//! no conflict. The ports are the
//! EndpointSlices' ports (what the endpoints listen on), as DNS answers
//! carry the endpoints' addresses. The mode decides the ServiceImport's
//! type (`endpoints`: Headless, `clusterip`: ClusterSetIP).

use meshdns_proto::model::{ClusterName, Mode, Port, ServiceExport, ServiceKey};
use meshdns_proto::wire;

/// A field two exports of a service can disagree on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Ports,
    Mode,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Ports => "ports",
            Field::Mode => "mode",
        }
    }
}

/// One cluster's export disagreeing with the resolved service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub cluster: ClusterName,
    pub field: Field,
    pub winner: ClusterName,
    pub message: String,
}

/// A service as the clusterset sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub key: ServiceKey,
    pub ports: Vec<Port>,
    pub mode: Mode,
    /// Exporting clusters, oldest first, with when each was first accepted.
    pub clusters: Vec<(ClusterName, u64)>,
    pub conflicts: Vec<Conflict>,
}

/// One cluster's export of a service and when it was first accepted.
#[derive(Debug, Clone, Copy)]
pub struct Exporter<'a> {
    pub cluster: &'a ClusterName,
    pub first_exported_unix_ms: u64,
    pub export: &'a ServiceExport,
}

fn port_key(p: &Port) -> (u16, &'static str, String) {
    let name = p.name.as_ref().map(ToString::to_string).unwrap_or_default();
    (p.port.get(), p.protocol.label(), name)
}

/// Ports in a canonical order, for comparing and showing.
fn sorted_ports(ports: &[Port]) -> Vec<Port> {
    let mut ports = ports.to_vec();
    ports.sort_by_key(port_key);
    ports
}

/// One port as a conflict message names it: `"http" 9090/TCP`.
fn show_port(port: &Port) -> String {
    match &port.name {
        Some(name) => format!("{:?} {}/{}", name.to_string(), port.port, port.protocol),
        None => format!("(unnamed) {}/{}", port.port, port.protocol),
    }
}

/// The mode as the ServiceImport type it becomes.
pub fn import_type(mode: Mode) -> &'static str {
    match mode {
        Mode::Endpoints => "Headless",
        Mode::ClusterIp => "ClusterSetIP",
    }
}

/// Resolves a service from its exports; `None` when nobody exports it.
pub fn resolve<'a>(
    key: &ServiceKey,
    exporters: impl IntoIterator<Item = Exporter<'a>>,
) -> Option<Resolved> {
    let mut exporters: Vec<Exporter<'a>> = exporters.into_iter().collect();
    exporters.sort_by(|a, b| {
        (a.first_exported_unix_ms, a.cluster).cmp(&(b.first_exported_unix_ms, b.cluster))
    });
    let oldest = *exporters.first()?;
    let mode = oldest.export.mode();
    // The union of the ports, oldest export first: a port joins unless
    // one already there has its name (unnamed counts as a name) or its
    // port/protocol with another value; then that one wins.
    let mut ports: Vec<(Port, &ClusterName, u64)> = Vec::new();
    let mut conflicts = Vec::new();
    for exporter in &exporters {
        let why = |winner: &ClusterName, at: u64| {
            format!(
                "{winner} exported it first (accepted at {at} ms since the epoch; the oldest export wins)"
            )
        };
        let mut clashes: Vec<(String, &ClusterName, u64)> = Vec::new();
        for port in sorted_ports(exporter.export.ports()) {
            let clash = ports.iter().find(|(q, _, _)| {
                q != &port
                    && (q.name == port.name || (q.port == port.port && q.protocol == port.protocol))
            });
            match clash {
                Some((q, winner, at)) => clashes.push((
                    format!(
                        "port {} differs from the clusterset's {q}",
                        show_port(&port)
                    ),
                    winner,
                    *at,
                )),
                None if ports.iter().any(|(q, _, _)| q == &port) => {}
                None => ports.push((port, exporter.cluster, exporter.first_exported_unix_ms)),
            }
        }
        if let Some((first, winner, at)) = clashes.first() {
            let more = match clashes.len() {
                1 => String::new(),
                n => format!(" (and {} more ports)", n - 1),
            };
            conflicts.push(Conflict {
                cluster: exporter.cluster.clone(),
                field: Field::Ports,
                winner: (*winner).clone(),
                message: format!("{first}{more}: {}", why(winner, *at)),
            });
        }
        if exporter.export.mode() != mode {
            conflicts.push(Conflict {
                cluster: exporter.cluster.clone(),
                field: Field::Mode,
                winner: oldest.cluster.clone(),
                message: format!(
                    "type {} differs from the clusterset's {}: {}",
                    import_type(exporter.export.mode()),
                    import_type(mode),
                    why(oldest.cluster, oldest.first_exported_unix_ms)
                ),
            });
        }
    }
    let ports = sorted_ports(&ports.into_iter().map(|(p, _, _)| p).collect::<Vec<_>>());
    Some(Resolved {
        key: key.clone(),
        ports,
        mode,
        clusters: exporters
            .iter()
            .map(|e| (e.cluster.clone(), e.first_exported_unix_ms))
            .collect(),
        conflicts,
    })
}

impl From<&Resolved> for wire::ServiceImport {
    fn from(r: &Resolved) -> Self {
        let mode = match r.mode {
            Mode::Endpoints => wire::Mode::Endpoints,
            Mode::ClusterIp => wire::Mode::ClusterIp,
        };
        wire::ServiceImport {
            key: Some((&r.key).into()),
            ports: r.ports.iter().map(Into::into).collect(),
            mode: mode.into(),
            clusters: r
                .clusters
                .iter()
                .map(|(c, at)| wire::ImportCluster {
                    cluster: c.to_string(),
                    first_exported_unix_ms: *at,
                })
                .collect(),
            conflicts: r
                .conflicts
                .iter()
                .map(|c| wire::ExportConflict {
                    cluster: c.cluster.to_string(),
                    field: c.field.as_str().to_owned(),
                    winner: c.winner.to_string(),
                    message: c.message.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshdns_proto::model::{Policy, Protocol};
    use std::num::NonZeroU16;

    fn key() -> ServiceKey {
        meshdns_proto::fixtures::key("shop", "web")
    }

    fn export(port: u16, mode: Mode) -> ServiceExport {
        let key = key();
        let ips = match mode {
            Mode::ClusterIp => vec!["10.0.0.1".parse().unwrap()],
            Mode::Endpoints => vec![],
        };
        ServiceExport::new(
            key,
            vec![Port {
                name: None,
                protocol: Protocol::Tcp,
                port: NonZeroU16::new(port).unwrap(),
            }],
            mode,
            ips,
            vec![],
            Policy::default(),
        )
        .unwrap()
    }

    #[test]
    fn the_oldest_export_wins_and_the_others_conflict_by_field() {
        let key = key();
        let (a, b, c): (ClusterName, ClusterName, ClusterName) = (
            ClusterName::new("a").unwrap(),
            ClusterName::new("b").unwrap(),
            ClusterName::new("c").unwrap(),
        );
        let (ea, eb, ec) = (
            export(80, Mode::Endpoints),
            export(8080, Mode::Endpoints),
            export(80, Mode::ClusterIp),
        );
        // b is listed first but accepted later than a.
        let r = resolve(
            &key,
            [
                Exporter {
                    cluster: &b,
                    first_exported_unix_ms: 20,
                    export: &eb,
                },
                Exporter {
                    cluster: &a,
                    first_exported_unix_ms: 10,
                    export: &ea,
                },
                Exporter {
                    cluster: &c,
                    first_exported_unix_ms: 30,
                    export: &ec,
                },
            ],
        )
        .unwrap();
        assert_eq!(r.ports, ea.ports());
        assert_eq!(r.mode, Mode::Endpoints);
        let names: Vec<_> = r.clusters.iter().map(|(c, _)| c.to_string()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        let conflicts: Vec<_> = r
            .conflicts
            .iter()
            .map(|c| (c.cluster.to_string(), c.field, c.winner.to_string()))
            .collect();
        assert_eq!(
            conflicts,
            [
                ("b".to_owned(), Field::Ports, "a".to_owned()),
                ("c".to_owned(), Field::Mode, "a".to_owned())
            ]
        );
        assert!(
            r.conflicts[0].message.contains("8080"),
            "{}",
            r.conflicts[0].message
        );
        // Same time: the cluster name decides, whatever the order given.
        let r = resolve(
            &key,
            [
                Exporter {
                    cluster: &b,
                    first_exported_unix_ms: 5,
                    export: &eb,
                },
                Exporter {
                    cluster: &a,
                    first_exported_unix_ms: 5,
                    export: &ea,
                },
            ],
        )
        .unwrap();
        assert_eq!(r.conflicts[0].winner.to_string(), "a");
        assert!(resolve(&key, []).is_none());
    }

    fn with_ports(ports: &[(Option<&str>, u16)]) -> ServiceExport {
        ServiceExport::new(
            key(),
            ports
                .iter()
                .map(|(name, port)| Port {
                    name: name.map(|n| meshdns_proto::model::PortName::new(n).unwrap()),
                    protocol: Protocol::Tcp,
                    port: NonZeroU16::new(*port).unwrap(),
                })
                .collect(),
            Mode::Endpoints,
            vec![],
            vec![],
            Policy::default(),
        )
        .unwrap()
    }

    fn resolve_two(older: &ServiceExport, newer: &ServiceExport) -> Resolved {
        let (a, b) = (
            ClusterName::new("a").unwrap(),
            ClusterName::new("b").unwrap(),
        );
        resolve(
            &key(),
            [
                Exporter {
                    cluster: &a,
                    first_exported_unix_ms: 1,
                    export: older,
                },
                Exporter {
                    cluster: &b,
                    first_exported_unix_ms: 2,
                    export: newer,
                },
            ],
        )
        .unwrap()
    }

    fn shown(r: &Resolved) -> Vec<String> {
        r.ports.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn ports_are_the_union_and_conflict_by_name_or_port_the_oldest_winning() {
        // Different ports under different names: the union, no conflict.
        let r = resolve_two(
            &with_ports(&[(Some("http"), 80)]),
            &with_ports(&[(Some("http"), 80), (Some("metrics"), 9100)]),
        );
        assert_eq!(shown(&r), ["http (80/TCP)", "metrics (9100/TCP)"]);
        assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
        // The same name with another port: the oldest's value, a conflict
        // naming the port and not every port.
        let r = resolve_two(
            &with_ports(&[(Some("http"), 80), (Some("admin"), 81)]),
            &with_ports(&[(Some("http"), 8080), (Some("admin"), 81)]),
        );
        assert_eq!(shown(&r), ["http (80/TCP)", "admin (81/TCP)"]);
        assert_eq!(r.conflicts.len(), 1);
        let c = &r.conflicts[0];
        assert_eq!(
            (c.cluster.to_string(), c.field, c.winner.to_string()),
            ("b".into(), Field::Ports, "a".into())
        );
        assert!(c.message.contains("\"http\" 8080/TCP"), "{}", c.message);
        assert!(!c.message.contains("admin"), "{}", c.message);
        // The same port/protocol under another name: a conflict too.
        let r = resolve_two(
            &with_ports(&[(Some("http"), 80)]),
            &with_ports(&[(Some("web"), 80)]),
        );
        assert_eq!(shown(&r), ["http (80/TCP)"]);
        assert_eq!(r.conflicts.len(), 1);
        // An export with fewer ports (a subset; a cluster scaled to zero
        // whose slices list only some) is in no conflict, either way.
        let fewer = with_ports(&[(Some("http"), 80)]);
        let more = with_ports(&[(Some("http"), 80), (Some("grpc"), 9000)]);
        for r in [resolve_two(&fewer, &more), resolve_two(&more, &fewer)] {
            assert_eq!(shown(&r), ["http (80/TCP)", "grpc (9000/TCP)"]);
            assert!(r.conflicts.is_empty(), "{:?}", r.conflicts);
        }
    }
}
