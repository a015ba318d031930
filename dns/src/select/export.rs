//! `export-to`: whether an asker may see a service at all. Outside every
//! place the service lists (and for an asker of no known place) the
//! service's names do not exist: NXDOMAIN, with an ECS scope that says
//! the answer depends on who asks (never 0).
//!
//! Who the asker is for this decision is the [`Gate`]: the place
//! locality answers for, the packet source's place, or both. The ECS
//! option chooses which endpoints are nearest, but it is only a claim:
//! it decides export-to alone only when it comes from a resolver the
//! operator trusts (`--ecs-trusted-from`).

use std::net::IpAddr;

use meshdns_proto::model::Scope;

use crate::locality::{AskerPlace, Locality};
use crate::snapshot::ServiceView;

/// Whose place `export-to` must allow: every one named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The asker's place alone: a query without ECS (its place is its
    /// source's), or ECS from a trusted resolver.
    Place,
    /// The packet source's place alone: an ECS source prefix of 0 (the
    /// client opted out of tailoring, so there is no asker's place).
    Source(IpAddr),
    /// The asker's place (the ECS subnet's) and the packet source's too:
    /// ECS from a source not trusted with it cannot widen export-to.
    Both(IpAddr),
}

/// Whether an asker at `place`, let in by `gate`, may see `view`.
pub fn exported_to(
    view: &ServiceView,
    locality: &Locality,
    place: Option<&AskerPlace>,
    gate: Gate,
) -> bool {
    if view.export_to.is_empty() {
        return true;
    }
    let source = |ip: IpAddr| locality.lookup(ip, 128);
    match gate {
        Gate::Place => allows(view, locality, place),
        Gate::Source(ip) => allows(view, locality, source(ip).as_ref()),
        Gate::Both(ip) => {
            allows(view, locality, place) && allows(view, locality, source(ip).as_ref())
        }
    }
}

/// Whether every exporting cluster's list allows `place`.
fn allows(view: &ServiceView, locality: &Locality, place: Option<&AskerPlace>) -> bool {
    let Some(asker) = place.and_then(|p| locality.place(p.cluster)) else {
        return false;
    };
    let named =
        |of: &Option<(u32, String)>, name: &str| of.as_ref().is_some_and(|(_, n)| n == name);
    view.export_to.iter().all(|list| {
        list.iter().any(|scope| match scope {
            Scope::Cluster(c) => asker.name == *c,
            Scope::Zone(z) => named(&asker.zone, z.as_str()),
            Scope::Region(r) => named(&asker.region, r.as_str()),
            Scope::Provider(p) => named(&asker.provider, p.as_str()),
        })
    })
}
