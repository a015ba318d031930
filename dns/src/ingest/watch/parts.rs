//! Watch's Reset and ServicesChanged in parts of at most a byte budget,
//! built lazily from the registry's state so that a watcher holds one part
//! in wire form at a time, not the whole fleet.

use std::sync::Arc;

use meshdns_proto::model::{ServiceExport, ServiceKey};
use meshdns_proto::parts::{Changes, field_len, mark_more, split_changes};
use meshdns_proto::wire;

use super::cluster_info;
use crate::registry::ClusterStatus;

/// The budget of one part, encoded: a quarter of the 4 MiB a tonic client
/// decodes by default.
pub const PART_BYTES: usize = 1024 * 1024;

/// Bytes kept for what wraps a part's items: the event's tag and length
/// and `more` (a ServicesChanged's cluster name is counted apart).
const ENVELOPE: usize = 16;

/// Room for a cluster entry's length prefix to grow as services join it
/// (the entry is measured empty, with a one-byte prefix).
const ENTRY_GROWTH: usize = 4;

/// The parts of a Reset of `clusters`: every part but the last sets
/// `more`; a cluster whose services do not fit continues in the next part,
/// named again. A service bigger than the budget goes alone. No clusters:
/// one empty part.
pub fn reset_parts(
    clusters: &[(ClusterStatus, Vec<Arc<ServiceExport>>)],
    max_bytes: usize,
) -> impl Iterator<Item = wire::Reset> + '_ {
    let mut parts = ResetParts {
        clusters,
        budget: max_bytes.saturating_sub(ENVELOPE),
        cluster: 0,
        service: 0,
        carried: None,
    };
    let mut first = true;
    let parts = std::iter::from_fn(move || {
        let part = parts.next_part();
        let part = match part {
            None if first => Some(wire::Reset::default()),
            part => part,
        };
        first = false;
        part
    });
    mark_more(parts, |part, more| part.more = more)
}

/// Where a lazy Reset has got to.
struct ResetParts<'a> {
    clusters: &'a [(ClusterStatus, Vec<Arc<ServiceExport>>)],
    budget: usize,
    cluster: usize,
    service: usize,
    /// A service converted but left for the next part, with its size.
    carried: Option<(wire::ServiceExport, usize)>,
}

impl ResetParts<'_> {
    fn next_part(&mut self) -> Option<wire::Reset> {
        let mut part = wire::Reset::default();
        let mut used = 0usize;
        while let Some((status, services)) = self.clusters.get(self.cluster) {
            let mut entry = wire::ClusterExports {
                cluster: Some(cluster_info(status)),
                services: Vec::new(),
            };
            let base = field_len(&entry) + ENTRY_GROWTH;
            if !part.clusters.is_empty() && used + base > self.budget {
                break;
            }
            used += base;
            let mut full = false;
            while self.service < services.len() {
                let (service, len) = match self.carried.take() {
                    Some(carried) => carried,
                    None => {
                        let service = wire::ServiceExport::from(services[self.service].as_ref());
                        let len = field_len(&service);
                        (service, len)
                    }
                };
                let alone = part.clusters.is_empty() && entry.services.is_empty();
                if used + len > self.budget && !alone {
                    self.carried = Some((service, len));
                    full = true;
                    break;
                }
                used += len;
                entry.services.push(service);
                self.service += 1;
            }
            // An entry that got no service this time is named in the next part.
            if !full || !entry.services.is_empty() {
                part.clusters.push(entry);
            }
            if full {
                return Some(part);
            }
            self.cluster += 1;
            self.service = 0;
        }
        (!part.clusters.is_empty()).then_some(part)
    }
}

