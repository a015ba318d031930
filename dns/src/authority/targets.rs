//! The names SRV and PTR records point at: `<host>.<cluster>.<svc>.<ns>.<domain>`
//! for an endpoint, `<cluster>.<svc>.<ns>.<domain>` for a cluster's
//! ClusterIP, and under the MCS layout `<svc>.<ns>.svc.clusterset.local`
//! itself for a ClusterSetIP service.

use std::net::IpAddr;

use crate::qname::{Domain, Layout};
use crate::select::Pick;
use crate::snapshot::{Kind, PtrName, ServiceView, Snapshot, Target};

/// One SRV target of an answer: a record pointing at `name`, with
/// `addresses` as additional data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvTarget<'s> {
    /// 0: every target of an answer comes from the one tier chosen, so
    /// there is no order between them to tell.
    pub priority: u16,
    /// When the answer holds the tier's every target (no more than
    /// `--max-answers`), the target's effective weight, in units of an
    /// unscaled, undrained endpoint weight (a pod: 10), at least 1 and at
    /// most 65535: an RFC 2782 client then weighs them itself. When the
    /// targets were sampled by weight, 1 for all: the sample already
    /// applied the weights, and a client weighing again would apply them
    /// twice.
    pub weight: u16,
    pub port: u16,
    /// The target's name, fully qualified.
    pub name: String,
    pub addresses: &'s [IpAddr],
    /// The view's index of the cluster it belongs to.
    pub cluster: usize,
    /// `false` for an MCS ClusterSetIP target whose record (same name,
    /// same port) an earlier target already carries: only its addresses
    /// are added.
    pub record: bool,
}

/// The port named `port` with protocol `proto` in cluster `cluster` of `view`.
pub fn port_of(view: &ServiceView, cluster: usize, proto: &str, port: &str) -> Option<u16> {
    view.clusters[cluster]
        .ports()
        .iter()
        .find(|p| {
            p.protocol.label() == proto && p.name.as_ref().is_some_and(|n| n.as_str() == port)
        })
        .map(|p| p.port.get())
}

/// The SRV targets of `pick` (rotated by `start`, at most `max`) that
/// have the port `(proto, port_name)`, weighted as [`SrvTarget::weight`]
/// says.
pub fn srv<'s>(
    snapshot: &Snapshot,
    view: &'s ServiceView,
    domain: &Domain,
    pick: Pick<'s>,
    (start, max): (usize, usize),
    (proto, port_name): (&str, &str),
) -> Vec<SrvTarget<'s>> {
    let suffix = format!(
        "{}.{}.{}{}",
        view.key.name,
        view.key.namespace,
        domain.infix(),
        domain.fqdn()
    );
    let mcs = domain.layout == Layout::Mcs;
    let mut service_ports: Vec<u16> = Vec::new();
    let mut targets = Vec::new();
    // The whole tier (unsampled): the records carry the weights.
    let whole = pick.len() <= max;
    for target in pick.targets(start, max) {
        let index = target.cluster();
        let cluster = &view.clusters[index];
        let Some(port) = port_of(view, index, proto, port_name) else {
            continue;
        };
        let (name, addresses, record) = match target {
            // MCS: a ClusterSetIP service's SRV target is the service
            // name itself, one record per port.
            Target::ClusterIp { .. } if mcs => {
                let first = !service_ports.contains(&port);
                if first {
                    service_ports.push(port);
                }
                (suffix.clone(), cluster.cluster_ips(), first)
            }
            Target::Endpoint { endpoint, .. } => {
                let ep = cluster.endpoint_model(endpoint);
                (
                    format!(
                        "{}.{}.{suffix}",
                        crate::snapshot::endpoint_label(ep),
                        cluster.name()
                    ),
                    ep.addresses.as_slice(),
                    true,
                )
            }
            Target::ClusterIp { .. } => (
                format!("{}.{suffix}", cluster.name()),
                cluster.cluster_ips(),
                true,
            ),
        };
        targets.push(SrvTarget {
            priority: 0,
            weight: if whole {
                srv_weight(snapshot, view, target)
            } else {
                1
            },
            port,
            name,
            addresses,
            cluster: index,
            record,
        });
    }
    targets
}

/// What the policy's factors multiply an endpoint's weight by when they
/// are all neutral (100% × 100% × 100% left after no drain).
const NEUTRAL: u64 = 100 * 100 * 100;

/// A target's SRV weight: its effective weight over [`NEUTRAL`], rounded,
/// clamped to 1..=65535 (a weight-0 target answers only as the last
/// resort, where every target weighs alike: 1).
fn srv_weight(snapshot: &Snapshot, view: &ServiceView, target: Target) -> u16 {
    let part = &view.clusters[target.cluster()];
    let weight = match (part.weights.uniform(), target) {
        (Some(w), _) => w,
        (None, Target::ClusterIp { .. }) => part.weights.of(Kind::Targets, 0),
        (None, Target::Endpoint { endpoint, .. }) => snapshot.policy.effective_weight(
            part.name(),
            &view.key,
            part.endpoint_model(endpoint).weight,
        ),
    };
    u16::try_from((weight + NEUTRAL / 2) / NEUTRAL)
        .unwrap_or(u16::MAX)
        .max(1)
}

/// The name a PTR record for `name` points at, under `domain`.
pub fn ptr(name: &PtrName, domain: &Domain) -> String {
    match &name.host {
        Some((host, cluster)) => format!(
            "{host}.{cluster}.{}.{}.{}{}",
            name.service,
            name.namespace,
            domain.infix(),
            domain.fqdn()
        ),
        None => format!(
            "{}.{}.{}{}",
            name.service,
            name.namespace,
            domain.infix(),
            domain.fqdn()
        ),
    }
}
