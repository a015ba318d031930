//! The clusterset's view of one service, as the MCS API resolves it: the
//! properties of the oldest export win, and every export that disagrees
//! on a field is in conflict with it.
//!
//! "Oldest" is the time the registry first accepted each cluster's export
//! of the service ([`super::imports`] keeps and persists it), ties broken
//! by cluster name: both are known to the registry alone, so a member
//! cannot claim to be older than it is, and a restart does not reshuffle
//! winners. Ports are compared as a set (their order in the Service does
//! not matter); the mode decides the ServiceImport's type (`endpoints`:
//! Headless, `clusterip`: ClusterSetIP).

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

fn show_ports(ports: &[Port]) -> String {
    ports
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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
    let ports = sorted_ports(oldest.export.ports());
    let mode = oldest.export.mode();
    let mut conflicts = Vec::new();
    for other in &exporters[1..] {
        let why = format!(
            "{} exported it first (accepted at {} ms since the epoch; the oldest export wins)",
            oldest.cluster, oldest.first_exported_unix_ms
        );
        let theirs = sorted_ports(other.export.ports());
        if theirs != ports {
            conflicts.push(Conflict {
                cluster: other.cluster.clone(),
                field: Field::Ports,
                winner: oldest.cluster.clone(),
                message: format!(
                    "ports [{}] differ from the clusterset's [{}]: {why}",
                    show_ports(&theirs),
                    show_ports(&ports)
                ),
            });
        }
        if other.export.mode() != mode {
            conflicts.push(Conflict {
                cluster: other.cluster.clone(),
                field: Field::Mode,
                winner: oldest.cluster.clone(),
                message: format!(
                    "type {} differs from the clusterset's {}: {why}",
                    import_type(other.export.mode()),
                    import_type(mode)
                ),
            });
        }
    }
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
    use meshdns_proto::model::{Namespace, Policy, Protocol, ServiceName};
    use std::num::NonZeroU16;

    fn key() -> ServiceKey {
        ServiceKey {
            namespace: Namespace::new("shop").unwrap(),
            name: ServiceName::new("web").unwrap(),
        }
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
}