/// A change to `cluster`'s services in parts of at most `max_bytes`
/// (removals first), every part but the last setting `more`.
pub fn services_parts<'a>(
    cluster: &'a str,
    upserts: &'a [Arc<ServiceExport>],
    removals: &'a [ServiceKey],
    max_bytes: usize,
) -> impl Iterator<Item = wire::ServicesChanged> + 'a {
    let named = wire::ServicesChanged {
        cluster: cluster.to_owned(),
        ..Default::default()
    };
    let budget = max_bytes.saturating_sub(ENVELOPE + prost::Message::encoded_len(&named));
    let mut runs = split_changes(
        removals.iter().map(Into::into),
        upserts.iter().map(|s| s.as_ref().into()),
        budget,
    )
    .peekable();
    // Nothing changed is still one (empty) message, as before parts.
    let empty = runs.peek().is_none().then(Changes::default);
    let parts = runs.chain(empty).map(move |run| wire::ServicesChanged {
        cluster: cluster.to_owned(),
        upserts: run.upserts,
        removals: run.removals,
        more: false,
    });
    mark_more(parts, |part, more| part.more = more)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use meshdns_proto::model::Cluster;
    use meshdns_proto::wire::watch_event::Event;
    use prost::Message;

    fn service(ns: &str, name: &str, endpoints: usize) -> Arc<ServiceExport> {
        let wire = wire::ServiceExport {
            key: Some(wire::ServiceKey {
                namespace: ns.into(),
                name: name.into(),
            }),
            ports: vec![wire::Port {
                name: "http".into(),
                protocol: wire::Protocol::Tcp.into(),
                port: 80,
            }],
            endpoints: (0..endpoints)
                .map(|i| wire::Endpoint {
                    addresses: vec![format!("10.9.{}.{}", i / 250, i % 250 + 1)],
                    hostname: format!("pod-{i}"),
                    ready: true,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        Arc::new(ServiceExport::try_from(&wire).unwrap())
    }

    fn status(name: &str) -> ClusterStatus {
        let hello = wire::Hello {
            cluster: name.into(),
            region: "r".into(),
            zone: "z".into(),
            ..Default::default()
        };
        ClusterStatus {
            cluster: Cluster::try_from(&hello).unwrap(),
            last_heartbeat_unix_ms: 1,
            connected: true,
            stale: false,
            services: 0,
            endpoints: 0,
            refused_cidrs: vec![],
        }
    }

    fn event_len(event: Event) -> usize {
        wire::WatchEvent { event: Some(event) }.encoded_len()
    }

    /// (cluster, service) pairs of parts, in order.
    fn reassemble(parts: &[wire::Reset]) -> BTreeMap<String, Vec<String>> {
        let mut clusters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for part in parts {
            for entry in &part.clusters {
                let name = entry.cluster.clone().unwrap().name;
                let services = clusters.entry(name).or_default();
                services.extend(entry.services.iter().map(|s| s.key.clone().unwrap().name));
            }
        }
        clusters
    }

    #[test]
    fn a_reset_splits_under_the_budget_and_clusters_continue() {
        let budget = 16 * 1024;
        let state: Vec<_> = (0..6)
            .map(|c| {
                let services = (0..30)
                    .map(|s| service("shop", &format!("s{s}"), 25))
                    .collect();
                (status(&format!("c{c}")), services)
            })
            .chain(std::iter::once((status("empty"), vec![])))
            .collect();
        let parts: Vec<_> = reset_parts(&state, budget).collect();
        assert!(parts.len() > 4, "{} parts", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.more, i + 1 < parts.len());
            let len = event_len(Event::Reset(part.clone()));
            assert!(len <= budget, "part {i}: {len}");
        }
        let got = reassemble(&parts);
        assert_eq!(got.len(), 7, "every cluster, the empty one too");
        for (c, services) in &got {
            let want: Vec<_> = if c == "empty" {
                vec![]
            } else {
                (0..30).map(|s| format!("s{s}")).collect()
            };
            assert_eq!(services, &want, "{c}: every service once");
        }
        // Some cluster spans two parts, named in both.
        let spans = parts
            .windows(2)
            .any(|w| w[0].clusters.last().unwrap().cluster == w[1].clusters[0].cluster);
        assert!(spans);
    }

    #[test]
    fn a_service_bigger_than_a_part_goes_alone_and_empty_is_one_part() {
        let state = vec![(
            status("c"),
            vec![
                service("a", "small", 1),
                service("a", "big", 400),
                service("a", "tail", 1),
            ],
        )];
        let parts: Vec<_> = reset_parts(&state, 4096).collect();
        let shape: Vec<_> = parts
            .iter()
            .map(|p| {
                p.clusters
                    .iter()
                    .map(|c| c.services.len())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(shape, vec![vec![1], vec![1], vec![1]]);
        let empty: Vec<_> = reset_parts(&[], 4096).collect();
        assert_eq!(empty, vec![wire::Reset::default()]);
    }

    #[test]
    fn a_big_change_comes_in_parts() {
        let budget = 8 * 1024;
        let upserts: Vec<_> = (0..60)
            .map(|s| service("shop", &format!("u{s}"), 20))
            .collect();
        let removals: Vec<_> = (0..50).map(|_| upserts[0].key().clone()).collect();
        let parts: Vec<_> = services_parts("east-1", &upserts, &removals, budget).collect();
        assert!(parts.len() > 2);
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.cluster, "east-1");
            assert_eq!(part.more, i + 1 < parts.len());
            assert!(event_len(Event::Services(part.clone())) <= budget);
        }
        let n_upserts: usize = parts.iter().map(|p| p.upserts.len()).sum();
        let n_removals: usize = parts.iter().map(|p| p.removals.len()).sum();
        assert_eq!((n_upserts, n_removals), (60, 50));
        let none: Vec<_> = services_parts("east-1", &[], &[], budget).collect();
        assert_eq!(none.len(), 1);
        assert!(!none[0].more);
    }
}
